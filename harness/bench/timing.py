"""Timing helpers shared by the benchmarks: medians of CUDA-event timings, FLOP counts over a band."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms(fn: Callable[[], object], cuda: bool, warmup_ms: float = 25, rep_ms: float = 100,
              grad_to_none=None, cuda_graph: bool = False) -> float:
    """Median time of one call of fn in ms.

    On the GPU this is triton's do_bench (CUDA events, L2 flushed between calls, warm-up and repeat
    budgets in milliseconds), or with cuda_graph its replay of a captured CUDA graph, which takes
    the host's launch overhead out of microsecond-scale kernels (decode). On the CPU a perf_counter
    median of a few calls, for exercising the code path only: not comparable with GPU numbers.
    """
    if cuda and cuda_graph:
        from triton.testing import do_bench_cudagraph
        fn()  # compile outside the capture
        return float(do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))
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


def band_pairs(seq_len: int, window: int) -> int:
    """(query, key) pairs with 0 <= i - j < window in one causal sequence of seq_len tokens."""
    w = min(window, seq_len)
    return w * (w + 1) // 2 + (seq_len - w) * w


def attention_flops(pairs: int, head_dim: int, mode: str) -> float:
    """Matmul FLOPs over the band's pairs: 4 d per pair forward (q.k and p.v), 2.5x that backward
    (the FlashAttention convention), so forward+backward is 14 d per pair; decode is a forward."""
    fwd = 4.0 * head_dim * pairs
    return {"fwd": fwd, "decode": fwd, "fwd_bwd": 3.5 * fwd}[mode]
