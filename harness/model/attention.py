"""Attention token mixers: one module for projections, RoPE and the decode cache, and a subclass
per core, so that models built on them differ in the core alone:

- `CausalAttention`: causal softmax over the whole prefix (Transformer++);
- `SlidingAttention`: causal softmax over the last W keys;
- `SwatAttention`: SWAT's sliding-window sigmoid attention with ALiBi slopes (or its softmax ablation).

The softmax cores run on harness.ops.softmax (flash-attn, SDPA or flex_attention on a GPU, banded
SDPA on the CPU); SWAT on the kernels of harness.ops.swat. Each mixer counts its own FLOPs
(`flops_per_token`) and states its core for the Hugging Face export (`export_config`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.config import ModelConfig
from harness.model.backbone import RMSNorm
from harness.model.flops import visited_keys
from harness.ops.alibi import alibi_slopes
from harness.ops.rope import apply_rope, positions_from_cu_seqlens, rope_cos_sin
from harness.ops.softmax import softmax_attention
from harness.ops.swat import swat_attention, swat_decode

FULL_CACHE_MIN_GROWTH = 256  # slots added at least when a full KV cache grows


class AttentionMixer(nn.Module, ABC):
    """Multi-head attention as a token mixer: q, kv and o projections, RoPE, an optional per-head
    output norm, and the decode cache (a ring buffer of the last `window` keys and values, or, with
    no window, a KV cache of the whole prefix). A subclass gives the core: `_attend` over a
    sequence, `_attend_cache` for one decoded token against the cache."""
    supports_varlen = True
    compiles = True  # train.compile=auto compiles the layers around it (harness.training.recipe)
    window: int | None  # keys j with 0 <= i - j < window; None: the whole causal prefix

    def __init__(self, cfg: ModelConfig, output_norm: bool = False):
        """output_norm: RMS-normalise each head's output before the output projection (one weight
        of head_dim shared by the heads, as fla's gated layers norm theirs): sigmoid attention
        sums up to W unnormalised weights, so its raw output grows with the window."""
        super().__init__()
        self.num_heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        self.rope, self.rope_theta = cfg.rope, cfg.rope_theta
        if self.rope:  # not persistent: derived from the config (reset_special remakes it)
            self.register_buffer("rope_table", self._rope_table(cfg.max_seq_len), persistent=False)
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=False)
        self.kv_proj = nn.Linear(d, 2 * self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)
        self.o_proj.residual_out = True
        self.out_norm = RMSNorm(self.head_dim, cfg.norm_eps) if output_norm else None

    def _rope_table(self, length: int, device=None) -> torch.Tensor:
        """RoPE's cos and sin [2, length, head_dim] of positions 0..length-1 (fp32)."""
        return torch.stack(rope_cos_sin(torch.arange(length, device=device), self.head_dim, self.rope_theta))

    def reset_special(self) -> None:
        # after meta-device construction or .to_empty(), the table holds no values
        if self.rope:
            self.rope_table.copy_(self._rope_table(self.rope_table.shape[1], self.rope_table.device))

    def _rope_cos_sin(self, positions: torch.Tensor, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos and sin at `positions` (each below `end`): read from the table up to the training
        length, computed past it. Computed inside a compiled layer, they are fused into the rotation and
        recomputed for every batch row and head of q and k (that kernel took 2.8% of a 340m SWAT
        training step on an H100: `results/train/h100-340m/`)."""
        if end <= self.rope_table.shape[1]:
            return self.rope_table[0, positions], self.rope_table[1, positions]
        return rope_cos_sin(positions, self.head_dim, self.rope_theta)

    @abstractmethod
    def _attend(self, q, k, v, cu_seqlens=None) -> torch.Tensor:
        """Outputs [B, T, H, d] of q [B, T, H, d] over k, v [B, T, Hkv, d] (packed documents apart)."""

    @abstractmethod
    def _attend_cache(self, q, k_cache, v_cache, pos: int) -> torch.Tensor:
        """Output [B, H, d] of the query q [B, H, d] at position pos over the cache, its own key in."""

    def flops_per_token(self, seq_len: int) -> dict[str, float]:
        """The core's forward FLOPs per token at training length seq_len (harness.model.flops):
        q.k and weights.v, 4 * head_dim per head per (query, key) pair it visits."""
        return {"attention": 4.0 * self.num_heads * self.head_dim * visited_keys(seq_len, self.window)}

    @abstractmethod
    def export_config(self) -> dict:
        """The core in the terms of the exported model's config (harness.hf.configuration_swat_harness)."""

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor, end: int):
        """q, k (rotated by RoPE at `positions`, each below `end`) and v of x."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k, v = self.kv_proj(x).view(B, T, 2, self.kv_heads, self.head_dim).unbind(2)
        if self.rope:
            cos, sin = self._rope_cos_sin(positions, end)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def _project(self, out: torch.Tensor) -> torch.Tensor:
        """Heads' outputs [B, T, H, d] -> [B, T, D]: the optional output norm, then o_proj."""
        if self.out_norm is not None:
            out = self.out_norm(out)
        return self.o_proj(out.flatten(2))

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        if cu_seqlens is not None:
            positions = positions_from_cu_seqlens(cu_seqlens, T)
        else:
            positions = torch.arange(T, device=x.device)
        q, k, v = self._qkv(x, positions, T)
        return self._project(self._attend(q, k, v, cu_seqlens))

    # Decode state: {"k", "v": [B, S, Hkv, d] buffers, "pos": tokens seen}, written in place as
    # users' inference stacks do (no copy of the cache per token):
    # - no window: a KV cache of capacity S holding positions 0..pos-1 in [:, :pos]; when a write would
    #   pass S it moves to a buffer 1/8 larger (at least FULL_CACHE_MIN_GROWTH slots more): amortised
    #   O(1) copying per token, and past the minimum at most 1/9 of the memory held is empty
    #   (doubling would leave up to half of it empty, and the decode benchmark reports the memory held);
    # - a window W: a ring buffer of S = W slots, position p in slot p % W.
    # step returns a new dict over the buffers it wrote (new ones only when a full cache grows), so
    # stepping an older state again overwrites what the later one holds: callers thread the latest
    # state (generate, decode_until); the decode benchmark re-steps one state on purpose (same work).
    def init_state(self, batch_size: int, device, dtype) -> dict:
        shape = (batch_size, self.window or 0, self.kv_heads, self.head_dim)
        return {"k": torch.zeros(shape, device=device, dtype=dtype),
                "v": torch.zeros(shape, device=device, dtype=dtype), "pos": 0}

    def _store(self, state: dict, k: torch.Tensor, v: torch.Tensor) -> dict:
        """Write keys/values of positions pos..pos+T-1 into the state's buffers (in place)."""
        pos, T = state["pos"], k.shape[1]
        k_buf, v_buf = state["k"], state["v"]
        if self.window is None:
            capacity = k_buf.shape[1]
            if pos + T > capacity:
                capacity = max(pos + T, capacity + max(FULL_CACHE_MIN_GROWTH, capacity // 8))
                k_buf, v_buf = (_grown(buf, pos, capacity) for buf in (k_buf, v_buf))
            k_buf[:, pos:pos + T] = k
            v_buf[:, pos:pos + T] = v
        else:
            # the last min(T, W) positions, in at most two runs of slots (the ring wraps once);
            # slices, not index tensors: plain copies, capturable in a CUDA graph
            W = self.window
            keep = min(T, W)
            start = (pos + T - keep) % W
            first = min(keep, W - start)
            for buf, new in ((k_buf, k[:, T - keep:]), (v_buf, v[:, T - keep:])):
                buf[:, start:start + first] = new[:, :first]
                buf[:, :keep - first] = new[:, first:]
        return {"k": k_buf, "v": v_buf, "pos": pos + T}

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        B = x.shape[0]
        pos = state["pos"]
        # arange, not torch.tensor([pos]): no host-to-device copy, so a CUDA graph can capture it
        q, k, v = self._qkv(x, torch.arange(pos, pos + 1, device=x.device), pos + 1)
        state = self._store(state, k, v)
        out = self._attend_cache(q[:, 0], state["k"], state["v"], pos)
        return self._project(out.reshape(B, 1, self.num_heads, self.head_dim)), state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        B, T, _ = x.shape
        q, k, v = self._qkv(x, torch.arange(T, device=x.device), T)
        y = self._project(self._attend(q, k, v))
        return y, self._store(self.init_state(B, x.device, k.dtype), k, v)

    def _softmax_over_cache(self, q, k_cache, v_cache, filled: int) -> torch.Tensor:
        """Softmax attention of q [B, H, d] over the first `filled` slots. Softmax without a position
        bias does not depend on the keys' order (RoPE is already in them), so a full ring buffer
        is attended whole, like the filled prefix of a KV cache."""
        qt, kt, vt = (t.transpose(1, 2) for t in (q[:, None], k_cache[:, :filled], v_cache[:, :filled]))
        out = F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=self.num_heads != self.kv_heads)
        return out.transpose(1, 2)[:, 0]


class CausalAttention(AttentionMixer):
    """Causal softmax attention over the whole prefix (Transformer++); decode keeps a KV cache that
    grows geometrically (by 1/8, at least FULL_CACHE_MIN_GROWTH slots) when full."""
    window = None

    def _attend(self, q, k, v, cu_seqlens=None) -> torch.Tensor:
        return softmax_attention(q, k, v, None, cu_seqlens)

    def _attend_cache(self, q, k_cache, v_cache, pos: int) -> torch.Tensor:
        return self._softmax_over_cache(q, k_cache, v_cache, pos + 1)

    def export_config(self) -> dict:
        return {"attention_core": "full", "window": None, "activation": "softmax", "alibi_slopes": None}


class SlidingAttention(AttentionMixer):
    """Causal softmax attention over the last `cfg.window` keys; decode keeps a ring buffer of them."""

    def __init__(self, cfg: ModelConfig, output_norm: bool = False):
        super().__init__(cfg, output_norm)
        self.window = cfg.window

    def _attend(self, q, k, v, cu_seqlens=None) -> torch.Tensor:
        return softmax_attention(q, k, v, self.window, cu_seqlens)

    def _attend_cache(self, q, k_cache, v_cache, pos: int) -> torch.Tensor:
        return self._softmax_over_cache(q, k_cache, v_cache, min(pos + 1, self.window))

    def export_config(self) -> dict:
        return {"attention_core": "sliding", "window": self.window, "activation": "softmax", "alibi_slopes": None}


class SwatAttention(AttentionMixer):
    """SWAT (harness.ops.swat): sliding window of `cfg.window` keys, sigmoid scores (or softmax, the
    paper's ablation) with per-head ALiBi slopes and a constant bias, RoPE; decode keeps a ring
    buffer of the last W keys and values (memory constant in context length)."""

    def __init__(self, cfg: ModelConfig, output_norm: bool = False):
        super().__init__(cfg, output_norm)
        self.window = cfg.window
        self.activation, self.sigmoid_bias = cfg.activation, cfg.sigmoid_bias
        self.slope_kind, self.slope_form = cfg.slopes, cfg.slope_form
        self.register_buffer("slopes", alibi_slopes(cfg.num_heads, self.slope_kind, self.slope_form),
                             persistent=False)

    def reset_special(self) -> None:
        # the slopes buffer is not persistent (derived from the config), so recompute it after
        # meta-device construction or .to_empty()
        super().reset_special()
        self.slopes.copy_(alibi_slopes(self.num_heads, self.slope_kind, self.slope_form))

    def _attend(self, q, k, v, cu_seqlens=None) -> torch.Tensor:
        if self.activation == "sigmoid":
            return swat_attention(q, k, v, self.slopes, self.window, self.activation, self.sigmoid_bias,
                                  cu_seqlens=cu_seqlens)
        # the softmax ablation (its slopes as ALiBi) on the fast softmax paths (swat_attention's
        # softmax is the plain-torch reference: dense scores, no fused kernel)
        return softmax_attention(q, k, v, self.window, cu_seqlens, slopes=self.slopes)

    def _attend_cache(self, q, k_cache, v_cache, pos: int) -> torch.Tensor:
        return swat_decode(q, k_cache, v_cache, min(pos + 1, self.window), pos, self.slopes, self.window,
                           self.activation, self.sigmoid_bias)

    def export_config(self) -> dict:
        return {"attention_core": "swat", "window": self.window, "activation": self.activation,
                "alibi_slopes": self.slopes.tolist(), "sigmoid_bias": float(self.sigmoid_bias)}


def _grown(buf: torch.Tensor, filled: int, capacity: int) -> torch.Tensor:
    """A copy of buf [B, S, ...] with `capacity` slots along dim 1, its first `filled` copied."""
    out = buf.new_zeros(buf.shape[0], capacity, *buf.shape[2:])
    out[:, :filled] = buf[:, :filled]
    return out
