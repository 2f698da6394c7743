"""Issue 24's probe of Triton's automatic warp specialization on Hopper (NOTES.md, v9): the SWAT
forward, dQ and dK/dV passes written so that `tl.range(..., warp_specialize=True)` applies.

Triton 3.6's Hopper pass takes one loop per kernel (a second loop before or after it fails to
compile), 4 warps, and tensor-descriptor (TMA) loads (pointer loads fail to compile); it then
builds a producer warp group and two consumer groups that split the tile. So each pass here is one
loop over the band's tiles, masked everywhere by one unsigned compare, 0 <= i - j < limit(row),
instead of the kernels' three loops (only the edge and diagonal tiles masked), and q, k, v, dO
are read through descriptors over [B, T, H * d] (rows outside [0, T) read as zeros). With WS False
the same kernels are the single-loop TMA variant without specialization. No packed documents, no
GQA: the shapes of `harness bench kernels`.
"""
import triton
import triton.language as tl

from harness.ops.swat.triton_common import key_block_ranges, query_block_ranges, sigmoid_scaled

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _program_block(H, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """(b, h, the head's first column in [B, T, H * d], the block's first row): heavy (late)
    blocks first, the heads varying fastest, as harness/ops/swat launched its kernels when this probe
    ran (band_program's "heads" order since NOTES.md v14)."""
    pid_bh = tl.program_id(0)
    h = pid_bh % H
    return pid_bh // H, h, h * HEAD_DIM, (tl.num_programs(1) - 1 - tl.program_id(1)) * BLOCK


@triton.jit
def _fwd_tiles(acc, q, Kd, Vd, b, col, offs_m, keys, n_lo, n_hi, neg_c, neg_slope, neg_bias, col_term,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr,
               WS: tl.constexpr, DQ: tl.constexpr, do, dq):
    for n in tl.range(n_lo, n_hi, BLOCK_N, warp_specialize=WS):
        k = Kd.load([b, n, col]).reshape(BLOCK_N, HEAD_DIM)
        v = Vd.load([b, n, col]).reshape(BLOCK_N, HEAD_DIM)
        qk = tl.dot(q, tl.trans(k))
        row_term = neg_slope * (offs_m - n).to(tl.float32) + neg_bias
        p = sigmoid_scaled(qk * neg_c + (row_term[:, None] - col_term[None, :]), SIGMOID)
        dist = (offs_m - n)[:, None] - tl.arange(0, BLOCK_N)[None, :]  # i - j
        p = tl.where(dist.to(tl.uint32, bitcast=True) < keys[:, None], p, 0.0)
        if DQ:
            dp = tl.dot(do, tl.trans(v))
            ds = dp * (p - p * p)
            dq += tl.dot(ds.to(k.dtype), k)
        else:
            acc += tl.dot(p.to(v.dtype), v)
    return acc, dq


@triton.jit
def query_block_kernel(Qd, Kd, Vd, DOd, Out, Slopes, T, H, W, neg_c, neg_bias, scale, so_b, so_t, so_h,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                       SIGMOID: tl.constexpr, WS: tl.constexpr, DQ: tl.constexpr):
    """DQ False: the forward (Out = sum_j p v); DQ True: the dQ pass (Out = scale sum_j ds k)."""
    b, h, col, m0 = _program_block(H, BLOCK_M, HEAD_DIM)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    q = Qd.load([b, m0, col]).reshape(BLOCK_M, HEAD_DIM)
    if DQ:
        do = DOd.load([b, m0, col]).reshape(BLOCK_M, HEAD_DIM)
    else:
        do = q
    keys = tl.minimum(offs_m + 1, W).to(tl.uint32)  # row i sees keys j with 0 <= i - j < keys
    neg_slope = -tl.load(Slopes + h).to(tl.float32) * LOG2E
    col_term = neg_slope * tl.arange(0, BLOCK_N).to(tl.float32)
    edge_lo, _, _, diag_hi = query_block_ranges(m0, 0, 0, T, W, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    acc, dq = _fwd_tiles(acc, q, Kd, Vd, b, col, offs_m, keys, edge_lo, diag_hi, neg_c, neg_slope, neg_bias,
                         col_term, BLOCK_N, HEAD_DIM, SIGMOID, WS, DQ, do, dq)
    if DQ:
        acc = dq * scale
    offs_d = tl.arange(0, HEAD_DIM)
    o_ptrs = Out + b.to(tl.int64) * so_b + h * so_h + offs_m[:, None] * so_t + offs_d[None, :]
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=(offs_m < T)[:, None])


@triton.jit
def _dkdv_tiles(dk, dv, k, v, Qd, DOd, b, col, n0, m_lo, m_hi, neg_c, neg_slope, neg_bias, key_term, lim,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr,
                WS: tl.constexpr):
    for m in tl.range(m_lo, m_hi, BLOCK_M, warp_specialize=WS):
        q = Qd.load([b, m, col]).reshape(BLOCK_M, HEAD_DIM)
        do = DOd.load([b, m, col]).reshape(BLOCK_M, HEAD_DIM)
        offs_m = m + tl.arange(0, BLOCK_M)
        qkT = tl.dot(k, tl.trans(q))
        query_term = neg_slope * (offs_m - n0).to(tl.float32) + neg_bias
        pT = sigmoid_scaled(qkT * neg_c + (query_term[None, :] - key_term[:, None]), SIGMOID)
        # 0 <= i - j < min(W, T - j): queries past T read as zeros but must not count
        dist = (offs_m - n0)[None, :] - tl.arange(0, BLOCK_N)[:, None]
        pT = tl.where(dist.to(tl.uint32, bitcast=True) < lim[:, None], pT, 0.0)
        dv += tl.dot(pT.to(do.dtype), do)
        dpT = tl.dot(v, tl.trans(do))
        dsT = (dpT * (pT - pT * pT)).to(q.dtype)
        dk += tl.dot(dsT, q)
    return dk, dv


@triton.jit
def dkdv_kernel(Qd, Kd, Vd, DOd, DK, DV, Slopes, T, H, W, neg_c, neg_bias, scale, s_b, s_t, s_h,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr,
                WS: tl.constexpr):
    b, h, col, n0 = _program_block(H, BLOCK_N, HEAD_DIM)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    k = Kd.load([b, n0, col]).reshape(BLOCK_N, HEAD_DIM)
    v = Vd.load([b, n0, col]).reshape(BLOCK_N, HEAD_DIM)
    diag_lo, _, _, _, edge_hi = key_block_ranges(n0, T, T, T, W, BLOCK_M, BLOCK_N)
    neg_slope = -tl.load(Slopes + h).to(tl.float32) * LOG2E
    key_term = neg_slope * tl.arange(0, BLOCK_N).to(tl.float32)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    lim = tl.minimum(W, T - offs_n).to(tl.uint32)
    dk, dv = _dkdv_tiles(dk, dv, k, v, Qd, DOd, b, col, n0, diag_lo, edge_hi, neg_c, neg_slope, neg_bias,
                         key_term, lim, BLOCK_M, BLOCK_N, HEAD_DIM, SIGMOID, WS)
    offs_d = tl.arange(0, HEAD_DIM)
    off = b.to(tl.int64) * s_b + h * s_h + offs_n[:, None] * s_t + offs_d[None, :]
    ok = (offs_n < T)[:, None]
    tl.store(DK + off, (dk * scale).to(DK.dtype.element_ty), mask=ok)
    tl.store(DV + off, dv.to(DV.dtype.element_ty), mask=ok)
