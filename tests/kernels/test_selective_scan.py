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
