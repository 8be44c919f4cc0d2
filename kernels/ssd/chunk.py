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

Decays below ``e^-60`` are flushed to exactly 0 (:data:`.chunk_scan.LOG_DECAY_FLUSH`): a relative change far below
fp32 resolution that keeps subnormal floats out of the CPU matmuls.

``C B^T`` is formed once per group and shared by the ``H / G`` heads that read it. This file computes the gates
and the chunk-major layout (autograd differentiates them); the scan itself, with its backward written out, is
:mod:`.chunk_scan`. Memory is O(batch * H * T * C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .chunk_scan import chunked_scan
from .gates import log_abs_gate, running_sign

# 32, not fla's 64: on CPU the chunk's O(C^2) elementwise work outweighs the per-chunk loop. Forward + backward,
# signed, 2 threads, chunk 16 / 32 / 64, median of interleaved rounds (2026-11-30, with the scan's backward
# written out): B 4, T 256, H 4, P 64, N 16 (the model benchmark's shape) 4.5 / 4.4 / 6.8 ms; B 4, T 1024, H 8,
# P 64, N 64 (benchmarks/cpu_kernels.py's ssd) 109 / 66 / 79 ms. One size for every length: 32.
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

    # Every per-token scalar multiplies the narrow side ([Cs, Cs] scores, or [Cs, N] B and C), never the
    # [Cs, P] inputs or outputs: input s is weighted by dt_s (times the running sign P_s when signed), and output t
    # by P_t. Inside a chunk P_t P_s is the sign of the segment's gate product, so the scores are the signed decays.
    sign_c = None if sign is None else chunked(sign)  # [b, G, R, n, Cs]
    w_in = dtc if sign is None else dtc * sign_c
    D_diag = D.float().view(G, R) if D is not None and D.dim() == 1 else None  # y_t += D x_t, on the diagonal
    h0_t = None if h0 is None else h0.float().view(batch, G, R, P, N).transpose(-1, -2)  # the scan keeps [N, P]
    y, S = chunked_scan(log_a, w_in, sign_c, Bc, Cc, xc, D_diag, h0_t)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(batch, n * Cs, H, P)[:, :T]
    if D is not None and D.dim() == 2:
        y = y + D.float() * xf
    S = S.transpose(-1, -2).reshape(batch, H, P, N)
    if sign is not None:
        S = S * sign[:, -1, :, None, None]
    return y.to(x.dtype), S
