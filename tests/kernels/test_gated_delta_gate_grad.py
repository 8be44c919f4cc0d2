"""``kernels/gated_delta_rule/gate_grad.py``: the gated delta rule's gate gradient formed with no division by the
gate, against autograd through the naive token loop (exact at every gate, 0 included). CPU, no Triton needed.

The Triton backend's gate gets its gradient from this function when some ``|alpha|`` is small (fla's own
``dL/dlog|alpha|`` divided by ``alpha`` is wrong near 0); ``tests/kernels/test_triton_gated_delta.py`` checks the
whole backend under the interpreter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm.kernels.gated_delta_rule.gate_grad import gate_grad
from lrnn_lm.kernels.gated_delta_rule.naive import gated_delta_rule_naive
from lrnn_lm.kernels.testing import rel_rmse

TOL = 1e-5  # fp32 throughout


def inputs(b, T, H, K, V, *, gate, seed, n=None):
    g = torch.Generator().manual_seed(seed)
    alpha = 2 * torch.rand(b, T, H, generator=g) - 1
    beta = 2 * torch.rand(b, T, H, generator=g)
    if gate == "edges":  # alpha exactly -1, 0, 1 and +-1e-6; beta exactly 0 and 2
        pick = torch.randint(0, 6, (b, T, H), generator=g)
        for value, p in ((0.0, 0), (1.0, 1), (-1.0, 2), (1e-6, 3), (-1e-6, 4)):
            alpha = torch.where(pick == p, torch.full_like(alpha, value), alpha)
        pick = torch.randint(0, 3, (b, T, H), generator=g)
        beta = torch.where(pick == 0, torch.zeros_like(beta), torch.where(pick == 1, torch.full_like(beta, 2.0), beta))
    q = torch.randn(b, T, H, K, generator=g)
    k = F.normalize(torch.randn(b, T, H, K, generator=g), dim=-1)
    v, do = (torch.randn(b, T, H, V, generator=g) for _ in range(2))
    h0, dfinal = (torch.randn(n or b, H, K, V, generator=g) for _ in range(2))
    return alpha, q, k, v, beta, do, h0, dfinal


def reference(alpha, q, k, v, beta, do, h0, dfinal, scale):
    alpha = alpha.clone().requires_grad_()
    o, S = gated_delta_rule_naive(q, k, v, beta, alpha, scale=scale, initial_state=h0, output_final_state=True)
    loss = (o * do).sum() + (0 if dfinal is None else (S * dfinal).sum())
    return torch.autograd.grad(loss, alpha)[0]


@pytest.mark.parametrize("T", [1, 63, 64, 65, 150])
@pytest.mark.parametrize("gate", ["random", "edges"])
def test_matches_the_token_loop(T, gate):
    # K != V (a transposed state would fail), odd dims, B > 1.
    alpha, q, k, v, beta, do, h0, dfinal = inputs(2, T, 3, 7, 5, gate=gate, seed=T)
    got = gate_grad(alpha, q, k, v, beta, do, h0, dfinal, scale=0.4)
    want = reference(alpha, q, k, v, beta, do, h0, dfinal, 0.4)
    assert got.shape == alpha.shape and torch.isfinite(got).all()
    assert rel_rmse(got, want) < TOL


def test_edge_gates_one_by_one():
    """The rarest gates on their own: the gradient at alpha = 0 and at +-1e-6, each against the token loop."""
    alpha, q, k, v, beta, do, h0, dfinal = inputs(2, 130, 2, 6, 4, gate="edges", seed=7)
    got = gate_grad(alpha, q, k, v, beta, do, h0, dfinal, scale=1.0)
    want = reference(alpha, q, k, v, beta, do, h0, dfinal, 1.0)
    for mask in (alpha == 0, alpha.abs() == 1e-6, alpha.abs() == 1):
        assert mask.any()
        assert rel_rmse(got[mask], want[mask]) < TOL


@pytest.mark.parametrize("with_h0,with_dfinal", [(False, False), (True, False), (False, True)])
def test_without_initial_state_or_final_gradient(with_h0, with_dfinal):
    alpha, q, k, v, beta, do, h0, dfinal = inputs(1, 90, 2, 4, 6, gate="random", seed=3)
    h0, dfinal = (h0 if with_h0 else None), (dfinal if with_dfinal else None)
    got = gate_grad(alpha, q, k, v, beta, do, h0, dfinal, scale=0.5)
    assert rel_rmse(got, reference(alpha, q, k, v, beta, do, h0, dfinal, 0.5)) < TOL


def test_packed_sequences_match_separate_calls():
    lengths = [5, 70, 1, 64]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    alpha, q, k, v, beta, do, h0, dfinal = inputs(1, int(cu[-1]), 2, 5, 3, gate="edges", seed=11, n=len(lengths))
    got = gate_grad(alpha, q, k, v, beta, do, h0, dfinal, scale=0.3, cu_seqlens=cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = [t[:, s:e] for t in (alpha, q, k, v, beta, do)]
        want = reference(*part, h0[i : i + 1], dfinal[i : i + 1], 0.3)
        assert rel_rmse(got[:, s:e], want) < TOL
