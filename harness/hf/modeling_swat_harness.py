"""A swat-harness attention model as a transformers causal LM, in plain PyTorch (no harness, no Triton).

    embed -> N x [x + attention(norm(x)); x + mlp(norm(x))] -> norm -> head (tied to the embedding)

RMSNorm computed in fp32, SwiGLU MLP, RoPE (rotate-half) on q and k, grouped-query attention, and
the attention core of configuration_swat_harness.py. The attention arithmetic is the harness's
definition (harness/ops/swat/reference.py), in fp32:

    s_ij = q_i . k_j / sqrt(d) + slope_h * (i - j) + bias    for keys j in the band (0 <= i - j < W)
    o_i  = sum_j sigmoid(s_ij) v_j                           (SWAT: no normalisation over j)
    o_i  = sum_j softmax_j(s_ij) v_j                         (softmax cores; bias 0)

so that the logits equal the harness model's to fp32 rounding.

Decoding: the windowed cores keep a ring buffer of the last W keys and values per layer
(`SwatHarnessRingLayer`: position p sits in slot p % W, written in place, so the memory of a
sequence is constant in its length); the full core keeps transformers' growing `DynamicLayer`. Both
are layers of `SwatHarnessCache`, a transformers `Cache`. `generate()` is transformers' own: it
creates an empty `DynamicCache`, which `forward` replaces by a `SwatHarnessCache` (any empty cache
of another class is replaced) and returns as `cache`, which generate hands back at every step. So
neither `generate` nor `prepare_inputs_for_generation` is overridden. (generate builds its cache's
layers from `config.layer_types`, whose values transformers checks against its own list, so a ring
buffer cannot be asked for there.)

`attention_mask` (1 for tokens, 0 for padding, over every position so far, as generate passes it)
masks padded keys: a left-padded batch gives each row what it gives alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_swat_harness import SwatHarnessConfig

QUERY_BLOCK = 512  # queries scored at once: a long prompt's scores take O(QUERY_BLOCK x keys) memory


class SwatHarnessRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class SwatHarnessMLP(nn.Module):
    def __init__(self, config: SwatHarnessConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate x [B, H, T, d] by its positions [T] (rotate-half form; angles in fp32)."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    xf = x.float()
    half = dim // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * angles.cos() + rotated * angles.sin()).to(x.dtype)


class SwatHarnessRingLayer(CacheLayerMixin):
    """The keys and values [B, Hkv, W, d] of the last W positions of one windowed layer: position p
    in slot p % W. A one-token update writes its slot in place and returns the W slots (the slot
    it overwrote held position p - W, outside the window); a longer update returns the previous
    W - 1 positions followed by the new ones, in position order, then keeps the last W.
    `key_positions` holds the position of each returned key (-1: an empty slot)."""

    is_sliding = True

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.seen = 0  # positions written so far
        self.key_positions: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, d = key_states.shape
        self.keys = key_states.new_zeros(B, H, self.window, d)
        self.values = value_states.new_zeros(B, H, self.window, d)
        self.device = key_states.device
        self.is_initialized = True

    def _slot_positions(self) -> torch.Tensor:
        """The position each slot holds: the latest p < seen with p % W == slot (-1 when none)."""
        slot = torch.arange(self.window, device=self.keys.device)
        last = self.seen - 1
        return torch.where(slot <= last, last - (last - slot) % self.window, -1)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        W, T, start = self.window, key_states.shape[-2], self.seen
        new_positions = torch.arange(start, start + T, device=self.keys.device)
        if T == 1:
            self.keys[:, :, start % W] = key_states[:, :, 0]
            self.values[:, :, start % W] = value_states[:, :, 0]
            self.seen += 1
            self.key_positions = self._slot_positions()
            return self.keys, self.values
        kept = torch.arange(max(0, start - W + 1), start, device=self.keys.device)
        keys = torch.cat([self.keys[:, :, kept % W], key_states], dim=-2)
        values = torch.cat([self.values[:, :, kept % W], value_states], dim=-2)
        last = new_positions[-W:]
        self.keys[:, :, last % W] = key_states[:, :, -W:]
        self.values[:, :, last % W] = value_states[:, :, -W:]
        self.seen += T
        self.key_positions = torch.cat([kept, new_positions])
        return keys, values

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1  # any number of positions: the buffer holds the last W

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return min(self.seen, self.window - 1) + query_length, max(0, self.seen - self.window + 1)

    def reset(self) -> None:
        super().reset()
        self.seen = 0
        self.key_positions = None


class SwatHarnessKVLayer(DynamicLayer):
    """The full core's growing KV cache (transformers' DynamicLayer); its keys sit at positions 0.."""

    @property
    def key_positions(self) -> torch.Tensor:
        return torch.arange(self.get_seq_length(), device=self.keys.device)


class SwatHarnessCache(Cache):
    """One ring buffer (windowed cores) or growing KV cache (full core) per layer."""

    def __init__(self, config: SwatHarnessConfig):
        if config.attention_core == "full":
            layers = [SwatHarnessKVLayer() for _ in range(config.num_hidden_layers)]
        else:
            layers = [SwatHarnessRingLayer(config.window) for _ in range(config.num_hidden_layers)]
        super().__init__(layers=layers)


def banded_attention(q, k, v, q_pos, k_pos, key_valid, config: SwatHarnessConfig) -> torch.Tensor:
    """Attention of queries q [B, H, T, d] at positions q_pos [T] over keys k, v [B, Hkv, S, d] at
    positions k_pos [S] (-1: no key), of which key_valid [B, S] are not padding; in fp32, output
    in q's dtype. Keys with 0 <= i - j < window (every j <= i for the full core) take part. Longer
    inputs are scored in blocks of QUERY_BLOCK queries against the keys in their reach (the keys of
    a multi-token input are in position order)."""
    T, H = q.shape[2], q.shape[1]
    if T > QUERY_BLOCK:
        outs = []
        for a in range(0, T, QUERY_BLOCK):
            b = min(T, a + QUERY_BLOCK)
            first = q_pos[a] - (config.window - 1 if config.window else q_pos[a])
            lo = int(torch.searchsorted(k_pos, first))
            hi = int(torch.searchsorted(k_pos, q_pos[b - 1], right=True))
            outs.append(banded_attention(q[:, :, a:b], k[:, :, lo:hi], v[:, :, lo:hi], q_pos[a:b], k_pos[lo:hi],
                                         key_valid[:, lo:hi], config))
        return torch.cat(outs, dim=2)
    rep = H // k.shape[1]
    kf = k.float().repeat_interleave(rep, dim=1)
    vf = v.float().repeat_interleave(rep, dim=1)
    dist = (q_pos[:, None] - k_pos[None, :]).to(torch.float32)  # [T, S]
    allowed = (dist >= 0) & (k_pos[None, :] >= 0)
    if config.window is not None:
        allowed = allowed & (dist < config.window)
    allowed = allowed[None, None] & key_valid[:, None, None, :]  # [B, 1, T, S]
    scores = q.float() @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if config.alibi_slopes is not None:
        slopes = torch.tensor(config.alibi_slopes, dtype=torch.float32, device=q.device)
        scores = scores + slopes[:, None, None] * dist
    if config.attention_core == "swat" and config.activation == "sigmoid":
        weights = torch.sigmoid(scores + config.sigmoid_bias) * allowed
    else:  # a query with no key at all (a padded one) gets zeros, not NaN
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    return (weights @ vf).to(q.dtype)


class SwatHarnessAttention(nn.Module):
    def __init__(self, config: SwatHarnessConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.num_heads, self.kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                        config.head_dim)
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)
        self.o_norm = SwatHarnessRMSNorm(self.head_dim, config.rms_norm_eps) if config.head_output_norm else None

    def forward(self, x, positions, cache: Cache | None, attention_mask: torch.Tensor | None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.config.rope:
            q = apply_rope(q, positions, self.config.rope_theta)
            k = apply_rope(k, positions, self.config.rope_theta)
        if cache is None:
            k_pos = positions
        else:
            k, v = cache.update(k, v, self.layer_idx)
            k_pos = cache.layers[self.layer_idx].key_positions
        if attention_mask is None:
            key_valid = torch.ones(B, k_pos.shape[0], dtype=torch.bool, device=x.device)
        else:
            key_valid = attention_mask.bool()[:, k_pos.clamp(min=0)]
        out = banded_attention(q, k, v, positions, k_pos, key_valid, self.config).transpose(1, 2)
        if self.o_norm is not None:
            out = self.o_norm(out)
        return self.o_proj(out.reshape(B, T, -1))


class SwatHarnessDecoderLayer(nn.Module):
    def __init__(self, config: SwatHarnessConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = SwatHarnessRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SwatHarnessAttention(config, layer_idx)
        self.post_attention_layernorm = SwatHarnessRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwatHarnessMLP(config)

    def forward(self, x, positions, cache, attention_mask):
        x = x + self.self_attn(self.input_layernorm(x), positions, cache, attention_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class SwatHarnessPreTrainedModel(PreTrainedModel):
    config_class = SwatHarnessConfig
    base_model_prefix = "model"
    _no_split_modules = ["SwatHarnessDecoderLayer"]


class SwatHarnessModel(SwatHarnessPreTrainedModel):
    def __init__(self, config: SwatHarnessConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(SwatHarnessDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = SwatHarnessRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def forward(self, input_ids=None, inputs_embeds=None, cache: Cache | None = None, attention_mask=None):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        past = 0 if cache is None else cache.get_seq_length()
        positions = torch.arange(past, past + x.shape[1], device=x.device)
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError("attention_mask must be [batch, positions] of 1 (token) and 0 (padding); generate "
                             "builds a 4-D one for a static cache, which this model has no use for (its cache is "
                             "its own, a ring buffer of `window` slots): leave cache_implementation unset")
        for layer in self.layers:
            x = layer(x, positions, cache, attention_mask)
        return self.norm(x)


class SwatHarnessForCausalLM(SwatHarnessPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SwatHarnessConfig):
        super().__init__(config)
        self.model = SwatHarnessModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # the cache's earlier name, as transformers' own models take it: ignored among the other keyword
    # arguments, it would start a new sequence at position 0 and give other logits without a word
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: Cache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        """Logits [B, T, V] (of the last `logits_to_keep` positions when set); with `use_cache`
        (the config's default), the cache after these tokens. `cache` continues a sequence: a
        SwatHarnessCache returned by an earlier call (also taken as `past_key_values`), or an empty
        cache of any class (generate's DynamicCache), which is replaced by a SwatHarnessCache. Other
        keyword arguments that generate passes (position_ids among them: positions come from the
        cache) are ignored."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is not None and not isinstance(cache, SwatHarnessCache):
            if cache.get_seq_length() > 0:
                raise ValueError(f"{type(cache).__name__} with content cannot continue this model; pass the "
                                 "SwatHarnessCache that an earlier call returned, or no cache")
            cache = None
        if use_cache and cache is None:
            cache = SwatHarnessCache(self.config)
        h = self.model(input_ids, inputs_embeds, cache if use_cache else None, attention_mask)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


__all__ = ["SwatHarnessForCausalLM", "SwatHarnessModel", "SwatHarnessPreTrainedModel", "SwatHarnessCache"]
