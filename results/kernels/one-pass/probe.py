"""hopper.py's backward in one pass (swat_bwd_hopper_one_pass: dQ added into an fp32 buffer inside
the dK/dV pass, 5 matrix products per tile pair) against its two passes (7 products; the committed
backward at d = 128 from W = 2048), where SWAT's forward + backward trails SDPA (d = 128, W = T:
0.90x at T = 4K, 0.97-0.99x at 16K and 32K on the H100, `../nvidia-h100-80gb-hbm3/kernels.md` at
946ab1f), and at W = 2048. First each shape's one-pass gradients against the two passes' (max
|difference| over the largest value); then the whole backward, each variant twice, alternating,
beside SDPA's backward (causal, its own kernels, W = T only). The peer bench's shapes: B * T =
65536, H = 8, bf16, bias 0.

    python results/kernels/one-pass/probe.py OUT.jsonl
"""
import contextlib
import json
import shlex
import sys

import torch
import torch.nn.functional as F

from harness.bench.tune import _inputs, _time
from harness.ops.swat import hopper
from harness.ops.swat.function import _swat_bwd, override_hopper_one_pass
from harness.results.provenance import stamped_row_writer

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/probe.py", *sys.argv[1:]]))
SHAPES = [(4096, "T"), (16384, "T"), (32768, "T"), (16384, 2048)]
# name: (one pass, its query tile, its ring slots)
VARIANTS = {"two passes (committed)": (False, None, None), "one pass, 32 queries, 3 slots": (True, 32, 3),
            "one pass, 32 queries, 2 slots": (True, 32, 2)}


@contextlib.contextmanager
def variant(name):
    one_pass, block_m, slots = VARIANTS[name]
    saved = hopper.TILES["one_pass"], hopper.ONE_PASS_BUFFERS
    if one_pass:
        hopper.TILES["one_pass"], hopper.ONE_PASS_BUFFERS = (block_m, 128), slots
    try:
        with override_hopper_one_pass({128: one_pass}):
            yield
    finally:
        hopper.TILES["one_pass"], hopper.ONE_PASS_BUFFERS = saved


def backward(name, q, k, v, do, slopes, W, scale):
    with variant(name):
        return _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale)


for seq_len, window in SHAPES:
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    W = T if window == "T" else window
    two = backward("two passes (committed)", q, k, v, do, slopes, W, scale)
    for name in list(VARIANTS)[1:]:
        one = backward(name, q, k, v, do, slopes, W, scale)
        err = {f"err_{n}": ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
               for n, a, b in zip(("dq", "dk", "dv"), one, two)}
        row = dict(d=128, T=T, W=window, variant=f"{name} against two passes", **err)
        print(json.dumps(row), flush=True)
        write(row)
    sdpa = None
    if window == "T":  # SDPA's backward alone: its graph kept, the gradients asked again
        qs, ks, vs = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
        dos = do.transpose(1, 2)
        sdpa = lambda: torch.autograd.grad(o, (qs, ks, vs), dos, retain_graph=True)  # noqa: E731
    for rep in range(2):
        for name in VARIANTS:
            ms, note = _time(lambda: backward(name, q, k, v, do, slopes, W, scale))
            row = dict(d=128, T=T, W=window, variant=name, rep=rep, bwd_ms=ms, note=note)
            print(json.dumps(row), flush=True)
            write(row)
        if sdpa is not None:
            ms, note = _time(sdpa)
            row = dict(d=128, T=T, W=window, variant="sdpa backward", rep=rep, bwd_ms=ms, note=note)
            print(json.dumps(row), flush=True)
            write(row)
