"""Token-by-token fp32 selective scan: the specification every other backend is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_naive(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba-1 selective scan, one token at a time, in fp32.

    Shapes: ``x, dt, z: [batch, T, d_inner]``, ``A: [d_inner, N]``, ``B, C: [batch, T, N]``,
    ``D, dt_bias: [d_inner]``, ``initial_state`` and the returned state: ``[batch, d_inner, N]`` (fp32).
    The step size used is :func:`effective_dt` of ``dt``.
    Returns ``(y [batch, T, d_inner] in x.dtype, final_state or None)``.
    """
    dt = effective_dt(dt, dt_bias, dt_softplus)
    y, h = _scan(x, dt, B, C, z, A=A, D=D, negative_eigvals=negative_eigvals, initial_state=initial_state)
    return y, (h if output_final_state else None)


def effective_dt(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool) -> torch.Tensor:
    """The step size the scan uses: ``softplus(dt + dt_bias)`` (``dt + dt_bias`` without ``dt_softplus``), in fp32.

    ``softplus`` is torch's (``v`` itself above 20), as mamba_ssm's ``delta_bias`` / ``delta_softplus`` compute it.
    Returns ``dt`` unchanged when there is neither a bias nor a softplus.
    """
    if dt_bias is None and not dt_softplus:
        return dt
    v = dt.float() if dt_bias is None else dt.float() + dt_bias.float()
    return F.softplus(v) if dt_softplus else v


def _scan(x, dt, B, C, z, *, A, D, negative_eigvals, initial_state=None):
    batch, T, d = x.shape
    xf, dtf, Af, Bf, Cf = (t.float() for t in (x, dt, A, B, C))
    h = xf.new_zeros(batch, d, A.shape[1]) if initial_state is None else initial_state.float()
    ys = []
    for t in range(T):
        a = torch.exp(dtf[:, t, :, None] * Af)
        if negative_eigvals:
            a = 2 * a - 1
        h = a * h + (dtf[:, t] * xf[:, t])[:, :, None] * Bf[:, t, None, :]
        ys.append((h * Cf[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) if T > 0 else xf.new_zeros(batch, 0, d)
    if D is not None:
        y = y + D.float() * xf
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(x.dtype), h
