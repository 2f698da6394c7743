"""The SWAT forward in Gluon with warp specialization written by hand (NOTES.md v9's next step):
what Triton 3.6's automatic pass could not run, spelled out with Gluon's Hopper primitives.

One program per (query block of BLOCK_M rows, batch x head), as in harness/ops/swat/triton_fwd.py,
split into two partitions that share a ring of NUM_BUFFERS shared-memory K/V tiles:

- the load partition (one warp, few registers) copies the query block once, then each key tile
  of the band into the ring with TMA, waiting for a slot the compute partition has released
  ("empty" barrier) and announcing it with the "ready" barrier the copy completes;
- the compute partition (the kernel's num_warps, 8: two warp groups, 64 query rows each) runs,
  per key tile, S = Q K^T on the tensor cores (wgmma, Q and K from shared memory), the sigmoid
  with the ALiBi term in registers, the band mask on tiles at the window's edge or the diagonal
  only, and O += P V (wgmma, P from registers), then releases the slot. With PIPELINE, the next
  tile's S is issued asynchronously before this tile's sigmoid, as FlashAttention-3 does within a
  warp group, so the tensor cores and the sigmoid's arithmetic overlap inside each group too.

So the copies overlap the arithmetic without software pipelining, and the two warp groups'
sigmoids and products interleave on the SM. The sigmoid is triton_common's, in the mode the
current forward uses (SIGMOID_MODE["fwd"]). q, k, v are read through descriptors over
[B * T, H * d] (contiguous [B, T, H, d]): rows of a neighbouring sequence that a tile reaches into
get weight 0 from the mask, rows outside the tensor read as zeros. bf16 / fp16, no packed
documents, no GQA: the probe's shapes.
"""
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from harness.ops.swat.function import SIGMOID_MODE
from harness.ops.swat.triton_common import LOG2E, sigmoid_neg_log2


@gluon.jit
def _load_partition(q_desc, k_desc, v_desc, q_smem, k_bufs, v_bufs, q_bar, ready, empty, row0, m0, col, n_lo, n_hi,
                    BLOCK_N: gl.constexpr):
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0 + m0, col], q_bar, q_smem)
    num_buffers: gl.constexpr = k_bufs.type.shape[0]
    for i in range(gl.cdiv(n_hi - n_lo, BLOCK_N)):
        slot = i % num_buffers
        phase = (i // num_buffers) & 1
        # barriers start with phase 1 complete: the first pass over the ring does not wait
        mbarrier.wait(empty.index(slot), phase ^ 1)
        bar = ready.index(slot)
        mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        n = n_lo + i * BLOCK_N
        tma.async_copy_global_to_shared(k_desc, [row0 + n, col], bar, k_bufs.index(slot))
        tma.async_copy_global_to_shared(v_desc, [row0 + n, col], bar, v_bufs.index(slot))


@gluon.jit
def _weights(s, rows, cols, keys, col_term, n, full_lo, full_hi, neg_c, neg_slope, neg_bias, SIGMOID: gl.constexpr):
    """The sigmoid weights of key tile n from its scores s (triton_common's sigmoid and terms), the
    band mask applied only where the tile is at the window's far edge or on the diagonal."""
    row_term = neg_slope * (rows - n).to(gl.float32) + neg_bias
    p = sigmoid_neg_log2(s * neg_c + (gl.expand_dims(row_term, 1) - gl.expand_dims(col_term, 0)), SIGMOID)
    if (n < full_lo) | (n >= full_hi):
        dist = gl.expand_dims(rows - n, 1) - gl.expand_dims(cols, 0)
        p = gl.where(dist.to(gl.uint32, bitcast=True) < gl.expand_dims(keys, 1), p, 0.0)
    return p


@gluon.jit
def _compute_partition(q_smem, k_bufs, v_bufs, q_bar, ready, empty, o_base, so_t, T, m0, n_lo, n_hi, full_lo,
                       full_hi, W, neg_c, neg_slope, neg_bias, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                       HEAD_DIM: gl.constexpr, SIGMOID: gl.constexpr, PIPELINE: gl.constexpr,
                       num_warps: gl.constexpr):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    keys = gl.minimum(rows + 1, W).to(gl.uint32)  # row i sees keys j with 0 <= i - j < keys
    col_term = neg_slope * cols.to(gl.float32)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    num_buffers: gl.constexpr = k_bufs.type.shape[0]
    tiles = gl.cdiv(n_hi - n_lo, BLOCK_N)
    mbarrier.wait(q_bar, 0)
    if PIPELINE:
        # FlashAttention-3's overlap within a warp group: tile i + 1's scores are issued to the
        # tensor cores (asynchronously) before tile i's sigmoid runs, so the two overlap
        gl.static_assert(num_buffers >= 2, "the pipelined loop holds two K/V slots at once")
        mbarrier.wait(ready.index(0), 0)
        s = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), s_zero, use_acc=False)
        for i in range(tiles - 1):
            slot = i % num_buffers
            after = (i + 1) % num_buffers
            mbarrier.wait(ready.index(after), ((i + 1) // num_buffers) & 1)
            s_next = warpgroup_mma(q_smem, k_bufs.index(after).permute((1, 0)), s_zero, use_acc=False,
                                   is_async=True)
            p = _weights(s, rows, cols, keys, col_term, n_lo + i * BLOCK_N, full_lo, full_hi, neg_c, neg_slope,
                         neg_bias, SIGMOID)
            acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), p_layout), v_bufs.index(slot), acc,
                                is_async=True)
            s, acc = warpgroup_mma_wait(0, deps=(s_next, acc))
            fence_async_shared()
            mbarrier.arrive(empty.index(slot), count=1)
        last = (tiles - 1) % num_buffers
        p = _weights(s, rows, cols, keys, col_term, n_lo + (tiles - 1) * BLOCK_N, full_lo, full_hi, neg_c,
                     neg_slope, neg_bias, SIGMOID)
        acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), p_layout), v_bufs.index(last), acc)
        fence_async_shared()
        mbarrier.arrive(empty.index(last), count=1)
    else:
        for i in range(tiles):
            slot = i % num_buffers
            mbarrier.wait(ready.index(slot), (i // num_buffers) & 1)
            s = warpgroup_mma(q_smem, k_bufs.index(slot).permute((1, 0)), s_zero, use_acc=False)
            p = _weights(s, rows, cols, keys, col_term, n_lo + i * BLOCK_N, full_lo, full_hi, neg_c, neg_slope,
                         neg_bias, SIGMOID)
            acc = warpgroup_mma(gl.convert_layout(p.to(q_smem.dtype), p_layout), v_bufs.index(slot), acc)
            fence_async_shared()
            mbarrier.arrive(empty.index(slot), count=1)
    offs_m = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    ptrs = o_base + gl.expand_dims(offs_m, 1) * so_t + gl.expand_dims(offs_d, 0)
    gl.store(ptrs, acc.to(o_base.dtype.element_ty), mask=gl.expand_dims(offs_m < T, 1))


@gluon.jit
def swat_fwd_gluon_kernel(q_desc, k_desc, v_desc, Out, Slopes, T, H, W, neg_c, neg_bias, so_b, so_t, so_h,
                          BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                          NUM_BUFFERS: gl.constexpr, SIGMOID: gl.constexpr, PIPELINE: gl.constexpr,
                          num_warps: gl.constexpr):
    pid_m = gl.num_programs(1) - 1 - gl.program_id(1)  # heavy (late) query blocks first
    pid_bh = gl.program_id(0)
    b = pid_bh // H
    h = pid_bh % H
    m0 = pid_m * BLOCK_M
    # the band's key tiles for these rows, [n_lo, n_hi), as triton_common.query_block_ranges has
    # them; those in [full_start, m0) are inside the band for every row and need no mask
    lo = gl.maximum(m0 - W + 1, 0)
    n_full = gl.maximum(m0 - gl.maximum(m0 + BLOCK_M - W, 0), 0) // BLOCK_N
    full_start = m0 - n_full * BLOCK_N
    n_lo = full_start - (gl.maximum(full_start - lo, 0) + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    n_hi = gl.minimum(m0 + BLOCK_M, T)
    neg_slope = -gl.load(Slopes + h).to(gl.float32) * 1.4426950408889634  # log2(e)

    q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [NUM_BUFFERS] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [NUM_BUFFERS] + v_desc.block_type.shape, v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_BUFFERS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_BUFFERS, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_BUFFERS):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)

    gl.warp_specialize([
        (_compute_partition, (q_smem, k_bufs, v_bufs, q_bar, ready, empty, Out + b.to(gl.int64) * so_b + h * so_h,
                              so_t, T, m0, n_lo, n_hi, full_start, m0, W, neg_c, neg_slope, neg_bias, BLOCK_M, BLOCK_N,
                              HEAD_DIM, SIGMOID, PIPELINE, num_warps)),
        (_load_partition, (q_desc, k_desc, v_desc, q_smem, k_bufs, v_bufs, q_bar, ready, empty, b * T, m0,
                           h * HEAD_DIM, n_lo, n_hi, BLOCK_N)),
    ], [1], [24])


def descriptors(q, k, v, block_m: int, block_n: int):
    """TMA descriptors of q (block_m rows) and k, v (block_n rows) over [B * T, H * d]."""
    B, T, H, d = q.shape
    dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}[q.dtype]

    def desc(t, rows):
        layout = gl.NVMMASharedLayout.get_default_for([rows, d], dtype)
        return TensorDescriptor(t, [B * T, H * d], [H * d, 1], [rows, d], layout)

    return desc(q, block_m), desc(k, block_n), desc(v, block_n)


def swat_fwd_gluon(q, k, v, slopes, window: int, scale: float, block_m=128, block_n=64, num_buffers=2,
                   pipeline=False, num_warps=8, maxnreg=168):
    """o [B, T, H, d] of SWAT's forward for contiguous q, k, v (bf16/fp16, H == Hkv, no documents)."""
    B, T, H, d = q.shape
    out = q.new_empty(q.shape)
    q_desc, k_desc, v_desc = descriptors(q, k, v, block_m, block_n)
    swat_fwd_gluon_kernel[(B * H, triton.cdiv(T, block_m))](
        q_desc, k_desc, v_desc, out, slopes, T, H, min(window, T), -scale * LOG2E, 0.0, *out.stride()[:3],
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d, NUM_BUFFERS=num_buffers, SIGMOID=SIGMOID_MODE["fwd"],
        PIPELINE=pipeline, num_warps=num_warps, maxnreg=maxnreg)
    return out
