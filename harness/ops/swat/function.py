"""The SWAT Triton kernels as torch operators: checks, tile configs, launches and autograd.

`swat_attention_triton` and `swat_decode_triton` are `torch.library.custom_op`s with fake
(shape-only) implementations wherever a tracer sees the call, so `torch.compile` keeps them in the
graph as opaque calls (no graph break, nothing for Inductor to re-analyse in the kernels) and
autograd reaches the backward kernels through `register_autograd`. (`triton_op`, which lets
Inductor see the launches, failed to compile the forward kernel under Inductor with torch 2.11 /
triton 3.6; eager was fine.) Eager calls skip the ops' dispatch, about half of a step's host time
besides the launches: the same bodies run under a plain `autograd.Function` (decode: the body itself).
Under torch.func's transforms (grad, vjp, vmap, and compositions such as per-sample gradients) a
Function with a setup_context runs the ops, whose vmap rules fold the mapped dimension into the batch.
On the CPU they run only under TRITON_INTERPRET=1 (the CI tests); in normal use
`harness.ops.swat.swat_attention` routes CPU tensors to the reference. On a Hopper GPU, the
forward and the backward at the shapes HOPPER_MIN_WINDOW names run in hopper.py's Gluon kernels
instead, which compute the same function faster there.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Optional

import torch
import triton
from triton.runtime.errors import OutOfResources

from harness.config import ConfigError
from harness.ops.swat.triton_bwd import swat_bwd_dkdv_kernel, swat_bwd_dq_kernel
from harness.ops.swat.triton_common import LAUNCH_OPTIONS, cdiv, interpreting
from harness.ops.swat.triton_decode import sum_splits_kernel, swat_decode_dot_kernel, swat_decode_kernel
from harness.ops.swat.triton_fwd import swat_fwd_kernel

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Tile configs per (pass, head_dim, regime): BLOCK_M (queries), BLOCK_N (keys), warps, pipeline
# stages, ONE_LOOP (one masked loop instead of edge/interior/diagonal loops). The regime is set by
# the window and the head size (`window_regime`): "small" up to SMALL_WINDOW, "medium" up to
# MEDIUM_WINDOW[d] (the 340m/760m presets' 512 among them: the backward's small tiles win there,
# up to W = 2048 at both head sizes, at d = 64 past W = 1024 only with the programs' order of v14:
# NOTES.md v15), "large" the rest, up to full causal. Chosen from the H100 sweeps of
# harness/bench/tune.py and checked by the H200 one (NOTES.md has the numbers); d < 64 uses the
# d = 64 entries.
SMALL_WINDOW = 256
MEDIUM_WINDOW = {64: 2048, 128: 2048}


def _cfg(bm, bn, warps, stages, one_loop=False):
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages, ONE_LOOP=one_loop)


CONFIGS = {
    ("fwd", 64, "small"): _cfg(64, 64, 4, 3, True),
    ("fwd", 64, "medium"): _cfg(128, 64, 4, 3),
    ("fwd", 64, "large"): _cfg(128, 64, 4, 3),
    ("fwd", 128, "small"): _cfg(64, 32, 4, 3, True),
    ("fwd", 128, "medium"): _cfg(128, 32, 4, 4),
    ("fwd", 128, "large"): _cfg(128, 64, 8, 3),
    ("dkdv", 64, "small"): _cfg(32, 64, 4, 4, True),
    ("dkdv", 64, "medium"): _cfg(32, 64, 4, 3),
    ("dkdv", 64, "large"): _cfg(64, 64, 4, 3),  # with FUSED_DQ "tma": no dQ pass
    ("dkdv", 128, "small"): _cfg(32, 64, 4, 4, True),
    ("dkdv", 128, "medium"): _cfg(32, 64, 4, 3),
    ("dkdv", 128, "large"): _cfg(64, 128, 8, 3),
    ("dq", 64, "small"): _cfg(64, 32, 4, 3, True),
    ("dq", 64, "medium"): _cfg(64, 32, 4, 3),
    ("dq", 64, "large"): _cfg(128, 32, 4, 3),
    ("dq", 128, "small"): _cfg(64, 32, 4, 3, True),
    ("dq", 128, "medium"): _cfg(64, 32, 4, 3),
    ("dq", 128, "large"): _cfg(128, 64, 8, 3),
}
_INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1, ONE_LOOP=False)
# How each pass computes the sigmoid for 16-bit inputs on the GPU (triton_common.sigmoid_scaled's
# modes): tanh (3) in the forward and backward (the H100 sweep, NOTES.md v11: 2-18% off the forward
# and 0-13% off the backward against the Newton reciprocal (2) and rcp.approx (1) they had, nowhere
# more than 1% slower than either, with the same error against the fp32 kernel, also at sigmoid
# bias -log W, swat_logw's, where most weights are near 1 / W: v12); the decode keeps mode 2, which
# its launch configs were swept with.
SIGMOID_MODE = {"fwd": 3, "bwd": 3, "decode": 2}
# Per (head_dim, regime): whether the dK/dV pass also adds dQ into an fp32 buffer, so that the dQ
# pass does not run (triton_bwd: 5 matrix products and one sigmoid per tile pair instead of 7 and
# two): "off", "atomics" (element by element) or "tma" (one bulk reduction per tile by the copy
# engine; Hopper and later, else "atomics"). Off: the H200 sweep (NOTES.md, v5) found the whole
# backward 1-58% slower with "atomics" at every head size and window it timed, the H100 one at
# W = 512 (v6) 32% slower, and the H100 one at W = 1024, 2048 and T (v7) 20-45% slower with either
# mode: the extra product per tile pair costs more than the two it saves. Always off under
# torch.use_deterministic_algorithms, since either way dQ's last bits depend on the order of the
# additions. The exception, d = 64 past W = 2048 ("large"), "tma" with dK/dV tiles 64x64: in the
# order "pairs" (v14) the whole backward at W = T took 0.83x the two passes' time at T = 16K and 32K
# and 0.88-0.95x at 4K (H100, NOTES.md v17); before Hopper, where "tma" falls back to "atomics",
# that choice is unmeasured.
FUSED_DQ_MODES = ("off", "atomics", "tma")
FUSED_DQ = {(d, regime): "off" for d in (64, 128) for regime in ("small", "medium", "large")} | {(64, "large"): "tma"}
# Where hopper.py's Gluon passes (FlashAttention-3's ping-pong schedule, Hopper GPUs only) run instead
# of the Triton ones: per (pass, head size), from this window on. From the H100 bench of NOTES.md,
# v12 (B = 4, T = 16K, both with the tanh sigmoid): at d = 128 the ping-pong forward is 7%, 11% and
# 13% faster at W = 512, 2048 and T, and its backward 10% and 7% faster at W = 2048 and T but 9%
# slower at W = 512; at d = 64 both are slower at every window. d = 64's backward from W = 4096 is
# the one pass alone (HOPPER_TWO_PASSES): at W = T it took 0.88x, 0.86x and 0.87x the Triton one
# pass's time at T = 4K, 16K and 32K (H200, NOTES.md v23); below 4096 it is unmeasured.
HOPPER_MIN_WINDOW = {("fwd", 128): 512, ("bwd", 128): 2048, ("bwd", 64): 4096}
# The head sizes at which hopper.py's Gluon backward runs in one pass (swat_bwd_one_pass_kernel: dQ
# added into an fp32 buffer by the copy engine's bulk reduction, 5 matrix products and one sigmoid
# per tile pair instead of the two passes' 7 and two). d = 128 (H100, NOTES.md v19): 0.83x the two
# passes' time at T = 16K and W = T, 0.91-0.98x at 4K, 0.92-0.99x at 32K, level at W = 2048. Not
# under torch.use_deterministic_algorithms: dQ's last bits depend on the order of the additions.
HOPPER_ONE_PASS = (64, 128)
# The head sizes at which hopper.py's two-pass backward, which deterministic algorithms take instead
# of the one pass, is faster than the Triton passes too (v12); elsewhere those take the Triton passes.
HOPPER_TWO_PASSES = (128,)


# In which order each regime's programs start (triton_common.band_program): "pairs" (one sequence-head
# pair's blocks together), "heads" (every pair's block k together, the first launches) or "rows" (per
# sequence, its heads side by side). "pairs" everywhere: against "heads", 1.05-1.72x faster forward and
# 1.12-1.40x forward + backward at T = 4K (W >= 512), up to 11% at 16K and 32K (H100, NOTES.md v14);
# in the three orders' sweep (`harness.bench.tune --sweeps order`, v15) the fastest or within 4% of it
# at every shape but two, and no regime has one other order winning at all three lengths.
PROGRAM_ORDERS = ("pairs", "heads", "rows")
PROGRAM_ORDER = dict.fromkeys(("small", "medium", "large"), "pairs")


def window_regime(window: int, head_dim: int) -> str:
    """Which row of CONFIGS and FUSED_DQ a window's launches take at this head size: small, medium or large."""
    medium = MEDIUM_WINDOW[max(head_dim, 64)]
    return "small" if window <= SMALL_WINDOW else "medium" if window <= medium else "large"


def kernel_config(pass_name: str, head_dim: int, window: int, dtype: torch.dtype) -> dict:
    """Tile config for one pass; the interpreter uses 16x16 tiles (and so exercises every tile path).

    fp32 inputs at d = 128 take the medium tiles past MEDIUM_WINDOW too: fp32 doubles every tile,
    and its exact (ieee) dots compile to FMA code that grows with the tile. The large tiles need
    288 KiB of shared memory at 3 stages in the backward (refused, so the launch falls back a
    stage), and the three passes took 301 s to compile for sm_90 on a 2-core CPU, 155 s of it on
    the refused configs, against 99 s with the medium tiles (results/kernels/fp32-compile/). Which
    runs faster in fp32 there is unmeasured."""
    if interpreting():
        return dict(_INTERPRET_CONFIG)
    regime = window_regime(window, head_dim)
    if regime == "large" and dtype == torch.float32 and head_dim > 64:
        regime = "medium"
    return dict(CONFIGS[(pass_name, max(head_dim, 64), regime)])


def program_order(head_dim: int, window: int) -> str:
    """The order in which the passes' programs start at this shape (PROGRAM_ORDERS)."""
    return PROGRAM_ORDER[window_regime(window, head_dim)]


def fused_dq(head_dim: int, window: int, device: Optional[torch.device],
             compute_capability: Optional[int] = None) -> str:
    """How the backward at this shape adds dQ inside the dK/dV pass (FUSED_DQ_MODES) on device. "tma"
    needs the copy engine's bulk reduction, which the CPU interpreter lacks and GPUs before Hopper
    (compute capability 9) do not have: there it is "atomics". Compiling for a target without its
    GPU, pass device None and the target's compute_capability (the major version) instead."""
    mode = FUSED_DQ[(max(head_dim, 64), window_regime(window, head_dim))]
    if torch.are_deterministic_algorithms_enabled():
        return "off"
    if mode != "tma":
        return mode
    if compute_capability is None:
        on_gpu = not interpreting() and device.type == "cuda"
        compute_capability = torch.cuda.get_device_capability(device)[0] if on_gpu else 0
    return mode if compute_capability >= 9 else "atomics"


@functools.cache
def _hopper_kernels():
    """harness.ops.swat.hopper, or None where this Triton has no Gluon Hopper API to build it on."""
    try:
        from harness.ops.swat import hopper
    except (ImportError, AttributeError):  # no Gluon, or an older one without these names
        return None
    return hopper


def _on_hopper(device: torch.device) -> bool:
    """Whether hopper.py's passes can run on this device: a GPU of compute capability 9.0 (wgmma and
    TMA as they use them, sm_90a) and a Triton with Gluon to build them."""
    return (device.type == "cuda" and not interpreting() and torch.cuda.get_device_capability(device) == (9, 0)
            and _hopper_kernels() is not None)


def hopper_windows(device: torch.device) -> dict:
    """HOPPER_MIN_WINDOW where this device runs hopper.py's Gluon passes, else {}: for benchmarks to
    record which kernels their rows timed."""
    return dict(HOPPER_MIN_WINDOW) if _on_hopper(device) else {}


def hopper_pass(pass_name: str, q: torch.Tensor, window: int, has_doc: bool, *others: torch.Tensor) -> bool:
    """Whether a pass ("fwd" or "bwd") runs in hopper.py's Gluon kernels: on a Hopper GPU, for
    16-bit inputs with one key head per query head and no packed documents, every tensor it reads
    (q and `others`) readable by TMA, at a head size and window HOPPER_MIN_WINDOW names; the backward
    only where it runs in one pass or its two passes are faster too (HOPPER_TWO_PASSES)."""
    floor = HOPPER_MIN_WINDOW.get((pass_name, q.shape[-1]))
    if floor is None or window < floor or has_doc or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    if pass_name == "bwd" and not (hopper_one_pass(q.shape[-1]) or q.shape[-1] in HOPPER_TWO_PASSES):
        return False
    if any(t.shape[2] != q.shape[2] for t in others) or not _on_hopper(q.device):
        return False
    return all(_hopper_kernels().tma_readable(t) for t in (q, *others))


def hopper_one_pass(head_dim: int) -> bool:
    """Whether hopper.py's backward runs in one pass at this head size (HOPPER_ONE_PASS)."""
    return head_dim in HOPPER_ONE_PASS and not torch.are_deterministic_algorithms_enabled()


def triton_only():
    """The Triton passes at every shape (no Gluon pass), for sweeps of their configs and for tests
    that compare the two paths; restored on exit."""
    return _overridden(HOPPER_MIN_WINDOW, dict.fromkeys(HOPPER_MIN_WINDOW, math.inf))


def _tma_scratch_allocator() -> None:
    """Give Triton an allocator for the few bytes of global memory per program that a tensor
    descriptor made inside a kernel (FUSED_DQ "tma") needs, unless one is set. Triton keeps the
    allocator per thread, and autograd runs the backward in a thread of its own, so this is asked
    before each such launch."""
    from triton.runtime._allocation import NullAllocator, _allocator
    if isinstance(_allocator.get(), NullAllocator):
        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


def smaller_configs(cfg: dict):
    """Configs that need less shared memory than cfg, in the order they are tried: fewer pipeline
    stages, then halved key tiles, then halved query tiles (tiles of 16 at the least)."""
    cfg = dict(cfg)
    while cfg["num_stages"] > 1 or cfg["BLOCK_N"] > 16 or cfg["BLOCK_M"] > 16:
        if cfg["num_stages"] > 1:
            cfg["num_stages"] -= 1
        elif cfg["BLOCK_N"] > 16:
            cfg["BLOCK_N"] //= 2
        else:
            cfg["BLOCK_M"] //= 2
        yield dict(cfg)


_FITTED: dict[tuple, dict] = {}  # (pass, configured config, kernel flags, dtype, device) -> the config that ran
_EXACT = [False]  # inside override_configs: run the config asked for, or fail (no smaller one instead)


def launch(kernel, pass_name: str, t: torch.Tensor, window: int, grid, args: tuple, kwargs: dict) -> None:
    """kernel[grid(BLOCK_M, BLOCK_N)](*args, **kwargs, **config) with the pass's tile config, or,
    where the device has less shared memory than that config needs (fp32 inputs double every
    tile; the configs were tuned for 16-bit inputs on an H100), with the first smaller config that
    fits. Triton refuses such a config when it loads the compiled kernel, before anything runs, so
    trying the next is safe; the one that ran is remembered per device, dtype and kernel flags
    (head size, FUSED_DQ, ...), so a shape pays for one refusal."""
    configured = kernel_config(pass_name, t.shape[-1], window, t.dtype)
    key = (pass_name, tuple(configured.items()), tuple(kwargs.items()), t.dtype, t.device)  # callers keep one order
    error = None
    if _EXACT[-1]:
        candidates = [configured]
    else:
        candidates = [_FITTED[key]] if key in _FITTED else [configured, *smaller_configs(configured)]
    for cfg in candidates:
        run = dict(cfg)
        bm, bn = run.pop("BLOCK_M"), run.pop("BLOCK_N")
        try:
            kernel[grid(bm, bn)](*args, **kwargs, BLOCK_M=bm, BLOCK_N=bn, **run, **LAUNCH_OPTIONS)
        except OutOfResources as err:
            if _EXACT[-1]:
                raise
            error = err
            continue
        if cfg is not configured:
            _FITTED[key] = cfg
        return
    raise ConfigError(f"the SWAT {pass_name} kernel does not fit this GPU even with 16x16 tiles and one stage "
                      f"({error}); use 16-bit inputs (bf16/fp16) or a head size of at most 64")


@contextlib.contextmanager
def _overridden(table: dict, overrides: dict):
    """Temporarily replace entries of a config table (for tuning sweeps); restored on exit."""
    saved = dict(table)
    table.update(overrides)
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


@contextlib.contextmanager
def override_configs(overrides: dict):
    """Temporarily replace entries of CONFIGS (keys (pass, head_dim, regime)); meanwhile a config
    the device cannot take fails rather than falling back (a tuning sweep times what it names)."""
    with _overridden(CONFIGS, overrides):
        _EXACT.append(True)
        try:
            yield
        finally:
            _EXACT.pop()


def override_fused_dq(overrides: dict):
    """Temporarily replace entries of FUSED_DQ (keys (head_dim, regime)), for tuning sweeps."""
    return _overridden(FUSED_DQ, overrides)


def override_program_order(overrides: dict):
    """Temporarily replace entries of PROGRAM_ORDER (keys small, medium, large), for tuning sweeps."""
    return _overridden(PROGRAM_ORDER, overrides)


def override_sigmoid_mode(overrides: dict):
    """Temporarily replace entries of SIGMOID_MODE (keys fwd, bwd, decode), for tuning sweeps."""
    return _overridden(SIGMOID_MODE, overrides)


def gpu_sigmoid_mode(dtype: torch.dtype, pass_name: str) -> int:
    """The sigmoid a pass computes for dtype inputs on a GPU: SIGMOID_MODE's approximation, but for
    fp32 inputs (whose tests ask for ~1e-5) the exact one."""
    return 0 if dtype == torch.float32 else SIGMOID_MODE[pass_name]


def gpu_dot_precision(dtype: torch.dtype) -> str:
    """The dots' precision for dtype inputs on a GPU (triton_common.mma): fp32 operands stay exact
    (no tf32)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _sigmoid_mode(t: torch.Tensor, pass_name: str) -> int:
    # approximations only on the GPU
    return gpu_sigmoid_mode(t.dtype, pass_name) if t.is_cuda and not interpreting() else 0


def _dot_precision(dtype: torch.dtype) -> str:
    # the interpreter always needs "ieee"
    return "ieee" if interpreting() else gpu_dot_precision(dtype)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def check_inputs(q, k, v, slopes, window, cu_seqlens=None) -> None:
    """Raise ConfigError naming the fix when the kernel cannot take these inputs."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ConfigError(f"SWAT kernel wants q, k, v as [B, T, H, d]; got shapes {tuple(q.shape)}, "
                          f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ConfigError(f"SWAT kernel: k and v must be [B, T, Hkv, d] matching q {tuple(q.shape)}; got "
                          f"{tuple(k.shape)} and {tuple(v.shape)}")
    H, Hkv, d = q.shape[2], k.shape[2], q.shape[3]
    if H % Hkv:
        raise ConfigError(f"SWAT kernel: q has {H} heads, not a multiple of k's {Hkv} (GQA needs H % Hkv == 0)")
    if d not in HEAD_DIMS:
        raise ConfigError(f"SWAT kernel supports head_dim in {HEAD_DIMS}, got {d}; change model.head_dim "
                          "(hidden_size / num_heads) or use the reference swat_attention_ref")
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ConfigError(f"SWAT kernel wants q, k, v all bf16, fp16 or fp32; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ConfigError(f"SWAT kernel: q, k, v on different devices ({q.device}, {k.device}, {v.device})")
    if not q.is_cuda and not interpreting():
        raise ConfigError(f"SWAT Triton kernel needs CUDA tensors (got {q.device}); use swat_attention, which "
                          "falls back to the reference, or set TRITON_INTERPRET=1 for the CPU interpreter")
    if slopes.shape != (H,):
        raise ConfigError(f"SWAT kernel: slopes must have shape [{H}] (one per query head), got {tuple(slopes.shape)}")
    if int(window) < 1:
        raise ConfigError(f"SWAT window must be >= 1, got {window}")
    if cu_seqlens is not None:
        if q.shape[0] != 1:
            raise ConfigError(f"cu_seqlens needs the packed layout with batch size 1, got batch {q.shape[0]}")
        if cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ConfigError("cu_seqlens must be a 1-D int32/int64 tensor of document offsets [0, ..., T]")


def document_bounds(cu_seqlens: torch.Tensor, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (start, end) of its packed document, int32 [T] each, grouping tokens as the reference does."""
    cu = cu_seqlens.to(device=device, dtype=torch.int32)
    idx = torch.searchsorted(cu, torch.arange(T, device=device, dtype=torch.int32), right=True)
    bounds = torch.cat([cu.new_zeros(1), cu, cu.new_full((1,), T)])
    return bounds[idx].contiguous(), torch.clamp(bounds[idx + 1], max=T).contiguous()


# ---------------------------------------------------------------- forward / backward operators

def _swat_fwd_body(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor,
                   row_start: Optional[torch.Tensor], row_end: Optional[torch.Tensor], window: int,
                   sigmoid_bias: float, scale: float) -> torch.Tensor:
    B, T, H, d = q.shape
    W = min(window, T)
    if hopper_pass("fwd", q, W, row_start is not None, k, v):
        return _hopper_kernels().swat_fwd_hopper(q, k, v, slopes, W, sigmoid_bias, scale, _sigmoid_mode(q, "fwd"),
                                                 program_order(d, W))
    o = torch.empty((B, T, H, d), device=q.device, dtype=q.dtype)
    launch(swat_fwd_kernel, "fwd", q, W, lambda bm, bn: (B * H * cdiv(T, bm),),
           (q, k, v, o, slopes, row_start if row_start is not None else slopes,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o), T, H, W, scale, sigmoid_bias),
           dict(REP=H // k.shape[2], HAS_DOC=row_start is not None, HEAD_DIM=d,
                SIGMOID=_sigmoid_mode(q, "fwd"), DOT_PREC=_dot_precision(q.dtype), ORDER=program_order(d, W)))
    return o


def _swat_bwd_body(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor,
                   row_start: Optional[torch.Tensor], row_end: Optional[torch.Tensor], window: int,
                   sigmoid_bias: float, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, T, H, d = q.shape
    Hkv = k.shape[2]
    do = do.contiguous()
    W = min(window, T)
    if hopper_pass("bwd", q, W, row_start is not None, k, v, do):
        return _hopper_kernels().swat_bwd_hopper(do, q, k, v, slopes, W, sigmoid_bias, scale, _sigmoid_mode(q, "bwd"),
                                                 program_order(d, W), hopper_one_pass(d))
    fused = fused_dq(d, W, q.device)
    if fused == "tma":
        _tma_scratch_allocator()
    if fused != "off":  # an fp32 accumulator the dK/dV pass adds into
        dq = torch.zeros((B, T, H, d), device=q.device, dtype=torch.float32)
    else:
        dq = torch.empty((B, T, H, d), device=q.device, dtype=q.dtype)
    dk = torch.empty((B, T, Hkv, d), device=q.device, dtype=q.dtype)
    dv = torch.empty((B, T, Hkv, d), device=q.device, dtype=q.dtype)
    has_doc = row_start is not None
    common = dict(REP=H // Hkv, HAS_DOC=has_doc, HEAD_DIM=d, SIGMOID=_sigmoid_mode(q, "bwd"),
                  DOT_PREC=_dot_precision(q.dtype), ORDER=program_order(d, W))

    launch(swat_bwd_dkdv_kernel, "dkdv", q, W, lambda bm, bn: (B * Hkv * cdiv(T, bn),),
           (q, k, v, do, dk, dv, dq, slopes, row_start if has_doc else slopes, row_end if has_doc else slopes,
            *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dk), *_strides(dv), *_strides(dq),
            T, Hkv, W, sigmoid_bias, scale), dict(common, FUSED_DQ=fused))
    if fused != "off":
        return dq.to(q.dtype), dk, dv
    launch(swat_bwd_dq_kernel, "dq", q, W, lambda bm, bn: (B * H * cdiv(T, bm),),
           (q, k, v, do, dq, slopes, row_start if has_doc else slopes,
            *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq),
            T, H, W, sigmoid_bias, scale), common)
    return dq, dk, dv


_swat_fwd = torch.library.custom_op("swat_harness::swat_fwd", _swat_fwd_body, mutates_args=())
_swat_bwd = torch.library.custom_op("swat_harness::swat_bwd", _swat_bwd_body, mutates_args=())


@_swat_fwd.register_fake
def _swat_fwd_fake(q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale):
    return q.new_empty(q.shape)


@_swat_bwd.register_fake
def _swat_bwd_fake(do, q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale = inputs
    ctx.save_for_backward(q, k, v, slopes, row_start, row_end)
    ctx.window, ctx.sigmoid_bias, ctx.scale = window, sigmoid_bias, scale


def _backward(ctx, do, bwd=_swat_bwd):
    q, k, v, slopes, row_start, row_end = ctx.saved_tensors
    dq, dk, dv = bwd(do, q, k, v, slopes, row_start, row_end, ctx.window, ctx.sigmoid_bias, ctx.scale)
    return dq, dk, dv, None, None, None, None, None, None


_swat_fwd.register_autograd(_backward, setup_context=_setup_context)


class _SwatAttention(torch.autograd.Function):
    """The operators' bodies under plain autograd, for eager calls: the same forward and backward
    without the custom ops' dispatch, which took about half of a step's host time besides the
    kernel launches (NOTES.md, v16). Tracers (torch.compile, fake tensors, make_fx) keep the custom ops."""

    @staticmethod  # forward with ctx (not a setup_context): apply then binds no signature per call
    def forward(ctx, *inputs):
        output = _swat_fwd_body(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable  # as the custom op: no gradient of the backward
    def backward(ctx, do):
        return _backward(ctx, do, bwd=_swat_bwd_body)


def _batched_first(tensors, in_dims, size: int) -> list[torch.Tensor]:
    """Each tensor [B, ...] with the vmapped dimension first and folded into its batch dimension
    ([size * B, ...]); an unbatched one (in_dim None) repeated size times. The kernels see size * B
    independent sequences, which is what vmap asks of an op whose sequences are independent."""
    folded = [(t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)).flatten(0, 1)
              for t, dim in zip(tensors, in_dims)]
    return [t if t.stride(-1) == 1 else t.contiguous() for t in folded]  # the kernels read rows of d


def _require_unmapped(in_dims) -> None:
    if any(dim is not None for dim in in_dims):
        raise ConfigError("torch.func.vmap through SWAT attention maps over q, k and v only: the ALiBi slopes and "
                          "cu_seqlens must be the same for every mapped call")


@_swat_fwd.register_vmap
def _swat_fwd_vmap(info, in_dims, q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale):
    _require_unmapped(in_dims[3:6])
    q, k, v = _batched_first((q, k, v), in_dims[:3], info.batch_size)
    o = _swat_fwd(q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale)
    return o.unflatten(0, (info.batch_size, -1)), 0


@_swat_bwd.register_vmap
def _swat_bwd_vmap(info, in_dims, do, q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale):
    _require_unmapped(in_dims[4:7])
    do, q, k, v = _batched_first((do, q, k, v), in_dims[:4], info.batch_size)
    grads = _swat_bwd(do, q, k, v, slopes, row_start, row_end, window, sigmoid_bias, scale)
    return tuple(g.unflatten(0, (info.batch_size, -1)) for g in grads), (0, 0, 0)


class _SwatAttentionForFunc(torch.autograd.Function):
    """_SwatAttention for torch.func's transforms (grad, vjp, jacrev, vmap and their compositions),
    which need the context made in a setup_context (as neither _SwatAttention nor the custom op's
    generated Function has it). Forward and backward go through the custom ops, whose vmap rules
    fold the mapped dimension into the batch; no forward mode."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*inputs):
        return _swat_fwd(*inputs)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        return _backward(ctx, do)  # through the custom op, which takes the tensors the transform wraps


def _under_func_transform(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a torch.func transform wraps any of these tensors (never asked under torch.compile,
    which keeps the custom ops and cannot trace the question)."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return not torch.compiler.is_compiling() and any(t is not None and wrapped(t) for t in tensors)


def _untraced(*tensors: torch.Tensor) -> bool:
    """Whether no tracer sees this call: not torch.compile, no dispatch mode (fake tensors, make_fx,
    export), and plain tensors (not a subclass such as FakeTensor or DTensor)."""
    return (not torch.compiler.is_compiling() and torch._C._len_torch_dispatch_stack() == 0
            and all(type(t) is torch.Tensor for t in tensors))


def swat_attention_triton(q, k, v, slopes, window: int, sigmoid_bias: float = 0.0, scale: float | None = None,
                          cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """SWAT sigmoid attention through the Triton kernels (differentiable in q, k, v).

    Same contract as `swat_attention_ref(..., activation="sigmoid")`: q [B, T, H, d], k and v
    [B, T, Hkv, d], slopes [H] (fixed, no gradient), any T and window (>= T is full causal),
    cu_seqlens for packed documents (B == 1).
    """
    check_inputs(q, k, v, slopes, window, cu_seqlens)
    T, d = q.shape[1], q.shape[3]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    row_start = row_end = None
    if cu_seqlens is not None:
        row_start, row_end = document_bounds(cu_seqlens, T, q.device)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(d)
    if _under_func_transform(q, k, v, slopes, row_start):
        attention = _SwatAttentionForFunc.apply
    else:
        attention = _SwatAttention.apply if _untraced(q, k, v) else _swat_fwd
    return attention(q, k, v, slopes, row_start, row_end, int(window), float(sigmoid_bias), scale)


# ---------------------------------------------------------------- decode operator

# Decode is a read of the ring buffer (flash-decoding): each program attends one (sequence, head)
# pair to a run of slots, in tiles of TILE_ELEMS / d slots, and the runs' partial sums (fp32) are
# added by a second kernel or, with SUM_IN_KERNEL, by the last of a pair's programs to finish (one
# launch instead of two). The runs are split until the grid has MIN_PROGRAMS programs, so that a
# small batch still keeps enough loads in flight. By whether the batch's (sequence, head) pairs
# alone give DECODE_FILLS_GPU programs (two per SM of an H100's 132): "split" (or "dot", below)
# under that, "whole" (one run per pair, nothing to add) from there on. From the H100 sweep of
# harness/bench/tune.py (NOTES.md, v10): of its 144 configs, the best on geometric mean over the
# shapes of each kind (d = 64 and 128, W = 128, 512 and 2048; batch 1 and 8 split, 64 whole):
# "split" takes 11% over each shape's best and is 0.98x SDPA on geometric mean (0.79x with "whole"'s
# config and a second kernel, v5's), "whole" 2% over the best and 0.97x SDPA.
# That sweep's num_stages never reached the slot loop, which Triton left unpipelined (v20), so the
# launch takes Triton's default. LOOP_STAGES pipelines it (its tiles go through shared memory by
# cp.async); PREFETCH loads the next tile into registers instead. Timed with the cache read from
# HBM, as a model's step reads it (v25: H100, results/kernels/decode-dot/h100-2ae31a5; SDPA's time
# over the decode's, mean of two rounds, geometric mean over the config's shapes, 12 and 6):
# - "split": 2 stages, 1.06x (0.86-1.58x), against 0.80x (0.59-1.03x) unpipelined, faster at
#   each shape, even where a program has one tile and nothing is pipelined ahead (batch 1,
#   W = 128: 3.3 against 6.9 us; register loads of a cold tile waited longer than cp.async's);
# - "whole": 4096-element tiles with PREFETCH, 1.04x (0.99-1.14x), against 1.02x (0.91-1.19x) for
#   8192 unpipelined; every LOOP_STAGES depth loses here (v21: the copies' shared memory costs
#   programs per SM).
# Between them, from DECODE_DOT_GROUPS (sequence, key/value head) groups, "dot": the tensor cores'
# kernel, one program a group streaming all W slots with 3 tiles in flight, as cuDNN's kernel runs
# SDPA's step there (one block a pair). At batch 8 on the H100 (v27: results/kernels/decode-dot/
# h100-87fd565), SDPA's time over its at W = 128 / 512 / 2048: 1.08x / 1.05x / 1.01x with 128
# groups (d = 64; the CUDA cores' split 1.08x / 0.86x / 0.90x) and 1.05x / 0.94x / 0.91x with 64
# (d = 128; split 0.90x / 0.89x / 0.94x). At batch 1 (8 or 16 groups) one program a group leaves
# most SMs idle (v26: 0.28-0.41x at W = 2048), so fewer groups stay "split". DOT picks the kernel;
# ACC_2D and PREFETCH apply to the CUDA cores' alone (under DOT=False, "dot"'s launch runs there).
# The tensor cores' tile stops at DECODE_DOT_MAX_SLOTS, d = 32's: its score tile (QROWS x slots,
# fp32) grows with the slots, and at d = 16 with 16-bit inputs 512 slots take 255 registers and
# spill 1.6 KB to the stack, 256 take 217 and spill nothing (compiled for sm_90 by Triton 3.6:
# results/kernels/decode-dot/registers.py; not timed on a GPU).
DECODE_FILLS_GPU = 264
DECODE_DOT_GROUPS = 64
DECODE_DOT_MAX_SLOTS = 256
DECODE_CONFIGS = {
    "split": dict(DOT=False, MIN_PROGRAMS=4224, TILE_ELEMS=8192, num_warps=4, ACC_2D=True, SUM_IN_KERNEL=True,
                  LOOP_STAGES=2, PREFETCH=False),
    "dot": dict(DOT=True, MIN_PROGRAMS=1, TILE_ELEMS=8192, num_warps=8, ACC_2D=True, SUM_IN_KERNEL=True,
                LOOP_STAGES=3, PREFETCH=False),
    "whole": dict(DOT=False, MIN_PROGRAMS=DECODE_FILLS_GPU, TILE_ELEMS=4096, num_warps=2, ACC_2D=True,
                  SUM_IN_KERNEL=False, LOOP_STAGES=1, PREFETCH=True),
}


def decode_config_name(batch_heads: int, rep: int = 1) -> str:
    """The DECODE_CONFIGS entry a step of batch_heads (sequence, head) pairs, rep query heads to a
    key/value head, runs."""
    if batch_heads >= DECODE_FILLS_GPU:
        return "whole"
    return "dot" if batch_heads // rep >= DECODE_DOT_GROUPS else "split"


def decode_launch(batch_heads: int, w_cache: int, head_dim: int, dtype: torch.dtype = torch.bfloat16,
                  rep: int = 1) -> dict:
    """The decode kernel's launch: which kernel (DOT: the tensor cores', one program per (sequence,
    key/value head) group of rep query heads; else one per (sequence, head) pair), the groups or
    pairs (units, a run's programs), slots per tile (BLOCK_W) and per program, programs per group
    or pair (splits), warps, where the runs' sums are added (SUM_IN_KERNEL, only where there are
    runs to add), the slot loop's pipeline (LOOP_STAGES through shared memory; for the CUDA cores'
    kernel also PREFETCH through registers), and for the CUDA cores' kernel its accumulator's
    shape (ACC_2D), for the tensor cores' the query rows padded to a dot's 16 at least (QROWS)
    and the dots' precision for dtype inputs (DOT_PREC, the passes' own: triton_common.mma).
    TILE_ELEMS was tuned for 16-bit inputs; fp32 inputs get as many bytes per tile (half the
    slots), so that a tile takes the registers the sweep's config took."""
    cfg = DECODE_CONFIGS[decode_config_name(batch_heads, rep)]
    units = batch_heads // rep if cfg["DOT"] else batch_heads
    block_w = 16 if interpreting() else max(16, cfg["TILE_ELEMS"] * 2 // dtype.itemsize // head_dim)
    if cfg["DOT"]:
        block_w = min(block_w, DECODE_DOT_MAX_SLOTS)
    tiles = cdiv(w_cache, block_w)
    wanted = min(tiles, max(1, cdiv(cfg["MIN_PROGRAMS"], units)))
    per_program = block_w * cdiv(tiles, wanted)
    splits = cdiv(w_cache, per_program)
    launch = dict(DOT=cfg["DOT"], units=units, BLOCK_W=block_w, SLOTS_PER_PROGRAM=per_program, splits=splits,
                  num_warps=cfg["num_warps"], SUM_IN_KERNEL=cfg["SUM_IN_KERNEL"] and splits > 1,
                  LOOP_STAGES=cfg["LOOP_STAGES"])
    if cfg["DOT"]:
        return dict(launch, QROWS=max(16, triton.next_power_of_2(rep)), DOT_PREC=_dot_precision(dtype))
    return dict(launch, ACC_2D=cfg["ACC_2D"], PREFETCH=cfg["PREFETCH"])


@contextlib.contextmanager
def override_decode_config(**overrides):
    """Temporarily replace entries (DOT, MIN_PROGRAMS, TILE_ELEMS, num_warps, ACC_2D, SUM_IN_KERNEL,
    LOOP_STAGES, PREFETCH) of every DECODE_CONFIGS entry, so that a sweep times one config at every batch."""
    with contextlib.ExitStack() as stack:
        for cfg in DECODE_CONFIGS.values():
            stack.enter_context(_overridden(cfg, overrides))
        yield


def _swat_decode_body(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slopes: torch.Tensor,
                      cache_len: int, pos: int, window: int, sigmoid_bias: float, scale: float) -> torch.Tensor:
    B, H, d = q.shape
    W_cache, Hkv = k_cache.shape[1], k_cache.shape[2]
    rep = H // Hkv
    launch = decode_launch(B * H, W_cache, d, q.dtype, rep)
    splits, units, dot = launch.pop("splits"), launch.pop("units"), launch.pop("DOT")
    out = torch.empty((splits, B, H, d), device=q.device, dtype=q.dtype if splits == 1 else torch.float32)
    o = out[0] if splits == 1 else torch.empty((B, H, d), device=q.device, dtype=q.dtype)
    arrived = _arrival_counters(q.device, units) if launch["SUM_IN_KERNEL"] else slopes
    (swat_decode_dot_kernel if dot else swat_decode_kernel)[(units, splits)](
        q, k_cache, v_cache, out, o, arrived, slopes,
        q.stride(0), q.stride(1), *_strides(k_cache), *_strides(v_cache), *_strides(out), o.stride(0), o.stride(1),
        units // B, W_cache, cache_len, pos, window, scale, sigmoid_bias,
        REP=rep, HEAD_DIM=d, SIGMOID=_sigmoid_mode(q, "decode"), **launch, **LAUNCH_OPTIONS)
    if splits > 1 and not launch["SUM_IN_KERNEL"]:
        sum_splits_kernel[(cdiv(o.numel(), 1024),)](out, o, splits, o.numel(), BLOCK=1024, **LAUNCH_OPTIONS)
    return o


_ARRIVALS: dict = {}  # (device, stream) -> the decode kernel's arrival counters, all zero between launches


def _arrival_counters(device: torch.device, pairs: int) -> torch.Tensor:
    """int32 counters, one per (sequence, head) pair, zero before and after every SUM_IN_KERNEL
    launch (the last program of a pair sets its own back). One set per device and stream, as
    launches on one stream run in order; grown by allocating anew, and never freed, since a
    captured CUDA graph keeps the address it was captured with."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    sets = _ARRIVALS.setdefault((device, stream), [])
    if not sets or sets[-1].numel() < pairs:
        sets.append(torch.zeros(max(pairs, 1 << 14), dtype=torch.int32, device=device))
    return sets[-1]


_swat_decode = torch.library.custom_op("swat_harness::swat_decode", _swat_decode_body, mutates_args=())


@_swat_decode.register_fake
def _swat_decode_fake(q, k_cache, v_cache, slopes, cache_len, pos, window, sigmoid_bias, scale):
    return q.new_empty(q.shape)


def swat_decode_triton(q, k_cache, v_cache, cache_len: int, pos: int, slopes, window: int,
                       sigmoid_bias: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """One decode step (sigmoid) through the Triton kernel; same contract as `swat_decode_ref`."""
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ConfigError(f"SWAT decode wants q [B, H, d] and caches [B, W, Hkv, d]; got {tuple(q.shape)}, "
                          f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    check_inputs(q[:, None], k_cache[:, :1], v_cache[:, :1], slopes, window)
    q, k_cache, v_cache = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k_cache, v_cache))
    slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    # the body itself where nothing traces the call and no gradient is asked of it (the op has no
    # backward and says so when one is): the op's dispatch is about 40% of the host time besides the launch
    direct = _untraced(q, k_cache, v_cache) and not any(t.requires_grad for t in (q, k_cache, v_cache))
    return (_swat_decode_body if direct else _swat_decode)(q, k_cache, v_cache, slopes, int(cache_len), int(pos),
                                                           int(window), float(sigmoid_bias), scale)
