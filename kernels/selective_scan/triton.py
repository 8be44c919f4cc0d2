"""Fused Triton selective scan (Mamba-1) with an optional signed gate ``2 exp(dt A) - 1``.

Shapes (batch-first, as in :func:`selective_scan_naive`, the specification):

- ``x, dt, z``: ``[batch, T, d_inner]``; ``A``: ``[d_inner, N]``; ``B, C``: ``[batch, T, N]``;
  ``D, dt_bias``: ``[d_inner]``;
- ``initial_state`` and the final state: ``[n_seq, d_inner, N]`` with ``n_seq = batch``, or the number of
  packed sequences when ``cu_seqlens`` (``[n_seq + 1]`` offsets, ``batch == 1``) is given.

Inputs may be bf16, fp16 or fp32 (each tensor its own dtype); gates, states and every accumulation are fp32.
``y`` comes back in ``x.dtype``, the final state in fp32, and every gradient in its input's dtype. ``dt`` may be
the raw projection: ``dt_bias`` and ``softplus`` (``dt_softplus``) are applied inside both kernels.

Layout. One program owns one sequence and ``BLOCK_D = 32 * num_warps`` channels, one channel per thread, and
walks time in tiles of ``BLOCK_T`` steps. Tiles are ``[BLOCK_T, BLOCK_N, BLOCK_D]`` with the channel the
fastest (distributed) axis, so each thread holds the whole ``BLOCK_T x N`` block of its channel: the scan along
time (``tl.associative_scan``, lowered to a serial in-thread loop), the sum over ``N`` for ``y`` and the tile's
last row are all in-thread, with no shuffles (shared memory only carries the loaded rows into that layout).
``x``, ``dt``, ``z`` (and ``dy``) are loaded one row of 32 consecutive channels per warp (coalesced); the next
tile's rows are loaded before the current tile is computed (prefetch), so their latency overlaps the tile's
arithmetic. ``B`` and ``C`` rows are the same for every channel: the wrapper passes fp32 copies (N / d_inner of
``x``'s size), so no thread converts them, and the compiler broadcasts them through shared memory.

Recurrence ``h_t = a_t h_{t-1} + u_t`` with ``u_t = dt_t x_t B_t``: inside a tile a scan over (gate, input)
pairs, products and sums only, so exact in sign (no ``log a``) and at ``a = 0``. The state entering a tile is
added to the first row's input (``u_0 + a_0 h_prev``): with the time axis in-thread the row index of every
register is a compile-time constant, so this touches only the first row, and the scan's cumulative gate
product is dead code (never computed). Carrying ``h_scan + cumprod(a) * h_prev`` instead compiled to 12.0
SASS instructions per (t, d, n) against 10.5 for the seeded row (sm_90, N = 16, signed gate; measured before
the sums over N became serial chains, which brought the seeded row to 9.9).

Backward. The forward stores the state every ``CHUNK`` steps when gradients are needed. The backward walks the
chunks from the end: it replays one chunk from its checkpoint to get each tile's start state (kept in a small
per-program scratch buffer, in the computing layout: one channel per thread, so neither pass converts a state
through shared memory), then runs that chunk's tiles in reverse. On a GPU these tiles are one step long
(``BLOCK_T_BWD``): only a sequence's last tile can be partial, so one-step tiles and the replay (which never
reads its chunk's last tile) need no row masks. Per tile it computes ``e = exp(dt A)`` once; the gate is ``e``
or ``2 e - 1`` and its derivative ``e`` or ``2 e`` (no cancellation of ``a + 1`` near ``a = -1``), the factor 2
applied to the sums (``dt``'s and ``A``'s gradients) instead of every element. One forward scan gives ``h_t``
and, through a second pair in the scan element (the element's map without its last step), ``h_{t-1}`` with no
shifted reload; for the ``[0, 1]`` range ``a_t h_{t-1} = h_t - u_t`` is used instead, as mamba_ssm does. The
gradient ``g_t = dL/dh_t = dy_t C_t + a_{t+1} g_{t+1}`` comes from one reverse scan of ``G_t = a_t g_t`` (whose
gate is ``a_t``, not the shifted ``a_{t+1}``), with ``g_t = dy_t C_t + G_{t+1}`` read from the same exclusive
pair; a one-step tile needs no scan. Sums over ``N`` are serial multiply-add chains. ``dB`` and ``dC`` sum over
channels, which many programs own: each program first sums groups of ``RED_LANES`` neighbouring channels with
in-warp shuffles, then adds each group's value with one relaxed fp32 atomic. ``dA``, ``D``'s and ``dt_bias``'s
gradients reduce over time inside the thread and over sequences in torch. Memory: ``O(T * d_inner)`` saved
inputs plus ``T / CHUNK`` states.

Roofline (H100/H200, sm_90). Per (t, d, n) element the forward needs one exponential (MUFU.EX2, issued at 16
per SM per clock: 132 SMs x 16 x 1.83 GHz ~ 3.9e12/s, the figure of the FlashAttention-3 paper) and about 4-5
FP32 FMA-pipe operations (the ``dt A`` product, the signed map, ``u``, the scan step, ``y``'s multiply-add;
128 per SM per clock, 8x the MUFU rate), so the MUFU bound is the binding arithmetic one. Per (t, d) it moves
``x, dt, z, y`` (4 x 2 bytes in bf16); ``B`` and ``C`` are shared by all channels. At B 8, T 2048,
d_inner 2048, N 16:

- bytes: 8 * 2048 * 2048 * 8 B = 268 MB (+ checkpoints 8 * 32 * 2048 * 16 * 4 B = 34 MB in training) -> at
  4.8 TB/s (H200) 56-63 us, at 3.35 TB/s (H100) 80-90 us;
- exponentials: 8 * 2048 * 2048 * 16 = 537M -> 138 us at 3.9e12/s;
- so the forward is bound by the special-function unit, not by memory: roofline ``max(bytes / BW,
  exps / SFU) = 138 us``, about 41% of HBM bandwidth at best. The backward does two exponentials per element
  (replay and reverse pass), so its roofline is 276 us; it moves ``x, dt, z, dy`` in, ``dx, ddt, dz`` out and
  ``x, dt`` again for the replay (9 x 2 B per (t, d)): 604 MB, 126 us at 4.8 TB/s. The scratch adds each
  step's state, written by the replay and read back by the reverse pass: 2 x 64 B per (t, d) at N = 16, 4.3 GB.
  Each program touches 128 KB of it per chunk; if the resident programs' chunks do not stay in the 50 MB L2,
  this traffic (0.9 ms at 4.8 TB/s), not the exponentials, bounds the backward (a smaller ``CHUNK`` shrinks
  the working set at the cost of more checkpoints).

Each thread's serial dependence is one multiply-add per step and state; the parallelism is ``batch * d_inner``
threads (16K at the shape above, 4 warps per SM), so the per-thread ILP over ``N`` and the prefetch carry the
latency hiding; whether that reaches the roofline is for a GPU run to show. Static instruction counts:
``python benchmarks/kernel_static.py --only selective_scan``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Steps between stored states. A multiple of the tile length; the backward replays at most CHUNK steps.
CHUNK = 64
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2. Associative, not commutative. In a reverse scan the
    # later segment is applied first, so the same function serves both directions.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_keep_previous(a1, b1, p1, q1, a2, b2, p2, q2):
    # (a, b): the segment's map h -> a h + b; (p, q): the same segment's map without its last-applied step.
    # A single step is (a_t, u_t, 1, -0), so the scan gives the state after step t and, in (p, q), before it.
    return a1 * a2, a2 * b1 + b2, a1 * p2, p2 * b1 + q2


@triton.jit
def _sigmoid(v):
    """``1 / (1 + exp(-v))`` with the fast reciprocal: 9 SASS instructions against 12 for ``tl.sigmoid``."""
    return 1.0 / (1.0 + tl.exp2(v * -LOG2E))


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
        ddt = tl.where(v > 20.0, 1.0, _sigmoid(v))
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
def _load_rows(P, bos, t0, L, o_d, m_d, DIM, BLOCK_T: tl.constexpr, FULL: tl.constexpr = False):
    """Rows ``t0 .. t0 + BLOCK_T`` of a ``[rows, DIM]`` tensor at channels ``o_d`` as fp32 ``[BLOCK_T, BLOCK_D]``;
    0 past the sequence end.

    ``FULL``: the caller knows every row is inside the sequence. Then nothing is masked: channels past ``DIM``
    read channel ``DIM - 1`` (no zeroing instruction per load), and the caller must not rely on their values.
    """
    t = t0 + tl.arange(0, BLOCK_T)
    if FULL:
        return tl.load(P + (bos + t)[:, None] * DIM + tl.minimum(o_d, DIM - 1)[None, :]).to(tl.float32)
    m = (t < L)[:, None] & m_d[None, :]
    return tl.load(P + (bos + t)[:, None] * DIM + o_d[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _load_bc(P, bos, t0, L, o_n, m_n, NST, BLOCK_T: tl.constexpr, EVEN_N: tl.constexpr, FULL: tl.constexpr = False):
    """Rows of ``B`` or ``C`` as fp32 ``[BLOCK_T, BLOCK_N]`` (the same for every channel).

    Rows past the sequence end repeat its last row instead of being masked (no zeroing of 2 x BLOCK_T x BLOCK_N
    registers per thread and tile): every use of them is multiplied by a zero (``dt``, ``dy``) or masked on
    store. Padded state columns (``N < BLOCK_N``) are masked to 0, since they feed ``y``. ``FULL``: every row is
    inside the sequence (no clamp).
    """
    t = t0 + tl.arange(0, BLOCK_T)
    if not FULL:
        t = tl.minimum(t, L - 1)
    ptr = P + (bos + t)[:, None] * NST + o_n[None, :]
    if EVEN_N:
        return tl.load(ptr).to(tl.float32)
    else:
        return tl.load(ptr, mask=m_n[None, :], other=0.0).to(tl.float32)


@triton.jit
def _gates(dt, A2, NEGATIVE_EIGVALS: tl.constexpr):
    """Gate ``a`` and ``da/ds`` (``s = dt A``) as ``[BLOCK_T, BLOCK_N, BLOCK_D]`` from one exponential per element;
    ``A2 = A log2(e)`` so that ``exp(dt A) = exp2(dt A2)``."""
    e = tl.exp2(dt[:, None, :] * A2[None, :, :])
    if NEGATIVE_EIGVALS:
        return 2.0 * e - 1.0, 2.0 * e
    else:
        return e, e


@triton.jit
def _row(v, i: tl.constexpr, BLOCK_T: tl.constexpr):
    """Row ``i`` of ``v [BLOCK_T, ...]``. The time axis is in-thread, so the select is resolved at compile time;
    the other rows are -0.0, which the sum drops without an instruction (x + -0.0 == x, unlike x + 0.0)."""
    r = tl.arange(0, BLOCK_T)[:, None, None]
    return tl.sum(tl.where(r == i, v, -0.0), axis=0)


@triton.jit
def _sum_states(v):
    """``sum(v, axis=1)`` over the in-thread state axis of ``v [BLOCK_T, BLOCK_N, BLOCK_D]`` as one serial chain.

    ``tl.sum`` adds in-thread values as a tree: 8 products, 8 multiply-adds and 7 adds at N = 16. A serial
    scan fuses every product into its add (16 instructions); only its last column is kept (the rest folds away,
    as in :func:`_row`). ``tl.cumsum`` rather than a scan with an own add: the CPU interpreter runs it in numpy.
    """
    BLOCK_N: tl.constexpr = v.shape[1]
    k = tl.arange(0, BLOCK_N)[None, :, None]
    return tl.sum(tl.where(k == BLOCK_N - 1, tl.cumsum(v, axis=1), -0.0), axis=1)


@triton.jit
def _add_over_channels(P, o_tn, m_tn, v, RED_LANES: tl.constexpr):
    """``P[t, n] += sum_d v[t, n, d]`` for ``v [BLOCK_T, BLOCK_N, BLOCK_D]``: summed over groups of ``RED_LANES``
    neighbouring channels (lanes) first, then one fp32 atomic per (t, n) and group.

    A full in-warp sum costs log2(32) = 5 shuffles and adds per value and thread; stopping at ``RED_LANES`` lanes
    trades the last levels for more atomics (``BLOCK_D / RED_LANES`` per (t, n), spread over time).
    """
    BLOCK_T: tl.constexpr = v.shape[0]
    BLOCK_N: tl.constexpr = v.shape[1]
    BLOCK_D: tl.constexpr = v.shape[2]
    if RED_LANES >= BLOCK_D:
        tl.atomic_add(P + o_tn, tl.sum(v, axis=2), mask=m_tn, sem="relaxed")
    else:
        G: tl.constexpr = BLOCK_D // RED_LANES
        part = tl.sum(tl.reshape(v, [BLOCK_T, BLOCK_N, G, RED_LANES]), axis=3)
        ptr = tl.broadcast_to((P + o_tn)[:, :, None], [BLOCK_T, BLOCK_N, G])
        if m_tn is None:
            tl.atomic_add(ptr, part, sem="relaxed")
        else:
            mask = tl.broadcast_to(m_tn[:, :, None], [BLOCK_T, BLOCK_N, G])
            tl.atomic_add(ptr, part, mask=mask, sem="relaxed")


@triton.jit
def _tile_end_state(x, dt, b, A2, h, NEGATIVE_EIGVALS: tl.constexpr, BLOCK_T: tl.constexpr):
    """The state after a tile, from the state ``h [BLOCK_N, BLOCK_D]`` before it (the backward's replay)."""
    r = tl.arange(0, BLOCK_T)[:, None, None]
    a, _ = _gates(dt, A2, NEGATIVE_EIGVALS)
    u = (dt * x)[:, None, :] * b[:, :, None]
    u = tl.where(r == 0, u + a * h[None, :, :], u)
    _, hs = tl.associative_scan((a, u), 0, _combine)
    return _row(hs, BLOCK_T - 1, BLOCK_T)


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
    EVEN_N: tl.constexpr,
    TILES_PER_CHUNK: tl.constexpr,
):
    i_d = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, L, c0 = _seq_bounds(CU, CHUNK_OFF, i_n, T, IS_VARLEN, BLOCK_T * TILES_PER_CHUNK)

    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < NST
    # States and A are [d, N] in memory; in registers [BLOCK_N, BLOCK_D], channels across the threads.
    o_nd = o_d[None, :] * NST + o_n[:, None]
    m_nd = m_n[:, None] & m_d[None, :]
    A2 = tl.load(A + o_nd, mask=m_nd, other=0.0).to(tl.float32) * LOG2E
    if HAS_D:
        d_blk = tl.load(Dv + o_d, mask=m_d, other=0.0).to(tl.float32)
    dtb = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DT_BIAS:
        dtb = tl.load(DTB + o_d, mask=m_d, other=0.0).to(tl.float32)
    state_base = i_n.to(tl.int64) * DIM * NST
    if HAS_H0:
        h = tl.load(H0 + state_base + o_nd, mask=m_nd, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    r = tl.arange(0, BLOCK_T)
    r3 = r[:, None, None]
    n_tiles = tl.cdiv(L, BLOCK_T)
    # Prefetch: the tile computed in an iteration was loaded in the previous one.
    x_nx = _load_rows(X, bos, 0, L, o_d, m_d, DIM, BLOCK_T)
    dt_nx = _load_rows(DT, bos, 0, L, o_d, m_d, DIM, BLOCK_T)
    if HAS_Z:
        z_nx = _load_rows(Z, bos, 0, L, o_d, m_d, DIM, BLOCK_T)
    for i in range(0, n_tiles):
        t0 = i * BLOCK_T
        x = x_nx
        dt_raw = dt_nx
        x_nx = _load_rows(X, bos, t0 + BLOCK_T, L, o_d, m_d, DIM, BLOCK_T)
        dt_nx = _load_rows(DT, bos, t0 + BLOCK_T, L, o_d, m_d, DIM, BLOCK_T)
        if HAS_Z:
            zz = z_nx
            z_nx = _load_rows(Z, bos, t0 + BLOCK_T, L, o_d, m_d, DIM, BLOCK_T)
        if STORE_CKPT:
            if i % TILES_PER_CHUNK == 0:
                tl.store(CKPT + (c0 + i // TILES_PER_CHUNK) * DIM * NST + o_nd, h, mask=m_nd)
        t = t0 + r
        m_td = (t < L)[:, None] & m_d[None, :]
        dt, _ = _step_size(dt_raw, dtb[None, :], m_td, HAS_DT_BIAS, DT_SOFTPLUS)
        b = _load_bc(Bm, bos, t0, L, o_n, m_n, NST, BLOCK_T, EVEN_N)
        c = _load_bc(Cm, bos, t0, L, o_n, m_n, NST, BLOCK_T, EVEN_N)
        a, _ = _gates(dt, A2, NEGATIVE_EIGVALS)
        u = (dt * x)[:, None, :] * b[:, :, None]
        u = tl.where(r3 == 0, u + a * h[None, :, :], u)
        _, hs = tl.associative_scan((a, u), 0, _combine)
        y = _sum_states(hs * c[:, :, None])
        if HAS_D:
            y += d_blk[None, :] * x
        if HAS_Z:
            y = y * zz * _sigmoid(zz)
        tl.store(Y + (bos + t)[:, None] * DIM + o_d[None, :], y.to(Y.dtype.element_ty), mask=m_td)
        h = _row(hs, BLOCK_T - 1, BLOCK_T)
    if STORE_HT:
        tl.store(HT + state_base + o_nd, h, mask=m_nd)


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
    EVEN_N: tl.constexpr,
    RED_LANES: tl.constexpr,
    TILES_PER_CHUNK: tl.constexpr,
):
    i_d = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, L, c0 = _seq_bounds(CU, CHUNK_OFF, i_n, T, IS_VARLEN, BLOCK_T * TILES_PER_CHUNK)

    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < NST
    o_nd = o_d[None, :] * NST + o_n[:, None]
    m_nd = m_n[:, None] & m_d[None, :]
    # Only A log2(e) stays live (registers): sum_n w A = ln(2) sum_n w A2, one multiply per (t, d).
    A2 = tl.load(A + o_nd, mask=m_nd, other=0.0).to(tl.float32) * LOG2E
    if HAS_D:
        d_blk = tl.load(Dv + o_d, mask=m_d, other=0.0).to(tl.float32)
    dtb = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DT_BIAS:
        dtb = tl.load(DTB + o_d, mask=m_d, other=0.0).to(tl.float32)
    state_base = i_n.to(tl.int64) * DIM * NST
    # This program's scratch rows hold the tile-start states of one chunk: [TILES_PER_CHUNK, BLOCK_N, BLOCK_D],
    # the channels permuted within the row ((d * 5) mod BLOCK_D, a bijection): a warp still touches one 128-byte
    # line per n, but the offsets are not provably contiguous, so the compiler keeps the computing layout (one
    # channel per thread) for these accesses instead of regrouping 4 values per lane through shared memory.
    o_blk = o_n[:, None] * BLOCK_D + ((tl.arange(0, BLOCK_D) * 5) % BLOCK_D)[None, :]
    scratch = SCRATCH + (i_n.to(tl.int64) * tl.num_programs(0) + i_d) * (TILES_PER_CHUNK * BLOCK_D * BLOCK_N)

    # dh: dL/d(state at the end of the part not yet processed), flowing backwards.
    if HAS_DHT:
        dh = tl.load(DHT + state_base + o_nd, mask=m_nd, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    # w below is dL/ds (s = dt A) divided by W_SCALE (2 for the signed gate, whose da/ds is 2 exp(s)).
    W_SCALE: tl.constexpr = 2.0 if NEGATIVE_EIGVALS else 1.0
    DS_SCALE: tl.constexpr = W_SCALE * LN2  # A2 = A log2(e): sum_n w A = ln(2) sum_n w A2
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dDTB_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    r = tl.arange(0, BLOCK_T)
    r3 = r[:, None, None]
    ones = tl.full([BLOCK_T, BLOCK_N, BLOCK_D], 1.0, tl.float32)
    nzero = tl.full([BLOCK_T, BLOCK_N, BLOCK_D], -0.0, tl.float32)
    n_tiles = tl.cdiv(L, BLOCK_T)
    n_chunks = tl.cdiv(n_tiles, TILES_PER_CHUNK)
    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        first_tile = c * TILES_PER_CHUNK
        nt = tl.minimum(n_tiles - first_tile, TILES_PER_CHUNK)
        # Replay: the start state of every tile of this chunk, from the chunk's checkpoint.
        h = tl.load(CKPT + (c0 + c) * DIM * NST + o_nd, mask=m_nd, other=0.0)
        tl.store(scratch + o_blk, h)
        tl.debug_barrier()
        # Read back in the layout of the scratch accesses below, so the loop carries h without conversions.
        h = tl.load(scratch + o_blk)
        # Only a sequence's last tile can be partial, and the replay never reads its chunk's last tile: no row masks.
        for j in range(1, nt):
            t0 = (first_tile + j - 1) * BLOCK_T
            m_td = tl.broadcast_to(m_d[None, :], [BLOCK_T, BLOCK_D])
            x = _load_rows(X, bos, t0, L, o_d, m_d, DIM, BLOCK_T, True)
            dt, _ = _step_size(
                _load_rows(DT, bos, t0, L, o_d, m_d, DIM, BLOCK_T, True), dtb[None, :], m_td, HAS_DT_BIAS, DT_SOFTPLUS
            )
            b = _load_bc(Bm, bos, t0, L, o_n, m_n, NST, BLOCK_T, EVEN_N, True)
            h = _tile_end_state(x, dt, b, A2, h, NEGATIVE_EIGVALS, BLOCK_T)
            tl.store(scratch + j * (BLOCK_D * BLOCK_N) + o_blk, h)
        # Each thread reads back what it wrote (same offsets, same layout); the barrier keeps that true should the
        # compiler ever pick different layouts for the store and the load.
        tl.debug_barrier()
        for jj in range(0, nt):
            j = nt - 1 - jj
            h_start = tl.load(scratch + j * (BLOCK_D * BLOCK_N) + o_blk)
            t0 = (first_tile + j) * BLOCK_T
            t = t0 + r
            if BLOCK_T == 1:
                m_t = tl.full([BLOCK_T], True, tl.int1)  # one-step tiles are never partial
            else:
                m_t = t < L
            m_td = m_t[:, None] & m_d[None, :]
            if BLOCK_T == 1 and EVEN_N:
                m_tn = None  # every (t, n) of the tile exists: the atomics need no predicate
            else:
                m_tn = m_t[:, None] & m_n[None, :]
            o_td = (bos + t)[:, None] * DIM + o_d[None, :]
            o_tn = (bos + t)[:, None] * NST + o_n[None, :]

            # Channels past DIM: dt is zeroed below and dy here, which zeroes every gradient they feed; x and z
            # may then hold anything finite (FULL loads read channel DIM - 1).
            x = _load_rows(X, bos, t0, L, o_d, m_d, DIM, BLOCK_T, BLOCK_T == 1)
            dt = _load_rows(DT, bos, t0, L, o_d, m_d, DIM, BLOCK_T, BLOCK_T == 1)
            dt, d_raw = _step_size(dt, dtb[None, :], m_td, HAS_DT_BIAS, DT_SOFTPLUS)
            dy = tl.load(DY + o_td, mask=m_td, other=0.0).to(tl.float32)
            b = _load_bc(Bm, bos, t0, L, o_n, m_n, NST, BLOCK_T, EVEN_N, BLOCK_T == 1)
            cm = _load_bc(Cm, bos, t0, L, o_n, m_n, NST, BLOCK_T, EVEN_N, BLOCK_T == 1)

            # e = exp(dt A): the gate is 2 e - 1 (signed) or e, and da/ds = 2 e or e; the constant 2 is applied
            # to the sums (ddt and dA) instead of every element.
            e = tl.exp2(dt[:, None, :] * A2[None, :, :])
            if NEGATIVE_EIGVALS:
                a = 2.0 * e - 1.0
            else:
                a = e
            dtx = dt * x
            u = dtx[:, None, :] * b[:, :, None]
            u_seeded = tl.where(r3 == 0, u + a * h_start[None, :, :], u)
            if NEGATIVE_EIGVALS:
                # h_t, and h_{t-1} (the state before step t) from the same scan; row 0's is the tile-start state.
                _, hs, _, hq = tl.associative_scan((a, u_seeded, ones, nzero), 0, _combine_keep_previous)
                hp = tl.where(r3 == 0, h_start[None, :, :], hq)
            else:
                _, hs = tl.associative_scan((a, u_seeded), 0, _combine)

            if HAS_Z:
                zz = _load_rows(Z, bos, t0, L, o_d, m_d, DIM, BLOCK_T, BLOCK_T == 1)
                sz = _sigmoid(zz)
                y_pre = _sum_states(hs * cm[:, :, None])
                if HAS_D:
                    y_pre += d_blk[None, :] * x
                dz = dy * y_pre * sz * (1.0 + zz * (1.0 - sz))
                tl.store(DZ + o_td, dz.to(DZ.dtype.element_ty), mask=m_td)
                dys = dy * zz * sz
            else:
                dys = dy

            # dC over this program's channels first: one atomic per (t, n) and program.
            _add_over_channels(DC, o_tn, m_tn, dys[:, None, :] * hs, RED_LANES)
            # G_t = a_t g_t = a_t (gin_t + G_{t+1}), a reverse scan with gate a_t; g_t = gin_t + G_{t+1} comes
            # from the same scan's exclusive pair. The gradient from later tiles enters at the last row.
            if BLOCK_T == 1:
                # Triton lowers a reverse scan with lane-reversing shuffles even along an in-thread axis (32 per
                # tile and thread at N = 16); a one-step tile needs no scan.
                g = dys[:, None, :] * cm[:, :, None] + dh[None, :, :]
                G = a * g
            else:
                gin = dys[:, None, :] * cm[:, :, None]
                gin = tl.where(r3 == BLOCK_T - 1, gin + dh[None, :, :], gin)
                _, G, _, Gx = tl.associative_scan((a, a * gin, ones, nzero), 0, _combine_keep_previous, reverse=True)
                g = gin + Gx

            d_dtx = _sum_states(g * b[:, :, None])
            _add_over_channels(DB, o_tn, m_tn, g * dtx[:, None, :], RED_LANES)
            if NEGATIVE_EIGVALS:
                w = g * hp * e  # dL/ds_t / 2 with s = dt * A; da/ds = 2 exp(s)
            elif BLOCK_T == 1:
                w = G * h_start[None, :, :]  # dL/ds_t = g_t a_t h_{t-1}, and G = a g here
            else:
                w = g * (hs - u)  # dL/ds_t: da/ds = a, and a_t h_{t-1} = h_t - u_t
            ddt = _sum_states(w * A2[None, :, :]) * DS_SCALE + d_dtx * x
            dx = d_dtx * dt
            if HAS_D:
                dx += dys * d_blk[None, :]
                dD_acc += tl.sum(dys * x, axis=0)
            tl.store(DX + o_td, dx.to(DX.dtype.element_ty), mask=m_td)
            ddt = ddt * d_raw  # through softplus and bias to the raw input; 0 on rows past the end
            if HAS_DT_BIAS:
                dDTB_acc += tl.sum(ddt, axis=0)
            tl.store(DDT + o_td, ddt.to(DDT.dtype.element_ty), mask=m_td)
            dA_acc += tl.sum(w * dt[:, None, :], axis=0)
            dh = _row(G, 0, BLOCK_T)
        # The next chunk overwrites the scratch rows read above.
        tl.debug_barrier()

    tl.store(DA_PART + state_base + o_nd, dA_acc * W_SCALE, mask=m_nd)
    if HAS_D:
        tl.store(DD_PART + i_n.to(tl.int64) * DIM + o_d, dD_acc, mask=m_d)
    if HAS_DT_BIAS:
        tl.store(DDTB_PART + i_n.to(tl.int64) * DIM + o_d, dDTB_acc, mask=m_d)
    if STORE_DH0:
        tl.store(DH0 + state_base + o_nd, dh, mask=m_nd)


def _config(d_inner: int, n_state: int, device: torch.device) -> dict[str, int]:
    """Tile sizes and warps for the forward and the backward kernel (one channel per thread).

    Chosen with ``benchmarks/kernel_static.py`` (sm_90, Triton 3.9, N = 16, signed gate; SASS instructions per
    (t, d, n)):

    - one warp per program (``BLOCK_D = 32``): forward 9.9 against 10.9 at 4 warps; backward 39.25 against 39.0
      at 4 warps, but there its two shared-memory conversions per step (before the dB/dC atomics) would
      synchronise four warps every step, while one warp's barrier is cheap;
    - forward tile ``BLOCK_T x N = 64`` values per thread and tensor: 219 registers, no spills (8 rows spill);
    - backward tile of ``16 / N`` rows: it keeps about four times as many tile tensors alive; 1 row takes 226
      registers, 2 rows spill 200 bytes at N = 16 (and need the reverse scan, 46.9);
    - ``RED_LANES = 4``: dB and dC are summed over groups of 4 lanes before their atomics, i.e. 8 atomics per
      (t, n) and warp (39.25, against 36.3 with 2 lanes, 42.9 with 8 and 50.75 with the whole warp). 2 lanes
      would meet the instruction target with more margin but doubles the same-address atomics, whose cost only a
      GPU run can show.
    """
    block_n = triton.next_power_of_2(n_state)
    warps = 1
    block_d = 32 * warps
    block_t, block_t_bwd = max(1, 64 // block_n), max(1, 16 // block_n)
    if device.type != "cuda":
        # Under the CPU interpreter every tile element and every loop step costs Python work: do not pad tiny test
        # widths, and walk the backward in the forward's longer tiles (registers do not matter there). The GPU's
        # tiling is tested by forcing it (tests/kernels/test_triton_selective_scan.py).
        block_d = min(block_d, triton.next_power_of_2(d_inner))
        block_t_bwd = block_t
    return {
        "BLOCK_T": block_t,
        "BLOCK_T_BWD": block_t_bwd,
        "BLOCK_N": block_n,
        "BLOCK_D": block_d,
        "num_warps": warps,
        "BLOCK_D_BWD": block_d,
        "num_warps_bwd": warps,
        "RED_LANES": 4,
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
        B_dtype, C_dtype = B.dtype, C.dtype
        block_t, block_d, block_n = cfg["BLOCK_T"], cfg["BLOCK_D"], cfg["BLOCK_N"]
        tiles_per_chunk = CHUNK // block_t
        x, dt = x.contiguous(), dt.contiguous()
        # B and C are read by every channel's thread: fp32 copies (N / d_inner of x's size) spare each thread the
        # conversion of 2 x BLOCK_T x N values per tile (about 2.5 of 14 instructions per element in bf16).
        B, C = B.float().contiguous(), C.float().contiguous()
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
            EVEN_N=block_n == N,
            TILES_PER_CHUNK=tiles_per_chunk,
            num_warps=cfg["num_warps"],
        )
        ctx.save_for_backward(x, dt, A, B, C, D, z, h0, dt_bias, ckpt, cu_seqlens, chunk_off)
        ctx.negative, ctx.dt_softplus = negative, dt_softplus
        ctx.cfg = (cfg["BLOCK_T_BWD"], cfg["BLOCK_D_BWD"], block_n, cfg["num_warps_bwd"], cfg["RED_LANES"])
        ctx.bc_dtypes = (B_dtype, C_dtype)
        ctx.set_materialize_grads(False)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, A, B, C, D, z, h0, dt_bias, ckpt, cu_seqlens, chunk_off = ctx.saved_tensors
        block_t, block_d, block_n, num_warps, red_lanes = ctx.cfg
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
            EVEN_N=block_n == N,
            RED_LANES=min(red_lanes, block_d),
            TILES_PER_CHUNK=tiles_per_chunk,
            num_warps=num_warps,
        )
        dA = dA_part.sum(0).to(A.dtype)
        dD = dD_part.sum(0).to(D.dtype) if D is not None else None
        return (
            dx,
            ddt,
            dA,
            dB.to(ctx.bc_dtypes[0]),
            dC.to(ctx.bc_dtypes[1]),
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
