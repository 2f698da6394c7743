"""d = 64 at W = T: the one-pass backward with its query and output-gradient tiles read by TMA
(`kernel.py`) against the committed one pass (cp.async by the threads), both with a register cap
that lets three programs share an SM, and SDPA's backward beside them, at the peer bench's lengths
(B * T = 65536, H = 16, bf16, bias 0), each variant timed three times, alternating, in one process.
Each variant's dQ, dK and dV are checked against the committed kernel's first (largest difference
over the largest value) and its time is not taken where they differ.

    python results/kernels/tma-loads/probe.py OUT.jsonl
"""
import math
import shlex
import sys
from pathlib import Path

import torch

from harness.bench.tune import _inputs, _largest_value_error, _time, sdpa_backward
from harness.ops.swat.function import _strides, _swat_bwd, _tma_scratch_allocator, program_order
from harness.ops.swat.triton_bwd import swat_bwd_dkdv_kernel
from harness.results.provenance import stamped_row_writer

sys.path.insert(0, str(Path(__file__).parent))
from kernel import dkdv_tma_loads_kernel  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/tma-loads/probe.py", *sys.argv[1:]]), echo=True)
BLOCK = 64


def one_pass(tma_loads: bool, num_stages: int, maxnreg: int | None):
    def run(do, q, k, v, slopes, T, scale):
        B, _, H, d = q.shape
        dq = torch.zeros((B, T, H, d), device=q.device, dtype=torch.float32)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        grid = (B * H * math.ceil(T / BLOCK),)
        options = dict(num_warps=4, num_stages=num_stages, **({"maxnreg": maxnreg} if maxnreg else {}))
        _tma_scratch_allocator()
        if tma_loads:
            dkdv_tma_loads_kernel[grid](q, k, v, do, dk, dv, dq, slopes, B, T, H, T, 0.0, scale, BLOCK_M=BLOCK,
                                        BLOCK_N=BLOCK, HEAD_DIM=d, SIGMOID=3, ORDER=program_order(d, T), **options)
        else:
            swat_bwd_dkdv_kernel[grid](q, k, v, do, dk, dv, dq, slopes, slopes, slopes, *_strides(q), *_strides(k),
                                       *_strides(v), *_strides(do), *_strides(dk), *_strides(dv), *_strides(dq),
                                       T, H, T, 0.0, scale, REP=1, HAS_DOC=False, BLOCK_M=BLOCK, BLOCK_N=BLOCK,
                                       HEAD_DIM=d, SIGMOID=3, DOT_PREC="tf32", ONE_LOOP=False, FUSED_DQ="tma",
                                       ORDER=program_order(d, T), **options)
        return dq.to(q.dtype), dk, dv
    return run


def committed(do, q, k, v, slopes, T, scale):
    return _swat_bwd(do, q, k, v, slopes, None, None, T, 0.0, scale)


VARIANTS = {"committed": committed,
            "cp.async, 2 stages, 168 registers": one_pass(False, 2, 168),
            "tma loads, 3 stages": one_pass(True, 3, None),
            "tma loads, 2 stages, 168 registers": one_pass(True, 2, 168)}


for seq_len in (4096, 16384, 32768):
    T, (q, k, v, do), slopes, scale = _inputs(64, seq_len, 65536)
    want = VARIANTS["committed"](do, q, k, v, slopes, T, scale)
    errors = {name: max(map(_largest_value_error, fn(do, q, k, v, slopes, T, scale), want))
              for name, fn in VARIANTS.items()}
    sdpa = sdpa_backward(q, k, v, do)
    for rep in range(3):
        for name, fn in VARIANTS.items():
            ok = errors[name] < 2e-2
            ms, note = _time(lambda: fn(do, q, k, v, slopes, T, scale)) if ok else (None, "differs from committed")
            write(dict(d=64, T=T, W=T, variant=name, rep=rep, bwd_ms=ms, difference=errors[name], note=note))
        ms, note = _time(sdpa)
        write(dict(d=64, T=T, W=T, variant="sdpa", rep=rep, bwd_ms=ms, note=note))
