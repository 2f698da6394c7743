"""The tensor-core decode's programs per (sequence, key/value head) group, at batch 1, 8 and 64.
Call 112 (batch8.py) found the dot kernel with one program a group, 8 warps and 3 stages level
with or ahead of SDPA over the same W slots at batch 8 wherever there are as many groups as SMs
(d = 64: 1.05x / 1.01x at W = 512 / 2048, against the committed decode's 0.86x / 0.90x) and
at d = 128 with W = 128, but not with 64 groups at W = 512 and 2048 (0.94x / 0.91x), where SDPA
splits the slots too. Here the dot kernel at 1 to 4224 programs wanted (so 1 to 33 a group at
batch 8), 4 and 8 warps, 3 stages, 8192-element tiles, and a 4-stage and a 16384-element tile
variant of the best launch, at d = 64 and 128, W = 128, 512 and 2048, batch 8, 1 and 64, beside
the committed decode (from this commit on the dot kernel at one program a group, 8 warps, 3
stages, at batch 8), the CUDA cores' "split" config and SDPA: whether one rule for the programs
wanted puts the dot kernel level with SDPA at every batch. Each variant's error against the fp32
reference, then two rounds of times with the cache read from HBM (rounds.py).

    python results/kernels/decode-dot/programs.py OUT.jsonl
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(__file__))
from rounds import SPLIT, dot, probe_shape, with_config  # noqa: E402

from harness.results.provenance import stamped_row_writer  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/decode-dot/programs.py", *sys.argv[1:]]), echo=True)
# "p" programs wanted (1: one per group), "t" elements a tile, "w" warps, "s" LOOP_STAGES
LAUNCHES = [(p, 8192, w, 3) for p in (1, 132, 264, 528, 4224) for w in (4, 8)] + [(1, 8192, 8, 4), (1, 16384, 8, 3)]
VARIANTS = {"committed": with_config({}), "split": with_config(SPLIT)}
VARIANTS.update({f"dot p{p} t{t} w{w} s{s}": dot(dict(MIN_PROGRAMS=p, TILE_ELEMS=t, num_warps=w, LOOP_STAGES=s))
                 for p, t, w, s in LAUNCHES})

for B in (8, 1, 64):
    for d in (64, 128):
        for W in (128, 512, 2048):
            probe_shape(write, d, B, W, VARIANTS)
