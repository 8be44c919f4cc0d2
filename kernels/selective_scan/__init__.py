"""Mamba-1's selective scan: the public op (validation, then the backend table in ``registry``)."""

from __future__ import annotations

import torch

from ..checks import check_floats, check_state, expect
from ..registry import dispatch
from ..varlen import check_cu_seqlens


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    *,
    negative_eigvals: bool = False,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba-1 selective scan with an optional signed gate.

    Args:
        x, dt: ``[batch, T, d_inner]``; ``dt > 0`` when neither ``dt_bias`` nor ``dt_softplus`` is given.
        A: ``[d_inner, N]``, negative.
        B, C: ``[batch, T, N]``.
        D: ``[d_inner]`` or None (skip connection ``D * x``).
        z: ``[batch, T, d_inner]`` or None (output gate ``y * silu(z)``).
        negative_eigvals: use ``a = 2 exp(dt A) - 1`` in (-1, 1) instead of ``exp(dt A)`` in (0, 1).
        dt_bias: ``[d_inner]`` or None, added to ``dt`` before the softplus (mamba_ssm's ``delta_bias``).
        dt_softplus: the step size is ``softplus(dt + dt_bias)`` (mamba_ssm's ``delta_softplus``). With either
            option ``dt`` may be the raw projection in the input dtype: the Triton backend applies bias and
            softplus inside the kernel (and recomputes them in its backward), so no fp32 copy of ``dt`` is stored.
        initial_state: ``[batch, d_inner, N]`` (``[num_seqs, d_inner, N]`` with ``cu_seqlens``).
        output_final_state: also return the last state, fp32, same shape as ``initial_state``.
        cu_seqlens: ``[num_seqs + 1]`` int offsets of packed sequences; requires ``batch == 1``.
        backend: ``auto | triton | chunk | naive``.

    Recurrence, per channel ``d`` and state index ``n``, with ``dt`` the effective step size
    (``softplus(dt + dt_bias)``, each part only if asked for)::

        a_t = exp(dt_t[d] * A[d, n])            (2 a_t - 1 if negative_eigvals)
        h_t = a_t * h_{t-1} + dt_t[d] * x_t[d] * B_t[n]
        y_t[d] = sum_n h_t[d, n] C_t[n] + D[d] x_t[d]     (then * silu(z_t[d]))

    Returns:
        ``(y [batch, T, d_inner] in x.dtype, final_state [batch, d_inner, N] fp32 or None)``.
    """
    op = "selective_scan"
    expect(x.dim() == 3, f"x must be [batch, T, d_inner], got {tuple(x.shape)}")
    batch, T, d = x.shape
    expect(dt.shape == x.shape, f"dt must match x {tuple(x.shape)}, got {tuple(dt.shape)}")
    expect(A.dim() == 2 and A.shape[0] == d, f"A must be [d_inner={d}, N], got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        expect(t.shape == (batch, T, N), f"{name} must be [batch, T, N]={batch, T, N}, got {tuple(t.shape)}")
    expect(D is None or D.shape == (d,), f"D must be [d_inner={d}], got {None if D is None else tuple(D.shape)}")
    expect(
        dt_bias is None or dt_bias.shape == (d,),
        f"dt_bias must be [d_inner={d}], got {None if dt_bias is None else tuple(dt_bias.shape)}",
    )
    expect(z is None or z.shape == x.shape, f"z must match x {tuple(x.shape)}")
    check_floats(op, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    n_states = check_cu_seqlens(cu_seqlens, batch, T, initial_state) if cu_seqlens is not None else batch
    check_state(op, initial_state, (n_states, d, N))
    return dispatch(
        op,
        backend,
        sequence={"x": x, "dt": dt, "B": B, "C": C, "z": z},
        static={"A": A, "D": D, "negative_eigvals": negative_eigvals, "dt_bias": dt_bias, "dt_softplus": dt_softplus},
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        state_shape=(d, N),
    )


__all__ = ["selective_scan"]
