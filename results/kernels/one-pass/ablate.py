"""Where hopper.py's one-pass backward spends its time (d = 128, W = T, B * T = 65536, H = 8, bf16):
"full", or "no_reduce": the dQ products run and are staged in shared memory, but no reduction adds
them to the buffer (hopper.tma_reduce_add replaced before the kernel is compiled, so each variant
runs in a process of its own); "full" also times the host side's two tensor passes alone, the fp32
buffer's zero fill and its scaling and cast into dq. Not a gradient: a cost breakdown, two timings
each at T = 4K and 16K, with hopper.py's ring and dQ slots or (NUM_BUFFERS DQ_SLOTS) others.
Through call 91 (7fc5125) the one pass was this folder's kernel.py.

    python results/kernels/one-pass/ablate.py OUT.jsonl {full,no_reduce} [NUM_BUFFERS DQ_SLOTS]
"""
import shlex
import sys

import torch
from triton.experimental.gluon.language._core import builtin

from harness.bench.tune import _inputs, _time
from harness.ops.swat import hopper
from harness.ops.swat.function import SIGMOID_MODE, program_order
from harness.results.provenance import stamped_row_writer

out, what = sys.argv[1], sys.argv[2]


@builtin
def _no_reduce(tensor_desc, coord, src, _semantic=None):
    """In the place of hopper.tma_reduce_add: adds nothing."""


if what == "no_reduce":
    hopper.tma_reduce_add = _no_reduce
if sys.argv[3:]:
    hopper.ONE_PASS_BUFFERS, hopper.ONE_PASS_DQ_SLOTS[128] = (int(x) for x in sys.argv[3:5])
write = stamped_row_writer(open(out, "a"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/ablate.py", *sys.argv[1:]]), echo=True)
for seq_len in (4096, 16384):
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    args = (do, q, k, v, slopes, T, 0.0, scale, SIGMOID_MODE["bwd"], program_order(128, T))
    for rep in range(2):
        ms, note = _time(lambda: hopper.swat_bwd_hopper(*args, one_pass=True))
        row = dict(d=128, T=T, W="T", variant=f"one pass, {what}", num_buffers=hopper.ONE_PASS_BUFFERS,
                   dq_slots=hopper.ONE_PASS_DQ_SLOTS[128], rep=rep, bwd_ms=ms, note=note)
        write(row)
    if what == "full":
        dq32, dq = torch.zeros(q.shape, device=q.device), torch.empty_like(q)
        parts = {"zero fill of the fp32 dQ buffer": lambda: dq32.zero_(),
                 "dQ scaled and cast": lambda: torch.mul(dq32, scale, out=dq)}
        for name, fn in parts.items():
            ms, note = _time(fn)
            write(dict(d=128, T=T, W="T", variant=name, bwd_ms=ms, note=note))
