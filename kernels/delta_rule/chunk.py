"""Chunked delta rule in pure PyTorch, in the WY / UT-transform form (Yang et al., 2024).

Within a chunk of C tokens with start state S, write ``S_t = S + sum_{i<=t} k_i u_i^T``. The
corrected values ``u`` solve the unit lower-triangular system
``(I + diag(beta) strict_tril(K K^T)) U = diag(beta) (V - K S)``, so with
``W = T K`` and ``U0 = T V`` for ``T = (I + diag(beta) strict_tril(K K^T))^{-1} diag(beta)``
the chunk needs ``U = U0 - W S``, ``O = scale (Q S + tril(Q K^T) U)`` and ``S' = S + K^T U``.
``W`` and ``U0`` are computed for all chunks at once; only the short loop over chunks is
sequential. Padding the tail with ``beta = 0`` makes padded steps the identity, so the final
state is exact. Autograd handles the backward; memory is O(T * chunk_size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 64


def delta_rule_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and shapes as :func:`delta_rule_naive`; computes in fp32."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o, S = _chunked(q, k, v, beta, scale=scale, initial_state=initial_state, chunk_size=chunk_size)
    return o, (S if output_final_state else None)


def _chunked(q, k, v, beta, *, scale, chunk_size, initial_state=None):
    batch, T, H, K = q.shape
    V = v.shape[-1]
    if T == 0:
        S = q.new_zeros(batch, H, K, V, dtype=torch.float32) if initial_state is None else initial_state.float()
        return v.new_zeros(batch, 0, H, V), S
    C = min(chunk_size, T)
    n = -(-T // C)
    pad = n * C - T
    # [batch, T, H, D] -> [batch, H, n, C, D], fp32, tail padded with identity steps (beta = 0).
    qc, kc, vc = (F.pad(t.float().transpose(1, 2), (0, 0, 0, pad)).reshape(batch, H, n, C, -1) for t in (q, k, v))
    bc = F.pad(beta.float().transpose(1, 2), (0, pad)).reshape(batch, H, n, C, 1)

    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    kk = (kc @ kc.transpose(-1, -2)).masked_fill(~strict, 0)
    L = torch.eye(C, device=q.device) + bc * kk
    W = torch.linalg.solve_triangular(L, bc * kc, upper=False, unitriangular=True)
    U0 = torch.linalg.solve_triangular(L, bc * vc, upper=False, unitriangular=True)
    qk = (qc @ kc.transpose(-1, -2)).masked_fill(~incl, 0)

    S = qc.new_zeros(batch, H, K, V) if initial_state is None else initial_state.float()
    outs = []
    for i in range(n):
        U = U0[:, :, i] - W[:, :, i] @ S
        outs.append(scale * (qc[:, :, i] @ S + qk[:, :, i] @ U))
        S = S + kc[:, :, i].transpose(-1, -2) @ U
    o = torch.stack(outs, dim=2).reshape(batch, H, n * C, V)[:, :, :T].transpose(1, 2)
    return o.to(v.dtype), S
