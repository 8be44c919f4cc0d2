"""``kernels/ssd/gate_grad.py``: the gate gradient of a scalar-gated recurrence, formed with no division by the gate,
against autograd through the token loop (which is exact at every gate, 0 included). CPU, no Triton needed.

The Triton SSD backend's signed gate gets its gradient from this function (fla's own ``dL/dlog|a|`` divided by
``a`` is wrong near ``a = 0``); ``tests/kernels/test_triton_ssd.py`` checks the whole backend under the
interpreter."""

from __future__ import annotations

import pytest
import torch

from lrnn_lm.kernels.ssd.gate_grad import gate_grad
from lrnn_lm.kernels.testing import rel_rmse

TOL = 1e-5  # fp32 throughout; measured ~1e-7


def token_loop(a, q, k, v, h0):
    """``h_t = a_t h_{t-1} + v_t k_t^T`` (``h: [b, H, P, N]``), ``o_t = h_t q_t``: the specification."""
    h, outs = h0, []
    for t in range(a.shape[1]):
        h = a[:, t, :, None, None] * h + v[:, t, :, :, None] * k[:, t, :, None, :]
        outs.append((h * q[:, t, :, None, :]).sum(-1))
    return torch.stack(outs, 1), h


def inputs(b, T, H, P, N, *, gate, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(b, T, H, generator=g) * 0.9 + 0.1
    if gate == "edges":  # exact 0 and 1, |a| = 1e-6, tiny and large mixed token by token
        pick = torch.randint(0, 5, (b, T, H), generator=g)
        a = torch.where(pick == 0, torch.zeros_like(a), a)
        a = torch.where(pick == 1, torch.ones_like(a), a)
        a = torch.where(pick == 2, torch.full_like(a, 1e-6), a)
    q, k = (torch.randn(b, T, H, N, generator=g) for _ in range(2))
    v, do = (torch.randn(b, T, H, P, generator=g) for _ in range(2))
    h0, dfinal = (torch.randn(b, H, P, N, generator=g) for _ in range(2))
    return a, q, k, v, do, h0, dfinal


def reference(a, q, k, v, do, h0, dfinal):
    a = a.clone().requires_grad_()
    o, h = token_loop(a, q, k, v, h0)
    loss = (o * do).sum() + (0 if dfinal is None else (h * dfinal).sum())
    return torch.autograd.grad(loss, a)[0]


def log_abs(a):
    return torch.where(a == 0, torch.full_like(a, float("-inf")), a.abs().clamp_min(1e-45).log())


@pytest.mark.parametrize("T", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("gate", ["random", "edges"])
def test_matches_the_token_loop(T, gate):
    a, q, k, v, do, h0, dfinal = inputs(2, T, 3, 5, 7, gate=gate, seed=T)
    got = gate_grad(log_abs(a), q, k, v, do, h0, dfinal)
    want = reference(a, q, k, v, do, h0, dfinal)
    assert got.shape == a.shape and torch.isfinite(got).all()
    assert rel_rmse(got, want) < TOL
    if gate == "edges":  # every near-zero and zero gate on its own, not only on average
        small = a < 1e-5
        assert rel_rmse(got[small], want[small]) < TOL


def test_no_initial_state_and_no_final_gradient():
    a, q, k, v, do, _, _ = inputs(1, 70, 2, 4, 4, gate="edges", seed=5)
    got = gate_grad(log_abs(a), q, k, v, do, None, None)
    assert rel_rmse(got, reference(a, q, k, v, do, torch.zeros(1, 2, 4, 4), None)) < TOL


def test_packed_sequences_equal_separate_calls():
    lengths = [1, 64, 30, 100]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    a, q, k, v, do, _, _ = inputs(1, sum(lengths), 2, 4, 6, gate="edges", seed=9)
    g = torch.Generator().manual_seed(1)
    h0, dfinal = torch.randn(len(lengths), 2, 4, 6, generator=g), torch.randn(len(lengths), 2, 4, 6, generator=g)
    got = gate_grad(log_abs(a), q, k, v, do, h0, dfinal, cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = (t[:, s:e] for t in (a, q, k, v, do))
        want = reference(*part, h0[i : i + 1], dfinal[i : i + 1])
        assert rel_rmse(got[:, s:e], want) < TOL, i
