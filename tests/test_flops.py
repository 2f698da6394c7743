"""harness.model.flops against independent counts: torch's FlopCounterMode over a real forward and
backward, the (query, key) pairs of an explicit attention mask, and a model the count cannot see into."""

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from harness.model.build import build_model
from harness.model.flops import flops_per_token, visited_keys

MATMULS = {"aten.mm", "aten.addmm"}  # what nn.Linear and the tied head run as on the CPU


def matmul_flops(counter: FlopCounterMode) -> int:
    return sum(n for op, n in counter.get_flop_counts()["Global"].items() if str(op) in MATMULS)


def test_linear_and_head_count_matches_flop_counter_forward_and_backward(tiny_cfg):
    """The projections, MLP and tied head are every mm the model runs; the backward runs twice their
    FLOPs, which is the 3x of FlopCount.train."""
    model = build_model("transformer", tiny_cfg.model)
    batch, seq_len = 2, tiny_cfg.train.seq_len
    ids = torch.randint(0, tiny_cfg.model.vocab_size, (batch, seq_len + 1))
    forward, backward = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with forward:
        loss = model(ids[:, :-1], targets=ids[:, 1:])
    with backward:
        loss.backward()
    count = flops_per_token(model, seq_len)
    assert matmul_flops(forward) / (batch * seq_len) == count.linear + count.head
    assert matmul_flops(backward) == 2 * matmul_flops(forward)


@pytest.mark.parametrize("seq_len, window", [(1, 1), (7, 3), (64, 16), (64, 64), (64, 100), (33, None)])
def test_visited_keys_is_the_mean_row_of_the_causal_band_mask(seq_len, window):
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    band = (i >= j) & (i - j < (window or seq_len))
    assert visited_keys(seq_len, window) == pytest.approx(band.sum().item() / seq_len)


class UnseenAttention(nn.Module):
    """A causal LM whose attention core is not a module named `mixer`: the count sees its linears only."""

    def __init__(self, vocab: int = 16, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids):
        q, k, v = self.qkv(self.embed(input_ids)).chunk(3, dim=-1)
        return self.out(nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_model_without_mixers_is_named_partial():
    count = flops_per_token(UnseenAttention(), 16)
    assert count.partial == ["UnseenAttention"]
    assert count.attention == 0 and count.linear > 0


def test_llama_hf_is_named_partial_not_complete(tiny_cfg):
    """llama_hf is the Transformer's architecture; its SDPA attention is outside the count's reach, so the
    count is the Transformer's without attention, and says it is partial."""
    pytest.importorskip("transformers")
    t = tiny_cfg.train.seq_len
    llama = flops_per_token(build_model("llama_hf", tiny_cfg.model), t)
    transformer = flops_per_token(build_model("transformer", tiny_cfg.model), t)
    assert llama.partial == ["HFCausalLM"] and not transformer.partial
    assert llama.forward == transformer.forward - transformer.attention


# ---------------------------------------------------------------- the chunked recurrent cores

BMM = MATMULS | {"aten.bmm"}  # and what the chunked references' batched products run as


def chunk_flops(run) -> int:
    """Matmul FLOPs of run() (a chunked reference), by torch's FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return sum(n for op, n in counter.get_flop_counts()["Global"].items() if str(op) in BMM)


def heads_first(*tensors):
    return [t.transpose(1, 2) for t in tensors]


def fla_references():
    """{baseline: (its layer's (heads, key dim, value dim) read from the widths of its projections, fla's
    pure-torch chunked form of the layer's training kernel at chunk c)}. fla ships no chunked GLA in torch:
    chunk_gla's matmuls are simple GLA's, its per-key gates scaling q and k inside them, so GLA and HGRN2 run
    naive_chunk_simple_gla on their shapes (one gate per head; the FLOPs do not depend on its values). RetNet's
    chunk_retention is chunk_simple_gla with fixed decays."""
    from fla.ops.delta_rule.naive import delta_rule_chunkwise
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule
    from fla.ops.simple_gla.naive import naive_chunk_simple_gla

    def simple_gla(c, q, k, v, g, beta):
        return naive_chunk_simple_gla(q, k, v, g, chunk_size=c)

    def delta_rule(c, q, k, v, g, beta):
        return delta_rule_chunkwise(*heads_first(q, k, v), beta.transpose(1, 2), chunk_size=c)

    def gated_delta_rule(c, q, k, v, g, beta):
        return naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=c)

    def widths(heads, keys, values):
        return lambda layer: (getattr(layer, heads), getattr(layer, keys).out_features // getattr(layer, heads),
                              getattr(layer, values).out_features // getattr(layer, heads))
    return {"gla": (widths("num_heads", "q_proj", "v_proj"), simple_gla),
            "retnet": (widths("num_heads", "q_proj", "v_proj"), simple_gla),
            "hgrn2": (widths("num_heads", "q_proj", "i_proj"), simple_gla),
            "deltanet": (widths("num_heads", "q_proj", "v_proj"), delta_rule),
            "gated_deltanet": (widths("num_v_heads", "q_proj", "v_proj"), gated_delta_rule)}


@pytest.mark.parametrize("seq_len", [128, 32])  # two chunks of 64; one chunk of the whole (shorter) length
@pytest.mark.parametrize("name", ["gla", "retnet", "hgrn2", "deltanet", "gated_deltanet"])
def test_fla_core_count_is_the_matmuls_of_fla_chunked_reference(tiny_cfg, name, seq_len):
    """The mixer's flops_per_token is the matmul FLOPs per token of fla's pure-torch chunked form of its
    training kernel at the count's chunk (min(64, seq_len)), run at the built layer's shapes. (The layer's own
    forward cannot run on the CPU: its rotary, convolution and activation kernels are Triton's.)"""
    pytest.importorskip("fla")
    shapes, reference = fla_references()[name]
    mixer = build_model(name, tiny_cfg.model).blocks[0].mixer
    heads, key_dim, value_dim = shapes(mixer.layer)
    batch = 2
    q, k = (torch.randn(batch, seq_len, heads, key_dim) for _ in range(2))
    v = torch.randn(batch, seq_len, heads, value_dim)
    g, beta = -torch.rand(batch, seq_len, heads), torch.rand(batch, seq_len, heads)
    flops = chunk_flops(lambda: reference(min(64, seq_len), q, k, v, g, beta))
    assert flops > 0 and mixer.flops_per_token(seq_len) == {"scan": flops / (batch * seq_len)}


def test_fla_core_counts_by_hand_at_one_shape():
    """A hand count at one shape (heads 2, key dim 16, value dim 32, chunk 64 of 1024 tokens), per head:
    linear attention q.k^T 2*64*16 + scores.v 2*64*32 + q.S and k^T.v 2*16*32 each = 8192; the delta rule
    adds (beta k).k^T and w = A.(beta k) 2*64*16 each, u = A.(beta v) 2*64*32 and w.S 2*16*32 = 17408. At
    a training length of 32 the chunk is the 32 tokens: 2*32*(16 + 32) + 4*16*32 = 5120 and
    2*32*(3*16 + 2*32) + 6*16*32 = 10240."""
    from baselines.fla_common import delta_rule_flops, linear_attention_flops
    assert linear_attention_flops(2, 16, 32, 1024) == {"scan": 2 * 8192}
    assert delta_rule_flops(2, 16, 32, 1024) == {"scan": 2 * 17408}
    assert linear_attention_flops(2, 16, 32, 32) == {"scan": 2 * 5120}
    assert delta_rule_flops(2, 16, 32, 32) == {"scan": 2 * 10240}


def ssd_chunked(x, dt, A, B, C, D, chunk):
    """SSD's chunked form as mamba-ssm's kernel computes it (ssd_minimal's algorithm, C.B^T per group): within
    each chunk the decay-masked scores C.B^T times dt*x, plus C times the state carried in; the chunk's state
    B^T.(dt*x), passed on with the chunk's decay (elementwise). Same arguments and outputs as ssd_ref."""
    b, length, h, p = x.shape
    g, n = B.shape[2:]
    xdt = (x * dt[..., None]).float().unflatten(1, (-1, chunk))  # b chunks c h p
    Bc, Cc = (t.float().unflatten(1, (-1, chunk)) for t in (B, C))  # b chunks c g n
    cum = (dt * A).float().unflatten(1, (-1, chunk)).cumsum(2)  # b chunks c h: log decay from the chunk's start
    causal = torch.ones(chunk, chunk, dtype=torch.bool).tril()
    state, ys = x.new_zeros(b, h, p, n, dtype=torch.float32), []
    for i in range(length // chunk):
        scores = torch.einsum("bign,bjgn->bgij", Cc[:, i], Bc[:, i]).repeat_interleave(h // g, dim=1)  # b h c c
        decay = (cum[:, i, :, None] - cum[:, i, None]).permute(0, 3, 1, 2).exp() * causal  # b h i j
        Ch = Cc[:, i].repeat_interleave(h // g, dim=2).transpose(1, 2)  # b h c n
        y = (scores * decay) @ xdt[:, i].transpose(1, 2) + (Ch @ state.transpose(-1, -2)) * cum[:, i].transpose(
            1, 2)[..., None].exp()
        ys.append(y.transpose(1, 2))
        Bh = Bc[:, i].repeat_interleave(h // g, dim=2).transpose(1, 2)  # b h c n
        to_end = (cum[:, i, -1:] - cum[:, i]).exp().transpose(1, 2)[..., None]  # b h c 1
        state = state * cum[:, i, -1].exp()[..., None, None] + (xdt[:, i].transpose(1, 2) * to_end).transpose(
            -1, -2) @ Bh
    return torch.cat(ys, dim=1) + x.float() * D.float()[:, None], state


@pytest.mark.parametrize("seq_len, chunk_size", [(64, 16), (16, 32)])  # four chunks; one shorter than chunk_size
def test_mamba2_count_is_the_matmuls_of_ssd_chunked_form(tiny_cfg, monkeypatch, seq_len, chunk_size):
    """Mamba-2's forward on the CPU runs ssd_ref, the recurrence; in its place the chunked form above, checked
    equal to ssd_ref on the same inputs, whose matmul FLOPs per token are the mixer's flops_per_token."""
    import dataclasses

    import baselines.mamba2 as mamba2
    cfg = dataclasses.replace(tiny_cfg.model, extra={"mamba2": {"chunk_size": chunk_size, "ngroups": 2}})
    mixer = build_model("mamba2", cfg).blocks[0].mixer
    chunk, got, ssd_ref = min(chunk_size, seq_len), {}, mamba2.ssd_ref

    def counted(*args):
        got["flops"] = chunk_flops(lambda: got.setdefault("chunked", ssd_chunked(*args, chunk)))
        expected = ssd_ref(*args)
        for mine, ref in zip(got["chunked"], expected):
            torch.testing.assert_close(mine, ref.float(), atol=1e-4, rtol=1e-4)
        return expected
    monkeypatch.setattr(mamba2, "ssd_ref", counted)
    batch = 2
    with torch.no_grad():
        mixer(torch.randn(batch, seq_len, cfg.hidden_size))
    assert mixer.ngroups == 2 and mixer.nheads % 2 == 0
    assert mixer.flops_per_token(seq_len) == {"scan": got["flops"] / (batch * seq_len)}


def test_a_mixer_whose_count_is_none_is_named_partial(tiny_cfg):
    """An fla model built without a count of its core (a plugin's fla_model with no core_flops) is partial."""
    pytest.importorskip("fla")
    from baselines.fla_common import fla_model
    counted = flops_per_token(build_model("gla", tiny_cfg.model), tiny_cfg.train.seq_len)
    plain = flops_per_token(fla_model(tiny_cfg.model, "gla", "GatedLinearAttention", {}), tiny_cfg.train.seq_len)
    assert counted.partial == [] and counted.scan > 0
    assert plain.partial == ["FlaMixer"] and plain.scan == 0
