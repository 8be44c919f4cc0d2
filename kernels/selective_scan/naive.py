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
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba-1 selective scan, one token at a time, in fp32.

    Shapes: ``x, dt, z: [batch, T, d_inner]``, ``A: [d_inner, N]``, ``B, C: [batch, T, N]``,
    ``D: [d_inner]``, ``initial_state`` and the returned state: ``[batch, d_inner, N]`` (fp32).
    Returns ``(y [batch, T, d_inner] in x.dtype, final_state or None)``.
    """
    y, h = _scan(x, dt, B, C, z, A=A, D=D, negative_eigvals=negative_eigvals, initial_state=initial_state)
    return y, (h if output_final_state else None)


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
