"""Gated DeltaNet's gated delta rule with signed gates: the public op (validation, then ``registry``)."""

from __future__ import annotations

import torch

from ..checks import check_floats, check_range, check_state, expect
from ..registry import dispatch
from ..varlen import check_cu_seqlens


def gated_delta_rule(
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
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule with ``beta`` in [0, 2] and a scalar gate ``alpha`` in [-1, 1] (linear, not log, space).

    Args:
        q, k: ``[batch, T, H, K]``; ``k`` L2-normalised (by the caller, or here with ``use_qk_l2norm_in_kernel``).
        v: ``[batch, T, H, V]``.
        beta: ``[batch, T, H]``, in [0, 2].
        alpha: ``[batch, T, H]``, in [-1, 1]: [0, 1] is Gated DeltaNet's usual range, negative values give
            the transition negative eigenvalues (``alpha`` on the complement of ``k``).
        scale: output scale, default ``K ** -0.5``.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` inside the op (``x / sqrt(sum x^2 + 1e-6)``, fla's
            definition), so the caller need not keep normalised copies for the backward.
        initial_state: ``[batch, H, K, V]`` (``[num_seqs, H, K, V]`` with ``cu_seqlens``).
        output_final_state: also return the last state, fp32.
        cu_seqlens: ``[num_seqs + 1]`` int offsets of packed sequences; requires ``batch == 1``.
        backend: ``auto | triton | chunk | naive``.

    Recurrence::

        S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
        o_t = scale * S_t^T q_t

    The transition's eigenvalues are ``alpha_t (1 - beta_t)`` along ``k_t`` and ``alpha_t`` elsewhere.
    ``naive`` and ``chunk`` are exact for every ``alpha`` including 0, gradients too. ``triton`` runs fla's
    log-space kernel on ``log|alpha|`` with the signs applied outside (see its module docstring): there
    ``|alpha|`` is floored at 1e-10 in the forward (exact to fp32), and when some ``|alpha| < 0.1`` the gate's
    gradient is formed without dividing by ``alpha`` (``gated_delta_rule/gate_grad.py``), so it is exact at every
    gate, 0 included.

    Returns:
        ``(o [batch, T, H, V] in v.dtype, final_state [batch, H, K, V] fp32 or None)``.
    """
    op = "gated_delta_rule"
    expect(q.dim() == 4, f"q must be [batch, T, H, K], got {tuple(q.shape)}")
    batch, T, H, K = q.shape
    expect(k.shape == q.shape, f"k must match q {tuple(q.shape)}, got {tuple(k.shape)}")
    expect(v.dim() == 4 and v.shape[:3] == (batch, T, H), f"v must be [batch, T, H, V], got {tuple(v.shape)}")
    expect(beta.shape == (batch, T, H), f"beta must be [batch, T, H]={batch, T, H}, got {tuple(beta.shape)}")
    expect(alpha.shape == (batch, T, H), f"alpha must be [batch, T, H]={batch, T, H}, got {tuple(alpha.shape)}")
    V = v.shape[-1]
    check_floats(op, q=q, k=k, v=v, beta=beta, alpha=alpha)
    check_range(op, "beta", beta, 0.0, 2.0)
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


__all__ = ["gated_delta_rule"]
