"""Triton SSD (fla's ``chunk_simple_gla`` inside our running-sign wrapper) against the naive reference, under the
Triton interpreter.

Run with ``TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels/test_triton_ssd.py``. fla's
kernels are autotuned and index with loop variables, so these tests use the ``triton_interpreter_shims`` fixture.

Every comparison is against the naive token loop (fp32, on the same rounded inputs): output, final state and the
gradients of x, dt, A, B, C, D and the initial state, in both eigenvalue ranges. Shapes stay small (the
interpreter is about 1000x slower than PyTorch).

Dtypes, and why:

- **fp32**: fla's ``chunk_simple_gla`` accepts fp32 (unlike its delta-rule chunk op). Under the interpreter its
  matmuls run in fp32 numpy, and measured errors are ~1e-6, so the tolerance is 1e-5. (On a GPU, fp32 ``tl.dot``
  may use TF32: ``python -m pytest --device cuda`` checks that, not these tests.)
- **fp16**: 5e-3, about 10 fp16 unit roundoffs (2**-11), the same bar as the fp16 delta-rule tests; measured
  ~5e-4 here. fla keeps q, k, v and the per-chunk states in the input dtype.
- **Gate gradients (dt, A) with the signed gate** come from ``kernels/ssd/gate_grad.py``, which forms
  ``dL/d|a_t|`` with no division by the gate: fla's own ``dL/dlog|a_t|`` has an absolute error that dividing by
  ``a_t`` would amplify by ``1/|a_t|`` (it measured 0.16 (dt) and 0.25 (A) relative RMSE at ``|a| = 1e-6``, until
  2026-11-30 an expected failure of ``test_edge_gates``). They get the dtype's tolerance, like every other entry.
- **fp32 with gates at the floor** (``log|a|`` floored at -30, see ``lrnn_lm.kernels.ssd.triton``): fla's decays
  are ``exp(G_t - G_s)`` of chunk-local cumulative sums, which reach several hundred when many gates sit at the
  floor, and the fp32 ulp there (3e-5 at 500) limits the decays' accuracy: :data:`FLOOR_FP32_TOL` (measured
  1.0e-5).
- **bf16: not testable here.** The interpreter runs numpy arithmetic on bf16's raw uint16 bit patterns (relative
  errors ~1e10 whatever the kernel does; ``docs/triton_on_cpu.md``). ``python -m pytest --device cuda``
  checks bf16 on a GPU.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from lrnn_lm.kernels import ssd

from .inputs import check_packing, compare, outputs_and_grads
from .test_ssd import POS, ssd_inputs

pytestmark = [
    pytest.mark.triton_interpret,
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1",
        reason="needs TRITON_INTERPRET=1 set before triton is imported: "
        "TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels",
    ),
    pytest.mark.usefixtures("triton_interpreter_shims"),
]
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")

TOL = {torch.float32: 1e-5, torch.float16: 5e-3}
FLOOR_FP32_TOL = 1e-4
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
RANGES = pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])


def _check(inputs, negative, dtype, tol=None, **kw):
    """Triton against naive: output, final state and every gradient within ``tol`` (default: the dtype's)."""
    from lrnn_lm.kernels.ssd.naive import ssd_naive
    from lrnn_lm.kernels.ssd.triton import ssd_triton

    got = outputs_and_grads(functools.partial(ssd_triton, negative_eigvals=negative), inputs, (), **kw)
    ref = outputs_and_grads(functools.partial(ssd_naive, negative_eigvals=negative), inputs, (), **kw)
    assert got["out"].dtype == dtype and got["state"].dtype == torch.float32
    compare(got, ref, TOL[dtype] if tol is None else tol)


@DTYPES
@RANGES
@pytest.mark.parametrize("T,G", [(1, 1), (40, 1), (65, 2)])
def test_matches_naive(T, G, negative, dtype):
    # H 2, P 16, N 16 (fla's block sizes need >= 16), D per head and channel, with an initial state.
    _check(ssd_inputs(2, T, 2, 16, 16, G, d_shape="HP", dtype=dtype, seed=T), negative, dtype)


@DTYPES
@RANGES
def test_edge_gates(negative, dtype):
    """Gates exactly -1 or 0 (exp underflow, floored), exactly 1, |a| = 1e-6 and random, mixed token by token.
    (In fp16 the rounded dt puts the signed near-zero gates near 1e-4, not 1e-6.)"""
    tol = FLOOR_FP32_TOL if dtype == torch.float32 else None
    _check(ssd_inputs(2, 70, 2, 16, 16, 1, gate="edges", negative=negative, dtype=dtype, seed=3), negative, dtype, tol)


def test_signed_gate_exactly_zero():
    """Every signed gate exactly 0: exact output, and the true gradients, the gate's included (the naive loop's
    autograd; the chunk backend gives the gate 0 there instead). The floor leaves e^-30 of the carried state in
    fla's forward, so h0's gradient, exactly 0 in the reference, is checked in absolute terms."""
    from lrnn_lm.kernels.ssd.naive import ssd_naive

    inputs = ssd_inputs(2, 40, 2, 16, 16, 1, gate="exact_zero_signed")
    got = outputs_and_grads(ssd, inputs, POS, backend="triton", negative_eigvals=True)
    ref = outputs_and_grads(functools.partial(ssd_naive, negative_eigvals=True), inputs, ())
    assert got.pop("grad_initial_state").abs().max() < 1e-10 and ref.pop("grad_initial_state").abs().max() == 0
    compare(got, ref, TOL[torch.float32])


@RANGES
@pytest.mark.parametrize("with_state", [False, True], ids=["h0=0", "h0"])
def test_cu_seqlens_equals_separate_naive_calls(negative, with_state):
    """Packed sequences (fla's native varlen, the running sign restarting per sequence) vs one naive call each,
    including an empty and a one-token sequence. fp32, so check_packing's 1e-5 applies."""
    gates = ["random", "edges"]
    per_seq = [
        ssd_inputs(1, n, 2, 16, 16, 1, gate=gates[i % 2], negative=negative, seed=i, with_state=with_state)
        for i, n in enumerate([17, 1, 70, 5])
    ]
    check_packing(ssd, per_seq, POS, shared=("A", "D"), backend="triton", negative_eigvals=negative)


def test_empty_sequence_keeps_its_initial_state():
    inputs = {k: v.detach() for k, v in ssd_inputs(1, 30, 2, 16, 16, 1).items()}
    h0 = torch.randn(3, 2, 16, 16)
    cu = torch.tensor([0, 10, 10, 30])
    args = [inputs[n] for n in POS]
    kw = dict(initial_state=h0, output_final_state=True, cu_seqlens=cu, negative_eigvals=True)
    _, S = ssd(*args, backend="triton", **kw)
    _, S_ref = ssd(*args, backend="naive", **kw)
    assert torch.equal(S[1], h0[1])
    compare({"state": S}, {"state": S_ref}, TOL[torch.float32])
