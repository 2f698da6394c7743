"""d = 64: hopper.py's one-pass Gluon backward (FlashAttention-3's schedule: a load warp and two
compute warp groups taking turns on the tensor cores; at d = 64 each group adds dQ over its own
keys, hopper.dq_group_columns) against the Triton backward (what the dispatcher ran before the Gluon
pass, pinned by triton_only(): at W = T the one pass with dQ by bulk reduction) and, at W = T,
SDPA's backward, at the peer bench's sizes (B * T = 65536, H = 16, bf16, bias 0), each variant three
times, alternating, in one process. First each Gluon variant's dQ, dK and dV against the Triton
backward's (largest difference over the largest value); a variant that differs by more than 2e-2 is
not timed. Shapes are T:W pairs (W = T: full causal); by default the bench's full-causal lengths.

    python results/kernels/d64-full/gluon.py OUT.jsonl [T:W ...]
"""
import shlex
import sys

from harness.bench.tune import _inputs, _largest_value_error, _time, sdpa_backward
from harness.ops.swat import hopper
from harness.ops.swat.function import SIGMOID_MODE, _swat_bwd, program_order, triton_only
from harness.results.provenance import stamped_row_writer

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/d64-full/gluon.py", *sys.argv[1:]]), echo=True)
# name: the Gluon one pass's ring slots of q and dO and each group's dQ staging slots (None: the Triton passes)
VARIANTS = {"Triton backward": None,
            "gluon one pass, 2 ring slots, 1 dQ slot": (2, 1),
            "gluon one pass, 3 ring slots, 1 dQ slot": (3, 1),
            "gluon one pass, 2 ring slots, 2 dQ slots": (2, 2)}


SHAPES = [tuple(arg.split(":")) for arg in sys.argv[2:]] or [(4096, "T"), (16384, "T"), (32768, "T")]


def backward(name, q, k, v, do, slopes, W, scale):
    if VARIANTS[name] is None:
        with triton_only():
            return _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale)
    hopper.ONE_PASS_BUFFERS, hopper.ONE_PASS_DQ_SLOTS[64] = VARIANTS[name]
    return hopper.swat_bwd_hopper(do, q, k, v, slopes, W, 0.0, scale, SIGMOID_MODE["bwd"], program_order(64, W),
                                  one_pass=True)


for seq_len, window in SHAPES:
    T, (q, k, v, do), slopes, scale = _inputs(64, int(seq_len), 65536)
    W = T if window == "T" else int(window)
    want = backward("Triton backward", q, k, v, do, slopes, W, scale)
    differs = {}
    for name in VARIANTS:
        got = backward(name, q, k, v, do, slopes, W, scale)
        errors = {f"err_{n}": _largest_value_error(a, b) for n, a, b in zip(("dq", "dk", "dv"), got, want)}
        differs[name] = max(errors.values()) > 2e-2
        write(dict(d=64, T=T, W=W, variant=f"{name} against the Triton backward", **errors))
    if W == T:  # SDPA is a peer of full causal attention only
        sdpa = sdpa_backward(q, k, v, do)
    for rep in range(3):
        for name in VARIANTS:
            ms, note = (None, "differs from the Triton backward") if differs[name] else \
                _time(lambda: backward(name, q, k, v, do, slopes, W, scale))
            write(dict(d=64, T=T, W=W, variant=name, rep=rep, bwd_ms=ms, note=note))
        if W == T:
            ms, note = _time(sdpa)
            write(dict(d=64, T=T, W=W, variant="sdpa backward", rep=rep, bwd_ms=ms, note=note))
