"""Our Triton SSD kernels (``kernels/ssd/triton_kernels.py``) against the naive reference, under the Triton
interpreter.

Run with ``TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels/test_triton_ssd.py``. The kernels
need no interpreter shims (no autotuner, loop variables used as plain values).

Every comparison is against the naive token loop (fp32, on the same rounded inputs): output, final state and the
gradients of x, dt, A, B, C, D and the initial state, in both eigenvalue ranges. Shapes stay small and odd (H 4,
P 5, N 7: one padded 16-wide tile each; the interpreter is about 1000x slower than PyTorch) with ``G < H``.

Tolerances (relative RMSE):

- **fp32: 1e-5.** The kernels' products run in fp32 (``ieee``); measured errors are 1e-7 to 7e-7.
- **fp16: 5e-3**, about 10 fp16 unit roundoffs (2**-11); measured up to 4e-4. 16-bit operands are rounded to the
  input dtype before each tensor-core product, as on a GPU.
- **bf16: 2e-2**, about 5 bf16 unit roundoffs (2**-8); measured up to 7e-3. The interpreter's ``tl.dot`` is wrong
  on bf16 operands (it computes on raw bit patterns), so there, and only there, the kernels widen the already
  rounded bf16 operands to fp32 before the product: the same exact products and fp32 accumulation an MMA does.
- **Gate gradients at tiny gates: 1e-4** relative error of ``dt``'s and ``A``'s gradients per head, with every
  gate of a head at ``|a|`` in {1e-6, 1e-4, 1e-2, 1}, both signs (the issue's bar); measured ~1e-7.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from lrnn_lm.kernels import ssd
from lrnn_lm.kernels.testing import rel_rmse

from .inputs import check_packing, compare, outputs_and_grads
from .test_ssd import POS, ssd_inputs
from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=False)

TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}
GATE_TOL = 1e-4
RANGES = pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
H, P, N = 4, 5, 7


def _check(inputs, negative, dtype, tol=None):
    """Triton against naive: output, final state and every gradient within ``tol`` (default: the dtype's)."""
    from lrnn_lm.kernels.ssd.naive import ssd_naive
    from lrnn_lm.kernels.ssd.triton import ssd_triton

    got = outputs_and_grads(functools.partial(ssd_triton, negative_eigvals=negative), inputs, ())
    ref = outputs_and_grads(functools.partial(ssd_naive, negative_eigvals=negative), inputs, ())
    assert got["out"].dtype == dtype and got["state"].dtype == torch.float32
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    return compare(got, ref, TOL[dtype] if tol is None else tol)


@RANGES
@pytest.mark.parametrize("T,G,d_shape", [(1, 1, "H"), (63, 2, "HP"), (64, 1, "HP"), (65, 2, "H")])
def test_matches_naive(T, G, d_shape, negative):
    """Odd lengths around the chunk (64), G = 1 and 2 groups for 4 heads, D per head and per channel, with h0."""
    _check(ssd_inputs(2, T, H, P, N, G, d_shape=d_shape, seed=T), negative, torch.float32)


@RANGES
def test_long_sequence_matches_naive(negative):
    """T = 1000: 16 chunks, the last one partly filled, states passed across all of them."""
    _check(
        ssd_inputs(1, 1000, 1, P, N, 1, gate="edges", negative=negative, d_shape="HP", seed=5), negative, torch.float32
    )


@RANGES
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_inputs(dtype, negative):
    """16-bit x, dt, A, B, C, D (h0 stays fp32): output in the input dtype, fp32 final state, gradients in each
    input's dtype (outputs_and_grads checks), all within the dtype's tolerance."""
    _check(ssd_inputs(2, 65, H, P, N, 2, d_shape="HP", dtype=dtype, seed=7), negative, dtype)


@RANGES
def test_edge_gates(negative):
    """Gates exactly -1 (signed) or 0 (unsigned, exp underflow), exactly 1 (dt = 0), |a| = 1e-6 of random sign, and
    random, mixed token by token, with two groups: forward and every gradient at fp32 precision."""
    inputs = ssd_inputs(2, 70, H, P, N, 2, gate="edges", negative=negative, seed=3)
    from lrnn_lm.kernels.ssd.gates import gate

    a = gate(inputs["dt"], inputs["A"], negative)
    assert (a == 1).any() and (a == (-1 if negative else 0)).any() and (a.abs() < 2e-6).any()
    _check(inputs, negative, torch.float32)


def test_signed_gate_exactly_zero():
    """Every signed gate exactly 0 (log|a| = -inf): no NaN, exact output, and the true gradients, the gate's
    included (naive's autograd; the chunk backend gives the gate 0 there instead)."""
    from lrnn_lm.kernels.ssd.gates import gate

    inputs = ssd_inputs(2, 70, H, P, N, 2, gate="exact_zero_signed")
    assert (gate(inputs["dt"], inputs["A"], True) == 0).all()
    errs = _check(inputs, True, torch.float32)
    assert errs["grad_dt"] <= TOL[torch.float32] and errs["grad_A"] <= TOL[torch.float32]


def _gates_by_head(negative: bool, T: int = 70, seed: int = 11) -> tuple[dict, list[float]]:
    """Inputs whose head h has every gate at ``mags[h]``: |a| in {1e-6, 1e-4, 1e-2, 1}, then (signed) the same
    magnitudes negated. ``A = -1``, so ``dt`` alone sets each gate."""
    mags = [1e-6, 1e-4, 1e-2, 1.0]
    targets = mags + ([-m for m in mags] if negative else [])
    inputs = ssd_inputs(1, T, len(targets), P, N, 2, d_shape="H", seed=seed)
    if negative:  # 2 exp(-dt) - 1 = a; a = -1 needs exp(-dt) = 0: dt = 200 underflows exactly
        dts = [200.0 if a == -1 else -math.log((1 + a) / 2) for a in targets]
    else:  # exp(-dt) = a
        dts = [-math.log(a) for a in targets]
    with torch.no_grad():
        inputs["A"].fill_(-1.0)
        inputs["dt"].copy_(torch.tensor(dts).expand_as(inputs["dt"]))
    return inputs, targets


@RANGES
def test_gate_gradient_relative_error_by_gate_magnitude(negative):
    """The issue's bar: relative error <= 1e-4 of the gate's gradients (dt's, per head, and A's) against naive at
    |a| in {1e-6, 1e-4, 1e-2, 1}, both signs. The kernels form dL/d|a_t| from products that leave a_t out, so
    nothing is divided by a_t and nothing cancels."""
    from lrnn_lm.kernels.ssd.gates import gate
    from lrnn_lm.kernels.ssd.naive import ssd_naive
    from lrnn_lm.kernels.ssd.triton import ssd_triton

    inputs, targets = _gates_by_head(negative)
    a = gate(inputs["dt"], inputs["A"], negative)[0, 0]
    assert torch.allclose(a.double(), torch.tensor(targets, dtype=torch.float64), rtol=0.1, atol=0)
    got = outputs_and_grads(functools.partial(ssd_triton, negative_eigvals=negative), inputs, ())
    ref = outputs_and_grads(functools.partial(ssd_naive, negative_eigvals=negative), inputs, ())
    for h, target in enumerate(targets):
        err_dt = rel_rmse(got["grad_dt"][..., h], ref["grad_dt"][..., h])
        assert err_dt <= GATE_TOL, f"|a| = {target}: dt's gradient relative error {err_dt:.2e}"
        err_A = rel_rmse(got["grad_A"][h], ref["grad_A"][h])
        assert err_A <= GATE_TOL, f"|a| = {target}: A's gradient relative error {err_A:.2e}"


@RANGES
@pytest.mark.parametrize("with_state", [False, True], ids=["h0=0", "h0"])
def test_cu_seqlens_equals_separate_naive_calls(negative, with_state):
    """Packed sequences (one launch per kernel, the running sign restarting per sequence, chunks never crossing a
    sequence start) vs one naive call each: lengths 1, under, over and across chunks; 2 heads sharing one group.
    fp32, so 1e-5."""
    gates = ["random", "edges"]
    per_seq = [
        ssd_inputs(1, n, 2, P, N, 1, gate=gates[i % 2], negative=negative, seed=i, with_state=with_state)
        for i, n in enumerate([17, 1, 70, 5, 130])
    ]
    check_packing(ssd, per_seq, POS, shared=("A", "D"), backend="triton", negative_eigvals=negative)


def test_empty_sequence_keeps_its_initial_state():
    inputs = {k: v.detach() for k, v in ssd_inputs(1, 30, H, P, N, 2).items()}
    h0 = torch.randn(3, H, P, N)
    cu = torch.tensor([0, 10, 10, 30])
    args = [inputs[n] for n in POS]
    kw = dict(initial_state=h0, output_final_state=True, cu_seqlens=cu, negative_eigvals=True)
    _, S = ssd(*args, backend="triton", **kw)
    _, S_ref = ssd(*args, backend="naive", **kw)
    assert torch.equal(S[1], h0[1])
    compare({"state": S}, {"state": S_ref}, TOL[torch.float32])


def test_chunk_table_covers_every_row_once():
    """The device-side chunk table: every row of every sequence in exactly one chunk of that sequence, chunks at
    most CHUNK long, the spare chunks of the bound empty."""
    from lrnn_lm.kernels.ssd.triton import _chunk_table

    cu = torch.tensor([0, 3, 3, 70, 200, 201])
    start, length, first = _chunk_table(cu, 201, 64)
    covered = torch.zeros(201, dtype=torch.long)
    for s, n in zip(start.tolist(), length.tolist()):
        covered[s : s + n] += 1
        assert n <= 64
    assert torch.equal(covered, torch.ones(201, dtype=torch.long))
    for i in range(5):
        for c in range(int(first[i]), int(first[i + 1])):
            assert cu[i] <= start[c] and start[c] + length[c] <= cu[i + 1] and length[c] > 0
    assert (length[int(first[-1]) :] == 0).all()


def test_batch_rows_equal_the_same_rows_packed():
    """A batch of rows of length T runs as a packed row with equal lengths: the same chunks, bit for bit."""
    inputs = {k: v.detach() for k, v in ssd_inputs(2, 40, H, P, N, 2).items()}
    kw = dict(D=inputs["D"], initial_state=inputs["initial_state"], output_final_state=True, negative_eigvals=True)
    y, S = ssd(*[inputs[n] for n in POS], backend="triton", **kw)
    packed = [inputs[n] if n == "A" else inputs[n].reshape(1, 80, *inputs[n].shape[2:]) for n in POS]
    y_p, S_p = ssd(*packed, cu_seqlens=torch.tensor([0, 40, 80]), backend="triton", **kw)
    assert torch.equal(y.reshape(1, 80, H, P), y_p) and torch.equal(S, S_p)


@pytest.mark.parametrize("chunk,block_p,block_n", [(16, 16, 16), (32, 16, 16), (128, 64, 64)])
def test_other_tilings(monkeypatch, chunk, block_p, block_n):
    """Every tiling a GPU check may switch to (``ssd.triton.TILING``) computes the same op: chunks of 16, 32 and
    128, and P = 40, N = 20 walked in several slices of 16."""
    from lrnn_lm.kernels.ssd import triton as ssd_triton_module

    tiling = ssd_triton_module.Tiling(chunk=chunk, block_p=block_p, block_n=block_n)
    monkeypatch.setattr(ssd_triton_module, "TILING", tiling)
    _check(ssd_inputs(1, 40, 2, 40, 20, 1, gate="edges", d_shape="HP", seed=chunk), True, torch.float32)
