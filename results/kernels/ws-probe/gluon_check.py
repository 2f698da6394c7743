"""gluon_fwd.py against the plain-torch reference (harness/ops/swat/reference.py) on a GPU, at shapes
that reach its edge cases: lengths that are not a multiple of the tiles, windows smaller than one
tile and past T, several sequences (tiles reaching into a neighbour's rows), d = 64 and 128, bf16
and fp16, with and without PIPELINE. One line per case; exit status 1 if any is off.

    python results/kernels/ws-probe/gluon_check.py
"""
import itertools
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(os.path.dirname(HERE)))]  # the probe, the repository
from gluon_fwd import swat_fwd_gluon  # noqa: E402

from harness.ops.alibi import alibi_slopes  # noqa: E402
from harness.ops.swat.reference import swat_attention_ref  # noqa: E402

SHAPES = [(1, 3000, 2, 100), (2, 1000, 3, 1000), (2, 777, 2, 5000), (1, 4096, 4, 512), (3, 200, 1, 64)]  # B, T, H, W
worst = 0.0
for (B, T, H, W), d, dtype, pipeline in itertools.product(SHAPES, (64, 128), (torch.bfloat16, torch.float16),
                                                          (False, True)):
    g = torch.Generator().manual_seed(B * T + H + W + d)
    q, k, v = (torch.randn(B, T, H, d, generator=g).to("cuda", dtype) for _ in range(3))
    slopes = alibi_slopes(H, "balanced").to("cuda").float().contiguous()
    scale = 1 / math.sqrt(d)
    ref = swat_attention_ref(q.float(), k.float(), v.float(), slopes, W)
    out = swat_fwd_gluon(q, k, v, slopes, W, scale, pipeline=pipeline).float()
    torch.cuda.synchronize()
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    worst = max(worst, err)
    print(f"B={B} T={T} H={H} W={W} d={d} {str(dtype)[6:]} pipeline={pipeline}: max error / max |ref| = {err:.1e}",
          flush=True)
print(f"worst {worst:.1e}: {'ok' if worst < 1e-2 else 'OFF'}")
sys.exit(0 if worst < 1e-2 else 1)
