"""Token-by-token fp32 gated delta rule: the specification every other backend is tested against."""

from __future__ import annotations

import torch

from ..l2norm import maybe_l2norm


def gated_delta_rule_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor,
    *,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated DeltaNet recurrence ``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``,
    ``o_t = scale * S_t^T q_t``, with ``alpha`` used as given (any sign, zero included).

    Shapes: ``q, k: [batch, T, H, K]``, ``v: [batch, T, H, V]``, ``beta, alpha: [batch, T, H]``,
    ``initial_state`` and the returned state: ``[batch, H, K, V]`` (fp32).
    Returns ``(o [batch, T, H, V] in v.dtype, final_state or None)``.
    """
    batch, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k = maybe_l2norm(q, k, use_qk_l2norm_in_kernel)
    qf, kf, vf, bf, af = q.float(), k.float(), v.float(), beta.float(), alpha.float()
    S = qf.new_zeros(batch, H, K, V) if initial_state is None else initial_state.float()
    outs = []
    for t in range(T):
        k_t = kf[:, t]  # [batch, H, K]
        # alpha (I - b k k^T) S + b k v^T == (I - b k k^T)(alpha S) + b k v^T: decay first, then the delta step.
        S = af[:, t, :, None, None] * S
        v_old = torch.einsum("bhkv,bhk->bhv", S, k_t)
        delta = bf[:, t, :, None] * (vf[:, t] - v_old)  # [batch, H, V]
        S = S + k_t[..., None] * delta[..., None, :]
        outs.append(scale * torch.einsum("bhkv,bhk->bhv", S, qf[:, t]))
    o = torch.stack(outs, dim=1) if T > 0 else vf.new_zeros(batch, 0, H, V)
    return o.to(v.dtype), (S if output_final_state else None)
