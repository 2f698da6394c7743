"""kernel.py's one-pass backward (dQ added into an fp32 buffer inside the dK/dV pass, 5 matrix
products per tile pair) against hopper.py's two passes (7 products; the harness's backward at
d = 128 from W = 2048), where SWAT's forward + backward trails SDPA (d = 128, W = T: 0.90x at
T = 4K, 0.97-0.99x at 16K and 32K on the H100, `../nvidia-h100-80gb-hbm3/kernels.md` at 946ab1f),
and at W = 2048. First each shape's one-pass gradients against the two passes' (max |difference|
over the largest value); then the whole backward, each variant twice, alternating, beside SDPA's
backward (causal, its own kernels, W = T only). The peer bench's shapes: B * T = 65536, H = 8, bf16,
sigmoid bias 0, the harness's sigmoid mode and program order.

    python results/kernels/one-pass/probe.py OUT.jsonl
"""
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import kernel  # noqa: E402  (this folder's one-pass kernel)

from harness.bench.tune import _inputs, _time  # noqa: E402
from harness.ops.swat import hopper  # noqa: E402
from harness.ops.swat.function import SIGMOID_MODE, program_order  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/probe.py", *sys.argv[1:]]), echo=True)
SHAPES = [(4096, "T"), (16384, "T"), (32768, "T"), (16384, 2048)]
# name: the one pass's tiles (queries, keys), its ring slots of q and dO, each group's dQ staging slots
# and kernel.SERIAL (None: hopper.py's two passes)
VARIANTS = {"two passes (committed)": None,
            "one pass, 32-query tiles, pipelined": ((32, 128), 3, 2, False),
            "one pass, 32-query tiles, serial": ((32, 128), 3, 2, True),
            "one pass, 64-query tiles, serial": ((64, 128), 2, 1, True)}


def backward(name, q, k, v, do, slopes, W, scale):
    args = (do, q, k, v, slopes, W, 0.0, scale, SIGMOID_MODE["bwd"], program_order(128, W))
    if VARIANTS[name] is None:
        return hopper.swat_bwd_hopper(*args)
    kernel.TILES, kernel.NUM_BUFFERS, kernel.DQ_SLOTS, kernel.SERIAL = VARIANTS[name]
    return kernel.swat_bwd_hopper_one_pass(*args)


def emit(**row):
    write(row)


for seq_len, window in SHAPES:
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    W = T if window == "T" else window
    two = backward("two passes (committed)", q, k, v, do, slopes, W, scale)
    for name in list(VARIANTS)[1:]:
        one = backward(name, q, k, v, do, slopes, W, scale)
        emit(d=128, T=T, W=window, variant=f"{name} against two passes",
             **{f"err_{n}": ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                for n, a, b in zip(("dq", "dk", "dv"), one, two)})
    sdpa = None
    if window == "T":  # SDPA's backward alone: its graph kept, the gradients asked again
        qs, ks, vs = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
        sdpa = lambda: torch.autograd.grad(o, (qs, ks, vs), do.transpose(1, 2), retain_graph=True)  # noqa: E731
    for rep in range(2):
        for name in VARIANTS:
            ms, note = _time(lambda: backward(name, q, k, v, do, slopes, W, scale))
            emit(d=128, T=T, W=window, variant=name, rep=rep, bwd_ms=ms, note=note)
        if sdpa is not None:
            ms, note = _time(sdpa)
            emit(d=128, T=T, W=window, variant="sdpa backward", rep=rep, bwd_ms=ms, note=note)
