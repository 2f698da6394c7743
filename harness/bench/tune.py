"""Config sweeps for the SWAT kernels on a GPU: `python -m harness.bench.tune [--sweeps S] [--out FILE]`.

Sweep `tiles` times candidate configs (BLOCK_M, BLOCK_N, warps, stages, ONE_LOOP) of each pass (fwd,
dkdv, dq, and dkdv with each FUSED_DQ mode, the one-pass backwards: dQ added by atomics or by the
copy engine's bulk reduction) at d = 64 and 128, B*T = 65536, T = 8192 (`--head-dims`, `--length`
choose others): the "small" regime at W = 128, the "large" one at W = 2048 and W = T (`--windows`
chooses others, such as the "medium" regime's 512, the 340m model's window, each timed with its
regime's candidates). A backward candidate is timed as the whole backward (dK/dV + dQ, or the one
fused pass) with the other pass at its current config, so differences between candidates of one pass
are that pass's differences, and the best "dkdv fused atomics" and "dkdv fused tma" rows against the
best "dkdv" row decide FUSED_DQ.
Sweep `decode` times the CUDA cores' decode kernel's launch configs (DECODE_CONFIGS: programs wanted,
tile size, warps, the slot loop's pipeline, the accumulator, where the runs' sums are added) at
batch 1, 8 and 64 over full W-slot ring buffers, as CUDA-graph replays over copies of the buffer in
turn so that each step reads it from HBM, beside SDPA (softmax, no bias) over the same buffer: the
work of a sliding-window softmax model's decode step, the peer a user would pick.
Sweep `sigmoid` times the forward and the backward in each sigmoid mode (SIGMOID_MODES:
triton_common.sigmoid_scaled's reciprocal on the special-function unit, its Newton one, tanh) at the
current configs and B * T = 65536 with T = 16384, the peer bench's length, and measures each mode's
error against the fp32 kernel (sigmoid bias 0 and -log W). Sweep `spread` times the backward the
dispatcher runs (Hopper passes included) at the peer bench's lengths in SPREAD_ROUNDS rounds, each
on inputs allocated afresh at other addresses, eagerly and as CUDA-graph replays: whether a time
that moves from run to run follows the buffers' placement, the host, or neither. Sweep `order` times
the dispatcher's forward and backward with the programs in each PROGRAM_ORDERS order at those
lengths. The winners go into CONFIGS / FUSED_DQ / SIGMOID_MODE / DECODE_CONFIGS / PROGRAM_ORDER in
harness/ops/swat/function.py by hand, with the numbers in harness/ops/swat/NOTES.md. Every sweep but
`spread` and `order` times the Triton passes (function.triton_only), also at the shapes where a
Hopper GPU would run hopper.py's Gluon passes, whose launches are fixed (hopper.TILES) and measured
by results/kernels/ws-probe/bench.py.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import shlex
import sys

import torch
import torch.nn.functional as F

from harness.bench import KERNEL_BENCH_LENGTHS, parse_ints
from harness.bench.kernels import sdpa_over_ring
from harness.bench.timing import decode_ms, l2_cold_copies, median_ms
from harness.config import ConfigError, first_line
from harness.ops.alibi import alibi_slopes
from harness.ops.swat import function as fn_mod
from harness.ops.swat.function import (
    _cfg,
    _swat_bwd,
    _swat_fwd,
    decode_launch,
    override_configs,
    override_decode_config,
    override_fused_dq,
    override_program_order,
    override_sigmoid_mode,
    swat_decode_triton,
    triton_only,
)

CANDIDATES = {
    ("fwd", "small"): [_cfg(64, 64, 4, 3), _cfg(64, 64, 4, 3, True), _cfg(64, 32, 4, 3, True),
                       _cfg(128, 64, 4, 3, True), _cfg(64, 64, 4, 2, True), _cfg(32, 32, 2, 3, True)],
    ("fwd", "large"): [_cfg(128, 64, 4, 3), _cfg(128, 64, 8, 3), _cfg(128, 32, 4, 4), _cfg(128, 128, 8, 3)],
    ("dkdv", "small"): [_cfg(32, 64, 4, 4), _cfg(32, 64, 4, 4, True), _cfg(64, 64, 4, 3, True),
                        _cfg(32, 32, 4, 3, True), _cfg(16, 64, 4, 3, True)],
    # 64x128 with 8 warps and 3 stages: flex_attention's sm90 backward tile for d = 64 and 128
    # the last three: neighbours of d = 64's large-regime tiles of v14 (32x128 w4 s3 here, 128x32 w4 s3
    # for dq), added for d = 64 at W = 2048, then 1.26-1.32x flex_attention on an H100 (NOTES.md v15)
    ("dkdv", "large"): [_cfg(32, 128, 4, 3), _cfg(32, 64, 4, 3), _cfg(64, 128, 8, 2), _cfg(32, 128, 8, 3),
                        _cfg(64, 128, 8, 3), _cfg(32, 128, 4, 4), _cfg(64, 128, 4, 3), _cfg(64, 64, 4, 3)],
    ("dq", "small"): [_cfg(64, 64, 4, 3), _cfg(64, 64, 4, 3, True), _cfg(64, 32, 4, 3, True),
                      _cfg(32, 64, 4, 3, True)],
    ("dq", "large"): [_cfg(128, 32, 4, 3), _cfg(64, 32, 4, 3), _cfg(128, 64, 8, 3), _cfg(64, 64, 4, 3),
                      _cfg(128, 32, 4, 4), _cfg(128, 64, 4, 3), _cfg(128, 32, 8, 3)],
    # the one-pass backward (FUSED_DQ): the dK/dV tiles, plus taller query tiles (fewer atomics per key)
    ("dkdv fused", "small"): [_cfg(32, 64, 4, 4, True), _cfg(64, 64, 4, 3, True), _cfg(32, 32, 4, 3, True),
                              _cfg(64, 64, 8, 2, True)],
    ("dkdv fused", "large"): [_cfg(32, 128, 4, 3), _cfg(32, 128, 8, 3), _cfg(64, 128, 8, 2), _cfg(64, 64, 4, 3),
                              _cfg(128, 64, 8, 2)],
}
# the medium regime (W = 512) was first swept with the large regime's candidates (NOTES.md, v6)
CANDIDATES.update({(what, "medium"): configs for (what, regime), configs in CANDIDATES.items() if regime == "large"})


def _time(fn, cuda_graph: bool = False, copies: list[tuple] | None = None) -> tuple[float | None, str]:
    """Median ms of fn (do_bench; as CUDA-graph replays for microsecond kernels), of one decode step
    fn(*copy) over copies of its cache in turn (timing.decode_ms), or the error."""
    try:
        if copies is not None:
            return decode_ms(fn, copies, True, warmup_ms=10, rep_ms=20), ""
        return median_ms(fn, True, warmup_ms=10, rep_ms=20 if cuda_graph else 40, cuda_graph=cuda_graph), ""
    except Exception as err:  # e.g. out of shared memory for a large tile
        return None, f"{type(err).__name__}: {first_line(err)[:80]}"


# what is timed: (candidate list, pass whose config it sets, FUSED_DQ mode)
PASSES = (("fwd", "fwd", "off"), ("dkdv", "dkdv", "off"), ("dq", "dq", "off"),
          ("dkdv fused", "dkdv", "atomics"), ("dkdv fused", "dkdv", "tma"))
DEFAULT_WINDOWS = (128, 2048, "T")  # the small regime, then the large one at a wide window and at W = T
TUNED_HEAD_DIMS = tuple(sorted({d for _, d, _ in fn_mod.CONFIGS}))  # the head sizes CONFIGS holds tiles for
SWEEP_TOKENS = 65536  # B * T of every attention sweep's inputs


def _sizes(windows: tuple, T: int) -> list[int]:
    """--windows as key counts at length T (its "T": the whole sequence)."""
    return [T if w == "T" else w for w in windows]


def _inputs(d: int, seq_len: int, tokens: int):
    """T, bf16 (q, k, v, dO) [B, T, H, d] with B * T = tokens and H * d = 1024 (seed 0), the heads'
    ALiBi slopes and the score scale: the inputs every sweep of the attention passes times."""
    H, B, T = 1024 // d, tokens // seq_len, seq_len
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, do = (torch.randn(B, T, H, d, generator=gen).to("cuda", torch.bfloat16) for _ in range(4))
    return T, (q, k, v, do), alibi_slopes(H).cuda(), 1 / math.sqrt(d)


def sdpa_backward(q, k, v, do):
    """SDPA's backward alone over full causal attention (the kernel's peer at W = T): its forward run
    once with the graph kept, the gradients asked again at each call. q, k, v and dO as _inputs makes them."""
    qs, ks, vs = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
    return lambda: torch.autograd.grad(out, (qs, ks, vs), do.transpose(1, 2), retain_graph=True)


def sweep(seq_len: int = 8192, tokens: int = SWEEP_TOKENS, on_row=lambda row: None,
          windows: tuple = DEFAULT_WINDOWS, head_dims: tuple = TUNED_HEAD_DIMS) -> list[dict]:
    rows = []
    for d in head_dims:
        T, (q, k, v, do), slopes, scale = _inputs(d, seq_len, tokens)

        def fwd(W):
            return lambda: _swat_fwd(q, k, v, slopes, None, None, W, 0.0, scale)

        def bwd(W):
            return lambda: _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale)

        for W in _sizes(windows, T):
            regime = fn_mod.window_regime(W, d)
            for candidates, pass_name, fused in PASSES:
                what = candidates if fused == "off" else f"{candidates} {fused}"
                for cand in CANDIDATES[(candidates, regime)]:
                    with override_configs({(pass_name, d, regime): cand}), override_fused_dq({(d, regime): fused}):
                        ms, note = _time(fwd(W) if pass_name == "fwd" else bwd(W))
                    rows.append(dict(d=d, T=T, W=W, what=what, **cand, ms=ms, note=note))
                    on_row(rows[-1])
    return rows


SIGMOID_MODES = (1, 2, 3)  # triton_common.sigmoid_scaled's GPU modes for 16-bit inputs


def _sigmoid_mode_rows(shape: dict, fwd, bwd, on_row) -> list[dict]:
    """The forward and the whole backward timed in each SIGMOID_MODES mode, at the current configs."""
    rows = []
    for mode in SIGMOID_MODES:
        for what, f in (("fwd", fwd), ("bwd", bwd)):
            with override_sigmoid_mode({what: mode}):
                ms, note = _time(f)
            rows.append(dict(shape, what=f"{what} sigmoid mode {mode}", ms=ms, note=note))
            on_row(rows[-1])
    return rows


def _largest_value_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def sigmoid_sweep(seq_len: int = 16384, tokens: int = SWEEP_TOKENS, on_row=lambda row: None,
                  windows: tuple = DEFAULT_WINDOWS, head_dims: tuple = TUNED_HEAD_DIMS) -> list[dict]:
    """Each sigmoid mode's forward and backward time at the peer bench's length (B * T = 65536),
    and its error: o, dq, dk and dv in bf16 against the fp32 kernel (mode 0, exact division) on the
    same bf16-rounded inputs, as max |difference| over the largest value, with no sigmoid bias and
    with -log W (the `swat_logw` variant's, where most weights are near 1 / W: the tanh mode's
    error is absolute, so this is where it would show)."""
    rows = []
    for d in head_dims:
        T, (q, k, v, do), slopes, scale = _inputs(d, seq_len, tokens)
        for W in _sizes(windows, T):
            shape = dict(d=d, T=T, W=W)
            rows += _sigmoid_mode_rows(shape, lambda: _swat_fwd(q, k, v, slopes, None, None, W, 0.0, scale),
                                       lambda: _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale), on_row)
            for bias in (0.0, -math.log(W)):
                rows += _sigmoid_error_rows(dict(shape, bias=bias), q, k, v, do, slopes, scale, on_row)
    return rows


def _sigmoid_error_rows(shape: dict, q, k, v, do, slopes, scale: float, on_row) -> list[dict]:
    W, bias = shape["W"], shape["bias"]
    exact = [_swat_fwd(q.float(), k.float(), v.float(), slopes, None, None, W, bias, scale),
             *_swat_bwd(do.float(), q.float(), k.float(), v.float(), slopes, None, None, W, bias, scale)]
    rows = []
    for mode in SIGMOID_MODES:
        with override_sigmoid_mode({"fwd": mode, "bwd": mode}):
            got = [_swat_fwd(q, k, v, slopes, None, None, W, bias, scale),
                   *_swat_bwd(do, q, k, v, slopes, None, None, W, bias, scale)]
        errors = {f"err_{name}": _largest_value_error(g, e) for name, g, e in zip(("o", "dq", "dk", "dv"), got, exact)}
        rows.append(dict(shape, what=f"sigmoid mode {mode} error vs fp32", **errors))
        on_row(rows[-1])
    return rows


# The first sweep (NOTES.md, v4) also tried 1 program per pair and 8 warps, never best but once.
# LOOP_STAGES > 1 copies the next tiles into shared memory while one is reduced (v20; the launch's
# num_stages never reached the slot loop): it costs programs per SM and lost at batch 64 (v21),
# while with the cache read from HBM 2 stages won every batch-1 and batch-8 shape (v25), so it is
# swept at most 3 deep, with and without the 2-D accumulator; SUM_IN_KERNEL (the runs' sums added
# without a second kernel) goes with the v5 sweep's most frequent winners. PREFETCH is timed by
# results/kernels/decode-dot/probe.py (v25), not here.
DECODE_CANDIDATES = [dict(DOT=False, MIN_PROGRAMS=p, TILE_ELEMS=t, num_warps=w, LOOP_STAGES=stages, ACC_2D=acc_2d,
                          SUM_IN_KERNEL=in_kernel, PREFETCH=False)
                     for p in (264, 1056, 4224) for t in (2048, 4096, 8192) for w in (2, 4)
                     for stages, acc_2d, in_kernel in ((1, False, False), (2, False, False), (3, False, False),
                                                       (1, True, False), (2, True, False), (1, False, True),
                                                       (1, True, True), (2, True, True))]


DECODE_SHAPES = [(d, B, W) for d in (64, 128) for B in (1, 8, 64) for W in (128, 512, 2048)]


def decode_inputs(d: int, B: int, W: int):
    """bf16 q [B, H, d] and copies of a full ring buffer (k, v caches [B, W, H, d]; as many as a
    step timed over them in turn needs to read its cache from HBM, timing.l2_cold_copies) with
    H * d = 1024 (seed 0), the heads' ALiBi slopes, and SDPA over the same slots (a sliding-window
    softmax model's step, on one copy's caches): the inputs every timing of the decode takes."""
    H = 1024 // d
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(B, H, d, generator=gen).to("cuda", torch.bfloat16)
    copies = l2_cold_copies(*(torch.randn(B, W, H, d, generator=gen).to("cuda", torch.bfloat16) for _ in range(2)))
    return q, copies, alibi_slopes(H).cuda(), sdpa_over_ring(q)


def decode_sweep(on_row=lambda row: None) -> list[dict]:
    rows = []
    for d, B, W in DECODE_SHAPES:
        q, copies, slopes, sdpa = decode_inputs(d, B, W)
        H = q.shape[1]
        shape = dict(d=d, B=B, H=H, W=W)
        ms, note = _time(sdpa, copies=copies)
        rows.append(dict(shape, what="decode sdpa (same buffer, softmax)", ms=ms, note=note))
        on_row(rows[-1])
        for cand in DECODE_CANDIDATES:
            with override_decode_config(**cand):
                splits = decode_launch(B * H, W, d)["splits"]
                ms, note = _time(lambda kc, vc: swat_decode_triton(q, kc, vc, W, 10 * W, slopes, W), copies=copies)
            rows.append(dict(shape, what="decode", **cand, splits=splits, ms=ms, note=note))
            on_row(rows[-1])
    return rows


SPREAD_ROUNDS = 5


def _spread_round(d: int, seq_len: int, W: int, tokens: int, rnd: int) -> dict:
    """One round of spread_sweep: fresh inputs behind a spacer of this round's size, the backward
    timed eagerly and as CUDA-graph replays; everything it allocated is freed on return."""
    # allocated first, so that the inputs after it sit elsewhere: 0, 4, 8, 12, 9 MiB over the rounds
    _spacer = torch.empty(((3 * rnd) % 7 + rnd) << 20, dtype=torch.uint8, device="cuda")
    T, (q, k, v, do), slopes, scale = _inputs(d, seq_len, tokens)
    bwd = functools.partial(_swat_bwd, do, q, k, v, slopes, None, None, W, 0.0, scale)
    eager, note = _time(bwd)
    graph, graph_note = _time(bwd, cuda_graph=True)
    apart = {f"{name}_minus_q_mb": round((t.data_ptr() - q.data_ptr()) / 2**20, 3)
             for name, t in (("k", k), ("v", v), ("do", do))}
    return dict(d=d, T=T, W=W, what="bwd spread", round=rnd, ms=eager, ms_graph=graph,
                note="; ".join(n for n in (note, graph_note) if n), **apart)


def spread_sweep(tokens: int = 65536, on_row=lambda row: None, windows: tuple = (128,),
                 rounds: int = SPREAD_ROUNDS) -> list[dict]:
    """The whole backward at each (d, T, W), once per round, on inputs allocated afresh behind a
    spacer of another size each round, so that the buffers sit at other addresses (rows give their
    distances from q). The peer bench's W = 128 backward moved between 0.83 and 1.25 ms from run to
    run of unchanged code (NOTES.md v14): a spread that follows the rounds here, eagerly and in CUDA
    graphs alike, is the buffers' placement; one in the eager times only is the host's."""
    rows = []
    for d in (64, 128):
        for seq_len in KERNEL_BENCH_LENGTHS:
            for W in _sizes(windows, seq_len):
                for rnd in range(rounds):
                    rows.append(_spread_round(d, seq_len, W, tokens, rnd))
                    on_row(rows[-1])
                    torch.cuda.empty_cache()
    return rows


def order_sweep(tokens: int = 65536, on_row=lambda row: None, windows: tuple = DEFAULT_WINDOWS) -> list[dict]:
    """The forward and the whole backward the dispatcher runs (Hopper passes included) with the
    programs in each of PROGRAM_ORDERS, at the peer bench's lengths, on the same inputs in one
    process: what chooses PROGRAM_ORDER per regime (NOTES.md v14 compared "pairs" with "heads" in
    two processes, one per tree)."""
    rows = []
    for d in (64, 128):
        for seq_len in KERNEL_BENCH_LENGTHS:
            T, (q, k, v, do), slopes, scale = _inputs(d, seq_len, tokens)
            for W in _sizes(windows, T):
                for order in fn_mod.PROGRAM_ORDERS:
                    with override_program_order(dict.fromkeys(fn_mod.PROGRAM_ORDER, order)):
                        for what, call in (("fwd", lambda: _swat_fwd(q, k, v, slopes, None, None, W, 0.0, scale)),
                                           ("bwd", lambda: _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale))):
                            ms, note = _time(call)
                            rows.append(dict(d=d, T=T, W=W, what=f"{what} order", order=order, ms=ms, note=note))
                            on_row(rows[-1])
    return rows


def spread_summary(rows: list[dict]) -> list[str]:
    """Per (d, T, W) of the spread sweep: the fastest, median and slowest round, eager and graphed."""
    import statistics
    lines = []
    for key in sorted({(r["d"], r["T"], r["W"]) for r in rows if r["what"] == "bwd spread"}):
        got = [r for r in rows if r["what"] == "bwd spread" and (r["d"], r["T"], r["W"]) == key]
        parts = []
        for field, label in (("ms", "eager"), ("ms_graph", "graph")):
            times = sorted(r[field] for r in got if r[field] is not None)
            parts.append(f"{label} {times[0]:.3f} / {statistics.median(times):.3f} / {times[-1]:.3f} ms"
                         if times else f"{label}: none timed")
        rounds = f"{len(got)} round" + ("s" if len(got) > 1 else "")
        lines.append(f"  d={key[0]} T={key[1]} W={key[2]} ({rounds}, fastest / median / slowest): "
                     + ", ".join(parts))
    return lines


def _describe(r: dict) -> str:
    if "order" in r:
        return f"order={r['order']}"
    if "BLOCK_M" in r:
        return f"{r['BLOCK_M']}x{r['BLOCK_N']} w{r['num_warps']} s{r['num_stages']} one_loop={r['ONE_LOOP']}"
    if "MIN_PROGRAMS" in r:
        return (f"programs>={r['MIN_PROGRAMS']} tile={r['TILE_ELEMS']} w{r['num_warps']} "
                f"loop_stages={r.get('LOOP_STAGES', 1)} "
                f"acc_2d={r.get('ACC_2D', False)} sum_in_kernel={r.get('SUM_IN_KERNEL', False)} ({r['splits']} splits)")
    return ""


TUNE_SWEEPS = ("tiles", "decode", "sigmoid", "spread", "order")


def checked_sweeps(text: str) -> list[str]:
    """The sweeps --sweeps names, checked before --out is opened: a misspelt one ran nothing and printed
    an empty `best` list, and a machine without a GPU stopped in a traceback after truncating --out."""
    sweeps = [s.strip() for s in text.split(",") if s.strip()]
    if not sweeps or set(sweeps) - set(TUNE_SWEEPS):
        raise ConfigError(f"--sweeps takes comma-separated {', '.join(TUNE_SWEEPS)}, got {text!r}")
    if not torch.cuda.is_available():
        raise ConfigError("harness.bench.tune times the SWAT Triton kernels on a CUDA GPU, and none is visible "
                          "here; run it on a GPU machine")
    return sweeps


def checked_windows(text: str) -> tuple:
    """--windows: comma-separated key counts above 0, or T (the whole sequence)."""
    items = [w.strip() for w in text.split(",") if w.strip()]
    if not items or not all(w == "T" or (w.isdigit() and int(w) > 0) for w in items):
        raise ConfigError(f"--windows takes comma-separated window sizes above 0 or T, e.g. 128,512,T; got {text!r}")
    return tuple(w if w == "T" else int(w) for w in items)


def checked_head_dims(text: str) -> tuple:
    """--head-dims: comma-separated head sizes among those CONFIGS tunes."""
    dims = parse_ints(text, "--head-dims")
    if set(dims) - set(TUNED_HEAD_DIMS):
        raise ConfigError(f"--head-dims takes {' and '.join(map(str, TUNED_HEAD_DIMS))}, the head sizes the "
                          f"kernels' configs are tuned for; got {text!r}")
    return tuple(dims)


def checked_length(text: str) -> int:
    """--length: one sequence length that divides the sweeps' SWEEP_TOKENS tokens (B * T)."""
    lengths = parse_ints(text, "--length")
    if len(lengths) != 1 or SWEEP_TOKENS % lengths[0]:
        raise ConfigError(f"--length takes one sequence length that divides the {SWEEP_TOKENS} tokens a sweep "
                          f"times (B * T), e.g. 4096; got {text!r}")
    return lengths[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", default="tiles,decode", help=f"comma-separated: {', '.join(TUNE_SWEEPS)}")
    parser.add_argument("--windows", default=",".join(map(str, DEFAULT_WINDOWS)),
                        help="the tiles, sigmoid, spread and order sweeps' windows, comma-separated (T: the whole "
                             "sequence); the tiles sweep times each with the candidates of its regime (small: W <= "
                             f"{fn_mod.SMALL_WINDOW}, medium: W <= {fn_mod.MEDIUM_WINDOW} by head size)")
    parser.add_argument("--head-dims", default=",".join(map(str, TUNED_HEAD_DIMS)),
                        help="the tiles and sigmoid sweeps' head sizes, comma-separated (default "
                        f"{','.join(map(str, TUNED_HEAD_DIMS))})")
    parser.add_argument("--length", help="the tiles and sigmoid sweeps' sequence length, B * T staying "
                        f"{SWEEP_TOKENS} (default: 8192 for tiles, 16384 for sigmoid, the peer bench's)")
    parser.add_argument("--out", help="also write the rows as JSON lines to this file, each as it is measured "
                        "(a sweep cut short keeps what it measured)")
    args = parser.parse_args()
    try:
        windows = checked_windows(args.windows)
        shape = dict(windows=windows, head_dims=checked_head_dims(args.head_dims))
        if args.length is not None:
            shape["seq_len"] = checked_length(args.length)
        sweeps = checked_sweeps(args.sweeps)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from harness.results.provenance import stamped_row_writer
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext() as out:
        on_row = (stamped_row_writer(out, "cuda", shlex.join(["python", "-m", "harness.bench.tune", *sys.argv[1:]]))
                  if out is not None else lambda row: None)
        with triton_only():
            rows = (sweep(on_row=on_row, **shape) if "tiles" in sweeps else []) + \
                (decode_sweep(on_row=on_row) if "decode" in sweeps else []) + \
                (sigmoid_sweep(on_row=on_row, **shape) if "sigmoid" in sweeps else [])
        # the dispatcher's kernels, Hopper passes included, as the peer bench times them
        rows += (spread_sweep(on_row=on_row, windows=windows) if "spread" in sweeps else []) + \
            (order_sweep(on_row=on_row, windows=windows) if "order" in sweeps else [])
    best = {}
    for r in rows:
        if r["what"] == "bwd spread":  # one config in rounds: spread_summary's
            continue
        key = (r["what"], r["d"], r.get("B"), r.get("T"), r["W"])  # decode rows have no T
        if r.get("ms") is not None and (key not in best or r["ms"] < best[key]["ms"]):
            best[key] = r
    print("best per (what, d, B, T, W):")
    for key, r in sorted(best.items(), key=lambda kv: str(kv[0])):
        print(f"  {key}: {_describe(r)}  {r['ms']:.4f} ms")
    spread = spread_summary(rows)
    if spread:
        print("backward, round to round:")
        print("\n".join(spread))
    errors = [r for r in rows if "err_o" in r]
    if errors:
        print("error vs fp32 (max |difference| / largest value):")
    for r in errors:
        shape = (r["what"], r["d"], r["W"], round(r["bias"], 2))
        print(f"  {shape}: " + ", ".join(f"{k[4:]} {v:.2e}" for k, v in r.items() if k.startswith("err_")))

if __name__ == "__main__":
    main()
