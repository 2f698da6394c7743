"""What the first fp32 call at a shape costs before it runs: the Triton passes compiled for sm_90
without a GPU (ptxas comes with Triton), each pass's configured launch and then `smaller_configs` in
the dispatcher's order until one fits a Hopper SM's 227 KiB of shared memory, with each candidate's
shared memory and compile time. A refused candidate costs a whole compile, as it does on the GPU,
where Triton refuses the config only when it loads the compiled kernel.

    python results/kernels/fp32-compile/compile.py [HEAD_DIM=128] [REGIME=large] [DTYPE=fp32]

The GPU test of every dtype and head size (full causal, W = T = 3000) did not finish fp32 at
d = 128 in 130 s on an H100 (NOTES.md v17); this says where that time goes."""
import sys
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from harness.ops.swat.function import CONFIGS, smaller_configs
from harness.ops.swat.triton_bwd import swat_bwd_dkdv_kernel, swat_bwd_dq_kernel
from harness.ops.swat.triton_fwd import swat_fwd_kernel

print(f"triton {triton.__version__}, sm_90, {' '.join(sys.argv[1:]) or 'defaults'}", flush=True)
d = int(sys.argv[1]) if len(sys.argv) > 1 else 128
regime = sys.argv[2] if len(sys.argv) > 2 else "large"
dtype = sys.argv[3] if len(sys.argv) > 3 else "fp32"
LIMIT = 227 * 1024
PASSES = {"fwd": (swat_fwd_kernel, {}), "dkdv": (swat_bwd_dkdv_kernel, {"FUSED_DQ": "off"}),
          "dq": (swat_bwd_dq_kernel, {})}
for name, (kernel, extra) in PASSES.items():
    total = 0.0
    for cfg in [CONFIGS[(name, d, regime)], *smaller_configs(CONFIGS[(name, d, regime)])]:
        run = dict(cfg)
        warps, stages = run.pop("num_warps"), run.pop("num_stages")
        constants = dict(REP=2, HAS_DOC=False, HEAD_DIM=d, SIGMOID=0, DOT_PREC="ieee" if dtype == "fp32" else "tf32",
                         ORDER="pairs", **run, **extra)
        args = [a for a in kernel.arg_names if a not in constants]
        pointers = next(i for i, a in enumerate(args) if a.startswith("s"))  # the tensors come before their strides
        sig = {a: (f"*{dtype}" if i < pointers else "fp32" if a in ("scale", "bias") else "i32")
               for i, a in enumerate(args)}
        sig["Slopes"] = "*fp32"
        sig.update({c: "constexpr" for c in constants})
        t0 = time.time()
        compiled = triton.compile(ASTSource(kernel, signature=sig, constexprs=constants),
                                  target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
        took = time.time() - t0
        total += took
        fits = compiled.metadata.shared <= LIMIT
        print(f"{name} {cfg['BLOCK_M']}x{cfg['BLOCK_N']} w{warps} s{stages}: {compiled.metadata.shared} B shared, "
              f"compiled in {took:.1f} s, {'fits' if fits else 'refused'}", flush=True)
        if fits:
            break
    print(f"{name}: {total:.1f} s of compiling", flush=True)
