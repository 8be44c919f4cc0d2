"""Tiny models for the tests. The mixer list comes from the registry, so a new mixer is tested everywhere."""

import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.layers import MIXERS as REGISTRY

MIXERS = list(REGISTRY)
# Mixers with state transitions (the spectrum and the eigenvalue-range tests apply to them).
RECURRENT_MIXERS = [m for m in MIXERS if REGISTRY[m].eigenvalues_are is not None]
RANGES = ["[0,1]", "[-1,1]"]


def tiny_config(mixer="deltanet", eigval_range="[-1,1]", **kw) -> LRNNConfig:
    base = dict(
        vocab_size=61,
        hidden_size=24,
        num_hidden_layers=2,
        num_heads=2,
        state_size=5,
        expand=2,
        intermediate_size=32,
        mixer=mixer,
        eigval_range=eigval_range,
        dt_min=0.05,
        dt_max=1.0,
        ssd_head_dim=12,  # Mamba-2: 4 heads of 12 channels in d_inner = 48, in 2 groups
        ssd_groups=2,
    )
    if isinstance(mixer, list):
        base["num_hidden_layers"] = len(mixer)  # one layer per listed mixer, however many are registered
    base.update(kw)
    return LRNNConfig(**base)


def tiny_model(mixer="deltanet", eigval_range="[-1,1]", seed=0, **kw) -> LRNNForCausalLM:
    torch.manual_seed(seed)
    model = LRNNForCausalLM(tiny_config(mixer, eigval_range, **kw)).eval()
    # Perturb every weight so the test does not rely on special init values (e.g. D = 1, norms = 1).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def _large_dt(mixer) -> None:
    mixer.dt_bias.fill_(3.0) if hasattr(mixer, "dt_bias") else mixer.dt_proj.bias.fill_(3.0)


def _large_beta(mixer) -> None:
    mixer.b_proj.weight.mul_(50.0)


def _large_beta_gate_near_one(mixer) -> None:
    # beta near its top and alpha near 1 (dt near 0), so alpha (1 - beta) reaches close to -1.
    _large_beta(mixer)
    if mixer.dt_bias is not None:
        mixer.dt_bias.fill_(-10.0)


# How to push each mixer's gates towards the negative side, for the eigenvalue-range tests. Every recurrent
# mixer needs an entry (tests/test_modeling.py checks), so a new mixer cannot silently skip those tests.
PUSH_NEGATIVE = {
    "mamba": _large_dt,
    "deltanet": _large_beta,
    "mamba2": _large_dt,
    "gated_deltanet": _large_beta_gate_near_one,
    "deltaproduct": _large_beta_gate_near_one,
}


@torch.no_grad()
def push_gates_negative(model: LRNNForCausalLM) -> None:
    for layer in model.model.layers:
        PUSH_NEGATIVE[layer.mixer_type](layer.mixer)
