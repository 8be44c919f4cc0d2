"""DeltaProduct (n_h Householder steps per token, optional signed gate): chunk against the naive token loop."""

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.kernels import delta_product, delta_rule, gated_delta_rule

from ..device import device
from .inputs import check_packing, compare, outputs_and_grads

POS = ("q", "k", "v", "beta", "alpha")
TOL = 1e-5  # fp32 chunk vs fp32 naive, as for the delta rule


def product_inputs(
    batch, T, n_h, H, K, V, *, gated=True, alpha_range="[-1,1]", alpha="random", beta="random", seed=0, with_state=True
):
    """Leaves for :func:`delta_product`: unit ``k`` per sub-step, ``beta`` random in (0, 2) or exactly 0 / 2,
    ``alpha`` random over ``alpha_range`` or ``"edges"`` (random picks among -1, 0, 1), or None when not gated."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, T, H, K, generator=g)
    k = F.normalize(torch.randn(batch, T, n_h, H, K, generator=g), dim=-1)
    v = torch.randn(batch, T, n_h, H, V, generator=g)
    b = 2 * torch.rand(batch, T, n_h, H, generator=g)
    if beta == "exact_max":
        b = torch.full_like(b, 2.0)
    elif beta == "exact_zero":
        b = torch.zeros_like(b)
    low = -1.0 if alpha_range == "[-1,1]" else 0.0
    a = low + (1.0 - low) * torch.rand(batch, T, H, generator=g)
    if alpha == "edges":
        a = torch.tensor([-1.0, 0.0, 1.0])[torch.randint(0, 3, a.shape, generator=g)]
    h0 = torch.randn(batch, H, K, V, generator=g) if with_state else None
    leaves = {"q": q, "k": k, "v": v, "beta": b, "alpha": a if gated else None, "initial_state": h0}
    return {name: (None if t is None else t.to(device()).requires_grad_()) for name, t in leaves.items()}


def run(inputs, backend, **kw):
    return outputs_and_grads(delta_product, inputs, POS, backend=backend, **kw)


@pytest.mark.parametrize("n_h", [1, 2, 3])
@pytest.mark.parametrize("T", [1, 63, 100])
@pytest.mark.parametrize("gating", ["none", "[0,1]", "[-1,1]"])
def test_chunk_matches_naive(n_h, T, gating):
    inputs = product_inputs(2, T, n_h, 3, 9, 11, gated=gating != "none", alpha_range=gating, seed=T + n_h)
    compare(run(inputs, "chunk"), run(inputs, "naive"), TOL)


@pytest.mark.parametrize("n_h", [2, 3])
@pytest.mark.parametrize("beta", ["random", "exact_max", "exact_zero"])
def test_edge_gates(n_h, beta):
    inputs = product_inputs(2, 50, n_h, 3, 9, 11, alpha="edges", beta=beta)
    got, ref = run(inputs, "chunk"), run(inputs, "naive")
    for name, t in got.items():
        assert torch.isfinite(t).all(), name
    compare(got, ref, TOL)


@pytest.mark.parametrize("n_h", [1, 3])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_cu_seqlens_equals_separate_calls(n_h, gated, backend):
    per_seq = [product_inputs(1, n, n_h, 3, 9, 11, gated=gated, seed=i) for i, n in enumerate([17, 1, 40, 5])]
    check_packing(delta_product, per_seq, POS, shared=(), backend=backend)


@pytest.mark.parametrize("gated", [False, True])
def test_one_householder_step_is_the_gated_delta_rule(gated):
    """n_h = 1 is exactly gated_delta_rule (delta_rule without a gate): the specs agree, naive against naive."""
    inputs = product_inputs(2, 30, 1, 3, 9, 11, gated=gated)
    got = run(inputs, "naive")
    flat = {n: (t[:, :, 0] if n in ("k", "v", "beta") else t) for n, t in inputs.items()}
    if gated:
        ref = outputs_and_grads(gated_delta_rule, flat, POS, backend="naive")
    else:
        ref = outputs_and_grads(delta_rule, {n: t for n, t in flat.items() if n != "alpha"}, POS[:-1], backend="naive")
    for n in ("k", "v", "beta"):
        got[f"grad_{n}"] = got[f"grad_{n}"][:, :, 0]
    compare(got, ref, 1e-6)


def test_custom_scale():
    inputs = product_inputs(2, 20, 2, 3, 9, 11)
    compare(run(inputs, "chunk", scale=0.3), run(inputs, "naive", scale=0.3), TOL)


def test_shapes_are_checked():
    inputs = {n: (None if t is None else t.detach()) for n, t in product_inputs(1, 4, 2, 1, 4, 3).items()}
    with pytest.raises(ValueError, match="beta must be"):
        delta_product(inputs["q"], inputs["k"], inputs["v"], inputs["beta"][:, :, :1], inputs["alpha"])
    inputs["alpha"][0, 1, 0] = 1.5
    with pytest.raises(ValueError, match="alpha must lie in"):
        delta_product(inputs["q"], inputs["k"], inputs["v"], inputs["beta"], inputs["alpha"])


@pytest.mark.parametrize("n_h", [2, 3])
def test_naive_matches_fla_reference(n_h):
    """Our spec against fla's CPU reference, which takes k, v, beta interleaved ([B, T * n_h, ...]) and
    g = log alpha (so alpha in (0, 1] only)."""
    fla_naive = pytest.importorskip("fla.ops.gated_delta_product.naive")
    inputs = product_inputs(2, 30, n_h, 3, 9, 11, alpha_range="[0,1]")
    with torch.no_grad():
        inputs["alpha"].clamp_(min=0.05)
    q, k, v, beta, alpha = (inputs[n].detach() for n in POS)
    h0 = inputs["initial_state"].detach()
    o, S = delta_product(q, k, v, beta, alpha, initial_state=h0, output_final_state=True, backend="naive")
    B, T = q.shape[:2]
    o_ref, S_ref = fla_naive.naive_recurrent_gated_delta_product(
        q,
        k.reshape(B, T * n_h, *k.shape[3:]),
        v.reshape(B, T * n_h, *v.shape[3:]),
        alpha.log(),
        beta.reshape(B, T * n_h, -1),
        scale=q.shape[-1] ** -0.5,
        initial_state=h0.clone(),
        output_final_state=True,
        num_householder=n_h,
    )
    compare({"out": o, "state": S}, {"out": o_ref, "state": S_ref}, 1e-6)
