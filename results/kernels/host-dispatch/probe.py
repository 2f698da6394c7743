"""The host time of SWAT's eager calls through the custom ops (every call before b19265e) and on
the eager path (the training step through the plain autograd.Function `_SwatAttention`, a decode
step through the op's body), side by side in one process, alternating round by round.

"step" is what the peer bench times: the forward, then the gradients of q, k and v against a fixed
output gradient; "decode" is one token against a full ring buffer of W slots. On a GPU (bf16,
H * d = 1024; steps at B * T = 65536, W = 128 and 512 and the bench's lengths; decode at batch 1
and 64, W = 512), per path and round: the median time of a call (do_bench, eagerly) and the host's
time to enqueue one (20 steps or 200 decodes, no synchronisation between them). Without a GPU,
under TRITON_INTERPRET=1 (which it sets), the kernel launches are patched out and only the host's
time per call is measured, on tiny tensors, beside a trivial autograd step (the engine's own cost).
After the rows, where the eager path's host time goes: a cProfile of its step (d = 128, T = 16K,
W = 128 on a GPU) and of its decode (d = 64 and 128, batch 1), functions by own time, into
OUT.profile.txt (OUT less its .jsonl).

    python results/kernels/host-dispatch/probe.py OUT.jsonl
"""
import cProfile
import io
import os
import pstats
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
from harness.results.provenance import provenance, stamped_row_writer  # noqa: E402

COMMAND = shlex.join(["python", "results/kernels/host-dispatch/probe.py", *sys.argv[1:]])
write = stamped_row_writer(open(sys.argv[1], "w"), "cuda" if CUDA else "cpu", COMMAND, echo=True)


def emit(**row):
    write(row)


def paths():
    """(name, context) per path: the custom ops as every call took them, or today's eager path."""
    return (("custom op", mock.patch.object(fn_mod, "_untraced", lambda *tensors: False)),
            ("eager", mock.patch.object(fn_mod, "_untraced", fn_mod._untraced)))


def host_ms(call, n: int) -> float:
    """The host's time per call over n calls enqueued back to back."""
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    ms = (time.perf_counter() - t0) / n * 1e3
    if CUDA:
        torch.cuda.synchronize()
    return ms


GENERATOR = torch.Generator(device="cpu").manual_seed(0)


def randn(*shape, device, dtype):
    """Seeded inputs, each tensor its own draw (timings do not depend on the values)."""
    return torch.randn(*shape, generator=GENERATOR).to(device, dtype)


def make_step(d: int, seq_len: int, tokens: int, window: int, device: str, dtype: torch.dtype):
    H, B = 1024 // d, max(tokens // seq_len, 1)
    q, k, v = (randn(B, seq_len, H, d, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    do, slopes = randn(B, seq_len, H, d, device=device, dtype=dtype), alibi_slopes(H).to(device)
    return lambda: torch.autograd.grad(fn_mod.swat_attention_triton(q, k, v, slopes, window), (q, k, v), do)


def make_decode(d: int, batch: int, window: int, device: str, dtype: torch.dtype):
    H = 1024 // d
    q, slopes = randn(batch, H, d, device=device, dtype=dtype), alibi_slopes(H).to(device)
    k_cache, v_cache = (randn(batch, window, H, d, device=device, dtype=dtype) for _ in range(2))
    return lambda: fn_mod.swat_decode_triton(q, k_cache, v_cache, window, 4 * window, slopes, window)


def profile(label: str, call, n: int, into) -> None:
    """cProfile of n eager calls, the 20 functions with the most own time (after one call to warm up;
    profiling slows every Python call alike, so the shares are what it tells)."""
    call()
    prof = cProfile.Profile()
    prof.runcall(lambda: [call() for _ in range(n)])
    if CUDA:
        torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(20)
    into.write(f"## {label}: {n} calls\n{text.getvalue()}\n")


def profiles(step_shape: dict, step, decodes: dict) -> None:
    path = sys.argv[1].removesuffix(".jsonl") + ".profile.txt"
    with open(path, "w") as into:
        made = provenance("cuda" if CUDA else "cpu", COMMAND)
        into.write(f"# {made['device']}, commit {made['commit']}, {made['date']}: {made['command']}\n")
        profile(f"eager step {step_shape}", step, 50, into)
        for d, decode in decodes.items():
            profile(f"eager decode d={d}, batch 1, W=512", decode, 200, into)


if CUDA:
    from harness.bench.timing import median_ms
    shapes = [("step", dict(d=d, T=seq_len, W=W), make_step(d, seq_len, 65536, W, "cuda", torch.bfloat16), 20)
              for d in (64, 128) for seq_len in (4096, 16384, 32768) for W in (128, 512)]
    shapes += [("decode", dict(d=d, B=batch, W=512), make_decode(d, batch, 512, "cuda", torch.bfloat16), 200)
               for d in (64, 128) for batch in (1, 64)]
    for what, shape, call, n in shapes:
        for rnd in range(2):
            for name, ctx in paths():
                with ctx:
                    call_ms = median_ms(call, True)
                    enqueue = host_ms(call, n)
                emit(what=what, **shape, path=name, round=rnd, call_ms=call_ms, host_enqueue_ms=enqueue)
    profiles(dict(d=128, T=16384, W=128), make_step(128, 16384, 65536, 128, "cuda", torch.bfloat16),
             {d: make_decode(d, 1, 512, "cuda", torch.bfloat16) for d in (64, 128)})
else:  # the host's share alone: no kernel runs
    class NoKernel:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    x = torch.randn(1, 16, 2, 64, requires_grad=True)
    calls = dict(trivial=lambda: torch.autograd.grad(x * 1.0, x, x),
                 step=make_step(64, 16, 16, 128, "cpu", torch.float32),
                 decode=make_decode(64, 1, 128, "cpu", torch.float32))
    with mock.patch.object(fn_mod, "launch", lambda *args, **kwargs: None), \
            mock.patch.object(fn_mod, "swat_decode_kernel", NoKernel()), \
            mock.patch.object(fn_mod, "sum_splits_kernel", NoKernel()):
        for rnd in range(-1, 10):  # round -1 warms each path up and is not written
            for what, call in calls.items():
                for name, ctx in paths()[:1] if what == "trivial" else paths():
                    with ctx:
                        us = 1e3 * host_ms(call, 300)
                    if rnd >= 0:
                        emit(what=what, path="-" if what == "trivial" else name, round=rnd, host_us=us)
        profiles(dict(d=64, T=16, W=128), calls["step"],
                 {d: make_decode(d, 1, 512, "cpu", torch.float32) for d in (64, 128)})
