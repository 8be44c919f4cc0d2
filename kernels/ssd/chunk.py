"""Chunked SSD (Mamba-2's state-space duality) in pure PyTorch for CPU, with the signed gate.

Time is cut into chunks of ``C`` tokens. Inside a chunk the output is a masked quadratic form,
``y_t = sum_{s <= t} (prod_{s < k <= t} a_k) (C_t . B_s) dt_s x_s``, computed for all chunks at once with batched
matmuls; between chunks only the ``[H, P, N]`` state is passed, in a short loop over chunks:
``S_{c+1} = (prod of the chunk's gates) S_c + sum_s (prod_{k > s} a_k) dt_s x_s B_s^T``, and each token adds
``(prod_{k <= t} a_k) S_c C_t``.

Decays are products of gates, taken in log space as ``exp`` of sums of ``log|a|``. Every sum is formed directly
(prefix and segment sums by ``cumsum``), never as a difference of two cumulative sums: that keeps a gate of exactly
0 (``log|a| = -inf``) exact, with no ``-inf - (-inf)`` NaN, and avoids cancellation when gates are tiny. Negative
gates go through the running-sign identity (:mod:`.gates`): the kernel decays by ``|a|``, weights input ``s`` by
``P_s`` and output ``t`` by ``P_t`` (the running sign). Those weights, ``dt`` and ``D`` (per head) go on the
``[C, C]`` scores or on ``B`` and ``C``, never on the ``P``-wide inputs and outputs, which the CPU pays for per pass.

Decays below ``e^-60`` are flushed to exactly 0 (:data:`LOG_DECAY_FLUSH`): a relative change far below fp32
resolution that keeps subnormal floats out of the CPU matmuls.

``C B^T`` is formed once per group and shared by the ``H / G`` heads that read it. Autograd handles the backward;
memory is O(batch * H * T * C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .gates import log_abs_gate, log_segment_decay, running_sign

# 32, not fla's 64: on CPU the chunk's O(C^2) elementwise work outweighs the per-chunk loop. Forward + backward,
# signed, 1 thread, chunk 16 / 32 / 64 (2026-11-30, with the scalings on the narrow side; other jobs running):
# B 4, T 256, H 4, P 64, N 16 (the model benchmark's shape) 7.2 / 7.6 / 11.4 ms; B 4, T 1024, H 8, P 64, N 64
# (benchmarks/cpu_ssd.py) 221 / 173 / 174 ms. One size for every length: 32.
DEFAULT_CHUNK_SIZE = 32


def ssd_chunk(
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and shapes as :func:`lrnn_lm.kernels.ssd.naive.ssd_naive`; computes in fp32.

    Gradients: exact wherever ``a != 0`` (tested down to ``|a| = 1e-6``). Where the signed gate is exactly 0, the
    gradient through that gate (``dL/da_t = <dL/dh_t, h_{t-1}>``) is taken as 0, so ``dt_t`` and ``A`` get only
    their other terms; all other gradients stay exact. The unsigned gate is 0 only where ``exp(dt A)``
    underflows, where the true ``da/d(dt) = A a`` is 0 anyway, so its gradients are exact.
    """
    y, S = _chunked(x, dt, B, C, A=A, D=D, negative=negative_eigvals, h0=initial_state, chunk_size=chunk_size)
    return y, (S if output_final_state else None)


# Decays below e^-60 (~9e-27) are set to exactly 0. Their terms are far below fp32 resolution next to the
# current token's (decay 1), but as subnormal floats they would slow every CPU matmul they enter several-fold
# (measured 2x on the whole op with signed gates, many of which are near 0). Gradients lose the same negligible terms.
LOG_DECAY_FLUSH = -60.0


def _flushed_exp(log_decay: torch.Tensor) -> torch.Tensor:
    return F.threshold(log_decay, LOG_DECAY_FLUSH, float("-inf")).exp()


def _chunked(x, dt, B, C, *, A, D, negative, h0, chunk_size):
    batch, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G  # heads per group
    if T == 0:
        S = x.new_zeros(batch, H, P, N, dtype=torch.float32) if h0 is None else h0.float()
        return x.new_zeros(batch, 0, H, P), S
    Cs = min(chunk_size, T)
    n = -(-T // Cs)
    pad = n * Cs - T

    xf, dtf = x.float(), dt.float()
    log_a, sign = log_abs_gate(dtf, A.float(), negative)  # [batch, T, H]
    sign = None if sign is None else running_sign(sign)

    # Padded tail steps have gate 1 (log 0) and no input (dt 0), so the final state is exact.
    def chunked(t: torch.Tensor) -> torch.Tensor:
        """``[batch, T, G * r, *rest] -> [batch, G, r, n, Cs, *rest]`` (a view of the padded tensor); ``r`` is
        ``R`` for per-head tensors and 1 for ``B`` and ``C``, which a group's heads share."""
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) if pad else t
        rest = t.shape[3:]
        t = t.view(batch, n, Cs, G, t.shape[2] // G, *rest)
        return t.permute(0, 3, 4, 1, 2, *range(5, 5 + len(rest)))

    log_a, dtc, xc = chunked(log_a), chunked(dtf), chunked(xf)  # [b, G, R, n, Cs] and [b, G, R, n, Cs, P]
    Bc, Cc = chunked(B.float()), chunked(C.float())  # [b, G, 1, n, Cs, N]

    decay = _flushed_exp(log_segment_decay(log_a))  # decay[t, s] = prod_{s < k <= t} |a_k| for s <= t, else 0
    from_start = _flushed_exp(log_a.cumsum(-1))  # prod_{k <= t} |a_k|; the last entry is the whole chunk's

    # Every per-token scalar multiplies the narrow side ([Cs, Cs] scores, or [Cs, N] B and C), never the
    # [Cs, P] inputs or outputs: input s is weighted by dt_s (times the running sign P_s when signed), and output t
    # by P_t. Inside a chunk P_t P_s is the sign of the segment's gate product, so the scores are the signed decays.
    sign_c = None if sign is None else chunked(sign)  # [b, G, R, n, Cs]
    w_in = dtc if sign is None else dtc * sign_c
    scores = decay * (Cc @ Bc.transpose(-1, -2)) * w_in[..., None, :]  # [b, G, R, n, Cs, Cs]
    if sign is not None:
        scores = scores * sign_c[..., :, None]
    if D is not None and D.dim() == 1:  # y_t += D x_t: one more term on the diagonal
        scores = scores + torch.diag_embed(D.float().view(G, R, 1, 1).expand(G, R, n, Cs))
    # The intra-chunk outputs and the chunk's own contribution to the state after it
    # (sum_s decay[last, s] w_in_s B_s x_s^T, kept as [N, P], the transpose of the state) both multiply x on the
    # right: one matmul of the stacked left sides reads x, and forms its gradient, once.
    to_end = (Bc * (decay[..., -1, :] * w_in)[..., None]).transpose(-1, -2)  # [b, G, R, n, N, Cs]
    y, local = (torch.cat([scores, to_end], dim=-2) @ xc).split([Cs, N], dim=-2)  # [.., Cs, P] and [.., N, P]
    chunk_decay = from_start[..., -1]  # [b, G, R, n]
    if h0 is None:
        S = x.new_zeros(batch, G, R, N, P, dtype=torch.float32)
    else:
        S = h0.float().view(batch, G, R, P, N).transpose(-1, -2)
    starts = []
    # unbind, not indexing: the backward of n indexing ops would zero-fill a full-size gradient n times.
    for decay_c, local_c in zip(chunk_decay.unbind(-1), local.unbind(3)):
        starts.append(S)
        S = torch.addcmul(local_c, decay_c[..., None, None], S)
    S_in = torch.stack(starts, dim=3)  # (sign-flipped) state before each chunk, transposed: [b, G, R, n, N, P]
    read = from_start if sign is None else from_start * sign_c
    reader = (Cc * read[..., None]).reshape(-1, Cs, N)
    # baddbmm adds the carried-in state's reading inside the matmul, with no separate pass over the output.
    y = torch.baddbmm(y.reshape(-1, Cs, P), reader, S_in.reshape(-1, N, P)).view(y.shape)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(batch, n * Cs, H, P)[:, :T]
    if D is not None and D.dim() == 2:
        y = y + D.float() * xf
    S = S.transpose(-1, -2).reshape(batch, H, P, N)
    if sign is not None:
        S = S * sign[:, -1, :, None, None]
    return y.to(x.dtype), S
