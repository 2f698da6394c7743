"""Where kernel.py's one-pass backward spends its time (d = 128, W = T, B * T = 65536, H = 8, bf16):
"full", or "no_reduce": the dQ products run and are staged in shared memory, but no reduction adds
them to the buffer (kernel.tma_reduce_add replaced before the kernel is compiled, so each variant
runs in a process of its own); "full" also times the host side's two tensor passes alone, the fp32
buffer's zero fill and its scaling and cast into dq. Not a gradient: a cost breakdown, two timings
each at T = 4K and 16K, with kernel.py's ring and dQ slots or (NUM_BUFFERS DQ_SLOTS) others.

    python results/kernels/one-pass/ablate.py OUT.jsonl {full,no_reduce} [NUM_BUFFERS DQ_SLOTS]
"""
import shlex
import sys
from pathlib import Path

import torch
from triton.experimental.gluon.language._core import builtin

sys.path.insert(0, str(Path(__file__).parent))
import kernel  # noqa: E402  (this folder's one-pass kernel)

from harness.bench.tune import _inputs, _time  # noqa: E402
from harness.ops.swat.function import SIGMOID_MODE, program_order  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

out, what = sys.argv[1], sys.argv[2]


@builtin
def _no_reduce(tensor_desc, coord, src, _semantic=None):
    """In the place of kernel.tma_reduce_add: adds nothing."""


if what == "no_reduce":
    kernel.tma_reduce_add = _no_reduce
if sys.argv[3:]:
    kernel.NUM_BUFFERS, kernel.DQ_SLOTS = (int(x) for x in sys.argv[3:5])
write = stamped_row_writer(open(out, "a"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/ablate.py", *sys.argv[1:]]), echo=True)
for seq_len in (4096, 16384):
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    args = (do, q, k, v, slopes, T, 0.0, scale, SIGMOID_MODE["bwd"], program_order(128, T))
    for rep in range(2):
        ms, note = _time(lambda: kernel.swat_bwd_hopper_one_pass(*args))
        row = dict(d=128, T=T, W="T", variant=f"one pass, {what}", num_buffers=kernel.NUM_BUFFERS,
                   dq_slots=kernel.DQ_SLOTS, rep=rep, bwd_ms=ms, note=note)
        write(row)
    if what == "full":
        dq32 = torch.zeros(q.shape, device=q.device)
        parts = {"zero fill of the fp32 dQ buffer": lambda: dq32.zero_(),
                 "dQ scaled and cast": lambda: (dq32 * scale).to(q.dtype)}
        for name, fn in parts.items():
            ms, note = _time(fn)
            write(dict(d=128, T=T, W="T", variant=name, bwd_ms=ms, note=note))
