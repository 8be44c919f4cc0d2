"""Chunk backend of the selective scan against the naive token loop (the specification)."""

import pytest
import torch

from lrnn_lm.kernels import selective_scan

from .inputs import check_packing, compare, outputs_and_grads, scan_inputs

POS = ("x", "dt", "A", "B", "C", "D", "z")
TOL = 1e-5  # fp32 chunk vs fp32 naive: measured errors are ~1e-7


def run(inputs, backend, negative, **kw):
    return outputs_and_grads(selective_scan, inputs, POS, negative_eigvals=negative, backend=backend, **kw)


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("T", [1, 63, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_naive(T, negative, with_state):
    inputs = scan_inputs(2, T, 7, 5, with_state=with_state)
    compare(run(inputs, "chunk", negative), run(inputs, "naive", negative), TOL)


@pytest.mark.parametrize("negative", [False, True])
def test_chunk_matches_naive_long(negative):
    inputs = scan_inputs(2, 1000, 5, 3)
    compare(run(inputs, "chunk", negative), run(inputs, "naive", negative), TOL)


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("gate", ["near_zero", "exact_zero", "half", "near_one", "exact_one"])
def test_edge_gates(gate, negative):
    inputs = scan_inputs(2, 63, 7, 5, gate=gate)
    got, ref = run(inputs, "chunk", negative), run(inputs, "naive", negative)
    for name, t in got.items():
        assert torch.isfinite(t).all(), f"{name} not finite for gate={gate}"
    compare(got, ref, TOL)


def test_signed_gate_values_at_edges():
    """The signed map sends exp(dt A) = 0 to exactly -1, 0.5 to 0 and 1 to exactly 1."""
    from lrnn_lm.kernels.selective_scan.chunk import _gates

    dt = torch.tensor([[[100.0, 1.0, 0.0]]])
    A = torch.tensor([[-100.0], [-torch.log(torch.tensor(2.0)).item()], [-1.0]])
    a = _gates(dt, A, negative=True).flatten()
    assert a[0].item() == -1.0 and abs(a[1].item()) < 1e-7 and a[2].item() == 1.0


@pytest.mark.parametrize("backend", ["naive", "chunk"])
@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_cu_seqlens_equals_separate_calls(backend, negative, with_state):
    per_seq = [scan_inputs(1, n, 7, 5, seed=i, with_state=with_state) for i, n in enumerate([17, 1, 40, 5])]
    check_packing(selective_scan, per_seq, POS, shared=("A", "D"), backend=backend, negative_eigvals=negative)


def test_half_precision_inputs_keep_fp32_state():
    inputs = scan_inputs(2, 33, 7, 5, dtype=torch.bfloat16)
    y, h = selective_scan(*[inputs[n] for n in POS], initial_state=inputs["initial_state"], output_final_state=True)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32


def _with_raw_dt(inputs, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, T, d = inputs["x"].shape
    raw = torch.randn(batch, T, d, generator=g) * 2
    raw[:, ::5, 0] = 25.0  # past softplus's threshold
    raw[:, 2::5, 1] = -30.0  # softplus ~ 1e-13
    # Drawn on the CPU, then moved to where the other inputs live.
    inputs["dt"] = raw.to(inputs["x"].device).requires_grad_()
    inputs["dt_bias"] = (torch.randn(d, generator=g) - 1).to(inputs["x"].device).requires_grad_()
    return inputs


def test_naive_dt_bias_and_softplus_are_torch_softplus():
    """The specification itself: bias and softplus inside equal torch's softplus applied outside, gradients too."""
    inputs = _with_raw_dt(scan_inputs(2, 9, 7, 5))

    def outside(x, dt, *args, dt_bias, **kw):
        return selective_scan(x, torch.nn.functional.softplus(dt + dt_bias), *args, **kw)

    got = run(inputs, "naive", True, dt_softplus=True)
    ref = outputs_and_grads(outside, inputs, POS, negative_eigvals=True, backend="naive")
    compare(got, ref, 1e-7)


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
def test_chunk_dt_bias_and_softplus(negative, softplus):
    inputs = _with_raw_dt(scan_inputs(2, 40, 7, 5))
    if not softplus:
        with torch.no_grad():
            inputs["dt"].copy_(inputs["dt"].abs().clamp(max=3.0))
            inputs["dt_bias"].copy_(inputs["dt_bias"].abs())
    got = run(inputs, "chunk", negative, dt_softplus=softplus)
    assert "grad_dt_bias" in got
    compare(got, run(inputs, "naive", negative, dt_softplus=softplus), TOL)


def test_dt_bias_shape_is_checked():
    inputs = _with_raw_dt(scan_inputs(1, 4, 7, 5))
    with pytest.raises(ValueError, match="dt_bias must be"):
        selective_scan(*[inputs[n] for n in POS], dt_bias=inputs["dt_bias"][:6], backend="naive")
