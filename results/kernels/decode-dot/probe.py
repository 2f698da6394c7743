"""The tensor-core decode (kernel.py's until 87fd565, now the committed decode's) and the committed
CUDA-core decode kernel with its slot loop pipelined (LOOP_STAGES, PREFETCH) against the committed
decode (swat_decode_triton, its DECODE_CONFIGS) and SDPA over the same W slots, at the peer
bench's decode shapes: d = 64 and 128 with H * d = 1024, batch 1, 8 and 64, W = 128, 512 and 2048,
bf16, the cache full (position 10 W).
First each kernel's error against the fp32 reference; then two rounds of every variant's time, as
CUDA-graph replays over copies of the cache in turn, as many as it takes to read it from HBM (the
bench's decode timing since NOTES.md v24), and the committed kernel's and SDPA's over one copy, as
calls 93 and 95 timed every variant (from L2 where the cache fits). Issue 24 asks decode at batch
1, 8 and 64 to be at least level with SDPA; the committed kernel trails at several of these shapes
(kernels.md). Since the "dot" config took batch 8 (after call 112), the committed decode there is
the tensor cores' kernel, and the overrides below change its launch at batch 8.

    python results/kernels/decode-dot/probe.py OUT.jsonl
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(__file__))
from rounds import DOT, dot, probe_shape, with_config  # noqa: E402

from harness.bench.tune import DECODE_SHAPES  # noqa: E402
from harness.ops.swat.function import swat_decode_triton  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/decode-dot/probe.py", *sys.argv[1:]]), echo=True)

# the committed kernel with its slot loop software-pipelined through shared memory (LOOP_STAGES 2,
# the best depth of call 95), and with the next tile prefetched into registers (PREFETCH) at fewer
# programs wanted than "split"'s 4224 (which leave each program one tile at batch 1 and 8), so that a
# program has tiles to prefetch: "p" programs wanted, "t" elements a tile, "w" warps, the 1-D or 2-D
# accumulator; compiled for sm_90 (Triton 3.6) at the probe's shapes, each takes at most 246
# registers a thread and spills at most 4 B
PIPELINED = {"committed, loop stages 2": dict(LOOP_STAGES=2)}
PIPELINED.update({f"prefetch p{p} t{t} w{w} {'acc2d' if acc else 'acc1d'}":
                  dict(PREFETCH=True, MIN_PROGRAMS=p, TILE_ELEMS=t, num_warps=w, ACC_2D=acc)
                  for p in (264, 1056) for t, w, acc in ((4096, 2, False), (8192, 4, False), (4096, 2, True),
                                                        (8192, 4, True), (4096, 4, False))})
VARIANTS = {"committed": swat_decode_triton}
VARIANTS.update({name: with_config(overrides) for name, overrides in PIPELINED.items()})
VARIANTS.update({name: dot(config) for name, config in DOT.items()})

for d, B, W in DECODE_SHAPES:
    probe_shape(write, d, B, W, VARIANTS, one_copy=("committed", "sdpa"))
