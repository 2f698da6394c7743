"""Attention token mixers shared by swat, transformer and sliding_softmax.

The three differ only in their attention core; projections, RoPE and decode caches are common,
so the comparison between them isolates the core:

- `swat`: sliding window, sigmoid (or softmax, for the ablation), per-head ALiBi slopes, RoPE;
  decode keeps a ring buffer of the last W keys/values (memory constant in context length).
- `full`: causal softmax over the whole prefix (Transformer++); decode keeps a KV cache that grows
  geometrically (by 1/8, at least FULL_CACHE_MIN_GROWTH slots) when full.
- `sliding`: causal softmax over the last W keys; ring buffer like swat.

`full` and `sliding` run on `softmax_attention`: flash-attn when installed (else SDPA / flex_attention
on a GPU, SDPA with a band mask on the CPU); `swat` on the kernels of `harness.ops.swat`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.model.backbone import RMSNorm
from harness.config import ModelConfig
from harness.ops.alibi import alibi_slopes
from harness.ops.rope import apply_rope, positions_from_cu_seqlens, rope_cos_sin
from harness.ops.swat import swat_attention, swat_decode
from harness.ops.swat.reference import band_mask, over_query_blocks, per_document


def _flash_attn():
    try:
        import flash_attn
        return flash_attn
    except ImportError:
        return None


FLEX_BLOCK = 128  # create_block_mask's default block size

# Generous recompile budget for compiled flex_attention: one compile per (padded length, batch, grad
# mode) it meets, e.g. a benchmark sweep of 6 training and 6 prefill lengths, over dynamo's default 8,
# past which it silently runs flex unfused (the full score matrix).
FLEX_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled_flex():
    # static shapes, one kernel per length: dynamic-shape flex_attention with a BlockMask has
    # specialised on (recompiled per) sequence length in recent torch releases (see pytorch PR
    # 189952), so varying lengths are bucketed instead (_flex_attention), which works either way
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


@functools.cache
def _compiled_create_block_mask():
    # compiled, create_block_mask evaluates the mask_mod block by block instead of materialising a
    # dense T x T mask (torch >= 2.10 deprecates create_block_mask(_compile=True) in favour of this)
    from torch.nn.attention.flex_attention import create_block_mask
    return torch.compile(create_block_mask, dynamic=False)


def _mask_mod(T: int, window: int | None, cu_seqlens: torch.Tensor | None, device):
    """flex mask_mod of causal (sliding-window when `window`) attention within documents."""
    doc = None
    if cu_seqlens is not None:
        doc = torch.searchsorted(cu_seqlens.to(device), torch.arange(T, device=device), right=True)

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = q_idx >= kv_idx
        if window is not None:
            allowed = allowed & (q_idx - kv_idx < window)
        if doc is not None:
            allowed = allowed & (doc[q_idx] == doc[kv_idx])
        return allowed
    return mask_mod


_last_block_mask: tuple | None = None  # (key, cu_seqlens, its version, BlockMask)


def _flex_block_mask(T: int, window: int | None, cu_seqlens: torch.Tensor | None, device):
    """Block-sparse mask of `_mask_mod`, built by the compiled create_block_mask.

    Every layer of a forward needs the same mask, so the last one built is kept and returned while
    (T, window, device) are equal and cu_seqlens is the same tensor, unmodified (same object and
    autograd version counter). cu_seqlens is compared by identity, not by value: reading the values
    of a CUDA tensor would synchronise host and device at every layer. A new batch brings a new
    tensor, so a mask is never reused for other boundaries; equal boundaries in another tensor just
    build it again. The cache holds a reference to the tensor, so its id cannot be reused meanwhile.
    """
    global _last_block_mask
    key = (T, window, torch.device(device))
    version = None if cu_seqlens is None else cu_seqlens._version
    if _last_block_mask is not None:
        last_key, last_cu, last_version, mask = _last_block_mask
        if last_key == key and last_cu is cu_seqlens and last_version == version:
            return mask
    mask = _compiled_create_block_mask()(_mask_mod(T, window, cu_seqlens, device), None, None, T, T,
                                         device=device)
    _last_block_mask = (key, cu_seqlens, version, mask)
    return mask


def _alibi_score_mod(slopes: torch.Tensor | None):
    """flex score_mod adding `slope_h * (i - j)` (harness.ops.alibi's convention), or None."""
    if slopes is None:
        return None

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (q_idx - kv_idx)
    return score_mod


def _flex_attention(qt, kt, vt, window: int | None, cu_seqlens: torch.Tensor | None, gqa: bool,
                    slopes: torch.Tensor | None = None):
    """Compiled flex_attention over q, k, v [B, H, T, d] with the mask of `_mask_mod` (and ALiBi
    `slopes` [H] as a score_mod when given).

    Packed training rows (cu_seqlens) have one fixed T per run: one compile. Without documents
    (evaluation, generation prefill, benchmarks) T changes call to call and static compiles would
    recompile per length until dynamo's limit, then fall back to unfused flex; so T is padded at the
    end to the next power of two (at least one block): a handful of compiles cover every length
    (two for a bucket also met unpadded, at exactly its power of two: the strides differ).
    Padding at the end is exact under a causal mask (no real query sees a later key); the padded
    queries' rows are sliced off.

    Inside a compiled model (`train.compile`), dynamo traces the mask's construction and flex into
    the layer's own graph instead: no cache, padding or nested compile there.
    """
    T = qt.shape[2]
    score_mod = _alibi_score_mod(None if slopes is None else slopes.to(device=qt.device, dtype=torch.float32))
    if torch.compiler.is_compiling():
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        mask = create_block_mask(_mask_mod(T, window, cu_seqlens, qt.device), None, None, T, T, device=qt.device)
        return flex_attention(qt, kt, vt, score_mod=score_mod, block_mask=mask, enable_gqa=gqa)
    padded = T if cu_seqlens is not None else max(FLEX_BLOCK, 1 << (T - 1).bit_length())
    if padded != T:
        qt, kt, vt = (F.pad(t, (0, 0, 0, padded - T)) for t in (qt, kt, vt))
    block_mask = _flex_block_mask(padded, window, cu_seqlens, qt.device)
    with torch._dynamo.config.patch(recompile_limit=FLEX_RECOMPILE_LIMIT):
        out = _compiled_flex()(qt, kt, vt, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)
    return out[:, :, :T]


def softmax_attention(q, k, v, window: int | None = None, cu_seqlens: torch.Tensor | None = None,
                      slopes: torch.Tensor | None = None):
    """Causal softmax attention, over the last `window` keys (0 <= i - j < window) when given,
    within the documents of `cu_seqlens` (packed, B == 1) when given, with ALiBi `slopes` [H]
    (`slope_h * (i - j)` added to the scaled scores; SWAT's softmax ablation) when given.
    q [B, T, H, d], k, v [B, T, Hkv, d] -> [B, T, H, d], on the fastest path for the inputs:

    - CUDA, fp16/bf16, flash-attn installed: `flash_attn_func` / `flash_attn_varlen_func`
      (`window_size=(window - 1, 0)`; slopes as `alibi_slopes=-slopes`, since flash-attn adds
      `-alibi_slope * |i - j|`);
    - CUDA otherwise: torch SDPA (flash backend) for causal attention over whole sequences (also a
      window covering all T keys) without slopes, else compiled flex_attention with a block-sparse
      sliding-window / document mask and the slopes as a score_mod (`_flex_attention`);
    - CPU: torch SDPA per document (`per_document`: memory of the longest document, not of the
      packed row); where a window or slopes apply, over blocks of queries (`over_query_blocks`),
      each with a band mask over the keys it reaches (additive, carrying the slopes, when given).
    """
    T = q.shape[1]
    if window is not None and window >= T:
        window = None  # a window over the whole sequence restricts nothing: plain causal attention
    gqa = q.shape[2] != k.shape[2]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash_attn() is not None:
        fa = _flash_attn()
        options = dict(causal=True, window_size=(-1, -1) if window is None else (window - 1, 0),
                       alibi_slopes=None if slopes is None else -slopes.to(device=q.device, dtype=torch.float32))
        if cu_seqlens is None:
            return fa.flash_attn_func(q, k, v, **options)
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        max_len = int((cu[1:] - cu[:-1]).max())
        return fa.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, max_len, max_len, **options)[None]
    if not q.is_cuda and cu_seqlens is not None:
        return per_document(lambda q, k, v: softmax_attention(q, k, v, window, None, slopes), cu_seqlens, q, k, v)
    if not q.is_cuda and (window is not None or slopes is not None):
        return over_query_blocks(lambda q, k, v, first: _banded_sdpa(q, k, v, window or T, slopes, first, gqa),
                                 q, k, v, window or T)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if window is None and cu_seqlens is None and slopes is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=gqa)
    else:
        out = _flex_attention(qt, kt, vt, window, cu_seqlens, gqa, slopes)
    return out.transpose(1, 2)


def _banded_sdpa(q, k, v, window: int, slopes: torch.Tensor | None, first_query: int, gqa: bool) -> torch.Tensor:
    """SDPA of queries q [B, Tq, H, d] at positions first_query.. of the keys k, v [B, Tk, Hkv, d],
    with a band mask (additive, carrying ALiBi slopes, when given)."""
    allowed, dist = band_mask(q.shape[1], window, q.device, first_query, k.shape[1])
    mask = allowed if slopes is None else torch.where(
        allowed, slopes.float().to(q.device)[:, None, None] * dist, float("-inf")).to(q.dtype)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=gqa).transpose(1, 2)


FULL_CACHE_MIN_GROWTH = 256  # slots added at least when a full KV cache grows


class AttentionMixer(nn.Module):
    supports_varlen = True

    def __init__(self, cfg: ModelConfig, core: str, output_norm: bool = False):
        """output_norm: RMS-normalise each head's output before the output projection (one weight
        of head_dim shared by the heads, as fla's gated layers norm theirs): sigmoid attention
        sums up to W unnormalised weights, so its raw output grows with the window."""
        super().__init__()
        if core not in ("swat", "full", "sliding"):
            raise ValueError(f"unknown attention core {core!r}")
        self.core = core
        self.num_heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        self.window = cfg.window
        self.rope, self.rope_theta = cfg.rope, cfg.rope_theta
        self.activation = cfg.activation if core == "swat" else "softmax"
        self.sigmoid_bias = cfg.sigmoid_bias
        self.slope_kind = cfg.slopes if core == "swat" else "none"
        self.slope_form = cfg.slope_form
        self.register_buffer("slopes", alibi_slopes(cfg.num_heads, self.slope_kind, self.slope_form),
                             persistent=False)
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=False)
        self.kv_proj = nn.Linear(d, 2 * self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)
        self.o_proj.residual_out = True
        self.out_norm = RMSNorm(self.head_dim, cfg.norm_eps) if output_norm else None

    def reset_special(self) -> None:
        # the slopes buffer is not persistent (derived from the config), so recompute it after
        # meta-device construction or .to_empty()
        self.slopes.copy_(alibi_slopes(self.num_heads, self.slope_kind, self.slope_form))

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k, v = self.kv_proj(x).view(B, T, 2, self.kv_heads, self.head_dim).unbind(2)
        if self.rope:
            cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_theta)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def _project(self, out: torch.Tensor) -> torch.Tensor:
        """Heads' outputs [B, T, H, d] -> [B, T, D]: the optional output norm, then o_proj."""
        if self.out_norm is not None:
            out = self.out_norm(out)
        return self.o_proj(out.flatten(2))

    def _attend(self, q, k, v, cu_seqlens=None) -> torch.Tensor:
        if self.core == "swat" and self.activation == "sigmoid":
            return swat_attention(q, k, v, self.slopes, self.window, self.activation, self.sigmoid_bias,
                                  cu_seqlens=cu_seqlens)
        # softmax cores, and SWAT's softmax ablation (its slopes as ALiBi): the fast softmax paths
        # (swat_attention's softmax is the plain-torch reference: dense scores, no fused kernel)
        return softmax_attention(q, k, v, None if self.core == "full" else self.window, cu_seqlens,
                                 slopes=self.slopes if self.core == "swat" else None)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        if cu_seqlens is not None:
            positions = positions_from_cu_seqlens(cu_seqlens, T)
        else:
            positions = torch.arange(T, device=x.device)
        q, k, v = self._qkv(x, positions)
        return self._project(self._attend(q, k, v, cu_seqlens))

    # Decode state: {"k", "v": [B, S, Hkv, d] buffers, "pos": tokens seen}, written in place as
    # users' inference stacks do (no copy of the cache per token):
    # - full: a KV cache of capacity S holding positions 0..pos-1 in [:, :pos]; when a write would
    #   pass S it moves to a buffer 1/8 larger (at least FULL_CACHE_MIN_GROWTH slots more): amortised
    #   O(1) copying per token, and past the minimum at most 1/9 of the memory held is empty
    #   (doubling would leave up to half of it empty, and the decode benchmark reports the memory held);
    # - swat, sliding: a ring buffer of S = W slots, position p in slot p % W.
    # step returns a new dict over the buffers it wrote (new ones only when a full cache grows), so
    # stepping an older state again overwrites what the later one holds: callers thread the latest
    # state (generate, decode_until); the decode benchmark re-steps one state on purpose (same work).
    def init_state(self, batch_size: int, device, dtype) -> dict:
        size = 0 if self.core == "full" else self.window
        shape = (batch_size, size, self.kv_heads, self.head_dim)
        return {"k": torch.zeros(shape, device=device, dtype=dtype),
                "v": torch.zeros(shape, device=device, dtype=dtype), "pos": 0}

    def _store(self, state: dict, k: torch.Tensor, v: torch.Tensor) -> dict:
        """Write keys/values of positions pos..pos+T-1 into the state's buffers (in place)."""
        pos, T = state["pos"], k.shape[1]
        k_buf, v_buf = state["k"], state["v"]
        if self.core == "full":
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
        q, k, v = self._qkv(x, torch.arange(pos, pos + 1, device=x.device))
        state = self._store(state, k, v)
        if self.core in ("full", "sliding"):
            # softmax without position bias does not depend on the keys' order (RoPE is already in
            # them), so a full ring buffer is attended whole, as its filled prefix before that
            n = pos + 1 if self.core == "full" else min(pos + 1, self.window)
            kv = (state["k"][:, :n], state["v"][:, :n])
            qt, kt, vt = (t.transpose(1, 2) for t in (q, *kv))
            out = F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=self.num_heads != self.kv_heads)
            out = out.transpose(1, 2)[:, 0]
        else:
            out = swat_decode(q[:, 0], state["k"], state["v"], min(pos + 1, self.window), pos, self.slopes,
                              self.window, self.activation, self.sigmoid_bias)
        return self._project(out.reshape(B, 1, self.num_heads, self.head_dim)), state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        B, T, _ = x.shape
        q, k, v = self._qkv(x, torch.arange(T, device=x.device))
        y = self._project(self._attend(q, k, v))
        return y, self._store(self.init_state(B, x.device, k.dtype), k, v)


def _grown(buf: torch.Tensor, filled: int, capacity: int) -> torch.Tensor:
    """A copy of buf [B, S, ...] with `capacity` slots along dim 1, its first `filled` copied."""
    out = buf.new_zeros(buf.shape[0], capacity, *buf.shape[2:])
    out[:, :filled] = buf[:, :filled]
    return out
