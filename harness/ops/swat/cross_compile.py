"""The SWAT Triton kernels compiled for a named GPU target on any machine: Triton ships ptxas (and
cuobjdump), so a CPU-only checkout can tell whether the launches the dispatcher makes build for a
Hopper (sm_90) or an Ampere (sm_80) GPU, how their loops are pipelined, and what registers, stack
(where spills go) and shared memory they take. The device machines lent to this project are all
Hopper, so this is the only way the pre-Hopper launches (FUSED_DQ's "atomics" in place of "tma", no
Gluon passes) are ever built here. For the tests' compile fixtures and the listings under
results/kernels/; the dispatcher never imports it."""
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from harness.ops.swat.function import (
    decode_config_name,
    decode_launch,
    fused_dq,
    gpu_dot_precision,
    gpu_sigmoid_mode,
    kernel_config,
    program_order,
)
from harness.ops.swat.triton_bwd import swat_bwd_dkdv_kernel, swat_bwd_dq_kernel
from harness.ops.swat.triton_common import LAUNCH_OPTIONS
from harness.ops.swat.triton_decode import swat_decode_dot_kernel, swat_decode_kernel
from harness.ops.swat.triton_fwd import swat_fwd_kernel

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
# shared memory a program may take (the opt-in limit per block), bytes: A100 (sm_80), H100/H200 (sm_90)
SHARED_PER_BLOCK = {80: 163 * 1024, 90: 227 * 1024}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FLOATS = ("scale", "bias")  # the kernels' float arguments
PASS_KERNELS = {"fwd": swat_fwd_kernel, "dkdv": swat_bwd_dkdv_kernel, "dq": swat_bwd_dq_kernel}
DECODE_PAIRS = {"split": 8, "dot": 64, "whole": 304}  # (sequence, head) pairs of a step each decode config takes


def _compile(kernel, pointers: dict, constants: dict, options: dict, arch: int, aligned=()):
    """kernel compiled for sm_<arch> with its pointer arguments typed by `pointers`, the rest i32
    (fp32 for scale and bias), as the launcher specializes a launch whose pointers, strides (the
    arguments named s...) and the integers in `aligned` are divisible by 16."""
    args = [a for a in kernel.arg_names if a not in constants]
    signature = {a: pointers.get(a, "fp32" if a in FLOATS else "i32") for a in args}
    attrs = {(kernel.arg_names.index(a),): [["tt.divisibility", 16]]
             for a in args if a in pointers or (a[0] == "s" and a not in FLOATS) or a in aligned}
    return triton.compile(ASTSource(kernel, signature={**signature, **dict.fromkeys(constants, "constexpr")},
                                    constexprs=constants, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options={**options, **LAUNCH_OPTIONS})


def compile_decode(launch: dict, dtype: str = "bf16", head_dim: int = 128, rep: int = 1, arch: int = 90):
    """The decode kernel of decode_launch's dict compiled for sm_<arch> at that launch, for dtype
    ("bf16", "fp16", "fp32") inputs, with the sigmoid the dispatcher gives them."""
    launch = dict(launch)
    kernel = swat_decode_dot_kernel if launch.pop("DOT") else swat_decode_kernel
    launch.pop("splits"), launch.pop("units")
    options = {"num_warps": launch.pop("num_warps")}
    constants = dict(launch, REP=rep, HEAD_DIM=head_dim, SIGMOID=gpu_sigmoid_mode(DTYPES[dtype], "decode"))
    pointers = {"Q": f"*{dtype}", "KC": f"*{dtype}", "VC": f"*{dtype}", "O": "*fp32", "Final": f"*{dtype}",
                "Arrived": "*i32", "Slopes": "*fp32"}
    return _compile(kernel, pointers, constants, options, arch)


def config_launch(config: str, w_cache: int, head_dim: int, dtype: torch.dtype = torch.bfloat16) -> dict:
    """The dispatcher's decode launch for a step of DECODE_PAIRS[config] pairs (REP 1) over w_cache
    slots, which takes that config."""
    pairs = DECODE_PAIRS[config]
    assert decode_config_name(pairs) == config, (config, pairs)
    return decode_launch(pairs, w_cache, head_dim, dtype)


def compile_pass(pass_name: str, dtype: str, head_dim: int, window: int, arch: int = 90, rep: int = 1,
                 config: dict | None = None):
    """A Triton pass ("fwd", "dkdv", "dq") compiled for sm_<arch> at the launch the dispatcher makes
    for dtype inputs at this head size and window (its tile config, or `config` in its place; the
    sigmoid, dot precision, program order and FUSED_DQ it gives a GPU of that target), without
    packed documents, for a length and window divisible by 16. Where the Gluon passes would run on
    a Hopper GPU, this is the Triton pass that runs everywhere else."""
    torch_dtype = DTYPES[dtype]
    config = dict(config or kernel_config(pass_name, head_dim, window, torch_dtype))
    options = {"num_warps": config.pop("num_warps"), "num_stages": config.pop("num_stages")}
    constants = dict(config, REP=rep, HAS_DOC=False, HEAD_DIM=head_dim,
                     SIGMOID=gpu_sigmoid_mode(torch_dtype, "fwd" if pass_name == "fwd" else "bwd"),
                     DOT_PREC=gpu_dot_precision(torch_dtype), ORDER=program_order(head_dim, window))
    fused = fused_dq(head_dim, window, None, compute_capability=arch // 10)
    if pass_name == "dkdv":
        constants["FUSED_DQ"] = fused
    kernel = PASS_KERNELS[pass_name]
    pointers = {a: f"*{dtype}" for a in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ")}
    pointers.update(Slopes="*fp32", RowStart="*fp32", RowEnd="*fp32")  # without documents: the slopes stand in
    if fused != "off":
        pointers["DQ"] = "*fp32"  # the accumulator the dK/dV pass adds dQ into
    return _compile(kernel, pointers, constants, options, arch, aligned=("T", "W"))


def passes_run(head_dim: int, window: int, arch: int) -> tuple[str, ...]:
    """The Triton passes a training step launches at this shape on a GPU of sm_<arch>: no dQ pass
    where the dK/dV pass adds dQ (function.fused_dq)."""
    fused = fused_dq(head_dim, window, None, compute_capability=arch // 10)
    return ("fwd", "dkdv", "dq") if fused == "off" else ("fwd", "dkdv")


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
