"""Causal softmax attention (full, or over a sliding window, optionally with ALiBi slopes and packed
documents) on the fastest path for the inputs: flash-attn when installed, else torch SDPA, torch's
own varlen flash kernel or compiled flex_attention on a GPU, SDPA over banded blocks of queries on
the CPU.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from harness.ops.banded import band_mask, over_query_blocks, per_document
from harness.ops.optional import optional_kernel

HALF = (torch.float16, torch.bfloat16)  # the dtypes flash kernels take


# The optional kernels are looked up once, at import, not inside softmax_attention: there a failed
# import (flash-attn not installed) is a graph break in every compiled layer (dynamo: "Import failure").
def _find_torch_varlen():
    """Full causal attention over packed documents on torch's own FlashAttention varlen kernel
    (`torch.nn.attention.varlen`, torch >= 2.10), as f(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k), or
    None where this torch has none. Its causal switch changed name between releases (`is_causal`,
    then `window_size=(-1, 0)`); the one this torch takes is passed."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "window_size" in params:
        return functools.partial(varlen_attn, window_size=(-1, 0))
    if "is_causal" in params:
        return functools.partial(varlen_attn, is_causal=True)
    return None


FLASH_ATTN = optional_kernel("flash_attn")
TORCH_VARLEN = _find_torch_varlen()


def _flash_capable() -> bool:
    """Whether torch's flash kernels run on this machine's GPU (Ampere, compute capability 8.0, or
    later). Not cached with functools: dynamo traces through such a cache with a warning; torch
    keeps the device's properties anyway."""
    return torch.cuda.get_device_capability() >= (8, 0)


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
      window covering all T keys) without slopes; torch's own varlen flash kernel (`TORCH_VARLEN`)
      for it over packed documents, in fp16/bf16 without GQA on an Ampere or later GPU, as a user
      without flash-attn would pick it (flex_attention's document mask is the slower path); else
      compiled flex_attention with a block-sparse sliding-window / document mask and the slopes as
      a score_mod (`_flex_attention`);
    - CPU: torch SDPA per document (`per_document`: memory of the longest document, not of the
      packed row); where a window or slopes apply, over blocks of queries (`over_query_blocks`),
      each with a band mask over the keys it reaches (additive, carrying the slopes, when given).
    """
    T = q.shape[1]
    if window is not None and window >= T:
        window = None  # a window over the whole sequence restricts nothing: plain causal attention
    gqa = q.shape[2] != k.shape[2]
    if q.is_cuda and q.dtype in HALF and FLASH_ATTN is not None:
        fa = FLASH_ATTN
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
    if (window is None and slopes is None and cu_seqlens is not None and not gqa and q.dtype in HALF
            and TORCH_VARLEN is not None and _flash_capable()):
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        return TORCH_VARLEN(q[0], k[0], v[0], cu, cu, T, T)[None]  # T bounds every document: no host sync
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
