"""The tensor-core decode (kernel.py) and the committed decode kernel with its slot loop pipelined
(LOOP_STAGES, PREFETCH) against the committed decode (swat_decode_triton, its DECODE_CONFIGS) and
SDPA over the same W slots, at the peer bench's decode shapes: d = 64 and 128
with H * d = 1024, batch 1, 8 and 64, W = 128, 512 and 2048, bf16, the cache full (position 10 W).
First each kernel's error against the fp32 reference; then two rounds of every variant's time, as
CUDA-graph replays over copies of the cache in turn, as many as it takes to read it from HBM (the
bench's decode timing since NOTES.md v24), and the committed kernel's and SDPA's over one copy, as
calls 93 and 95 timed every variant (from L2 where the cache fits). Issue 24 asks decode at batch
1, 8 and 64 to be at least level with SDPA; the committed kernel trails at several of these shapes
(kernels.md).

    python results/kernels/decode-dot/probe.py OUT.jsonl
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(__file__))
from kernel import decode_dot  # noqa: E402

from harness.bench.tune import DECODE_SHAPES, _time, decode_inputs  # noqa: E402
from harness.ops.swat.function import override_decode_config, swat_decode_triton  # noqa: E402
from harness.ops.swat.reference import swat_decode_ref  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/decode-dot/probe.py", *sys.argv[1:]]), echo=True)
# name: decode_dot's (min_programs, tile_elems, num_warps, num_stages)
DOT = {f"dot p{p} t{t} w{w} s{s}": dict(min_programs=p, tile_elems=t, num_warps=w, num_stages=s)
       for p, t, w, s in ((1056, 8192, 4, 2), (264, 8192, 4, 3))}

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


def pipelined(overrides, *args):
    with override_decode_config(**overrides):
        return swat_decode_triton(*args)


for d, B, W in DECODE_SHAPES:
    q, copies, slopes, sdpa = decode_inputs(d, B, W)
    shape = dict(d=d, B=B, H=q.shape[1], W=W, copies=len(copies))
    rest = (W, 10 * W, slopes, W)  # a full ring buffer, the query at position 10 W
    calls = {"committed": lambda kc, vc: swat_decode_triton(q, kc, vc, *rest)}
    calls.update({name: (lambda kc, vc, o=o: pipelined(o, q, kc, vc, *rest)) for name, o in PIPELINED.items()})
    calls.update({name: (lambda kc, vc, cfg=cfg: decode_dot(q, kc, vc, *rest, **cfg)) for name, cfg in DOT.items()})
    kc, vc = copies[0]
    want = swat_decode_ref(q.float(), kc.float(), vc.float(), *rest)
    for name, call in calls.items():
        got = call(kc, vc).float()
        write(dict(shape, variant=name, rel_err=((got - want).norm() / want.norm()).item()))
    calls["sdpa"] = sdpa
    timed = [(name, call, copies) for name, call in calls.items()]
    timed += [(f"{name}, one copy", calls[name], copies[:1]) for name in ("committed", "sdpa")]
    for rnd in range(2):
        for name, call, over in timed:
            ms, note = _time(call, copies=over)
            write(dict(shape, variant=name, round=rnd, us=None if ms is None else ms * 1e3, note=note))
