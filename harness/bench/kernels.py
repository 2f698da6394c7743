"""`harness bench kernels`: the SWAT Triton kernel against the attention kernels a user would pick.

Peers, each timed in this process on the same q, k, v values (bf16, its own layout prepared outside
the timed region):

- swat            this repository's kernel: sliding window, sigmoid, balanced ALiBi slopes
- flex            torch flex_attention (compiled): sliding-window block mask + ALiBi score_mod, softmax
- fla             flash-linear-attention's parallel_attn(window_size=W), softmax, no ALiBi
- flash_attn      flash_attn_func(window_size=(W-1, 0), alibi_slopes), when installed
- sdpa            torch scaled_dot_product_attention, full causal (only where W >= T)
- triton_sigmoid  triton-sigmoid's sigmoid_attention(is_causal=True) (only where W >= T)

Modes: fwd (no autograd), fwd_bwd (forward + backward against a fixed output gradient), and decode
(one token against SWAT's W-slot ring buffer, against SDPA over the same W slots, the step of a
sliding-window softmax model, and against SDPA over a full KV cache of the context; timed as
CUDA-graph replays, so host launch overhead is out of all three, over enough copies of the cache
in turn that each step reads it from HBM, as a model's layer does). Forward and forward + backward
rows also carry the host's time to enqueue one call (host_ms), which tells a row the GPU waited on
Python for from one that times the kernels, and the call's time replayed from a CUDA graph
(graph_ms), which leaves the host out: the kernels' own time, for every peer alike. TFLOP/s count
only the band's (query, key) pairs (harness.bench.timing.attention_flops); the ratio is the
fastest peer's time over SWAT's (above 1: SWAT is faster). Results go to OUT/<device>/ as
kernels.csv, kernels.md, kernels.png (time vs W) and decode.png, plus run.json.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from harness.bench.timing import (
    GRAPH_REP_MS,
    attention_flops,
    band_pairs,
    decode_ms,
    host_ms,
    l2_cold_copies,
    median_ms,
)
from harness.config import ConfigError
from harness.results.provenance import device_slug

PEERS = ("swat", "flex", "fla", "flash_attn", "sdpa", "triton_sigmoid")
MODES = ("fwd", "fwd_bwd", "decode")
FIELDS = ("mode", "head_dim", "seq_len", "window", "batch", "heads", "peer", "activation", "ms", "tflops", "host_ms",
          "graph_ms", "status", "date", "commit")
FLOAT_FIELDS = ("ms", "tflops", "host_ms", "graph_ms")  # host_ms and graph_ms: blank in older files


@dataclass(frozen=True)
class Shape:
    head_dim: int
    seq_len: int
    window: int  # >= seq_len means full causal
    batch: int
    heads: int

    @property
    def full(self) -> bool:
        return self.window >= self.seq_len


def kernel_shapes(head_dims, lengths, windows, tokens: int, hidden: int) -> list[Shape]:
    """Every (d, T, W) with batch = tokens // T and heads = hidden // d; windows >= T collapse to W = T."""
    shapes = []
    for d in head_dims:
        if hidden % d:
            raise ConfigError(f"--hidden {hidden} is not a multiple of head size {d} (heads = hidden / d)")
        for T in lengths:
            if tokens % T:
                raise ConfigError(f"--tokens {tokens} is not a multiple of sequence length {T}")
            for W in sorted({min(T if w == "T" else int(w), T) for w in windows}):
                shapes.append(Shape(d, T, W, tokens // T, hidden // d))
    return shapes


# ---------------------------------------------------------------- peers

def _missing(module: str, install: str) -> str | None:
    import importlib.util
    return None if importlib.util.find_spec(module) else f"not installed ({install})"


@dataclass
class Peer:
    name: str
    activation: str
    layout: str  # "bthd" (q [B, T, H, d]) or "bhtd"
    why_not: Callable[[Shape], str | None]  # None when the peer runs this shape
    build: Callable[[Shape, torch.Tensor], Callable]  # (shape, slopes) -> f(q, k, v) -> o


def _build_swat(shape: Shape, slopes: torch.Tensor):
    from harness.ops.swat.function import swat_attention_triton
    return lambda q, k, v: swat_attention_triton(q, k, v, slopes, shape.window)


_FLEX = {}


def _build_flex(shape: Shape, slopes: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if "fn" not in _FLEX:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    W = shape.window

    def band(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < W)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (q_idx - kv_idx)

    mask = create_block_mask(band, None, None, shape.seq_len, shape.seq_len, device=slopes.device)
    return lambda q, k, v: _FLEX["fn"](q, k, v, score_mod=alibi, block_mask=mask)


def _build_fla(shape: Shape, slopes: torch.Tensor):
    from fla.ops.attn import parallel_attn
    window = None if shape.full else shape.window
    return lambda q, k, v: parallel_attn(q, k, v, window_size=window)


def _build_flash_attn(shape: Shape, slopes: torch.Tensor):
    from flash_attn import flash_attn_func
    # flash-attn adds -alibi_slope * |i - j|; SWAT adds slope * (i - j) for i >= j
    alibi = (-slopes).float().contiguous()
    return lambda q, k, v: flash_attn_func(q, k, v, causal=True, window_size=(shape.window - 1, 0),
                                           alibi_slopes=alibi)


def _build_sdpa(shape: Shape, slopes: torch.Tensor):
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _build_triton_sigmoid(shape: Shape, slopes: torch.Tensor):
    from triton_sigmoid import sigmoid_attention
    return lambda q, k, v: sigmoid_attention(q, k, v, is_causal=True)


def _no_cuda() -> str | None:
    return None if torch.cuda.is_available() else "needs a CUDA GPU"


def _full_only(missing: Callable[[], str | None]):
    def why_not(shape: Shape) -> str | None:
        if not shape.full:
            return "full causal only (W >= T)"
        return missing()
    return why_not


PEER_SPECS = {
    "swat": Peer("swat", "sigmoid", "bthd", lambda s: None, _build_swat),
    "flex": Peer("flex", "softmax", "bhtd", lambda s: _no_cuda(), _build_flex),
    "fla": Peer("fla", "softmax", "bthd",
                lambda s: _missing("fla", "pip install 'swat-harness[fla]'") or _no_cuda(), _build_fla),
    "flash_attn": Peer("flash_attn", "softmax", "bthd",
                       lambda s: _missing("flash_attn", "pip install 'swat-harness[gpu]'") or _no_cuda(),
                       _build_flash_attn),
    "sdpa": Peer("sdpa", "softmax", "bhtd", _full_only(lambda: None), _build_sdpa),
    "triton_sigmoid": Peer("triton_sigmoid", "sigmoid", "bthd",
                           _full_only(lambda: _missing("triton_sigmoid", "pip install triton-sigmoid")
                                      or _no_cuda()),
                           _build_triton_sigmoid),
}


# ---------------------------------------------------------------- measuring

def _error(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"error: {type(err).__name__}: {text[:120]}"


def _row(mode, shape: Shape, peer: Peer, ms=None, status="ok", pairs=None, host=None, graph=None) -> dict:
    tflops = None
    if ms is not None and pairs is not None:
        tflops = round(attention_flops(pairs, shape.head_dim, mode) / (ms * 1e-3) / 1e12, 2)
    return dict(mode=mode, head_dim=shape.head_dim, seq_len=shape.seq_len, window=shape.window, batch=shape.batch,
                heads=shape.heads, peer=peer.name, activation=peer.activation,
                ms=None if ms is None else round(ms, 5), tflops=tflops,
                host_ms=None if host is None else round(host, 5), graph_ms=None if graph is None else round(graph, 5),
                status=status)


def graph_ms(call: Callable, grad_to_none, peer: str, log: Callable) -> float | None:
    """The call's median time replayed from a CUDA graph (timing.median_ms), or None, said in the
    log, where it cannot be captured (a peer that waits on the host inside a call, say): its
    eager time stands, and the row is not lost for it."""
    try:
        return median_ms(call, True, rep_ms=GRAPH_REP_MS, grad_to_none=grad_to_none, cuda_graph=True)
    except Exception as err:
        log(f"warning: {peer}: no CUDA-graph time ({_error(err).removeprefix('error: ')})")
        return None


def measure_shape(shape: Shape, peers: list[str], modes: list[str], device: torch.device, dtype,
                  done: set, timing: dict, log: Callable = print) -> list[dict]:
    """Rows for one (d, T, W) shape: each peer, forward and forward+backward, on the same values."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    B, T, H, d = shape.batch, shape.seq_len, shape.heads, shape.head_dim
    base = [torch.randn(B, T, H, d, generator=gen).to(device, dtype) for _ in range(4)]  # q, k, v, do
    from harness.ops.alibi import alibi_slopes
    slopes = alibi_slopes(H, "balanced").to(device)
    pairs = B * H * band_pairs(T, shape.window)
    cuda = device.type == "cuda"
    rows = []
    for name in peers:
        peer = PEER_SPECS[name]
        todo = [m for m in modes if m != "decode" and (m, shape, name) not in done]
        if not todo:
            continue
        reason = peer.why_not(shape)
        if reason:
            rows += [_row(m, shape, peer, status=reason) for m in todo]
            continue
        try:
            fn = peer.build(shape, slopes)
        except Exception as err:  # a peer that cannot be built is reported, not fatal
            rows += [_row(m, shape, peer, status=_error(err)) for m in todo]
            continue
        q, k, v, do = (t.transpose(1, 2).contiguous() if peer.layout == "bhtd" else t for t in base)
        for mode in todo:
            try:
                if mode == "fwd":
                    call, grads, autograd = (lambda: fn(q, k, v)), None, torch.no_grad()
                else:
                    qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))

                    def call():
                        fn(qg, kg, vg).backward(do)
                    grads, autograd = [qg, kg, vg], contextlib.nullcontext()
                with autograd:
                    ms = median_ms(call, cuda, grad_to_none=grads, **timing)
                    host = host_ms(call, grad_to_none=grads) if cuda else None
                    graph = graph_ms(call, grads, name, log) if cuda else None
                rows.append(_row(mode, shape, peer, ms, pairs=pairs, host=host, graph=graph))
            except Exception as err:  # OOM or a peer's own failure: record it and go on
                rows.append(_row(mode, shape, peer, status=_error(err)))
            finally:
                if cuda:
                    torch.cuda.empty_cache()
    return rows


def sdpa_over_ring(q: torch.Tensor) -> Callable:
    """SDPA's decode step for the queries q [B, H, d] over a W-slot ring buffer (k, v caches
    [B, W, H, d]), as a sliding-window softmax model reads it: SWAT's decode's peer over the same slots."""
    qs = q[:, :, None]
    return lambda kc, vc: F.scaled_dot_product_attention(qs, kc.transpose(1, 2), vc.transpose(1, 2))


def measure_decode(head_dim: int, heads: int, batch: int, context: int, windows: list[int], device, dtype,
                   done: set, timing: dict) -> list[dict]:
    """One new token: SWAT against its W-slot ring buffer and SDPA over the same buffer (per W), and
    SDPA over a full cache of `context` (rows of peer sdpa with window = context). Each step is
    timed over enough copies of its cache that it reads the cache from HBM (timing.decode_ms), as
    every layer of a model does."""
    from harness.ops.alibi import alibi_slopes
    from harness.ops.swat.function import swat_decode_triton
    gen = torch.Generator(device="cpu").manual_seed(1)
    slopes = alibi_slopes(heads).to(device)
    cuda = device.type == "cuda"
    rows = []
    q = torch.randn(batch, heads, head_dim, generator=gen).to(device, dtype)
    qs = q[:, :, None]
    sdpa_ring_step = sdpa_over_ring(q)
    for W in windows:
        shape = Shape(head_dim, context, W, batch, heads)
        if W >= context:
            continue
        copies = l2_cold_copies(*(torch.randn(batch, W, heads, head_dim, generator=gen).to(device, dtype)
                                  for _ in range(2)))
        if ("decode", shape, "swat") not in done:
            try:
                ms = decode_ms(lambda kc, vc: swat_decode_triton(q, kc, vc, W, context - 1, slopes, W), copies, cuda,
                               **timing)
                rows.append(_row("decode", shape, PEER_SPECS["swat"], ms, pairs=batch * heads * W))
            except Exception as err:
                rows.append(_row("decode", shape, PEER_SPECS["swat"], status=_error(err)))
        if ("decode", shape, "sdpa") not in done:
            try:
                ms = decode_ms(sdpa_ring_step, copies, cuda, **timing)
                rows.append(_row("decode", shape, PEER_SPECS["sdpa"], ms, pairs=batch * heads * W))
            except Exception as err:
                rows.append(_row("decode", shape, PEER_SPECS["sdpa"], status=_error(err)))
        del copies
    shape = Shape(head_dim, context, context, batch, heads)
    if ("decode", shape, "sdpa") not in done:
        try:
            copies = l2_cold_copies(*(torch.randn(batch, heads, context, head_dim, device=device, dtype=dtype)
                                      for _ in range(2)))
            ms = decode_ms(lambda kc, vc: F.scaled_dot_product_attention(qs, kc, vc), copies, cuda, **timing)
            rows.append(_row("decode", shape, PEER_SPECS["sdpa"], ms, pairs=batch * heads * context))
            del copies
        except Exception as err:
            rows.append(_row("decode", shape, PEER_SPECS["sdpa"], status=_error(err)))
        if cuda:
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- files

def _key(r: dict) -> tuple:
    return (r["mode"], Shape(int(r["head_dim"]), int(r["seq_len"]), int(r["window"]), int(r["batch"]),
                             int(r["heads"])), r["peer"])


def read_csv(path: Path) -> list[dict]:
    """The rows of a kernels.csv ([] where there is none). A damaged line, e.g. one cut short by a
    full disk or an editor (its status, date and commit gone), would be drawn as measured and kept
    unmeasured by a rerun, so it is an error, and so is a file without rows (its plots would stay)."""
    if not path.is_file():
        return []
    rows = []
    for n, r in enumerate(csv.DictReader(path.read_text(encoding="utf-8", errors="replace").splitlines()), 2):
        try:
            if None in r or not all(r.get(f) for f in ("status", "date", "commit")):  # fields short or over
                raise ValueError(f"not the {len(FIELDS)} fields of a measured shape, status, date and commit last")
            for f in FLOAT_FIELDS:
                r[f] = float(r[f]) if r.get(f) not in ("", None) else None
            for f in ("head_dim", "seq_len", "window", "batch", "heads"):
                r[f] = int(r[f])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: line {n} is damaged ({type(err).__name__}: {err}); delete that line (its "
                              f"shape is measured again), or pass --force to measure everything again") from None
        rows.append(r)
    if not rows:
        raise ConfigError(f"{path} holds no measured shape; delete it and run `harness bench kernels` again")
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(ms) -> str:
    return "" if ms is None else f"{ms:.3f}"


def ratio_table(rows: list[dict], mode: str) -> tuple[list[str], list[list[str]]]:
    """Per shape: SWAT's time and TFLOP/s (and its host and CUDA-graph times where measured), every
    peer's time, the fastest peer and the ratio; where graph times were measured, the ratio of the
    fastest peer's graph time to SWAT's too."""
    from collections import defaultdict
    by_shape = defaultdict(dict)
    for r in rows:
        if r["mode"] == mode:
            by_shape[(r["head_dim"], r["seq_len"], r["window"], r["batch"], r["heads"])][r["peer"]] = r
    peers = [p for p in PEERS[1:] if any(p in v and v[p]["ms"] is not None for v in by_shape.values())]
    hosted = any(v.get("swat", {}).get("host_ms") is not None for v in by_shape.values())
    graphed = any(v.get("swat", {}).get("graph_ms") is not None for v in by_shape.values())
    header = ["d", "T", "W", "B", "H", "swat ms", *(["swat host ms"] if hosted else []),
              *(["swat graph ms"] if graphed else []), "swat TFLOP/s"] + \
        [f"{p} ms" for p in peers] + ["fastest peer", "ratio (peer / swat)", *(["ratio in graphs"] if graphed else [])]
    body = []
    for (d, T, W, B, H), got in sorted(by_shape.items()):
        swat = got.get("swat", {})
        timed = {p: got[p]["ms"] for p in peers if p in got and got[p]["ms"] is not None}
        best = min(timed, key=timed.get) if timed else None
        host = [_fmt(swat.get("host_ms"))] if hosted else []
        graph = [_fmt(swat.get("graph_ms"))] if graphed else []
        replayed = {p: got[p]["graph_ms"] for p in peers if p in got and got[p].get("graph_ms") is not None}
        graph_ratio = [_ratio(min(replayed.values(), default=None), swat.get("graph_ms"))] if graphed else []
        body.append([d, T, "T" if W >= T else W, B, H, _fmt(swat.get("ms")), *host, *graph, swat.get("tflops") or ""]
                    + [_fmt(timed.get(p)) for p in peers] + [best or "", _ratio(timed.get(best), swat.get("ms")),
                                                             *graph_ratio])
    return header, body


def decode_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per (d, B, H, context): SWAT and SDPA over the same W-slot buffer for each W (ratio above 1:
    SWAT is faster), then SDPA over the full cache and its ratio to SWAT at the largest W."""
    dec = [r for r in rows if r["mode"] == "decode" and r["ms"] is not None]
    windows = sorted({r["window"] for r in dec if r["peer"] == "swat"})
    header = ["d", "B", "H", "context"]
    for w in windows:
        header += [f"swat W={w} us", f"sdpa W={w} us", f"sdpa / swat W={w}"]
    header += ["sdpa full us", "sdpa full / swat (largest W)"]
    body = []
    for d, B, H, ctx in sorted({(r["head_dim"], r["batch"], r["heads"], r["seq_len"]) for r in dec}):
        sel = [r for r in dec if (r["head_dim"], r["batch"], r["heads"], r["seq_len"]) == (d, B, H, ctx)]
        swat = {r["window"]: r["ms"] for r in sel if r["peer"] == "swat"}
        sdpa = {r["window"]: r["ms"] for r in sel if r["peer"] == "sdpa"}
        line = [d, B, H, ctx]
        for w in windows:
            line += [_us(swat.get(w)), _us(sdpa.get(w)), _ratio(sdpa.get(w), swat.get(w))]
        largest = max(swat) if swat else None
        body.append(line + [_us(sdpa.get(ctx)), _ratio(sdpa.get(ctx), swat.get(largest))])
    return header, body


def _us(ms: float | None) -> str:
    return f"{ms * 1e3:.1f}" if ms else ""


def _ratio(peer_ms: float | None, swat_ms: float | None) -> str:
    return f"{peer_ms / swat_ms:.2f}x" if peer_ms and swat_ms else ""


def markdown(rows: list[dict], info: dict) -> str:
    from harness.results.tables import markdown_table
    lines = ["# SWAT kernel vs peers", "",
             f"- command: `{info['command']}`", f"- device: {info['device']}", f"- date: {info['date']}",
             f"- commit: {info['commit']}", f"- versions: {json.dumps(info['versions'])}",
             *[f"- earlier run resumed here: `{p['command']}` on {p['date']}, commit {p['commit']}"
               for p in info.get("earlier", [])],
             "- rows measured by earlier runs (resumed into this file) keep their own date and commit in "
             f"kernels.csv: {', '.join(sorted({str(r.get('commit')) for r in rows}))}",
             f"- dtype: {info['dtype']}; tokens per batch B*T = {info['tokens']}; heads H = hidden {info['hidden']}"
             " / d; timings are medians of triton's do_bench (CUDA events); TFLOP/s count the band's pairs only "
             "(4d per pair forward, 14d forward+backward); ratio = fastest peer's time / SWAT's time.",
             *(["- swat host ms: the host's time to enqueue one call while the GPU is held busy "
                "(harness.bench.timing.host_ms; blank where it could not be told apart); where it nears swat ms, "
                "the GPU waited on Python and the row times the host rather than the kernels."]
               if any(r.get("host_ms") is not None for r in rows) else []),
             *(["- swat graph ms: the call's median time replayed from a CUDA graph (triton's do_bench_cudagraph), "
                "which leaves the host out: the kernels' own time; ratio in graphs = the fastest peer's graph time / "
                "SWAT's (every peer replayed alike; a blank where a call could not be captured)."]
               if any(r.get("graph_ms") is not None for r in rows) else []),
             *([f"- SWAT's passes in this command's rows: {info['swat_passes']}"] if "swat_passes" in info else []),
             ""]
    for mode, title in (("fwd", "Forward"), ("fwd_bwd", "Forward + backward")):
        header, body = ratio_table(rows, mode)
        if body:
            lines += [f"## {title} (ms)", "", markdown_table(header, body)]
    header, body = decode_table(rows)
    if body:
        lines += ["## Decode: one token per sequence (microseconds)", "",
                  "Each step is timed as CUDA-graph replays over copies of its cache in turn, as many as one pass "
                  "needs to read at least twice the GPU's L2, so that it reads its cache from HBM as a model's "
                  "layer does (harness.bench.timing.decode_ms); rows measured before that rule (NOTES.md v24) "
                  "read one copy, from L2 where it fit.", "", markdown_table(header, body)]
    skipped = sorted({(r["peer"], r["status"]) for r in rows if r["status"] != "ok"})
    if skipped:
        lines += ["## Not measured", ""] + [f"- {p}: {s}" for p, s in skipped] + [""]
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> list[Path]:
    """kernels.png (time vs W per (d, T)) and decode.png from the timed rows; the files written. One
    with nothing to draw is removed: an earlier run's would stand beside a kernels.md without it."""
    from harness.results.plots import pyplot
    plt = pyplot()
    written = []
    timed = [r for r in rows if r["ms"] is not None and r["mode"] in ("fwd", "fwd_bwd")]
    panels = sorted({(r["head_dim"], r["seq_len"]) for r in timed})
    if panels:
        dims = sorted({d for d, _ in panels})
        lens = sorted({t for _, t in panels})
        fig, axes = plt.subplots(len(dims), len(lens), figsize=(4.2 * len(lens), 3.4 * len(dims)), squeeze=False)
        for (d, T) in panels:
            ax = axes[dims.index(d)][lens.index(T)]
            for i, peer in enumerate(PEERS):
                # a marker per mode as well as a line style: a peer timed at one window only (SDPA,
                # at W = T) is a lone point, which a line style cannot mark
                for mode, style, marker in (("fwd_bwd", "-", "o"), ("fwd", "--", "^")):
                    pts = sorted((r["window"], r["ms"]) for r in timed if (r["head_dim"], r["seq_len"], r["peer"],
                                                                            r["mode"]) == (d, T, peer, mode))
                    if pts:
                        ax.plot(*zip(*pts), style, marker=marker, ms=4, color=f"C{i}",
                                label=f"{peer} {mode}" if (d, T) == panels[0] else None)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"d={d}, T={T}")
            ax.set_xlabel("window W (W = T: full causal)")
            ax.set_ylabel("ms")
        fig.legend(loc="lower center", ncol=4, fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        written.append(out / "kernels.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    dec = [r for r in rows if r["ms"] is not None and r["mode"] == "decode"]
    if dec:
        written.append(_decode_plot(dec, out / "decode.png"))
    for stale in {out / "kernels.png", out / "decode.png"} - set(written):  # an earlier run's, of other rows
        stale.unlink(missing_ok=True)
    return written


def _decode_plot(dec: list[dict], path: Path) -> Path:
    """One panel per (d, B): time per step vs context, a colour per window W, SWAT solid and SDPA
    over the same W slots dashed; SDPA over the full cache in black."""
    from harness.results.plots import pyplot
    plt = pyplot()
    panels = sorted({(r["head_dim"], r["batch"]) for r in dec})
    windows = sorted({r["window"] for r in dec if r["window"] < r["seq_len"]})
    ncols = len({B for _, B in panels})
    nrows = len({d for d, _ in panels})
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3 * nrows), squeeze=False)
    for ax, (d, B) in zip(axes.flat, panels):
        sel = [r for r in dec if (r["head_dim"], r["batch"]) == (d, B)]
        for peer, style in (("swat", "-"), ("sdpa", "--")):
            for i, W in enumerate(windows):
                pts = sorted((r["seq_len"], r["ms"] * 1e3) for r in sel
                             if r["peer"] == peer and r["window"] == W < r["seq_len"])
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", ms=3, color=f"C{i}", label=f"{peer} W={W}")
        full = sorted((r["seq_len"], r["ms"] * 1e3) for r in sel if r["peer"] == "sdpa" and r["window"] >= r["seq_len"])
        if full:
            ax.plot(*zip(*full), ":", marker="o", ms=3, color="black", label="sdpa full cache")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"d={d}, B={B}", fontsize=9)
        ax.set_xlabel("context length")
        ax.set_ylabel("us per decode step")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 if len(handles) > 4 else 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- entry point

@dataclass
class BenchSpec:
    head_dims: list
    lengths: list
    windows: list
    tokens: int = 65536
    hidden: int = 1024
    peers: tuple = PEERS
    modes: tuple = MODES
    decode_contexts: tuple = (1024, 8192, 32768, 131072)
    decode_batches: tuple = (8,)
    dtype: str = "bfloat16"
    warmup_ms: float = 10
    rep_ms: float = 50


def kernel_device(log: Callable) -> torch.device:
    """The GPU the kernels are timed on. Off a GPU the sweep would run its GPU shapes on the CPU for
    hours and time no SWAT kernel, so it is refused, unless TRITON_INTERPRET=1 asks for Triton's CPU
    interpreter: a trace of the code path (the tests), whose timings mean nothing."""
    from harness.ops.swat.triton_common import interpreting
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not interpreting():
        raise ConfigError("harness bench kernels times the SWAT Triton kernel and its peers on a CUDA GPU, and none "
                          "is visible here; run it on a GPU machine (TRITON_INTERPRET=1 traces the code path on the "
                          "CPU, with timings that mean nothing)")
    log("warning: no CUDA GPU: Triton's interpreter traces the code path; timings are not comparable with GPU numbers")
    return torch.device("cpu")


def swat_passes(device: torch.device) -> str:
    """Which kernels SWAT's rows time on this device (harness.ops.swat.function.hopper_pass picks per shape)."""
    from harness.ops.swat.function import hopper_one_pass, hopper_windows
    windows = hopper_windows(device)
    if not windows:
        return "the Triton kernels"
    where = "; ".join(f"the {'forward' if p == 'fwd' else 'backward'} at d = {d} from W = {w}"
                      + (" in one pass" if p == "bwd" and hopper_one_pass(d) else "") for (p, d), w in windows.items())
    return f"hopper.py's Gluon passes ({where}), the Triton kernels elsewhere"


def run_kernel_bench(spec: BenchSpec, out_root: Path, force: bool = False, log: Callable = print,
                     progress: Callable | None = None) -> Path:
    """Measure spec's shapes into out_root/<device>/; rows already in kernels.csv are kept and skipped."""
    from harness.files import atomic_write_text
    from harness.results.provenance import provenance, record_run
    unknown = set(spec.peers) - set(PEERS)
    if unknown:
        raise ConfigError(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    if set(spec.modes) - set(MODES):
        raise ConfigError(f"unknown modes {sorted(set(spec.modes) - set(MODES))}; choose from {', '.join(MODES)}")
    from harness.ops.swat import _KERNEL_HEAD_DIMS  # the head sizes the dispatcher sends to the kernel
    bad = [d for d in spec.head_dims if d not in _KERNEL_HEAD_DIMS]
    if bad:
        raise ConfigError(f"head dims {bad} not supported by the SWAT kernel; use any of "
                          f"{', '.join(map(str, _KERNEL_HEAD_DIMS))}")
    shapes = kernel_shapes(spec.head_dims, spec.lengths, spec.windows, spec.tokens, spec.hidden)
    device = kernel_device(log)
    dtype = getattr(torch, spec.dtype)
    made = provenance(str(device))
    out = Path(out_root) / device_slug(made["device"])
    csv_path = out / "kernels.csv"
    timing = dict(warmup_ms=spec.warmup_ms, rep_ms=spec.rep_ms)
    rows = [] if force else read_csv(csv_path)
    done = {_key(r) for r in rows}
    decode = "decode" in spec.modes
    ctx_windows = sorted({int(w) for w in spec.windows if w != "T"})
    total = len(shapes) + (len(spec.head_dims) * len(spec.decode_contexts) * len(spec.decode_batches) if decode else 0)

    def save():
        atomic_write_text(csv_path, to_csv(rows))

    def stamp(fresh: list[dict]) -> list[dict]:  # rows kept from an earlier run keep their own date and commit
        return [{**r, "date": made["date"], "commit": made["commit"]} for r in fresh]

    step = 0

    def record(fresh: list[dict], label: str) -> None:  # keep a point's rows, save, report progress
        nonlocal rows, done, step
        rows += stamp(fresh)
        done |= {_key(r) for r in fresh}
        save()
        step += 1
        if progress:
            progress(step, total, label)

    # recorded first, so that a run cut short leaves a folder that `--render-only` draws (the
    # provenance of resumed rows stays, under `earlier`)
    record_run(out, {"dtype": spec.dtype, "tokens": spec.tokens, "hidden": spec.hidden, "spec": asdict(spec),
                     "swat_passes": swat_passes(device)}, str(device))
    for shape in shapes:
        record(measure_shape(shape, list(spec.peers), list(spec.modes), device, dtype, done, timing, log),
               f"d={shape.head_dim} T={shape.seq_len} W={shape.window}")
    if decode:
        for d in spec.head_dims:
            for B in spec.decode_batches:
                for ctx in spec.decode_contexts:
                    record(measure_decode(d, spec.hidden // d, B, ctx, ctx_windows, device, dtype, done, timing),
                           f"decode d={d} batch={B} context={ctx}")
    written = render(out)
    log(f"wrote {out}: {', '.join(p.name for p in [csv_path, out / 'run.json', *written])}")
    return out


def render(out: Path) -> list[Path]:
    """(Re)write kernels.md and the plots of a device folder from its kernels.csv and run.json, e.g.
    after a run that stopped early (every finished shape is already in kernels.csv); the files written."""
    from harness.files import atomic_write_text
    out = Path(out)
    if out.is_file():
        raise ConfigError(f"{out} is a file; pass its folder ({out.parent}), which holds kernels.csv and run.json")
    files = ("kernels.csv", "run.json")
    missing = [name for name in files if not (out / name).is_file()]
    if missing:
        held = [name for name in files if name not in missing]
        raise ConfigError(f"{out} has no {' and no '.join(missing)}" + (f" (its {held[0]} is there)" if held else "")
                          + "; run the `harness bench kernels` command that fills it again (it keeps the shapes "
                          "kernels.csv holds, and writes both)")
    try:
        info = json.loads((out / "run.json").read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{out / 'run.json'} is damaged ({err}); run `harness bench kernels` again") from None
    rows = read_csv(out / "kernels.csv")
    atomic_write_text(out / "kernels.md", markdown(rows, info))
    return [out / "kernels.md", *plot(rows, out)]


def parse_windows(text: str) -> list:
    """'128,512,T' -> [128, 512, 'T']."""
    items = []
    for part in text.split(","):
        part = part.strip()
        if part == "T":
            items.append("T")
        elif part.isdigit() and int(part) >= 1:
            items.append(int(part))
        elif part:
            raise ConfigError(f"--windows takes positive integers or T, got {part!r}")
    return items
