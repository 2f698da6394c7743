"""What the decode probes (probe.py, batch8.py) measure at one shape: each variant's error against
the fp32 reference, then two rounds of every variant's time and SDPA's over the same W slots, as
CUDA-graph replays over copies of the cache in turn, read from HBM (the bench's decode timing)."""
import torch

from harness.bench.tune import _time, decode_inputs
from harness.ops.swat.function import DECODE_CONFIGS, override_decode_config, swat_decode_triton
from harness.ops.swat.reference import swat_decode_ref

# the CUDA cores' "split" config (c562cb4's), which batch 8 ran until the "dot" config took it
SPLIT = dict(DECODE_CONFIGS["split"])
# the tensor cores' decode at its two best configs of call 93: "p" programs wanted, "t" elements a
# tile, "w" warps, "s" stages
DOT = {f"dot p{p} t{t} w{w} s{s}": dict(MIN_PROGRAMS=p, TILE_ELEMS=t, num_warps=w, LOOP_STAGES=s)
       for p, t, w, s in ((1056, 8192, 4, 2), (264, 8192, 4, 3))}


def with_config(overrides: dict):
    """The committed decode with entries of every DECODE_CONFIGS entry replaced by overrides."""
    def step(*args):
        with override_decode_config(**overrides):
            return swat_decode_triton(*args)
    return step


def dot(config: dict):
    """The tensor cores' decode at one launch config (MIN_PROGRAMS, TILE_ELEMS, num_warps,
    LOOP_STAGES), the runs' sums added in the kernel."""
    return with_config(dict(config, DOT=True, SUM_IN_KERNEL=True))


def cuda_kernels(call, *args) -> list[dict]:
    """The CUDA kernels one call launches (after a warm-up call), each with its GPU time in µs."""
    call(*args)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call(*args)
        torch.cuda.synchronize()
    return [dict(kernel=e.name, us=e.device_time) for e in prof.events() if e.device_type.name == "CUDA"]


def probe_shape(write, d: int, B: int, W: int, variants: dict, one_copy: tuple = (),
                sdpa_kernels: bool = False) -> None:
    """At d, batch B and W slots (H * d = 1024, bf16, the ring buffer full, the query at position
    10 W), write each variant's error (variants: name -> a step taking swat_decode_triton's
    arguments), SDPA's CUDA kernels where asked, then two rounds of every variant's time and
    SDPA's; the variants named in one_copy also over one copy of the cache (from L2 where it fits)."""
    q, copies, slopes, sdpa = decode_inputs(d, B, W)
    shape = dict(d=d, B=B, H=q.shape[1], W=W, copies=len(copies))
    rest = (W, 10 * W, slopes, W)
    calls = {name: (lambda kc, vc, step=step: step(q, kc, vc, *rest)) for name, step in variants.items()}
    kc, vc = copies[0]
    want = swat_decode_ref(q.float(), kc.float(), vc.float(), *rest)
    for name, call in calls.items():
        got = call(kc, vc).float()
        write(dict(shape, variant=name, rel_err=((got - want).norm() / want.norm()).item()))
    if sdpa_kernels:
        write(dict(shape, variant="sdpa", kernels=cuda_kernels(sdpa, kc, vc)))
    calls["sdpa"] = sdpa
    timed = [(name, call, copies) for name, call in calls.items()]
    timed += [(f"{name}, one copy", calls[name], copies[:1]) for name in one_copy]
    for rnd in range(2):
        for name, call, over in timed:
            ms, note = _time(call, copies=over)
            write(dict(shape, variant=name, round=rnd, us=None if ms is None else ms * 1e3, note=note))
