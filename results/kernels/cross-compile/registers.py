"""The SWAT Triton kernels at every launch the dispatcher makes on a GPU of one target, compiled
for it without a GPU (harness/ops/swat/cross_compile.py), with registers, stack (where spills go)
and shared memory: sm_80 (an A100), what a GPU before Hopper gets, which no device machine lent to
this project is; sm_90 (an H100 or H200), where the forward at d = 128 from W = 512 and the
backward at d = 128 from W = 2048 and at d = 64 from W = 4096 run in hopper.py's Gluon passes
instead (the Triton passes listed there run for what those do not take: fp32 inputs, packed
documents, fewer key than query heads, views TMA cannot read, and d = 64's backward under
deterministic algorithms).
Before Hopper the backward at d = 64 past W = 2048 adds dQ by atomics, on Hopper by the copy
engine's bulk reduction.

    python results/kernels/cross-compile/registers.py ARCH > sm<ARCH>-triton<version>.txt

Each Triton pass (the dQ pass only where the backward runs it) at every dtype and head size the
dispatcher accepts, at a window of each tile regime (128 small, 512 medium, 4096 large), for a
length and window divisible by 16; then each decode config at W = 2048, REP 1. A launch whose
shared memory exceeds what a program may take on the target is refused when the kernel loads, and
the launch falls back to the first smaller config that fits (function.smaller_configs), listed
below it with "->". 255 registers a thread is the cap; past it a thread spills to its stack."""
import sys

import triton

from harness.ops.swat.cross_compile import (
    DECODE_PAIRS,
    DTYPES,
    SHARED_PER_BLOCK,
    compile_decode,
    compile_pass,
    config_launch,
    passes_run,
    resource_usage,
)
from harness.ops.swat.function import HEAD_DIMS, fused_dq, kernel_config, smaller_configs

ARCH = int(sys.argv[1])
LIMIT = SHARED_PER_BLOCK[ARCH]


def tiles(config: dict) -> str:
    return f"{config['BLOCK_M']}x{config['BLOCK_N']} w{config['num_warps']} s{config['num_stages']}"


def row(what: str, usage: dict) -> str:
    fits = "" if usage["SHARED"] <= LIMIT else "  refused"
    return f"{what:44s} {usage['REG']:9d} {usage['STACK']:6d} {usage['SHARED']:7d}{fits}"


print(f"triton {triton.__version__}, sm_{ARCH}, shared memory a program at most {LIMIT} B", flush=True)
print(f"{'launch':44s} registers  stack  shared")
for dtype in DTYPES:
    for head_dim in HEAD_DIMS:
        for window in (128, 512, 4096):
            fused = fused_dq(head_dim, window, None, compute_capability=ARCH // 10)  # the label's
            for pass_name in passes_run(head_dim, window, ARCH):
                config = kernel_config(pass_name, head_dim, window, DTYPES[dtype])
                usage = resource_usage(compile_pass(pass_name, dtype, head_dim, window, ARCH))
                label = f"{pass_name}{' +dQ ' + fused if pass_name == 'dkdv' and fused != 'off' else ''}"
                print(row(f"{label} {dtype} d={head_dim} W={window} {tiles(config)}", usage), flush=True)
                for smaller in smaller_configs(config) if usage["SHARED"] > LIMIT else ():
                    usage = resource_usage(compile_pass(pass_name, dtype, head_dim, window, ARCH, config=smaller))
                    print(row(f"  -> {tiles(smaller)}", usage), flush=True)
                    if usage["SHARED"] <= LIMIT:
                        break
for dtype, torch_dtype in DTYPES.items():
    for head_dim in HEAD_DIMS:
        for config in DECODE_PAIRS:
            launch = config_launch(config, 2048, head_dim, torch_dtype)
            usage = resource_usage(compile_decode(launch, dtype, head_dim, arch=ARCH))
            print(row(f"decode {config} {dtype} d={head_dim} BLOCK_W={launch['BLOCK_W']} w{launch['num_warps']}",
                      usage), flush=True)
