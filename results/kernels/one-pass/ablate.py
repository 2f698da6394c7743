"""Where the one-pass backward's time goes (d = 128, W = T, B * T = 65536, H = 8, bf16): the
committed one pass against itself with parts taken out, each in a process of its own (the kernel is
compiled with the replaced helper): "no_atomics" (the dQ products run, nothing is added to the
buffer). Not a gradient: a cost breakdown, two timings each at
T = 4K and 16K.

    python results/kernels/one-pass/ablate.py OUT.jsonl {full,no_atomics}
"""
import shlex
import sys

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from harness.bench.tune import _inputs, _time
from harness.ops.swat import hopper
from harness.ops.swat.function import _swat_bwd, override_hopper_one_pass
from harness.results.provenance import stamped_row_writer

out, what = sys.argv[1], sys.argv[2]


@gluon.jit
def _no_atomics(dq, dq_base, stride_t, m, T, scale, GROUP: gl.constexpr):
    pass


if what == "no_atomics":
    hopper._add_dq = _no_atomics
write = stamped_row_writer(open(out, "a"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/ablate.py", *sys.argv[1:]]))
for seq_len in (4096, 16384):
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    with override_hopper_one_pass({128: True}):
        for rep in range(2):
            ms, note = _time(lambda: _swat_bwd(do, q, k, v, slopes, None, None, T, 0.0, scale))
            row = dict(d=128, T=T, W="T", variant=f"one pass, {what}", rep=rep, bwd_ms=ms, note=note)
            print(row, flush=True)
            write(row)
