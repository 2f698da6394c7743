"""Registers, stack (where spills go) and shared memory of the decode kernels at the dispatcher's
launch for every config, dtype and head size it accepts, compiled for sm_90 without a GPU
(harness/ops/swat/cross_compile.py).

    python results/kernels/decode-dot/registers.py > registers-triton<version>.txt

Each config at a batch that takes it (W = 2048 slots, H = 8 query heads): "split" 1 sequence,
"dot" 8 (64 groups at REP 1; 32 sequences at REP 4), "whole" 38 (REP 1 and 4 alike). 255 registers
is the cap per thread; a program whose 256 threads take more than 255 spills to its stack."""
import triton

from harness.ops.swat.cross_compile import DTYPES, compile_decode, resource_usage
from harness.ops.swat.function import HEAD_DIMS, decode_config_name, decode_launch

PAIRS = {("split", 1): 8, ("split", 4): 8, ("dot", 1): 64, ("dot", 4): 256, ("whole", 1): 304, ("whole", 4): 304}

print(f"triton {triton.__version__}, sm_90, W = 2048", flush=True)
print("config dtype    d rep  pairs  BLOCK_W  registers  stack  shared")
for (config, rep), pairs in PAIRS.items():
    for dtype, torch_dtype in DTYPES.items():
        for head_dim in HEAD_DIMS:
            assert decode_config_name(pairs, rep) == config, (config, pairs, rep)
            launch = decode_launch(pairs, 2048, head_dim, torch_dtype, rep)
            usage = resource_usage(compile_decode(launch, dtype, head_dim, rep))
            print(f"{config:6s} {dtype:5s} {head_dim:4d} {rep:3d} {pairs:6d} {launch['BLOCK_W']:8d} "
                  f"{usage['REG']:10d} {usage['STACK']:6d} {usage['SHARED']:7d}", flush=True)
