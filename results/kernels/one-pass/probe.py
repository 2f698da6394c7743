"""hopper.py's one-pass backward at d = 128 (swat_bwd_one_pass_kernel: dQ added by TMA reduce-add
inside the dK/dV work, 5 matrix products per tile pair) against its two passes (7 products), at
W = T, where SWAT's forward + backward trailed SDPA (d = 128: 0.90x at T = 4K, 0.97-0.99x at 16K
and 32K on the H100, `../nvidia-h100-80gb-hbm3/kernels.md` at 946ab1f), and at W = 2048. First
each variant's gradients against the two passes' (max |difference| over the largest value); then
the whole backward, each variant twice, alternating, beside SDPA's backward (causal, its own
kernels, W = T only). The peer bench's shapes: B * T = 65536, H = 8, bf16, sigmoid bias 0, the
harness's sigmoid mode and program order. Through call 91 (7fc5125) the one pass was this
folder's kernel.py (`git show <commit>:results/kernels/one-pass/probe.py` names it).

    python results/kernels/one-pass/probe.py OUT.jsonl
"""
import shlex
import sys

from harness.bench.tune import _inputs, _time, sdpa_backward
from harness.ops.swat import hopper
from harness.ops.swat.function import SIGMOID_MODE, program_order
from harness.results.provenance import stamped_row_writer

write = stamped_row_writer(open(sys.argv[1], "w"), "cuda",
                           shlex.join(["python", "results/kernels/one-pass/probe.py", *sys.argv[1:]]), echo=True)
SHAPES = [(4096, "T"), (16384, "T"), (32768, "T"), (4096, 2048), (16384, 2048), (32768, 2048)]
# name: the one pass's ring slots of q and dO and each group's dQ staging slots (None: the two passes)
VARIANTS = {"two passes": None,
            "one pass, 2 ring slots, 1 dQ slot": (2, 1),
            "one pass, 2 ring slots, 2 dQ slots": (2, 2),
            "one pass, 3 ring slots, 1 dQ slot": (3, 1)}


def backward(name, q, k, v, do, slopes, W, scale):
    if VARIANTS[name] is not None:
        hopper.ONE_PASS_BUFFERS, hopper.ONE_PASS_DQ_SLOTS[128] = VARIANTS[name]
    return hopper.swat_bwd_hopper(do, q, k, v, slopes, W, 0.0, scale, SIGMOID_MODE["bwd"], program_order(128, W),
                                  one_pass=VARIANTS[name] is not None)


for seq_len, window in SHAPES:
    T, (q, k, v, do), slopes, scale = _inputs(128, seq_len, 65536)
    W = T if window == "T" else window
    two = backward("two passes", q, k, v, do, slopes, W, scale)
    for name in list(VARIANTS)[1:]:
        one = backward(name, q, k, v, do, slopes, W, scale)
        write(dict(d=128, T=T, W=window, variant=f"{name} against two passes",
                   **{f"err_{n}": ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                      for n, a, b in zip(("dq", "dk", "dv"), one, two)}))
    sdpa = sdpa_backward(q, k, v, do) if window == "T" else None  # SDPA is a peer of full causal attention only
    for rep in range(2):
        for name in VARIANTS:
            ms, note = _time(lambda: backward(name, q, k, v, do, slopes, W, scale))
            write(dict(d=128, T=T, W=window, variant=name, rep=rep, bwd_ms=ms, note=note))
        if sdpa is not None:
            ms, note = _time(sdpa)
            write(dict(d=128, T=T, W=window, variant="sdpa backward", rep=rep, bwd_ms=ms, note=note))
