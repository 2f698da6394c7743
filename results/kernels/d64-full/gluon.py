"""d = 64 at W = T: hopper.py's one-pass Gluon backward (FlashAttention-3's schedule: a load warp and
two compute warp groups taking turns on the tensor cores; at d = 64 each group adds dQ over its own
keys, hopper.dq_group_columns) against the committed Triton one pass (what the dispatcher runs
there) and SDPA's backward, at the peer bench's lengths (B * T = 65536, H = 16, bf16, bias 0), each
variant three times, alternating, in one process. First each Gluon variant's dQ, dK and dV against
the committed pass's (largest difference over the largest value); a variant that differs by more
than 2e-2 is not timed.

    python results/kernels/d64-full/gluon.py OUT.jsonl
"""
import shlex
import sys

import torch
import torch.nn.functional as F

from harness.bench.tune import _inputs, _largest_value_error, _time
from harness.ops.swat import hopper
from harness.ops.swat.function import SIGMOID_MODE, _swat_bwd, program_order
from harness.results.provenance import stamped_row_writer

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/d64-full/gluon.py", *sys.argv[1:]]), echo=True)
# name: the Gluon one pass's ring slots of q and dO and each group's dQ staging slots (None: committed)
VARIANTS = {"committed (Triton one pass)": None,
            "gluon one pass, 2 ring slots, 1 dQ slot": (2, 1),
            "gluon one pass, 3 ring slots, 1 dQ slot": (3, 1),
            "gluon one pass, 2 ring slots, 2 dQ slots": (2, 2)}


def backward(name, q, k, v, do, slopes, T, scale):
    if VARIANTS[name] is None:
        return _swat_bwd(do, q, k, v, slopes, None, None, T, 0.0, scale)
    hopper.ONE_PASS_BUFFERS, hopper.ONE_PASS_DQ_SLOTS = VARIANTS[name]
    return hopper.swat_bwd_hopper(do, q, k, v, slopes, T, 0.0, scale, SIGMOID_MODE["bwd"], program_order(64, T),
                                  one_pass=True)


for seq_len in (4096, 16384, 32768):
    T, (q, k, v, do), slopes, scale = _inputs(64, seq_len, 65536)
    want = backward("committed (Triton one pass)", q, k, v, do, slopes, T, scale)
    differs = {}
    for name in VARIANTS:
        got = backward(name, q, k, v, do, slopes, T, scale)
        errors = {f"err_{n}": _largest_value_error(a, b) for n, a, b in zip(("dq", "dk", "dv"), got, want)}
        differs[name] = max(errors.values()) > 2e-2
        write(dict(d=64, T=T, W=T, variant=f"{name} against committed", **errors))
    qs, ks, vs = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))
    o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
    sdpa = lambda: torch.autograd.grad(o, (qs, ks, vs), do.transpose(1, 2), retain_graph=True)  # noqa: E731
    for rep in range(3):
        for name in VARIANTS:
            ms, note = (None, "differs from committed") if differs[name] else \
                _time(lambda: backward(name, q, k, v, do, slopes, T, scale))
            write(dict(d=64, T=T, W=T, variant=name, rep=rep, bwd_ms=ms, note=note))
        ms, note = _time(sdpa)
        write(dict(d=64, T=T, W=T, variant="sdpa backward", rep=rep, bwd_ms=ms, note=note))
