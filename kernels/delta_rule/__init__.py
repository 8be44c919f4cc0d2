"""DeltaNet's delta rule: the public op (validation, then the backend table in ``registry``)."""

from __future__ import annotations

import torch

from ..checks import check_floats, check_range, check_state, expect
from ..registry import dispatch
from ..varlen import check_cu_seqlens


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaNet's delta rule with ``beta`` in [0, 2] (eigenvalue ``1 - beta`` along ``k``).

    Args:
        q, k: ``[batch, T, H, K]``; ``k`` L2-normalised (by the caller, or here with ``use_qk_l2norm_in_kernel``).
        v: ``[batch, T, H, V]``.
        beta: ``[batch, T, H]``, in [0, 2] (0 makes the step the identity, 2 a reflection).
        scale: output scale, default ``K ** -0.5``.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` inside the op (``x / sqrt(sum x^2 + 1e-6)``, fla's
            definition), so the caller need not keep normalised copies for the backward.
        initial_state: ``[batch, H, K, V]`` (``[num_seqs, H, K, V]`` with ``cu_seqlens``).
        output_final_state: also return the last state, fp32.
        cu_seqlens: ``[num_seqs + 1]`` int offsets of packed sequences; requires ``batch == 1``.
        backend: ``auto | triton | chunk | naive``.

    Recurrence::

        S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
        o_t = scale * S_t^T q_t

    Returns:
        ``(o [batch, T, H, V] in v.dtype, final_state [batch, H, K, V] fp32 or None)``.
    """
    op = "delta_rule"
    expect(q.dim() == 4, f"q must be [batch, T, H, K], got {tuple(q.shape)}")
    batch, T, H, K = q.shape
    expect(k.shape == q.shape, f"k must match q {tuple(q.shape)}, got {tuple(k.shape)}")
    expect(v.dim() == 4 and v.shape[:3] == (batch, T, H), f"v must be [batch, T, H, V], got {tuple(v.shape)}")
    expect(beta.shape == (batch, T, H), f"beta must be [batch, T, H]={batch, T, H}, got {tuple(beta.shape)}")
    V = v.shape[-1]
    check_floats(op, q=q, k=k, v=v, beta=beta)
    check_range(op, "beta", beta, 0.0, 2.0)
    n_states = check_cu_seqlens(cu_seqlens, batch, T, initial_state) if cu_seqlens is not None else batch
    check_state(op, initial_state, (n_states, H, K, V))
    return dispatch(
        op,
        backend,
        sequence={"q": q, "k": k, "v": v, "beta": beta},
        static={"scale": scale, "use_qk_l2norm_in_kernel": use_qk_l2norm_in_kernel},
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        state_shape=(H, K, V),
    )


__all__ = ["delta_rule"]
