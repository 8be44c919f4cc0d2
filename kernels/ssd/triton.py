"""SSD (Mamba-2) on Triton, forward and backward, with the signed gate: our own kernels (:mod:`.triton_kernels`).

The decomposition is mamba_ssm's ``ssd_combined``: time is cut into chunks of :attr:`Tiling.chunk` tokens, and

1. the gate goes to log space in torch: ``la = log|a|`` (``dt A`` exactly when unsigned; ``-inf`` for a signed
   gate of exactly 0) with the running sign ``P_t`` beside it (:mod:`.gates`; ``P`` restarts at each sequence);
2. **chunk states** (:func:`_chunk_outer_kernel`): each chunk's own contribution to the state after it;
3. **state passing** (:func:`_state_pass_fwd_kernel`): one short loop over a sequence's chunks, per (sequence,
   head, block of the state), carrying ``S <- decay_c S + own_c``; it leaves the state entering each chunk;
4. **chunk scan** (:func:`_chunk_scan_fwd_kernel`): the intra-chunk quadratic form ``(L * C B^T) x`` plus the
   inter-chunk term ``C S_in^T``, plus ``D x``.

Signed gates use the running-sign identity (``a_t = s_t |a_t|``): the kernels decay by ``|a|``, weight input
``s`` by ``w_s = P_s dt_s`` and output ``t`` by ``P_t``; the final state is multiplied by each sequence's last
``P``. Within a chunk, decays are ``exp`` of sums of ``la`` formed directly (running sums, no differences), so a
gate of exactly 0 is exact (no NaN) and tiny gates cost no precision.

Backward: the gradients reaching the state entering each chunk from the chunk's outputs (the same chunk-outer
kernel), state passing in reverse, then two kernels per chunk: one with the earlier token on rows (``dx``, ``dB``,
``dt``'s input path, ``dD``) and one with the later token on rows (``dC``). The gate's gradient is formed as
``dL/d|a_t| = <dL/dh_t, h_{t-1}>``, summed over pairs of tokens around ``t`` with decays that leave ``|a_t|`` out
(see :func:`_chunk_bwd_outputs_kernel`): no division by ``a_t`` and no difference of large terms, so it is exact at
every gate, ``a = 0`` included (the true gradient, not 0), and at ``|a| = 1e-6`` to fp32 precision. Then ``dL/da =
s dL/d|a|`` and ``da/d(dt A) = 2 exp(dt A)`` (signed) or ``exp(dt A)``, in torch on ``[tokens, H]`` tensors.

Packed sequences (``cu_seqlens``) run in the same launches as a batch: a batch is a packed row whose sequences all
have length ``T``; chunks never cross a sequence start, and the chunk table is built on the device with no host
sync (:func:`_chunk_table`).

Dtypes: ``x, B, C`` are promoted to one dtype; bf16 and fp16 products run on tensor cores with fp32 accumulation;
decays, gates, states and the gate gradient's own products are fp32 (``tf32x3`` on a GPU for 16-bit inputs, full
fp32 for fp32 inputs). ``y`` comes back in ``x.dtype``, the final state in fp32, each gradient in its input's dtype.

Hopper: fla #640 (Triton 3.4-3.6 on sm_90) miscompiles a transposed MMA-layout accumulator fed back into
``tl.dot`` with 64-wide K tiles. These kernels never transpose a dot's result (:mod:`.triton_kernels`), and every
tile size lives in :data:`TILING`, which a GPU check can replace (``set_tiling``) to compare tilings.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F
import triton

from .gates import log_abs_and_sign, running_sign
from .triton_kernels import (
    _chunk_bwd_inputs_kernel,
    _chunk_bwd_outputs_kernel,
    _chunk_outer_kernel,
    _chunk_scan_fwd_kernel,
    _state_pass_bwd_kernel,
    _state_pass_fwd_kernel,
)


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Every tile size and launch setting of the SSD kernels, in one place.

    ``chunk``: tokens per chunk (the K width of the intra-chunk ``L C B^T x`` product); ``block_p``: head channels
    per program (at most; smaller heads take the next power of two >= 16); ``block_n``: the slice of ``N`` a
    program walks at a time (``N`` is never split across programs); ``block_state``: state entries per
    state-passing program.
    """

    chunk: int = 64
    block_p: int = 64
    block_n: int = 64
    block_state: int = 1024
    num_warps_fwd: int = 4
    num_warps_bwd: int = 8
    num_stages: int = 1


TILING = Tiling()


def set_tiling(**changes: int) -> Tiling:
    """Replace fields of :data:`TILING` (for GPU checks comparing tilings); returns the new tiling."""
    global TILING
    TILING = dataclasses.replace(TILING, **changes)
    return TILING


def ssd_triton(
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
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SSD on our Triton kernels; same contract as :func:`lrnn_lm.kernels.ssd.naive.ssd_naive`.

    Shapes: ``x: [batch, T, H, P]``, ``dt: [batch, T, H]``, ``A: [H]``, ``B, C: [batch, T, G, N]``, ``D: [H]`` or
    ``[H, P]``; ``initial_state`` and the returned state ``[n, H, P, N]`` fp32 (``n = batch``, or the number of
    packed sequences with ``cu_seqlens``, which requires ``batch == 1``).
    Returns ``(y [batch, T, H, P] in x.dtype, final_state or None)``.
    """
    batch, T, H, P = x.shape
    N = B.shape[-1]
    n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    if T == 0:
        state = initial_state.float() if initial_state is not None else x.new_zeros(n_seq, H, P, N, dtype=torch.float32)
        return x.new_zeros(batch, 0, H, P), (state if output_final_state else None)
    # The kernels choose their own precisions (16-bit products, fp32 gates and states): autocast must not recast.
    with torch.autocast(x.device.type, enabled=False):
        y, state = _SSDTriton.apply(x, dt, A, B, C, D, initial_state, cu_seqlens, negative_eigvals)
    return y, (state if output_final_state else None)


def _chunk_table(cu: torch.Tensor, total: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(first row [n_chunks] int64, length [n_chunks] int32, first chunk of each sequence [n_seq + 1] int32)``.

    Built on the device without a host sync: ``n_chunks`` is the bound ``ceil(total / chunk) + n_seq`` (each
    sequence adds at most one partly filled chunk); chunks past the last real one have length 0 and do nothing."""
    n_seq = cu.numel() - 1
    lens = cu[1:] - cu[:-1]
    per_seq = (lens + chunk - 1) // chunk
    first = F.pad(per_seq.cumsum(0), (1, 0))
    n_chunks = triton.cdiv(total, chunk) + n_seq
    j = torch.arange(n_chunks, device=cu.device)
    seq = torch.searchsorted(first[1:], j, right=True).clamp_max(n_seq - 1)
    start = cu[seq] + (j - first[seq]) * chunk
    length = (cu[seq + 1] - start).clamp(0, chunk)
    length = torch.where(j < first[-1], length, 0)
    return start.contiguous(), length.to(torch.int32).contiguous(), first.to(torch.int32).contiguous()


def _last_sign(sign: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
    """The running sign ``[rows, H]`` at each sequence's last token, ``[n_seq, H]`` (1 for an empty sequence)."""
    ends = cu[1:]
    last = sign[(ends - 1).clamp_min(0)]
    return torch.where((ends > cu[:-1])[:, None], last, torch.ones_like(last))


def _launch_sizes(P: int, N: int, device: torch.device) -> dict:
    tiling = TILING
    block_p = min(tiling.block_p, max(16, triton.next_power_of_2(P)))
    block_n = min(tiling.block_n, max(16, triton.next_power_of_2(N)))
    return {"CHUNK": tiling.chunk, "BLOCK_P": block_p, "BLOCK_N": block_n}


class _SSDTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, cu_seqlens, negative: bool):
        batch, T, H, P = x.shape
        G, N = B.shape[2], B.shape[3]
        rows = batch * T
        device = x.device
        dtype = torch.promote_types(torch.promote_types(x.dtype, B.dtype), C.dtype)
        xk = x.to(dtype).reshape(rows, H, P).contiguous()
        Bk, Ck = (t.to(dtype).reshape(rows, G, N).contiguous() for t in (B, C))
        if cu_seqlens is None:
            cu = torch.arange(batch + 1, device=device, dtype=torch.int64) * T
        else:
            cu = cu_seqlens.to(device=device, dtype=torch.int64)
        n_seq = cu.numel() - 1

        # The gate in log space with the running sign beside it (fp32, [rows, H]).
        dtf = dt.float()
        s = dtf * A.float()
        if negative:
            log_abs, step = log_abs_and_sign(2 * torch.exp(s) - 1)
            sign = running_sign(step.reshape(1, rows, H), cu).reshape(rows, H)
        else:
            log_abs, step, sign = s, None, torch.ones(rows, H, device=device)
        la = log_abs.reshape(rows, H).contiguous()
        w = (dtf.reshape(rows, H) * sign).contiguous()
        sign = sign.contiguous()

        sizes = _launch_sizes(P, N, device)
        chunk = sizes["CHUNK"]
        start, length, first = _chunk_table(cu, rows, chunk)
        n_chunks = start.numel()
        fp32 = dtype == torch.float32
        prec = {"FP32_PRECISION": "ieee" if fp32 else "tf32", "WIDEN": os.environ.get("TRITON_INTERPRET") == "1"}
        warps = {"num_warps": TILING.num_warps_fwd, "num_stages": TILING.num_stages}
        n_pblocks = triton.cdiv(P, sizes["BLOCK_P"])

        own = torch.empty(n_chunks, H, P, N, device=device, dtype=torch.float32)
        decay = torch.empty(n_chunks, H, device=device, dtype=torch.float32)
        _chunk_outer_kernel[(n_chunks, H, n_pblocks)](
            xk, Bk, la, w, own, decay, start, length, H, H // G, P, N, FORWARD=True, **sizes, **prec, **warps
        )
        final = torch.empty(n_seq, H, P, N, device=device, dtype=torch.float32)
        block_s = min(TILING.block_state, triton.next_power_of_2(P * N))
        h0c = h0.float().contiguous() if h0 is not None else None
        # The states entering each chunk are kept in the input dtype: the products that read them (here and in the
        # backward) take that dtype, and it halves their memory for 16-bit inputs. The passing itself is fp32.
        states = torch.empty(n_chunks, H, P, N, device=device, dtype=dtype)
        _state_pass_fwd_kernel[(n_seq, H, triton.cdiv(P * N, block_s))](
            own, states, decay, h0c, final, first, H, P * N, HAS_H0=h0 is not None, BLOCK_S=block_s, num_warps=4
        )
        Dc = D.contiguous() if D is not None else None
        d_strides = (0, 0) if D is None else ((1, 0) if D.dim() == 1 else (P, 1))
        y = torch.empty(rows, H, P, device=device, dtype=x.dtype)
        _chunk_scan_fwd_kernel[(n_chunks, H, n_pblocks)](
            xk, Bk, Ck, la, w, sign, states, Dc, y, start, length, H, H // G, P, N, *d_strides,
            HAS_D=D is not None, **sizes, **prec, **warps,
        )  # fmt: skip
        last = None
        if negative:
            last = _last_sign(sign, cu)
            final = final * last[:, :, None, None]

        ctx.save_for_backward(xk, Bk, Ck, dt, A, D, h0, la, w, sign, s, step, states, decay, start, length, first, last)
        ctx.shape = (batch, T, H, P, G, N)
        ctx.dtypes = (x.dtype, B.dtype, C.dtype)
        ctx.d_strides, ctx.block_s = d_strides, block_s
        return y.view(batch, T, H, P), final

    @staticmethod
    def backward(ctx, dy, dfinal):
        xk, Bk, Ck, dt, A, D, h0, la, w, sign, s, step, states, decay, start, length, first, last = ctx.saved_tensors
        batch, T, H, P, G, N = ctx.shape
        rows = batch * T
        device, dtype = xk.device, xk.dtype
        n_chunks, n_seq = start.numel(), first.numel() - 1
        sizes = _launch_sizes(P, N, device)
        fp32 = dtype == torch.float32
        prec = {"FP32_PRECISION": "ieee" if fp32 else "tf32", "WIDEN": os.environ.get("TRITON_INTERPRET") == "1"}
        gate_prec = {"GATE_PRECISION": "ieee" if fp32 else "tf32"}
        n_pblocks = triton.cdiv(P, sizes["BLOCK_P"])
        warps_fwd = {"num_warps": TILING.num_warps_fwd, "num_stages": TILING.num_stages}
        warps_bwd = {"num_warps": TILING.num_warps_bwd, "num_stages": TILING.num_stages}

        dyk = dy.to(dtype).reshape(rows, H, P).contiguous()
        if dfinal is not None and last is not None:
            dfinal = dfinal * last[:, :, None, None]  # the kernels' state is P_last times the returned one
        dfinal = dfinal.float().contiguous() if dfinal is not None else None

        # Gradient reaching each chunk's entering state from its outputs; then that of the state leaving it.
        reads = torch.empty(n_chunks, H, P, N, device=device, dtype=torch.float32)
        _chunk_outer_kernel[(n_chunks, H, n_pblocks)](
            dyk, Ck, la, sign, reads, decay, start, length, H, H // G, P, N, FORWARD=False, **sizes, **prec,
            **warps_fwd,
        )  # fmt: skip
        block_s = ctx.block_s
        n_sblocks = triton.cdiv(P * N, block_s)
        through = torch.zeros(n_sblocks, n_chunks, H, device=device, dtype=torch.float32)
        dh0 = torch.empty(n_seq, H, P, N, device=device, dtype=torch.float32)
        dstates = torch.empty(n_chunks, H, P, N, device=device, dtype=dtype)
        _state_pass_bwd_kernel[(n_seq, H, n_sblocks)](
            reads, dstates, states, decay, dfinal, dh0, through, first, H, P * N, n_chunks,
            HAS_DFINAL=dfinal is not None, BLOCK_S=block_s, num_warps=4,
        )  # fmt: skip
        through = through.sum(0).contiguous()

        Dc = D.contiguous() if D is not None else None
        dx = torch.empty(rows, H, P, device=device, dtype=dtype)
        dB = torch.zeros(rows, G, N, device=device, dtype=torch.float32)  # the kernels add each head's part
        dC = torch.zeros(rows, G, N, device=device, dtype=torch.float32)
        dw = torch.empty(rows, H, device=device, dtype=torch.float32)
        gate_out = torch.empty(rows, H, device=device, dtype=torch.float32)
        gate_in = torch.empty(rows, H, device=device, dtype=torch.float32)
        dD_parts = torch.zeros(n_chunks, H, P, device=device, dtype=torch.float32) if D is not None else None
        _chunk_bwd_inputs_kernel[(n_chunks, H)](
            xk, Bk, Ck, dyk, la, w, sign, dstates, Dc, dx, dB, dw, dD_parts, gate_out, start, length,
            H, H // G, P, N, *ctx.d_strides, HAS_D=D is not None, **sizes, **prec, **gate_prec, **warps_bwd,
        )  # fmt: skip
        _chunk_bwd_outputs_kernel[(n_chunks, H)](
            xk, Bk, Ck, dyk, la, w, sign, states, through, dC, gate_in, start, length,
            H, H // G, P, N, **sizes, **prec, **gate_prec, **warps_bwd,
        )  # fmt: skip

        # dL/d|a| -> dL/d(dt A): a = 2 exp(s) - 1 (signed, dL/da = s_t dL/d|a|) or exp(s).
        d_abs = gate_in + gate_out
        e = torch.exp(s.reshape(rows, H))
        d_s = (d_abs * step.reshape(rows, H) * (2 * e)) if step is not None else d_abs * e
        dtf = dt.float().reshape(rows, H)
        ddt = d_s * A.float() + dw * sign  # w = P dt
        dA = (d_s * dtf).sum(0)
        x_dtype, B_dtype, C_dtype = ctx.dtypes
        grads_B = dB.view(batch, T, G, N).to(B_dtype)
        grads_C = dC.view(batch, T, G, N).to(C_dtype)
        dD = None
        if D is not None:
            dD = dD_parts.sum(0)
            dD = (dD.sum(1) if D.dim() == 1 else dD).to(D.dtype)
        return (
            dx.view(batch, T, H, P).to(x_dtype),
            ddt.view(batch, T, H).to(dt.dtype),
            dA.to(A.dtype),
            grads_B,
            grads_C,
            dD,
            dh0.to(h0.dtype) if h0 is not None else None,
            None,
            None,
        )
