"""Model-free linear-RNN scan kernels (installed as ``lrnn_lm.kernels``).

Two ops, each with a ``naive`` token-loop reference (the specification) and faster backends:

- :func:`selective_scan`: Mamba-1's diagonal scan, optionally with the signed gate ``2 exp(dt A) - 1``.
- :func:`delta_rule`: DeltaNet's generalized-Householder recurrence, ``beta`` in (0, 2].

Tensors are batch-first, then time. Both return ``(output, final_state)``.
"""

from __future__ import annotations

import torch

from .backend import BACKENDS, resolve_backend
from .delta_rule import delta_rule_chunk, delta_rule_naive
from .selective_scan import selective_scan_chunk, selective_scan_naive
from .varlen import check_cu_seqlens

__all__ = ["BACKENDS", "delta_rule", "selective_scan"]

_SCAN_IMPLS = {"naive": selective_scan_naive, "chunk": selective_scan_chunk}
_DELTA_IMPLS = {"naive": delta_rule_naive, "chunk": delta_rule_chunk}


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _triton_impl(op: str):
    # Imported lazily: triton is optional on CPU and its import is slow.
    if op == "selective_scan":
        from .selective_scan.triton import selective_scan_triton

        return selective_scan_triton
    from .delta_rule.triton import delta_rule_triton

    return delta_rule_triton


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
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba-1 selective scan with an optional signed gate.

    Args:
        x, dt: ``[batch, T, d_inner]``; ``dt > 0`` (already through softplus).
        A: ``[d_inner, N]``, negative.
        B, C: ``[batch, T, N]``.
        D: ``[d_inner]`` or None (skip connection ``D * x``).
        z: ``[batch, T, d_inner]`` or None (output gate ``y * silu(z)``).
        negative_eigvals: use ``a = 2 exp(dt A) - 1`` in (-1, 1) instead of ``exp(dt A)`` in (0, 1).
        initial_state: ``[batch, d_inner, N]`` (``[num_seqs, d_inner, N]`` with ``cu_seqlens``).
        output_final_state: also return the last state, fp32, same shape as ``initial_state``.
        cu_seqlens: ``[num_seqs + 1]`` int offsets of packed sequences; requires ``batch == 1``.
        backend: ``auto | triton | chunk | naive``.

    Recurrence, per channel ``d`` and state index ``n``::

        a_t = exp(dt_t[d] * A[d, n])            (2 a_t - 1 if negative_eigvals)
        h_t = a_t * h_{t-1} + dt_t[d] * x_t[d] * B_t[n]
        y_t[d] = sum_n h_t[d, n] C_t[n] + D[d] x_t[d]     (then * silu(z_t[d]))

    Returns:
        ``(y [batch, T, d_inner] in x.dtype, final_state [batch, d_inner, N] fp32 or None)``.
    """
    _expect(x.dim() == 3, f"x must be [batch, T, d_inner], got {tuple(x.shape)}")
    batch, T, d = x.shape
    _expect(dt.shape == x.shape, f"dt must match x {tuple(x.shape)}, got {tuple(dt.shape)}")
    _expect(A.dim() == 2 and A.shape[0] == d, f"A must be [d_inner={d}, N], got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        _expect(t.shape == (batch, T, N), f"{name} must be [batch, T, N]={batch, T, N}, got {tuple(t.shape)}")
    _expect(D is None or D.shape == (d,), f"D must be [d_inner={d}], got {None if D is None else tuple(D.shape)}")
    _expect(z is None or z.shape == x.shape, f"z must match x {tuple(x.shape)}")
    n_states = check_cu_seqlens(cu_seqlens, batch, T, initial_state) if cu_seqlens is not None else batch
    if initial_state is not None:
        _expect(
            initial_state.shape == (n_states, d, N),
            f"initial_state must be {(n_states, d, N)}, got {tuple(initial_state.shape)}",
        )
    chosen = resolve_backend("selective_scan", backend, x.device)
    impl = _triton_impl("selective_scan") if chosen == "triton" else _SCAN_IMPLS[chosen]
    return impl(
        x,
        dt,
        A,
        B,
        C,
        D,
        z,
        negative_eigvals=negative_eigvals,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaNet's delta rule with ``beta`` in (0, 2] (eigenvalue ``1 - beta`` along ``k``).

    Args:
        q, k: ``[batch, T, H, K]``; ``k`` L2-normalised by the caller.
        v: ``[batch, T, H, V]``.
        beta: ``[batch, T, H]``, in (0, 2] (0 is allowed and makes the step the identity).
        scale: output scale, default ``K ** -0.5``.
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
    _expect(q.dim() == 4, f"q must be [batch, T, H, K], got {tuple(q.shape)}")
    batch, T, H, K = q.shape
    _expect(k.shape == q.shape, f"k must match q {tuple(q.shape)}, got {tuple(k.shape)}")
    _expect(v.dim() == 4 and v.shape[:3] == (batch, T, H), f"v must be [batch, T, H, V], got {tuple(v.shape)}")
    _expect(beta.shape == (batch, T, H), f"beta must be [batch, T, H]={batch, T, H}, got {tuple(beta.shape)}")
    V = v.shape[-1]
    n_states = check_cu_seqlens(cu_seqlens, batch, T, initial_state) if cu_seqlens is not None else batch
    if initial_state is not None:
        _expect(
            initial_state.shape == (n_states, H, K, V),
            f"initial_state must be {(n_states, H, K, V)}, got {tuple(initial_state.shape)}",
        )
    chosen = resolve_backend("delta_rule", backend, q.device)
    impl = _triton_impl("delta_rule") if chosen == "triton" else _DELTA_IMPLS[chosen]
    return impl(
        q,
        k,
        v,
        beta,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )
