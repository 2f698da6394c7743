"""d = 64 at W = T (full causal, the "large" regime): the whole backward with the tiles committed until
946ab1f ("committed": two passes, dK/dV 32x128, dQ 128x32) against what won the tile sweep in the
"pairs" order at T = 8192 (`../nvidia-h100-80gb-hbm3/tune_w512-T_pairs.txt`, whole backward: dK/dV
32x64 -6.6%, dQ 128x64 -4.4%, each alone and both; the one-pass backward, FUSED_DQ "tma" with dK/dV
64x64, -14%, which 946ab1f took from this probe's run), at the peer bench's lengths (B * T = 65536,
H = 16, bf16), each variant timed twice, alternating, in one process on one GPU. All 4 warps, 3
stages. Every variant sets its FUSED_DQ mode and both passes' tiles, so the comparison is the same
at any commit.

    python results/kernels/d64-full/probe.py OUT.jsonl
"""
import shlex
import sys

from harness.bench.tune import _inputs, _time
from harness.ops.swat.function import _cfg, _swat_bwd, override_configs, override_fused_dq
from harness.results.provenance import stamped_row_writer

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/d64-full/probe.py", *sys.argv[1:]]), echo=True)
TWO_PASS = {("dkdv", 64, "large"): _cfg(32, 128, 4, 3), ("dq", 64, "large"): _cfg(128, 32, 4, 3)}
DKDV, DQ = {("dkdv", 64, "large"): _cfg(32, 64, 4, 3)}, {("dq", 64, "large"): _cfg(128, 64, 4, 3)}
ONE_PASS = {("dkdv", 64, "large"): _cfg(64, 64, 4, 3)}
VARIANTS = {"committed": TWO_PASS, "dkdv 32x64": {**TWO_PASS, **DKDV}, "dq 128x64": {**TWO_PASS, **DQ},
            "both": {**DKDV, **DQ}, "one pass tma": ONE_PASS}
for seq_len in (4096, 16384, 32768):
    T, (q, k, v, do), slopes, scale = _inputs(64, seq_len, 65536)
    for rep in range(2):
        for variant, overrides in VARIANTS.items():
            with override_configs(overrides), \
                    override_fused_dq({(64, "large"): "tma" if variant == "one pass tma" else "off"}):
                bwd, note = _time(lambda: _swat_bwd(do, q, k, v, slopes, None, None, T, 0.0, scale))
            row = dict(d=64, T=T, W=T, variant=variant, rep=rep, bwd_ms=bwd, note=note)
            write(row)
