"""The gate statistics: a token-independent gate gives retention alpha ** (L + 1) exactly; |alpha| is what counts
with the signed gate; a model without a gate is refused by name."""

from __future__ import annotations

import math

import pytest
import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.analysis.gate_stats import format_report, gate_report
from lrnn_lm.tasks import get_task


def tiny(mixer: str = "gated_deltanet", **kw) -> LRNNForCausalLM:
    torch.manual_seed(0)
    config = LRNNConfig(
        mixer=mixer,
        vocab_size=4,
        hidden_size=16,
        num_hidden_layers=1,
        num_heads=2,
        intermediate_size=0,
        use_short_conv=False,
        eigval_range="[-1,1]",
        **kw,
    )
    return LRNNForCausalLM(config)


@pytest.mark.parametrize("negative_gate", [False, True])
def test_constant_gate_gives_alpha_to_the_length(negative_gate):
    model = tiny(negative_gate=negative_gate)
    mixer = model.model.layers[0].mixer
    with torch.no_grad():
        mixer.a_proj.weight.zero_()  # dt = softplus(dt_bias): the same gate on every token
        mixer.A_log.copy_(torch.tensor([0.0, 1.0]))
        mixer.dt_bias.copy_(torch.tensor([-3.0, 0.5]))
    with torch.no_grad():
        decay = torch.exp(-torch.exp(mixer.A_log) * torch.nn.functional.softplus(mixer.dt_bias))
    alpha = 2 * decay - 1 if negative_gate else decay
    if negative_gate:
        assert alpha[1] < 0  # head 1 flips sign: |alpha| is what the retention multiplies
    report = gate_report(model, get_task("parity"), [5, 17], num=4)
    heads = report["layers"][0]["heads"]
    for h in range(2):
        a = abs(float(alpha[h]))
        assert heads[h]["alpha_bar"] == pytest.approx(a, rel=1e-5)
        for L in (5, 17):  # L bits and "=" are read before the answer
            assert heads[h]["retention"][str(L)]["mean"] == pytest.approx(a ** (L + 1), rel=1e-4)
        assert heads[h]["tokens"]["1"]["abs_alpha"]["mean"] == pytest.approx(a, rel=1e-5)
    assert "retention 17" in format_report("tiny", report)


def test_token_dependent_gate_is_split_by_token():
    model = tiny()
    report = gate_report(model, get_task("parity"), [9], num=8)
    head = report["layers"][0]["heads"][0]
    assert set(head["tokens"]) == {"0", "1", "="}
    # one layer, no short conv: each token has one gate, so min == max per token
    for stats in head["tokens"].values():
        assert stats["alpha"]["min"] == pytest.approx(stats["alpha"]["max"])
    assert 0 < head["retention"]["9"]["min"] <= head["retention"]["9"]["max"] <= 1
    assert math.isclose(head["one_minus_alpha_bar"], 1 - head["alpha_bar"])


def test_model_without_gate_is_refused():
    with pytest.raises(ValueError, match="no layer with a gate"):
        gate_report(tiny("deltanet"), get_task("parity"), [5], num=2)


def test_mamba2_constant_gate_gives_its_eigenvalue_to_the_length():
    """Mamba-2's gate is the whole transition: with dt's token part zeroed, retention is |2e^(dt A) - 1|^(L+1)."""
    model = tiny("mamba2", ssd_head_dim=16, state_size=4, conv_kernel=1)  # 2 heads of 16 channels, no conv
    mixer = model.model.layers[0].mixer
    with torch.no_grad():
        mixer.in_proj.weight[-mixer.num_heads :].zero_()  # dt = softplus(dt_bias) on every token
        mixer.A_log.copy_(torch.tensor([0.0, 1.0]))
        mixer.dt_bias.copy_(torch.tensor([-3.0, 0.5]))
        alpha = 2 * torch.exp(-torch.exp(mixer.A_log) * torch.nn.functional.softplus(mixer.dt_bias)) - 1
    assert alpha[1] < 0
    heads = gate_report(model, get_task("parity"), [5, 17], num=4)["layers"][0]["heads"]
    for h in range(2):
        a = abs(float(alpha[h]))
        assert heads[h]["alpha_bar"] == pytest.approx(a, rel=1e-5)
        assert heads[h]["retention"]["17"]["mean"] == pytest.approx(a**18, rel=1e-4)
        assert heads[h]["tokens"]["1"]["eig_along_k"]["mean"] == pytest.approx(float(alpha[h]), rel=1e-5)
