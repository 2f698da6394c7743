"""Batch 8, the decode's remaining gap: with c562cb4's configs the committed decode is 0.86-0.92x
SDPA over the same W slots at batch 8 on an H100 (W = 512 and 2048 at d = 64; every W at d = 128),
and level or ahead at batch 1 and 64 (NOTES.md v25). The committed "split" config against launches
that change one thing each (tile size, warps, programs wanted and so the runs' length, pipeline
depth, the accumulator, PREFETCH instead of the copies; after call 109, one program per pair, as
SDPA's kernel may run it) and the dot kernel's two configs (after call 111 also with one program
a pair, as cuDNN's kernel runs SDPA's step at d = 64, in 16-row tiles of the queries), at d = 64
and 128, batch 8, W = 128, 512 and 2048, bf16, the cache full (position 10 W). First each
variant's error against the fp32 reference and (after call 109) the CUDA kernels SDPA's step
launches, with their GPU time (torch.profiler: whether it splits the slots over programs,
flash-decoding's split-KV, and adds the splits in a second kernel); then two rounds of every
variant's time, as CUDA-graph replays over copies of the cache in turn, read from HBM (the
bench's decode timing), beside SDPA. Since the "dot" config took batch 8 (after call 112),
"committed" is the tensor cores' decode there, and the launches that change one thing change
"split".

    python results/kernels/decode-dot/batch8.py OUT.jsonl
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(__file__))
from rounds import DOT, SPLIT, dot, probe_shape, with_config  # noqa: E402

from harness.results.provenance import stamped_row_writer  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/decode-dot/batch8.py", *sys.argv[1:]]), echo=True)
# name: changes to "split" (4224 programs wanted, 8192-element tiles, 4 warps, 2-D accumulator,
# LOOP_STAGES 2, the runs' sums added in the kernel)
CHANGES = {"split": {},
           "tiles 4096": dict(TILE_ELEMS=4096),
           "tiles 2048": dict(TILE_ELEMS=2048),
           "8 warps": dict(num_warps=8),
           "2 warps, tiles 4096": dict(num_warps=2, TILE_ELEMS=4096),
           "1056 programs": dict(MIN_PROGRAMS=1056),
           "1056 programs, 3 stages": dict(MIN_PROGRAMS=1056, LOOP_STAGES=3),
           "1 program a pair": dict(MIN_PROGRAMS=1),
           "1 program a pair, 3 stages": dict(MIN_PROGRAMS=1, LOOP_STAGES=3),
           "1-D accumulator": dict(ACC_2D=False),
           "prefetch, 1056 programs, tiles 4096, 2 warps": dict(LOOP_STAGES=1, PREFETCH=True, MIN_PROGRAMS=1056,
                                                                 TILE_ELEMS=4096, num_warps=2)}
VARIANTS = {"committed": with_config({})}
VARIANTS.update({name: with_config(dict(SPLIT, **changes)) for name, changes in CHANGES.items()})
VARIANTS.update({name: dot(config) for name, config in DOT.items()})
PAIR_DOT = {f"dot 1 program a pair t{t} w{w} s{s}": dict(MIN_PROGRAMS=1, TILE_ELEMS=t, num_warps=w, LOOP_STAGES=s)
            for t, w, s in ((8192, 4, 2), (8192, 4, 3), (4096, 4, 3), (8192, 8, 3))}
VARIANTS.update({name: dot(config) for name, config in PAIR_DOT.items()})

for d in (64, 128):
    for W in (128, 512, 2048):
        probe_shape(write, d, 8, W, VARIANTS, sdpa_kernels=True)
