"""SSD (Mamba-2) chunk backend against the naive token loop (the specification), plus the running-sign identity it
relies on and one comparison of our naive with an independent peer (fla's recurrent simple GLA)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.kernels import ssd
from lrnn_lm.kernels.ssd.chunk import ssd_chunk
from lrnn_lm.kernels.ssd.gates import gate, log_abs_gate, running_sign
from lrnn_lm.kernels.ssd.naive import ssd_naive

from ..device import device
from .inputs import check_packing, compare, outputs_and_grads

POS = ("x", "dt", "A", "B", "C")
TOL = 1e-5  # fp32 chunk vs fp32 naive: measured errors are ~1e-7 to 1e-6

# Gate regimes (A = -1 except "random", so dt alone sets each token's gate):
#   random: exp(dt A) spread over (0, 1), random signs when signed;
#   edges: each token one of exp(dt A) = 0 by underflow (signed gate exactly -1), dt = 0 (gate exactly 1 in both
#          ranges), |a| = 1e-6 (of random sign when ``negative``), or random;
#   exact_zero_signed: every exp(dt A) exactly 0.5, so the signed gate is exactly 0 (see test_signed_gate_exactly_zero).


def ssd_inputs(
    batch, T, H, P, N, G, *, gate="random", negative=True, d_shape="H", dtype=torch.float32, seed=0, with_state=True
):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, H, P, generator=g)
    dt = F.softplus(torch.randn(batch, T, H, generator=g) - 1)
    A = -torch.exp(torch.randn(H, generator=g) * 0.5)
    if gate == "edges":
        A = -torch.ones(H)
        sign = torch.where(torch.rand(batch, T, H, generator=g) < 0.5, -1.0, 1.0)
        # |a| = 1e-6: the signed gate 2 exp(-dt) - 1 = +-1e-6 (up to fp32 rounding), or exp(-dt) = 1e-6.
        tiny = -torch.log(0.5 + 0.5e-6 * sign) if negative else torch.full_like(dt, -math.log(1e-6))
        pick = torch.randint(0, 4, (batch, T, H), generator=g)
        dt = torch.where(pick == 0, 200.0, torch.where(pick == 1, 0.0, torch.where(pick == 2, tiny, dt)))
    elif gate == "exact_zero_signed":
        A, dt = -torch.ones(H), torch.full_like(dt, math.log(2.0))
    elif gate != "random":
        raise ValueError(gate)
    B = torch.randn(batch, T, G, N, generator=g)
    C = torch.randn(batch, T, G, N, generator=g)
    D = {"H": torch.randn(H, generator=g), "HP": torch.randn(H, P, generator=g), None: None}[d_shape]
    h0 = torch.randn(batch, H, P, N, generator=g) if with_state else None
    tensors = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "initial_state": h0}
    return {
        k: (None if v is None else v.to(device(), dtype if k != "initial_state" else torch.float32).requires_grad_())
        for k, v in tensors.items()
    }


def run(inputs, backend, **kw):
    return outputs_and_grads(ssd, inputs, POS, backend=backend, **kw)


def check(inputs, negative, tol=TOL):
    got = run(inputs, "chunk", negative_eigvals=negative)
    ref = run(inputs, "naive", negative_eigvals=negative)
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    return compare(got, ref, tol)


@pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("T", [1, 63, 64, 65])
@pytest.mark.parametrize("G", [1, 3])
def test_chunk_matches_naive(T, G, negative):
    # Odd sizes: H 3, P 5, N 7; G = 1 (all heads share B, C) and G = H.
    check(ssd_inputs(2, T, 3, 5, 7, G, seed=T + G), negative)


@pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
def test_chunk_matches_naive_long(negative):
    check(ssd_inputs(2, 1000, 2, 5, 7, 1, d_shape="HP"), negative)


@pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("with_state", [False, True], ids=["h0=0", "h0"])
@pytest.mark.parametrize("d_shape", ["H", "HP", None])
def test_state_and_skip_variants(d_shape, with_state, negative):
    check(ssd_inputs(3, 70, 4, 5, 7, 2, d_shape=d_shape, with_state=with_state), negative)


@pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("chunk_size", [1, 16, 64])
def test_edge_gates(negative, chunk_size):
    """Gates exactly -1 (signed; exp underflows to 0), exactly 0 (unsigned, the same underflow), exactly 1 (dt = 0),
    |a| = 1e-6 (random signs when signed) and random, mixed token by token: forward and every gradient exact."""
    inputs = ssd_inputs(2, 130, 3, 5, 7, 1, gate="edges", negative=negative, seed=3)
    a = gate(inputs["dt"], inputs["A"], negative)
    assert (a == 1).any() and (a == (-1 if negative else 0)).any()
    assert ((a.abs() - 1e-6).abs() < 1e-7).any() and (not negative or (a.abs() < 1e-5).logical_and(a < 0).any())
    chunk = functools.partial(ssd_chunk, negative_eigvals=negative, chunk_size=chunk_size)
    got = outputs_and_grads(chunk, inputs, ())
    ref = outputs_and_grads(functools.partial(ssd_naive, negative_eigvals=negative), inputs, ())
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    compare(got, ref, TOL)


def test_signed_gate_exactly_zero():
    """Signed gate exactly 0 at every token: the output is exact; the gradient through the gate is 0 by definition
    (documented), so x, B, C, D and h0 are exact, and dt, A get exactly their non-gate terms."""
    inputs = ssd_inputs(2, 70, 3, 5, 7, 1, gate="exact_zero_signed")
    assert (gate(inputs["dt"], inputs["A"], True) == 0).all()
    got = run(inputs, "chunk", negative_eigvals=True)
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    # rel_rmse of the all-zero reference dA is relative to 1e-12: the chunk's dA must be zero to that precision.
    compare(got, gate_stopped_reference(inputs), TOL)


def gate_stopped_reference(inputs: dict) -> dict:
    """Naive outputs and gradients with no gradient through the (signed) gate: naive runs on the gate's dt and A
    detached, with ``x * dt / dt.detach()`` (the value of x) carrying dt's input-path gradient, and the skip term
    added from the real x. Same cotangents as ``outputs_and_grads``."""
    x, dt, D = inputs["x"], inputs["dt"], inputs["D"]
    x_in = x * dt[..., None] / dt.detach()[..., None]
    kw = dict(initial_state=inputs["initial_state"], output_final_state=True, negative_eigvals=True, backend="naive")
    o, S = ssd(x_in, dt.detach(), inputs["A"].detach(), inputs["B"], inputs["C"], None, **kw)
    o = (o.float() + D[:, None] * x.float()).to(x.dtype)
    g = torch.Generator().manual_seed(1)
    do, dS = torch.randn(o.shape, generator=g).to(o.device), torch.randn(S.shape, generator=g).to(S.device)
    names = ["x", "dt", "B", "C", "D", "initial_state"]
    grads = torch.autograd.grad((o.float() * do).sum() + (S * dS).sum(), [inputs[n] for n in names])
    ref = {"out": o.detach(), "state": S.detach(), **{f"grad_{n}": gr for n, gr in zip(names, grads)}}
    ref["grad_A"] = torch.zeros_like(inputs["A"])
    return ref


@pytest.mark.parametrize("backend", ["naive", "chunk"])
@pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("with_state", [False, True], ids=["h0=0", "h0"])
def test_cu_seqlens_equals_separate_calls(backend, negative, with_state):
    lengths = [17, 1, 70, 5]
    gates = ["random", "edges"]
    per_seq = [
        ssd_inputs(1, n, 3, 5, 7, 1, gate=gates[i % 2], negative=negative, seed=i, with_state=with_state)
        for i, n in enumerate(lengths)
    ]
    check_packing(ssd, per_seq, POS, shared=("A", "D"), backend=backend, negative_eigvals=negative)


def test_half_precision_inputs_keep_fp32_state():
    inputs = ssd_inputs(2, 33, 3, 5, 7, 1, dtype=torch.bfloat16)
    kw = {k: inputs[k] for k in ("D", "initial_state")}
    y, S = ssd(*[inputs[n] for n in POS], **kw, output_final_state=True, negative_eigvals=True)
    assert y.dtype == torch.bfloat16 and S.dtype == torch.float32


@pytest.mark.parametrize("negative", [False, True], ids=["[0,1]", "[-1,1]"])
def test_chunk_under_bf16_autocast_computes_in_fp32(negative):
    """The chunk backend computes in fp32 whatever the autocast state: under CPU bf16 autocast its outputs and
    gradients equal those without autocast, bit for bit (and it runs: its in-place matmul updates would otherwise
    meet bf16 matmul outputs)."""
    inputs = ssd_inputs(2, 70, 3, 5, 7, 1, negative=negative)
    ref = run(inputs, "chunk", negative_eigvals=negative)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(inputs, "chunk", negative_eigvals=negative)
    for name, t in ref.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_running_sign_identity_fp64():
    """A signed token loop equals an unsigned one fed |a| and P dt x, read out times P (fp64, packed sequences,
    exact zeros and -1 among the gates), using the same helpers as the chunk and triton backends."""
    g = torch.Generator().manual_seed(0)
    T, H, P, N = 50, 3, 4, 5
    cu = torch.tensor([0, 20, 20, 37, 50])
    x = torch.randn(1, T, H, P, generator=g, dtype=torch.float64)
    dt = torch.rand(1, T, H, generator=g, dtype=torch.float64) * 2
    dt[0, ::7] = math.log(2.0)  # signed gate exactly 0
    dt[0, 3::11] = 1e3  # exactly -1
    A = -torch.ones(H, dtype=torch.float64)
    Bm, Cm = (torch.randn(1, T, H, N, generator=g, dtype=torch.float64) for _ in range(2))
    a = gate(dt, A, True)
    assert (a == 0).any() and (a == -1).any() and (a > 0).any()
    log_abs, sign = log_abs_gate(dt, A, True)
    assert torch.allclose(log_abs.exp() * sign, a, rtol=1e-14, atol=0) and torch.equal(sign.abs(), torch.ones_like(a))
    Ps = running_sign(sign, cu)

    def loop(gates, scale_in, scale_out):
        ys, states = [], []
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
            h = torch.zeros(H, P, N, dtype=torch.float64)
            for t in range(s, e):
                u = (scale_in[0, t] * dt[0, t])[:, None, None] * x[0, t, :, :, None] * Bm[0, t, :, None, :]
                h = gates[0, t, :, None, None] * h + u
                ys.append(scale_out[0, t, :, None] * torch.einsum("hpn,hn->hp", h, Cm[0, t]))
            states.append(h * (scale_out[0, e - 1, :, None, None] if e > s else 1))
        return torch.stack(ys), torch.stack(states)

    ones = torch.ones_like(a)
    y_signed, S_signed = loop(a, ones, ones)
    y_split, S_split = loop(log_abs.exp(), Ps, Ps)
    assert (y_split - y_signed).abs().max() < 1e-12
    assert (S_split - S_signed).abs().max() < 1e-12
    # The sign restarts at every sequence start.
    assert all(bool(Ps[0, s].eq(sign[0, s]).all()) for s in cu[:-1].tolist() if s < T)


def test_naive_matches_fla_recurrent_reference():
    """Our naive against an independent implementation of the same recurrence (unsigned range, the only one it
    has): fla's ``naive_recurrent_simple_gla`` with q = C, k = B per head, v = dt x, g = dt A, scale 1."""
    naive = pytest.importorskip("fla.ops.simple_gla.naive")
    inputs = {k: (v.detach() if v is not None else None) for k, v in ssd_inputs(2, 40, 4, 5, 7, 2).items()}
    kw = dict(D=inputs["D"], initial_state=inputs["initial_state"], output_final_state=True, backend="naive")
    y, S = ssd(*[inputs[n] for n in POS], **kw)
    x, dt, A, B, C, D = (inputs[k] for k in ("x", "dt", "A", "B", "C", "D"))
    q, k = (t.repeat_interleave(2, dim=2) for t in (C, B))
    h0 = inputs["initial_state"].transpose(-1, -2)  # fla's state is [K, V] = [N, P]
    o, S_fla = naive.naive_recurrent_simple_gla(
        q, k, dt[..., None] * x, dt * A, scale=1.0, initial_state=h0, output_final_state=True
    )
    compare({"out": y, "state": S}, {"out": o + D[:, None] * x, "state": S_fla.transpose(-1, -2)}, 1e-6)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda i: i.update(x=i["x"][..., 0]), "x must be"),
        (lambda i: i.update(dt=i["dt"][:, :, :2]), "dt must be"),
        (lambda i: i.update(A=i["A"][:2]), "A must be"),
        (lambda i: i.update(B=i["B"].repeat(1, 1, 2, 1), C=i["C"].repeat(1, 1, 2, 1)), "G=2 must divide H=3"),
        (lambda i: i.update(C=i["C"][..., :3]), "C must match B"),
        (lambda i: i.update(D=torch.ones(3, 4)), "D must be"),
        (lambda i: i.update(initial_state=torch.zeros(2, 3, 5, 6)), "initial_state must be"),
        (lambda i: i.update(dt=-i["dt"]), "dt must lie in"),
        (lambda i: i.update(A=-i["A"]), "A must lie in"),
        (lambda i: i.update(x=i["x"].long()), "x must be a floating-point"),
    ],
)
def test_bad_arguments_name_the_argument(change, match):
    inputs = {k: (v.detach() if v is not None else None) for k, v in ssd_inputs(2, 5, 3, 5, 7, 1).items()}
    change(inputs)
    with pytest.raises(ValueError, match=match):
        ssd(*[inputs[n] for n in POS], D=inputs["D"], initial_state=inputs["initial_state"], backend="naive")


def test_triton_backend_imports_no_fla():
    """The ssd Triton backend is our own kernels: neither it nor the modules it imports names fla (fla's
    chunk_simple_gla stays a peer in benchmarks only)."""
    import ast
    from pathlib import Path

    from lrnn_lm.kernels.ssd import naive

    folder = Path(naive.__file__).parent
    for name in ("triton.py", "triton_kernels.py", "gates.py"):
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not any(m == "fla" or m.startswith("fla.") for m in modules), (name, modules)
