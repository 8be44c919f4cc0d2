"""Triton gated delta rule and DeltaProduct (fla's kernels behind our running-sign wrapper) against the naive
references, under the Triton interpreter.

Run with ``TRITON_INTERPRET=1 python -m pytest -m triton_interpret tests/kernels/test_triton_gated_delta.py``.
fla's kernels are autotuned and index with loop variables, so these tests use the ``triton_interpreter_shims``
fixture (``conftest.py``).

Every comparison is against the naive token loop (fp32, on the same rounded inputs): outputs, final states and
the gradients of q, k, v, beta, alpha and the initial state, with ``beta`` in (0, 2) and ``alpha`` in [-1, 1].

Dtypes, and why:

- fp16 (``chunk_gated_delta_rule``, fla's intended half dtype): tolerance 5e-3 relative RMSE, as for the delta
  rule (about 10 fp16 unit roundoffs; fla keeps its WY factors and per-chunk states in the input dtype).
  Measured about 5e-4.
- fp32: this fla version's ``chunk_gated_delta_rule`` accepts fp32 (its ``chunk_delta_rule`` does not). The
  interpreter computes ``tl.dot`` in true fp32, so the tolerance is 1e-5 (measured 4e-6 at most, on dalpha);
  on a GPU Triton uses TF32 for fp32 dots, which ``--device cuda`` checks with a looser bar (tests/device.py).
- bf16 is not checkable here: the interpreter runs numpy arithmetic on bf16's raw bit patterns (relative errors
  around 1e10 whatever the kernel does; see ``docs/triton_on_cpu.md``). Checked on a GPU only.

Gates near 0: the wrapper floors ``|alpha|`` at 1e-10 in fla's forward (module docstring of
``gated_delta_rule.triton``), and when some ``|alpha| < 0.1`` the gate's gradient comes from
``gated_delta_rule/gate_grad.py`` (no division by ``alpha``), so dL/dalpha is checked against naive at the plain
tolerance everywhere, at ``|alpha|`` of 1e-2, 1e-4, 1e-6 and exactly 0 included. Only the initial state's gradient
behind a zero first gate differs from naive: the floor leaves 1e-10 of it (``test_zero_first_gate_...``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .inputs import compare, outputs_and_grads
from .triton_interpreter import interpreter_only_marks

pytestmark = interpreter_only_marks(fla_shims=True)
pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")

TOL = {torch.float16: 5e-3, torch.float32: 1e-5}
POS = ("q", "k", "v", "beta", "alpha")


def _inputs(batch, T, H, K, V, *, dtype, alpha="[-1,1]", seed=0, with_h0=True, n_seq=None, n_h=None):
    """Leaves in ``dtype`` (unit-norm ``k``, ``beta`` in (0, 2)); the state in fp32. ``alpha``: uniform over
    ``"[-1,1]"`` or ``"[0,1]"``, ``"edges"`` (random picks among -1, 0, 1, never 0 on the first token, so that
    the initial state's gradient is not all zero), or a float (that magnitude with random signs).
    With ``n_h``, ``k, v, beta`` get a sub-step axis (DeltaProduct)."""
    g = torch.Generator().manual_seed(seed)
    sub = () if n_h is None else (n_h,)
    q = torch.randn(batch, T, H, K, generator=g)
    k = F.normalize(torch.randn(batch, T, *sub, H, K, generator=g), dim=-1)
    v = torch.randn(batch, T, *sub, H, V, generator=g)
    beta = 2 * torch.rand(batch, T, *sub, H, generator=g)
    u = torch.rand(batch, T, H, generator=g)
    if alpha == "[-1,1]":
        a = 2 * u - 1
    elif alpha == "[0,1]":
        a = u
    elif alpha == "edges":
        a = torch.tensor([-1.0, 0.0, 1.0])[torch.randint(0, 3, u.shape, generator=g)]
        a[:, 0] = torch.where(u[:, 0] < 0.5, -1.0, 1.0)
    else:
        a = float(alpha) * torch.where(u < 0.5, -1.0, 1.0)
    h0 = torch.randn(n_seq or batch, H, K, V, generator=g) if with_h0 else None
    out = {"q": q, "k": k, "v": v, "beta": beta, "alpha": a}
    out = {name: t.to(dtype) for name, t in out.items()}
    out["initial_state"] = h0
    return {name: (t.requires_grad_() if t is not None else None) for name, t in out.items()}


def _gated(inputs, **kw):
    from lrnn_lm.kernels.gated_delta_rule.naive import gated_delta_rule_naive
    from lrnn_lm.kernels.gated_delta_rule.triton import gated_delta_rule_triton

    got = outputs_and_grads(gated_delta_rule_triton, inputs, POS, **kw)
    assert got["out"].dtype == inputs["v"].dtype and got["state"].dtype == torch.float32
    return got, outputs_and_grads(gated_delta_rule_naive, inputs, POS, **kw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("alpha", ["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("T", [1, 100])
def test_chunk_matches_naive(dtype, alpha, T):
    # K != V so that a transposed state layout would fail; T = 100 spans two chunks of 64.
    inputs = _inputs(2, T, 2, 32, 16, dtype=dtype, alpha=alpha, seed=T)
    got, ref = _gated(inputs)
    compare(got, ref, TOL[dtype])


def test_no_initial_state():
    inputs = _inputs(2, 70, 2, 32, 16, dtype=torch.float16, with_h0=False)
    got, ref = _gated(inputs)
    compare(got, ref, TOL[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_edge_gates(dtype):
    """alpha in {-1, 0, 1} with beta in {0, 2, random}: everything matches naive, the gradient of the
    exactly-zero gates included (the true derivative, from gate_grad)."""
    inputs = _inputs(2, 100, 2, 32, 16, dtype=dtype, alpha="edges")
    with torch.no_grad():
        inputs["beta"][:, 10:30] = 2.0
        inputs["beta"][:, 30:40] = 0.0
    got, ref = _gated(inputs)
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    zero = inputs["alpha"].detach() == 0
    assert zero.any() and (ref["grad_alpha"][zero] != 0).any()  # some are 0: after another zero gate, S = 0
    compare(got, ref, TOL[dtype])
    compare({"zero": got["grad_alpha"][zero]}, {"zero": ref["grad_alpha"][zero]}, TOL[dtype])


def test_zero_first_gate_forgets_the_initial_state():
    """alpha = 0 on the first token: the initial state is forgotten up to the 1e-10 floor, in the forward
    (finite, exact to fp32) and in its gradient (1e-10 of the gradient scale instead of exactly 0)."""
    inputs = _inputs(1, 20, 2, 32, 16, dtype=torch.float32)
    with torch.no_grad():
        inputs["alpha"][:, 0] = 0.0
    got, ref = _gated(inputs)
    assert (ref["grad_initial_state"] == 0).all()
    assert got["grad_initial_state"].abs().max() <= 1e-8 * got["grad_q"].abs().max()
    skip = ("grad_initial_state",)
    compare(
        {k: v for k, v in got.items() if k not in skip},
        {k: v for k, v in ref.items() if k not in skip},
        TOL[torch.float32],
    )


@pytest.mark.parametrize("magnitude", [1e-2, 1e-4, 1e-6])
def test_small_gates(magnitude):
    """Gates of +-magnitude: dL/dalpha at the plain fp32 tolerance (fla's dL/dlog|alpha| / alpha alone gave
    relative errors of 6.5e-5, 3.5e-3 and 0.5 here)."""
    got, ref = _gated(_inputs(2, 80, 2, 32, 16, dtype=torch.float32, alpha=magnitude))
    compare(got, ref, TOL[torch.float32])


@pytest.mark.parametrize("low,calls", [(0.1, 0), (0.0, 1)])
def test_exact_gate_gradient_only_when_a_gate_is_small(monkeypatch, low, calls):
    """All ``|alpha| >= 0.1``: fla's own gradient (relative error below 4e-6), no extra work; one smaller gate:
    gate_grad. Both against naive."""
    from lrnn_lm.kernels.gated_delta_rule import gate_grad

    seen = []
    real = gate_grad.gate_grad
    monkeypatch.setattr(gate_grad, "gate_grad", lambda *a, **k: seen.append(1) or real(*a, **k))
    inputs = _inputs(2, 80, 2, 32, 16, dtype=torch.float32)
    with torch.no_grad():
        a = inputs["alpha"]
        a.copy_(torch.where(a < 0, -1.0, 1.0) * (0.1 + 0.9 * a.abs()))
        a[0, 5, 1] = low
    got, ref = _gated(inputs)
    assert len(seen) == calls
    compare(got, ref, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_cu_seqlens(dtype):
    """Packed sequences (one empty, one of length 1): the running sign restarts at every sequence start."""
    from lrnn_lm.kernels import gated_delta_rule
    from lrnn_lm.kernels.gated_delta_rule.triton import gated_delta_rule_triton

    cu = torch.tensor([0, 30, 30, 31, 100], dtype=torch.int32)
    inputs = _inputs(1, 100, 2, 32, 16, dtype=dtype, n_seq=4)
    got = outputs_and_grads(gated_delta_rule_triton, inputs, POS, cu_seqlens=cu)
    # naive has no varlen: the public op runs it once per sequence (the dispatcher's loop).
    ref = outputs_and_grads(lambda *a, **k: gated_delta_rule(*a, backend="naive", **k), inputs, POS, cu_seqlens=cu)
    compare(got, ref, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_decode_step_without_grad(dtype):
    """T == 1 without gradients runs fla's fused recurrent op (forward only)."""
    from lrnn_lm.kernels.gated_delta_rule.naive import gated_delta_rule_naive
    from lrnn_lm.kernels.gated_delta_rule.triton import gated_delta_rule_triton

    inputs = {n: (t.detach() if t is not None else None) for n, t in _inputs(3, 1, 2, 32, 16, dtype=dtype).items()}
    args = [inputs[n] for n in POS]
    kw = dict(initial_state=inputs["initial_state"], output_final_state=True)
    o, S = gated_delta_rule_triton(*args, **kw)
    o_ref, S_ref = gated_delta_rule_naive(*args, **kw)
    compare({"out": o, "state": S}, {"out": o_ref, "state": S_ref}, TOL[dtype])


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_delta_product(gated, dtype):
    """DeltaProduct with n_h = 2 through the public op on the triton backend, against its own naive loop.
    Ungated, it runs fla's delta rule (fp32: fla's fused recurrent delta rule, the documented fp32 policy)."""
    from lrnn_lm.kernels import delta_product

    inputs = _inputs(2, 40, 2, 32, 16, dtype=dtype, n_h=2)
    if not gated:
        inputs["alpha"] = None

    def op(backend):
        return lambda *a, **kw: delta_product(*a, backend=backend, **kw)

    got, ref = outputs_and_grads(op("triton"), inputs, POS), outputs_and_grads(op("naive"), inputs, POS)
    if gated:
        compare(got, ref, TOL[dtype])


def test_delta_product_cu_seqlens():
    from lrnn_lm.kernels import delta_product

    cu = torch.tensor([0, 7, 8, 30], dtype=torch.int64)
    inputs = _inputs(1, 30, 2, 32, 16, dtype=torch.float16, n_h=3, n_seq=3)
    kw = dict(cu_seqlens=cu)
    got = outputs_and_grads(lambda *a, **k: delta_product(*a, backend="triton", **k), inputs, POS, **kw)
    ref = outputs_and_grads(lambda *a, **k: delta_product(*a, backend="naive", **k), inputs, POS, **kw)
    compare(got, ref, TOL[torch.float16])


def test_public_api_dispatches_to_triton():
    from lrnn_lm.kernels import gated_delta_rule

    inputs = {k: v.detach() for k, v in _inputs(2, 40, 2, 32, 16, dtype=torch.float16).items()}
    args = [inputs[k] for k in POS]
    kw = dict(initial_state=inputs["initial_state"], output_final_state=True)
    o, S = gated_delta_rule(*args, backend="triton", **kw)
    o_ref, S_ref = gated_delta_rule(*args, backend="naive", **kw)
    compare({"out": o, "state": S}, {"out": o_ref, "state": S_ref}, TOL[torch.float16])
