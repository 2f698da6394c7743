"""gluon_swat.py against the plain-torch reference (harness/ops/swat/reference.py and autograd) on a
GPU, at shapes that reach its edge cases: lengths that are not a multiple of the tiles, windows
smaller than one tile and past T, several sequences (tiles reaching into a neighbour's rows),
d = 64 and 128, bf16 and fp16: the forward with and without PIPELINE, the ping-pong forward over
64-key tiles (3 slots) and 128-key tiles (2 slots), dq, dk, dv, and dq, dk, dv from the ping-pong
dQ and dK/dV passes (3 slots, dK/dV over 32 queries x 128 keys). One line per case; exit status 1
if any is off.

    python results/kernels/ws-probe/gluon_check.py
"""
import itertools
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(os.path.dirname(HERE)))]  # the probe, the repository
from gluon_swat import swat_bwd_gluon, swat_fwd_gluon  # noqa: E402

from harness.ops.alibi import alibi_slopes  # noqa: E402
from harness.ops.swat.reference import swat_attention_ref  # noqa: E402

SHAPES = [(1, 3000, 2, 100), (2, 1000, 3, 1000), (2, 777, 2, 5000), (1, 4096, 4, 512), (3, 200, 1, 64)]  # B, T, H, W
worst = 0.0


def relative(got, want):
    return ((got.float() - want).abs().max() / want.abs().max()).item()


for (B, T, H, W), d, dtype in itertools.product(SHAPES, (64, 128), (torch.bfloat16, torch.float16)):
    g = torch.Generator().manual_seed(B * T + H + W + d)
    q, k, v, do = (torch.randn(B, T, H, d, generator=g).to("cuda", dtype) for _ in range(4))
    slopes = alibi_slopes(H, "balanced").to("cuda").float().contiguous()
    scale = 1 / math.sqrt(d)
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    ref = swat_attention_ref(*leaves, slopes, W)
    ref.backward(do.float())
    errors = {f"fwd pipeline={pipeline}": relative(swat_fwd_gluon(q, k, v, slopes, W, scale, pipeline=pipeline), ref)
              for pipeline in (False, True)}
    for block_n, buffers in ((64, 3), (128, 2)):
        errors[f"fwd pingpong {block_n}"] = relative(
            swat_fwd_gluon(q, k, v, slopes, W, scale, block_n=block_n, num_buffers=buffers, pingpong=True), ref)
    for name, got, leaf in zip(("dq", "dk", "dv"), swat_bwd_gluon(do, q, k, v, slopes, W, scale), leaves):
        errors[name] = relative(got, leaf.grad)
    grads = swat_bwd_gluon(do, q, k, v, slopes, W, scale, dkdv_tiles=(32, 128), num_buffers=3, pingpong=("dq", "dkdv"))
    for name, got, leaf in zip(("dq", "dk", "dv"), grads, leaves):
        errors[f"{name} pingpong"] = relative(got, leaf.grad)
    torch.cuda.synchronize()
    worst = max(worst, *errors.values())
    print(f"B={B} T={T} H={H} W={W} d={d} {str(dtype)[6:]}: max error / max |ref| "
          + ", ".join(f"{name} {err:.1e}" for name, err in errors.items()), flush=True)
print(f"worst {worst:.1e}: {'ok' if worst < 1e-2 else 'OFF'}")
sys.exit(0 if worst < 1e-2 else 1)
