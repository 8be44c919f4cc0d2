"""Fused Triton selective scan (Mamba-1) with an optional signed gate ``2 exp(dt A) - 1``.

Shapes (batch-first, as in :func:`selective_scan_naive`, the specification):

- ``x, dt, z``: ``[batch, T, d_inner]``; ``A``: ``[d_inner, N]``; ``B, C``: ``[batch, T, N]``; ``D``: ``[d_inner]``;
- ``initial_state`` and the final state: ``[n_seq, d_inner, N]`` with ``n_seq = batch``, or the number of
  packed sequences when ``cu_seqlens`` (``[n_seq + 1]`` offsets, ``batch == 1``) is given.

Inputs may be bf16, fp16 or fp32 (each tensor its own dtype); gates, states and every accumulation are fp32.
``y`` comes back in ``x.dtype``, the final state in fp32, and every gradient in its input's dtype.

Algorithm. One program owns one sequence (a batch row or a packed sequence) and ``BLOCK_D`` channels with all
``N`` state entries, and walks time in tiles of ``BLOCK_T`` steps. Inside a tile the recurrence
``h_t = a_t h_{t-1} + u_t`` is a ``tl.associative_scan`` over (gate, input) pairs along time: products and sums
only, so it is exact in sign (no ``log a``) and at ``a = 0``. The state carried between tiles enters the scan
as the first tile row's input. The forward stores the state every ``CHUNK`` steps when gradients are needed.
The backward walks the chunks from the end: it recomputes the tile-start states of one chunk from its
checkpoint into a small per-program scratch buffer, then runs the tiles in reverse, each with a forward scan
for ``h_{t-1}`` and a reverse scan for ``g_t = dL/dh_t = dy_t C_t + a_{t+1} g_{t+1}``. Memory is therefore
``O(T * d_inner)`` for the saved inputs plus ``T / CHUNK`` states, never all ``T`` states.

``dB`` and ``dC`` reduce over channels, which several programs own, so they are accumulated with fp32 atomics
(as mamba_ssm's CUDA backward does); ``dA`` and ``D``'s gradient reduce over time inside a program and over
sequences in torch. ``negative_eigvals`` is a compile-time flag of the same kernels: the gate is
``2 exp(s) - 1`` with ``s = dt A``, and its derivative is computed directly as ``2 exp(s)`` (``= a + 1``,
without the cancellation of ``a + 1`` near ``a = -1``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Steps between stored states. A multiple of the tile length; the backward recomputes at most CHUNK steps.
CHUNK = 64


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2. Associative, not commutative.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _gate(s, NEGATIVE_EIGVALS: tl.constexpr):
    """Gate ``a`` and ``da/ds`` for ``s = dt * A``."""
    e = tl.exp(s)
    if NEGATIVE_EIGVALS:
        return 2.0 * e - 1.0, 2.0 * e
    else:
        return e, e


@triton.jit
def _softplus(v):
    """torch's softplus: ``v`` above 20, else ``log(1 + exp(v))``, with ``log1p`` accurate for small ``exp(v)``."""
    e = tl.exp(tl.minimum(v, 20.0))
    u = 1.0 + e
    # log1p(e) = log(u) * e / (u - 1) corrects the rounding of 1 + e (exact where u == 1: then log1p(e) = e).
    lp = tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    return tl.where(v > 20.0, v, lp)


@triton.jit
def _step_size(raw, bias, mask, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr):
    """Effective ``dt`` (``softplus(raw + bias)``, each part if asked for) and ``d dt / d raw``; 0 where masked,
    so rows past a sequence's end keep gate 1 and input 0."""
    v = raw
    if HAS_DT_BIAS:
        v = v + bias
    if DT_SOFTPLUS:
        dt = _softplus(v)
        ddt = tl.where(v > 20.0, 1.0, tl.sigmoid(v))
    else:
        dt = v
        ddt = tl.full(v.shape, 1.0, tl.float32)
    return tl.where(mask, dt, 0.0), tl.where(mask, ddt, 0.0)


@triton.jit
def _seq_bounds(CU, CHUNK_OFF, i_n, T, IS_VARLEN: tl.constexpr, CHUNK_T: tl.constexpr):
    """First row, length and first checkpoint index of sequence ``i_n`` in the flattened ``[rows, ...]`` layout."""
    if IS_VARLEN:
        bos = tl.load(CU + i_n).to(tl.int64)
        eos = tl.load(CU + i_n + 1).to(tl.int64)
        c0 = tl.load(CHUNK_OFF + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        c0 = i_n.to(tl.int64) * tl.cdiv(T, CHUNK_T)
    return bos, eos - bos, c0


@triton.jit
def _tile_states(
    X,
    DT,
    Bm,
    A_blk,
    dtb_blk,
    h,
    bos,
    t0,
    L,
    o_d,
    m_d,
    o_n,
    m_n,
    DIM,
    NST,
    NEGATIVE_EIGVALS: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr,
    DT_SOFTPLUS: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """States ``h_t`` of the tile starting at relative step ``t0`` from the state ``h`` before it.

    Rows past the sequence end load ``dt = 0``, i.e. gate 1 and input 0, so they carry the last state.
    Returns ``(hs [BLOCK_T, BLOCK_D, BLOCK_N], dt [BLOCK_T, BLOCK_D], x [BLOCK_T, BLOCK_D])``.
    """
    r = tl.arange(0, BLOCK_T)
    t = t0 + r
    m_t = t < L
    rows = bos + t
    m_td = m_t[:, None] & m_d[None, :]
    x = tl.load(X + rows[:, None] * DIM + o_d[None, :], mask=m_td, other=0.0).to(tl.float32)
    dt = tl.load(DT + rows[:, None] * DIM + o_d[None, :], mask=m_td, other=0.0).to(tl.float32)
    dt, _ = _step_size(dt, dtb_blk[None, :], m_td, HAS_DT_BIAS, DT_SOFTPLUS)
    b = tl.load(Bm + rows[:, None] * NST + o_n[None, :], mask=m_t[:, None] & m_n[None, :], other=0.0).to(tl.float32)
    a, _ = _gate(dt[:, :, None] * A_blk[None, :, :], NEGATIVE_EIGVALS)
    u = (dt * x)[:, :, None] * b[:, None, :]
    u = tl.where(r[:, None, None] == 0, u + a * h[None, :, :], u)
    _, hs = tl.associative_scan((a, u), 0, _combine)
    return hs, dt, x


@triton.jit
def _last_row(v, BLOCK_T: tl.constexpr):
    r = tl.arange(0, BLOCK_T)
    return tl.sum(tl.where(r[:, None, None] == BLOCK_T - 1, v, 0.0), axis=0)


@triton.jit(do_not_specialize=["T"])
def _selective_scan_fwd_kernel(
    X,
    DT,
    DTB,
    A,
    Bm,
    Cm,
    Dv,
    Z,
    Y,
    H0,
    HT,
    CKPT,
    CU,
    CHUNK_OFF,
    T,
    DIM,
    NST,
    NEGATIVE_EIGVALS: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr,
    DT_SOFTPLUS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    STORE_CKPT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TILES_PER_CHUNK: tl.constexpr,
):
    i_d = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, L, c0 = _seq_bounds(CU, CHUNK_OFF, i_n, T, IS_VARLEN, BLOCK_T * TILES_PER_CHUNK)

    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < NST
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * NST + o_n[None, :]
    A_blk = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_D:
        d_blk = tl.load(Dv + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dtb_blk = tl.load(DTB + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        dtb_blk = tl.zeros([BLOCK_D], dtype=tl.float32)
    state_base = i_n.to(tl.int64) * DIM * NST
    if HAS_H0:
        h = tl.load(H0 + state_base + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    r = tl.arange(0, BLOCK_T)
    n_tiles = tl.cdiv(L, BLOCK_T)
    for i in range(0, n_tiles):
        if STORE_CKPT:
            if i % TILES_PER_CHUNK == 0:
                tl.store(CKPT + (c0 + i // TILES_PER_CHUNK) * DIM * NST + o_dn, h, mask=m_dn)
        t0 = i * BLOCK_T
        hs, dt, x = _tile_states(
            X,
            DT,
            Bm,
            A_blk,
            dtb_blk,
            h,
            bos,
            t0,
            L,
            o_d,
            m_d,
            o_n,
            m_n,
            DIM,
            NST,
            NEGATIVE_EIGVALS,
            HAS_DT_BIAS,
            DT_SOFTPLUS,
            BLOCK_T,
        )
        t = t0 + r
        m_t = t < L
        rows = bos + t
        m_td = m_t[:, None] & m_d[None, :]
        c = tl.load(Cm + rows[:, None] * NST + o_n[None, :], mask=m_t[:, None] & m_n[None, :], other=0.0).to(tl.float32)
        y = tl.sum(hs * c[:, None, :], axis=2)
        if HAS_D:
            y += d_blk[None, :] * x
        if HAS_Z:
            zz = tl.load(Z + rows[:, None] * DIM + o_d[None, :], mask=m_td, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(Y + rows[:, None] * DIM + o_d[None, :], y.to(Y.dtype.element_ty), mask=m_td)
        h = _last_row(hs, BLOCK_T)
    if STORE_HT:
        tl.store(HT + state_base + o_dn, h, mask=m_dn)


@triton.jit(do_not_specialize=["T"])
def _selective_scan_bwd_kernel(
    X,
    DT,
    DTB,
    A,
    Bm,
    Cm,
    Dv,
    Z,
    DY,
    DHT,
    CKPT,
    SCRATCH,
    CU,
    CHUNK_OFF,
    DX,
    DDT,
    DZ,
    DB,
    DC,
    DA_PART,
    DD_PART,
    DDTB_PART,
    DH0,
    T,
    DIM,
    NST,
    NEGATIVE_EIGVALS: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr,
    DT_SOFTPLUS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TILES_PER_CHUNK: tl.constexpr,
):
    i_d = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, L, c0 = _seq_bounds(CU, CHUNK_OFF, i_n, T, IS_VARLEN, BLOCK_T * TILES_PER_CHUNK)

    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < NST
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * NST + o_n[None, :]
    A_blk = tl.load(A + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    if HAS_D:
        d_blk = tl.load(Dv + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dtb_blk = tl.load(DTB + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        dtb_blk = tl.zeros([BLOCK_D], dtype=tl.float32)
    state_base = i_n.to(tl.int64) * DIM * NST
    # This program's scratch rows hold the tile-start states of one chunk: [TILES_PER_CHUNK, BLOCK_D, BLOCK_N].
    o_blk = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + o_n[None, :]
    scratch = SCRATCH + (i_n.to(tl.int64) * tl.num_programs(0) + i_d) * (TILES_PER_CHUNK * BLOCK_D * BLOCK_N)

    # dh: dL/d(state at the end of the part not yet processed), flowing backwards.
    if HAS_DHT:
        dh = tl.load(DHT + state_base + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dDTB_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    r = tl.arange(0, BLOCK_T)
    first_row = r[:, None, None] == 0
    n_tiles = tl.cdiv(L, BLOCK_T)
    n_chunks = tl.cdiv(n_tiles, TILES_PER_CHUNK)
    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        first_tile = c * TILES_PER_CHUNK
        nt = tl.minimum(n_tiles - first_tile, TILES_PER_CHUNK)
        h = tl.load(CKPT + (c0 + c) * DIM * NST + o_dn, mask=m_dn, other=0.0)
        tl.store(scratch + o_blk, h)
        for j in range(1, nt):
            hs, _, _ = _tile_states(
                X,
                DT,
                Bm,
                A_blk,
                dtb_blk,
                h,
                bos,
                (first_tile + j - 1) * BLOCK_T,
                L,
                o_d,
                m_d,
                o_n,
                m_n,
                DIM,
                NST,
                NEGATIVE_EIGVALS,
                HAS_DT_BIAS,
                DT_SOFTPLUS,
                BLOCK_T,
            )
            h = _last_row(hs, BLOCK_T)
            tl.store(scratch + j * (BLOCK_D * BLOCK_N) + o_blk, h)
        # The scratch rows are read back by other threads than those that wrote them.
        tl.debug_barrier()
        for jj in range(0, nt):
            j = nt - 1 - jj
            h_start = tl.load(scratch + j * (BLOCK_D * BLOCK_N) + o_blk)
            t = (first_tile + j) * BLOCK_T + r
            m_t = t < L
            rows = bos + t
            m_td = m_t[:, None] & m_d[None, :]
            m_tn = m_t[:, None] & m_n[None, :]
            # Row t - 1 (inside the tile) feeds the scan for h_{t-1}; row t + 1 gives the gate a_{t+1}.
            m_p = m_t & (r > 0)
            m_pd = m_p[:, None] & m_d[None, :]
            m_x = (t + 1 < L) & (r < BLOCK_T - 1)
            o_td = rows[:, None] * DIM + o_d[None, :]
            o_tn = rows[:, None] * NST + o_n[None, :]

            x = tl.load(X + o_td, mask=m_td, other=0.0).to(tl.float32)
            dt = tl.load(DT + o_td, mask=m_td, other=0.0).to(tl.float32)
            dt, d_raw = _step_size(dt, dtb_blk[None, :], m_td, HAS_DT_BIAS, DT_SOFTPLUS)
            b = tl.load(Bm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
            cm = tl.load(Cm + o_tn, mask=m_tn, other=0.0).to(tl.float32)
            dy = tl.load(DY + o_td, mask=m_td, other=0.0).to(tl.float32)
            x_p = tl.load(X + o_td - DIM, mask=m_pd, other=0.0).to(tl.float32)
            dt_p = tl.load(DT + o_td - DIM, mask=m_pd, other=0.0).to(tl.float32)
            b_p = tl.load(Bm + o_tn - NST, mask=m_p[:, None] & m_n[None, :], other=0.0).to(tl.float32)
            dt_x = tl.load(DT + o_td + DIM, mask=m_x[:, None] & m_d[None, :], other=0.0).to(tl.float32)
            dt_p, _ = _step_size(dt_p, dtb_blk[None, :], m_pd, HAS_DT_BIAS, DT_SOFTPLUS)
            dt_x, _ = _step_size(dt_x, dtb_blk[None, :], m_x[:, None] & m_d[None, :], HAS_DT_BIAS, DT_SOFTPLUS)

            a, da = _gate(dt[:, :, None] * A_blk[None, :, :], NEGATIVE_EIGVALS)
            a_p, _ = _gate(dt_p[:, :, None] * A_blk[None, :, :], NEGATIVE_EIGVALS)
            a_x, _ = _gate(dt_x[:, :, None] * A_blk[None, :, :], NEGATIVE_EIGVALS)

            # hp[t] = h_{t-1}: the recurrence on inputs shifted by one step, seeded with the tile-start state.
            u_p = tl.where(first_row, h_start[None, :, :], (dt_p * x_p)[:, :, None] * b_p[:, None, :])
            _, hp = tl.associative_scan((a_p, u_p), 0, _combine)
            dtx = dt * x
            hc = a * hp + dtx[:, :, None] * b[:, None, :]

            if HAS_Z:
                zz = tl.load(Z + o_td, mask=m_td, other=0.0).to(tl.float32)
                sz = tl.sigmoid(zz)
                y_pre = tl.sum(hc * cm[:, None, :], axis=2)
                if HAS_D:
                    y_pre += d_blk[None, :] * x
                dz = dy * y_pre * sz * (1.0 + zz * (1.0 - sz))
                tl.store(DZ + o_td, dz.to(DZ.dtype.element_ty), mask=m_td)
                dys = dy * zz * sz
            else:
                dys = dy

            tl.atomic_add(DC + o_tn, tl.sum(dys[:, :, None] * hc, axis=1), mask=m_tn)
            # g_t = dys_t C_t + a_{t+1} g_{t+1}; the gradient from later tiles enters at the last row.
            gin = dys[:, :, None] * cm[:, None, :]
            gin = tl.where(r[:, None, None] == BLOCK_T - 1, gin + dh[None, :, :], gin)
            _, g = tl.associative_scan((a_x, gin), 0, _combine, reverse=True)

            d_dtx = tl.sum(g * b[:, None, :], axis=2)
            tl.atomic_add(DB + o_tn, tl.sum(g * dtx[:, :, None], axis=1), mask=m_tn)
            w = g * hp * da  # dL/ds_t with s = dt * A
            ddt = tl.sum(w * A_blk[None, :, :], axis=2) + d_dtx * x
            dx = d_dtx * dt
            if HAS_D:
                dx += dys * d_blk[None, :]
                dD_acc += tl.sum(dys * x, axis=0)
            tl.store(DX + o_td, dx.to(DX.dtype.element_ty), mask=m_td)
            ddt = ddt * d_raw  # through softplus and bias to the raw input; 0 on rows past the end
            if HAS_DT_BIAS:
                dDTB_acc += tl.sum(ddt, axis=0)
            tl.store(DDT + o_td, ddt.to(DDT.dtype.element_ty), mask=m_td)
            dA_acc += tl.sum(w * dt[:, :, None], axis=0)
            dh = tl.sum(tl.where(first_row, a * g, 0.0), axis=0)
        # The next chunk overwrites the scratch rows read above.
        tl.debug_barrier()

    tl.store(DA_PART + state_base + o_dn, dA_acc, mask=m_dn)
    if HAS_D:
        tl.store(DD_PART + i_n.to(tl.int64) * DIM + o_d, dD_acc, mask=m_d)
    if HAS_DT_BIAS:
        tl.store(DDTB_PART + i_n.to(tl.int64) * DIM + o_d, dDTB_acc, mask=m_d)
    if STORE_DH0:
        tl.store(DH0 + state_base + o_dn, dh, mask=m_dn)


def _config(d_inner: int, n_state: int, device: torch.device) -> dict[str, int]:
    """Tile sizes and warps for the forward and the backward kernel.

    Compiled offline for sm_90 (``triton.compile`` with a CUDA target, bf16 inputs): the forward's
    ``[16, BLOCK_D, BLOCK_N]`` tiles of 4096 values take 124-128 registers at 4 warps for N = 16 (162 for N = 4,
    233 for N = 64), without spills. The backward keeps more tiles alive; at 8 warps it fits without spills
    for N = 4 (2048-value tiles), 8 and 16 (245 registers), and spills a little for N >= 32. N = 16 is the
    configuration the models use.
    """
    block_t = 16
    block_n = triton.next_power_of_2(n_state)
    block_d = max(1, min(64, 4096 // (block_t * block_n)))
    block_d_bwd = max(1, min(64, 2048 // (block_t * block_n))) if block_n < 8 else block_d
    if device.type != "cuda":
        # Under the CPU interpreter every tile element costs Python work: do not pad tiny test widths.
        cap = triton.next_power_of_2(d_inner)
        block_d, block_d_bwd = min(block_d, cap), min(block_d_bwd, cap)
    return {
        "BLOCK_T": block_t,
        "BLOCK_N": block_n,
        "BLOCK_D": block_d,
        "num_warps": 4,
        "BLOCK_D_BWD": block_d_bwd,
        "num_warps_bwd": 8,
    }


def _chunk_offsets(cu_seqlens: torch.Tensor, total: int, chunk: int) -> tuple[torch.Tensor, int]:
    """First checkpoint index of each packed sequence, and a bound on the checkpoint count without a host sync:
    each sequence adds at most one partly filled chunk to ``ceil(total / chunk)``."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    n = (lens + chunk - 1) // chunk
    return torch.cumsum(n, 0) - n, triton.cdiv(total, chunk) + cu_seqlens.numel() - 1


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, dt, A, B, C, D, z, h0, dt_bias, cu_seqlens, negative: bool, dt_softplus: bool, output_final_state: bool
    ):
        batch, T, d = x.shape
        N = A.shape[1]
        is_varlen = cu_seqlens is not None
        n_seq = cu_seqlens.numel() - 1 if is_varlen else batch
        cfg = _config(d, N, x.device)
        block_t, block_d, block_n = cfg["BLOCK_T"], cfg["BLOCK_D"], cfg["BLOCK_N"]
        tiles_per_chunk = CHUNK // block_t
        x, dt, B, C = (t.contiguous() for t in (x, dt, B, C))
        A = A.contiguous()
        D = D.contiguous() if D is not None else None
        z = z.contiguous() if z is not None else None
        h0 = h0.contiguous() if h0 is not None else None
        dt_bias = dt_bias.contiguous() if dt_bias is not None else None

        store_ckpt = any(ctx.needs_input_grad[:9])
        if is_varlen:
            chunk_off, n_ckpt = _chunk_offsets(cu_seqlens, T, CHUNK)
        else:
            chunk_off = None
            n_ckpt = n_seq * triton.cdiv(T, CHUNK)
        ckpt = x.new_empty((n_ckpt, d, N), dtype=torch.float32) if store_ckpt else None
        y = torch.empty_like(x)
        hT = x.new_empty((n_seq, d, N), dtype=torch.float32) if output_final_state else None
        grid = (triton.cdiv(d, block_d), n_seq)
        _selective_scan_fwd_kernel[grid](
            x,
            dt,
            dt_bias,
            A,
            B,
            C,
            D,
            z,
            y,
            h0,
            hT,
            ckpt,
            cu_seqlens,
            chunk_off,
            T,
            d,
            N,
            NEGATIVE_EIGVALS=negative,
            HAS_DT_BIAS=dt_bias is not None,
            DT_SOFTPLUS=dt_softplus,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_H0=h0 is not None,
            STORE_HT=output_final_state,
            STORE_CKPT=store_ckpt,
            IS_VARLEN=is_varlen,
            BLOCK_T=block_t,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            TILES_PER_CHUNK=tiles_per_chunk,
            num_warps=cfg["num_warps"],
        )
        ctx.save_for_backward(x, dt, A, B, C, D, z, h0, dt_bias, ckpt, cu_seqlens, chunk_off)
        ctx.negative, ctx.dt_softplus = negative, dt_softplus
        ctx.cfg = (block_t, cfg["BLOCK_D_BWD"], block_n, cfg["num_warps_bwd"])
        ctx.set_materialize_grads(False)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, A, B, C, D, z, h0, dt_bias, ckpt, cu_seqlens, chunk_off = ctx.saved_tensors
        block_t, block_d, block_n, num_warps = ctx.cfg
        batch, T, d = x.shape
        N = A.shape[1]
        is_varlen = cu_seqlens is not None
        n_seq = cu_seqlens.numel() - 1 if is_varlen else batch
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        n_dblk = triton.cdiv(d, block_d)
        tiles_per_chunk = CHUNK // block_t

        dx, ddt = torch.empty_like(x), torch.empty_like(dt)
        dz = torch.empty_like(z) if z is not None else None
        dB = torch.zeros(B.shape, dtype=torch.float32, device=x.device)
        dC = torch.zeros(C.shape, dtype=torch.float32, device=x.device)
        dA_part = x.new_empty((n_seq, d, N), dtype=torch.float32)
        dD_part = x.new_empty((n_seq, d), dtype=torch.float32) if D is not None else None
        dtb_part = x.new_empty((n_seq, d), dtype=torch.float32) if dt_bias is not None else None
        dh0 = x.new_empty((n_seq, d, N), dtype=torch.float32) if h0 is not None else None
        scratch = x.new_empty((n_seq, n_dblk, tiles_per_chunk, block_d, block_n), dtype=torch.float32)
        _selective_scan_bwd_kernel[(n_dblk, n_seq)](
            x,
            dt,
            dt_bias,
            A,
            B,
            C,
            D,
            z,
            dy,
            dhT,
            ckpt,
            scratch,
            cu_seqlens,
            chunk_off,
            dx,
            ddt,
            dz,
            dB,
            dC,
            dA_part,
            dD_part,
            dtb_part,
            dh0,
            T,
            d,
            N,
            NEGATIVE_EIGVALS=ctx.negative,
            HAS_DT_BIAS=dt_bias is not None,
            DT_SOFTPLUS=ctx.dt_softplus,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_DHT=dhT is not None,
            STORE_DH0=h0 is not None,
            IS_VARLEN=is_varlen,
            BLOCK_T=block_t,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            TILES_PER_CHUNK=tiles_per_chunk,
            num_warps=num_warps,
        )
        dA = dA_part.sum(0).to(A.dtype)
        dD = dD_part.sum(0).to(D.dtype) if D is not None else None
        return (
            dx,
            ddt,
            dA,
            dB.to(B.dtype),
            dC.to(C.dtype),
            dD,
            dz,
            dh0.to(h0.dtype) if h0 is not None else None,
            dtb_part.sum(0).to(dt_bias.dtype) if dt_bias is not None else None,
            None,
            None,
            None,
            None,
        )


def selective_scan_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    *,
    negative_eigvals: bool = False,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fused Triton selective scan; same contract as :func:`selective_scan_naive`.

    ``dt_bias`` (``[d_inner]``) and ``dt_softplus`` are applied inside the kernels (forward, and again in the
    backward), so ``dt`` can be the raw projection in its own dtype.

    Shapes: ``x, dt, z: [batch, T, d_inner]``, ``A: [d_inner, N]``, ``B, C: [batch, T, N]``, ``D: [d_inner]``,
    ``initial_state`` and the returned state: ``[n_seq, d_inner, N]`` (``n_seq = batch``, or the number of packed
    sequences with ``cu_seqlens``, which requires ``batch == 1``). bf16, fp16 or fp32 inputs; fp32 state.
    Returns ``(y [batch, T, d_inner] in x.dtype, final_state fp32 or None)``. Differentiable in every tensor input.
    """
    batch, T, d = x.shape
    if T == 0:
        n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
        h = (
            initial_state.float()
            if initial_state is not None
            else x.new_zeros((n_seq, d, A.shape[1]), dtype=torch.float32)
        )
        return x.new_zeros((batch, 0, d)), (h if output_final_state else None)
    y, hT = _SelectiveScanTriton.apply(
        x,
        dt,
        A,
        B,
        C,
        D,
        z,
        initial_state,
        dt_bias,
        cu_seqlens,
        bool(negative_eigvals),
        bool(dt_softplus),
        bool(output_final_state),
    )
    return y, hT
