"""Pieces shared by the SWAT Triton kernels: the sigmoid, the band's tile ranges, the config table.

Every kernel visits only the key (or query) tiles that intersect the band 0 <= i - j < W, and
splits them into three runs so that the common case does no masking work at all:

    [edge_lo, full_lo)   tiles at the window's far edge (or a document start): masked
    [full_lo, diag_lo)   tiles inside the band for every row of the block: no mask, no bounds checks
    [diag_lo, diag_hi)   tiles on the causal diagonal: masked

Scores reach the sigmoid as g = s * score_unit(SIGMOID), the unit folded into the scale, the
slope and the bias once per program: -log2(e) for the ex2 modes, where sigmoid(s) = 1 / (1 + 2^g)
costs one ex2 and one reciprocal, and 1/2 for the tanh mode, where sigmoid(s) = (1 + tanh(g)) / 2
costs one special-function op and one FMA (FlashSigmoid's way).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

LOG2E = 1.4426950408889634
# What every launch of these kernels passes Triton beside its config: FP fusion on (a * b + c as one
# FMA, the tanh sigmoid's "one FMA"), as every kernel in NOTES.md was tuned and its error measured.
# Triton up to 3.9 fuses by default, and 3.9 warns that 3.10 will not; asked for, the kernels stay
# the ones measured.
LAUNCH_OPTIONS = dict(enable_fp_fusion=True)


def interpreting() -> bool:
    """True when these kernels were defined under TRITON_INTERPRET=1 (the CPU interpreter, used by
    the tests): no inline PTX, tiny tiles. Asked of the kernels rather than of the environment, so
    that a test can set the variable for its own imports only. Asked several times per launch, so
    the import is the module's."""
    return isinstance(sigmoid_scaled, InterpretedFunction)


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the launches' grids and splits on the host: `triton.cdiv` is a constexpr
    function in newer Triton, about 3 us a call from Python (a hundred times this)."""
    return -(-a // b)


@triton.jit
def _rcp_newton(x):
    """1 / x for x >= 1 on the FMA pipe: a bit-trick first guess (~12% off), then two Newton steps
    (relative error ~2e-4, below bf16's 4e-3). Frees the special-function unit, which at d = 64 is
    the bottleneck when both the ex2 and the reciprocal of the sigmoid run on it."""
    y = (0x7EF311C7 - x.to(tl.int32, bitcast=True)).to(tl.float32, bitcast=True)
    y = y * (2.0 - x * y)
    return y * (2.0 - x * y)


@triton.jit
def score_unit(SIGMOID: tl.constexpr):
    """What a score s is multiplied by before sigmoid_scaled (g = s * unit) in this SIGMOID mode."""
    if SIGMOID == 3:
        return 0.5
    else:
        return -1.4426950408889634


@triton.jit
def sigmoid_scaled(g, SIGMOID: tl.constexpr):
    """sigmoid(s) given g = s * score_unit(SIGMOID).

    SIGMOID 0: exact division (fp32 inputs, the interpreter); 1: ex2 + rcp.approx (1 ulp), both on
    the special-function unit; 2: ex2 + _rcp_newton (g clamped so that 2^g stays finite; sigmoid
    values below 2^-64 become ~0); 3: (1 + tanh.approx(g)) / 2, one special-function op and one
    FMA (its error is bounded absolutely, ~2^-12, not relatively; the kernels' error against fp32
    matched modes 1 and 2 also with weights near 1 / W down to 6e-5: NOTES.md v12)."""
    if SIGMOID == 3:
        t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [g], dtype=tl.float32, is_pure=True,
                                      pack=1)
        return 0.5 * t + 0.5
    elif SIGMOID == 2:
        return _rcp_newton(1.0 + tl.math.exp2(tl.minimum(g, 64.0)))
    elif SIGMOID == 1:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [1.0 + tl.math.exp2(g)],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return 1.0 / (1.0 + tl.math.exp2(g))


@triton.jit
def band_program(pid, n_programs, n_blocks, n_heads, ORDER: tl.constexpr):
    """(batch x head index, block index) of program pid in a one-axis grid of n_programs = n_blocks
    x B x n_heads programs, in the order ORDER names (function.PROGRAM_ORDERS). The GPU starts
    programs in pid order, so ORDER decides which run at once and share what in L2:

    "pairs": one (sequence, head) pair's blocks after another, the heavy (late) ones first, since with
      W >= T a block's work grows with its index: the programs in flight are a few pairs' blocks
      and share those pairs' keys and values (or queries and output gradients).
    "heads": block by block, heavy first, every pair's block side by side (the first launches): at
      T = 4K the programs in flight were all of one block index, each of another pair, and their
      working set overflowed L2 (NOTES.md v14).
    "rows": per sequence, block by block, heavy first, its heads side by side: the programs in flight
      read whole token rows (all heads' columns) of one sequence, and share its keys and values."""
    if ORDER == "heads":
        n_pairs = n_programs // n_blocks
        return pid % n_pairs, n_blocks - 1 - pid // n_pairs
    elif ORDER == "rows":
        per_sequence = n_blocks * n_heads
        local = pid % per_sequence
        return pid // per_sequence * n_heads + local % n_heads, n_blocks - 1 - local // n_heads
    else:
        return pid // n_blocks, n_blocks - 1 - pid % n_blocks


@triton.jit
def query_block_ranges(m0, rs_first, rs_last, T, W, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key-tile runs (edge_lo, full_lo, diag_lo, diag_hi) for queries m0 .. m0 + BLOCK_M - 1.

    rs_first / rs_last are the document starts of the block's first and last (valid) rows
    (0 without cu_seqlens). Keys j < max(i - W + 1, start of i's document) are outside the band.
    """
    lo = tl.maximum(tl.maximum(m0 - W + 1, rs_first), 0)
    # a tile [n, n + BLOCK_N) with n + BLOCK_N <= m0 is inside the band for every row of the block
    # when n >= m0 + BLOCK_M - W (window) and n >= rs_last (same document)
    full_lo = tl.maximum(m0 + BLOCK_M - W, rs_last)
    n_full = tl.maximum(m0 - full_lo, 0) // BLOCK_N
    full_start = m0 - n_full * BLOCK_N
    n_edge = (tl.maximum(full_start - lo, 0) + BLOCK_N - 1) // BLOCK_N
    edge_start = full_start - n_edge * BLOCK_N
    diag_hi = tl.minimum(m0 + BLOCK_M, T)
    return edge_start, full_start, m0, diag_hi


@triton.jit
def key_block_ranges(n0, re_first, re_last, T, W, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query-tile runs (diag_lo, diag_hi, full_lo, full_hi, edge_hi) for keys n0 .. n0 + BLOCK_N - 1.

    re_first / re_last are the document ends (exclusive) of the block's first and last valid keys
    (T without cu_seqlens). Query i sees key j when j <= i < min(j + W, end of j's document).
    """
    hi = tl.minimum(tl.minimum(n0 + BLOCK_N - 1 + W, re_last), T)
    diag_hi = tl.minimum(n0 + BLOCK_N, hi)
    # a tile [m, m + BLOCK_M) with m >= n0 + BLOCK_N sees every key of the block when
    # m + BLOCK_M <= n0 + W (window), <= re_first (same document) and <= T
    full_end = tl.minimum(tl.minimum(n0 + W, re_first), T)
    n_full = tl.maximum(full_end - (n0 + BLOCK_N), 0) // BLOCK_M
    full_hi = n0 + BLOCK_N + n_full * BLOCK_M
    return n0, diag_hi, n0 + BLOCK_N, full_hi, tl.maximum(hi, full_hi)


@triton.jit
def mma(a, b, DOT_PREC: tl.constexpr):
    """a @ b with fp32 accumulation. DOT_PREC "ieee" multiplies the (already rounded) operands in
    fp32: exact for fp32 inputs, and the CPU interpreter's path for bf16, whose native bf16 dot is
    wrong in triton 3.9's interpreter. "tf32" lets 16-bit operands go to the tensor cores as they are."""
    if DOT_PREC == "ieee":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def kv_tile_weights(q, k_base, v_base, stride_kt, stride_vt, offs_m, row_lo, n, g_scale, g_slope, g_bias,
                    col_term, T, MASK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                    SIGMOID: tl.constexpr, DOT_PREC: tl.constexpr):
    """The key/value tile starting at n and the sigmoid weights p [BLOCK_M, BLOCK_N] of the query
    rows offs_m against it: the common first half of the forward and dQ tile loops. With MASK
    (edge tiles), out-of-range keys read as zero and pairs outside the band get weight 0."""
    offs_n = n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k_ptrs = k_base + offs_n[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]
    if MASK:
        inb = ((offs_n >= 0) & (offs_n < T))[:, None]
        k = tl.load(k_ptrs, mask=inb, other=0.0)
        v = tl.load(v_ptrs, mask=inb, other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    qk = mma(q, tl.trans(k), DOT_PREC)
    # (qk * scale + slope * (i - j) + bias) * score_unit, the distance taken relative to n
    row_term = g_slope * (offs_m - n).to(tl.float32) + g_bias
    p = sigmoid_scaled(qk * g_scale + (row_term[:, None] - col_term[None, :]), SIGMOID)
    if MASK:
        allowed = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] >= row_lo[:, None])
        p = tl.where(allowed, p, 0.0)
    return k, v, p


@triton.jit
def query_rows(RowStart, Slopes, h, m0, offs_m, row_ok, T, W, HAS_DOC: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, SIGMOID: tl.constexpr):
    """What a query-block program (forward, dQ) needs before its tile loops: each row's first
    visible key (window start, or its document's start when packed), the head's slope in score_unit
    multiples, the per-column slope term of one key tile, and the key-block ranges of the band."""
    if HAS_DOC:
        rs = tl.load(RowStart + offs_m, mask=row_ok, other=0)
        rs_first = tl.load(RowStart + m0)
        rs_last = tl.load(RowStart + tl.minimum(m0 + BLOCK_M, T) - 1)
    else:
        rs = tl.zeros([BLOCK_M], dtype=tl.int32)
        rs_first = 0
        rs_last = 0
    row_lo = tl.maximum(offs_m - W + 1, rs)
    g_slope = tl.load(Slopes + h).to(tl.float32) * score_unit(SIGMOID)
    col_term = g_slope * tl.arange(0, BLOCK_N).to(tl.float32)
    edge_lo, full_lo, diag_lo, diag_hi = query_block_ranges(m0, rs_first, rs_last, T, W, BLOCK_M, BLOCK_N)
    return row_lo, g_slope, col_term, edge_lo, full_lo, diag_lo, diag_hi
