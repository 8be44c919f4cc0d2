"""Chunked delta rule in pure PyTorch (fp32), in the WY / UT-transform form (Yang et al., 2024).

Within a chunk of C tokens with start state S, write ``S_t = S + sum_{i<=t} k_i u_i^T``. The
corrected values ``u`` solve the unit lower-triangular system
``(I + diag(beta) strict_tril(K K^T)) U = diag(beta) (V - K S)``, so with
``W = T K`` and ``U0 = T V`` for ``T = (I + diag(beta) strict_tril(K K^T))^{-1} diag(beta)``
the chunk needs ``U = U0 - W S``, ``O = scale (Q S + tril(Q K^T) U)`` and ``S' = S + K^T U``.

This is the gated delta rule with every gate equal to 1, so it runs the shared WY core
(:func:`lrnn_lm.kernels.gated_delta_rule.chunk.wy_chunked`) with no gate, which skips all gate work.
Padding the tail with ``beta = 0`` makes padded steps the identity, so the final state is exact.
Autograd handles the backward; memory is O(T * chunk_size).
"""

from __future__ import annotations

import torch

from ..gated_delta_rule.chunk import DEFAULT_CHUNK_SIZE, wy_chunked
from ..l2norm import maybe_l2norm


def delta_rule_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and shapes as :func:`delta_rule_naive`; computes in fp32."""
    q, k = maybe_l2norm(q, k, use_qk_l2norm_in_kernel)
    o, S = wy_chunked(q, k, v, beta, None, scale=scale, initial_state=initial_state, chunk_size=chunk_size)
    return o, (S if output_final_state else None)
