"""The SWAT step's host time through the custom ops (every call before b19265e) and through the
plain autograd.Function that eager calls now take, side by side in one process, alternating.

The step is the one the peer bench times: the forward, then the gradients of q, k and v against a
fixed output gradient. On a GPU (bf16, B * T = 65536, H * d = 1024, W = 128 and 512, the bench's
lengths), per path and round: the step's median time (do_bench) and the host's time to enqueue one
step (20 steps, no synchronisation between them). Without a GPU, under TRITON_INTERPRET=1 (which
it sets), the kernel launches are patched out and only the host's time per step is measured, on
tiny tensors, beside a trivial autograd step (the engine's own cost).

    python results/kernels/host-dispatch/probe.py OUT.jsonl
"""
import json
import os
import shlex
import sys
import time
from unittest import mock

import torch

CUDA = torch.cuda.is_available()
if not CUDA:  # before anything imports triton, which reads it once
    os.environ.setdefault("TRITON_INTERPRET", "1")

from harness.ops.alibi import alibi_slopes  # noqa: E402
from harness.ops.swat import function as fn_mod  # noqa: E402
from harness.results.provenance import provenance, versions  # noqa: E402

out = open(sys.argv[1], "w")
made = {**provenance("cuda" if CUDA else "cpu",
                     shlex.join(["python", "results/kernels/host-dispatch/probe.py", *sys.argv[1:]])),
        "versions": versions()}


def emit(**row):
    print(json.dumps(row), flush=True)
    out.write(json.dumps({**row, **made}) + "\n")
    out.flush()


def paths():
    """(name, context) per path: the custom ops as every call took them, or the eager Function."""
    return (("custom op", mock.patch.object(fn_mod, "_untraced", lambda *tensors: False)),
            ("function", mock.patch.object(fn_mod, "_untraced", fn_mod._untraced)))


def host_ms(step, n: int) -> float:
    """The host's time per step over n steps enqueued back to back."""
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    ms = (time.perf_counter() - t0) / n * 1e3
    if CUDA:
        torch.cuda.synchronize()
    return ms


def make_step(d: int, seq_len: int, tokens: int, window: int, device: str, dtype: torch.dtype):
    H, B = 1024 // d, max(tokens // seq_len, 1)
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, do = (torch.randn(B, seq_len, H, d, generator=gen).to(device, dtype) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    slopes = alibi_slopes(H).to(device)
    return lambda: torch.autograd.grad(fn_mod.swat_attention_triton(q, k, v, slopes, window), (q, k, v), do)


if CUDA:
    from harness.bench.timing import median_ms
    for d in (64, 128):
        for seq_len in (4096, 16384, 32768):
            for W in (128, 512):
                step = make_step(d, seq_len, 65536, W, "cuda", torch.bfloat16)
                for rnd in range(2):
                    for name, ctx in paths():
                        with ctx:
                            step_ms = median_ms(step, True)
                            enqueue = host_ms(step, 20)
                        emit(d=d, T=seq_len, W=W, path=name, round=rnd, step_ms=step_ms, host_enqueue_ms=enqueue)
else:  # the host's share alone: no kernel runs
    x = torch.randn(1, 16, 2, 64, requires_grad=True)

    def trivial():
        return torch.autograd.grad(x * 1.0, x, x)
    with mock.patch.object(fn_mod, "launch", lambda *args, **kwargs: None):
        step = make_step(64, 16, 16, 128, "cpu", torch.float32)
        for rnd in range(-1, 10):  # round -1 warms each path up and is not written
            for name, ctx in (("trivial", mock.patch.object(fn_mod, "_untraced", fn_mod._untraced)), *paths()):
                with ctx:
                    us = 1e3 * host_ms(trivial if name == "trivial" else step, 300)
                if rnd >= 0:
                    emit(path=name, round=rnd, host_us=us)
