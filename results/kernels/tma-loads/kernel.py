"""The one-pass dK/dV kernel (triton_bwd.swat_bwd_dkdv_kernel with FUSED_DQ "tma") with the query
and output-gradient tiles of its loop read by the copy engine (TMA, through tensor descriptors over
[B, T, H, d]) instead of by the threads' cp.async: a probe of whether the loop's address arithmetic
and the threads' copies cost the d = 64, W = T backward its last 5-8% against SDPA (NOTES.md v21).
Rows past T read as zeros from the descriptor, as the masked loads' `other=0` gave. No packed
documents (HAS_DOC), one loop per tile run as the committed large-regime configs have."""
import triton
import triton.language as tl

from harness.ops.swat.triton_common import band_program, key_block_ranges, mma, score_unit, sigmoid_scaled


@triton.jit
def _tiles(dk, dv, k, v, q_desc, do_desc, dq_desc, b, h, dq_row0, dq_col, offs_n, n0, m_lo, m_hi, g_scale, g_slope,
           g_bias, key_term, scale, T, W, MASK: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr,
           SIGMOID: tl.constexpr):
    offs_m0 = tl.arange(0, BLOCK_M)
    for m in range(m_lo, m_hi, BLOCK_M):
        offs_m = m + offs_m0
        q = q_desc.load([b, m, h, 0]).reshape(BLOCK_M, HEAD_DIM)
        do = do_desc.load([b, m, h, 0]).reshape(BLOCK_M, HEAD_DIM)
        qkT = mma(k, tl.trans(q), "tf32")
        query_term = g_slope * (offs_m - n0).to(tl.float32) + g_bias
        pT = sigmoid_scaled(qkT * g_scale + (query_term[None, :] - key_term[:, None]), SIGMOID)
        if MASK:
            row_lo = tl.maximum(offs_m - W + 1, 0)
            allowed = (offs_n[:, None] <= offs_m[None, :]) & (offs_n[:, None] >= row_lo[None, :])
            pT = tl.where(allowed, pT, 0.0)
        dv += mma(pT.to(do.dtype), do, "tf32")
        dpT = mma(v, tl.trans(do), "tf32")
        dsT = (dpT * (pT - pT * pT)).to(q.dtype)
        dk += mma(dsT, q, "tf32")
        dq_desc.atomic_add([dq_row0 + m, dq_col], mma(tl.trans(dsT), k, "tf32") * scale)
    return dk, dv


@triton.jit
def dkdv_tma_loads_kernel(Q, K, V, DO, DK, DV, DQ, Slopes, B, T, H, W, bias, scale,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                          SIGMOID: tl.constexpr, ORDER: tl.constexpr):
    """q, k, v, do, dk, dv contiguous [B, T, H, d] (no GQA); DQ a zeroed fp32 [B, T, H, d]."""
    pid_bh, pid_n = band_program(tl.program_id(0), tl.num_programs(0), tl.cdiv(T, BLOCK_N), H, ORDER)
    b = pid_bh // H
    h = pid_bh % H
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n < T
    row = b.to(tl.int64) * T * H * HEAD_DIM + h * HEAD_DIM + offs_n[:, None] * (H * HEAD_DIM) + offs_d[None, :]
    k = tl.load(K + row, mask=key_ok[:, None], other=0.0)
    v = tl.load(V + row, mask=key_ok[:, None], other=0.0)
    diag_lo, diag_hi, full_lo, full_hi, edge_hi = key_block_ranges(n0, T, T, T, W, BLOCK_M, BLOCK_N)

    q_desc = tl.make_tensor_descriptor(Q, shape=[B, T, H, HEAD_DIM],
                                       strides=[T * H * HEAD_DIM, H * HEAD_DIM, HEAD_DIM, 1],
                                       block_shape=[1, BLOCK_M, 1, HEAD_DIM])
    do_desc = tl.make_tensor_descriptor(DO, shape=[B, T, H, HEAD_DIM],
                                        strides=[T * H * HEAD_DIM, H * HEAD_DIM, HEAD_DIM, 1],
                                        block_shape=[1, BLOCK_M, 1, HEAD_DIM])
    dq_desc = tl.make_tensor_descriptor(DQ, shape=[B * T, H * HEAD_DIM], strides=[H * HEAD_DIM, 1],
                                        block_shape=[BLOCK_M, HEAD_DIM])
    g_scale = scale * score_unit(SIGMOID)
    g_bias = bias * score_unit(SIGMOID)
    g_slope = tl.load(Slopes + h).to(tl.float32) * score_unit(SIGMOID)
    key_term = g_slope * tl.arange(0, BLOCK_N).to(tl.float32)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dk, dv = _tiles(dk, dv, k, v, q_desc, do_desc, dq_desc, b, h, b * T, h * HEAD_DIM, offs_n, n0, diag_lo, diag_hi,
                    g_scale, g_slope, g_bias, key_term, scale, T, W, True, BLOCK_M, HEAD_DIM, SIGMOID)
    dk, dv = _tiles(dk, dv, k, v, q_desc, do_desc, dq_desc, b, h, b * T, h * HEAD_DIM, offs_n, n0, full_lo, full_hi,
                    g_scale, g_slope, g_bias, key_term, scale, T, W, False, BLOCK_M, HEAD_DIM, SIGMOID)
    dk, dv = _tiles(dk, dv, k, v, q_desc, do_desc, dq_desc, b, h, b * T, h * HEAD_DIM, offs_n, n0, full_hi, edge_hi,
                    g_scale, g_slope, g_bias, key_term, scale, T, W, True, BLOCK_M, HEAD_DIM, SIGMOID)
    tl.store(DK + row, (dk * scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + row, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])
