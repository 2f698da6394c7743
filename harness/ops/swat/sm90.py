"""The decode kernel a `decode_launch` names, compiled for sm_90 on any machine: Triton ships ptxas
(and cuobjdump), so a CPU-only checkout can tell whether a launch builds for a Hopper GPU, how its
slot loop is pipelined, and what registers, stack (where spills go) and shared memory it takes.
For the tests' compile fixture and results/kernels/decode-dot/registers.py; the dispatcher never
imports it."""
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from harness.ops.swat.function import SIGMOID_MODE
from harness.ops.swat.triton_decode import swat_decode_dot_kernel, swat_decode_kernel

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_decode_for_sm90(launch: dict, dtype: str = "bf16", head_dim: int = 128, rep: int = 1):
    """The kernel of decode_launch's dict compiled for sm_90 at that launch, for dtype ("bf16",
    "fp16", "fp32") inputs, with the sigmoid the dispatcher gives them and the launcher's
    specialization at aligned shapes (pointers and strides divisible by 16)."""
    launch = dict(launch)
    kernel = swat_decode_dot_kernel if launch.pop("DOT") else swat_decode_kernel
    launch.pop("splits"), launch.pop("units")
    options = {"num_warps": launch.pop("num_warps")}
    constants = dict(launch, REP=rep, HEAD_DIM=head_dim, SIGMOID=0 if dtype == "fp32" else SIGMOID_MODE["decode"])
    pointers = {"Q": f"*{dtype}", "KC": f"*{dtype}", "VC": f"*{dtype}", "O": "*fp32", "Final": f"*{dtype}",
                "Arrived": "*i32", "Slopes": "*fp32"}
    args = [a for a in kernel.arg_names if a not in constants]
    signature = {a: pointers.get(a, "fp32" if a in ("scale", "bias") else "i32") for a in args}
    attrs = {(kernel.arg_names.index(a),): [["tt.divisibility", 16]] for a in args if a in pointers or a[0] == "s"}
    return triton.compile(ASTSource(kernel, signature={**signature, **dict.fromkeys(constants, "constexpr")},
                                    constexprs=constants, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32), options=options)


def resource_usage(compiled) -> dict:
    """A compiled kernel's registers a thread (REG), stack bytes a thread (STACK: its spills) from
    its cubin, and shared memory (SHARED) from Triton's metadata: Triton's shared memory is
    dynamic, so the cubin's static count does not hold it."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([CUOBJDUMP, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    return {**{key: int(re.search(rf"\b{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK")},
            "SHARED": compiled.metadata.shared}
