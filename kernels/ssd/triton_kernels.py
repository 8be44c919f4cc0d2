"""The Triton kernels of the SSD backend (:mod:`.triton` holds the torch glue and the algorithm's description).

Every kernel works on the *unsigned core* of the running-sign identity: per head ``h'_t = |a_t| h'_{t-1} +
w_t x_t B_t^T`` and ``y_t = sgn_t h'_t C_t + D x_t``, with ``la_t = log|a_t|`` (``-inf`` for a gate of exactly 0),
``w_t = P_t dt_t`` and ``sgn_t = P_t`` (the running sign). Rows are tokens of the flattened ``[rows, ...]`` layout;
a chunk is up to ``CHUNK`` consecutive rows of one sequence (``CHUNK_START``, ``CHUNK_LEN``), so packed sequences
need no per-sequence loop: a chunk never crosses a sequence boundary.

Decays are ``exp`` of sums of ``la`` formed directly, by ``tl.cumsum`` over a masked ``[CHUNK, CHUNK]`` tile
(:func:`_decay`), never as differences of two cumulative sums: a gate of exactly 0 gives ``exp(-inf) = 0`` with no
``-inf - (-inf)`` NaN, and a tiny gate costs no precision in the decays after it.

Hopper (fla #640): Triton 3.4-3.6 miscompile a transposed MMA-layout accumulator fed back into ``tl.dot``. No kernel
here transposes a dot's result: where a product is needed in both orientations (``C B^T`` and ``B C^T``, ``dy x^T``
and ``x dy^T``) both are computed by ``tl.dot`` from tiles loaded in that orientation from memory, and decay tiles
are built in the orientation they are used in.

Tiles: a program owns one chunk of one head (and, in the forward, ``BLOCK_P`` of its channels). ``N`` is never
split across programs but walked in ``BLOCK_N`` slices inside each program, so no ``[CHUNK, N]`` tile is held
whole: at N = 128 those tiles alone would exhaust the registers (measured with ``benchmarks/kernel_static.py``).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _chunk_bounds(CHUNK_START, CHUNK_LEN, c, CHUNK: tl.constexpr):
    """First row of chunk ``c`` (int64), its rows relative to that one (``[CHUNK]`` int32), which of them lie
    inside it, and how many do. Kernels move their row-indexed pointers to the first row once (64-bit scalar
    arithmetic) and index tiles with 32-bit offsets: 64-bit offsets per tile element cost two registers each."""
    bos = tl.load(CHUNK_START + c).to(tl.int64)
    n = tl.load(CHUNK_LEN + c)
    r = tl.arange(0, CHUNK)
    return bos, r, r < n, n


@triton.jit
def _load_gate(LA, rows, mask, h, H):
    """``la`` of the chunk's rows; rows outside the chunk get ``la = 0`` (gate 1), which changes no decay."""
    return tl.load(LA + rows * H + h, mask=mask, other=0.0)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """``a @ b`` with fp32 accumulation. ``WIDEN`` (set only under the CPU interpreter, whose ``tl.dot`` on bf16
    operands computes on raw bit patterns) widens the operands to fp32 first: the same products a tensor-core MMA
    forms (exact for 16-bit inputs), accumulated in fp32."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _decay(la_k, AXIS: tl.constexpr, EXCLUSIVE: tl.constexpr, CHUNK: tl.constexpr):
    """Within-chunk decay tile from ``la_k`` (``la`` of token ``k``; for ``EXCLUSIVE`` ``la`` of token ``k - 1``).

    ``AXIS == 0``: ``L[t, s] = prod_{s < k <= t} |a_k|`` for ``s <= t``, else 0 (rows are the later token).
    ``AXIS == 1``: the transpose, ``LT[s, t]``, built directly in that orientation.
    ``EXCLUSIVE`` leaves the later end out: ``prod_{s < k < t}`` for ``s < t``, else 0 (``E[t, s] = L[t - 1, s]``).
    Each entry is a running sum of ``la`` along the later-token axis, never a difference.
    """
    i = tl.arange(0, CHUNK)
    if AXIS == 0:
        later, earlier = i[:, None], i[None, :]
        la = la_k[:, None]
    else:
        earlier, later = i[:, None], i[None, :]
        la = la_k[None, :]
    if EXCLUSIVE:
        keep = later - 1 > earlier
    else:
        keep = later > earlier
    seg = tl.cumsum(tl.where(keep, la, 0.0), axis=AXIS)
    if EXCLUSIVE:
        inside = later > earlier
    else:
        inside = later >= earlier
    return tl.where(inside, tl.exp(seg), 0.0)


@triton.jit
def _group_tile(PTR, rows, m_rows, g, GH, n0, N, BLOCK_N: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Columns ``n0 : n0 + BLOCK_N`` of ``B`` or ``C`` (``[rows, GH, N]``, group ``g``) at the chunk's rows:
    ``[CHUNK, BLOCK_N]``, or ``[BLOCK_N, CHUNK]`` when ``TRANSPOSED`` (loaded so, not transposed in registers)."""
    o_n = n0 + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    if TRANSPOSED:
        return tl.load(
            PTR + (rows[None, :] * GH + g) * N + o_n[:, None], mask=m_n[:, None] & m_rows[None, :], other=0.0
        )
    else:
        return tl.load(
            PTR + (rows[:, None] * GH + g) * N + o_n[None, :], mask=m_rows[:, None] & m_n[None, :], other=0.0
        )


@triton.jit
def _state_tile(PTR, base, p0, n0, P, N, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Block ``[p0 : p0 + BLOCK_P, n0 : n0 + BLOCK_N]`` of a ``[P, N]`` state at ``PTR + base``, or its transpose.
    Callers pass ``P = 0`` for the spare (empty) chunks of the chunk table, whose states nothing writes: zeros then,
    not uninitialised memory (which may hold NaN, and NaN times the chunk's zero rows is NaN)."""
    o_p = p0 + tl.arange(0, BLOCK_P)
    o_n = n0 + tl.arange(0, BLOCK_N)
    m_p, m_n = o_p < P, o_n < N
    if TRANSPOSED:
        return tl.load(PTR + base + o_p[None, :] * N + o_n[:, None], mask=m_n[:, None] & m_p[None, :], other=0.0)
    else:
        return tl.load(PTR + base + o_p[:, None] * N + o_n[None, :], mask=m_p[:, None] & m_n[None, :], other=0.0)


@triton.jit
def _gram(
    LEFT,
    RIGHT,
    rows,
    m_rows,
    g,
    GH,
    N,
    CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PREC: tl.constexpr,
    WIDEN: tl.constexpr,
):
    """``[CHUNK, CHUNK]`` products of the chunk's rows, ``LEFT_r . RIGHT_c`` (``C B^T`` or ``B C^T``), over ``N``
    in slices."""
    acc = tl.zeros([CHUNK, CHUNK], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        left = _group_tile(LEFT, rows, m_rows, g, GH, n0, N, BLOCK_N, False)
        right = _group_tile(RIGHT, rows, m_rows, g, GH, n0, N, BLOCK_N, True)
        acc += _dot(left, right, PREC, WIDEN)
    return acc


@triton.jit(do_not_specialize=["H", "G_RATIO"])
def _chunk_outer_kernel(
    V,
    K,
    LA,
    SCALE,
    OUT,
    DECAY,
    CHUNK_START,
    CHUNK_LEN,
    H,
    G_RATIO,
    P,
    N,
    FORWARD: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
):
    """One chunk's ``OUT[p, n] = sum_t V[t, p] scale_t K[t, n]`` (fp32, ``[chunks, H, P, N]``).

    ``FORWARD``: the chunk's own state, ``V = x``, ``K = B``, ``scale_t = prod_{k > t} |a_k| w_t``; also stores the
    chunk's decay ``prod_k |a_k|``. Backward: the gradient of the state entering the chunk from its outputs,
    ``V = dy``, ``K = C``, ``scale_t = prod_{k <= t} |a_k| sgn_t``.
    """
    c, h, i_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    GH = H // G_RATIO
    g = h // G_RATIO
    bos, rows, m_t, n_valid = _chunk_bounds(CHUNK_START, CHUNK_LEN, c, CHUNK)
    V += bos * H * P
    K += bos * GH * N
    LA += bos * H
    SCALE += bos * H
    la = _load_gate(LA, rows, m_t, h, H)
    scale = tl.load(SCALE + rows * H + h, mask=m_t, other=0.0)
    if FORWARD:
        # prod_{k > t} |a_k| within the chunk, from la of the next token (0 past the chunk's end)
        la_next = tl.load(LA + (rows + 1) * H + h, mask=tl.arange(0, CHUNK) + 1 < n_valid, other=0.0)
        scale *= tl.exp(tl.cumsum(la_next, axis=0, reverse=True))
        if i_p == 0:
            tl.store(DECAY + c * H + h, tl.exp(tl.sum(la, axis=0)))
    else:
        scale *= tl.exp(tl.cumsum(la, axis=0))
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    m_p = o_p < P
    vt = tl.load(V + (rows[None, :] * H + h) * P + o_p[:, None], mask=m_t[None, :] & m_p[:, None], other=0.0)
    base = (c.to(tl.int64) * H + h) * P * N
    for n0 in range(0, N, BLOCK_N):
        k = _group_tile(K, rows, m_t, g, GH, n0, N, BLOCK_N, False)
        out = _dot(vt, (k.to(tl.float32) * scale[:, None]).to(vt.dtype), FP32_PRECISION, WIDEN)
        o_n = n0 + tl.arange(0, BLOCK_N)
        tl.store(OUT + base + o_p[:, None] * N + o_n[None, :], out, mask=m_p[:, None] & (o_n < N)[None, :])


@triton.jit
def _state_pass_fwd_kernel(
    OWN,
    STATES,
    DECAY,
    H0,
    FINAL,
    CHUNK_OFF,
    H,
    PN,
    HAS_H0: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Per sequence: ``STATES[c]`` gets the state entering chunk ``c`` (``S <- decay_c S + OWN[c]`` in fp32, from
    ``H0`` or 0, stored in ``STATES``' dtype: the input dtype, which the products that read it use); the state
    after the last chunk goes to ``FINAL`` in fp32."""
    i, h, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o = i_s * BLOCK_S + tl.arange(0, BLOCK_S)
    m = o < PN
    c0 = tl.load(CHUNK_OFF + i)
    c1 = tl.load(CHUNK_OFF + i + 1)
    seq = (i.to(tl.int64) * H + h) * PN
    if HAS_H0:
        S = tl.load(H0 + seq + o, mask=m, other=0.0)
    else:
        S = tl.zeros([BLOCK_S], dtype=tl.float32)
    for j in range(0, c1 - c0):
        c = (c0 + j).to(tl.int64)
        at = (c * H + h) * PN + o
        tl.store(STATES + at, S.to(STATES.dtype.element_ty), mask=m)
        S = tl.load(DECAY + c * H + h) * S + tl.load(OWN + at, mask=m, other=0.0)
    tl.store(FINAL + seq + o, S, mask=m)


@triton.jit
def _state_pass_bwd_kernel(
    READS,
    DSTATES,
    STATES,
    DECAY,
    DFINAL,
    DH0,
    THROUGH,
    CHUNK_OFF,
    H,
    PN,
    N_CHUNKS,
    HAS_DFINAL: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Per sequence, last chunk first: ``DSTATES[c]`` gets the gradient of the state *leaving* chunk ``c``
    (``dS <- decay_c dS + READS[c]`` in fp32, from ``DFINAL`` or 0; stored in the input dtype), where ``READS[c]``
    is the gradient reaching the state entering chunk ``c`` from the chunk's outputs; what reaches the initial state
    goes to ``DH0``. ``THROUGH[i_s, c, h]`` gets this block's part of ``<dS leaving c, S entering c>``, the gate
    gradient's term for the state carried through the whole chunk."""
    i, h, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o = i_s * BLOCK_S + tl.arange(0, BLOCK_S)
    m = o < PN
    c0 = tl.load(CHUNK_OFF + i)
    c1 = tl.load(CHUNK_OFF + i + 1)
    seq = (i.to(tl.int64) * H + h) * PN
    if HAS_DFINAL:
        dS = tl.load(DFINAL + seq + o, mask=m, other=0.0)
    else:
        dS = tl.zeros([BLOCK_S], dtype=tl.float32)
    for j in range(0, c1 - c0):
        c = (c1 - 1 - j).to(tl.int64)
        at = (c * H + h) * PN + o
        tl.store(DSTATES + at, dS.to(DSTATES.dtype.element_ty), mask=m)
        S_in = tl.load(STATES + at, mask=m, other=0.0).to(tl.float32)
        tl.store(THROUGH + (i_s * N_CHUNKS + c) * H + h, tl.sum(dS * S_in, axis=0))
        dS = tl.load(DECAY + c * H + h) * dS + tl.load(READS + at, mask=m, other=0.0)
    tl.store(DH0 + seq + o, dS, mask=m)


@triton.jit(do_not_specialize=["H", "G_RATIO"])
def _chunk_scan_fwd_kernel(
    X,
    Bm,
    Cm,
    LA,
    W,
    SGN,
    STATES,
    D,
    Y,
    CHUNK_START,
    CHUNK_LEN,
    H,
    G_RATIO,
    P,
    N,
    D_STRIDE_H,
    D_STRIDE_P,
    HAS_D: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
):
    """Outputs of one chunk: ``y = (L * C B^T * w_s * sgn_t) x + (C * f sgn) S_in^T + D x`` (``f_t = prod_{k <= t}
    |a_k|``, ``S_in`` the state entering the chunk)."""
    c, h, i_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    GH = H // G_RATIO
    g = h // G_RATIO
    bos, rows, m_t, n_valid = _chunk_bounds(CHUNK_START, CHUNK_LEN, c, CHUNK)
    X += bos * H * P
    Y += bos * H * P
    Bm += bos * GH * N
    Cm += bos * GH * N
    LA += bos * H
    W += bos * H
    SGN += bos * H
    la = _load_gate(LA, rows, m_t, h, H)
    w = tl.load(W + rows * H + h, mask=m_t, other=0.0)
    sgn = tl.load(SGN + rows * H + h, mask=m_t, other=0.0)
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    m_p = o_p < P
    m_tp = m_t[:, None] & m_p[None, :]
    x = tl.load(X + (rows[:, None] * H + h) * P + o_p[None, :], mask=m_tp, other=0.0)

    cb = _gram(Cm, Bm, rows, m_t, g, GH, N, CHUNK, BLOCK_N, FP32_PRECISION, WIDEN)  # [t, s]
    M = _decay(la, 0, False, CHUNK) * cb * w[None, :] * sgn[:, None]
    y = _dot(M.to(x.dtype), x, FP32_PRECISION, WIDEN)
    f_sgn = tl.exp(tl.cumsum(la, axis=0)) * sgn
    base = (c.to(tl.int64) * H + h) * P * N
    p_live = tl.where(n_valid > 0, P, 0)  # see _state_tile
    for n0 in range(0, N, BLOCK_N):
        read = _group_tile(Cm, rows, m_t, g, GH, n0, N, BLOCK_N, False).to(tl.float32) * f_sgn[:, None]
        s_inT = _state_tile(STATES, base, i_p * BLOCK_P, n0, p_live, N, BLOCK_P, BLOCK_N, True)
        y += _dot(read.to(x.dtype), s_inT.to(x.dtype), FP32_PRECISION, WIDEN)
    if HAS_D:
        d = tl.load(D + h * D_STRIDE_H + o_p * D_STRIDE_P, mask=m_p, other=0.0).to(tl.float32)
        y += d[None, :] * x.to(tl.float32)
    tl.store(Y + (rows[:, None] * H + h) * P + o_p[None, :], y.to(Y.dtype.element_ty), mask=m_tp)


@triton.jit(do_not_specialize=["H", "G_RATIO"])
def _chunk_bwd_inputs_kernel(
    X,
    Bm,
    Cm,
    DY,
    LA,
    W,
    SGN,
    DSTATES,
    D,
    DX,
    DB,
    DW,
    DD,
    GATE_OUT,
    CHUNK_START,
    CHUNK_LEN,
    H,
    G_RATIO,
    P,
    N,
    D_STRIDE_H,
    D_STRIDE_P,
    HAS_D: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
    GATE_PRECISION: tl.constexpr,
):
    """Gradients on the input side of one chunk, laid out with the earlier token ``s`` on rows: ``dx``, ``dB``
    (this head's part, added into the group's fp32 ``dB``), ``dw``, the chunk's part of ``dD``, and the gate
    gradient's term for a token's input carried out of the chunk, ``prod_{k > t} |a_k| sum_{s < t} E[t, s] w_s x_s .
    (dS B_s)`` with ``dS`` the gradient of the state leaving the chunk and ``E[t, s] = prod_{s < k < t} |a_k|``."""
    c, h = tl.program_id(0), tl.program_id(1)
    GH = H // G_RATIO
    g = h // G_RATIO
    bos, rows, m_s, n_valid = _chunk_bounds(CHUNK_START, CHUNK_LEN, c, CHUNK)
    X += bos * H * P
    DY += bos * H * P
    DX += bos * H * P
    Bm += bos * GH * N
    Cm += bos * GH * N
    DB += bos * GH * N
    LA += bos * H
    W += bos * H
    SGN += bos * H
    DW += bos * H
    GATE_OUT += bos * H
    i = tl.arange(0, CHUNK)
    la = _load_gate(LA, rows, m_s, h, H)
    la_next = tl.load(LA + (rows + 1) * H + h, mask=i + 1 < n_valid, other=0.0)
    after = tl.exp(tl.cumsum(la_next, axis=0, reverse=True))  # prod_{k > s} |a_k| within the chunk
    w = tl.load(W + rows * H + h, mask=m_s, other=0.0)
    sgn = tl.load(SGN + rows * H + h, mask=m_s, other=0.0)
    to_end = after * w  # weight of x_s B_s^T in the state leaving the chunk
    LT = _decay(la, 1, False, CHUNK)  # [s, t]
    LbcT = LT * _gram(Bm, Cm, rows, m_s, g, GH, N, CHUNK, BLOCK_N, FP32_PRECISION, WIDEN)  # LT * (B_s . C_t)

    dMT = tl.zeros([CHUNK, CHUNK], dtype=tl.float32)  # [s, t] = x_s . dy_t
    carried = tl.zeros([CHUNK], dtype=tl.float32)  # x_s . (dS B_s)
    state = (c.to(tl.int64) * H + h) * P * N
    p_live = tl.where(n_valid > 0, P, 0)  # see _state_tile
    for p0 in range(0, P, BLOCK_P):
        o_p = p0 + tl.arange(0, BLOCK_P)
        m_p = o_p < P
        m_sp = m_s[:, None] & m_p[None, :]
        x = tl.load(X + (rows[:, None] * H + h) * P + o_p[None, :], mask=m_sp, other=0.0)
        dy = tl.load(DY + (rows[:, None] * H + h) * P + o_p[None, :], mask=m_sp, other=0.0)
        dyT = tl.load(DY + (rows[None, :] * H + h) * P + o_p[:, None], mask=m_p[:, None] & m_s[None, :], other=0.0)
        dMT += _dot(x, dyT, FP32_PRECISION, WIDEN)
        BdS = tl.zeros([CHUNK, BLOCK_P], dtype=tl.float32)  # [s, p] = (dS B_s)_p
        for n0 in range(0, N, BLOCK_N):
            b_s = _group_tile(Bm, rows, m_s, g, GH, n0, N, BLOCK_N, False)
            dST = _state_tile(DSTATES, state, p0, n0, p_live, N, BLOCK_P, BLOCK_N, True)
            BdS += _dot(b_s, dST.to(b_s.dtype), FP32_PRECISION, WIDEN)
        xf = x.to(tl.float32)
        carried += tl.sum(xf * BdS, axis=1)
        MT = LbcT * w[:, None] * sgn[None, :]
        dx = _dot(MT.to(x.dtype), dy, FP32_PRECISION, WIDEN) + to_end[:, None] * BdS
        if HAS_D:
            d = tl.load(D + h * D_STRIDE_H + o_p * D_STRIDE_P, mask=m_p, other=0.0).to(tl.float32)
            dx += d[None, :] * dy.to(tl.float32)
            part = tl.sum(dy.to(tl.float32) * xf, axis=0)
            tl.store(DD + (c.to(tl.int64) * H + h) * P + o_p, part, mask=m_p)
        tl.store(DX + (rows[:, None] * H + h) * P + o_p[None, :], dx.to(DX.dtype.element_ty), mask=m_sp)

    dw = tl.sum(dMT * LbcT * sgn[None, :], axis=1) + after * carried
    tl.store(DW + rows * H + h, dw, mask=m_s)
    # dB_s = sum_t dCB[t, s] C_t + to_end_s (x_s dS), one slice of N at a time.
    dCBT = dMT * LT * w[:, None] * sgn[None, :]
    for n0 in range(0, N, BLOCK_N):
        c_t = _group_tile(Cm, rows, m_s, g, GH, n0, N, BLOCK_N, False)
        db = _dot(dCBT.to(c_t.dtype), c_t, FP32_PRECISION, WIDEN)
        for p0 in range(0, P, BLOCK_P):
            o_p = p0 + tl.arange(0, BLOCK_P)
            x = tl.load(
                X + (rows[:, None] * H + h) * P + o_p[None, :], mask=m_s[:, None] & (o_p < P)[None, :], other=0.0
            )
            dS = _state_tile(DSTATES, state, p0, n0, p_live, N, BLOCK_P, BLOCK_N, False)
            db += _dot((x.to(tl.float32) * to_end[:, None]).to(x.dtype), dS.to(x.dtype), FP32_PRECISION, WIDEN)
        o_n = n0 + tl.arange(0, BLOCK_N)
        # The group's heads add into one fp32 dB: H / G times less memory than a row per head.
        tl.atomic_add(DB + (rows[:, None] * GH + g) * N + o_n[None, :], db, mask=m_s[:, None] & (o_n < N)[None, :])
    la_prev = tl.load(LA + (rows - 1) * H + h, mask=m_s & (i > 0), other=0.0)
    ET = _decay(la_prev, 1, True, CHUNK)  # [s, t] = prod_{s < k < t} |a_k|
    gate_out = after * tl.sum(ET * (w * carried)[:, None], axis=0)
    tl.store(GATE_OUT + rows * H + h, gate_out, mask=m_s)


@triton.jit(do_not_specialize=["H", "G_RATIO"])
def _chunk_bwd_outputs_kernel(
    X,
    Bm,
    Cm,
    DY,
    LA,
    W,
    SGN,
    STATES,
    THROUGH,
    DC,
    GATE_IN,
    CHUNK_START,
    CHUNK_LEN,
    H,
    G_RATIO,
    P,
    N,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
    GATE_PRECISION: tl.constexpr,
):
    """Gradients on the output side of one chunk, laid out with the later token ``t`` on rows: ``dC`` (this head's
    part, added into the group's fp32 ``dC``) and the gate gradient ``dL/d|a_t|`` less the term of
    :func:`_chunk_bwd_inputs_kernel`:

    - both ends inside the chunk: ``sum_s (L^T M2)[t, s] E[t, s]`` with ``M2[r, s] = sgn_r w_s (dy_r . x_s)
      (C_r . B_s)``, computed as ``sum_r L[r, t] (M2 E^T)[r, t]``;
    - the state entering the chunk, read inside it: ``prod_{k < t} |a_k| sum_{r >= t} L[r, t] sgn_r
      dy_r . (S_in C_r)``;
    - the state carried through the chunk: ``prod_{k != t} |a_k| <dS, S_in>`` (``THROUGH``).

    Every term is a sum of products that each leave ``|a_t|`` out, so it is exact at ``a_t = 0`` and keeps its
    relative precision at tiny gates (no division by the gate, no difference of large terms)."""
    c, h = tl.program_id(0), tl.program_id(1)
    GH = H // G_RATIO
    g = h // G_RATIO
    bos, rows, m_t, n_valid = _chunk_bounds(CHUNK_START, CHUNK_LEN, c, CHUNK)
    X += bos * H * P
    DY += bos * H * P
    Bm += bos * GH * N
    Cm += bos * GH * N
    DC += bos * GH * N
    LA += bos * H
    W += bos * H
    SGN += bos * H
    GATE_IN += bos * H
    i = tl.arange(0, CHUNK)
    la = _load_gate(LA, rows, m_t, h, H)
    w = tl.load(W + rows * H + h, mask=m_t, other=0.0)
    sgn = tl.load(SGN + rows * H + h, mask=m_t, other=0.0)

    dM = tl.zeros([CHUNK, CHUNK], dtype=tl.float32)  # [t, s] = dy_t . x_s
    read_in = tl.zeros([CHUNK], dtype=tl.float32)  # dy_t . (S_in C_t)
    state = (c.to(tl.int64) * H + h) * P * N
    p_live = tl.where(n_valid > 0, P, 0)  # see _state_tile
    for p0 in range(0, P, BLOCK_P):
        o_p = p0 + tl.arange(0, BLOCK_P)
        m_p = o_p < P
        dy = tl.load(DY + (rows[:, None] * H + h) * P + o_p[None, :], mask=m_t[:, None] & m_p[None, :], other=0.0)
        xT = tl.load(X + (rows[None, :] * H + h) * P + o_p[:, None], mask=m_p[:, None] & m_t[None, :], other=0.0)
        dM += _dot(dy, xT, FP32_PRECISION, WIDEN)
        CS = tl.zeros([CHUNK, BLOCK_P], dtype=tl.float32)  # [t, p] = (S_in C_t)_p
        for n0 in range(0, N, BLOCK_N):
            c_t = _group_tile(Cm, rows, m_t, g, GH, n0, N, BLOCK_N, False)
            s_inT = _state_tile(STATES, state, p0, n0, p_live, N, BLOCK_P, BLOCK_N, True)
            CS += _dot(c_t, s_inT.to(c_t.dtype), FP32_PRECISION, WIDEN)
        read_in += tl.sum(dy.to(tl.float32) * CS, axis=1)

    # dC_t = sum_s dCB[t, s] B_s + f_t sgn_t (dy_t S_in), one slice of N at a time.
    L = _decay(la, 0, False, CHUNK)  # [t, s]
    dM = dM * w[None, :] * sgn[:, None]
    f_sgn = tl.exp(tl.cumsum(la, axis=0)) * sgn
    dCB = dM * L
    for n0 in range(0, N, BLOCK_N):
        b_s = _group_tile(Bm, rows, m_t, g, GH, n0, N, BLOCK_N, False)
        dc = _dot(dCB.to(b_s.dtype), b_s, FP32_PRECISION, WIDEN)
        for p0 in range(0, P, BLOCK_P):
            o_p = p0 + tl.arange(0, BLOCK_P)
            dy = tl.load(
                DY + (rows[:, None] * H + h) * P + o_p[None, :], mask=m_t[:, None] & (o_p < P)[None, :], other=0.0
            )
            s_in = _state_tile(STATES, state, p0, n0, p_live, N, BLOCK_P, BLOCK_N, False)
            dc += _dot((dy.to(tl.float32) * f_sgn[:, None]).to(dy.dtype), s_in.to(dy.dtype), FP32_PRECISION, WIDEN)
        o_n = n0 + tl.arange(0, BLOCK_N)
        tl.atomic_add(DC + (rows[:, None] * GH + g) * N + o_n[None, :], dc, mask=m_t[:, None] & (o_n < N)[None, :])

    M2 = dM * _gram(Cm, Bm, rows, m_t, g, GH, N, CHUNK, BLOCK_N, FP32_PRECISION, WIDEN)  # (do_r . v_s)(q_r . k_s)
    la_prev = tl.load(LA + (rows - 1) * H + h, mask=m_t & (i > 0), other=0.0)
    ET = _decay(la_prev, 1, True, CHUNK)  # [s, t] = prod_{s < k < t} |a_k|
    inside = tl.sum(L * _dot(M2, ET, GATE_PRECISION, WIDEN), axis=0)
    la_next = tl.load(LA + (rows + 1) * H + h, mask=i + 1 < n_valid, other=0.0)
    before = tl.exp(tl.cumsum(la_prev, axis=0))  # prod_{k < t} |a_k| within the chunk
    after = tl.exp(tl.cumsum(la_next, axis=0, reverse=True))  # prod_{k > t} |a_k|
    carried_in = before * tl.sum(L * (sgn * read_in)[:, None], axis=0)
    through = before * after * tl.load(THROUGH + c * H + h)
    tl.store(GATE_IN + rows * H + h, inside + carried_in + through, mask=m_t)
