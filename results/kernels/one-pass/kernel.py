"""hopper.py's backward in one pass, FlashAttention-3's way: a probe kernel, not the harness's path.

One program per key block of 128 keys (two compute warp groups of 64 keys each, hopper.py's dK/dV
ping-pong schedule) over the band's query tiles (TILES: 32 queries); per tile 5 matrix products
instead of the two passes' 7, and one sigmoid instead of two. dK and dV stay in registers; each
group writes its dS^T into shared memory, where both groups' halves meet, and computes dQ^T =
k^T dS^T for its half of the head's columns (the queries as the product's N, so that 32 query rows
suffice), stages it transposed in shared memory and adds it into an fp32 dQ buffer by the copy
engine's bulk reduction (TMA reduce-add), as FlashAttention-3 does.

Measured on an H100 (README.md here): correct (dk and dv equal the two passes' bit for bit, dq is
within 2^-9 of their largest value), and the reduction is free (the kernel takes the same time
without it), but the kernel alone takes about 3.3 ms at T = 4K, more than the two passes' whole
backward (3.0-3.1) and SDPA's (2.8-2.9): 5 products over 32-query tiles cost what 7 over the two
passes' tiles do. 64-query tiles spill (660 bytes a thread) and take twice as long. Earlier designs
(element-wise atomics from the compute groups or from a dQ partition) are in this folder's history.
"""
import torch
from triton._C.libtriton import ir
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language._core import builtin
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from harness.ops.swat import hopper
from harness.ops.swat.hopper import (
    _first_key_scores,
    _key_block,
    _key_scores,
    _load_partition,
    _mma_layout,
    _pingpong_step,
    _program,
    _release,
    _ring,
    _store_rows,
    _turns,
    _weights_t,
    descriptor,
)
from harness.ops.swat.triton_common import cdiv, key_block_ranges

# Triton 3.6's Gluon names the barrier of a partition's threads thread_barrier, later ones barrier
thread_barrier = gl.thread_barrier if hasattr(gl, "thread_barrier") else gl.barrier


@builtin
def _tma_reduce_add_36(tensor_desc, coord, src, _semantic=None):
    """Later Gluon's tma.async_atomic_add for Triton 3.6, whose Gluon builder has the operation
    (create_async_tma_reduce, lowered to cp.reduce.async.bulk.tensor) but no Python name for it."""
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord, src.handle)


# Add a shared tile into the global tensor of a descriptor by the copy engine's bulk reduction
tma_reduce_add = getattr(tma, "async_atomic_add", _tma_reduce_add_36)
TILES = (32, 128)  # query tile, key block
NUM_BUFFERS = 3  # ring slots of q and dO tiles
DQ_SLOTS = 2  # each group's staging slots of dQ^T, each free again once its reduction has read it
SERIAL = False  # _one_pass_partition's tiles one at a time


@gluon.jit
def _share_ds(ds_t, ds_bufs, ds_ready, ds_free, i, GROUP: gl.constexpr):
    """Write this group's dS^T of query tile i into its half of the tile's ds slot (the slots
    alternate by tile; a slot is written again once both groups' dQ products of two tiles before
    have read it) and announce it on ds_ready."""
    ds_slot = i % 2
    mbarrier.wait(ds_free.index(ds_slot), ((i // 2) & 1) ^ 1)  # the first two tiles do not wait
    ds_bufs.index(2 * ds_slot + GROUP).store(ds_t)
    fence_async_shared()
    thread_barrier()  # every thread's part of dS^T is in shared memory before the arrival
    mbarrier.arrive(ds_ready.index(ds_slot), count=1)


@gluon.jit
def _one_pass_operands(s_t, dp_t, ds_bufs, ds_ready, ds_free, i, m, n0, key_idx, query_idx, key_term, lim, full_lo,
                       full_hi, g_scale, g_slope, g_bias, SIGMOID: gl.constexpr, GROUP: gl.constexpr,
                       dtype: gl.constexpr, layout: gl.constexpr):
    """P^T and dS^T of query tile i (from m) in registers as wgmma takes them, dS^T also shared
    with the other group (_share_ds)."""
    p_t = _weights_t(s_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope, g_bias,
                     SIGMOID)
    ds_t = (dp_t * (p_t - p_t * p_t)).to(dtype)
    _share_ds(ds_t, ds_bufs, ds_ready, ds_free, i, GROUP)
    return gl.convert_layout(p_t.to(dtype), layout)


@gluon.jit
def _dq_product(k_halves, ds_bufs, ds_ready, dq_zero, i, GROUP: gl.constexpr):
    """Issue dQ^T of query tile i for this group's half of the head's columns, k^T dS^T over both
    groups' keys, once both groups' dS^T are in the tile's ds slot."""
    half_d: gl.constexpr = dq_zero.shape[0]
    ds_slot = i % 2
    mbarrier.wait(ds_ready.index(ds_slot), (i // 2) & 1)
    dq = warpgroup_mma(k_halves.index(0).slice(GROUP * half_d, half_d, dim=1).permute((1, 0)),
                       ds_bufs.index(2 * ds_slot), dq_zero, use_acc=False, is_async=True)
    return warpgroup_mma(k_halves.index(1).slice(GROUP * half_d, half_d, dim=1).permute((1, 0)),
                         ds_bufs.index(2 * ds_slot + 1), dq, is_async=True)


@gluon.jit
def _add_dq(dq, dq_desc, dq_slots, row, col, i, GROUP: gl.constexpr, passed):
    """Add dQ^T of query tile i (this group's half of the head's columns) into the fp32 dQ buffer's
    rows row.., columns col.. by the copy engine's bulk reduction (TMA reduce-add), from this
    group's staging slot i % slots, written (transposed) once the reduction that read it slots
    tiles before has; the tensor cores go on meanwhile. passed: a barrier whose first phase completed at
    launch. Waiting on it costs one instruction; without an mbarrier wait before the staging store,
    ptxas (Triton 3.6's) serializes every wgmma of the kernel (its warning C7514), as it does when
    dQ^T is not used at all."""
    slots: gl.constexpr = dq_slots.type.shape[0] // 2
    slot = dq_slots.index(GROUP * slots + i % slots)
    mbarrier.wait(passed, 0)  # returns at once (see above)
    tma.store_wait(slots - 1)  # the issuing thread's reduction of tile i - slots has read the slot
    thread_barrier()
    slot.store(gl.permute(dq, [1, 0]))
    fence_async_shared()
    thread_barrier()  # every thread's part of dQ^T is in shared memory before the reduction reads it
    tma_reduce_add(dq_desc, [row, col], slot)


@gluon.jit
def _dkdv_products(p_t, dv, dk, q_bufs, do_bufs, ds_bufs, slot, i, GROUP: gl.constexpr):
    """Issue query tile i's dv += P^T dO and dk += dS^T q (its q and dO in ring slot `slot`, its
    dS^T in this group's half of its ds slot)."""
    dv = warpgroup_mma(p_t, do_bufs.index(slot), dv, is_async=True)
    dk = warpgroup_mma(ds_bufs.index(2 * (i % 2) + GROUP), q_bufs.index(slot), dk, is_async=True)
    return dv, dk


@gluon.jit
def _finish_tile(dq, empty, ds_free, slot, i, dq_desc, dq_slots, dq_row, dq_col, GROUP: gl.constexpr, passed):
    """Once query tile i's products are done: free its ring slot and (for this group) its ds slot,
    and add its dQ (rows dq_row.., this group's columns from dq_col)."""
    _release(empty, slot)
    mbarrier.arrive(ds_free.index(i % 2), count=1)
    _add_dq(dq, dq_desc, dq_slots, dq_row, dq_col, i, GROUP, passed)


@gluon.jit
def _one_pass_partition(k_smem, v_smem, k_halves, q_bufs, do_bufs, ds_bufs, fixed_bar, ready, empty, turns, ds_ready,
                        ds_free, passed, dq_desc, dq_slots, dq_row, dq_col, dk_base, dv_base, stride_t, T, n0,
                        m_lo, m_hi, full_lo, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M: gl.constexpr,
                        ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, SIGMOID: gl.constexpr, SERIAL: gl.constexpr,
                        GROUP: gl.constexpr, num_warps: gl.constexpr):
    """dV, dK and (added into the fp32 dQ) dQ for one of a key block's two halves of ROWS keys from
    n0, FlashAttention-3's one-pass backward in the ping-pong schedule of _dkdv_pingpong_partition:
    in this group's turn it issues the query tile's S^T = k q^T and dP^T = v dO^T and the previous
    tile's dv += P^T dO and dk += dS^T q, passes the turn, and issues the previous tile's dQ^T =
    k^T dS^T (this group's half of the head's columns, over both groups' keys: their dS^T meet in
    shared memory); then computes this tile's P^T and dS^T while those run, and adds the previous
    tile's dQ. dQ^T puts the queries in the product's N, so that BLOCK_M may be below wgmma's 64
    rows. SERIAL: one tile at a time instead (its S^T and dP^T issued in the group's turn and
    waited for, then its P^T and dS^T, then its dv, dk and dQ^T); only the two groups' turns
    overlap, but a group holds one tile's S^T and dP^T, not two, which 64-query tiles need."""
    key_idx, query_idx, lim, key_term, t_zero, dk, dv = _key_block(n0, T, W, g_slope, ROWS, BLOCK_M, HEAD_DIM,
                                                                   num_warps)
    acc_layout: gl.constexpr = dk.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    dq_zero = gl.zeros([HEAD_DIM // 2, BLOCK_M], gl.float32, _mma_layout(num_warps, BLOCK_M))
    num_buffers: gl.constexpr = q_bufs.type.shape[0]
    dtype: gl.constexpr = k_smem.dtype
    tiles = gl.cdiv(m_hi - m_lo, BLOCK_M)
    if SERIAL:
        mbarrier.wait(fixed_bar, 0)
        for i in range(tiles):
            slot, _ = _pingpong_step(ready, turns, i, num_buffers, GROUP)
            s_t, dp_t = _key_scores(k_smem, v_smem, q_bufs, do_bufs, slot, t_zero)
            mbarrier.arrive(turns.index(1 - GROUP), count=1)
            s_t, dp_t = warpgroup_mma_wait(0, deps=(s_t, dp_t))
            p_t = _one_pass_operands(s_t, dp_t, ds_bufs, ds_ready, ds_free, i, m_lo + i * BLOCK_M, n0, key_idx,
                                     query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope, g_bias, SIGMOID,
                                     GROUP, dtype, a_layout)
            dv, dk = _dkdv_products(p_t, dv, dk, q_bufs, do_bufs, ds_bufs, slot, i, GROUP)
            dq = _dq_product(k_halves, ds_bufs, ds_ready, dq_zero, i, GROUP)
            dv, dk, dq, p_t = warpgroup_mma_wait(0, deps=(dv, dk, dq, p_t))
            _finish_tile(dq, empty, ds_free, slot, i, dq_desc, dq_slots, dq_row + m_lo + i * BLOCK_M, dq_col, GROUP,
                         passed)
    else:
        gl.static_assert(num_buffers >= 2, "each step holds two q/dO slots: this tile's and the previous tile's")
        s_t, dp_t = _first_key_scores(k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, turns, t_zero, GROUP)
        p_t = _one_pass_operands(s_t, dp_t, ds_bufs, ds_ready, ds_free, 0, m_lo, n0, key_idx, query_idx, key_term,
                                 lim, full_lo, full_hi, g_scale, g_slope, g_bias, SIGMOID, GROUP, dtype, a_layout)
        for i in range(1, tiles):
            slot, before = _pingpong_step(ready, turns, i, num_buffers, GROUP)
            s_t, dp_t = _key_scores(k_smem, v_smem, q_bufs, do_bufs, slot, t_zero)
            dv, dk = _dkdv_products(p_t, dv, dk, q_bufs, do_bufs, ds_bufs, before, i - 1, GROUP)
            mbarrier.arrive(turns.index(1 - GROUP), count=1)
            dq = _dq_product(k_halves, ds_bufs, ds_ready, dq_zero, i - 1, GROUP)
            s_t, dp_t = warpgroup_mma_wait(4, deps=(s_t, dp_t))  # in order: S^T, dP^T done; dv, dk, dQ^T may run
            p_next = _one_pass_operands(s_t, dp_t, ds_bufs, ds_ready, ds_free, i, m_lo + i * BLOCK_M, n0, key_idx,
                                        query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope, g_bias, SIGMOID,
                                        GROUP, dtype, a_layout)
            dv, dk, dq, p_t = warpgroup_mma_wait(0, deps=(dv, dk, dq, p_t))
            _finish_tile(dq, empty, ds_free, before, i - 1, dq_desc, dq_slots, dq_row + m_lo + (i - 1) * BLOCK_M,
                         dq_col, GROUP, passed)
            p_t = p_next
        last = (tiles - 1) % num_buffers
        dv, dk = _dkdv_products(p_t, dv, dk, q_bufs, do_bufs, ds_bufs, last, tiles - 1, GROUP)
        dq = _dq_product(k_halves, ds_bufs, ds_ready, dq_zero, tiles - 1, GROUP)
        dv, dk, dq = warpgroup_mma_wait(0, deps=(dv, dk, dq))
        _finish_tile(dq, empty, ds_free, last, tiles - 1, dq_desc, dq_slots, dq_row + m_lo + (tiles - 1) * BLOCK_M,
                     dq_col, GROUP, passed)
    _store_rows(dk * scale, dk_base, stride_t, n0, T, ROWS, HEAD_DIM, acc_layout)
    _store_rows(dv, dv_base, stride_t, n0, T, ROWS, HEAD_DIM, acc_layout)
    tma.store_wait(0)  # the staging slots stay until the last reduction has read them


@gluon.jit
def swat_bwd_one_pass_kernel(q_desc, k_desc, v_desc, do_desc, dq_desc, DK, DV, Slopes, T, H, W, bias, scale, s_b, s_t,
                             s_h, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                             NUM_BUFFERS: gl.constexpr, DQ_SLOTS: gl.constexpr, SERIAL: gl.constexpr,
                             SIGMOID: gl.constexpr, ORDER: gl.constexpr, num_warps: gl.constexpr):
    """The whole backward in one pass over each key block (_one_pass_partition): dK and dV stored,
    dQ added into the fp32 buffer of dq_desc ([B * T, H * HEAD_DIM], zero before the launch) by TMA
    reduce-add (a tile's rows past T add zeros: their weights are masked). Shared memory: k and v
    (both halves), the ring of q and dO tiles, two slots of dS^T with both groups' halves, and
    DQ_SLOTS staging slots of dQ for each group."""
    b, h, n0, g_scale, g_slope, g_bias = _program(T, H, Slopes, scale, bias, BLOCK_N, SIGMOID, ORDER)
    _, _, _, full_hi, m_hi = key_block_ranges(n0, T, T, T, W, BLOCK_M, BLOCK_N)
    half: gl.constexpr = BLOCK_N // 2
    half_d: gl.constexpr = HEAD_DIM // 2

    k_smem = gl.allocate_shared_memory(k_desc.dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    q_bufs, do_bufs, fixed_bar, ready, empty = _ring(q_desc, do_desc, NUM_BUFFERS, 2)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([half, BLOCK_M], k_desc.dtype)
    ds_bufs = gl.allocate_shared_memory(k_desc.dtype, [4, half, BLOCK_M], ds_layout)  # (slot, group)
    dq_slots = gl.allocate_shared_memory(gl.float32, [2 * DQ_SLOTS, BLOCK_M, half_d], dq_desc.layout)  # (group, slot)
    ds_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    ds_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(ds_ready.index(i), count=2)
        mbarrier.init(ds_free.index(i), count=2)
    turns = _turns()
    passed = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())  # _add_dq's
    mbarrier.init(passed, count=1)
    mbarrier.arrive(passed, count=1)
    offset = b.to(gl.int64) * s_b + h * s_h
    gl.warp_specialize([
        (_one_pass_partition, (k_smem.index(0), v_smem.index(0), k_smem, q_bufs, do_bufs, ds_bufs, fixed_bar, ready,
                               empty, turns, ds_ready, ds_free, passed, dq_desc, dq_slots, b * T, h * HEAD_DIM,
                               DK + offset, DV + offset, s_t, T, n0, n0, m_hi, n0 + BLOCK_N, full_hi, W, g_scale,
                               g_slope, g_bias, scale, BLOCK_M, half, HEAD_DIM, SIGMOID, SERIAL, 0, num_warps)),
        (_one_pass_partition, (k_smem.index(1), v_smem.index(1), k_smem, q_bufs, do_bufs, ds_bufs, fixed_bar, ready,
                               empty, turns, ds_ready, ds_free, passed, dq_desc, dq_slots, b * T,
                               h * HEAD_DIM + half_d, DK + offset, DV + offset, s_t, T, n0 + half, n0, m_hi,
                               n0 + BLOCK_N, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M, half, HEAD_DIM,
                               SIGMOID, SERIAL, 1, num_warps)),
        (_load_partition, (k_desc, v_desc, q_desc, do_desc, k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty,
                           b * T, n0, h * HEAD_DIM, n0, m_hi, BLOCK_M, True, True)),
    ], [num_warps, 1], [240, 24])


def swat_bwd_hopper_one_pass(do, q, k, v, slopes, window: int, sigmoid_bias: float, scale: float, sigmoid: int,
                             order: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) as hopper.swat_bwd_hopper's, in one pass (swat_bwd_one_pass_kernel) with this
    module's TILES, NUM_BUFFERS and DQ_SLOTS: dQ is added into an fp32 buffer, in an order that
    varies from run to run, then scaled and cast."""
    B, T, H, d = q.shape
    bm, bn = TILES
    dq32 = torch.zeros((B, T, H, d), device=q.device, dtype=torch.float32)
    layout = gl.NVMMASharedLayout.get_default_for([bm, d // 2], gl.float32)
    dq_desc = TensorDescriptor(dq32, [B * T, H * d], [H * d, 1], [bm, d // 2], layout)
    dk, dv = (torch.empty((B, T, H, d), device=q.device, dtype=q.dtype) for _ in range(2))
    swat_bwd_one_pass_kernel[(B * H * cdiv(T, bn),)](
        descriptor(q, bm), descriptor(k, bn // 2), descriptor(v, bn // 2), descriptor(do, bm), dq_desc, dk, dv, slopes,
        T, H, window, sigmoid_bias, scale, *dk.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d,
        NUM_BUFFERS=NUM_BUFFERS, DQ_SLOTS=DQ_SLOTS, SERIAL=SERIAL, SIGMOID=sigmoid, ORDER=order,
        num_warps=hopper.GROUP_WARPS, maxnreg=hopper.MAXNREG)
    return (dq32 * scale).to(q.dtype), dk, dv
