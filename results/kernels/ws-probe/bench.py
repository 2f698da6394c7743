"""Time the probe's passes (kernels.py) beside the current kernels on a GPU, in one process on the
same bf16 inputs, and check their outputs against them (`err`: max abs difference over max abs).

    python results/kernels/ws-probe/bench.py OUT [WINDOWS=2048,T,512] [WS=1,0] [B,T=4,16384] [D=128,64]
                                             [PASSES=fwd,dq,dkdv,gluon]

Rows go to OUT/ws.jsonl as they are measured, each with its commit, device, date, command and
package versions: "current fwd" / "current bwd" (the whole backward, dK/dV + dQ) at each shape,
"sdpa fwd" / "sdpa fwd+bwd" (softmax, causal: the peer) at W = T, then one row per pass and config
(tiles, stages, warps, ws; "gluon fwd" and "gluon bwd": gluon_swat.py's hand-specialized forward,
with its K/V ring's buffers and whether it pipelines, "gluon fwd pingpong": the forward whose two
warp groups take turns at the tensor cores, and the backward, dQ + dK/dV, beside "current bwd",
with the passes in `pingpong` in turns)."""
import math
import os
import shlex
import sys
import time

import torch
import triton
from torch.nn.functional import scaled_dot_product_attention as sdpa
from triton.testing import do_bench
from triton.tools.tensor_descriptor import TensorDescriptor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(os.path.dirname(HERE)))]  # the probe, the repository
from gluon_swat import swat_bwd_gluon, swat_fwd_gluon  # noqa: E402
from kernels import dkdv_kernel, query_block_kernel  # noqa: E402

from harness.ops.alibi import alibi_slopes  # noqa: E402
from harness.ops.swat.function import _swat_bwd, _swat_fwd  # noqa: E402
from harness.ops.swat.triton_common import LOG2E  # noqa: E402
from harness.results.provenance import stamped_row_writer  # noqa: E402

windows = sys.argv[2].split(",") if len(sys.argv) > 2 else ["2048", "T", "512"]
WS_SET = [w == "1" for w in (sys.argv[3] if len(sys.argv) > 3 else "1,0").split(",")]
B, T = (int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "4,16384").split(","))
PASSES = (sys.argv[6] if len(sys.argv) > 6 else "fwd,dq,dkdv,gluon").split(",")
HEADS = [int(x) for x in (sys.argv[5] if len(sys.argv) > 5 else "128,64").split(",")]
T0 = time.time()
# every row says how to measure it again (HARNESS_COMMIT=<the commit sent> on the device tool)
write = stamped_row_writer(open(f"{sys.argv[1]}/ws.jsonl", "a"), "cuda",
                           shlex.join(["python3", "results/kernels/ws-probe/bench.py", *sys.argv[1:]]), echo=True)


def ms(fn):
    return do_bench(fn, warmup=25, rep=80, return_mode="median")


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


def emit(row):
    row["t"] = round(time.time() - T0, 1)
    write(row)


def measure(row, run, error):
    """Run once, check (`error` of what the run returned), time and emit the row; a launch that
    fails (out of shared memory, say) is a row with its error instead."""
    try:
        row["err"] = error(run())
        row["ms"] = ms(run)
    except Exception as e:  # noqa: BLE001
        row["fail"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:120]}"
    emit(row)


# (warp_specialize, warps) of the automatic-pass kernels: the pass needs 4 warps
LAUNCHES = [c for c in ((True, 4), (False, 4), (False, 8)) if c[0] in WS_SET]


print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
for d in HEADS:
    H = 1024 // d if B * T >= 65536 else 2
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(B, T, H, d, generator=g).to("cuda", torch.bfloat16) for _ in range(4))
    slopes = alibi_slopes(H, "balanced").to("cuda").float().contiguous()
    scale = 1 / math.sqrt(d)
    for wname in windows:
        W = T if wname == "T" else int(wname)
        ref_o = _swat_fwd(q, k, v, slopes, None, None, W, 0.0, scale)
        ref_dq, ref_dk, ref_dv = _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale)
        base = dict(d=d, W=wname)
        emit(dict(base, what="current fwd", ms=ms(lambda: _swat_fwd(q, k, v, slopes, None, None, W, 0.0, scale))))
        emit(dict(base, what="current bwd", ms=ms(lambda: _swat_bwd(do, q, k, v, slopes, None, None, W, 0.0, scale))))
        if W == T:  # the peer at full causal: softmax attention through SDPA (the backend torch picks), fwd, fwd + bwd
            qh, kh, vh = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))
            emit(dict(base, what="sdpa fwd", ms=ms(lambda: sdpa(qh, kh, vh, is_causal=True))))
            emit(dict(base, what="sdpa fwd+bwd",
                      ms=ms(lambda: torch.autograd.grad(sdpa(qh, kh, vh, is_causal=True), (qh, kh, vh),
                                                        do.transpose(1, 2)))))

        def desc(t, rows):
            return TensorDescriptor(t, [B, T, H * d], [T * H * d, H * d, 1], [1, rows, d])

        for dq_pass in [p == "dq" for p in PASSES if p in ("fwd", "dq")]:
            for bm, bn in ((128, 64), (128, 128)):
                for stages in (2, 3):
                    for ws, warps in LAUNCHES:
                        o = torch.empty_like(q)
                        args = (desc(q, bm), desc(k, bn), desc(v, bn), desc(do, bm), o, slopes, T, H, W,
                                -scale * LOG2E, 0.0, scale, *o.stride()[:3])
                        kw = dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, SIGMOID=1 if dq_pass else 2, WS=ws, DQ=dq_pass,
                                  num_warps=warps, num_stages=stages)
                        measure(dict(base, what="dq" if dq_pass else "fwd", bm=bm, bn=bn, stages=stages, ws=ws,
                                     warps=warps),
                                lambda: query_block_kernel[(B * H, triton.cdiv(T, bm))](*args, **kw),
                                lambda _: rel(o, ref_dq if dq_pass else ref_o))
        for bn, buffers, pipeline in ((64, 2, False), (64, 3, False), (64, 2, True), (64, 3, True), (128, 2, False),
                                      (128, 2, True)) \
                if "gluon" in PASSES else ():
            measure(dict(base, what="gluon fwd", bm=128, bn=bn, buffers=buffers, pipeline=pipeline, warps=8, ws=True),
                    lambda: swat_fwd_gluon(q, k, v, slopes, W, scale, 128, bn, buffers, pipeline),
                    lambda o: rel(o, ref_o))
        for bn, buffers in ((64, 2), (64, 3), (128, 2)) if "gluon" in PASSES else ():
            measure(dict(base, what="gluon fwd pingpong", bm=128, bn=bn, buffers=buffers, warps=8, ws=True),
                    lambda: swat_fwd_gluon(q, k, v, slopes, W, scale, 128, bn, buffers, pingpong=True),
                    lambda o: rel(o, ref_o))
        for dkdv_tiles, buffers, pingpong in (((64, 128), 2, ()), ((64, 64), 2, ()), ((64, 128), 3, ("dq",)),
                                              ((64, 128), 3, ("dkdv",)), ((32, 128), 3, ("dkdv",)),
                                              ((32, 128), 3, ("dq", "dkdv"))) if "gluon" in PASSES else ():
            measure(dict(base, what="gluon bwd", pingpong=list(pingpong), dq_tiles=[128, 64],
                         dkdv_tiles=list(dkdv_tiles), buffers=buffers, warps=8, ws=True),
                    lambda: swat_bwd_gluon(do, q, k, v, slopes, W, scale, (128, 64), dkdv_tiles, buffers,
                                           pingpong=pingpong),
                    lambda grads: max(rel(got, want) for got, want in zip(grads, (ref_dq, ref_dk, ref_dv))))
        for bm, bn in ((64, 128), (32, 128), (128, 128), (64, 64)) if "dkdv" in PASSES else ():
            for stages in (2, 3):
                for ws, warps in LAUNCHES:
                    dk, dv = torch.empty_like(k), torch.empty_like(v)
                    args = (desc(q, bm), desc(k, bn), desc(v, bn), desc(do, bm), dk, dv, slopes, T, H, W,
                            -scale * LOG2E, 0.0, scale, *dk.stride()[:3])
                    kw = dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, SIGMOID=1, WS=ws, num_warps=warps,
                              num_stages=stages)
                    measure(dict(base, what="dkdv", bm=bm, bn=bn, stages=stages, ws=ws, warps=warps),
                            lambda: dkdv_kernel[(B * H, triton.cdiv(T, bn))](*args, **kw),
                            lambda _: max(rel(dk, ref_dk), rel(dv, ref_dv)))
