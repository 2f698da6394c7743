"""Two questions after the H100 sweeps of 2026-12-07 (device calls 64-65), on one GPU in one process:

A. d = 64 at W = 1024 and 2048: the forward and the whole backward with d = 64's "medium" tiles up to
   MEDIUM_WINDOW[64] = 1024 (as at 1e2300a, which this probe timed) or 2048, and with the one-pass
   backward (FUSED_DQ "tma", dK/dV tiles 64x64 w4 s3, the tile sweep's best one-pass row), at the
   peer bench's lengths (B * T = 65536, H = 16), each variant timed twice, alternating.
B. W = 128: the autograd step the peer bench times (forward, then backward against a fixed output
   gradient, grads not accumulated), eagerly (do_bench) and as CUDA-graph replays, and the host's
   time to enqueue one step: whether the bench's W = 128 rows, whose times moved between 0.84 and
   1.25 ms while the kernels alone took 0.6 + 0.2 ms, wait on the host; and the eager step timed
   first after 5 s of an idle GPU (as after the bench's compiles), then at once again.

    python results/kernels/d64-medium/probe.py OUT.jsonl
"""
import shlex
import sys
import time

import torch

from harness.bench.timing import median_ms
from harness.bench.tune import _inputs, _time
from harness.ops.swat import function as fn_mod
from harness.ops.swat.function import (
    _cfg,
    _swat_bwd,
    _swat_fwd,
    override_configs,
    override_fused_dq,
    swat_attention_triton,
)
from harness.results.provenance import stamped_row_writer

# every row says how to measure it again, as harness.bench.tune's do
write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/d64-medium/probe.py", *sys.argv[1:]]), echo=True)


def emit(**row):
    write(row)


ONE_PASS = {("dkdv", 64, "medium"): _cfg(64, 64, 4, 3)}
for seq_len in (4096, 16384, 32768):
    T, (q, k, v, do), slopes, scale = _inputs(64, seq_len, 65536)
    for W in (1024, 2048):
        for rep in range(2):
            for variant in ("medium to 1024", "medium to 2048", "medium to 2048, one pass tma"):
                one_pass = variant.endswith("tma")
                with fn_mod._overridden(fn_mod.MEDIUM_WINDOW, {64: 1024 if variant == "medium to 1024" else 2048}), \
                        override_configs(ONE_PASS if one_pass else {}), \
                        override_fused_dq({(64, "medium"): "tma"} if one_pass else {}):
                    fwd, _ = _time(lambda: _swat_fwd(q, k, v, slopes, None, None, W, 0.0, scale))
                    bwd, note = _time(lambda: _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale))
                emit(part="A", d=64, T=T, W=W, variant=variant, rep=rep, fwd_ms=fwd, bwd_ms=bwd, note=note)

for d in (64, 128):
    for seq_len in (4096, 16384):
        T, (q, k, v, do), slopes, scale = _inputs(d, seq_len, 65536)
        qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))

        def step():
            return torch.autograd.grad(swat_attention_triton(qg, kg, vg, slopes, 128), (qg, kg, vg), do)
        time.sleep(5)  # the GPU idle, as while the bench compiles the next peer
        after_idle = median_ms(step, True)
        eager = median_ms(step, True)
        try:
            graph = median_ms(step, True, cuda_graph=True)
        except Exception as err:  # noqa: BLE001
            graph = f"{type(err).__name__}: {str(err)[:80]}"
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            step()
        host = (time.perf_counter() - t0) / 20 * 1e3
        torch.cuda.synchronize()
        emit(part="B", d=d, T=T, W=128, eager_after_idle_ms=after_idle, eager_ms=eager, graph_ms=graph,
             host_enqueue_ms=host)
