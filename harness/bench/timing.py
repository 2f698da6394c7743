"""Timing helpers shared by the benchmarks: medians of CUDA-event timings, decode steps timed with
their cache out of L2, the host's share of a call, FLOP counts over a band."""

from __future__ import annotations

import statistics
import time
from typing import Callable

GRAPH_REP_MS = 25  # a few hundred graphed calls at most: capture stays in seconds, the median is stable


def median_ms(fn: Callable[[], object], cuda: bool, warmup_ms: float = 25, rep_ms: float = 100,
              grad_to_none=None, cuda_graph: bool = False) -> float:
    """Median time of one call of fn in ms.

    On the GPU this is triton's do_bench (CUDA events, L2 flushed between calls, warm-up and repeat
    budgets in milliseconds), or with cuda_graph its replay of a captured CUDA graph, which takes
    the host's launch overhead out (of microsecond-scale kernels such as decode, and of calls whose
    host needs longer to enqueue than the GPU to run); there rep_ms is kept short (GRAPH_REP_MS),
    since triton unrolls rep_ms / (one call's time) calls into the graph. On the CPU a perf_counter
    median of a few calls, for exercising the code path only: not comparable with GPU numbers.
    """
    if cuda and cuda_graph:
        from triton.testing import do_bench_cudagraph
        fn()  # compile outside the capture
        return float(do_bench_cudagraph(fn, rep=rep_ms, grad_to_none=grad_to_none, return_mode="median"))
    if cuda:
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


COLD_COPIES_MOST = 512  # sets of a decode cache at most: B = 1, W = 128, d = 64 is 0.5 MB a set


def copies_for_cold_l2(nbytes: int, l2_bytes: int) -> int:
    """How many sets of nbytes make a pass over them read at least twice an L2 of l2_bytes (at
    least 1, at most COLD_COPIES_MOST): what l2_cold_copies makes."""
    return max(1, min(COLD_COPIES_MOST, -(-2 * l2_bytes // max(nbytes, 1))))


def l2_cold_copies(*tensors) -> list[tuple]:
    """tensors, then clones of them, as many sets as make a pass over them read at least twice the
    GPU's L2 (one set on the CPU, or where the tensors alone reach it). A decode step timed over the
    sets in turn (decode_ms) reads its cache from HBM, as a model's layer does once the other
    layers' reads have evicted it; timed on one set over and over, a cache that fits in L2 is
    read from L2, and the step looks faster than in any model."""
    import torch
    if not tensors[0].is_cuda:
        return [tensors]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    sets = copies_for_cold_l2(nbytes, torch.cuda.get_device_properties(tensors[0].device).L2_cache_size)
    return [tensors] + [tuple(t.clone() for t in tensors) for _ in range(sets - 1)]


def decode_ms(step: Callable[..., object], copies: list[tuple], cuda: bool, **timing) -> float:
    """Median ms of one step(*copy): CUDA-graph replays (median_ms) of the step over each copy in
    turn, divided by their number, so that neither the host's launches nor the last step's reads
    left in L2 are in it."""
    return median_ms(lambda: [step(*c) for c in copies], cuda, cuda_graph=True, **timing) / len(copies)


_SLEEP_CYCLES_PER_MS: list[float] = []  # torch.cuda._sleep's cycles per millisecond on this GPU, measured once


def host_ms(fn: Callable[[], object], grad_to_none=None, calls: int = 5, hold_ms: float = 50.0) -> float | None:
    """The host's time to enqueue one call of fn (ms, on a GPU), or None where it cannot be told.

    A do_bench time (CUDA events around the call) includes any wait of the GPU on Python: where
    the host needs longer to enqueue a call's kernels than the GPU to run them, it times the host.
    Here a spin kernel holds the GPU for hold_ms first, so that the calls enqueued behind it never
    wait on a kernel of theirs; where the hold is over before they are all enqueued (a host sync
    inside fn, or a host slower than hold_ms for `calls` calls), their time is not the host's
    alone and None is returned. Gradients in grad_to_none are dropped before each call, as
    do_bench drops them.
    """
    import torch
    if not _SLEEP_CYCLES_PER_MS:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(1 << 22)
        end.record()
        end.synchronize()
        _SLEEP_CYCLES_PER_MS.append((1 << 22) / max(start.elapsed_time(end), 1e-3))
    torch.cuda.synchronize()
    torch.cuda._sleep(int(_SLEEP_CYCLES_PER_MS[0] * hold_ms))
    held = torch.cuda.Event()
    held.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        for t in grad_to_none or ():
            t.grad = None
        fn()
    took = (time.perf_counter() - t0) * 1e3 / calls
    alone = not held.query()  # the GPU still in the hold: no call waited on it
    torch.cuda.synchronize()
    return took if alone else None


def band_pairs(seq_len: int, window: int) -> int:
    """(query, key) pairs with 0 <= i - j < window in one causal sequence of seq_len tokens."""
    w = min(window, seq_len)
    return w * (w + 1) // 2 + (seq_len - w) * w


def attention_flops(pairs: int, head_dim: int, mode: str) -> float:
    """Matmul FLOPs over the band's pairs: 4 d per pair forward (q.k and p.v), 2.5x that backward
    (the FlashAttention convention), so forward+backward is 14 d per pair; decode is a forward."""
    fwd = 4.0 * head_dim * pairs
    return {"fwd": fwd, "decode": fwd, "fwd_bwd": 3.5 * fwd}[mode]
