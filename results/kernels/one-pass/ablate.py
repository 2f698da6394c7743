"""Where kernel.py's one-pass backward spends its time (d = 128, W = T, B * T = 65536, H = 8, bf16):
"full", or "no_atomics": the dQ products run and are staged for the dQ partition, which adds
nothing to the buffer (kernel._dq_partition replaced before the kernel is compiled, so each variant
runs in a process of its own). Not a gradient: a cost breakdown, two timings each at T = 4K and
16K, 3 ring slots, the dQ partition kernel.DQ_PARTITION or (WARPS REGS MAXNREG) another.

    python results/kernels/one-pass/ablate.py OUT.jsonl {full,no_atomics} [WARPS REGS MAXNREG]
"""
import shlex
import sys
from pathlib import Path

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

sys.path.insert(0, str(Path(__file__).parent))
import kernel  # noqa: E402  (this folder's one-pass kernel)

from harness.bench.tune import _inputs, _time  # noqa: E402
from harness.ops.swat.function import SIGMOID_MODE, program_order  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

out, what = sys.argv[1], sys.argv[2]


@gluon.jit
def _no_dq_partition(dq_bufs, dq_full, dq_empty, dq_base, stride_t, T, m_lo, m_hi, BLOCK_M: gl.constexpr,
                     HEAD_DIM: gl.constexpr):
    for i in range(gl.cdiv(m_hi - m_lo, BLOCK_M)):
        mbarrier.wait(dq_full.index(i % 2), (i // 2) & 1)
        mbarrier.arrive(dq_empty.index(i % 2), count=1)


if what == "no_atomics":
    kernel._dq_partition = _no_dq_partition
partition = tuple(int(x) for x in sys.argv[3:6]) or kernel.DQ_PARTITION
kernel.DQ_PARTITION = partition
write = stamped_row_writer(open(out, "a"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/ablate.py", *sys.argv[1:]]), echo=True)
for seq_len in (4096, 16384):
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    args = (do, q, k, v, slopes, T, 0.0, scale, SIGMOID_MODE["bwd"], program_order(128, T))
    for rep in range(2):
        ms, note = _time(lambda: kernel.swat_bwd_hopper_one_pass(*args))
        row = dict(d=128, T=T, W="T", variant=f"one pass, {what}", dq_partition=list(partition), rep=rep, bwd_ms=ms,
                   note=note)
        write(row)
