"""Token-by-token fp32 SSD (Mamba-2) scan: the specification every other backend is tested against."""

from __future__ import annotations

import torch

from .gates import gate, heads_of_groups


def ssd_naive(
    x: torch.Tensor,
    dt: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    A: torch.Tensor,
    D: torch.Tensor | None = None,
    negative_eigvals: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SSD recurrence, one token at a time, in fp32. Gradients are autograd's, exact at every gate (also ``a = 0``).

    Shapes: ``x: [batch, T, H, P]``, ``dt: [batch, T, H]``, ``A: [H]``, ``B, C: [batch, T, G, N]``,
    ``D: [H]`` or ``[H, P]``, ``initial_state`` and the returned state: ``[batch, H, P, N]`` (fp32).
    Per head ``h_t = a_t h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t + D x_t``.
    Returns ``(y [batch, T, H, P] in x.dtype, final_state or None)``.
    """
    batch, T, H, P = x.shape
    N = B.shape[-1]
    xf, dtf = x.float(), dt.float()
    Bh, Ch = heads_of_groups(B.float(), H), heads_of_groups(C.float(), H)  # [batch, T, H, N]
    a = gate(dtf, A.float(), negative_eigvals)  # [batch, T, H]
    h = xf.new_zeros(batch, H, P, N) if initial_state is None else initial_state.float()
    ys = []
    for t in range(T):
        u = (dtf[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]  # [batch, H, P, N]
        h = a[:, t, :, None, None] * h + u
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1) if T > 0 else xf.new_zeros(batch, 0, H, P)
    if D is not None:
        y = y + (D.float() if D.dim() == 2 else D.float()[:, None]) * xf
    return y.to(x.dtype), (h if output_final_state else None)
