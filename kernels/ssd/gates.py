"""The SSD gate, split into magnitude and sign for log-space chunked kernels (the running-sign identity).

``a_t = s_t |a_t|`` with ``s_t`` in {-1, +1}; ``P_t = s_1 ... s_t`` restarts at every sequence start. An unsigned
log-space kernel fed ``log|a_t|`` and inputs times ``P_t`` gives the signed result after one more multiply of its
output by ``P_t`` (``docs/signed_chunking.md``). ``P`` is exactly +-1, so this loses no precision.
"""

from __future__ import annotations

import torch


def gate(dt: torch.Tensor, A: torch.Tensor, negative_eigvals: bool) -> torch.Tensor:
    """``a = exp(dt A)`` in [0, 1], or ``2 exp(dt A) - 1`` in [-1, 1]; ``dt: [..., H]``, ``A: [H]``."""
    a = torch.exp(dt * A)
    return 2 * a - 1 if negative_eigvals else a


def log_abs_gate(dt: torch.Tensor, A: torch.Tensor, negative_eigvals: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(log|a|, sign)`` of the gate; ``sign`` is None for the unsigned gate (always +1).

    Unsigned: ``log a = dt A`` exactly, with no exp/log round trip, so the gradient is exact even where
    ``exp(dt A)`` underflows to 0. Signed: ``log|a| = -inf`` where ``a == 0`` exactly, and the gradient there is 0
    (``d log|a| / da = 1/a`` is undefined at 0; :class:`_SignedLogGate` writes that gradient out and masks it).
    The sign of exactly 0 is +1 so the running sign never becomes 0.
    """
    if not negative_eigvals:
        return dt * A, None
    return _SignedLogGate.apply(dt, A)


def log_abs_and_sign(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log|a|, sign)`` of a signed gate ``a``, values only (neither carries a gradient; a gradient through the
    gate comes from :func:`log_abs_gate` or, in the Triton backend, from the kernels' own gate gradient):
    ``log|0| = -inf``, and the sign of exactly 0 is +1 (see :func:`log_abs_gate`)."""
    a = a.detach()
    return a.abs().log(), torch.ones_like(a).masked_fill_(a < 0, -1.0)


class _SignedLogGate(torch.autograd.Function):
    """``(log|a|, sign)`` of ``a = 2 exp(dt A) - 1`` with its gradient written out: the same values and gradients
    as autograd through :func:`gate` and :func:`log_abs_and_sign`, in a few ops instead of a dozen recorded ones
    (the gate is small; the per-op cost is what counts). ``d log|a| / d(dt A) = 2 exp(dt A) / a``, taken as 0 where
    ``a == 0``."""

    @staticmethod
    def forward(ctx, dt, A):
        e = torch.exp(dt * A)
        a = 2 * e - 1  # gate(dt, A, True), with exp(dt A) kept for the backward
        log_abs, sign = log_abs_and_sign(a)
        ctx.save_for_backward(dt, A, e, a)
        ctx.mark_non_differentiable(sign)
        return log_abs, sign

    @staticmethod
    def backward(ctx, grad, _grad_sign):
        dt, A, e, a = ctx.saved_tensors
        q = (grad * 2 * e / a).masked_fill_(a == 0, 0.0)  # dL / d(dt A)
        grad_dt = q * A if ctx.needs_input_grad[0] else None
        grad_A = None
        if ctx.needs_input_grad[1]:
            grad_A = (q * dt).sum_to_size(A.shape)
        return grad_dt, grad_A


def log_segment_decay(log_a: torch.Tensor) -> torch.Tensor:
    """``log D`` with ``D[..., t, s] = prod_{s < k <= t} |a_k|`` for ``s <= t`` and ``-inf`` above the diagonal, from
    ``log_a: [..., C]`` (one chunk per row), as ``[..., C, C]``.

    Each entry is a cumsum down a column of a masked copy, a sum formed directly rather than a difference of two
    cumulative sums, so a gate of exactly 0 (``-inf``) stays exact with no ``-inf - (-inf)`` NaN."""
    C = log_a.shape[-1]
    ones = torch.ones(C, C, dtype=torch.bool, device=log_a.device)
    # where, not a multiply by a 0/1 mask: log_a may hold -inf, and -inf * 0 is NaN.
    seg = torch.where(ones.tril(-1), log_a.unsqueeze(-1), 0.0).cumsum(-2)
    # Adding a 0 / -inf mask in place sets the upper triangle (exact: seg is never +inf); on CPU it is several
    # times faster than masked_fill with a broadcast mask.
    above = torch.zeros(C, C, dtype=seg.dtype, device=seg.device).masked_fill_(~ones.tril(), float("-inf"))
    return seg.add_(above)


def running_sign(sign: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """``P_t = prod_{i <= t} s_i`` along dim 1 of ``sign: [batch, T, H]``, restarting at each packed sequence.

    With ``cu_seqlens`` (batch 1), ``P`` over the packed row is divided (multiplied: +-1) by its value just before
    each sequence's first token. Exact: products of +-1 in floating point are exact.
    """
    P = torch.cumprod(sign, dim=1)
    if cu_seqlens is None:
        return P
    T = sign.shape[1]
    starts = cu_seqlens[:-1].long().to(sign.device)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long().to(sign.device)
    # The running sign just before each sequence starts (1 for a sequence starting at 0).
    before = torch.cat([torch.ones_like(P[:, :1]), P[:, :-1]], dim=1)[:, starts.clamp(max=max(T - 1, 0))]
    return P * torch.repeat_interleave(before, lengths, dim=1, output_size=T)


def heads_of_groups(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``[batch, T, G, N] -> [batch, T, H, N]``: head ``h`` reads group ``h // (H // G)``."""
    return t.repeat_interleave(heads // t.shape[2], dim=2)
