"""Compile the probe's kernels for sm_90 without a GPU and say, per config, whether Triton's Hopper
warp specialization applied (a `ttg.warp_specialize` op in the TTGIR), the warps and shared memory
it took, and ptxas's registers and spills; then the same for gluon_swat.py's hand-specialized
forward, dQ and dK/dV kernels, with the register split their partitions got (`setmaxnreg`).

    PYTHONPATH=<triton 3.6 unpacked>:. python results/kernels/ws-probe/compile_sm90.py

(the device's Triton is 3.6: `pip download triton==3.6.0 --no-deps` and unzip the wheel; ptxas comes
with it)."""
import os
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(os.path.dirname(HERE)))]  # the probe, the repository
from gluon_swat import swat_dkdv_gluon_kernel, swat_query_gluon_kernel  # noqa: E402
from kernels import dkdv_kernel, query_block_kernel  # noqa: E402

from harness.ops.swat.hopper import descriptor, swat_dkdv_pingpong_kernel, swat_query_pingpong_kernel  # noqa: E402

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
COMMON = {"Slopes": "*fp32", "T": "i32", "H": "i32", "W": "i32", "neg_c": "fp32", "neg_bias": "fp32",
          "scale": "fp32"}
GLUON_COMMON = {"Slopes": "*fp32", "T": "i32", "H": "i32", "W": "i32", "bias": "fp32", "scale": "fp32"}


def probe_descriptors(bm, bn, d):
    return {"Qd": f"tensordesc<bf16[1,{bm},{d}]>", "Kd": f"tensordesc<bf16[1,{bn},{d}]>",
            "Vd": f"tensordesc<bf16[1,{bn},{d}]>", "DOd": f"tensordesc<bf16[1,{bm},{d}]>"}


def report(name, fn, signature, constants, warps=4, stages=2, source=ASTSource, maxnreg=None):
    src = source(fn, signature={**signature, **{c: "constexpr" for c in constants}}, constexprs=constants)
    label = f"{name} d={constants['HEAD_DIM']} {constants['BLOCK_M']}x{constants['BLOCK_N']} " + (
        f"ws={constants['WS']}" if "WS" in constants else
        f"buffers={constants['NUM_BUFFERS']} pipeline={constants.get('PIPELINE', False)}")
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": warps, "num_stages": stages, "maxnreg": maxnreg})
    except Exception as err:  # noqa: BLE001
        print(f"{label}: compile failed ({[x for x in str(err).splitlines() if x.strip()][-1][:120]})", flush=True)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        info = subprocess.run([PTXAS, "-v", "--gpu-name=sm_90a", ptx.name, "-o", os.devnull],
                              capture_output=True, text=True).stderr
    used = [x.split(":", 1)[-1].strip() for x in info.splitlines() if "Used" in x or "spill" in x]
    split = sorted({int(x.split()[-1].rstrip(";")) for x in compiled.asm["ptx"].splitlines() if "setmaxnreg" in x})
    print(f"{label}: warp-specialized {'ttg.warp_specialize' in compiled.asm['ttgir']}, "
          f"{compiled.metadata.num_warps} warps, {compiled.metadata.shared} B shared; {'; '.join(used)}"
          + (f"; setmaxnreg {split}" if split else ""), flush=True)


print("triton", triton.__version__)
for d in (64, 128):
    for ws in (True, False):
        for bm, bn in ((128, 64), (128, 128)):
            for dq in (False, True):
                sig = {**probe_descriptors(bm, bn, d), "Out": "*bf16", **COMMON, "so_b": "i32", "so_t": "i32",
                       "so_h": "i32"}
                report("dq" if dq else "fwd", query_block_kernel, sig,
                       dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, SIGMOID=1 if dq else 2, WS=ws, DQ=dq))
        for bm, bn in ((64, 128), (32, 128), (128, 128), (64, 64)):
            sig = {**probe_descriptors(bm, bn, d), "DK": "*bf16", "DV": "*bf16", **COMMON, "s_b": "i32", "s_t": "i32",
                   "s_h": "i32"}
            report("dkdv", dkdv_kernel, sig, dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, SIGMOID=1, WS=ws))

GLUON = [("gluon fwd", (128, 64), 2, False), ("gluon fwd", (128, 64), 3, False), ("gluon fwd", (128, 128), 2, False),
         ("gluon fwd", (128, 64), 2, True), ("gluon fwd", (128, 64), 3, True), ("gluon fwd", (128, 128), 2, True),
         ("gluon dq", (128, 64), 2, False), ("gluon dkdv", (64, 128), 2, False), ("gluon dkdv", (64, 64), 2, False),
         ("gluon fwd pingpong", (128, 64), 2, False), ("gluon fwd pingpong", (128, 64), 3, False),
         ("gluon fwd pingpong", (128, 128), 2, False), ("gluon dq pingpong", (128, 64), 2, False),
         ("gluon dq pingpong", (128, 64), 3, False), ("gluon dkdv pingpong", (64, 128), 3, False),
         ("gluon dkdv pingpong", (32, 128), 3, False)]
for d in (64, 128):
    for name, (bm, bn), buffers, pipeline in GLUON:
        t = torch.empty(1, 256, 2, d, dtype=torch.bfloat16)
        descs = {arg: mangle_type(descriptor(t, rows))
                 for arg, rows in (("q_desc", bm), ("k_desc", bn), ("v_desc", bn), ("do_desc", bm))}
        constants = dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_BUFFERS=buffers, SIGMOID=1 if "fwd" not in name else 2)
        pingpong = name.endswith("pingpong")
        if pingpong:  # two partitions of 4 warps, each with half of the block's keys (dK/dV) or rows
            halved, rows = (("k_desc", "v_desc"), bn) if "dkdv" in name else (("q_desc", "do_desc"), bm)
            descs.update({arg: mangle_type(descriptor(t, rows // 2)) for arg in halved})
            constants["ORDER"] = "pairs"  # the harness's program order (band_program)
        if "dkdv" in name:
            kernel = swat_dkdv_pingpong_kernel if pingpong else swat_dkdv_gluon_kernel
            sig = {**descs, "DK": "*bf16", "DV": "*bf16", **GLUON_COMMON, "s_b": "i32", "s_t": "i32", "s_h": "i32"}
        else:
            kernel = swat_query_pingpong_kernel if pingpong else swat_query_gluon_kernel
            sig = {**descs, "Out": "*bf16", **GLUON_COMMON, "so_b": "i32", "so_t": "i32", "so_h": "i32"}
            constants.update(DQ="dq" in name, **({} if pingpong else {"PIPELINE": pipeline}))
        warps = 4 if pingpong else 8
        report(name, kernel, sig, dict(constants, num_warps=warps), warps=warps, source=GluonASTSource,
               maxnreg=168)
