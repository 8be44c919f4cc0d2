"""``use_qk_l2norm_in_kernel``: the delta-rule ops normalise q and k themselves (fla's ``x / sqrt(sum x^2 + 1e-6)``).

Checked on unnormalised q and k, for delta_rule, gated_delta_rule and delta_product:

- naive with the option equals naive on ``l2norm(q), l2norm(k)`` (the definition), gradients through the norm;
- chunk with the option against naive with it: outputs, final states, every gradient, relative RMSE 1e-5 (fp32;
  the kernels' own chunk-vs-naive tolerance), B 2, odd T and dims, beta in (0, 1) and (0, 2) with the edges 0 and
  2, gates random over [-1, 1] and exactly -1, 0, 1;
- packed sequences (cu_seqlens) against separate naive calls.
"""

from __future__ import annotations

import functools

import pytest
import torch

from lrnn_lm.kernels import delta_product, delta_rule, gated_delta_rule
from lrnn_lm.kernels.l2norm import l2norm

from .inputs import check_against_naive, check_packing, compare, delta_inputs, outputs_and_grads

TOL = 1e-5
OPS = {"delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule, "delta_product": delta_product}


def _inputs(op, batch=2, T=37, H=3, K=12, V=10, *, beta_max=2.0, beta="random", alpha="random", seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    base = delta_inputs(batch, T, H, K, V, beta_max=beta_max, beta=beta, seed=seed)
    n_h = 2
    if op == "delta_product":
        other = delta_inputs(batch, T, H, K, V, beta_max=beta_max, beta=beta, seed=seed + 1)
        for name in ("k", "v", "beta"):
            base[name] = torch.stack([base[name].detach(), other[name].detach()], dim=2)
    # Unnormalised keys and queries, norms spread over (0.3, 3.3).
    base["k"] = base["k"].detach() * (0.3 + 3 * torch.rand(*base["k"].shape[:-1], 1, generator=g))
    base["q"] = base["q"].detach() * 2.0
    if op != "delta_rule":
        a = 2 * torch.rand(batch, T, H, generator=g) - 1
        if alpha == "edges":
            a = torch.tensor([-1.0, 0.0, 1.0])[torch.randint(0, 3, (batch, T, H), generator=g)]
        base["alpha"] = a
    assert n_h == 2
    return {name: (t.detach().clone().requires_grad_() if t is not None else None) for name, t in base.items()}


def _positional(op):
    return ("q", "k", "v", "beta") + (("alpha",) if op != "delta_rule" else ())


@pytest.mark.parametrize("op", list(OPS))
def test_naive_option_is_the_l2norm_of_q_and_k(op):
    inputs = _inputs(op)
    pos = _positional(op)
    naive = functools.partial(OPS[op], backend="naive")

    def normalised_first(q, k, *rest, **kw):
        return naive(l2norm(q).to(q.dtype), l2norm(k).to(k.dtype), *rest, **kw)

    got = outputs_and_grads(naive, inputs, pos, use_qk_l2norm_in_kernel=True)
    ref = outputs_and_grads(normalised_first, inputs, pos)
    compare(got, ref, 1e-6)
    plain = outputs_and_grads(naive, inputs, pos)
    assert (plain["out"] - got["out"]).abs().max() > 1e-2  # the option does change the result on these inputs


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("beta_max, beta", [(1.0, "random"), (2.0, "random"), (2.0, "exact_max"), (2.0, "exact_zero")])
@pytest.mark.parametrize("T", [1, 37])
def test_chunk_option_matches_naive(op, beta_max, beta, T):
    inputs = _inputs(op, T=T, beta_max=beta_max, beta=beta)
    fn = functools.partial(OPS[op], backend="chunk", use_qk_l2norm_in_kernel=True)
    naive = functools.partial(OPS[op], backend="naive", use_qk_l2norm_in_kernel=True)
    check_against_naive(fn, naive, inputs, _positional(op), TOL, "v")


@pytest.mark.parametrize("op", ["gated_delta_rule", "delta_product"])
def test_chunk_option_matches_naive_at_edge_gates(op):
    inputs = _inputs(op, alpha="edges")
    fn = functools.partial(OPS[op], backend="chunk", use_qk_l2norm_in_kernel=True)
    naive = functools.partial(OPS[op], backend="naive", use_qk_l2norm_in_kernel=True)
    check_against_naive(fn, naive, inputs, _positional(op), TOL, "v")


@pytest.mark.parametrize("op", list(OPS))
def test_packed_sequences_with_the_option(op):
    per_seq = [_inputs(op, batch=1, T=T, seed=s) for s, T in enumerate((5, 19, 1))]
    check_packing(OPS[op], per_seq, _positional(op), (), "chunk", use_qk_l2norm_in_kernel=True)
