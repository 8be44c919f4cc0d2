"""Chunked gated delta rule in pure PyTorch (fp32), in the WY / UT-transform form with scalar gates.

Within a chunk of C tokens that starts from state ``S``, let ``D[t, s] = alpha_{s+1} ... alpha_t`` (the decay
from step s to step t, 1 on the diagonal) and ``gamma_t = alpha_1 ... alpha_t``. Then
``S_t = gamma_t S + sum_{i<=t} D[t, i] k_i u_i^T``, where the corrected values ``u`` solve the unit lower
triangular system ``(I + diag(beta) strict_tril(D * K K^T)) U = diag(beta) (V - diag(gamma) K S)``. So with
``W = T diag(gamma) K`` and ``U0 = T V`` for ``T = (I + diag(beta) strict_tril(D * K K^T))^{-1} diag(beta)``:

    U = U0 - W S,    O = scale (diag(gamma) Q S + tril(D * Q K^T) U),    S' = gamma_C S + (D[C, :] * K)^T U.

Signs need no special handling: ``D`` and ``gamma`` are plain products of the gates (cumulative products, never
``exp`` of differences of logs), so gates of -1, 0 and 1 are exact and so are their gradients, zero included.
Everything per chunk (``W``, ``U0``, the masked ``Q K^T``) is computed for all chunks at once; only two
matrix products per chunk run in the sequential loop over chunks, and the outputs are one batched product after
it. Padding the tail with ``beta = 0, alpha = 1`` makes padded steps the identity, so the final state is exact.
Autograd handles the backward; memory is O(T * chunk_size).

:func:`wy_chunked` with ``alpha=None`` is the ungated delta rule (``lrnn_lm.kernels.delta_rule.chunk``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..l2norm import maybe_l2norm

DEFAULT_CHUNK_SIZE = 64


def gated_delta_rule_chunk(
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and shapes as :func:`gated_delta_rule_naive`; computes in fp32."""
    q, k = maybe_l2norm(q, k, use_qk_l2norm_in_kernel)
    o, S = wy_chunked(q, k, v, beta, alpha, scale=scale, initial_state=initial_state, chunk_size=chunk_size)
    return o, (S if output_final_state else None)


def wy_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor | None,
    *,
    scale: float | None,
    initial_state: torch.Tensor | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked (gated) delta rule: ``q, k [b, T, H, K]``, ``v [b, T, H, V]``, ``beta`` and ``alpha``
    (or None: no gate) ``[b, T, H]``, state ``[b, H, K, V]``. Returns ``(o in v.dtype, final state fp32)``."""
    batch, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    if T == 0:
        S = q.new_zeros(batch, H, K, V, dtype=torch.float32) if initial_state is None else initial_state.float()
        return v.new_zeros(batch, 0, H, V), S
    C = min(chunk_size, T)
    n = -(-T // C)
    pad = n * C - T

    def blocks(t: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        # [b, T, H, ...] -> [b * H, n, C, ...] in fp32, the tail padded with `value`.
        t = t.float().transpose(1, 2)
        t = F.pad(t, (0, 0, 0, pad) if t.dim() == 4 else (0, pad), value=value)
        return t.reshape(batch * H, n, C, *t.shape[3:])

    qc, kc, vc = blocks(q), blocks(k), blocks(v)
    bc = blocks(beta)[..., None]  # [bH, n, C, 1]; padded steps have beta = 0
    kk = kc @ kc.transpose(-1, -2)
    qk = qc @ kc.transpose(-1, -2)
    if alpha is None:
        kg, qg, k_end, g_end = kc, qc, kc, None
    else:
        ac = blocks(alpha, value=1.0)  # [bH, n, C]; padded steps have alpha = 1
        decay = _decay_matrix(ac)  # [bH, n, C, C]
        gamma = ac.cumprod(-1)[..., None]  # [bH, n, C, 1]
        kk, qk = kk * decay, qk * decay
        kg, qg = kc * gamma, qc * gamma
        k_end = kc * decay[..., -1, :, None]  # k_i scaled by the decay from step i to the chunk's end
        g_end = gamma[..., -1, :, None]  # [bH, n, 1, 1]

    # unitriangular=True ignores the diagonal, so the strict lower part is all the solve needs.
    lower = bc * kk.tril(-1)
    WU0 = torch.linalg.solve_triangular(lower, bc * torch.cat([kg, vc], -1), upper=False, unitriangular=True)
    W, U0 = WU0.split([K, V], dim=-1)

    S = qc.new_zeros(batch * H, K, V) if initial_state is None else initial_state.float().reshape(batch * H, K, V)
    starts, corrected = [], []
    # unbind (not indexing) so that the backward of the per-chunk slices is one stack, not n scatters.
    g_chunks = [None] * n if g_end is None else g_end.unbind(1)
    for W_i, U0_i, k_i, g_i in zip(W.unbind(1), U0.unbind(1), k_end.unbind(1), g_chunks):
        starts.append(S)
        U = torch.baddbmm(U0_i, W_i, S, alpha=-1.0)
        corrected.append(U)
        S = torch.baddbmm(S if g_i is None else S * g_i, k_i.transpose(-1, -2), U)
    o = qg @ torch.stack(starts, 1) + qk.tril() @ torch.stack(corrected, 1)  # [bH, n, C, V]
    o = (scale * o).reshape(batch, H, n * C, V)[:, :, :T].transpose(1, 2)
    return o.to(v.dtype), S.reshape(batch, H, K, V)


def _decay_matrix(a: torch.Tensor) -> torch.Tensor:
    """``D[..., t, s] = a_{s+1} ... a_t`` for ``t >= s`` (1 on the diagonal), 0 above it, for ``a [..., C]``.

    A cumulative product down each column of ``M[t, s] = a_t if t > s else 1``: no division and no logarithm,
    so zeros and negative gates are exact, and autograd's cumprod backward handles zeros exactly."""
    C = a.shape[-1]
    strict = torch.ones(C, C, dtype=torch.bool, device=a.device).tril(-1)
    M = torch.where(strict, a[..., :, None], a.new_ones(()))
    return M.cumprod(-2).tril()
