"""SWAT's forward and backward on Hopper GPUs (compute capability 9.0) in Gluon, with
FlashAttention-3's ping-pong schedule: what function.py runs instead of the Triton passes where
they are faster (HOPPER_MIN_WINDOW there); the Triton passes stay the path everywhere else and
define the same function (tests/test_swat_kernel.py checks this one against the reference on a GPU).

The passes are triton_fwd.py's and triton_bwd.py's: the forward and the dQ pass run one program per
(block of BLOCK_M query rows, batch x head) over the band's key tiles, the dK/dV pass one program
per (block of BLOCK_N keys, batch x head) over the band's query tiles. Each program has three
partitions:

- the load partition (one warp, few registers) copies the program's fixed tiles once (q; q and dO;
  k and v) and then each tile pair of the band (k, v; or q, dO) into a ring of NUM_BUFFERS
  shared-memory slots with TMA, waiting for a slot both compute partitions have released ("empty"
  barrier) and announcing it with the "ready" barrier the copy completes;
- two compute partitions, one warp group each with half of the block's rows (or keys), which take
  turns at issuing their products on the tensor cores (wgmma; on the "turns" barriers), so that one
  group's sigmoid runs while the other's products use the tensor cores. In its turn a group issues
  this tile's first products (S = q k^T, and dP = dO v^T for dQ) and the previous tile's
  accumulation (o += p v; dq += ds k), then computes this tile's sigmoid with the ALiBi term, the
  band mask only on the tiles at the window's far edge or on the diagonal.

At head sizes 128 and 64 the backward runs in one pass instead (swat_bwd_one_pass_kernel, where
function.HOPPER_ONE_PASS says): one program per key block over its query tiles, FlashAttention-3's
way, with 5 matrix products and one sigmoid per tile pair instead of the two passes' 7 and two. dQ
goes into an fp32 buffer by the copy engine's bulk reduction (TMA reduce-add), which costs the
tensor cores nothing (results/kernels/one-pass/, NOTES.md v19). At head size 64 each group adds dQ
over its own keys (dq_group_columns); the dispatcher takes it from W = 4096, where it replaced the
Triton one pass (results/kernels/d64-full/, NOTES.md v23).

The sigmoid is triton_common's, in the mode the caller passes (function.SIGMOID_MODE). q, k, v, dO
are read through descriptors over [B * T, H * d]: rows of a neighbouring sequence that a tile
reaches into get weight 0 from the mask, rows outside the tensor read as zeros. bf16 / fp16, no
packed documents, no GQA. results/kernels/ws-probe/ has the other Gluon passes (not ping-pong) and
how these were measured (NOTES.md, v10-v12).
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

from harness.ops.swat.triton_common import (
    LAUNCH_OPTIONS,
    band_program,
    cdiv,
    key_block_ranges,
    query_block_ranges,
    score_unit,
    sigmoid_scaled,
)

# Gluon is experimental: Triton 3.6 names the TMA tile load async_copy_global_to_shared, later ones async_load
tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared
# ... and the barrier of a partition's threads thread_barrier, later ones barrier
thread_barrier = gl.thread_barrier if hasattr(gl, "thread_barrier") else gl.barrier


@builtin
def _tma_reduce_add_36(tensor_desc, coord, src, _semantic=None):
    """Later Gluon's tma.async_atomic_add for Triton 3.6, whose Gluon builder has the operation
    (create_async_tma_reduce, lowered to cp.reduce.async.bulk.tensor) but no Python name for it."""
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord, src.handle)


# Add a shared tile into the global tensor of a descriptor by the copy engine's bulk reduction
tma_reduce_add = getattr(tma, "async_atomic_add", _tma_reduce_add_36)


@gluon.jit
def _load_partition(a_desc, b_desc, x_desc, y_desc, a_smem, b_smem, x_bufs, y_bufs, fixed_bar, ready, empty, row0,
                    fixed_row, col, lo, hi, STEP: gl.constexpr, TWO_FIXED: gl.constexpr, HALVES: gl.constexpr = False):
    """Tile a (and b, with TWO_FIXED) at fixed_row once, then x and y at lo, lo + STEP, ... < hi
    into the ring. With HALVES, a_smem and b_smem hold two tiles each, the rows from fixed_row and
    those after them (one per warp group of the ping-pong kernels)."""
    fixed: gl.constexpr = 2 if HALVES else 1
    if TWO_FIXED:
        mbarrier.expect(fixed_bar, fixed * (a_desc.block_type.nbytes + b_desc.block_type.nbytes))
    else:
        mbarrier.expect(fixed_bar, fixed * a_desc.block_type.nbytes)
    if HALVES:
        rows: gl.constexpr = a_desc.block_type.shape[0]
        for t in gl.static_range(2):
            tma_load(a_desc, [row0 + fixed_row + t * rows, col], fixed_bar, a_smem.index(t))
            if TWO_FIXED:
                tma_load(b_desc, [row0 + fixed_row + t * rows, col], fixed_bar, b_smem.index(t))
    else:
        tma_load(a_desc, [row0 + fixed_row, col], fixed_bar, a_smem)
        if TWO_FIXED:
            tma_load(b_desc, [row0 + fixed_row, col], fixed_bar, b_smem)
    num_buffers: gl.constexpr = x_bufs.type.shape[0]
    for i in range(gl.cdiv(hi - lo, STEP)):
        slot = i % num_buffers
        # barriers start with phase 1 complete: the first pass over the ring does not wait
        mbarrier.wait(empty.index(slot), ((i // num_buffers) & 1) ^ 1)
        bar = ready.index(slot)
        mbarrier.expect(bar, x_desc.block_type.nbytes + y_desc.block_type.nbytes)
        tma_load(x_desc, [row0 + lo + i * STEP, col], bar, x_bufs.index(slot))
        tma_load(y_desc, [row0 + lo + i * STEP, col], bar, y_bufs.index(slot))


@gluon.jit
def _release(empty, slot):
    fence_async_shared()
    mbarrier.arrive(empty.index(slot), count=1)


@gluon.jit
def _store_rows(acc, base, stride, first, T, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    """acc [ROWS, HEAD_DIM] to rows first, first + 1, ... (those < T) of a [T, ., HEAD_DIM] tensor."""
    offs = first + gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    ptrs = base + gl.expand_dims(offs, 1) * stride + gl.expand_dims(offs_d, 0)
    gl.store(ptrs, acc.to(base.dtype.element_ty), mask=gl.expand_dims(offs < T, 1))


@gluon.jit
def _weights(s, rows, cols, keys, col_term, n, full_lo, full_hi, g_scale, g_slope, g_bias, SIGMOID: gl.constexpr):
    """Sigmoid weights [rows, cols] of key tile n from its scores s, masked where the tile is at the
    window's far edge or on the diagonal (n outside [full_lo, full_hi)): row i sees keys j with
    0 <= i - j < keys[i]."""
    row_term = g_slope * (rows - n).to(gl.float32) + g_bias
    p = sigmoid_scaled(s * g_scale + (gl.expand_dims(row_term, 1) - gl.expand_dims(col_term, 0)), SIGMOID)
    if (n < full_lo) | (n >= full_hi):
        dist = gl.expand_dims(rows - n, 1) - gl.expand_dims(cols, 0)
        p = gl.where(dist.to(gl.uint32, bitcast=True) < gl.expand_dims(keys, 1), p, 0.0)
    return p


@gluon.constexpr_function
def _mma_layout(num_warps, columns):
    """The wgmma accumulator layout of a tile [rows, columns]: the warps stacked along the rows, 16
    rows each (so 4 warps, one warp group, take 64 rows)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, columns, 16])


@gluon.jit
def _query_block(m0, W, g_slope, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                 num_warps: gl.constexpr):
    """For ROWS query rows from m0: their indices, a key tile's column indices, each row's band
    (row i sees keys j with 0 <= i - j < keys[i]), the ALiBi term of the columns, and zero S and o
    tiles in the wgmma accumulator layouts."""
    s_layout: gl.constexpr = _mma_layout(num_warps, BLOCK_N)
    o_layout: gl.constexpr = _mma_layout(num_warps, HEAD_DIM)
    rows = m0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, s_layout))
    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    keys = gl.minimum(rows + 1, W).to(gl.uint32)
    col_term = g_slope * cols.to(gl.float32)
    return (rows, cols, keys, col_term, gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout),
            gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout))


@gluon.jit
def _take_turn(turns, GROUP: gl.constexpr, i):
    """Wait until the other group has issued its products of its tile i - 1 (group 0) or i (group
    1); group 0's first turn does not wait (barriers start with phase 1 complete)."""
    mbarrier.wait(turns.index(GROUP), (i & 1) ^ (1 - GROUP))


@gluon.jit
def _pingpong_operand(s, dp, rows, cols, keys, col_term, n, full_lo, full_hi, g_scale, g_slope, g_bias,
                      SIGMOID: gl.constexpr, DQ: gl.constexpr, dtype: gl.constexpr, layout: gl.constexpr):
    """The left operand of key tile n's second product: the weights p (forward) or, with DQ,
    ds = dp p (1 - p), in registers as wgmma takes them."""
    p = _weights(s, rows, cols, keys, col_term, n, full_lo, full_hi, g_scale, g_slope, g_bias, SIGMOID)
    if DQ:
        p = dp * (p - p * p)
    return gl.convert_layout(p.to(dtype), layout)


@gluon.jit
def _wait_scores(s, dp, PENDING: gl.constexpr, DQ: gl.constexpr):
    """Wait until at most PENDING of this group's products are in flight, for s (and dp, with DQ;
    without, dp is s)."""
    if DQ:
        s, dp = warpgroup_mma_wait(PENDING, deps=(s, dp))
    else:
        s = warpgroup_mma_wait(PENDING, deps=(s,))
        dp = s
    return s, dp


@gluon.jit
def _pingpong_step(ready, turns, i, NUM_BUFFERS: gl.constexpr, GROUP: gl.constexpr):
    """Wait until tile i is in its slot and it is this group's turn; tile i's slot and tile i - 1's."""
    slot = i % NUM_BUFFERS
    mbarrier.wait(ready.index(slot), (i // NUM_BUFFERS) & 1)
    _take_turn(turns, GROUP, i)
    return slot, (i + NUM_BUFFERS - 1) % NUM_BUFFERS


@gluon.jit
def _pingpong_partition(q_smem, do_smem, k_bufs, v_bufs, fixed_bar, ready, empty, turns, out_base, so_t, T, m0, n_lo,
                        n_hi, full_lo, full_hi, W, g_scale, g_slope, g_bias, scale, ROWS: gl.constexpr,
                        BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, SIGMOID: gl.constexpr, DQ: gl.constexpr,
                        GROUP: gl.constexpr, num_warps: gl.constexpr):
    """The forward (o = sum_j p_ij v_j) or, with DQ, the dQ pass (dq = scale sum_j ds_ij k_j) for
    one of a block's two halves of ROWS rows, FlashAttention-3's schedule: in this group's turn it
    issues the tile's first products (S = q k^T; and dP = dO v^T with DQ) and the previous tile's
    o += p v (dq += ds k), then passes the turn to the other group, whose products run on the tensor
    cores while this group computes the tile's sigmoid."""
    rows, cols, keys, col_term, s_zero, acc = _query_block(m0, W, g_slope, ROWS, BLOCK_N, HEAD_DIM, num_warps)
    o_layout: gl.constexpr = acc.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    num_buffers: gl.constexpr = k_bufs.type.shape[0]
    gl.static_assert(num_buffers >= 2, "each step holds two slots: this tile's, and the previous tile's k or v")
    tiles = gl.cdiv(n_hi - n_lo, BLOCK_N)
    mbarrier.wait(fixed_bar, 0)
    _pingpong_step(ready, turns, 0, num_buffers, GROUP)
    s = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    dp = s
    if DQ:
        dp = warpgroup_mma(do_smem, v_bufs.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    mbarrier.arrive(turns.index(1 - GROUP), count=1)
    s, dp = _wait_scores(s, dp, 0, DQ)
    w = _pingpong_operand(s, dp, rows, cols, keys, col_term, n_lo, full_lo, full_hi, g_scale, g_slope, g_bias,
                          SIGMOID, DQ, q_smem.dtype, a_layout)
    for i in range(1, tiles):
        slot, before = _pingpong_step(ready, turns, i, num_buffers, GROUP)
        s = warpgroup_mma(q_smem, k_bufs.index(slot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dp = s
        if DQ:
            dp = warpgroup_mma(do_smem, v_bufs.index(slot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            acc = warpgroup_mma(w, k_bufs.index(before), acc, is_async=True)
        else:
            acc = warpgroup_mma(w, v_bufs.index(before), acc, is_async=True)
        mbarrier.arrive(turns.index(1 - GROUP), count=1)
        s, dp = _wait_scores(s, dp, 1, DQ)  # products finish in order: all but the last are done
        w_next = _pingpong_operand(s, dp, rows, cols, keys, col_term, n_lo + i * BLOCK_N, full_lo, full_hi, g_scale,
                                   g_slope, g_bias, SIGMOID, DQ, q_smem.dtype, a_layout)
        acc, w = warpgroup_mma_wait(0, deps=(acc, w))  # w's registers stay w's until the product has read them
        _release(empty, before)
        w = w_next
    last = (tiles - 1) % num_buffers
    if DQ:
        acc = warpgroup_mma(w, k_bufs.index(last), acc) * scale
    else:
        acc = warpgroup_mma(w, v_bufs.index(last), acc)
    _release(empty, last)
    _store_rows(acc, out_base, so_t, m0, T, ROWS, HEAD_DIM, o_layout)


@gluon.jit
def _key_block(n0, T, W, g_slope, ROWS: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr,
               num_warps: gl.constexpr):
    """For ROWS keys from n0, worked transposed ([keys, queries]): their indices, a query tile's
    indices, each key's band (key j is seen by queries i with 0 <= i - j < lim[j]), the ALiBi term
    of the keys, a zero S^T tile and the zero dK and dV accumulators, in the wgmma layouts."""
    t_layout: gl.constexpr = _mma_layout(num_warps, BLOCK_M)
    acc_layout: gl.constexpr = _mma_layout(num_warps, HEAD_DIM)
    key_idx = gl.arange(0, ROWS, layout=gl.SliceLayout(1, t_layout))
    query_idx = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, t_layout))
    lim = gl.maximum(gl.minimum(W, T - (n0 + key_idx)), 0).to(gl.uint32)  # keys past T: seen by no query
    key_term = g_slope * key_idx.to(gl.float32)
    return (key_idx, query_idx, lim, key_term, gl.zeros([ROWS, BLOCK_M], gl.float32, t_layout),
            gl.zeros([ROWS, HEAD_DIM], gl.float32, acc_layout), gl.zeros([ROWS, HEAD_DIM], gl.float32, acc_layout))


@gluon.jit
def _weights_t(s_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope, g_bias,
               SIGMOID: gl.constexpr):
    """Sigmoid weights P^T [keys from n0, queries from m] from the scores S^T, masked where the
    query tile m is at the band's edge (outside [full_lo, full_hi))."""
    query_term = g_slope * (m - n0 + query_idx).to(gl.float32) + g_bias
    p_t = sigmoid_scaled(s_t * g_scale + (gl.expand_dims(query_term, 0) - gl.expand_dims(key_term, 1)), SIGMOID)
    if (m < full_lo) | (m >= full_hi):
        dist = gl.expand_dims(m - n0 + query_idx, 0) - gl.expand_dims(key_idx, 1)
        p_t = gl.where(dist.to(gl.uint32, bitcast=True) < gl.expand_dims(lim, 1), p_t, 0.0)
    return p_t


@gluon.jit
def _weights_and_ds_t(s_t, dp_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope,
                      g_bias, SIGMOID: gl.constexpr):
    """P^T and dS^T = dP^T P^T (1 - P^T) of query tile m, fp32 in the scores' layout."""
    p_t = _weights_t(s_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope, g_bias,
                     SIGMOID)
    return p_t, dp_t * (p_t - p_t * p_t)


@gluon.jit
def _dkdv_operands(s_t, dp_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale, g_slope, g_bias,
                   SIGMOID: gl.constexpr, dtype: gl.constexpr, layout: gl.constexpr):
    """P^T and dS^T of query tile m (_weights_and_ds_t), in registers as wgmma takes them."""
    p_t, ds_t = _weights_and_ds_t(s_t, dp_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale,
                                  g_slope, g_bias, SIGMOID)
    return gl.convert_layout(p_t.to(dtype), layout), gl.convert_layout(ds_t.to(dtype), layout)


@gluon.jit
def _key_scores(k_smem, v_smem, q_bufs, do_bufs, slot, t_zero):
    """Issue S^T = k q^T and dP^T = v dO^T (keys x queries) of the query tile in ring slot `slot`."""
    s_t = warpgroup_mma(k_smem, q_bufs.index(slot).permute((1, 0)), t_zero, use_acc=False, is_async=True)
    dp_t = warpgroup_mma(v_smem, do_bufs.index(slot).permute((1, 0)), t_zero, use_acc=False, is_async=True)
    return s_t, dp_t


@gluon.jit
def _first_key_scores(k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, turns, t_zero, GROUP: gl.constexpr):
    """S^T and dP^T of a key block's first query tile, waited for: once the fixed tiles and the
    first ring slot are in and it is this group's turn, which it passes on after issuing them."""
    mbarrier.wait(fixed_bar, 0)
    _pingpong_step(ready, turns, 0, q_bufs.type.shape[0], GROUP)
    s_t, dp_t = _key_scores(k_smem, v_smem, q_bufs, do_bufs, 0, t_zero)
    mbarrier.arrive(turns.index(1 - GROUP), count=1)
    return warpgroup_mma_wait(0, deps=(s_t, dp_t))


@gluon.jit
def _dkdv_pingpong_partition(k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty, turns, dk_base, dv_base,
                             stride_t, T, n0, m_lo, m_hi, full_lo, full_hi, W, g_scale, g_slope, g_bias, scale,
                             BLOCK_M: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                             SIGMOID: gl.constexpr, GROUP: gl.constexpr, num_warps: gl.constexpr):
    """dV and dK of one of a key block's two halves of ROWS keys from n0, in the ping-pong schedule
    of _pingpong_partition: in this group's turn it issues the query tile's S^T = k q^T and
    dP^T = v dO^T and the previous tile's dv += P^T dO and dk += dS^T q, then computes the tile's
    P^T and dS^T while its own last two and the other group's products run."""
    key_idx, query_idx, lim, key_term, t_zero, dk, dv = _key_block(n0, T, W, g_slope, ROWS, BLOCK_M, HEAD_DIM,
                                                                   num_warps)
    acc_layout: gl.constexpr = dk.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    num_buffers: gl.constexpr = q_bufs.type.shape[0]
    gl.static_assert(num_buffers >= 2, "each step holds two q/dO slots: this tile's and the previous tile's")
    dtype: gl.constexpr = k_smem.dtype
    tiles = gl.cdiv(m_hi - m_lo, BLOCK_M)
    s_t, dp_t = _first_key_scores(k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, turns, t_zero, GROUP)
    p_t, ds_t = _dkdv_operands(s_t, dp_t, m_lo, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale,
                               g_slope, g_bias, SIGMOID, dtype, a_layout)
    for i in range(1, tiles):
        slot, before = _pingpong_step(ready, turns, i, num_buffers, GROUP)
        s_t, dp_t = _key_scores(k_smem, v_smem, q_bufs, do_bufs, slot, t_zero)
        dv = warpgroup_mma(p_t, do_bufs.index(before), dv, is_async=True)
        dk = warpgroup_mma(ds_t, q_bufs.index(before), dk, is_async=True)
        mbarrier.arrive(turns.index(1 - GROUP), count=1)
        s_t, dp_t = warpgroup_mma_wait(2, deps=(s_t, dp_t))  # in order: S^T and dP^T done, dv and dk may run
        p_next, ds_next = _dkdv_operands(s_t, dp_t, m_lo + i * BLOCK_M, n0, key_idx, query_idx, key_term, lim,
                                         full_lo, full_hi, g_scale, g_slope, g_bias, SIGMOID, dtype, a_layout)
        dv, dk, p_t, ds_t = warpgroup_mma_wait(0, deps=(dv, dk, p_t, ds_t))
        _release(empty, before)
        p_t = p_next
        ds_t = ds_next
    last = (tiles - 1) % num_buffers
    dv = warpgroup_mma(p_t, do_bufs.index(last), dv)
    dk = warpgroup_mma(ds_t, q_bufs.index(last), dk)
    _release(empty, last)
    _store_rows(dk * scale, dk_base, stride_t, n0, T, ROWS, HEAD_DIM, acc_layout)
    _store_rows(dv, dv_base, stride_t, n0, T, ROWS, HEAD_DIM, acc_layout)


@gluon.jit
def _program(T, H, Slopes, scale, bias, BLOCK: gl.constexpr, SIGMOID: gl.constexpr, ORDER: gl.constexpr):
    """(b, h, the block's first row, then the score's scale, the head's ALiBi slope and the bias in
    the sigmoid's units, triton_common.score_unit), in the program order ORDER (band_program)."""
    pid_bh, block = band_program(gl.program_id(0), gl.num_programs(0), gl.cdiv(T, BLOCK), H, ORDER)
    h = pid_bh % H
    first = block * BLOCK
    unit = score_unit(SIGMOID)
    return pid_bh // H, h, first, scale * unit, gl.load(Slopes + h).to(gl.float32) * unit, bias * unit


@gluon.jit
def _turns():
    """The ping-pong kernels' two turn barriers, one per compute warp group (initialised)."""
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(turns.index(0), count=1)
    mbarrier.init(turns.index(1), count=1)
    return turns


@gluon.jit
def _ring(x_desc, y_desc, NUM_BUFFERS: gl.constexpr, CONSUMERS: gl.constexpr = 1):
    """The ring's slots for tiles of x and y, and its barriers (all initialised): a slot is free
    again once each of the CONSUMERS partitions has released it."""
    x_bufs = gl.allocate_shared_memory(x_desc.dtype, [NUM_BUFFERS] + x_desc.block_type.shape, x_desc.layout)
    y_bufs = gl.allocate_shared_memory(y_desc.dtype, [NUM_BUFFERS] + y_desc.block_type.shape, y_desc.layout)
    fixed_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_BUFFERS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_BUFFERS, 1], mbarrier.MBarrierLayout())
    mbarrier.init(fixed_bar, count=1)
    for i in gl.static_range(NUM_BUFFERS):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=CONSUMERS)
    return x_bufs, y_bufs, fixed_bar, ready, empty


@gluon.jit
def swat_query_pingpong_kernel(q_desc, k_desc, v_desc, do_desc, Out, Slopes, T, H, W, bias, scale, so_b,
                               so_t, so_h, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                               NUM_BUFFERS: gl.constexpr, SIGMOID: gl.constexpr, DQ: gl.constexpr,
                               ORDER: gl.constexpr, num_warps: gl.constexpr):
    """The forward, or with DQ the dQ pass, with its two compute warp groups as partitions of their
    own, each with half of the block's rows (q_desc's and do_desc's tiles are BLOCK_M / 2 rows),
    taking turns at the tensor cores on the `turns` barriers, and the load partition (do_desc is
    read only with DQ)."""
    b, h, m0, g_scale, g_slope, g_bias = _program(T, H, Slopes, scale, bias, BLOCK_M, SIGMOID, ORDER)
    n_lo, full_start, _, n_hi = query_block_ranges(m0, 0, 0, T, W, BLOCK_M, BLOCK_N)
    half: gl.constexpr = BLOCK_M // 2

    q_smem = gl.allocate_shared_memory(q_desc.dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    if DQ:
        do_smem = gl.allocate_shared_memory(do_desc.dtype, [2] + do_desc.block_type.shape, do_desc.layout)
    else:
        do_smem = q_smem
    k_bufs, v_bufs, fixed_bar, ready, empty = _ring(k_desc, v_desc, NUM_BUFFERS, 2)
    turns = _turns()
    out = Out + b.to(gl.int64) * so_b + h * so_h
    gl.warp_specialize([
        (_pingpong_partition, (q_smem.index(0), do_smem.index(0), k_bufs, v_bufs, fixed_bar, ready, empty, turns, out,
                               so_t, T, m0, n_lo, n_hi, full_start, m0, W, g_scale, g_slope, g_bias, scale, half,
                               BLOCK_N, HEAD_DIM, SIGMOID, DQ, 0, num_warps)),
        (_pingpong_partition, (q_smem.index(1), do_smem.index(1), k_bufs, v_bufs, fixed_bar, ready, empty, turns, out,
                               so_t, T, m0 + half, n_lo, n_hi, full_start, m0, W, g_scale, g_slope, g_bias, scale,
                               half, BLOCK_N, HEAD_DIM, SIGMOID, DQ, 1, num_warps)),
        (_load_partition, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_bufs, v_bufs, fixed_bar, ready, empty,
                           b * T, m0, h * HEAD_DIM, n_lo, n_hi, BLOCK_N, DQ, True)),
    ], [num_warps, 1], [240, 24])


@gluon.jit
def swat_dkdv_pingpong_kernel(q_desc, k_desc, v_desc, do_desc, DK, DV, Slopes, T, H, W, bias, scale,
                              s_b, s_t, s_h, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                              NUM_BUFFERS: gl.constexpr, SIGMOID: gl.constexpr, ORDER: gl.constexpr,
                              num_warps: gl.constexpr):
    """The dK/dV pass with its two compute warp groups as partitions of their own, each with half of
    the block's keys (k_desc's and v_desc's tiles are BLOCK_N / 2 rows), taking turns at the tensor
    cores as in swat_query_pingpong_kernel."""
    b, h, n0, g_scale, g_slope, g_bias = _program(T, H, Slopes, scale, bias, BLOCK_N, SIGMOID, ORDER)
    _, _, _, full_hi, m_hi = key_block_ranges(n0, T, T, T, W, BLOCK_M, BLOCK_N)
    half: gl.constexpr = BLOCK_N // 2

    k_smem = gl.allocate_shared_memory(k_desc.dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    q_bufs, do_bufs, fixed_bar, ready, empty = _ring(q_desc, do_desc, NUM_BUFFERS, 2)
    turns = _turns()
    offset = b.to(gl.int64) * s_b + h * s_h
    gl.warp_specialize([
        (_dkdv_pingpong_partition, (k_smem.index(0), v_smem.index(0), q_bufs, do_bufs, fixed_bar, ready, empty, turns,
                                    DK + offset, DV + offset, s_t, T, n0, n0, m_hi, n0 + BLOCK_N, full_hi, W, g_scale,
                                    g_slope, g_bias, scale, BLOCK_M, half, HEAD_DIM, SIGMOID, 0, num_warps)),
        (_dkdv_pingpong_partition, (k_smem.index(1), v_smem.index(1), q_bufs, do_bufs, fixed_bar, ready, empty, turns,
                                    DK + offset, DV + offset, s_t, T, n0 + half, n0, m_hi, n0 + BLOCK_N, full_hi, W,
                                    g_scale, g_slope, g_bias, scale, BLOCK_M, half, HEAD_DIM, SIGMOID, 1,
                                    num_warps)),
        (_load_partition, (k_desc, v_desc, q_desc, do_desc, k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty,
                           b * T, n0, h * HEAD_DIM, n0, m_hi, BLOCK_M, True, True)),
    ], [num_warps, 1], [240, 24])


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
def _dq_product(k_halves, ds_bufs, ds_ready, dq_zero, i, GROUP: gl.constexpr):
    """Issue dQ^T of query tile i for this group's columns (dq_group_columns): with half of the
    head's columns, k^T dS^T over both groups' keys, once both groups' dS^T are in the tile's ds
    slot; with all of them, over this group's own keys, from its own dS^T."""
    columns: gl.constexpr = dq_zero.shape[0]
    ds_slot = i % 2
    if columns == k_halves.type.shape[2]:  # an else, not an early return: Triton 3.9 compiles the code after one
        dq = warpgroup_mma(k_halves.index(GROUP).permute((1, 0)), ds_bufs.index(2 * ds_slot + GROUP), dq_zero,
                           use_acc=False, is_async=True)
    else:
        mbarrier.wait(ds_ready.index(ds_slot), (i // 2) & 1)
        dq = warpgroup_mma(k_halves.index(0).slice(GROUP * columns, columns, dim=1).permute((1, 0)),
                           ds_bufs.index(2 * ds_slot), dq_zero, use_acc=False, is_async=True)
        dq = warpgroup_mma(k_halves.index(1).slice(GROUP * columns, columns, dim=1).permute((1, 0)),
                           ds_bufs.index(2 * ds_slot + 1), dq, is_async=True)
    return dq


@gluon.jit
def _add_dq(dq, dq_desc, dq_slots, row, col, i, GROUP: gl.constexpr, passed):
    """Add dQ^T of query tile i (this group's columns) into the fp32 dQ buffer's
    rows row.., columns col.. by the copy engine's bulk reduction (TMA reduce-add), from this
    group's staging slot i % slots, written (transposed) once the reduction that read it slots
    tiles before has; the tensor cores go on meanwhile. passed: a barrier whose first phase
    completed at launch. Waiting on it costs one instruction; without an mbarrier wait before the
    staging store, ptxas (Triton 3.6's) serializes every wgmma of the kernel (its warning C7514)."""
    slots: gl.constexpr = dq_slots.type.shape[0] // 2
    slot = dq_slots.index(GROUP * slots + i % slots)
    mbarrier.wait(passed, 0)  # returns at once (see above)
    tma.store_wait(slots - 1)  # the issuing thread's reduction of tile i - slots has read the slot
    thread_barrier()
    slot.store(gl.permute(dq, [1, 0]))
    fence_async_shared()
    thread_barrier()  # every thread's part of dQ is in shared memory before the reduction reads it
    tma_reduce_add(dq_desc, [row, col], slot)


@gluon.jit
def _one_pass_partition(k_smem, v_smem, k_halves, q_bufs, do_bufs, ds_bufs, fixed_bar, ready, empty, turns, ds_ready,
                        ds_free, passed, dq_desc, dq_slots, dq_row, dq_col, dk_base, dv_base, stride_t, T, n0,
                        m_lo, m_hi, full_lo, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M: gl.constexpr,
                        ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, SIGMOID: gl.constexpr, GROUP: gl.constexpr,
                        num_warps: gl.constexpr):
    """dV, dK and (added into the fp32 dQ) dQ for one of a key block's two halves of ROWS keys from
    n0, one query tile at a time: in this group's turn it issues the tile's S^T = k q^T and
    dP^T = v dO^T, passes the turn and waits for them; computes P^T and dS^T (which it also writes
    into shared memory, where both groups' halves meet); issues dv += P^T dO, dk += dS^T q and
    dQ^T = k^T dS^T (this group's columns, _dq_product) and waits for
    them; then adds dQ (_add_dq). The two groups' turns overlap one group's products with the
    other's sigmoid. Unlike _dkdv_pingpong_partition, a group does not overlap its own tiles: it
    holds one tile's S^T and dP^T, not two, which is what lets the 64-query tiles that wgmma
    needs for an efficient dQ^T product fit the registers beside dK, dV and dQ^T."""
    key_idx, query_idx, lim, key_term, t_zero, dk, dv = _key_block(n0, T, W, g_slope, ROWS, BLOCK_M, HEAD_DIM,
                                                                   num_warps)
    acc_layout: gl.constexpr = dk.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    dq_columns: gl.constexpr = dq_slots.type.shape[2]
    dq_zero = gl.zeros([dq_columns, BLOCK_M], gl.float32, _mma_layout(num_warps, BLOCK_M))
    num_buffers: gl.constexpr = q_bufs.type.shape[0]
    mbarrier.wait(fixed_bar, 0)
    for i in range(gl.cdiv(m_hi - m_lo, BLOCK_M)):
        m = m_lo + i * BLOCK_M
        slot, _ = _pingpong_step(ready, turns, i, num_buffers, GROUP)
        s_t, dp_t = _key_scores(k_smem, v_smem, q_bufs, do_bufs, slot, t_zero)
        mbarrier.arrive(turns.index(1 - GROUP), count=1)
        s_t, dp_t = warpgroup_mma_wait(0, deps=(s_t, dp_t))
        p_t, ds_t = _weights_and_ds_t(s_t, dp_t, m, n0, key_idx, query_idx, key_term, lim, full_lo, full_hi, g_scale,
                                      g_slope, g_bias, SIGMOID)
        _share_ds(ds_t.to(k_smem.dtype), ds_bufs, ds_ready, ds_free, i, GROUP)
        p_t = gl.convert_layout(p_t.to(k_smem.dtype), a_layout)
        dv = warpgroup_mma(p_t, do_bufs.index(slot), dv, is_async=True)
        dk = warpgroup_mma(ds_bufs.index(2 * (i % 2) + GROUP), q_bufs.index(slot), dk, is_async=True)
        dq = _dq_product(k_halves, ds_bufs, ds_ready, dq_zero, i, GROUP)
        dv, dk, dq, p_t = warpgroup_mma_wait(0, deps=(dv, dk, dq, p_t))
        _release(empty, slot)
        mbarrier.arrive(ds_free.index(i % 2), count=1)
        _add_dq(dq, dq_desc, dq_slots, dq_row + m, dq_col, i, GROUP, passed)
    _store_rows(dk * scale, dk_base, stride_t, n0, T, ROWS, HEAD_DIM, acc_layout)
    _store_rows(dv, dv_base, stride_t, n0, T, ROWS, HEAD_DIM, acc_layout)
    tma.store_wait(0)  # the staging slots stay until the last reduction has read them


@gluon.jit
def swat_bwd_one_pass_kernel(q_desc, k_desc, v_desc, do_desc, dq_desc, DK, DV, Slopes, T, H, W, bias, scale, s_b, s_t,
                             s_h, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                             NUM_BUFFERS: gl.constexpr, DQ_SLOTS: gl.constexpr, SIGMOID: gl.constexpr,
                             ORDER: gl.constexpr, num_warps: gl.constexpr):
    """The whole backward in one pass over each key block (_one_pass_partition), FlashAttention-3's
    way: 5 matrix products and one sigmoid per tile pair instead of the two passes' 7 and two. dK
    and dV stored; dQ added into the fp32 buffer of dq_desc ([B * T, H * HEAD_DIM], zero before the
    launch) by TMA reduce-add (a tile's rows past T add zeros: their weights are masked). Shared
    memory: k and v (both halves), the ring of q and dO tiles, two slots of dS^T with both groups'
    halves, and DQ_SLOTS staging slots of dQ for each group. Each group adds the dQ columns that
    dq_desc's tiles are wide (dq_group_columns): at d = 128 group 0 the first half and group 1 the
    second, at d = 64 both groups every column."""
    dq_columns: gl.constexpr = dq_desc.block_type.shape[1]
    gl.static_assert(dq_columns == 64, "each group's dQ^T product takes dq_group_columns as wgmma's 64 rows")
    b, h, n0, g_scale, g_slope, g_bias = _program(T, H, Slopes, scale, bias, BLOCK_N, SIGMOID, ORDER)
    _, _, _, full_hi, m_hi = key_block_ranges(n0, T, T, T, W, BLOCK_M, BLOCK_N)
    half: gl.constexpr = BLOCK_N // 2

    k_smem = gl.allocate_shared_memory(k_desc.dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    q_bufs, do_bufs, fixed_bar, ready, empty = _ring(q_desc, do_desc, NUM_BUFFERS, 2)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([half, BLOCK_M], k_desc.dtype)
    ds_bufs = gl.allocate_shared_memory(k_desc.dtype, [4, half, BLOCK_M], ds_layout)  # (slot, group)
    dq_slots = gl.allocate_shared_memory(gl.float32, [2 * DQ_SLOTS, BLOCK_M, dq_columns],
                                         dq_desc.layout)  # (group, slot)
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
                               g_slope, g_bias, scale, BLOCK_M, half, HEAD_DIM, SIGMOID, 0, num_warps)),
        (_one_pass_partition, (k_smem.index(1), v_smem.index(1), k_smem, q_bufs, do_bufs, ds_bufs, fixed_bar, ready,
                               empty, turns, ds_ready, ds_free, passed, dq_desc, dq_slots, b * T,
                               (h + 1) * HEAD_DIM - dq_columns, DK + offset, DV + offset, s_t, T, n0 + half, n0,
                               m_hi, n0 + BLOCK_N, full_hi, W, g_scale, g_slope, g_bias, scale, BLOCK_M, half,
                               HEAD_DIM, SIGMOID, 1, num_warps)),
        (_load_partition, (k_desc, v_desc, q_desc, do_desc, k_smem, v_smem, q_bufs, do_bufs, fixed_bar, ready, empty,
                           b * T, n0, h * HEAD_DIM, n0, m_hi, BLOCK_M, True, True)),
    ], [num_warps, 1], [240, 24])


def tma_readable(t: torch.Tensor) -> bool:
    """Whether TMA can read t [B, T, H, d] as the matrix [B * T, H * d] (`descriptor`): each row's
    heads side by side, the sequences one after another, the rows and the start 16-byte aligned. Views
    of a fused q/k/v projection qualify (their rows are longer than H * d)."""
    B, T, H, d = t.shape
    return (t.stride(3) == 1 and t.stride(2) == d and (B == 1 or t.stride(0) == T * t.stride(1))
            and t.stride(1) * t.element_size() % 16 == 0 and t.data_ptr() % 16 == 0)


def descriptor(t: torch.Tensor, rows: int) -> TensorDescriptor:
    """TMA descriptor of tiles of `rows` rows of t [B, T, H, d] (tma_readable) read as [B * T, H * d]."""
    B, T, H, d = t.shape
    dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}[t.dtype]
    layout = gl.NVMMASharedLayout.get_default_for([rows, d], dtype)
    return TensorDescriptor(t, [B * T, H * d], [t.stride(1), 1], [rows, d], layout)


# The launches the H100 bench chose (NOTES.md, v12): the forward and the dQ pass over 128 queries x 64
# keys, the dK/dV pass over 32 queries x 128 keys, three ring slots, each compute partition one warp
# group of 4 warps, launched with at most 168 registers a thread (maxnreg). The one-pass backward
# (v19) over 64 queries x 128 keys, with two ring slots and, per head size, dQ staging slots per group:
# one at d = 128 (ptxas spills 72 bytes a thread there; 3 ring slots or 2 dQ slots fit the shared
# memory but spill more), two at d = 64 (0.96-0.98x the time with one at W = T, H200, NOTES.md v23).
TILES = {"fwd": (128, 64), "dq": (128, 64), "dkdv": (32, 128), "one_pass": (64, 128)}
NUM_BUFFERS = 3
ONE_PASS_BUFFERS = 2
ONE_PASS_DQ_SLOTS = {64: 2, 128: 1}
GROUP_WARPS = 4
MAXNREG = 168


def dq_group_columns(head_dim: int) -> int:
    """How many of dQ's columns each compute group of the one pass adds: wgmma's products take 64
    rows, so at d = 128 each group takes half of the columns over both groups' keys (one bulk
    reduction per tile pair), at d = 64 all of them over its own keys (two)."""
    return max(64, head_dim // 2)


def dq_descriptor(dq32: torch.Tensor, rows: int) -> TensorDescriptor:
    """TMA descriptor of the one pass's fp32 dQ buffer dq32 [B, T, H, d] read as [B * T, H * d],
    in tiles of `rows` rows and the columns one compute group adds (dq_group_columns)."""
    B, T, H, d = dq32.shape
    columns = dq_group_columns(d)
    layout = gl.NVMMASharedLayout.get_default_for([rows, columns], gl.float32)
    return TensorDescriptor(dq32, [B * T, H * d], [H * d, 1], [rows, columns], layout)


def swat_fwd_hopper(q, k, v, slopes, window: int, sigmoid_bias: float, scale: float, sigmoid: int,
                    order: str) -> torch.Tensor:
    """o [B, T, H, d] for q, k, v [B, T, H, d] (tma_readable, bf16/fp16), slopes [H] fp32, window <= T,
    the programs in `order` (triton_common.band_program)."""
    B, T, H, d = q.shape
    bm, bn = TILES["fwd"]
    out = torch.empty((B, T, H, d), device=q.device, dtype=q.dtype)
    q_desc = descriptor(q, bm // 2)
    swat_query_pingpong_kernel[(B * H * cdiv(T, bm),)](
        q_desc, descriptor(k, bn), descriptor(v, bn), q_desc, out, slopes, T, H, window, sigmoid_bias, scale,
        *out.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_BUFFERS=NUM_BUFFERS, SIGMOID=sigmoid, DQ=False,
        ORDER=order, num_warps=GROUP_WARPS, maxnreg=MAXNREG, **LAUNCH_OPTIONS)
    return out


def swat_bwd_hopper(do, q, k, v, slopes, window: int, sigmoid_bias: float, scale: float, sigmoid: int,
                    order: str, one_pass: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) for the forward's inputs and the output's gradient do (all tma_readable): the
    dQ pass and the dK/dV pass, as triton_bwd.py splits them; or, with one_pass,
    swat_bwd_one_pass_kernel, whose dQ additions come in an order that varies from run to run."""
    B, T, H, d = q.shape
    dq, dk, dv = (torch.empty((B, T, H, d), device=q.device, dtype=q.dtype) for _ in range(3))
    if one_pass:
        bm, bn = TILES["one_pass"]
        dq32 = torch.zeros((B, T, H, d), device=q.device, dtype=torch.float32)
        swat_bwd_one_pass_kernel[(B * H * cdiv(T, bn),)](
            descriptor(q, bm), descriptor(k, bn // 2), descriptor(v, bn // 2), descriptor(do, bm),
            dq_descriptor(dq32, bm), dk, dv,
            slopes, T, H, window, sigmoid_bias, scale, *dk.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d,
            NUM_BUFFERS=ONE_PASS_BUFFERS, DQ_SLOTS=ONE_PASS_DQ_SLOTS[d], SIGMOID=sigmoid, ORDER=order,
            num_warps=GROUP_WARPS, maxnreg=MAXNREG, **LAUNCH_OPTIONS)
        return torch.mul(dq32, scale, out=dq), dk, dv
    bm, bn = TILES["dq"]
    swat_query_pingpong_kernel[(B * H * cdiv(T, bm),)](
        descriptor(q, bm // 2), descriptor(k, bn), descriptor(v, bn), descriptor(do, bm // 2), dq, slopes, T, H,
        window, sigmoid_bias, scale, *dq.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_BUFFERS=NUM_BUFFERS,
        SIGMOID=sigmoid, DQ=True, ORDER=order, num_warps=GROUP_WARPS, maxnreg=MAXNREG, **LAUNCH_OPTIONS)
    bm, bn = TILES["dkdv"]
    swat_dkdv_pingpong_kernel[(B * H * cdiv(T, bn),)](
        descriptor(q, bm), descriptor(k, bn // 2), descriptor(v, bn // 2), descriptor(do, bm), dk, dv, slopes, T, H,
        window, sigmoid_bias, scale, *dk.stride()[:3], BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_BUFFERS=NUM_BUFFERS,
        SIGMOID=sigmoid, ORDER=order, num_warps=GROUP_WARPS, maxnreg=MAXNREG, **LAUNCH_OPTIONS)
    return dq, dk, dv
