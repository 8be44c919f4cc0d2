"""Token-by-token fp32 DeltaProduct: the specification every other backend is tested against."""

from __future__ import annotations

import torch

from ..l2norm import maybe_l2norm


def delta_product_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaProduct: per token, the optional gate ``alpha_t`` scales the carried state, then ``n_h`` delta steps
    ``S <- S + beta_{t,j} k_{t,j} (v_{t,j} - S^T k_{t,j})^T`` run in order ``j = 0 .. n_h - 1``, then
    ``o_t = scale * S^T q_t``.

    Shapes: ``q: [batch, T, H, K]``, ``k: [batch, T, n_h, H, K]``, ``v: [batch, T, n_h, H, V]``,
    ``beta: [batch, T, n_h, H]``, ``alpha: [batch, T, H]`` or None, ``initial_state`` and the returned state:
    ``[batch, H, K, V]`` (fp32). Returns ``(o [batch, T, H, V] in v.dtype, final_state or None)``.
    """
    batch, T, n_h, H, K = k.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k = maybe_l2norm(q, k, use_qk_l2norm_in_kernel)
    qf, kf, vf, bf = q.float(), k.float(), v.float(), beta.float()
    af = None if alpha is None else alpha.float()
    S = qf.new_zeros(batch, H, K, V) if initial_state is None else initial_state.float()
    outs = []
    for t in range(T):
        if af is not None:
            S = af[:, t, :, None, None] * S
        for j in range(n_h):
            k_tj = kf[:, t, j]  # [batch, H, K]
            v_old = torch.einsum("bhkv,bhk->bhv", S, k_tj)
            delta = bf[:, t, j, :, None] * (vf[:, t, j] - v_old)  # [batch, H, V]
            S = S + k_tj[..., None] * delta[..., None, :]
        outs.append(scale * torch.einsum("bhkv,bhk->bhv", S, qf[:, t]))
    o = torch.stack(outs, dim=1) if T > 0 else vf.new_zeros(batch, 0, H, V)
    return o.to(v.dtype), (S if output_final_state else None)
