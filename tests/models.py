"""Tiny models for the tests."""

import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM

MIXERS = ["mamba", "deltanet"]
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
    )
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
