"""d = 128 at W = T (full causal, the "large" regime), where SWAT's forward + backward trails SDPA
most on the H100 (0.90x at T = 4K, 0.97-0.99x at 16K and 32K, `../nvidia-h100-80gb-hbm3/kernels.md`
at 946ab1f): the whole backward the dispatcher runs there (hopper.py's Gluon passes, from W = 2048)
against the Triton passes at their committed large tiles (two passes: dK/dV 64x128, dQ 128x64, 8
warps), and against Triton's one-pass backward (FUSED_DQ "tma") with the tile sweep's best one-pass
tiles at T = 8192 (`../nvidia-h100-80gb-hbm3/tune_w512-T_pairs.txt`: dK/dV 64x128, 8 warps, 2
stages) and d = 64's (64x64, 4 warps, 3 stages). The peer bench's lengths (B * T = 65536, H = 8,
bf16), each variant timed twice, alternating, in one process on one GPU: whether the Gluon
backward's lead, measured at T = 16K (NOTES.md v12), holds at 4K, where SDPA's lead is largest.

    python results/kernels/d128-full/probe.py OUT.jsonl
"""
import contextlib
import shlex
import sys

from harness.bench.tune import _inputs, _time
from harness.ops.swat.function import _cfg, _swat_bwd, override_configs, override_fused_dq, triton_only
from harness.results.provenance import stamped_row_writer

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/d128-full/probe.py", *sys.argv[1:]]), echo=True)
# name: (Triton only, FUSED_DQ mode, CONFIGS overrides)
VARIANTS = {
    "committed (Gluon)": (False, "off", {}),
    "triton two passes": (True, "off", {}),
    "triton one pass 64x128 w8 s2": (True, "tma", {("dkdv", 128, "large"): _cfg(64, 128, 8, 2)}),
    "triton one pass 64x64 w4 s3": (True, "tma", {("dkdv", 128, "large"): _cfg(64, 64, 4, 3)}),
}
for seq_len in (4096, 16384, 32768):
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    for rep in range(2):
        for variant, (triton, fused, configs) in VARIANTS.items():
            with triton_only() if triton else contextlib.nullcontext(), override_configs(configs), \
                    override_fused_dq({(128, "large"): fused}):
                bwd, note = _time(lambda: _swat_bwd(do, q, k, v, slopes, None, None, T, 0.0, scale))
            row = dict(d=128, T=T, W=T, variant=variant, rep=rep, bwd_ms=bwd, note=note)
            write(row)
