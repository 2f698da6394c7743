"""SWAT decode in Triton: one new query per sequence against the ring-buffer cache of W slots.

The token at absolute position p sits in slot p % W, so the query at `pos` sees slot s at distance
(pos - s) mod W. The cost is a read of the W cached keys and values, whatever the context length.
Because sigmoid weights are not normalised, the slots can be split across programs and their
partial sums simply added (flash-decoding without the max/rescale step): by a second kernel
(`sum_splits_kernel`), or (SUM_IN_KERNEL) by the last of a pair's programs to finish, which a
counter per pair tells, so that a split decode is one kernel launch.

Two kernels: `swat_decode_kernel` takes one query head per program and does both products as fp32
multiply-adds on the CUDA cores; `swat_decode_dot_kernel` takes the REP query heads that share a
key/value head, padded to 16 rows, and does them as two dots per tile on the tensor cores, its
tiles going from shared memory to the tensor cores as they are. The padding costs tensor-core work
the decode has to spare: it is bound by reading the cache.
"""

from __future__ import annotations

import triton
import triton.language as tl

from harness.ops.swat.triton_common import mma, score_unit, sigmoid_scaled

SUM_BLOCK = tl.constexpr(16)  # runs' sums a pair's last program loads at once (SUM_IN_KERNEL)


@triton.jit
def _ring_tile(k_base, v_base, sk_w, sv_w, offs_d, s0, end, W_CACHE, pos, window, BLOCK_W: tl.constexpr):
    """The keys and values of slots s0 .. s0 + BLOCK_W (those before `end` and inside the window;
    the others read nothing and come back zero), with each slot's distance and validity."""
    slots = s0 + tl.arange(0, BLOCK_W)
    dist = (pos - slots + W_CACHE) % W_CACHE
    valid = (slots < end) & (dist < window)
    k = tl.load(k_base + slots[:, None] * sk_w + offs_d[None, :], mask=valid[:, None], other=0.0)
    v = tl.load(v_base + slots[:, None] * sv_w + offs_d[None, :], mask=valid[:, None], other=0.0)
    return k, v, dist, valid


@triton.jit
def swat_decode_kernel(Q, KC, VC, O, Final, Arrived, Slopes,
                       sq_b, sq_h, sk_b, sk_w, sk_h, sv_b, sv_w, sv_h, so_s, so_b, so_h, sf_b, sf_h,
                       H, W_CACHE, cache_len, pos, window, scale, bias,
                       REP: tl.constexpr, SLOTS_PER_PROGRAM: tl.constexpr, BLOCK_W: tl.constexpr,
                       HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr, ACC_2D: tl.constexpr,
                       SUM_IN_KERNEL: tl.constexpr, LOOP_STAGES: tl.constexpr, PREFETCH: tl.constexpr):
    """Each program writes its run's sum to O [splits, B, H, d]. ACC_2D: keep a [BLOCK_W, HEAD_DIM]
    fp32 accumulator and add its rows once after the loop, instead of reducing each tile over its
    slots (a reduction across warps in every iteration). SUM_IN_KERNEL: the last of the pair's
    programs to arrive (_last_to_arrive) adds the runs' sums into Final [B, H, d] (_add_runs).
    LOOP_STAGES: the slot loop's software pipeline (cp.async copies of the next tiles into shared
    memory while this one is reduced); Triton pipelines only loads that feed a dot unless the loop
    asks, so the launch's num_stages alone leaves this loop unpipelined. PREFETCH: load the next
    tile into registers before this one is reduced, so that its loads are in flight meanwhile
    without the shared memory (and the programs per SM) that LOOP_STAGES' copies cost; it pays
    only where a program has several tiles."""
    pid_bh = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // REP
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b.to(tl.int64) * sq_b + h * sq_h + offs_d).to(tl.float32)
    g_slope = tl.load(Slopes + h).to(tl.float32) * score_unit(SIGMOID)
    g_scale = scale * score_unit(SIGMOID)
    g_bias = bias * score_unit(SIGMOID)
    k_base = KC + b.to(tl.int64) * sk_b + hk * sk_h
    v_base = VC + b.to(tl.int64) * sv_b + hk * sv_h
    if ACC_2D:
        acc = tl.zeros([BLOCK_W, HEAD_DIM], dtype=tl.float32)
    else:
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    s_lo = pid_s * SLOTS_PER_PROGRAM
    s_hi = s_lo + SLOTS_PER_PROGRAM
    if PREFETCH:  # the tile after the run's last is masked off whole: it reads nothing
        run_end = tl.minimum(cache_len, s_hi)
        k_next, v_next, dist_next, valid_next = _ring_tile(k_base, v_base, sk_w, sv_w, offs_d, s_lo, run_end,
                                                           W_CACHE, pos, window, BLOCK_W)
    for s0 in tl.range(s_lo, s_hi, BLOCK_W, num_stages=LOOP_STAGES):
        if PREFETCH:  # this tile was loaded an iteration ago; the next one's loads go out now
            k, v, dist, valid = k_next, v_next, dist_next, valid_next
            k_next, v_next, dist_next, valid_next = _ring_tile(k_base, v_base, sk_w, sv_w, offs_d, s0 + BLOCK_W,
                                                               run_end, W_CACHE, pos, window, BLOCK_W)
        else:
            k, v, dist, valid = _ring_tile(k_base, v_base, sk_w, sv_w, offs_d, s0, cache_len, W_CACHE, pos, window,
                                           BLOCK_W)
        qk = tl.sum(k.to(tl.float32) * q[None, :], axis=1)
        p = sigmoid_scaled(qk * g_scale + g_slope * dist.to(tl.float32) + g_bias, SIGMOID)
        p = tl.where(valid, p, 0.0)
        if ACC_2D:
            acc += p[:, None] * v.to(tl.float32)
        else:
            acc += tl.sum(p[:, None] * v.to(tl.float32), axis=0)
    if ACC_2D:
        acc = tl.sum(acc, axis=0)
    tl.store(O + pid_s.to(tl.int64) * so_s + b.to(tl.int64) * so_b + h * so_h + offs_d, acc.to(O.dtype.element_ty))
    if SUM_IN_KERNEL:
        if _last_to_arrive(Arrived, pid_bh):
            _add_runs(O, Final, so_s, so_b, so_h, sf_b, sf_h, b, h, offs_d)
            tl.store(Arrived + pid_bh, 0)


@triton.jit
def _last_to_arrive(Arrived, unit):
    """Whether this program is the last of its pair's (or group's) runs to have written its sum:
    each counts its arrival in Arrived[unit] (int32, zero before the launch). The last one adds
    the runs' sums and sets the count back to zero for the next launch."""
    tl.debug_barrier()  # every thread's share of the run's sum is written before its arrival counts
    arrived = tl.atomic_add(Arrived + unit, 1, sem="acq_rel")  # releases those writes, acquires the others'
    return arrived == tl.num_programs(1) - 1


@triton.jit
def _add_runs(O, Final, so_s, so_b, so_h, sf_b, sf_h, b, h, offs_d):
    """Final[b, h] = the sum of head h's runs in O [splits, B, H, d], read from L2 (.cg, where the
    other SMs' writes are) SUM_BLOCK runs at a load, so that the pair's last program waits on a
    round trip to L2 per SUM_BLOCK runs rather than per run, at the end of the kernel's critical path."""
    total = tl.zeros([offs_d.shape[0]], dtype=tl.float32)
    pair_sums = O + b.to(tl.int64) * so_b + h * so_h + offs_d[None, :]
    for s0 in range(0, tl.num_programs(1), SUM_BLOCK):
        runs = s0 + tl.arange(0, SUM_BLOCK)
        sums = tl.load(pair_sums + runs[:, None].to(tl.int64) * so_s, mask=(runs < tl.num_programs(1))[:, None],
                       other=0.0, cache_modifier=".cg")
        total += tl.sum(sums, axis=0)
    tl.store(Final + b.to(tl.int64) * sf_b + h * sf_h + offs_d, total.to(Final.dtype.element_ty))


@triton.jit
def swat_decode_dot_kernel(Q, KC, VC, O, Final, Arrived, Slopes,
                           sq_b, sq_h, sk_b, sk_w, sk_h, sv_b, sv_w, sv_h, so_s, so_b, so_h, sf_b, sf_h,
                           HKV, W_CACHE, cache_len, pos, window, scale, bias,
                           REP: tl.constexpr, QROWS: tl.constexpr, SLOTS_PER_PROGRAM: tl.constexpr,
                           BLOCK_W: tl.constexpr, HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr,
                           DOT_PREC: tl.constexpr, SUM_IN_KERNEL: tl.constexpr, LOOP_STAGES: tl.constexpr):
    """One program per (sequence, key/value head) group and run of slots: the group's REP query
    heads, in QROWS >= 16 rows (the rest zero, never stored), times each tile's keys (S = Q K^T),
    the sigmoid, then O += P V, both on the tensor cores (triton_common.mma's DOT_PREC).
    LOOP_STAGES: the slot loop's pipeline, its tiles copied into shared memory that many ahead.
    Each program writes its run's sums of the REP heads to O [splits, B, H, d]; SUM_IN_KERNEL as
    in swat_decode_kernel, the group's last program adding every head's runs."""
    pid_g = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = pid_g // HKV
    hk = pid_g % HKV
    rows = tl.arange(0, QROWS)
    row_ok = rows < REP
    heads = hk * REP + rows
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b.to(tl.int64) * sq_b + heads[:, None] * sq_h + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    g_slope = tl.load(Slopes + heads, mask=row_ok, other=0.0).to(tl.float32) * score_unit(SIGMOID)
    g_scale = scale * score_unit(SIGMOID)
    g_bias = bias * score_unit(SIGMOID)
    k_base = KC + b.to(tl.int64) * sk_b + hk * sk_h
    v_base = VC + b.to(tl.int64) * sv_b + hk * sv_h
    acc = tl.zeros([QROWS, HEAD_DIM], dtype=tl.float32)
    s_lo = pid_s * SLOTS_PER_PROGRAM
    for s0 in tl.range(s_lo, s_lo + SLOTS_PER_PROGRAM, BLOCK_W, num_stages=LOOP_STAGES):
        k, v, dist, valid = _ring_tile(k_base, v_base, sk_w, sv_w, offs_d, s0, cache_len, W_CACHE, pos, window,
                                       BLOCK_W)
        s = mma(q, tl.trans(k), DOT_PREC)
        p = sigmoid_scaled(s * g_scale + g_slope[:, None] * dist.to(tl.float32)[None, :] + g_bias, SIGMOID)
        p = tl.where(valid[None, :], p, 0.0)
        acc += mma(p.to(v.dtype), v, DOT_PREC)
    out_off = b.to(tl.int64) * so_b + heads[:, None] * so_h + offs_d[None, :]
    tl.store(O + pid_s.to(tl.int64) * so_s + out_off, acc.to(O.dtype.element_ty), mask=row_ok[:, None])
    if SUM_IN_KERNEL:
        if _last_to_arrive(Arrived, pid_g):
            for r in tl.static_range(REP):
                _add_runs(O, Final, so_s, so_b, so_h, sf_b, sf_h, b, hk * REP + r, offs_d)
            tl.store(Arrived + pid_g, 0)


@triton.jit
def sum_splits_kernel(P, O, splits, n, BLOCK: tl.constexpr):
    """O = sum over the splits of P [splits, n] (fp32), written in O's dtype: the decode's partial
    sums added and cast in one kernel (torch's sum and then a cast would be two)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(splits):
        acc += tl.load(P + s * n + offs, mask=inb, other=0.0)
    tl.store(O + offs, acc.to(O.dtype.element_ty), mask=inb)
