"""Mamba-2's SSD scan (scalar gate per head) with an optional signed gate: the public op (validation, then the
backend table in ``registry``)."""

from __future__ import annotations

import torch

from ..checks import check_floats, check_range, check_state, expect
from ..registry import dispatch
from ..varlen import check_cu_seqlens


def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    negative_eigvals: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba-2 SSD scan with an optional signed gate.

    Args:
        x: ``[batch, T, H, P]``.
        dt: ``[batch, T, H]``, ``>= 0`` (already through softplus).
        A: ``[H]``, ``<= 0``.
        B, C: ``[batch, T, G, N]``; ``G`` divides ``H`` and head ``h`` reads group ``h // (H // G)``.
        D: ``[H]`` or ``[H, P]`` or None (skip connection ``D * x``).
        negative_eigvals: use ``a = 2 exp(dt A) - 1`` in [-1, 1] instead of ``exp(dt A)`` in [0, 1].
        initial_state: ``[batch, H, P, N]`` (``[num_seqs, H, P, N]`` with ``cu_seqlens``).
        output_final_state: also return the last state, fp32, same shape as ``initial_state``.
        cu_seqlens: ``[num_seqs + 1]`` int offsets of packed sequences; requires ``batch == 1``.
        backend: ``auto | triton | chunk | naive``.

    Recurrence, per head (``h_t`` is ``[P, N]``)::

        a_t = exp(dt_t A)                      (2 a_t - 1 if negative_eigvals)
        h_t = a_t h_{t-1} + dt_t x_t B_t^T
        y_t = h_t C_t + D x_t

    Gates of exactly -1, 0 and 1 are allowed; the output is exact at all of them. Gradients: ``naive`` is autograd
    through the token loop, exact everywhere. ``triton`` (our kernels, :mod:`lrnn_lm.kernels.ssd.triton`) forms the
    gate's gradient as ``dL/d|a_t| = <dL/dh_t, h_{t-1}>`` from products that leave ``a_t`` out (no division by
    ``a_t``), so it is exact at every gate, ``a = 0`` included. ``chunk`` works with ``log|a|`` and is exact
    wherever ``a != 0``; where the signed gate is exactly 0 it takes the gradient through that gate as 0 (finite;
    ``dt_t`` and ``A`` then miss that one term). The unsigned gate is 0 only where ``exp(dt A)`` underflows, where
    ``da/d(dt) = A a = 0`` anyway. ``chunk`` flushes decays below ``e^-60`` to 0; ``triton`` keeps every decay
    (``exp`` of a direct sum of ``log|a|``, ``exp(-inf) = 0`` for a zero gate).

    Returns:
        ``(y [batch, T, H, P] in x.dtype, final_state [batch, H, P, N] fp32 or None)``.
    """
    op = "ssd"
    expect(x.dim() == 4, f"{op}: x must be [batch, T, H, P], got {tuple(x.shape)}")
    batch, T, H, P = x.shape
    expect(dt.shape == (batch, T, H), f"{op}: dt must be [batch, T, H]={batch, T, H}, got {tuple(dt.shape)}")
    expect(A.shape == (H,), f"{op}: A must be [H={H}], got {tuple(A.shape)}")
    expect(B.dim() == 4 and B.shape[:2] == (batch, T), f"{op}: B must be [batch, T, G, N], got {tuple(B.shape)}")
    G, N = B.shape[2], B.shape[3]
    expect(G > 0 and H % G == 0, f"{op}: B's group count G={G} must divide H={H}")
    expect(C.shape == B.shape, f"{op}: C must match B {tuple(B.shape)}, got {tuple(C.shape)}")
    expect(
        D is None or tuple(D.shape) in ((H,), (H, P)),
        f"{op}: D must be [H={H}] or [H, P]={H, P}, got {None if D is None else tuple(D.shape)}",
    )
    check_floats(op, x=x, dt=dt, A=A, B=B, C=C, D=D)
    check_range(op, "dt", dt, 0.0, float("inf"))
    check_range(op, "A", A, float("-inf"), 0.0)
    n_states = check_cu_seqlens(cu_seqlens, batch, T, initial_state) if cu_seqlens is not None else batch
    check_state(op, initial_state, (n_states, H, P, N))
    return dispatch(
        op,
        backend,
        sequence={"x": x, "dt": dt, "B": B, "C": C},
        static={"A": A, "D": D, "negative_eigvals": negative_eigvals},
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        state_shape=(H, P, N),
    )


__all__ = ["ssd"]
