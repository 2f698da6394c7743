"""The SWAT Triton kernels against the plain-torch reference (the definition).

On a CPU machine the kernels run under TRITON_INTERPRET=1 at tiny sizes with 16x16 tiles, so that
every tile path (window edge, interior, causal diagonal, partial last block, document boundary)
is exercised; on a GPU the same tests run compiled, plus realistic sizes and torch.compile.
"""

import contextlib
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# Without a GPU the kernels run under Triton's CPU interpreter; tests/conftest.py sets
# TRITON_INTERPRET=1 before anything imports triton (triton reads it once). Set here too for a
# direct run of this file without the conftest.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from harness.config import ConfigError  # noqa: E402
from harness.ops.alibi import alibi_slopes  # noqa: E402
from harness.ops.swat.function import (  # noqa: E402
    check_inputs,
    swat_attention_triton,
    swat_decode_triton,
)
from harness.ops.swat.reference import swat_attention_ref, swat_decode_ref  # noqa: E402
from harness.ops.swat.triton_common import band_program, score_unit, sigmoid_scaled  # noqa: E402


@triton.jit
def _sigmoid_kernel(S, P, N: tl.constexpr, SIGMOID: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(P + offs, sigmoid_scaled(tl.load(S + offs) * score_unit(SIGMOID), SIGMOID))


@triton.jit
def _band_program_kernel(Out, n_blocks, n_heads, ORDER: tl.constexpr):
    pid = tl.program_id(0)
    pid_bh, block = band_program(pid, tl.num_programs(0), n_blocks, n_heads, ORDER)
    tl.store(Out + 2 * pid, pid_bh)
    tl.store(Out + 2 * pid + 1, block)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def inputs(B, T, H, Hkv, d, dtype, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(B, T, h, d, generator=g).to(DEVICE, dtype) for h in (H, Hkv, Hkv))
    do = torch.randn(B, T, H, d, generator=g).to(DEVICE, dtype)
    return q, k, v, do


def check_against_reference(B, T, H, Hkv, d, W, dtype, tol, cu_seqlens=None, bias=-0.5, seed=0):
    q, k, v, do = inputs(B, T, H, Hkv, d, dtype, seed)
    slopes = alibi_slopes(H, "balanced").to(DEVICE)
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    got = {}
    for name, fn in (("kernel", swat_attention_triton), ("ref", None)):
        qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
        if fn is None:  # the reference in fp32 on the same (rounded) inputs
            o = swat_attention_ref(qq.float(), kk.float(), vv.float(), slopes, W, "sigmoid", bias, cu_seqlens=cu)
        else:
            o = fn(qq, kk, vv, slopes, W, bias, cu_seqlens=cu)
        o.backward(do.to(o.dtype))
        got[name] = (o, qq.grad, kk.grad, vv.grad)
    for what, a, b in zip(("o", "dq", "dk", "dv"), got["kernel"], got["ref"]):
        assert torch.isfinite(a).all(), what
        err = rel_err(a, b)
        assert err < tol, f"{what}: relative error {err:.2e} >= {tol:.0e}"


# (B, T, H, Hkv, W): window edge inside a block, T not a multiple of 16, W = 1, T < W, W = T,
# GQA 4:1, a window equal to the tile
CASES = [
    (2, 50, 2, 2, 20),
    (1, 37, 2, 1, 1),
    (1, 21, 2, 2, 64),
    (1, 40, 4, 1, 40),
    (1, 64, 2, 2, 16),
]


@pytest.mark.parametrize("B,T,H,Hkv,W", CASES)
def test_fp32_matches_reference(B, T, H, Hkv, W):
    check_against_reference(B, T, H, Hkv, 64, W, torch.float32, tol=2e-5)


@pytest.mark.parametrize("d", [64, 128])
def test_bf16_matches_reference(d):
    check_against_reference(1, 45, 2, 1, d, 23, torch.bfloat16, tol=2e-2, seed=1)


@pytest.mark.parametrize("B,T,H,Hkv,W", [(1, 50, 2, 2, 20), (1, 45, 2, 1, 64)])
def test_one_loop_variant_matches_reference(monkeypatch, B, T, H, Hkv, W):
    """The single masked loop used for small windows (ONE_LOOP) computes the same as the split loops."""
    from harness.ops.swat import function
    monkeypatch.setitem(function._INTERPRET_CONFIG, "ONE_LOOP", True)
    check_against_reference(B, T, H, Hkv, 64, W, torch.float32, tol=2e-5, cu_seqlens=[0, 7, T] if B == 1 else None)


@pytest.mark.parametrize("B,T,H,Hkv,W,cu", [(2, 50, 2, 2, 20, None), (1, 40, 4, 1, 40, None), (1, 37, 2, 1, 1, None),
                                            (1, 50, 2, 1, 24, [0, 7, 33, 50])])
@pytest.mark.parametrize("one_loop", [False, True])
@pytest.mark.parametrize("mode", ["atomics", "tma"])
def test_fused_dq_backward_matches_reference(monkeypatch, B, T, H, Hkv, W, cu, one_loop, mode):
    """The one-pass backward (dQ added inside the dK/dV pass) computes the same gradients as the
    reference: window edges, W = 1, full causal, GQA, packed documents. ("tma" runs as "atomics"
    in the CPU interpreter and before Hopper.)"""
    from harness.ops.swat import function
    monkeypatch.setattr(function, "FUSED_DQ", dict.fromkeys(function.FUSED_DQ, mode))
    monkeypatch.setitem(function._INTERPRET_CONFIG, "ONE_LOOP", one_loop)
    if mode == "tma" and not (DEVICE == "cuda" and torch.cuda.get_device_capability()[0] >= 9):
        pytest.skip("runs as atomics here (test_tma_dq_falls_back_to_atomics_without_the_copy_engine)")
    assert function.fused_dq(64, W, torch.device(DEVICE)) == mode
    check_against_reference(B, T, H, Hkv, 64, W, torch.float32, tol=2e-5, cu_seqlens=cu)
    check_against_reference(1, 45, 2, 1, 128, 23, torch.bfloat16, tol=2e-2, seed=1)


@pytest.mark.parametrize("order", ["pairs", "heads", "rows"])
def test_programs_start_in_the_order_named_heavy_blocks_first(order):
    """band_program, in the order the GPU starts programs (2 sequences x 3 heads x 4 blocks): "pairs"
    takes each (sequence, head)'s blocks together, "heads" every pair's block side by side, "rows"
    each sequence's blocks with its heads side by side; the last block (heaviest with W >= T) first
    within each, and every (pair, block) exactly once."""
    from harness.ops.swat.function import PROGRAM_ORDERS
    assert order in PROGRAM_ORDERS
    n_seqs, n_heads, n_blocks = 2, 3, 4
    out = torch.full((n_seqs * n_heads * n_blocks, 2), -1, dtype=torch.int32, device=DEVICE)
    _band_program_kernel[(n_seqs * n_heads * n_blocks,)](out, n_blocks, n_heads, ORDER=order)
    blocks = list(reversed(range(n_blocks)))
    want = {"pairs": [[p, k] for p in range(n_seqs * n_heads) for k in blocks],
            "heads": [[p, k] for k in blocks for p in range(n_seqs * n_heads)],
            "rows": [[b * n_heads + h, k] for b in range(n_seqs) for k in blocks for h in range(n_heads)]}[order]
    assert out.tolist() == want


@pytest.mark.parametrize("order", ["heads", "rows"])
def test_kernels_match_the_reference_in_every_program_order(order):
    """The passes in the orders a sweep may choose (the default, "pairs", runs in every other test):
    two sequences, GQA (the dK/dV pass's pairs are key heads), blocks off the tiles, a window inside T."""
    from harness.ops.swat import function
    with function.override_program_order(dict.fromkeys(function.PROGRAM_ORDER, order)):
        check_against_reference(2, 45, 4, 2, 32, 23, torch.float32, tol=2e-5)


def test_every_window_has_a_tile_config_for_every_pass_and_head_size():
    """The window and head size pick the regime (the 340m/760m presets' 512 is "medium"), and every
    regime has a config for each pass and head size and a FUSED_DQ entry, so no window meets a
    missing key. d < 64 takes d = 64's boundaries and configs."""
    from harness.ops.swat import function
    windows = (1, 128, 256, 257, 512, 1024, 1025, 2048, 2049, 1 << 20)
    regimes = {d: [function.window_regime(W, d) for W in windows] for d in (16, 64, 128)}
    assert regimes == dict.fromkeys((16, 64, 128), ["small"] * 3 + ["medium"] * 5 + ["large"] * 2)
    for regime in ("small", "medium", "large"):
        for d in (64, 128):
            assert function.FUSED_DQ[(d, regime)] in function.FUSED_DQ_MODES
            for pass_name in ("fwd", "dkdv", "dq"):
                assert set(function.CONFIGS[(pass_name, d, regime)]) == set(function._INTERPRET_CONFIG)


def test_fp32_at_head_size_128_takes_the_medium_tiles_past_the_medium_windows(monkeypatch):
    """The large tiles in fp32 at d = 128 exceed a Hopper SM's shared memory and take minutes to
    compile (results/kernels/fp32-compile/); 16-bit inputs and smaller heads keep them."""
    from harness.ops.swat import function
    monkeypatch.setattr(function, "interpreting", lambda: False)
    for pass_name in ("fwd", "dkdv", "dq"):
        large, medium = function.CONFIGS[(pass_name, 128, "large")], function.CONFIGS[(pass_name, 128, "medium")]
        assert function.kernel_config(pass_name, 128, 4096, torch.float32) == medium
        assert function.kernel_config(pass_name, 128, 4096, torch.bfloat16) == large
        assert function.kernel_config(pass_name, 128, 1024, torch.float32) == medium
        assert function.kernel_config(pass_name, 64, 4096, torch.float32) == function.CONFIGS[(pass_name, 64, "large")]


def test_deterministic_mode_keeps_the_two_pass_backward(monkeypatch):
    from harness.ops.swat import function
    monkeypatch.setattr(function, "FUSED_DQ", dict.fromkeys(function.FUSED_DQ, "atomics"))
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    device = torch.device(DEVICE)
    assert function.fused_dq(64, 128, device) == function.fused_dq(128, 4096, device) == "off"
    assert not function.hopper_one_pass(128)  # nor does hopper.py's backward run in one pass
    if function._hopper_kernels() is not None:  # whose two passes are taken only where they are faster
        monkeypatch.setattr(function, "_on_hopper", lambda device: True)
        q128, q64 = torch.empty(1, 64, 2, 128, dtype=torch.bfloat16), torch.empty(1, 64, 2, 64, dtype=torch.bfloat16)
        assert function.hopper_pass("bwd", q128, 4096, False, q128, q128, q128)
        assert not function.hopper_pass("bwd", q64, 4096, False, q64, q64, q64)


def test_tma_dq_falls_back_to_atomics_without_the_copy_engine(monkeypatch):
    """The bulk reduction of FUSED_DQ "tma" exists on Hopper and later only, and not in the CPU
    interpreter: elsewhere the same one-pass backward adds dQ with atomics."""
    from harness.ops.swat import function
    monkeypatch.setattr(function, "FUSED_DQ", dict.fromkeys(function.FUSED_DQ, "tma"))
    assert function.fused_dq(64, 128, torch.device("cpu")) == "atomics"
    monkeypatch.setattr(function, "interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert function.fused_dq(64, 128, torch.device("cuda")) == "atomics"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert function.fused_dq(64, 128, torch.device("cuda")) == "tma"
    # compiling for a target names its GPU instead of asking one
    assert [function.fused_dq(64, 128, None, compute_capability=c) for c in (8, 9, 10)] == ["atomics", "tma", "tma"]


def test_hopper_passes_are_taken_only_where_they_were_measured_faster(monkeypatch):
    """hopper.py's Gluon passes run on a Hopper GPU for 16-bit inputs without GQA or documents, at
    the head sizes and from the windows HOPPER_MIN_WINDOW names, on tensors TMA can read (views of a
    fused projection among them); everything else, and everything under triton_only(), takes the
    Triton passes."""
    from harness.ops.swat import function
    if function._hopper_kernels() is None:
        pytest.skip("this Triton has no Gluon Hopper API")

    def bf16(*shape):
        return torch.empty(*shape, dtype=torch.bfloat16)

    q = bf16(2, 64, 4, 128)
    assert not function.hopper_pass("fwd", q, 4096, False, q, q)  # a CPU tensor: not on a Hopper GPU
    monkeypatch.setattr(function, "_on_hopper", lambda device: True)
    assert function.hopper_pass("fwd", q, 512, False, q, q) and not function.hopper_pass("fwd", q, 256, False, q, q)
    assert function.hopper_pass("bwd", q, 2048, False, q, q, q) and not function.hopper_pass("bwd", q, 512, False, q, q)
    small_heads = bf16(2, 64, 4, 64)  # d = 64: the backward alone, in one pass, from W = 4096
    assert not function.hopper_pass("fwd", small_heads, 4096, False, small_heads, small_heads)
    assert function.hopper_pass("bwd", small_heads, 4096, False, small_heads, small_heads, small_heads)
    assert not function.hopper_pass("bwd", small_heads, 2048, False, small_heads, small_heads, small_heads)
    assert not function.hopper_pass("fwd", q.float(), 4096, False, q.float(), q.float())
    assert not function.hopper_pass("fwd", q, 4096, True, q, q)  # packed documents
    assert not function.hopper_pass("fwd", q, 4096, False, bf16(2, 64, 2, 128), bf16(2, 64, 2, 128))  # GQA
    fused = bf16(2, 64, 3, 4, 128)
    assert function.hopper_pass("bwd", fused[:, :, 0], 4096, False, fused[:, :, 1], fused[:, :, 2], q)
    heads_first = bf16(2, 4, 64, 128).transpose(1, 2)
    unaligned = bf16(2 * 64 * 4 * 128 + 1)[1:].view(2, 64, 4, 128)
    assert not function.hopper_pass("fwd", q, 4096, False, heads_first, q)
    assert not function.hopper_pass("fwd", q, 4096, False, q, unaligned)
    with function.triton_only():
        assert not function.hopper_pass("fwd", q, 4096, False, q, q)
    assert function.hopper_pass("fwd", q, 4096, False, q, q)
    from harness.bench.kernels import swat_passes  # what the kernel bench records it timed
    assert swat_passes(torch.device("cuda")) == ("hopper.py's Gluon passes (the forward at d = 128 from W = 512; "
                                                 "the backward at d = 128 from W = 2048 in one pass; the backward at "
                                                 "d = 64 from W = 4096 in one pass), the Triton kernels elsewhere")
    assert function.hopper_one_pass(128) and function.hopper_one_pass(64)


def cross_compile(fixture: str, *args: str) -> list[str]:
    """The lines printed by tests/fixtures/<fixture>, which compiles kernels for a GPU target by this
    Triton (no GPU needed: ptxas comes with it). In a process of its own, without TRITON_INTERPRET, which
    these tests run with on a CPU and under which Gluon and real compiles do not run. The repository
    goes on its path: the harness need not be installed, as on the device machine, where the suite
    runs from a copy of the tree."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")]))
    script = Path(__file__).parent / "fixtures" / fixture
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_hopper_kernels_compile_for_sm90_without_a_gpu():
    """hopper.py's kernels at the launches its dispatcher uses, compiled for sm_90, so that a Triton
    whose Gluon API moved fails here, not on a user's H100."""
    pytest.importorskip("harness.ops.swat.hopper")
    assert [line.split(":")[0] for line in cross_compile("compile_hopper_sm90.py")] == \
        ["fwd d=128 (pairs)", "dq d=128 (pairs)", "dkdv d=128 (pairs)", "one_pass d=64 (pairs)",
         "one_pass d=128 (pairs)", "fwd d=128 (heads)", "fwd d=128 (rows)"]


def test_decode_loop_stages_pipeline_the_slot_loop_on_hopper():
    """Triton pipelines only the loads that feed a dot unless the loop asks: the CUDA cores' decode's
    slot loop, compiled for sm_90, copies tiles ahead (cp.async into shared memory) only with
    LOOP_STAGES > 1; the launch's num_stages (Triton's default, 3) does not reach it. PREFETCH builds
    too, and its next tile goes to registers, not through shared memory. The tensor cores' decode
    builds at the dispatcher's launch with its slot loop pipelined."""
    lines = cross_compile("compile_decode_sm90.py", "1", "3", "1p", "dot")
    copies = [int(line.split(", ")[1].split()[0]) for line in lines]
    assert copies[0] == 0 and copies[1] > 0 and copies[2] == 0 and copies[3] > 0, lines


def test_decode_configs_compile_for_hopper_without_spilling():
    """Each decode config's launch at the bench's head sizes, compiled for sm_90, keeps its
    registers: nothing goes to the stack, which a retuned tile or warp count would show here
    first ("whole" takes 242-246 of the 255 registers a thread; results/kernels/decode-dot/
    registers.py lists every dtype and head size)."""
    builds = [f"{config}@{d}" for config in ("split", "dot", "whole") for d in (64, 128)]
    lines = cross_compile("compile_decode_sm90.py", *builds)
    assert [line.split(":")[0] for line in lines] == builds
    assert all(line.endswith(", 0 B stack") for line in lines), lines


def test_kernels_build_for_ampere_at_the_launches_a_gpu_before_hopper_gets():
    """The device machines are all Hopper, so nothing else builds what an A100 runs: the Triton
    passes at each tile regime (the backward at d = 64 past W = 2048 adding dQ by atomics, where
    Hopper's copy engine would), and each decode config, compiled for sm_80. In bf16 each fits an
    A100's shared memory, so none pays the launch's fallback there (results/kernels/cross-compile/
    registers.py lists every dtype and head size, with registers and spills)."""
    from harness.ops.swat.cross_compile import SHARED_PER_BLOCK
    lines = cross_compile("compile_ampere_sm80.py")
    builds = []
    for d in (64, 128):
        for w in (128, 512, 4096):  # no dQ pass at d = 64 past W = 2048: the dK/dV pass adds dQ
            builds += [f"{p} d={d} W={w}" for p in ("fwd", "dkdv", "dq") if (p, d, w) != ("dq", 64, 4096)]
        builds += [f"decode {config} d={d}" for config in ("split", "dot", "whole")]
    assert [line.split(":")[0] for line in lines] == builds
    assert all(int(line.split(": ")[1].split(" B shared")[0]) <= SHARED_PER_BLOCK[80] for line in lines), lines


@pytest.mark.parametrize("mode,tol", [(0, 1e-5), (2, 5e-4)])
def test_sigmoid_modes(mode, tol):
    """The Newton reciprocal (mode 2, the decode's for bf16/fp16 on the GPU) stays well inside bf16 precision."""
    s = torch.linspace(-40, 40, 1024, device=DEVICE)
    p = torch.empty_like(s)
    _sigmoid_kernel[(1,)](s, p, N=1024, SIGMOID=mode)
    want = torch.sigmoid(s.double())
    assert ((p.double() - want).abs() / want).max().item() < tol


def test_sigmoid_is_approximated_only_for_16_bit_inputs_on_the_gpu(monkeypatch):
    from harness.ops.swat import function
    monkeypatch.setattr(function, "interpreting", lambda: False)
    gpu_bf16 = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16)
    assert [function._sigmoid_mode(gpu_bf16, p) for p in ("fwd", "bwd", "decode")] == \
        [function.SIGMOID_MODE[p] for p in ("fwd", "bwd", "decode")]
    assert function._sigmoid_mode(SimpleNamespace(is_cuda=True, dtype=torch.float32), "fwd") == 0
    assert function._sigmoid_mode(SimpleNamespace(is_cuda=False, dtype=torch.bfloat16), "bwd") == 0


@gpu_only
def test_tanh_sigmoid_error_is_absolute_and_below_bf16_resolution():
    """Mode 3, (1 + tanh.approx(s / 2)) / 2: its error is absolute (a weight near 0 is coarse), and
    it stays below a quarter of bf16's spacing in [0.5, 1) (2^-8), the rounding p gets before P V."""
    s = torch.linspace(-40, 40, 1024, device=DEVICE)
    p = torch.empty_like(s)
    _sigmoid_kernel[(1,)](s, p, N=1024, SIGMOID=3)
    assert (p.double() - torch.sigmoid(s.double())).abs().max().item() < 2 ** -10


def test_varlen_documents_do_not_attend_across():
    # documents shorter and longer than the window, one boundary inside a tile
    check_against_reference(1, 70, 2, 2, 64, 24, torch.float32, tol=2e-5, cu_seqlens=[0, 5, 37, 70])


def test_varlen_full_causal_gqa():
    check_against_reference(1, 50, 4, 2, 64, 1000, torch.float32, tol=2e-5, cu_seqlens=[0, 17, 18, 50])


@pytest.mark.parametrize("pos", [3, 31, 77])
def test_decode_matches_reference(pos):
    B, H, Hkv, d, W = 2, 4, 2, 64, 32
    g = torch.Generator(device="cpu").manual_seed(pos)
    q = torch.randn(B, H, d, generator=g).to(DEVICE)
    kc, vc = (torch.randn(B, W, Hkv, d, generator=g).to(DEVICE) for _ in range(2))
    slopes = alibi_slopes(H).to(DEVICE)
    cache_len = min(pos + 1, W)
    got = swat_decode_triton(q, kc, vc, cache_len, pos, slopes, W, sigmoid_bias=0.3)
    want = swat_decode_ref(q, kc, vc, cache_len, pos, slopes, W, sigmoid_bias=0.3)
    assert rel_err(got, want) < 2e-5


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("sum_in_kernel", [False, True])
@pytest.mark.parametrize("acc_2d", [False, True])
@pytest.mark.parametrize("min_programs", [1, 16, 10**6])
def test_decode_matches_reference_for_any_split(min_programs, acc_2d, sum_in_kernel, prefetch):
    """One run of slots per (sequence, head), two (the last one part empty: three tiles of slots in
    runs of two), and one per tile: every launch config the split heuristic can pick gives the same output,
    with either accumulator, the runs added by a second kernel or by the last program of each pair
    (whose arrival counters are all zero again after the call), each tile loaded in its own
    iteration or prefetched in the one before (the tile after a run's last reading nothing)."""
    from harness.ops.swat import function
    from harness.ops.swat.function import decode_launch, override_decode_config
    B, H, Hkv, d, pos = 2, 4, 2, 64, 1000
    W = 3 * decode_launch(B * H, 1, d)["BLOCK_W"]  # three tiles
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(B, H, d, generator=g).to(DEVICE)
    kc, vc = (torch.randn(B, W, Hkv, d, generator=g).to(DEVICE) for _ in range(2))
    slopes = alibi_slopes(H).to(DEVICE)
    with override_decode_config(MIN_PROGRAMS=min_programs, ACC_2D=acc_2d, SUM_IN_KERNEL=sum_in_kernel,
                                PREFETCH=prefetch):
        launch = decode_launch(B * H, W, d)
        assert launch["splits"] == {1: 1, 16: 2, 10**6: 3}[min_programs]
        assert launch["SUM_IN_KERNEL"] == (sum_in_kernel and launch["splits"] > 1)
        for _ in range(2):  # the second call starts from the counters the first left
            got = swat_decode_triton(q, kc, vc, W, pos, slopes, W)
            assert rel_err(got, swat_decode_ref(q, kc, vc, W, pos, slopes, W)) < 2e-5
    assert all(int(c.abs().sum()) == 0 for sets in function._ARRIVALS.values() for c in sets)


@pytest.mark.skipif(DEVICE == "cuda", reason="records the interpreter's launches")
def test_every_launch_asks_for_fp_fusion(monkeypatch):
    """Each kernel a training step and a decode step launch (the forward, dK/dV and dQ passes, the
    decode and the sum of its runs) passes LAUNCH_OPTIONS, so that a Triton whose default differs
    (3.10 turns FP fusion off by default) builds the kernels as they were measured."""
    from triton.runtime.interpreter import InterpretedFunction

    from harness.ops.swat.function import override_decode_config, swat_attention_triton
    from harness.ops.swat.triton_common import LAUNCH_OPTIONS
    launched = {}
    run = InterpretedFunction.run

    def recording(self, *args, **kwargs):
        launched[self.fn.__name__] = {k: kwargs.get(k) for k in LAUNCH_OPTIONS}
        return run(self, *args, **kwargs)
    monkeypatch.setattr(InterpretedFunction, "run", recording)
    q, k, v, do = inputs(1, 32, 2, 2, 16, torch.float32, 0)
    q.requires_grad_()
    swat_attention_triton(q, k, v, alibi_slopes(2), 8).backward(do)
    with override_decode_config(MIN_PROGRAMS=10**6, SUM_IN_KERNEL=False):
        swat_decode_triton(q[:, 0].detach(), k, v, 32, 40, alibi_slopes(2), 32)
    assert set(launched) == {"swat_fwd_kernel", "swat_bwd_dkdv_kernel", "swat_bwd_dq_kernel", "swat_decode_kernel",
                             "sum_splits_kernel"}
    assert all(options == LAUNCH_OPTIONS for options in launched.values()), launched


def test_decode_adds_more_runs_than_one_block_of_sums():
    """A pair's last program loads its runs' sums SUM_BLOCK at a time: with one run more than a
    block, the second block holds one run and masks the rest, and the output is still the sum of
    every run."""
    from harness.ops.swat.function import decode_launch, override_decode_config
    from harness.ops.swat.triton_decode import SUM_BLOCK
    B, H, d, pos = 1, 2, 64, 5000
    W = (SUM_BLOCK.value + 1) * decode_launch(B * H, 1, d)["BLOCK_W"]  # one tile a run
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(B, H, d, generator=g).to(DEVICE)
    kc, vc = (torch.randn(B, W, H, d, generator=g).to(DEVICE) for _ in range(2))
    slopes = alibi_slopes(H).to(DEVICE)
    with override_decode_config(MIN_PROGRAMS=10**6, SUM_IN_KERNEL=True):
        assert decode_launch(B * H, W, d)["splits"] == SUM_BLOCK.value + 1
        got = swat_decode_triton(q, kc, vc, W, pos, slopes, W)
    assert rel_err(got, swat_decode_ref(q, kc, vc, W, pos, slopes, W)) < 2e-5


def test_decode_launch_splits_only_batches_too_small_to_fill_the_device():
    """Fewer (sequence, key/value head) groups than DECODE_DOT_GROUPS: runs split and summed inside
    the kernel ("split"); from there, while the (sequence, head) pairs give fewer than
    DECODE_FILLS_GPU programs, the tensor cores' kernel with one run per group ("dot"); from there
    on one run per pair ("whole"); nothing to add in either."""
    from harness.ops.swat.function import DECODE_DOT_GROUPS, DECODE_FILLS_GPU, decode_config_name, decode_launch
    assert [decode_config_name(pairs, rep) for pairs, rep in
            [(DECODE_DOT_GROUPS - 1, 1), (DECODE_DOT_GROUPS, 1), (DECODE_FILLS_GPU - 1, 1), (DECODE_FILLS_GPU, 1),
             (2 * DECODE_DOT_GROUPS, 4), (4 * DECODE_DOT_GROUPS, 4)]] == \
        ["split", "dot", "dot", "whole", "split", "dot"]
    few, groups, many = (decode_launch(pairs, 4096, 64) for pairs in
                         (DECODE_DOT_GROUPS - 1, DECODE_DOT_GROUPS, DECODE_FILLS_GPU))
    assert few["splits"] > 1 and few["SUM_IN_KERNEL"] and not few["DOT"]
    assert groups["splits"] == 1 and not groups["SUM_IN_KERNEL"] and groups["DOT"]
    assert many["splits"] == 1 and not many["SUM_IN_KERNEL"] and not many["DOT"]


def test_decode_tiles_on_the_gpu_hold_tile_elems_and_the_tensor_cores_stop_at_their_cap(monkeypatch):
    """On the GPU a tile holds TILE_ELEMS 16-bit elements (as many bytes in fp32); the tensor cores'
    tile stops at DECODE_DOT_MAX_SLOTS, so that d = 16 gets d = 32's slots, not twice them."""
    from harness.ops.swat import function
    monkeypatch.setattr(function, "interpreting", lambda: False)
    dot = function.DECODE_DOT_GROUPS
    slots = {(pairs, d, dtype.itemsize): function.decode_launch(pairs, 4096, d, dtype)["BLOCK_W"]
             for pairs in (1, dot) for d in (16, 32, 128) for dtype in (torch.bfloat16, torch.float32)}
    assert slots == {(1, 16, 2): 512, (1, 16, 4): 256, (1, 32, 2): 256, (1, 32, 4): 128, (1, 128, 2): 64,
                     (1, 128, 4): 32, (dot, 16, 2): 256, (dot, 16, 4): 256, (dot, 32, 2): 256, (dot, 32, 4): 128,
                     (dot, 128, 2): 64, (dot, 128, 4): 32}


@pytest.mark.parametrize("sum_in_kernel", [False, True])
@pytest.mark.parametrize("runs", [1, 2, 3])
@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (6, 2)])
def test_decode_on_the_tensor_cores_matches_reference(H, Hkv, runs, sum_in_kernel):
    """The tensor cores' decode (one program per (sequence, key/value head) group, its REP query
    heads padded to 16 rows) at REP 1, 2 and 3, with one run of slots per group, two and one per
    tile, the runs added by a second kernel or by each group's last program for all of its heads."""
    from harness.ops.swat import function
    from harness.ops.swat.function import decode_launch, override_decode_config
    B, d, pos = 2, 64, 1000
    W = 3 * decode_launch(B * H, 1, d)["BLOCK_W"]  # three tiles
    g = torch.Generator(device="cpu").manual_seed(H + Hkv)
    q = torch.randn(B, H, d, generator=g).to(DEVICE)
    kc, vc = (torch.randn(B, W, Hkv, d, generator=g).to(DEVICE) for _ in range(2))
    slopes = alibi_slopes(H).to(DEVICE)
    with override_decode_config(DOT=True, MIN_PROGRAMS=runs * B * Hkv, SUM_IN_KERNEL=sum_in_kernel):
        launch = decode_launch(B * H, W, d, rep=H // Hkv)
        assert launch["DOT"] and launch["splits"] == runs
        for _ in range(2):  # the second call starts from the counters the first left
            got = swat_decode_triton(q, kc, vc, W, pos, slopes, W, sigmoid_bias=0.3)
            assert rel_err(got, swat_decode_ref(q, kc, vc, W, pos, slopes, W, sigmoid_bias=0.3)) < 2e-5
    assert all(int(c.abs().sum()) == 0 for sets in function._ARRIVALS.values() for c in sets)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_on_the_tensor_cores_in_16_bit_matches_reference(dtype):
    """16-bit inputs on the tensor cores' decode (REP 2, two runs a group added in the kernel) match
    the reference: its dots take triton_common.mma's precision, the CPU interpreter's fp32 one for
    16-bit operands, whose native 16-bit dot is wrong there."""
    from harness.ops.swat.function import decode_launch, override_decode_config
    B, H, Hkv, d, pos = 2, 4, 2, 64, 1000
    W = 3 * decode_launch(B * H, 1, d, dtype)["BLOCK_W"]  # three tiles
    g = torch.Generator(device="cpu").manual_seed(7)
    q = torch.randn(B, H, d, generator=g).to(DEVICE, dtype)
    kc, vc = (torch.randn(B, W, Hkv, d, generator=g).to(DEVICE, dtype) for _ in range(2))
    slopes = alibi_slopes(H).to(DEVICE)
    with override_decode_config(DOT=True, MIN_PROGRAMS=2 * B * Hkv, SUM_IN_KERNEL=True):
        assert decode_launch(B * H, W, d, dtype, rep=H // Hkv)["splits"] == 2
        got = swat_decode_triton(q, kc, vc, W, pos, slopes, W, sigmoid_bias=0.3)
    want = swat_decode_ref(q.float(), kc.float(), vc.float(), W, pos, slopes, W, sigmoid_bias=0.3)
    assert rel_err(got.float(), want) < 1e-2


def test_decode_step_equals_last_forward_row():
    """Filling the ring buffer from a sequence and decoding its last token gives the forward's last row."""
    T, H, d, W = 41, 2, 64, 16
    q, k, v, _ = inputs(1, T, H, H, d, torch.float32, 3)
    slopes = alibi_slopes(H).to(DEVICE)
    full = swat_attention_triton(q, k, v, slopes, W)
    slots = torch.arange(T - W, T, device=DEVICE) % W
    kc, vc = torch.zeros(1, W, H, d, device=DEVICE), torch.zeros(1, W, H, d, device=DEVICE)
    kc[:, slots], vc[:, slots] = k[:, T - W:], v[:, T - W:]
    step = swat_decode_triton(q[:, -1], kc, vc, W, T - 1, slopes, W)
    assert rel_err(step, full[:, -1]) < 2e-5


def test_unsupported_inputs_are_refused():
    q = torch.randn(1, 8, 2, 48, device=DEVICE)
    slopes = torch.zeros(2, device=DEVICE)
    with pytest.raises(ConfigError, match="head_dim"):
        check_inputs(q, q, q, slopes, 4)
    q = torch.randn(2, 8, 3, 64, device=DEVICE)
    k = torch.randn(2, 8, 2, 64, device=DEVICE)
    with pytest.raises(ConfigError, match="multiple"):
        check_inputs(q, k, k, torch.zeros(3, device=DEVICE), 4)
    q = torch.randn(2, 8, 2, 64, device=DEVICE)
    with pytest.raises(ConfigError, match="batch size 1"):
        check_inputs(q, q, q, slopes, 4, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ConfigError, match="bf16"):
        check_inputs(q.double(), q.double(), q.double(), slopes, 4)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    from harness.ops.swat import function
    monkeypatch.setattr(function, "interpreting", lambda: False)
    q = torch.randn(1, 8, 2, 64)
    with pytest.raises(ConfigError, match="CUDA"):
        check_inputs(q, q, q, torch.zeros(2), 4)


# ---------------------------------------------------------------- GPU, realistic sizes

@gpu_only
@pytest.mark.parametrize("fused", ["off", "atomics", "tma"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("T,W", [(2048, 128), (2000, 512), (2560, 2560)])  # each tile regime, the last full causal
def test_gpu_bf16_realistic(monkeypatch, d, T, W, fused):
    from harness.ops.swat import function
    monkeypatch.setattr(function, "FUSED_DQ", dict.fromkeys(function.FUSED_DQ, fused))
    check_against_reference(2, T, 4, 2, d, W, torch.bfloat16, tol=1e-2, bias=-3.0)


@gpu_only
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_bf16_realistic_with_weights_near_1_over_w(d):
    """Sigmoid bias -log W (the swat_logw variant): most weights sit near 1 / W, where the tanh
    sigmoid's absolute error would show first."""
    check_against_reference(2, 2048, 4, 2, d, 512, torch.bfloat16, tol=1e-2, bias=-math.log(512))


hopper_only = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                 reason="needs a Hopper GPU (compute capability 9.0)")


@hopper_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,T,H,W,bias", [(2, 3000, 2, 2048, -3.0), (1, 4096, 4, 4096, -math.log(4096)),
                                          (3, 777, 2, 5000, -0.5), (2, 1000, 3, 512, -3.0)])
def test_gpu_hopper_passes_match_the_reference(B, T, H, W, bias, dtype):
    """hopper.py's Gluon passes where the dispatcher takes them (head size 128, no GQA): lengths that
    are no multiple of the tiles, several sequences (tiles reaching into a neighbour's rows), a
    window past T, the forward alone below the backward's window (777, 1000), weights near 1 / W."""
    from harness.ops.swat import function
    q = torch.empty(B, T, H, 128, device="cuda", dtype=dtype)
    assert function.hopper_pass("fwd", q, min(W, T), False, q, q)
    check_against_reference(B, T, H, H, 128, W, dtype, tol=1e-2, bias=bias)


@hopper_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,T,H,W", [(2, 4500, 2, 4096), (1, 4096, 4, 4096), (1, 5000, 2, 8000)])
def test_gpu_hopper_one_pass_at_head_size_64_matches_the_reference(B, T, H, W, dtype):
    """hopper.py's one pass at head size 64, where each compute group adds dQ over its own keys
    (hopper.dq_group_columns), as the dispatcher takes it, in both 16-bit dtypes: a length off the
    tiles, several sequences, full causal, a window past T."""
    from harness.ops.swat import function
    q = torch.empty(B, T, H, 64, device="cuda", dtype=dtype)
    assert function.hopper_pass("bwd", q, min(W, T), False, q, q, q) and function.hopper_one_pass(64)
    check_against_reference(B, T, H, H, 64, W, dtype, tol=1e-2, bias=-3.0)


@hopper_only
def test_gpu_hopper_passes_read_views_of_a_fused_projection_as_the_triton_ones_do():
    from harness.ops.swat import function
    qkv = torch.randn(2, 2500, 3, 4, 128, device="cuda", dtype=torch.bfloat16)
    do = torch.randn(2, 2500, 4, 128, device="cuda", dtype=torch.bfloat16)
    slopes = alibi_slopes(4).cuda()
    assert function.hopper_pass("bwd", qkv[:, :, 0], 2048, False, qkv[:, :, 1], qkv[:, :, 2], do)
    results = []
    for path in (contextlib.nullcontext, function.triton_only):
        leaf = qkv.detach().clone().requires_grad_()
        with path():
            o = swat_attention_triton(*leaf.unbind(2), slopes, 2048, -3.0)
            o.backward(do)
        results.append((o, leaf.grad))
    (o, grad), (o_triton, grad_triton) = results
    assert rel_err(o, o_triton) < 1e-2 and rel_err(grad, grad_triton) < 1e-2


@gpu_only
def test_gpu_varlen_realistic():
    check_against_reference(1, 3000, 4, 4, 64, 256, torch.bfloat16, tol=1e-2, bias=-3.0,
                            cu_seqlens=[0, 100, 1300, 1301, 3000])


@gpu_only
@pytest.mark.parametrize("dot", [False, True])
@pytest.mark.parametrize("sum_in_kernel", [False, True])
def test_gpu_decode_realistic(sum_in_kernel, dot):
    """Either kernel (the CUDA cores' or the tensor cores'), at "split"'s programs wanted, GQA."""
    from harness.ops.swat.function import DECODE_CONFIGS, decode_launch, override_decode_config
    B, H, Hkv, d, W = 4, 16, 4, 128, 2048
    q = torch.randn(B, H, d, device="cuda", dtype=torch.bfloat16)
    kc, vc = (torch.randn(B, W, Hkv, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    slopes = alibi_slopes(H).cuda()
    split_programs = DECODE_CONFIGS["split"]["MIN_PROGRAMS"]
    with override_decode_config(DOT=dot, SUM_IN_KERNEL=sum_in_kernel, MIN_PROGRAMS=split_programs):
        assert decode_launch(B * H, W, d, rep=H // Hkv)["splits"] > 1  # runs to add, by either way
        for pos in (100, 5000):
            cache_len = min(pos + 1, W)
            got = swat_decode_triton(q, kc, vc, cache_len, pos, slopes, W, sigmoid_bias=-5.0)
            want = swat_decode_ref(q.float(), kc.float(), vc.float(), cache_len, pos, slopes, W, sigmoid_bias=-5.0)
            assert rel_err(got, want) < 1e-2


def test_torch_compile_has_no_graph_break():
    """fullgraph=True raises on a graph break; forward and q's gradient match eager. On the CPU the
    aot_eager backend (no C++ compiler needed) runs the kernels through the interpreter."""
    from harness.ops.swat.function import swat_attention_triton

    T = 1024 if torch.cuda.is_available() else 40
    q, k, v, do = inputs(2, T, 4, 2, 64, torch.bfloat16 if torch.cuda.is_available() else torch.float32, 5)
    slopes = alibi_slopes(4).to(DEVICE)

    def f(q, k, v):
        return (swat_attention_triton(q, k, v, slopes, 256 if torch.cuda.is_available() else 24).float()
                * do.float()).sum()

    backend = "inductor" if torch.cuda.is_available() else "aot_eager"
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    got = []
    for fn in (compiled, f):
        qq = q.detach().clone().requires_grad_()
        loss = fn(qq, k, v)
        loss.backward()
        got.append((loss.detach(), qq.grad))
    assert rel_err(got[0][0], got[1][0]) < 1e-3
    assert rel_err(got[0][1], got[1][1]) < 1e-3


def test_eager_calls_run_the_operators_bodies_under_plain_autograd():
    """An eager call skips the custom ops' dispatch (most of a small-window step's host time) and
    gives what the custom op gives, bit for bit."""
    from harness.ops.swat.function import _swat_fwd

    q, k, v, do = inputs(1, 40, 4, 2, 64, torch.float32, 6)
    slopes = alibi_slopes(4).to(DEVICE)
    got = []
    for eager in (True, False):
        qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
        o = (swat_attention_triton(qq, kk, vv, slopes, 24, -0.5) if eager
             else _swat_fwd(qq, kk, vv, slopes, None, None, 24, -0.5, 1 / 8))
        assert (type(o.grad_fn).__name__ == "_SwatAttentionBackward") == eager
        o.backward(do)
        got.append((o, qq.grad, kk.grad, vv.grad))
    for a, b in zip(*got):
        assert torch.equal(a, b)


def test_torch_func_reverse_mode_gives_autograds_gradients():
    """torch.func.grad and vjp through the kernels (GQA, a window below T) give autograd's gradients
    bit for bit."""
    q, k, v, do = inputs(1, 40, 4, 2, 64, torch.float32, 7)
    slopes = alibi_slopes(4).to(DEVICE)

    def loss(q, k, v):
        return (swat_attention_triton(q, k, v, slopes, 24, -0.5) * do).sum()
    grads = torch.func.grad(loss, argnums=(0, 1, 2))(q, k, v)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    loss(*leaves).backward()
    for got, leaf in zip(grads, leaves):
        assert torch.equal(got, leaf.grad)
    _, vjp = torch.func.vjp(lambda q: swat_attention_triton(q, k, v, slopes, 24, -0.5), q)
    assert torch.equal(vjp(do)[0], leaves[0].grad)


def test_torch_func_vmap_maps_over_q_k_v_as_a_loop_would():
    """vmap folds the mapped dimension into the kernels' batch: the outputs, and per-sample
    gradients (vmap of grad), equal a loop over the mapped calls bit for bit, whichever dimension is
    mapped and with k and v shared; mapped slopes, which the fold cannot take, are one ConfigError."""
    from harness.config import ConfigError
    N, T, H, Hkv, d = 2, 24, 4, 2, 16
    g = torch.Generator(device="cpu").manual_seed(9)
    q, do = (torch.randn(N, 1, T, H, d, generator=g).to(DEVICE) for _ in range(2))
    k, v = (torch.randn(N, 1, T, Hkv, d, generator=g).to(DEVICE) for _ in range(2))
    slopes = alibi_slopes(H).to(DEVICE)

    def attend(q, k, v):
        return swat_attention_triton(q, k, v, slopes, 12, -0.5)

    def loss(q, k, v, do):
        return (attend(q, k, v) * do).sum()
    assert torch.equal(torch.func.vmap(attend)(q, k, v), torch.stack([attend(q[i], k[i], v[i]) for i in range(N)]))
    shared = torch.func.vmap(attend, in_dims=(1, None, None))(q.transpose(0, 1), k[0], v[0])
    assert torch.equal(shared, torch.stack([attend(q[i], k[0], v[0]) for i in range(N)]))
    per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1, 2)))(q, k, v, do)
    for i in range(N):
        one = torch.func.grad(loss, argnums=(0, 1, 2))(q[i], k[i], v[i], do[i])
        assert all(torch.equal(batched[i], single) for batched, single in zip(per_sample, one))
    with pytest.raises(ConfigError, match="maps over q, k and v only"):
        torch.func.vmap(lambda s: swat_attention_triton(q[0], k[0], v[0], s, 12))(slopes.expand(2, H))


def test_eager_decode_calls_the_operators_body_unless_a_gradient_is_asked():
    """Eagerly a decode step runs the op's body (bit for bit the op's result, without its dispatch);
    with an input that needs a gradient it goes through the op, which says it has no backward."""
    from harness.ops.swat.function import _swat_decode

    g = torch.Generator(device="cpu").manual_seed(8)
    q = torch.randn(2, 4, 64, generator=g).to(DEVICE)
    kc, vc = (torch.randn(2, 32, 2, 64, generator=g).to(DEVICE) for _ in range(2))
    slopes = alibi_slopes(4).to(DEVICE)
    got = swat_decode_triton(q, kc, vc, 32, 40, slopes, 32, -0.5)
    assert got.grad_fn is None
    assert torch.equal(got, _swat_decode(q, kc, vc, slopes, 32, 40, 32, -0.5, 1 / 8))
    o = swat_decode_triton(q.requires_grad_(), kc, vc, 32, 40, slopes, 32)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        o.sum().backward()


def test_fake_tensors_take_the_custom_op():
    """Tracers see the custom op, whose fake implementation gives shapes without running a kernel
    (the eager path would launch one on fake tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    q, k, v, _ = inputs(1, 40, 4, 2, 64, torch.float32, 7)
    with FakeTensorMode() as mode:
        fq, fk, fv, fs = (mode.from_tensor(t) for t in (q, k, v, alibi_slopes(4).to(DEVICE)))
        assert swat_attention_triton(fq, fk, fv, fs, 24).shape == q.shape


def test_a_tuning_sweep_cut_short_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    """`python -m harness.bench.tune --out F` writes each row as it is measured, with its provenance,
    so a sweep stopped by the device call's time limit leaves what it had timed."""
    import json
    import sys

    from harness.bench import tune

    def two_then_cut(on_row, **shape):
        for ms in (1.5, 2.5):
            on_row(dict(d=64, T=8192, W=128, what="fwd", ms=ms, note=""))
        raise KeyboardInterrupt  # the sweep stops here (a time limit, a crash): rows so far are on disk
    monkeypatch.setattr(tune, "sweep", two_then_cut)
    monkeypatch.setattr(tune, "checked_sweeps", lambda text: ["tiles"])  # past the refusal of a machine without a GPU
    monkeypatch.setattr(sys, "argv", ["tune", "--sweeps", "tiles", "--out", str(tmp_path / "rows.jsonl")])
    with pytest.raises(KeyboardInterrupt):
        tune.main()
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [r["ms"] for r in rows] == [1.5, 2.5]
    assert all(r["command"].startswith("python -m harness.bench.tune --sweeps tiles") and r["date"] for r in rows)


def test_the_spread_sweep_times_the_dispatchers_kernels_and_summarises_each_shapes_rounds(tmp_path, monkeypatch,
                                                                                      capsys):
    """`--sweeps spread` runs outside triton_only (it times what the bench times, Hopper passes
    included), gets the windows asked for, and prints each shape's fastest, median and slowest
    round, eager and graphed, and none of its rows as a config's best."""
    import json
    import sys

    from harness.bench import tune
    from harness.ops.swat import function
    seen = []

    def rounds(on_row, windows):
        seen.append((windows, dict(function.HOPPER_MIN_WINDOW)))
        rows = [dict(d=128, T=4096, W=128, what="bwd spread", round=i, ms=ms, ms_graph=graph, note="")
                for i, (ms, graph) in enumerate(((1.25, 0.84), (0.84, 0.83), (1.09, None)))]
        for row in rows:
            on_row(row)
        return rows
    monkeypatch.setattr(tune, "spread_sweep", rounds)
    monkeypatch.setattr(tune, "checked_sweeps", lambda text: ["spread"])  # past the refusal of a machine without a GPU
    monkeypatch.setattr(sys, "argv", ["tune", "--sweeps", "spread", "--windows", "128", "--out", str(tmp_path / "r")])
    tune.main()
    assert seen == [((128,), function.HOPPER_MIN_WINDOW)]
    written = [json.loads(line) for line in (tmp_path / "r").read_text().splitlines()]
    assert [r["round"] for r in written] == [0, 1, 2] and all(r["command"] for r in written)
    out = capsys.readouterr().out
    assert "d=128 T=4096 W=128 (3 rounds, fastest / median / slowest): eager 0.840 / 1.090 / 1.250 ms, " \
           "graph 0.830 / 0.835 / 0.840 ms" in out
    assert "bwd spread" not in out.split("backward, round to round:")[0]
    assert tune.spread_summary([dict(d=64, T=4096, W=128, what="bwd spread", ms=None, ms_graph=None)]) == \
        ["  d=64 T=4096 W=128 (1 round, fastest / median / slowest): eager: none timed, graph: none timed"]


def test_sdpa_backward_asks_the_gradients_of_one_kept_forward_again_at_each_call():
    """The probes' SDPA peer at W = T: inputs in the kernel's [B, T, H, d] layout, gradients equal to
    SDPA's own backward in SDPA's layout, and the same on a second call (the graph is kept)."""
    from harness.bench import tune
    gen = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(2, 16, 4, 8, generator=gen, dtype=torch.float64) for _ in range(4))
    backward = tune.sdpa_backward(q, k, v, do)
    first, second = backward(), backward()
    qs, ks, vs = (t.transpose(1, 2).clone().requires_grad_() for t in (q, k, v))
    torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True).backward(do.transpose(1, 2))
    for got, again, want in zip(first, second, (qs, ks, vs)):
        torch.testing.assert_close(got, want.grad)
        torch.testing.assert_close(again, want.grad)


def test_the_order_sweep_times_the_dispatchers_kernels_and_names_each_shapes_fastest_order(monkeypatch, capsys):
    """`--sweeps order` runs outside triton_only with the windows asked for, and the summary names the
    fastest program order per pass and shape, T included (the sweep runs three lengths)."""
    import sys

    from harness.bench import tune
    from harness.ops.swat import function
    seen = []

    def orders(on_row, windows):
        seen.append((windows, dict(function.HOPPER_MIN_WINDOW)))
        return [dict(d=128, T=T, W=2048, what="fwd order", order=order, ms=ms, note="")
                for T, times in ((4096, (0.74, 1.28, 0.70)), (16384, (0.88, 0.96, 0.90)))
                for order, ms in zip(function.PROGRAM_ORDERS, times)]
    monkeypatch.setattr(tune, "order_sweep", orders)
    monkeypatch.setattr(tune, "checked_sweeps", lambda text: ["order"])  # past the refusal of a machine without a GPU
    monkeypatch.setattr(sys, "argv", ["tune", "--sweeps", "order", "--windows", "2048"])
    tune.main()
    assert seen == [((2048,), function.HOPPER_MIN_WINDOW)]
    out = capsys.readouterr().out
    assert "('fwd order', 128, None, 4096, 2048): order=rows  0.7000 ms" in out
    assert "('fwd order', 128, None, 16384, 2048): order=pairs  0.8800 ms" in out


def test_the_tuning_summary_takes_decode_rows_which_have_no_length(monkeypatch, capsys):
    """The summary's key holds T (the order sweep's three lengths); the decode sweep's rows have none."""
    import sys

    from harness.bench import tune
    row = dict(d=64, B=8, H=16, W=512, what="decode sdpa", ms=0.006)
    monkeypatch.setattr(tune, "decode_sweep", lambda on_row: [row])
    monkeypatch.setattr(tune, "checked_sweeps", lambda text: ["decode"])  # past the refusal of a machine without a GPU
    monkeypatch.setattr(sys, "argv", ["tune", "--sweeps", "decode"])
    tune.main()
    assert "('decode sdpa', 64, 8, None, 512):   0.0060 ms" in capsys.readouterr().out


def test_a_tuning_sweep_takes_the_windows_head_sizes_and_length_asked_for_and_refuses_bad_ones(tmp_path, monkeypatch,
                                                                                             capsys):
    """`--windows 512,T` sweeps the 340m model's window (and W = T) instead of the default three;
    `--head-dims 64 --length 4096` times one head size at a shorter length (B * T kept), in the tiles
    and sigmoid sweeps alike. A window that is no size above 0, a head size the configs do not tune,
    or a length that does not divide the sweep's tokens gets one error line before --out is opened."""
    import sys

    from harness.bench import tune
    asked = []
    monkeypatch.setattr(tune, "sweep", lambda on_row, **shape: asked.append(("tiles", shape)) or [])
    monkeypatch.setattr(tune, "sigmoid_sweep", lambda on_row, **shape: asked.append(("sigmoid", shape)) or [])
    monkeypatch.setattr(tune, "checked_sweeps", lambda text: text.split(","))  # past the refusal without a GPU
    out = tmp_path / "rows.jsonl"
    for argv in (["--windows", "512,T"], [], ["--sweeps", "tiles,sigmoid", "--head-dims", "64", "--length", "4096"]):
        monkeypatch.setattr(sys, "argv", ["tune", "--sweeps", "tiles", "--out", str(out), *argv])
        tune.main()
    both = dict(windows=(128, 2048, "T"), head_dims=(64,), seq_len=4096)
    assert asked == [("tiles", dict(windows=(512, "T"), head_dims=(64, 128))),
                     ("tiles", dict(windows=(128, 2048, "T"), head_dims=(64, 128))), ("tiles", both), ("sigmoid", both)]
    for argv, needle in [(["--windows", bad], "--windows takes comma-separated window sizes above 0")
                         for bad in ("0", "512,x", "-4", "")] + [
                         (["--head-dims", "96"], "--head-dims takes 64 and 128, the head sizes the kernels' configs"),
                         (["--head-dims", "64,x"], "--head-dims takes comma-separated integers"),
                         (["--length", "3000"], "--length takes one sequence length that divides the 65536 tokens"),
                         (["--length", "4096,8192"], "--length takes one sequence length")]:
        out.unlink(missing_ok=True)
        monkeypatch.setattr(sys, "argv", ["tune", *argv, "--out", str(out)])
        with pytest.raises(SystemExit) as stop:
            tune.main()
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(f"error: {needle}"), err
        assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_bench_kernels_writes_results_and_resumes(tmp_path):
    """`harness bench kernels` on the CPU (interpreter): files written, a second run skips what is measured."""
    from harness.bench.kernels import BenchSpec, read_csv, run_kernel_bench
    spec = BenchSpec(head_dims=[64], lengths=[32], windows=[16, "T"], tokens=32, hidden=64,
                     peers=("swat", "sdpa", "flex"), modes=("fwd",), decode_contexts=())
    out = run_kernel_bench(spec, tmp_path, log=lambda m: None)
    rows = read_csv(out / "kernels.csv")
    by = {(r["peer"], r["window"]): r for r in rows}
    assert by[("swat", 16)]["ms"] > 0 and by[("swat", 32)]["ms"] > 0 and by[("sdpa", 32)]["ms"] > 0
    assert by[("sdpa", 16)]["status"] == "full causal only (W >= T)"
    assert all(r["graph_ms"] is None and r["host_ms"] is None for r in rows)  # no CUDA graphs on the CPU
    text = (out / "kernels.md").read_text()
    assert "| 64 | 32 | T |" in text and "- SWAT's passes in this command's rows: the Triton kernels" in text
    assert (out / "kernels.png").is_file() and (out / "run.json").is_file()
    run_kernel_bench(spec, tmp_path, log=lambda m: None)
    assert read_csv(out / "kernels.csv") == rows


def test_bench_kernels_writes_a_progress_line_per_point_into_a_log(tmp_path, capsys):
    """Not a terminal (a device call's log): a plain line per measured point, not a bar drawn at the end."""
    from harness.cli import main
    assert main(["bench", "kernels", "--head-dims", "64", "--lengths", "32", "--windows", "16,T", "--tokens", "32",
                 "--hidden", "64", "--peers", "swat", "--modes", "fwd", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bench kernels 1/2: d=64 T=32 W=16" in out and "bench kernels 2/2: d=64 T=32 W=32" in out


def test_bench_kernels_decode_puts_sdpa_over_the_same_buffer_beside_swat(tmp_path):
    """Decode mode: per batch and context, SWAT and SDPA over the same W-slot buffer, SDPA over the
    full cache, and a table with their ratios."""
    from harness.bench.kernels import BenchSpec, read_csv, run_kernel_bench
    spec = BenchSpec(head_dims=[64], lengths=[32], windows=[16], tokens=32, hidden=64, peers=("swat",),
                     modes=("decode",), decode_contexts=(64,), decode_batches=(1, 2))
    out = run_kernel_bench(spec, tmp_path, log=lambda m: None)
    rows = read_csv(out / "kernels.csv")
    got = {(r["peer"], r["batch"], r["window"]) for r in rows if r["ms"] and r["ms"] > 0}
    assert got == {(p, B, W) for B in (1, 2) for p, W in (("swat", 16), ("sdpa", 16), ("sdpa", 64))}
    text = (out / "kernels.md").read_text()
    assert "| swat W=16 us | sdpa W=16 us | sdpa / swat W=16 | sdpa full us |" in text
    assert text.count("| 64 | 1 | 1 | 64 |") == 1 and text.count("| 64 | 2 | 1 | 64 |") == 1
    assert (out / "decode.png").is_file()


def test_decode_timings_read_their_cache_from_hbm():
    """A decode step is timed over copies of its cache in turn, as many as one pass needs to read
    at least twice the L2 (a cache that fits in L2, timed alone over and over, is read from L2);
    a cache larger than that alone is one copy, and the count stops at COLD_COPIES_MOST. On the
    CPU there is no L2 to leave: one copy, the tensors themselves, and the time is per step."""
    from harness.bench.timing import COLD_COPIES_MOST, copies_for_cold_l2, decode_ms, l2_cold_copies
    mb = 1 << 20
    assert copies_for_cold_l2(mb // 2, 50 * mb) == 200  # B = 1, W = 128, d = 64: K and V, 0.5 MB
    assert copies_for_cold_l2(67 * mb, 50 * mb) == 2 and copies_for_cold_l2(537 * mb, 50 * mb) == 1
    assert copies_for_cold_l2(1024, 50 * mb) == COLD_COPIES_MOST
    k, v = torch.zeros(2, 3), torch.ones(2, 3)
    (only,) = l2_cold_copies(k, v)
    assert only[0] is k and only[1] is v
    seen = []
    assert decode_ms(lambda a, b: seen.append((a, b)), [(k, v), (v, k)], False) > 0
    assert seen[:2] == [(k, v), (v, k)]


@gpu_only
def test_gpu_bench_timings_tell_the_host_share_and_read_decode_caches_from_hbm():
    """On a GPU: host_ms gives a SWAT step's host time (less than the 50 ms hold it sits behind) and
    None for a call that waits on the GPU itself; l2_cold_copies gives enough copies of the bench's
    smallest decode cache (batch 1, W = 128, H * d = 1024: 512 KB, fewer copies than the cap on an
    H100's or H200's L2) to read at least twice the L2, each its own memory with the same values, and
    decode_ms a time per step over them."""
    from harness.bench.timing import decode_ms, host_ms, l2_cold_copies
    from harness.ops.swat.function import swat_attention_triton, swat_decode_triton
    q, k, v, do = inputs(2, 512, 4, 4, 64, torch.bfloat16, 0)
    slopes = alibi_slopes(4).cuda()
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def step():
        swat_attention_triton(q, k, v, slopes, 128).backward(do)
    step()
    got = host_ms(step, grad_to_none=[q, k, v])
    assert got is not None and 0 < got < 50
    assert host_ms(lambda: (q * 2, torch.cuda.synchronize())) is None
    kc, vc = (torch.randn(1, 128, 16, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    copies = l2_cold_copies(kc, vc)
    l2 = torch.cuda.get_device_properties(kc.device).L2_cache_size
    assert len(copies) * 2 * kc.numel() * kc.element_size() >= 2 * l2
    assert len({c[0].data_ptr() for c in copies}) == len(copies) and all(torch.equal(c[1], vc) for c in copies)
    qd, decode_slopes = torch.randn(1, 16, 64, device="cuda", dtype=torch.bfloat16), alibi_slopes(16).cuda()
    assert decode_ms(lambda kc, vc: swat_decode_triton(qd, kc, vc, 128, 1000, decode_slopes, 128), copies, True,
                     warmup_ms=5, rep_ms=10) > 0


@gpu_only
def test_gpu_graph_time_of_a_swat_step_replays_it_without_the_host():
    """On a GPU: a SWAT forward + backward (the bench's fwd_bwd call) is captured into a CUDA graph
    and replayed, gradients dropped before each call, with no warning; its time leaves out the
    host's waits that the eager time may hold, so it is not above it (the eager timing also
    flushes L2 between calls, which the replays do not)."""
    from harness.bench.kernels import graph_ms
    from harness.bench.timing import median_ms
    from harness.ops.swat.function import swat_attention_triton
    q, k, v, do = inputs(2, 2048, 8, 8, 64, torch.bfloat16, 0)
    slopes = alibi_slopes(8).cuda()
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def step():
        swat_attention_triton(q, k, v, slopes, 128).backward(do)
    logged = []
    replayed = graph_ms(step, [q, k, v], "swat", logged.append)
    assert logged == [] and 0 < replayed <= 1.2 * median_ms(step, True, grad_to_none=[q, k, v])


class HeldGpu:
    """torch.cuda's events, spin kernel and syncs as host_ms uses them, with the hold still running
    (or over) when the calls have been enqueued."""

    def __init__(self, over: bool):
        self.over, self.slept = over, []
        gpu = self

        class Event:
            def __init__(self, enable_timing=False):
                pass

            def record(self):
                pass

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return 2.0  # ms for the calibration's 2**22 cycles

            def query(self):
                return gpu.over
        self.Event = Event

    def install(self, monkeypatch):
        from harness.bench import timing
        monkeypatch.setattr(timing, "_SLEEP_CYCLES_PER_MS", [])
        monkeypatch.setattr(torch.cuda, "Event", self.Event)
        monkeypatch.setattr(torch.cuda, "_sleep", self.slept.append)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)


@pytest.mark.parametrize("over", [False, True])
def test_host_ms_times_the_host_alone_or_says_it_cannot(monkeypatch, over):
    """The calls are enqueued behind a spin kernel of hold_ms (its cycles from a calibration): while
    it still runs, their host time per call is returned (gradients dropped before each call, as
    do_bench drops them); where it is over, a call may have waited on the GPU, and None says so."""
    from harness.bench.timing import host_ms
    gpu = HeldGpu(over)
    gpu.install(monkeypatch)
    x = torch.ones(2, requires_grad=True)
    seen = []

    def call():
        seen.append(x.grad)
        (x * 2).sum().backward()
    got = host_ms(call, grad_to_none=[x], calls=3, hold_ms=10.0)
    assert gpu.slept == [1 << 22, int((1 << 22) / 2.0 * 10.0)]  # calibration, then the hold
    assert seen == [None, None, None]
    assert got is None if over else 0 < got < 1e3


def test_kernel_tables_show_swat_host_time_only_where_measured(tmp_path):
    """Files written before host_ms was measured read as rows without it, and their table has no
    host column; rows with it show SWAT's host time beside its GPU-timed one."""
    from harness.bench.kernels import FIELDS, markdown, ratio_table, read_csv, to_csv
    old = [f for f in FIELDS if f not in ("host_ms", "graph_ms")]  # a file of 2026-12-06
    path = tmp_path / "kernels.csv"
    line = dict(mode="fwd", head_dim=64, seq_len=4096, window=128, batch=16, heads=16, activation="sigmoid",
                tflops=1.0, status="ok", date="2026-12-07", commit="abc1234")
    path.write_text(",".join(old) + "\n" + "\n".join(",".join(str({**line, "peer": p, "ms": ms}[f]) for f in old)
                                                   for p, ms in (("swat", 0.5), ("flex", 0.8))) + "\n")
    rows = read_csv(path)
    info = dict(command="c", device="d", date="t", commit="abc1234", versions={}, dtype="bf16", tokens=65536,
                hidden=1024)
    assert [r["host_ms"] for r in rows] == [None, None]
    header, body = ratio_table(rows, "fwd")
    assert "swat host ms" not in header and body[0][-1] == "1.60x" and "host" not in markdown(rows, info)
    rows[0]["host_ms"] = 0.45
    path.write_text(to_csv(rows))
    rows = read_csv(path)
    header, body = ratio_table(rows, "fwd")
    assert header[5:7] == ["swat ms", "swat host ms"] and body[0][5:7] == ["0.500", "0.450"]
    assert "the row times the host rather than the kernels" in markdown(rows, info)


def test_kernel_tables_put_the_graph_ratio_beside_the_eager_one(tmp_path):
    """graph_ms (a call replayed from a CUDA graph) reads back from kernels.csv; the table shows
    SWAT's and the ratio of the fastest peer's graph time to SWAT's beside the eager ratio, blank for
    a shape whose graph times are missing; files written before it read as rows without it."""
    from harness.bench.kernels import FIELDS, markdown, ratio_table, read_csv, to_csv
    line = dict(mode="fwd_bwd", head_dim=128, seq_len=16384, batch=4, heads=8, activation="sigmoid", tflops=1.0,
                host_ms=None, status="ok", date="2026-12-08", commit="abc1234")
    rows = [dict(line, window=128, peer="swat", ms=1.0, graph_ms=0.5),
            dict(line, window=128, peer="flex", ms=1.25, graph_ms=1.2),
            dict(line, window=128, peer="fla", ms=1.3, graph_ms=1.1),
            dict(line, window=512, peer="swat", ms=1.60, graph_ms=None),
            dict(line, window=512, peer="flex", ms=2.40, graph_ms=2.30)]
    path = tmp_path / "kernels.csv"
    path.write_text(to_csv(rows))
    header, body = ratio_table(read_csv(path), "fwd_bwd")
    assert header[5:8] == ["swat ms", "swat graph ms", "swat TFLOP/s"] and header[-3:] == \
        ["fastest peer", "ratio (peer / swat)", "ratio in graphs"]
    assert body[0][5:7] == ["1.000", "0.500"] and body[0][-3:] == ["flex", "1.25x", "2.20x"]  # fla's graph: 1.1
    assert body[1][-3:] == ["flex", "1.50x", ""]
    info = dict(command="c", device="d", date="t", commit="abc1234", versions={}, dtype="bf16", tokens=65536,
                hidden=1024)
    assert "ratio in graphs = the fastest peer's graph time" in markdown(read_csv(path), info)
    old = [f for f in FIELDS if f != "graph_ms"]
    path.write_text(",".join(old) + "\n" + ",".join(str(rows[0][f]).replace("None", "") for f in old) + "\n")
    (row,) = read_csv(path)
    assert row["graph_ms"] is None and "ratio in graphs" not in ratio_table([row], "fwd_bwd")[0]


def test_graph_time_replays_the_call_with_its_gradients_dropped_or_says_why_not(monkeypatch):
    """graph_ms asks timing.median_ms for CUDA-graph replays with the call's gradients dropped
    before each replay, as do_bench_cudagraph drops them; a call that cannot be captured gives None
    and one warning line naming the peer, and the bench goes on."""
    from harness.bench import kernels, timing
    asked, logged = [], []
    monkeypatch.setattr(kernels, "median_ms", lambda *a, **kw: asked.append((a, kw)) or 0.8)
    x = torch.ones(2, requires_grad=True)
    assert kernels.graph_ms(print, [x], "swat", logged.append) == 0.8
    assert asked[0][1] == dict(rep_ms=timing.GRAPH_REP_MS, grad_to_none=[x], cuda_graph=True)

    def cannot_capture(*a, **kw):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(kernels, "median_ms", cannot_capture)
    assert kernels.graph_ms(print, [x], "fla", logged.append) is None
    assert logged == ["warning: fla: no CUDA-graph time (RuntimeError: operation not permitted when stream is "
                      "capturing)"]
    import triton.testing
    seen = []
    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", lambda fn, **kw: seen.append(kw) or 1.0)
    assert timing.median_ms(lambda: None, True, rep_ms=5, grad_to_none=[x], cuda_graph=True) == 1.0
    assert seen == [dict(rep=5, grad_to_none=[x], return_mode="median")]


# ---------------------------------------------------------------- launch configs that do not fit

class SmallSharedMemory:
    """A kernel launcher that refuses (as Triton does on loading the compiled kernel) every config
    needing more than `limit` tile elements x stages of shared memory, and records each launch."""

    def __init__(self, limit: int):
        self.limit, self.launched = limit, []

    def __getitem__(self, grid):
        from triton.runtime.errors import OutOfResources

        def run(*args, BLOCK_M, BLOCK_N, num_stages, **kwargs):
            self.launched.append((grid, BLOCK_M, BLOCK_N, num_stages))
            need = BLOCK_M * BLOCK_N * num_stages
            if need > self.limit:
                raise OutOfResources(need, self.limit, "shared memory")
        return run


def test_a_config_the_gpu_cannot_take_falls_back_to_a_smaller_one(monkeypatch):
    """A GPU with less shared memory than a tuned config needs (the configs were tuned for 16-bit
    inputs on an H100; fp32 doubles every tile): the launch takes the first smaller config that
    fits, remembers it, and never swaps configs while a tuning sweep names one."""
    from triton.runtime.errors import OutOfResources

    from harness.ops.swat import function
    monkeypatch.setattr(function, "interpreting", lambda: False)  # the tuned table, as on a GPU
    monkeypatch.setattr(function, "_FITTED", {})
    q = torch.zeros(1, 8, 1, 128, dtype=torch.bfloat16)
    kernel = SmallSharedMemory(limit=128 * 32)  # fwd/128/large is 128 x 64 tiles in 3 stages
    function.launch(kernel, "fwd", q, 4096, lambda bm, bn: (bm, bn), (), {})
    assert kernel.launched == [((128, 64), 128, 64, 3), ((128, 64), 128, 64, 2), ((128, 64), 128, 64, 1),
                               ((128, 32), 128, 32, 1)]
    function.launch(kernel, "fwd", q, 4096, lambda bm, bn: (bm, bn), (), {})
    assert kernel.launched[-1] == ((128, 32), 128, 32, 1) and len(kernel.launched) == 5  # remembered
    with function.override_configs({("fwd", 128, "large"): function._cfg(128, 64, 8, 3)}):
        with pytest.raises(OutOfResources):
            function.launch(kernel, "fwd", q, 4096, lambda bm, bn: (bm, bn), (), {})
    with pytest.raises(ConfigError, match="does not fit this GPU even with 16x16 tiles"):
        function.launch(SmallSharedMemory(limit=16), "dq", q, 4096, lambda bm, bn: (bm, bn), (), {})


@gpu_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_gpu_every_dtype_and_head_size_the_dispatcher_accepts_runs(dtype, d):
    """Forward and backward at every head size and dtype the dispatcher sends to the kernels (B=1,
    T=3000, W=1000 crashed the backward in fp32 at d=128 before the launch fell back), also full
    causal: the large regime, where d <= 64 adds dQ in the dK/dV pass."""
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for window in (1000, 3000):
        check_against_reference(1, 3000, 4, 2, d, window, dtype, tol=tol, bias=-3.0)


@gpu_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_gpu_decode_at_every_dtype_and_head_size_the_dispatcher_accepts(dtype, d):
    """A decode step at every head size and dtype, at each of DECODE_CONFIGS' launches, so on both
    of the decode's kernels (the tensor cores' takes fp32 as "ieee" dots)."""
    from harness.ops.swat.function import DECODE_CONFIGS, override_decode_config
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    q = torch.randn(2, 4, d, device="cuda", dtype=dtype)
    kc, vc = (torch.randn(2, 1000, 2, d, device="cuda", dtype=dtype) for _ in range(2))
    slopes = alibi_slopes(4).cuda()
    want = swat_decode_ref(q.float(), kc.float(), vc.float(), 1000, 4321, slopes, 1000, sigmoid_bias=-3.0)
    for config in ("split", "dot", "whole"):  # each config's launch, whatever this batch would take
        with override_decode_config(**DECODE_CONFIGS[config]):
            got = swat_decode_triton(q, kc, vc, 1000, 4321, slopes, 1000, sigmoid_bias=-3.0)
        assert rel_err(got, want) < tol, config
