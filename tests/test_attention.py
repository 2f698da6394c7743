"""Softmax attention's flex path and the attention mixer's in-place decode caches.

The flex path (the GPU's route for sliding windows and packed documents without flash-attn) runs
on the CPU here through torch.compile's C++ backend: the block-mask cache, power-of-two padding of
varying lengths, tracing into a compiled model, and outputs against the dense reference (forward
only: flex has no CPU backward). The decode caches: written in place, positions where the forward
puts them, the full cache's growth, steps after a prompt equal to the forward. The GPU test (run
on the device) checks that evaluation at many lengths compiles once per power of two.
"""

from __future__ import annotations

import pytest
import torch

import harness.model.attention as attention
import harness.ops.softmax as softmax_ops
from harness.config import load_config
from harness.model.attention import (
    FULL_CACHE_MIN_GROWTH,
    AttentionMixer,
    CausalAttention,
    SlidingAttention,
    SwatAttention,
)
from harness.ops.alibi import alibi_slopes
from harness.ops.softmax import softmax_attention
from harness.ops.swat.reference import swat_attention_ref

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run on the device)")


@pytest.fixture
def eager_block_masks(monkeypatch):
    """The uncompiled create_block_mask in place of the compiled one, counting builds."""
    from torch.nn.attention.flex_attention import create_block_mask
    built = []

    def build(*args, **kwargs):
        built.append(args[3])
        return create_block_mask(*args, **kwargs)
    monkeypatch.setattr(softmax_ops, "_compiled_create_block_mask", lambda: build)
    monkeypatch.setattr(softmax_ops, "_last_block_mask", None)
    return built


def test_block_mask_is_built_once_per_length_window_and_boundaries(eager_block_masks):
    cu = torch.tensor([0, 100, 250, 300], dtype=torch.int32)
    first = softmax_ops._flex_block_mask(300, 64, cu, "cpu")
    assert softmax_ops._flex_block_mask(300, 64, cu, "cpu") is first  # the next layer, same batch
    assert eager_block_masks == [300]
    other_docs = torch.tensor([0, 150, 300], dtype=torch.int32)
    assert softmax_ops._flex_block_mask(300, 64, other_docs, "cpu") is not first
    # equal boundaries in a new tensor (the next batch) build again: compared without reading values
    assert softmax_ops._flex_block_mask(300, 64, cu.clone(), "cpu") is not first
    again = softmax_ops._flex_block_mask(300, 64, cu, "cpu")
    cu[1] = 120  # changed in place: the version counter moves
    changed = softmax_ops._flex_block_mask(300, 64, cu, "cpu")
    assert changed is not again
    q_idx, kv_idx = torch.tensor(110), torch.tensor(95)  # other documents before, the same one after
    assert not again.mask_mod(0, 0, q_idx, kv_idx) and changed.mask_mod(0, 0, q_idx, kv_idx)
    assert softmax_ops._flex_block_mask(300, 32, cu, "cpu") is not changed
    assert softmax_ops._flex_block_mask(256, 32, None, "cpu") is softmax_ops._flex_block_mask(256, 32, None, "cpu")
    assert softmax_ops._flex_block_mask(384, 32, None, "cpu").shape[-2:] == (384, 384)
    assert eager_block_masks == [300, 300, 300, 300, 300, 300, 256, 384]


def test_compiled_block_mask_equals_the_eager_one():
    from torch.nn.attention.flex_attention import create_block_mask
    cu = torch.tensor([0, 70, 211, 300], dtype=torch.int32)
    mask_mod = softmax_ops._mask_mod(300, 64, cu, "cpu")
    compiled = softmax_ops._compiled_create_block_mask()(mask_mod, None, None, 300, 300, device="cpu")
    eager = create_block_mask(mask_mod, None, None, 300, 300, device="cpu")
    torch.testing.assert_close(compiled.to_dense(), eager.to_dense())


@pytest.mark.parametrize("T,window,docs,slopes", [(300, 64, True, "none"), (200, 64, False, "none"),
                                                  (300, 64, True, "balanced")])
def test_flex_path_matches_the_dense_reference(monkeypatch, T, window, docs, slopes):
    """Documents keep T exact; without them T=200 is padded to 256. Two layers with the same
    boundaries share one mask. ALiBi slopes (SWAT's softmax ablation) enter as a score_mod.
    Forward only: flex_attention has no CPU backward (the GPU tests check gradients)."""
    monkeypatch.setattr(softmax_ops, "_last_block_mask", None)
    torch.manual_seed(0)
    H, Hkv, d = 4, 2, 16
    q, k, v = torch.randn(1, T, H, d), torch.randn(1, T, Hkv, d), torch.randn(1, T, Hkv, d)
    cu = torch.tensor([0, 70, 211, T], dtype=torch.int32) if docs else None
    alibi = alibi_slopes(H, slopes) * 8  # steeper than a 4-head model's, so that a lost bias shows

    def flex(q, k, v):
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        return softmax_ops._flex_attention(qt, kt, vt, window, cu, gqa=True,
                                         slopes=None if slopes == "none" else alibi).transpose(1, 2)

    def ref(q, k, v):
        return swat_attention_ref(q, k, v, alibi, window, activation="softmax", cu_seqlens=cu)

    with torch.no_grad():
        first = flex(q, k, v)
        mask = softmax_ops._last_block_mask[-1]
        second = flex(first, k, v)  # the next layer, over the first's output
        assert softmax_ops._last_block_mask[-1] is mask
        torch.testing.assert_close(first, ref(q, k, v), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(second, ref(first, k, v), atol=1e-5, rtol=1e-5)
    padded = T if docs else 256
    assert softmax_ops._last_block_mask[0] == (padded, window, torch.device("cpu"))


@pytest.mark.parametrize("window,docs", [(6, True), (64, False)])
def test_dense_path_carries_alibi_slopes(window, docs):
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 20, 4, 8), torch.randn(1, 20, 2, 8), torch.randn(1, 20, 2, 8)
    cu = torch.tensor([0, 9, 20], dtype=torch.int32) if docs else None
    slopes = alibi_slopes(4, "balanced") * 8
    ref = swat_attention_ref(q, k, v, slopes, window, activation="softmax", cu_seqlens=cu)
    torch.testing.assert_close(softmax_attention(q, k, v, window, cu, slopes=slopes), ref, atol=1e-5, rtol=1e-5)


def test_swat_softmax_ablation_takes_the_softmax_paths(monkeypatch):
    """SWAT with activation=softmax runs softmax_attention with its slopes (not the O(T^2)
    reference) and equals the reference definition."""
    import dataclasses
    cfg = dataclasses.replace(load_config("tiny").model, window=8, activation="softmax")
    torch.manual_seed(0)
    mixer = SwatAttention(cfg).eval()
    calls = []
    monkeypatch.setattr(attention, "swat_attention", lambda *a, **k: calls.append("swat_attention"))
    x = torch.randn(1, 30, cfg.hidden_size)
    q, k, v = mixer._qkv(x, torch.arange(30), 30)
    with torch.no_grad():
        out = mixer._attend(q, k, v)
    assert calls == []
    ref = swat_attention_ref(q, k, v, mixer.slopes, 8, activation="softmax")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attend", ["swat_sigmoid", "softmax_cpu"])
def test_packed_documents_are_attended_one_by_one(attend):
    """A packed row equals its documents run separately (no attention across a boundary; memory of
    the longest document, not of the row); tokens outside cu_seqlens' range form their own documents."""
    torch.manual_seed(0)
    H, d, window = 4, 8, 16
    slopes = alibi_slopes(H, "balanced")

    def run(q, k, v, cu=None):
        if attend == "swat_sigmoid":
            return swat_attention_ref(q, k, v, slopes, window, cu_seqlens=cu)
        return softmax_attention(q, k, v, window, cu, slopes=slopes)

    q, k, v = torch.randn(1, 50, H, d), torch.randn(1, 50, 2, d), torch.randn(1, 50, 2, d)
    cu = torch.tensor([5, 20, 44], dtype=torch.int32)  # documents [0, 5) and [44, 50) lie outside
    out = run(q, k, v, cu)
    pieces = [run(q[:, a:b], k[:, a:b], v[:, a:b]) for a, b in [(0, 5), (5, 20), (20, 44), (44, 50)]]
    torch.testing.assert_close(out, torch.cat(pieces, dim=1))
    v2 = v.clone()
    v2[:, 5:20] += 1.0  # another document's values change: the third document's outputs do not
    torch.testing.assert_close(run(q, k, v2, cu)[:, 20:], out[:, 20:])
    with pytest.raises(ValueError, match="batch size 1"):
        run(torch.randn(2, 10, H, d), torch.randn(2, 10, 2, d), torch.randn(2, 10, 2, d), cu)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("window,docs", [(24, False), (7, True), (500, False)])
def test_blocked_reference_equals_the_dense_one(activation, window, docs):
    """Blocks of 16 queries over 70 tokens (the last block partial; windows shorter and longer than
    a block, and over the whole sequence), GQA, packed documents: the same output as the oracle."""
    from harness.ops.swat.blocked import swat_attention_blocked
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 70, 4, 8), torch.randn(1, 70, 2, 8), torch.randn(1, 70, 2, 8)
    slopes = alibi_slopes(4, "balanced")
    cu = torch.tensor([0, 33, 70], dtype=torch.int32) if docs else None
    got = swat_attention_blocked(q, k, v, slopes, window, activation, 0.5, cu_seqlens=cu, block=16)
    want = swat_attention_ref(q, k, v, slopes, window, activation, 0.5, cu_seqlens=cu)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("slopes", [None, "balanced"])
def test_cpu_softmax_over_more_than_one_block_of_queries(slopes):
    """On a CPU a windowed sequence is attended in blocks of queries (here 100 per block, the last
    one partial, up to QUERY_BLOCK + 300 tokens): the same as the dense definition."""
    from harness.ops.banded import QUERY_BLOCK
    torch.manual_seed(0)
    T = QUERY_BLOCK + 300
    q, k, v = torch.randn(1, T, 2, 8), torch.randn(1, T, 1, 8), torch.randn(1, T, 1, 8)
    s = None if slopes is None else alibi_slopes(2, slopes)
    ref = swat_attention_ref(q, k, v, torch.zeros(2) if s is None else s, 100, activation="softmax")
    torch.testing.assert_close(softmax_attention(q, k, v, 100, slopes=s), ref, atol=1e-5, rtol=1e-5)


def test_window_over_the_whole_sequence_is_causal_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 20, 4, 8), torch.randn(2, 20, 2, 8), torch.randn(2, 20, 2, 8)
    ref = swat_attention_ref(q, k, v, torch.zeros(4), 20, activation="softmax")
    for window in (20, 64):
        torch.testing.assert_close(softmax_attention(q, k, v, window), ref, atol=1e-5, rtol=1e-5)


def test_flex_path_traces_into_a_compiled_model(monkeypatch):
    """Under torch.compile (train.compile) the mask and flex go into the caller's graph: no graph
    break, no cache entry."""
    monkeypatch.setattr(softmax_ops, "_last_block_mask", None)
    torch.manual_seed(0)
    T, H, d = 300, 4, 16
    q, k, v = torch.randn(1, T, H, d), torch.randn(1, T, 2, d), torch.randn(1, T, 2, d)
    cu = torch.tensor([0, 70, 211, T], dtype=torch.int32)

    @torch.compile(fullgraph=True)
    def layer(q, k, v):
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        return softmax_ops._flex_attention(qt, kt, vt, 64, cu, gqa=True).transpose(1, 2)

    with torch.no_grad():
        out = layer(q, k, v)
    ref = swat_attention_ref(q, k, v, torch.zeros(H), 64, activation="softmax", cu_seqlens=cu)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert softmax_ops._last_block_mask is None


CORES = {"swat": SwatAttention, "sliding": SlidingAttention, "full": CausalAttention}


def _mixer(core: str, window: int = 8) -> AttentionMixer:
    import dataclasses
    torch.manual_seed(0)
    return CORES[core](dataclasses.replace(load_config("tiny").model, window=window)).eval()


@pytest.mark.parametrize("core", ["swat", "sliding", "full"])
def test_prefill_past_the_window_then_steps_equal_the_forward(core):
    """A prompt of 21 tokens (the ring of 8 slots wraps mid-prompt), then 6 steps across another
    wrap; every cache keeps its buffers (a short prompt leaves the full cache room to grow)."""
    mixer = _mixer(core)
    x = torch.randn(2, 27, mixer.q_proj.in_features)
    with torch.no_grad():
        full = mixer(x)
        y, state = mixer.prefill(x[:, :21])
        buffers = state["k"]
        outs = [y]
        for t in range(21, 27):
            y_t, state = mixer.step(x[:, t:t + 1], state)
            outs.append(y_t)
            if core != "full" or t > 21:
                assert state["k"] is buffers  # written in place
            buffers = state["k"]
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    assert state["pos"] == 27 and state["k"].shape[1] == (FULL_CACHE_MIN_GROWTH if core == "full" else 8)


def test_rope_reads_its_table_within_the_training_length_and_computes_past_it(monkeypatch):
    """Up to max_seq_len the rotation reads the table made at construction (inside a compiled layer,
    computed sines and cosines are recomputed per element of q and k); past it they are computed.
    Both are rope_cos_sin's values, so a forward, and steps across the table's end, agree."""
    from harness.ops.rope import rope_cos_sin
    mixer = _mixer("swat")
    L = mixer.rope_table.shape[1]
    assert L == load_config("tiny").model.max_seq_len
    positions = torch.arange(L)
    assert all(torch.equal(a, b) for a, b in zip(mixer._rope_cos_sin(positions, L),
                                                  rope_cos_sin(positions, mixer.head_dim, mixer.rope_theta)))
    computed = []
    monkeypatch.setattr(attention, "rope_cos_sin", lambda *a: computed.append(a) or rope_cos_sin(*a))
    x = torch.randn(1, L + 3, mixer.q_proj.in_features)
    with torch.no_grad():
        within = mixer(x[:, :L])
        assert not computed
        past = mixer(x)
        assert len(computed) == 1
        y, state = mixer.prefill(x[:, :L - 2])
        outs = [y]
        for t in range(L - 2, L + 3):
            y_t, state = mixer.step(x[:, t:t + 1], state)
            outs.append(y_t)
    assert len(computed) == 4  # the forward past L, then the steps at positions L, L+1, L+2
    torch.testing.assert_close(past[:, :L], within, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(outs, 1), past, atol=1e-5, rtol=1e-5)


def test_rope_table_is_remade_after_meta_construction():
    cfg = load_config("tiny").model
    with torch.device("meta"):
        mixer = SwatAttention(cfg)
    mixer = mixer.to_empty(device="cpu")
    mixer.reset_special()
    assert torch.equal(mixer.rope_table, SwatAttention(cfg).rope_table)
    assert torch.equal(mixer.slopes, SwatAttention(cfg).slopes)


def test_caches_hold_each_position_where_the_forward_puts_it():
    x = torch.randn(1, 13, 64)
    for core, slots in (("full", range(13)), ("sliding", [p % 8 for p in range(5, 13)])):
        mixer = _mixer(core)
        with torch.no_grad():
            _, k, v = mixer._qkv(x, torch.arange(13), 13)
            _, state = mixer.prefill(x[:, :12])
            _, state = mixer.step(x[:, 12:], state)
        positions = range(13) if core == "full" else range(5, 13)
        for p, slot in zip(positions, slots):
            torch.testing.assert_close(state["k"][:, slot], k[:, p], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(state["v"][:, slot], v[:, p], atol=1e-6, rtol=1e-6)


def test_full_cache_grows_geometrically_with_little_headroom():
    mixer = _mixer("full")
    with torch.no_grad():
        _, state = mixer.prefill(torch.randn(1, 3, 64))
        capacities = [state["k"].shape[1]]
        for _ in range(6):
            _, state = mixer.step(torch.randn(1, 1, 64), state)
            capacities.append(state["k"].shape[1])
        assert capacities == [FULL_CACHE_MIN_GROWTH] * 7  # a short prompt gets the minimum at once
        _, state = mixer.prefill(torch.randn(1, 4096, 64))
        _, state = mixer.step(torch.randn(1, 1, 64), state)
    assert state["k"].shape[1] == 4096 + 512  # 1/8 more: at most 1/9 of the memory held is empty


@gpu
def test_gpu_evaluation_lengths_compile_once_per_power_of_two():
    """Sliding attention without documents at lengths in (window, 1024]: once the buckets 128..1024
    are compiled, other lengths in them compile nothing (before: one compile per length, then the
    recompile limit and unfused flex). Outputs match the reference at every length. (A length that
    is itself a power of two is not padded, so flex sees the caller's strides and compiles once
    more for it: measured on the H100, 9 graphs instead of 8 when 1024 was in the second list.)"""
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    H, d, window = 4, 64, 100

    def run(lengths):
        with torch.no_grad():
            for T in lengths:
                q, k, v = (torch.randn(1, T, H, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                out = softmax_attention(q, k, v, window)
                ref = swat_attention_ref(q.float(), k.float(), v.float(), torch.zeros(H, device="cuda"), window,
                                         activation="softmax")
                torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    run([101, 200, 300, 600])
    compiled = counters["stats"]["unique_graphs"]
    run([120, 130, 257, 511, 900, 1000])
    assert counters["stats"]["unique_graphs"] == compiled


@gpu
def test_gpu_alibi_softmax_matches_the_reference_forward_and_backward():
    """SWAT's softmax ablation on the GPU path (flex_attention with the slopes as score_mod, packed
    documents): outputs and gradients equal the fp32 reference within bf16 tolerance."""
    torch.manual_seed(0)
    T, H, d, window = 1024, 8, 64, 256
    cu = torch.tensor([0, 300, 700, T], dtype=torch.int32, device="cuda")
    slopes = alibi_slopes(H, "balanced").cuda()
    q, k, v = (torch.randn(1, T, H, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = softmax_attention(q, k, v, window, cu, slopes=slopes)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = swat_attention_ref(qf, kf, vf, slopes, window, activation="softmax", cu_seqlens=cu)
    ref_grads = torch.autograd.grad(ref.square().sum(), (qf, kf, vf))
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    for g, r in zip(grads, ref_grads):
        assert (g.float() - r).norm() / r.norm() < 2e-2
