"""The SWAT decode on the tensor cores: one program per (sequence, key/value head, run of slots)
multiplies the REP query heads that share the key/value head, padded to 16 rows, by each tile of
slots (S = Q K^T, then O += P V), where the committed kernel (triton_decode.swat_decode_kernel)
takes one query head per program and does both products as fp32 multiply-adds, each key and value
converted to fp32 in registers and each score reduced across threads. The tiles go from shared
memory to the tensor cores as they are. The padding rows cost tensor-core work (16 rows for 1 at
REP = 1), which the decode has to spare: it is bound by reading the cache."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from harness.ops.swat.function import (
    _arrival_counters,
    _sigmoid_mode,
    _strides,
    decode_launch,
    override_decode_config,
)
from harness.ops.swat.triton_common import score_unit, sigmoid_scaled
from harness.ops.swat.triton_decode import _ring_tile


@triton.jit
def swat_decode_dot_kernel(Q, KC, VC, O, Final, Arrived, Slopes,
                           sq_b, sq_h, sk_b, sk_w, sk_h, sv_b, sv_w, sv_h, so_s, so_b, so_h, sf_b, sf_h,
                           HKV, W_CACHE, cache_len, pos, window, scale, bias,
                           REP: tl.constexpr, QROWS: tl.constexpr, SLOTS_PER_PROGRAM: tl.constexpr,
                           BLOCK_W: tl.constexpr, HEAD_DIM: tl.constexpr, SIGMOID: tl.constexpr,
                           DOT_PREC: tl.constexpr, SUM_IN_KERNEL: tl.constexpr):
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
    for s0 in range(s_lo, s_lo + SLOTS_PER_PROGRAM, BLOCK_W):
        k, v, dist, valid = _ring_tile(k_base, v_base, sk_w, sv_w, offs_d, s0, cache_len, W_CACHE, pos, window,
                                       BLOCK_W)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        p = sigmoid_scaled(s * g_scale + g_slope[:, None] * dist.to(tl.float32)[None, :] + g_bias, SIGMOID)
        p = tl.where(valid[None, :], p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
    out_off = b.to(tl.int64) * so_b + heads[:, None] * so_h + offs_d[None, :]
    tl.store(O + pid_s.to(tl.int64) * so_s + out_off, acc.to(O.dtype.element_ty), mask=row_ok[:, None])
    if SUM_IN_KERNEL:
        tl.debug_barrier()
        arrived = tl.atomic_add(Arrived + pid_g, 1, sem="acq_rel")
        if arrived == tl.num_programs(1) - 1:
            total = tl.zeros([QROWS, HEAD_DIM], dtype=tl.float32)
            for s in range(tl.num_programs(1)):
                total += tl.load(O + s * so_s + out_off, mask=row_ok[:, None], other=0.0, cache_modifier=".cg")
            tl.store(Final + b.to(tl.int64) * sf_b + heads[:, None] * sf_h + offs_d[None, :],
                     total.to(Final.dtype.element_ty), mask=row_ok[:, None])
            tl.store(Arrived + pid_g, 0)


def decode_dot(q, k_cache, v_cache, cache_len, pos, slopes, window, sigmoid_bias=0.0, scale=None, *,
               min_programs=1056, tile_elems=8192, num_warps=4, num_stages=3):
    """One decode step through swat_decode_dot_kernel; its slots split over programs as
    function.decode_launch splits the committed decode's with MIN_PROGRAMS = min_programs and
    TILE_ELEMS = tile_elems, counting (sequence, key/value head) groups; the runs' sums added in the
    kernel."""
    B, H, d = q.shape
    W_cache, Hkv = k_cache.shape[1], k_cache.shape[2]
    rep = H // Hkv
    scale = 1.0 / d ** 0.5 if scale is None else scale
    with override_decode_config(MIN_PROGRAMS=min_programs, TILE_ELEMS=tile_elems):  # the committed decode's split
        launch = decode_launch(B * Hkv, W_cache, d, q.element_size())
    block_w, per_program, splits = launch["BLOCK_W"], launch["SLOTS_PER_PROGRAM"], launch["splits"]
    out = torch.empty((splits, B, H, d), device=q.device, dtype=q.dtype if splits == 1 else torch.float32)
    o = out[0] if splits == 1 else torch.empty((B, H, d), device=q.device, dtype=q.dtype)
    arrived = _arrival_counters(q.device, B * Hkv) if splits > 1 else slopes
    swat_decode_dot_kernel[(B * Hkv, splits)](
        q, k_cache, v_cache, out, o, arrived, slopes,
        q.stride(0), q.stride(1), *_strides(k_cache), *_strides(v_cache), *_strides(out), o.stride(0), o.stride(1),
        Hkv, W_cache, cache_len, pos, window, scale, sigmoid_bias,
        REP=rep, QROWS=max(16, triton.next_power_of_2(rep)), SLOTS_PER_PROGRAM=per_program, BLOCK_W=block_w,
        HEAD_DIM=d, SIGMOID=_sigmoid_mode(q, "decode"), DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
        SUM_IN_KERNEL=splits > 1, num_warps=num_warps, num_stages=num_stages)
    return o
