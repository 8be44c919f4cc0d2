"""DeltaProduct (Siems et al., 2025): ``n_h`` generalized Householder steps per token, optionally gated.
The public op (validation, then the backend table in ``registry``)."""

from __future__ import annotations

import torch

from ..checks import check_floats, check_range, check_state, expect
from ..registry import dispatch
from ..varlen import check_cu_seqlens


def delta_product(
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
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaProduct with ``beta`` in [0, 2] and an optional scalar gate ``alpha`` in [-1, 1].

    Args:
        q: ``[batch, T, H, K]``.
        k: ``[batch, T, n_h, H, K]``, L2-normalised by the caller: ``n_h`` keys per token.
        v: ``[batch, T, n_h, H, V]``.
        beta: ``[batch, T, n_h, H]``, in [0, 2].
        alpha: ``[batch, T, H]`` in [-1, 1], or None (no gate).
        scale: output scale, default ``K ** -0.5``.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` inside the op (``x / sqrt(sum x^2 + 1e-6)``, fla's
            definition), so the caller need not keep normalised copies for the backward.
        initial_state: ``[batch, H, K, V]`` (``[num_seqs, H, K, V]`` with ``cu_seqlens``).
        output_final_state: also return the last state, fp32.
        cu_seqlens: ``[num_seqs + 1]`` int offsets of packed sequences, in tokens; requires ``batch == 1``.
        backend: ``auto | triton | chunk | naive``.

    Recurrence, per token ``t``::

        S <- alpha_t S                                                  (when alpha is given)
        S <- (I - beta_{t,j} k_{t,j} k_{t,j}^T) S + beta_{t,j} k_{t,j} v_{t,j}^T    for j = 0 .. n_h - 1
        o_t = scale * S^T q_t

    With ``n_h = 1`` this is exactly :func:`gated_delta_rule` (or :func:`delta_rule` without ``alpha``).
    ``chunk`` and ``triton`` run those ops over the interleaved sequence of length ``T * n_h``; what they say
    about ``alpha = 0`` holds here too.

    Returns:
        ``(o [batch, T, H, V] in v.dtype, final_state [batch, H, K, V] fp32 or None)``.
    """
    op = "delta_product"
    expect(q.dim() == 4, f"q must be [batch, T, H, K], got {tuple(q.shape)}")
    batch, T, H, K = q.shape
    expect(
        k.dim() == 5 and k.shape[:2] == (batch, T) and k.shape[3:] == (H, K) and k.shape[2] >= 1,
        f"k must be [batch, T, n_h, H, K] with (batch, T, H, K)={batch, T, H, K}, got {tuple(k.shape)}",
    )
    n_h = k.shape[2]
    expect(
        v.dim() == 5 and v.shape[:4] == (batch, T, n_h, H),
        f"v must be [batch, T, n_h, H, V]={batch, T, n_h, H}+[V], got {tuple(v.shape)}",
    )
    expect(
        beta.shape == (batch, T, n_h, H), f"beta must be [batch, T, n_h, H]={batch, T, n_h, H}, got {tuple(beta.shape)}"
    )
    expect(
        alpha is None or alpha.shape == (batch, T, H),
        f"alpha must be [batch, T, H]={batch, T, H}, got {None if alpha is None else tuple(alpha.shape)}",
    )
    V = v.shape[-1]
    check_floats(op, q=q, k=k, v=v, beta=beta, alpha=alpha)
    check_range(op, "beta", beta, 0.0, 2.0)
    if alpha is not None:
        check_range(op, "alpha", alpha, -1.0, 1.0)
    n_states = check_cu_seqlens(cu_seqlens, batch, T, initial_state) if cu_seqlens is not None else batch
    check_state(op, initial_state, (n_states, H, K, V))
    return dispatch(
        op,
        backend,
        sequence={"q": q, "k": k, "v": v, "beta": beta, "alpha": alpha},
        static={"scale": scale, "use_qk_l2norm_in_kernel": use_qk_l2norm_in_kernel},
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        state_shape=(H, K, V),
    )


__all__ = ["delta_product"]
