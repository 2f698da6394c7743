"""SWAT forward in Triton: one program per (query block, batch x head), key tiles of the band only.

    o_i = sum_j sigmoid(q_i . k_j * scale + slope_h (i - j) + bias) v_j,   0 <= i - j < W, same document

Sigmoid weights need no running max and no final normalisation, so a tile's contribution is
simply added to the fp32 accumulator: the loop is two matrix products and one sigmoid per pair.
"""

from __future__ import annotations

import triton
import triton.language as tl

from harness.ops.swat.triton_common import band_program, kv_tile_weights, mma, query_rows, score_unit


@triton.jit
def _fwd_tiles(acc, q, k_base, v_base, stride_kt, stride_vt, offs_m, row_lo, n_lo, n_hi, g_scale, g_slope,
               g_bias, col_term, T, MASK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               SIGMOID: tl.constexpr, DOT_PREC: tl.constexpr):
    for n in range(n_lo, n_hi, BLOCK_N):
        k, v, p = kv_tile_weights(q, k_base, v_base, stride_kt, stride_vt, offs_m, row_lo, n, g_scale, g_slope,
                                  g_bias, col_term, T, MASK, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
        acc += mma(p.to(v.dtype), v, DOT_PREC)
    return acc


@triton.jit
def swat_fwd_kernel(Q, K, V, O, Slopes, RowStart,
                    sq_b, sq_t, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h, so_b, so_t, so_h,
                    T, H, W, scale, bias,
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

    q_base = Q + b.to(tl.int64) * sq_b + h * sq_h
    k_base = K + b.to(tl.int64) * sk_b + hk * sk_h
    v_base = V + b.to(tl.int64) * sv_b + hk * sv_h
    q = tl.load(q_base + offs_m[:, None] * sq_t + offs_d[None, :], mask=row_ok[:, None], other=0.0)

    row_lo, g_slope, col_term, edge_lo, full_lo, diag_lo, diag_hi = query_rows(
        RowStart, Slopes, h, m0, offs_m, row_ok, T, W, HAS_DOC, BLOCK_M, BLOCK_N, SIGMOID)
    g_scale = scale * score_unit(SIGMOID)
    g_bias = bias * score_unit(SIGMOID)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if ONE_LOOP:  # small windows: one pipelined loop of masked tiles beats three loops of one tile each
        acc = _fwd_tiles(acc, q, k_base, v_base, sk_t, sv_t, offs_m, row_lo, edge_lo, diag_hi, g_scale, g_slope,
                         g_bias, col_term, T, True, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
    else:
        acc = _fwd_tiles(acc, q, k_base, v_base, sk_t, sv_t, offs_m, row_lo, edge_lo, full_lo, g_scale, g_slope,
                         g_bias, col_term, T, True, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
        acc = _fwd_tiles(acc, q, k_base, v_base, sk_t, sv_t, offs_m, row_lo, full_lo, diag_lo, g_scale, g_slope,
                         g_bias, col_term, T, False, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)
        acc = _fwd_tiles(acc, q, k_base, v_base, sk_t, sv_t, offs_m, row_lo, diag_lo, diag_hi, g_scale, g_slope,
                         g_bias, col_term, T, True, BLOCK_N, HEAD_DIM, SIGMOID, DOT_PREC)

    o_base = O + b.to(tl.int64) * so_b + h * so_h
    tl.store(o_base + offs_m[:, None] * so_t + offs_d[None, :], acc.to(O.dtype.element_ty), mask=row_ok[:, None])
