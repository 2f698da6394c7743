"""SWAT's forward and backward in Gluon with warp specialization written by hand (NOTES.md v9's next
step): what Triton 3.6's automatic pass could not run, spelled out with Gluon's Hopper primitives.

The passes are harness/ops/swat's (triton_fwd.py, triton_bwd.py): the forward and the dQ pass run
one program per (block of BLOCK_M query rows, batch x head) over the band's key tiles, the dK/dV
pass one program per (block of BLOCK_N keys, batch x head) over the band's query tiles. Each
program is split into two partitions:

- the load partition (one warp, few registers) copies the program's fixed tiles once (q; q and dO;
  k and v) and then each tile pair of the band (k, v; or q, dO) into a ring of NUM_BUFFERS
  shared-memory slots with TMA, waiting for a slot the compute partition has released ("empty"
  barrier) and announcing it with the "ready" barrier the copy completes;
- the compute partition (the kernel's num_warps, 8: two warp groups, each with half the program's
  rows) runs the products on the tensor cores (wgmma: operands from shared memory, or the sigmoid's
  weights from registers), the sigmoid with the ALiBi term, the band mask on the tiles at the
  window's far edge or on the diagonal only, and releases the slot. With PIPELINE (forward only),
  the next tile's scores are issued asynchronously before this tile's sigmoid, as FlashAttention-3
  does within a warp group.

So the copies overlap the arithmetic without software pipelining, and the two warp groups'
sigmoids and products interleave on the SM as the warp schedulers pick them. The ping-pong kernels
(swat_query_pingpong_kernel: the forward or the dQ pass; swat_dkdv_pingpong_kernel) order them
instead, as FlashAttention-3 does; they were measured fastest at head size 128 (NOTES.md, v12) and
are now the harness's Hopper path, harness/ops/swat/hopper.py, with the partitions these kernels
share: swat_fwd_gluon and swat_bwd_gluon launch them too, with the tiles and slots a probe asks for.

The sigmoid is triton_common's, in the modes the current passes use (SIGMOID_MODE). q, k, v, dO
are read through descriptors over [B * T, H * d] (hopper.descriptor): rows of a neighbouring
sequence that a tile reaches into get weight 0 from the mask, rows outside the tensor read as
zeros. bf16 / fp16, no packed documents, no GQA.
"""
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait

from harness.ops.swat.function import SIGMOID_MODE
from harness.ops.swat.hopper import (
    _key_block,
    _load_partition,
    _program,
    _query_block,
    _release,
    _ring,
    _store_rows,
    _weights,
    _weights_t,
    descriptor,
    swat_dkdv_pingpong_kernel,
    swat_query_pingpong_kernel,
)
from harness.ops.swat.triton_common import key_block_ranges, query_block_ranges


@gluon.jit
def _query_partition(q_smem, do_smem, k_bufs, v_bufs, fixed_bar, ready, empty, out_base, so_t, T, m0, n_lo, n_hi,
                     full_lo, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M: gl.constexpr,
                     BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, SIGMOID: gl.constexpr, DQ: gl.constexpr,
                     PIPELINE: gl.constexpr, num_warps: gl.constexpr):
    """The forward (out = sum_j p_ij v_j) or, with DQ, the dQ pass (out = scale sum_j ds_ij k_j with
    ds = (dO v^T) p (1 - p)) of one query block."""
    rows, cols, keys, col_term, s_zero, acc = _query_block(m0, W, g_slope, BLOCK_M, BLOCK_N, HEAD_DIM, num_warps)
    o_layout: gl.constexpr = acc.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    num_buffers: gl.constexpr = k_bufs.type.shape[0]
    tiles = gl.cdiv(n_hi - n_lo, BLOCK_N)
    mbarrier.wait(fixed_bar, 0)
    if PIPELINE:
        gl.static_assert(not DQ, "PIPELINE is built for the forward only")
        gl.static_assert(num_buffers >= 2, "the pipelined loop holds two K/V slots at once")
        mbarrier.wait(ready.index(0), 0)
        s = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), s_zero, use_acc=False)
        for i in range(tiles - 1):
            slot = i % num_buffers
            after = (i + 1) % num_buffers
            mbarrier.wait(ready.index(after), ((i + 1) // num_buffers) & 1)
            s_next = warpgroup_mma(q_smem, k_bufs.index(after).permute((1, 0)), s_zero, use_acc=False,
                                   is_async=True)
            p = _weights(s, rows, cols, keys, col_term, n_lo + i * BLOCK_N, full_lo, full_hi, g_scale, g_slope,
                         g_bias, SIGMOID)
            acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), a_layout), v_bufs.index(slot), acc,
                                is_async=True)
            s, acc = warpgroup_mma_wait(0, deps=(s_next, acc))
            _release(empty, slot)
        last = (tiles - 1) % num_buffers
        p = _weights(s, rows, cols, keys, col_term, n_lo + (tiles - 1) * BLOCK_N, full_lo, full_hi, g_scale,
                     g_slope, g_bias, SIGMOID)
        acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), a_layout), v_bufs.index(last), acc)
        _release(empty, last)
    else:
        for i in range(tiles):
            slot = i % num_buffers
            mbarrier.wait(ready.index(slot), (i // num_buffers) & 1)
            k_slot = k_bufs.index(slot)
            s = warpgroup_mma(q_smem, k_slot.permute((1, 0)), s_zero, use_acc=False)
            p = _weights(s, rows, cols, keys, col_term, n_lo + i * BLOCK_N, full_lo, full_hi, g_scale, g_slope,
                         g_bias, SIGMOID)
            if DQ:
                dp = warpgroup_mma(do_smem, v_bufs.index(slot).permute((1, 0)), s_zero, use_acc=False)
                ds = dp * (p - p * p)
                acc = warpgroup_mma(gl.convert_layout(ds.to(q_smem.dtype), a_layout), k_slot, acc)
            else:
                acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), a_layout), v_bufs.index(slot), acc)
            _release(empty, slot)
    if DQ:
        acc = acc * scale
    _store_rows(acc, out_base, so_t, m0, T, BLOCK_M, HEAD_DIM, o_layout)


@gluon.jit
def _dkdv_partition(k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty, dk_base, dv_base, stride_t, T, n0,
                    m_lo, m_hi, full_lo, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M: gl.constexpr,
                    BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, SIGMOID: gl.constexpr, num_warps: gl.constexpr):
    """dV = P^T dO and dK = scale dS^T Q of one key block, over the query tiles of its band; the
    tiles are worked transposed ([keys, queries]) so that both sums are products with an operand
    in registers."""
    key_idx, query_idx, lim, key_term, t_zero, dk, dv = _key_block(n0, T, W, g_slope, BLOCK_N, BLOCK_M, HEAD_DIM,
                                                                   num_warps)
    acc_layout: gl.constexpr = dk.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    num_buffers: gl.constexpr = q_bufs.type.shape[0]
    mbarrier.wait(fixed_bar, 0)
    for i in range(gl.cdiv(m_hi - m_lo, BLOCK_M)):
        slot = i % num_buffers
        mbarrier.wait(ready.index(slot), (i // num_buffers) & 1)
        q_slot = q_bufs.index(slot)
        do_slot = do_bufs.index(slot)
        s_t = warpgroup_mma(k_smem, q_slot.permute((1, 0)), t_zero, use_acc=False)
        p_t = _weights_t(s_t, m_lo + i * BLOCK_M, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale,
                         g_slope, g_bias, SIGMOID)
        dv = warpgroup_mma(gl.convert_layout(p_t.to(k_smem.dtype), a_layout), do_slot, dv)
        dp_t = warpgroup_mma(v_smem, do_slot.permute((1, 0)), t_zero, use_acc=False)
        ds_t = dp_t * (p_t - p_t * p_t)
        dk = warpgroup_mma(gl.convert_layout(ds_t.to(k_smem.dtype), a_layout), q_slot, dk)
        _release(empty, slot)
    _store_rows(dk * scale, dk_base, stride_t, n0, T, BLOCK_N, HEAD_DIM, acc_layout)
    _store_rows(dv, dv_base, stride_t, n0, T, BLOCK_N, HEAD_DIM, acc_layout)


@gluon.jit
def swat_query_gluon_kernel(q_desc, k_desc, v_desc, do_desc, Out, Slopes, T, H, W, bias, scale,
                            so_b, so_t, so_h, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                            NUM_BUFFERS: gl.constexpr, SIGMOID: gl.constexpr, DQ: gl.constexpr,
                            PIPELINE: gl.constexpr, num_warps: gl.constexpr):
    """The forward, or with DQ the dQ pass (do_desc then is dO's; otherwise it is not read)."""
    b, h, m0, g_scale, g_slope, g_bias = _program(T, H, Slopes, scale, bias, BLOCK_M, SIGMOID, "pairs")
    # the band's key tiles for these rows, [n_lo, n_hi); those in [full_start, m0) are inside the
    # band for every row and need no mask
    n_lo, full_start, _, n_hi = query_block_ranges(m0, 0, 0, T, W, BLOCK_M, BLOCK_N)

    q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    if DQ:
        do_smem = gl.allocate_shared_memory(do_desc.dtype, do_desc.block_type.shape, do_desc.layout)
    else:
        do_smem = q_smem
    k_bufs, v_bufs, fixed_bar, ready, empty = _ring(k_desc, v_desc, NUM_BUFFERS)
    gl.warp_specialize([
        (_query_partition, (q_smem, do_smem, k_bufs, v_bufs, fixed_bar, ready, empty,
                            Out + b.to(gl.int64) * so_b + h * so_h, so_t, T, m0, n_lo, n_hi, full_start, m0, W, g_scale,
                            g_slope, g_bias, scale, BLOCK_M, BLOCK_N, HEAD_DIM, SIGMOID, DQ, PIPELINE,
                            num_warps)),
        (_load_partition, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_bufs, v_bufs, fixed_bar, ready, empty,
                           b * T, m0, h * HEAD_DIM, n_lo, n_hi, BLOCK_N, DQ)),
    ], [1], [24])


@gluon.jit
def swat_dkdv_gluon_kernel(q_desc, k_desc, v_desc, do_desc, DK, DV, Slopes, T, H, W, bias, scale,
                           s_b, s_t, s_h, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                           NUM_BUFFERS: gl.constexpr, SIGMOID: gl.constexpr, num_warps: gl.constexpr):
    b, h, n0, g_scale, g_slope, g_bias = _program(T, H, Slopes, scale, bias, BLOCK_N, SIGMOID, "pairs")
    # the band's query tiles for these keys, [n0, m_hi); those in [n0 + BLOCK_N, full_hi) see every
    # key of the block and need no mask
    _, _, _, full_hi, m_hi = key_block_ranges(n0, T, T, T, W, BLOCK_M, BLOCK_N)

    k_smem = gl.allocate_shared_memory(k_desc.dtype, k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, v_desc.block_type.shape, v_desc.layout)
    q_bufs, do_bufs, fixed_bar, ready, empty = _ring(q_desc, do_desc, NUM_BUFFERS)
    offset = b.to(gl.int64) * s_b + h * s_h
    gl.warp_specialize([
        (_dkdv_partition, (k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty, DK + offset, DV + offset, s_t, T,
                           n0, n0, m_hi, n0 + BLOCK_N, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M, BLOCK_N,
                           HEAD_DIM, SIGMOID, num_warps)),
        (_load_partition, (k_desc, v_desc, q_desc, do_desc, k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty,
                           b * T, n0, h * HEAD_DIM, n0, m_hi, BLOCK_M, True)),
    ], [1], [24])


def swat_fwd_gluon(q, k, v, slopes, window: int, scale: float, block_m=128, block_n=64, num_buffers=2,
                   pipeline=False, num_warps=8, maxnreg=168, pingpong=False):
    """o [B, T, H, d] of SWAT's forward for contiguous q, k, v (bf16/fp16, H == Hkv, no documents);
    with pingpong, swat_query_pingpong_kernel (two partitions of num_warps / 2 warps taking turns)."""
    B, T, H, d = q.shape
    out = q.new_empty(q.shape)
    if pingpong:
        q_desc = descriptor(q, block_m // 2)
        swat_query_pingpong_kernel[(B * H * triton.cdiv(T, block_m),)](
            q_desc, descriptor(k, block_n), descriptor(v, block_n), q_desc, out, slopes, T, H, min(window, T),
            0.0, scale, *out.stride()[:3], BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d,
            NUM_BUFFERS=num_buffers, SIGMOID=SIGMOID_MODE["fwd"], DQ=False, ORDER="pairs", num_warps=num_warps // 2,
            maxnreg=maxnreg)
        return out
    q_desc = descriptor(q, block_m)
    swat_query_gluon_kernel[(B * H * triton.cdiv(T, block_m),)](
        q_desc, descriptor(k, block_n), descriptor(v, block_n), q_desc, out, slopes, T, H, min(window, T),
        0.0, scale, *out.stride()[:3], BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d,
        NUM_BUFFERS=num_buffers, SIGMOID=SIGMOID_MODE["fwd"], DQ=False, PIPELINE=pipeline, num_warps=num_warps,
        maxnreg=maxnreg)
    return out


def swat_bwd_gluon(do, q, k, v, slopes, window: int, scale: float, dq_tiles=(128, 64), dkdv_tiles=(64, 128),
                   num_buffers=2, num_warps=8, maxnreg=168, pingpong=()):
    """(dq, dk, dv) of SWAT for the forward's inputs and the output's gradient do, all contiguous
    [B, T, H, d]: the dQ pass and the dK/dV pass, as harness/ops/swat/triton_bwd.py splits them;
    the passes pingpong names ("dq", "dkdv") run in the ping-pong kernels."""
    B, T, H, d = q.shape
    W = min(window, T)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bm, bn = dq_tiles
    if "dq" in pingpong:
        swat_query_pingpong_kernel[(B * H * triton.cdiv(T, bm),)](
            descriptor(q, bm // 2), descriptor(k, bn), descriptor(v, bn), descriptor(do, bm // 2), dq, slopes, T, H,
            W, 0.0, scale, *dq.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d,
            NUM_BUFFERS=num_buffers, SIGMOID=SIGMOID_MODE["bwd"], DQ=True, ORDER="pairs", num_warps=num_warps // 2,
            maxnreg=maxnreg)
    else:
        swat_query_gluon_kernel[(B * H * triton.cdiv(T, bm),)](
            descriptor(q, bm), descriptor(k, bn), descriptor(v, bn), descriptor(do, bm), dq, slopes, T, H, W,
            0.0, scale, *dq.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d,
            NUM_BUFFERS=num_buffers, SIGMOID=SIGMOID_MODE["bwd"], DQ=True, PIPELINE=False, num_warps=num_warps,
            maxnreg=maxnreg)
    bm, bn = dkdv_tiles
    kernel, key_rows, warps, order = ((swat_dkdv_pingpong_kernel, bn // 2, num_warps // 2, {"ORDER": "pairs"})
                                      if "dkdv" in pingpong else (swat_dkdv_gluon_kernel, bn, num_warps, {}))
    kernel[(B * H * triton.cdiv(T, bn),)](
        descriptor(q, bm), descriptor(k, key_rows), descriptor(v, key_rows), descriptor(do, bm), dk, dv, slopes, T, H,
        W, 0.0, scale, *dk.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_BUFFERS=num_buffers,
        SIGMOID=SIGMOID_MODE["bwd"], **order, num_warps=warps, maxnreg=maxnreg)
    return dq, dk, dv
