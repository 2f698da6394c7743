"""Where kernel.py's one-pass backward spends its time (d = 128, W = T, B * T = 65536, H = 8, bf16):
"full", or "no_atomics": the dQ products run, nothing is added to the buffer (kernel._add_dq
replaced before the kernel is compiled, so each variant runs in a process of its own). Not a
gradient: a cost breakdown, two timings each at T = 4K and 16K, 3 ring slots.

    python results/kernels/one-pass/ablate.py OUT.jsonl {full,no_atomics}
"""
import shlex
import sys
from pathlib import Path

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

sys.path.insert(0, str(Path(__file__).parent))
import kernel  # noqa: E402  (this folder's one-pass kernel)

from harness.bench.tune import _inputs, _time  # noqa: E402
from harness.ops.swat.function import SIGMOID_MODE, program_order  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

out, what = sys.argv[1], sys.argv[2]


@gluon.jit
def _no_atomics(dq, dq_base, stride_t, m, T, scale, GROUP: gl.constexpr):
    pass


if what == "no_atomics":
    kernel._add_dq = _no_atomics
write = stamped_row_writer(open(out, "a"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/ablate.py", *sys.argv[1:]]), echo=True)
for seq_len in (4096, 16384):
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    args = (do, q, k, v, slopes, T, 0.0, scale, SIGMOID_MODE["bwd"], program_order(128, T))
    for rep in range(2):
        ms, note = _time(lambda: kernel.swat_bwd_hopper_one_pass(*args))
        row = dict(d=128, T=T, W="T", variant=f"one pass, {what}", rep=rep, bwd_ms=ms, note=note)
        write(row)
