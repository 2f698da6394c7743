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
