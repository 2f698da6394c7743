"""Deep slot-loop pipelines at batch 1 and 8, the shapes the "split" config runs. Call 110
(batch8.py) found SDPA's step at batch 8 to be one cuDNN kernel (a second, its reduction, only at
d = 128 and W = 2048), and the committed kernel with one program per (sequence, head) pair and 3
stages closer to it at d = 64 than the committed split (0.93x / 0.97x against 0.85x / 0.90x at
W = 512 / 2048): a program per SM streaming many tiles with several in flight, rather than one
tile per program and the runs' sums added at the end. Here the committed kernel at 1, 264 and 528
programs wanted, 3, 4 and 6 stages (cp.async copies into shared memory: 32 KB a stage at
8192-element tiles, 16 KB at 4096), two (tile, warps) configs, at d = 64 and 128, W = 128, 512
and 2048, batch 8 then batch 1, beside the committed config and SDPA over the same W slots; each
variant's error against the fp32 reference, then two rounds of times with the cache read from HBM
(rounds.py). Since the "dot" config took batch 8 (after call 112), "committed" is the tensor
cores' decode there; "split" is the config the deeper pipelines change.

    python results/kernels/decode-dot/stages.py OUT.jsonl
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(__file__))
from rounds import SPLIT, probe_shape, with_config  # noqa: E402

from harness.results.provenance import stamped_row_writer  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/decode-dot/stages.py", *sys.argv[1:]]), echo=True)
# "p" programs wanted (1: one per pair), "t" elements a tile, "w" warps, "s" LOOP_STAGES: changes to "split"
DEEP = {f"p{p} t{t} w{w} s{s}": dict(SPLIT, MIN_PROGRAMS=p, TILE_ELEMS=t, num_warps=w, LOOP_STAGES=s)
        for p in (1, 264, 528) for t, w in ((8192, 4), (4096, 2)) for s in (3, 4, 6)}
VARIANTS = {"committed": with_config({}), "split": with_config(SPLIT)}
VARIANTS.update({name: with_config(overrides) for name, overrides in DEEP.items()})

for B in (8, 1):
    for d in (64, 128):
        for W in (128, 512, 2048):
            probe_shape(write, d, B, W, VARIANTS)
