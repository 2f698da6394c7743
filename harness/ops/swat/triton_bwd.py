"""SWAT backward in Triton, in two passes (deterministic) or one (FUSED_DQ "atomics" or "tma"):

- dK/dV pass: one program per (key block, batch x kv head); it loops over the kv head's query
  heads (GQA) and over the query tiles of the band, accumulating dK and dV in registers.
- dQ pass: one program per (query block, batch x head) over the key tiles of the band.
- FUSED_DQ: the dK/dV pass also adds each tile pair's share of dQ, scale dS K, to an fp32 buffer
  and the dQ pass does not run: 5 matrix products and one sigmoid per tile pair instead of 7 and
  two, for the additions' traffic and a dQ whose last bits depend on the order they land in.
  "atomics" adds element by element from the threads (FlashAttention-2's CUDA backward); "tma"
  hands the whole [BLOCK_M, d] tile to the Hopper copy engine as one bulk reduction
  (FlashAttention-3's way), through a tensor descriptor over the buffer.

With p = sigmoid(s): dV = P^T dO, dP = dO V^T, dS = dP * p (1 - p), dQ = scale dS K,
dK = scale dS^T Q. Unlike softmax there is no row statistic to save or to correct with.
P is recomputed from q and k in every pass (nothing of size T x W is stored).
"""

from __future__ import annotations

import triton
import triton.language as tl

from harness.ops.swat.triton_common import (
    band_program,
    key_block_ranges,
    kv_tile_weights,
    mma,
    query_rows,
    score_unit,
    sigmoid_scaled,
)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, dq_base, stride_qt, stride_dot, stride_dqt, dq_desc, dq_row0, dq_col,
                RowStart, offs_n, n0, m_lo, m_hi, g_scale, g_slope, g_bias, key_term, scale, T, W,
                HAS_DOC: tl.constexpr, MASK: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr,
                SIGMOID: tl.constexpr, DOT_PREC: tl.constexpr, FUSED_DQ: tl.constexpr):
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for m in range(m_lo, m_hi, BLOCK_M):
        offs_m = m + offs_m0
        q_ptrs = q_base + offs_m[:, None] * stride_qt + offs_d[None, :]
        do_ptrs = do_base + offs_m[:, None] * stride_dot + offs_d[None, :]
        if MASK:
            inb = offs_m < T
            q = tl.load(q_ptrs, mask=inb[:, None], other=0.0)
            do = tl.load(do_ptrs, mask=inb[:, None], other=0.0)
        else:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
        qkT = mma(k, tl.trans(q), DOT_PREC)  # [keys, queries]
        query_term = g_slope * (offs_m - n0).to(tl.float32) + g_bias
        pT = sigmoid_scaled(qkT * g_scale + (query_term[None, :] - key_term[:, None]), SIGMOID)
        if MASK:
            if HAS_DOC:
                rs = tl.load(RowStart + offs_m, mask=inb, other=0)
            else:
                rs = tl.zeros([BLOCK_M], dtype=tl.int32)
            row_lo = tl.maximum(offs_m - W + 1, rs)
            allowed = (offs_n[:, None] <= offs_m[None, :]) & (offs_n[:, None] >= row_lo[None, :])
            pT = tl.where(allowed, pT, 0.0)
        dv += mma(pT.to(do.dtype), do, DOT_PREC)
        dpT = mma(v, tl.trans(do), DOT_PREC)
        dsT = (dpT * (pT - pT * pT)).to(q.dtype)
        dk += mma(dsT, q, DOT_PREC)
        if FUSED_DQ == "tma":
            # rows past T (a masked tile's tail) hold zeros: their q and dO were read as zeros
            dq_desc.atomic_add([dq_row0 + m, dq_col], mma(tl.trans(dsT), k, DOT_PREC) * scale)
        elif FUSED_DQ == "atomics":
            dq = mma(tl.trans(dsT), k, DOT_PREC) * scale
            dq_ptrs = dq_base + offs_m[:, None] * stride_dqt + offs_d[None, :]
            if MASK:
                tl.atomic_add(dq_ptrs, dq, mask=inb[:, None], sem="relaxed")
            else:
                tl.atomic_add(dq_ptrs, dq, sem="relaxed")
    return dk, dv


@triton.jit
def swat_bwd_dkdv_kernel(Q, K, V, DO, DK, DV, DQ, Slopes, RowStart, RowEnd,
                         sq_b, sq_t, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h, sdo_b, sdo_t, sdo_h,
                         sdk_b, sdk_t, sdk_h, sdv_b, sdv_t, sdv_h, sdq_b, sdq_t, sdq_h,
                         T, HKV, W, bias, scale,
                         REP: tl.constexpr, HAS_DOC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr, DOT_PREC: tl.constexpr,
                         ONE_LOOP: tl.constexpr, FUSED_DQ: tl.constexpr, ORDER: tl.constexpr):
    pid_bh, pid_n = band_program(tl.program_id(0), tl.num_programs(0), tl.cdiv(T, BLOCK_N), HKV, ORDER)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n < T

    k = tl.load(K + b.to(tl.int64) * sk_b + hk * sk_h + offs_n[:, None] * sk_t + offs_d[None, :],
                mask=key_ok[:, None], other=0.0)
    v = tl.load(V + b.to(tl.int64) * sv_b + hk * sv_h + offs_n[:, None] * sv_t + offs_d[None, :],
                mask=key_ok[:, None], other=0.0)
    if HAS_DOC:
        re_first = tl.load(RowEnd + n0)
        re_last = tl.load(RowEnd + tl.minimum(n0 + BLOCK_N, T) - 1)
    else:
        re_first = T
        re_last = T
    diag_lo, diag_hi, full_lo, full_hi, edge_hi = key_block_ranges(n0, re_first, re_last, T, W, BLOCK_M, BLOCK_N)

    if FUSED_DQ == "tma":  # the fp32 dQ buffer (contiguous) as rows (b, t) of H * d columns
        batch = tl.num_programs(0) // (tl.cdiv(T, BLOCK_N) * HKV)
        dq_desc = tl.make_tensor_descriptor(DQ, shape=[batch * T, HKV * REP * HEAD_DIM],
                                            strides=[sdq_t, 1], block_shape=[BLOCK_M, HEAD_DIM])
    else:
        dq_desc = DQ

    g_scale = scale * score_unit(SIGMOID)
    g_bias = bias * score_unit(SIGMOID)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for r in range(REP):
        h = hk * REP + r
        g_slope = tl.load(Slopes + h).to(tl.float32) * score_unit(SIGMOID)
        key_term = g_slope * tl.arange(0, BLOCK_N).to(tl.float32)
        q_base = Q + b.to(tl.int64) * sq_b + h * sq_h
        do_base = DO + b.to(tl.int64) * sdo_b + h * sdo_h
        dq_base = DQ + b.to(tl.int64) * sdq_b + h * sdq_h
        dq_row0, dq_col = b * T, h * HEAD_DIM
        if ONE_LOOP:
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, dq_base, sq_t, sdo_t, sdq_t, dq_desc, dq_row0, dq_col,
                                 RowStart, offs_n, n0, diag_lo, tl.maximum(edge_hi, diag_hi), g_scale, g_slope,
                                 g_bias, key_term, scale, T, W, HAS_DOC, True, BLOCK_M, HEAD_DIM, SIGMOID, DOT_PREC,
                                 FUSED_DQ)
        else:
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, dq_base, sq_t, sdo_t, sdq_t, dq_desc, dq_row0, dq_col,
                                 RowStart, offs_n, n0, diag_lo, diag_hi, g_scale, g_slope, g_bias, key_term,
                                 scale, T, W, HAS_DOC, True, BLOCK_M, HEAD_DIM, SIGMOID, DOT_PREC, FUSED_DQ)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, dq_base, sq_t, sdo_t, sdq_t, dq_desc, dq_row0, dq_col,
                                 RowStart, offs_n, n0, full_lo, full_hi, g_scale, g_slope, g_bias, key_term,
                                 scale, T, W, HAS_DOC, False, BLOCK_M, HEAD_DIM, SIGMOID, DOT_PREC, FUSED_DQ)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, dq_base, sq_t, sdo_t, sdq_t, dq_desc, dq_row0, dq_col,
                                 RowStart, offs_n, n0, full_hi, edge_hi, g_scale, g_slope, g_bias, key_term,
                                 scale, T, W, HAS_DOC, True, BLOCK_M, HEAD_DIM, SIGMOID, DOT_PREC, FUSED_DQ)
    dk = dk * scale
    tl.store(DK + b.to(tl.int64) * sdk_b + hk * sdk_h + offs_n[:, None] * sdk_t + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + b.to(tl.int64) * sdv_b + hk * sdv_h + offs_n[:, None] * sdv_t + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def _dq_tiles(dq, q, do, k_base, v_base, stride_kt, stride_vt, offs_m, row_lo, n_lo, n_hi, g_scale, g_slope,
              g_bias, col_term, T, MASK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
              SIGMOID: tl.constexpr, DOT_PREC: tl.constexpr):
    for n in range(n_lo, n_hi, BLOCK_N):
        k, v, p = kv_tile_weights(q, k_base, v_base, stride_kt, stride_vt, offs_m, row_lo, n, g_scale, g_slope,
                                  g_bias, col_term, T, MASK, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
        dp = mma(do, tl.trans(v), DOT_PREC)
        ds = dp * (p - p * p)
        dq += mma(ds.to(k.dtype), k, DOT_PREC)
    return dq


@triton.jit
def swat_bwd_dq_kernel(Q, K, V, DO, DQ, Slopes, RowStart,
                       sq_b, sq_t, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h, sdo_b, sdo_t, sdo_h,
                       sdq_b, sdq_t, sdq_h,
                       T, H, W, bias, scale,
                       REP: tl.constexpr, HAS_DOC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr, DOT_PREC: tl.constexpr,
                       ONE_LOOP: tl.constexpr, ORDER: tl.constexpr):
    pid_bh, pid_m = band_program(tl.program_id(0), tl.num_programs(0), tl.cdiv(T, BLOCK_M), H, ORDER)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // REP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T

    q = tl.load(Q + b.to(tl.int64) * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b.to(tl.int64) * sdo_b + h * sdo_h + offs_m[:, None] * sdo_t + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    k_base = K + b.to(tl.int64) * sk_b + hk * sk_h
    v_base = V + b.to(tl.int64) * sv_b + hk * sv_h

    row_lo, g_slope, col_term, edge_lo, full_lo, diag_lo, diag_hi = query_rows(
        RowStart, Slopes, h, m0, offs_m, row_ok, T, W, HAS_DOC, BLOCK_M, BLOCK_N, SIGMOID)
    g_scale = scale * score_unit(SIGMOID)
    g_bias = bias * score_unit(SIGMOID)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if ONE_LOOP:
        dq = _dq_tiles(dq, q, do, k_base, v_base, sk_t, sv_t, offs_m, row_lo, edge_lo, diag_hi, g_scale, g_slope,
                       g_bias, col_term, T, True, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
    else:
        dq = _dq_tiles(dq, q, do, k_base, v_base, sk_t, sv_t, offs_m, row_lo, edge_lo, full_lo, g_scale, g_slope,
                       g_bias, col_term, T, True, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
        dq = _dq_tiles(dq, q, do, k_base, v_base, sk_t, sv_t, offs_m, row_lo, full_lo, diag_lo, g_scale, g_slope,
                       g_bias, col_term, T, False, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
        dq = _dq_tiles(dq, q, do, k_base, v_base, sk_t, sv_t, offs_m, row_lo, diag_lo, diag_hi, g_scale, g_slope,
                       g_bias, col_term, T, True, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
    dq = dq * scale
    tl.store(DQ + b.to(tl.int64) * sdq_b + h * sdq_h + offs_m[:, None] * sdq_t + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
