"""Random inputs with chosen gate regimes, and the checks built on the shared harness
(:mod:`lrnn_lm.kernels.testing`), for the kernel tests. Inputs are drawn on the CPU and moved to the test device
(``--device``), so every device sees the same numbers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lrnn_lm.kernels.testing import compare, outputs_and_grads

from ..device import device


def scan_inputs(batch, T, d, N, *, gate="random", dtype=torch.float32, seed=0, with_state=True):
    """Selective-scan inputs. ``gate`` picks the regime of ``exp(dt * A)``:

    random: spread over (0, 1); near_zero: exp(dt A) ~ 1e-30 (signed gate ~ -1); exact_zero: exp(dt A)
    underflows to exactly 0 (signed gate exactly -1); half: exp(dt A) = 0.5 (signed gate 0);
    near_one: dt ~ 1e-6; exact_one: dt = 0 (gate exactly 1 in both ranges).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, d, generator=g)
    A = -torch.exp(torch.randn(d, N, generator=g) * 0.5)
    dt = F.softplus(torch.randn(batch, T, d, generator=g) - 1)
    if gate == "near_zero":
        dt, A = torch.full_like(dt, 7.0), torch.full_like(A, -10.0)
    elif gate == "exact_zero":
        dt, A = torch.full_like(dt, 100.0), torch.full_like(A, -100.0)
    elif gate == "half":
        dt, A = torch.ones_like(dt), torch.full_like(A, -torch.log(torch.tensor(2.0)).item())
    elif gate == "near_one":
        dt = torch.full_like(dt, 1e-6)
    elif gate == "exact_one":
        dt = torch.zeros_like(dt)
    B = torch.randn(batch, T, N, generator=g)
    C = torch.randn(batch, T, N, generator=g)
    D = torch.randn(d, generator=g)
    z = torch.randn(batch, T, d, generator=g)
    h0 = torch.randn(batch, d, N, generator=g) if with_state else None
    tensors = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z, "initial_state": h0}
    return {
        k: (None if v is None else v.to(device(), dtype if k != "initial_state" else torch.float32).requires_grad_())
        for k, v in tensors.items()
    }


def delta_inputs(batch, T, H, K, V, *, beta_max=1.0, beta="random", dtype=torch.float32, seed=0, with_state=True):
    """Delta-rule inputs with L2-normalised keys. ``beta``: random in (0, beta_max), or exact_max (= beta_max),
    or exact_zero."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, T, H, K, generator=g)
    k = F.normalize(torch.randn(batch, T, H, K, generator=g), dim=-1)
    v = torch.randn(batch, T, H, V, generator=g)
    b = torch.rand(batch, T, H, generator=g) * beta_max
    if beta == "exact_max":
        b = torch.full_like(b, beta_max)
    elif beta == "exact_zero":
        b = torch.zeros_like(b)
    h0 = torch.randn(batch, H, K, V, generator=g) if with_state else None
    tensors = {"q": q, "k": k, "v": v, "beta": b, "initial_state": h0}
    return {
        k_: (None if t is None else t.to(device(), dtype if k_ != "initial_state" else torch.float32).requires_grad_())
        for k_, t in tensors.items()
    }


def check_against_naive(fn, naive, inputs: dict, positional: tuple[str, ...], tol: float, out_like: str, **kwargs):
    """``fn`` against its ``naive`` reference on the same leaves: output, final state and every gradient within
    ``tol`` relative RMSE, the output in ``inputs[out_like]``'s dtype and the final state in fp32."""
    got = outputs_and_grads(fn, inputs, positional, **kwargs)
    ref = outputs_and_grads(naive, inputs, positional, **kwargs)
    assert got["out"].dtype == inputs[out_like].dtype and got["state"].dtype == torch.float32
    return compare(got, ref, tol)


def check_packing(op, per_seq: list[dict], positional: tuple[str, ...], shared: tuple[str, ...], backend: str, **kw):
    """A packed call with ``cu_seqlens`` must equal separate naive calls per sequence: outputs, final states
    and the gradients of every input (shared parameters take the sum over sequences).

    ``per_seq`` holds batch-1 inputs per sequence; entries named in ``shared`` are taken from the first.
    """
    for p in per_seq[1:]:
        for name in shared:
            p[name] = per_seq[0][name]
    lengths = [p[positional[0]].shape[1] for p in per_seq]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=device())
    packed = {}
    for name in per_seq[0]:
        if name in shared:
            packed[name] = per_seq[0][name]
        elif per_seq[0][name] is None:
            packed[name] = None
        else:
            packed[name] = torch.cat([p[name] for p in per_seq], dim=0 if name == "initial_state" else 1)
    kw_packed = {k: v for k, v in packed.items() if k not in positional}
    o, S = op(
        *[packed[n] for n in positional], **kw_packed, output_final_state=True, cu_seqlens=cu, backend=backend, **kw
    )
    g = torch.Generator().manual_seed(7)
    do, dS = torch.randn(o.shape, generator=g).to(o.device), torch.randn(S.shape, generator=g).to(S.device)
    leaves = [t for p in per_seq for n, t in p.items() if t is not None and n not in shared]
    leaves += [per_seq[0][n] for n in shared]
    got_grads = torch.autograd.grad((o.float() * do).sum() + (S * dS).sum(), leaves)

    outs, states, loss = [], [], 0.0
    for i, p in enumerate(per_seq):
        kw_i = {k: v for k, v in p.items() if k not in positional}
        o_i, S_i = op(*[p[n] for n in positional], **kw_i, output_final_state=True, backend="naive", **kw)
        outs.append(o_i)
        states.append(S_i)
        loss = loss + (o_i.float() * do[:, cu[i] : cu[i + 1]]).sum() + (S_i * dS[i : i + 1]).sum()
    ref_grads = torch.autograd.grad(loss, leaves)
    tol = 1e-5
    compare({"out": o, "state": S}, {"out": torch.cat(outs, dim=1), "state": torch.cat(states, dim=0)}, tol)
    compare({str(i): gr for i, gr in enumerate(got_grads)}, {str(i): gr for i, gr in enumerate(ref_grads)}, tol)
