"""Gated delta rule (signed scalar gate alpha in [-1, 1]): the chunk backend against the naive token loop."""

import pytest
import torch

from lrnn_lm.kernels import delta_rule, gated_delta_rule

from ..device import device
from .inputs import check_packing, compare, delta_inputs, outputs_and_grads

POS = ("q", "k", "v", "beta", "alpha")
TOL = 1e-5  # fp32 chunk vs fp32 naive, as for the delta rule: measured errors are ~1e-6 or below


def gated_inputs(
    batch, T, H, K, V, *, alpha_range="[-1,1]", alpha="random", beta_max=2.0, beta="random", seed=0, with_state=True
):
    """Delta-rule inputs plus ``alpha``: random over ``alpha_range``, or every gate exactly -1, 0 or 1
    (``"-1"``, ``"0"``, ``"1"``), or ``"edges"`` (random picks among -1, 0, 1), or ``"tiny"`` (+-1e-6)."""
    inputs = delta_inputs(batch, T, H, K, V, beta_max=beta_max, beta=beta, seed=seed, with_state=with_state)
    g = torch.Generator().manual_seed(seed + 1000)
    low = -1.0 if alpha_range == "[-1,1]" else 0.0
    a = low + (1.0 - low) * torch.rand(batch, T, H, generator=g)
    if alpha in ("-1", "0", "1"):
        a = torch.full_like(a, float(alpha))
    elif alpha == "edges":
        a = torch.tensor([-1.0, 0.0, 1.0])[torch.randint(0, 3, a.shape, generator=g)]
    elif alpha == "tiny":
        a = 1e-6 * torch.where(torch.rand(a.shape, generator=g) < 0.5, -1.0, 1.0)
    inputs["alpha"] = a.to(device()).requires_grad_()
    return inputs


def run(inputs, backend, **kw):
    return outputs_and_grads(gated_delta_rule, inputs, POS, backend=backend, **kw)


@pytest.mark.parametrize("alpha_range", ["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("T", [1, 63, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_naive(T, alpha_range, with_state):
    inputs = gated_inputs(2, T, 3, 9, 11, alpha_range=alpha_range, with_state=with_state, seed=T)
    compare(run(inputs, "chunk"), run(inputs, "naive"), TOL)


def test_chunk_matches_naive_long():
    inputs = gated_inputs(2, 1000, 2, 7, 5)
    compare(run(inputs, "chunk"), run(inputs, "naive"), TOL)


@pytest.mark.parametrize("alpha", ["-1", "0", "1", "edges", "tiny"])
@pytest.mark.parametrize("beta", ["exact_max", "exact_zero", "random"])
def test_edge_gates(alpha, beta):
    """Gates exactly -1, 0, 1 (one value everywhere, or mixed) and +-1e-6, with beta 0, 2 or random in (0, 2):
    finite and equal to naive, gradients included (alpha's too, at exactly 0)."""
    inputs = gated_inputs(2, 100, 3, 9, 11, alpha=alpha, beta=beta)
    got, ref = run(inputs, "chunk"), run(inputs, "naive")
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    compare(got, ref, TOL)


def test_beta_just_below_two():
    inputs = gated_inputs(2, 100, 3, 9, 11, beta_max=1.999, beta="exact_max")
    compare(run(inputs, "chunk"), run(inputs, "naive"), TOL)


def test_custom_scale():
    inputs = gated_inputs(2, 20, 3, 9, 11)
    compare(run(inputs, "chunk", scale=0.3), run(inputs, "naive", scale=0.3), TOL)


def test_chunk_size_does_not_change_the_result():
    from lrnn_lm.kernels.gated_delta_rule.chunk import gated_delta_rule_chunk
    from lrnn_lm.kernels.gated_delta_rule.naive import gated_delta_rule_naive

    inputs = gated_inputs(1, 50, 2, 9, 11, alpha="edges")
    ref = outputs_and_grads(gated_delta_rule_naive, inputs, POS)
    for C in (1, 7, 16):
        compare(outputs_and_grads(gated_delta_rule_chunk, inputs, POS, chunk_size=C), ref, TOL)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
@pytest.mark.parametrize("with_state", [False, True])
def test_cu_seqlens_equals_separate_calls(backend, with_state):
    per_seq = [gated_inputs(1, n, 3, 9, 11, seed=i, with_state=with_state) for i, n in enumerate([17, 1, 70, 5])]
    check_packing(gated_delta_rule, per_seq, POS, shared=(), backend=backend)


def test_gate_one_is_the_delta_rule():
    """With alpha = 1 the recurrence is DeltaNet's (a property of the spec, naive against naive)."""
    inputs = gated_inputs(2, 30, 3, 9, 11, alpha="1")
    got = run(inputs, "naive")
    ungated = {k: v for k, v in inputs.items() if k != "alpha"}
    ref = outputs_and_grads(delta_rule, ungated, POS[:-1], backend="naive")
    compare({k: v for k, v in got.items() if k != "grad_alpha"}, ref, 1e-6)


def test_one_step_by_hand():
    """One step from S0: alpha (I - beta k k^T) S0 + beta k v^T, with a negative gate."""
    inputs = gated_inputs(1, 1, 1, 4, 3, alpha="-1", beta="random")
    k, v, b = inputs["k"][0, 0, 0], inputs["v"][0, 0, 0], inputs["beta"][0, 0, 0]
    S0 = inputs["initial_state"][0, 0]
    for backend in ("naive", "chunk"):
        _, S1 = gated_delta_rule(
            *[inputs[n] for n in POS], initial_state=inputs["initial_state"], output_final_state=True, backend=backend
        )
        expected = -(torch.eye(4) - b * torch.outer(k, k)) @ S0 + b * torch.outer(k, v)
        torch.testing.assert_close(S1[0, 0], expected)


def test_half_precision_inputs_keep_fp32_state():
    inputs = gated_inputs(2, 33, 3, 9, 11)
    args = [inputs[n].detach().to(torch.bfloat16) for n in POS]
    o, S = gated_delta_rule(*args, initial_state=inputs["initial_state"], output_final_state=True)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32


@pytest.mark.parametrize("bad", [1.5, -1.01])
def test_alpha_out_of_range_is_rejected(bad):
    inputs = {k: v.detach() for k, v in gated_inputs(1, 4, 1, 4, 3).items()}
    inputs["alpha"][0, 2, 0] = bad
    with pytest.raises(ValueError, match="alpha must lie in"):
        gated_delta_rule(*[inputs[n] for n in POS])


def test_naive_matches_fla_reference():
    """Our spec against fla's CPU reference (which takes g = log alpha, so alpha in (0, 1] only)."""
    fla_naive = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    inputs = gated_inputs(2, 40, 3, 9, 11, alpha_range="[0,1]")
    with torch.no_grad():
        inputs["alpha"].clamp_(min=0.05)
    o, S = gated_delta_rule(
        *[inputs[n] for n in POS], initial_state=inputs["initial_state"], output_final_state=True, backend="naive"
    )
    q, k, v, beta, alpha = (inputs[n] for n in POS)
    o_ref, S_ref = fla_naive.naive_recurrent_gated_delta_rule(
        q, k, v, beta, alpha.log(), initial_state=inputs["initial_state"], output_final_state=True
    )
    compare({"out": o, "state": S}, {"out": o_ref, "state": S_ref}, 1e-6)
