"""Registers, stack (where spills go) and shared memory of the decode kernels at the dispatcher's
launch for every config, dtype and head size it accepts, compiled for sm_90 without a GPU: Triton
compiles to a cubin with the ptxas it ships, and cuobjdump (also shipped) reads the resource usage.

    python results/kernels/decode-dot/registers.py > registers-triton<version>.txt

Each config at a batch that takes it (W = 2048 slots, H = 8 query heads): "split" 1 sequence,
"dot" 8 (64 groups at REP 1; 32 sequences at REP 4), "whole" 38 (REP 1 and 4 alike). 255 registers
is the cap per thread; a program whose 256 threads take more than 255 spills to its stack."""
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from harness.ops.swat.function import HEAD_DIMS, SIGMOID_MODE, decode_config_name, decode_launch
from harness.ops.swat.triton_decode import swat_decode_dot_kernel, swat_decode_kernel

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
ELEM_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
PAIRS = {("split", 1): 8, ("split", 4): 8, ("dot", 1): 64, ("dot", 4): 256, ("whole", 1): 304, ("whole", 4): 304}


def resource_usage(kernel, launch: dict, dtype: str, head_dim: int, rep: int) -> dict:
    """The kernel compiled for sm_90 at the launch: registers, stack bytes and shared memory bytes."""
    pointers = {"Q": f"*{dtype}", "KC": f"*{dtype}", "VC": f"*{dtype}", "O": "*fp32", "Final": f"*{dtype}",
                "Arrived": "*i32", "Slopes": "*fp32"}
    options = {"num_warps": launch.pop("num_warps")}
    sigmoid = SIGMOID_MODE["decode"] if ELEM_BYTES[dtype] == 2 else 0
    constants = dict(launch, REP=rep, HEAD_DIM=head_dim, SIGMOID=sigmoid)
    args = [a for a in kernel.arg_names if a not in constants]
    signature = {a: pointers.get(a, "fp32" if a in ("scale", "bias") else "i32") for a in args}
    attrs = {(kernel.arg_names.index(a),): [["tt.divisibility", 16]] for a in args if a in pointers or a[0] == "s"}
    compiled = triton.compile(ASTSource(kernel, signature={**signature, **dict.fromkeys(constants, "constexpr")},
                                        constexprs=constants, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([CUOBJDUMP, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    # Triton's shared memory is dynamic, so the cubin's static SHARED does not count it; the metadata does
    return {**{key: int(re.search(rf"\b{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK")},
            "SHARED": compiled.metadata.shared}


print(f"triton {triton.__version__}, sm_90, W = 2048", flush=True)
print("config dtype    d rep  pairs  BLOCK_W  registers  stack  shared")
for (config, rep), pairs in PAIRS.items():
    for dtype, elem_bytes in ELEM_BYTES.items():
        for head_dim in HEAD_DIMS:
            assert decode_config_name(pairs, rep) == config, (config, pairs, rep)
            launch = decode_launch(pairs, 2048, head_dim, elem_bytes, rep)
            dot = launch.pop("DOT")
            launch.pop("splits"), launch.pop("units")
            usage = resource_usage(swat_decode_dot_kernel if dot else swat_decode_kernel, dict(launch), dtype,
                                   head_dim, rep)
            print(f"{config:6s} {dtype:5s} {head_dim:4d} {rep:3d} {pairs:6d} {launch['BLOCK_W']:8d} "
                  f"{usage['REG']:10d} {usage['STACK']:6d} {usage['SHARED']:7d}", flush=True)
