"""The core of the chunked SSD on CPU as one autograd function, with its backward written out.

Autograd through the same forward records ~100 small ops per call and replays ~200 in the backward, each paying
the framework's per-op cost, plus the ``[C, P]`` splits, stacks and concatenations its graph needs. Written out,
the backward is a handful of batched matmuls and ``[C, C]`` elementwise ops. Measured on the Mamba-2 model
benchmark's shape (B 4, T 256, H 4, P 64, N 16, chunk 32; forward + backward, 2 threads, paired rounds): 0.88x the
time of the autograd version of the same forward (2026-11-30).

Inputs (all fp32, chunk-major; ``G`` groups of ``R`` heads, ``n`` chunks of ``C`` tokens)::

    log_a  [b, G, R, n, C]     log|a| per token (-inf for a gate of exactly 0)
    w_in   [b, G, R, n, C]     weight of token s's input: dt_s, times the running sign P_s when signed
    sign   [b, G, R, n, C]     running sign P_t weighting output t, or None (unsigned); carries no gradient
    B, C   [b, G, 1, n, C, N]  shared by a group's heads
    x      [b, G, R, n, C, P]
    D      [G, R] or None      the skip term D x_t, on the diagonal of the scores
    h0     [b, G, R, N, P]     state before the first chunk, transposed (``[N, P]``), or None (zeros)

Outputs: ``y [b, G, R, n, C, P]`` and the state after the last chunk, transposed, ``[b, G, R, N, P]``.

Forward, per chunk (``L[t, s] = prod_{s < k <= t} |a_k|``, ``f[t] = prod_{k <= t} |a_k|``)::

    M = L * (C B^T) * w_in[s] * sign[t]  (+ D on the diagonal)      E[s, :] = B_s L[last, s] w_in[s]
    y = M x + (C * (f sign)[:, None]) S_c                           S_{c+1} = f[last] S_c + E^T x

Decays come from sums of ``log|a|`` formed directly (:func:`.gates.log_segment_decay`), never as differences,
so a gate of exactly 0 stays exact; decays below ``e^LOG_DECAY_FLUSH`` are flushed to 0. The gradient of
``log|a_k|`` sums the decay gradients of every segment that contains ``k``; where ``|a_k| = 0`` all of those
decays are 0, so that gradient is 0 (the contract in :func:`.chunk.ssd_chunk`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .gates import log_segment_decay

# Decays below e^-60 (~9e-27) are set to exactly 0. Their terms are far below fp32 resolution next to the
# current token's (decay 1), but as subnormal floats they would slow every CPU matmul they enter several-fold
# (measured 2x on the whole op with signed gates, many of which are near 0). Gradients lose the same negligible terms.
LOG_DECAY_FLUSH = -60.0


def _flushed_exp_(log_decay: torch.Tensor) -> torch.Tensor:
    """``exp`` in place, with entries at or below the flush level (to within rounding there) set to exactly 0.

    The flush happens after the ``exp``, on inputs clamped to one below the flush level: on CPU, ``exp`` of
    ``-inf`` or of anything whose result underflows (below about -87 in fp32) takes a slow path, measured 15x
    (``-inf``) to 150x (subnormal results) the time of ``exp`` in the normal range. Here every input lands in the
    normal range, and ``threshold`` then zeroes what lies at or below ``e^LOG_DECAY_FLUSH``.
    """
    log_decay = log_decay.clamp_(min=LOG_DECAY_FLUSH - 1.0).exp_()
    return F.threshold_(log_decay, math.exp(LOG_DECAY_FLUSH), 0.0)


def chunked_scan(
    log_a: torch.Tensor,
    w_in: torch.Tensor,
    sign: torch.Tensor | None,
    B: torch.Tensor,
    C: torch.Tensor,
    x: torch.Tensor,
    D: torch.Tensor | None,
    h0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked scan (shapes in the module docstring): returns ``(y, final state transposed)``, in fp32 also
    under autocast (which would otherwise run its matmuls, and not its in-place updates, in the autocast dtype)."""
    with torch.autocast(log_a.device.type, enabled=False):
        return _ChunkedScan.apply(log_a, w_in, sign, B, C, x, D, h0)


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_a, w_in, sign, B, C, x, D, h0):
        b, G, R, n, Cs = log_a.shape
        N, P = B.shape[-1], x.shape[-1]
        L = _flushed_exp_(log_segment_decay(log_a))  # [b, G, R, n, Cs, Cs]
        f = _flushed_exp_(log_a.cumsum(-1))  # [b, G, R, n, Cs]; f[..., -1] is the whole chunk's decay
        CB = C @ B.transpose(-1, -2)  # [b, G, 1, n, Cs, Cs], once per group
        M = L * CB
        M *= w_in[..., None, :]
        if sign is not None:
            M *= sign[..., :, None]
        if D is not None:
            M.diagonal(dim1=-2, dim2=-1).add_(D.view(1, G, R, 1, 1))
        to_end = L[..., -1, :] * w_in  # decay from token s to the chunk's end, times its input weight
        E = B * to_end[..., None]  # [b, G, R, n, Cs, N]
        x3, M3, E3 = x.reshape(-1, Cs, P), M.view(-1, Cs, Cs), E.reshape(-1, Cs, N)
        y = torch.bmm(M3, x3)
        local = torch.bmm(E3.transpose(1, 2), x3).view(b, G, R, n, N, P)  # each chunk's own state contribution

        # States entering each chunk, written in place: no per-chunk list to stack. The per-chunk views come from
        # one unbind each, not one indexing op per chunk and tensor (the loop is short; its ops' overhead is not).
        decay_c = f[..., -1]
        S_in, S_end = x.new_empty(b, G, R, n, N, P), x.new_empty(b, G, R, N, P)
        states = S_in.unbind(3)
        if h0 is None:
            states[0].zero_()
        else:
            states[0].copy_(h0)
        for c, (local_c, decay) in enumerate(zip(local.unbind(3), decay_c[..., None, None].unbind(3))):
            torch.addcmul(local_c, decay, states[c], out=states[c + 1] if c + 1 < n else S_end)
        read = C * (f if sign is None else f * sign)[..., None]  # [b, G, R, n, Cs, N]
        read = read.reshape(-1, Cs, N)
        y.baddbmm_(read, S_in.view(-1, N, P))

        ctx.save_for_backward(L, f, CB, w_in, sign, B, C, x3, M3, E3, read, S_in, to_end)
        ctx.has_D, ctx.has_h0 = D is not None, h0 is not None
        return y.view(b, G, R, n, Cs, P), S_end

    @staticmethod
    def backward(ctx, dy, dS_end):
        with torch.autocast(dy.device.type, enabled=False):  # a backward called inside autocast stays fp32 too
            return _ChunkedScan._backward(ctx, dy, dS_end)

    @staticmethod
    def _backward(ctx, dy, dS_end):
        L, f, CB, w_in, sign, B, C, x3, M3, E3, read, S_in, to_end = ctx.saved_tensors
        b, G, R, n, Cs = f.shape
        N, P = B.shape[-1], x3.shape[-1]
        dy3 = dy.reshape(-1, Cs, P)

        # State gradients, last chunk first: dS_c = f_c[last] dS_{c+1} + read_c^T dy_c. d_local[c] is the gradient
        # of the state leaving chunk c.
        from_reads = torch.bmm(read.transpose(1, 2), dy3).view(b, G, R, n, N, P).unbind(3)
        decays = f[..., -1, None, None].unbind(3)
        d_local = torch.empty_like(S_in)
        d_locals = d_local.unbind(3)
        d_locals[n - 1].copy_(dS_end)
        for c in range(n - 1, 0, -1):
            torch.addcmul(from_reads[c], decays[c], d_locals[c], out=d_locals[c - 1])
        dh0 = torch.addcmul(from_reads[0], decays[0], d_locals[0]) if ctx.has_h0 else None
        d_decay_c = (d_local * S_in).sum((-1, -2))

        d_local3 = d_local.view(-1, N, P)
        d_read = torch.bmm(dy3, S_in.view(-1, N, P).transpose(1, 2)).view(b, G, R, n, Cs, N)
        dM = torch.bmm(dy3, x3.transpose(1, 2)).view(b, G, R, n, Cs, Cs)
        dE = torch.bmm(x3, d_local3.transpose(1, 2)).view(b, G, R, n, Cs, N)
        dx = torch.bmm(M3.transpose(1, 2), dy3).baddbmm_(E3, d_local3)
        dD = dM.diagonal(dim1=-2, dim2=-1).sum((0, 3, 4)) if ctx.has_D else None

        # The [Cs, Cs] and [Cs, N] side: M = L * CB * w_in[s] * sign[t], E = B * to_end, read = C * f * sign.
        dMs = dM if sign is None else dM * sign[..., :, None]
        dw = (dMs * (L * CB)).sum(-2)
        dMt = dMs * w_in[..., None, :]
        dL = dMt * CB
        dCB = (dMt * L).sum(2, keepdim=True)  # the group's heads share C B^T
        d_to_end = (dE * B).sum(-1)
        dB = (dE * to_end[..., None]).sum(2, keepdim=True)
        dw += d_to_end * L[..., -1, :]
        dL[..., -1, :] += d_to_end * w_in
        dC = (d_read * (f if sign is None else f * sign)[..., None]).sum(2, keepdim=True)
        df = (d_read * C).sum(-1)
        if sign is not None:
            df *= sign
        df[..., -1] += d_decay_c
        dC += dCB @ B
        dB += dCB.transpose(-1, -2) @ C

        # log_a: L[t, s] = exp(sum_{s < k <= t} log_a[k]) and f[t] = exp(sum_{k <= t} log_a[k]) (flushed entries
        # are 0, and so are their gradients). d log_a[k] = sum_{t >= k} sum_{s < k} dL[t, s] L[t, s]
        # + sum_{t >= k} df[t] f[t], both as running sums (no differences).
        rows = dL.mul_(L).cumsum(-1)  # rows[t, j] = sum_{s <= j} dL[t, s] L[t, s]
        below = torch.ones(Cs, Cs, dtype=rows.dtype, device=rows.device).tril(-1)  # rows is finite: a 0/1 multiply
        d_log_a = F.pad(rows.mul_(below).sum(-2)[..., :-1], (1, 0))
        d_log_a += (df * f).flip(-1).cumsum(-1).flip(-1)
        return d_log_a, dw, None, dB, dC, dx.view(b, G, R, n, Cs, P), dD, dh0
