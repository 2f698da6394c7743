"""The definition of SWAT attention, in plain torch. Every kernel is tested against this file.

    s_ij = q_i . k_j * scale + slope_h * (i - j) + bias      for 0 <= i - j < W, same document
    o_i  = sum_j sigmoid(s_ij) v_j                           (no normalisation over j)

`activation="softmax"` normalises the same masked scores with softmax instead (the paper's
ablation, and sliding-window softmax attention when the slopes are zero). Shapes: q [B, T, H, d],
k and v [B, T, Hkv, d] with H a multiple of Hkv (GQA); `cu_seqlens` (int32 [N+1], B == 1) marks
packed documents that must not attend to each other (each is computed on its own). Computation in
fp32, output in q's dtype. The dense [B, H, L, L] score matrix of each sequence or document makes
`swat_attention_ref` O(L^2) in memory: it is the oracle (`swat_attention_blocked`, blocked.py, does
the same arithmetic in bounded memory for inputs the kernels do not take). `swat_decode_ref`
defines one decode step against the ring buffer of the last W keys and values.
"""

from __future__ import annotations

import math

import torch

from harness.ops.banded import band_mask, per_document


def swat_attention_ref(q, k, v, slopes: torch.Tensor, window: int, activation: str = "sigmoid",
                       sigmoid_bias: float = 0.0, scale: float | None = None,
                       cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    if cu_seqlens is not None:
        return per_document(lambda q, k, v: swat_attention_ref(q, k, v, slopes, window, activation, sigmoid_bias,
                                                               scale), cu_seqlens, q, k, v)
    return swat_span(q, k, v, 0, slopes, window, activation, sigmoid_bias, scale)


def swat_span(q, k, v, first_query: int, slopes, window, activation, sigmoid_bias, scale) -> torch.Tensor:
    """The definition on one span: queries q [B, Tq, H, d] at positions first_query.. of the keys
    k, v [B, Tk, Hkv, d] (all of a sequence for the oracle, one block of queries and the keys it
    reaches for the blocked path)."""
    d, H, Hkv = q.shape[3], q.shape[2], k.shape[2]
    if H % Hkv:
        raise ValueError(f"q has {H} heads, not a multiple of k's {Hkv}")
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    rep = H // Hkv
    qf = q.float().transpose(1, 2)  # B H Tq d
    kf = k.float().repeat_interleave(rep, dim=2).transpose(1, 2)
    vf = v.float().repeat_interleave(rep, dim=2).transpose(1, 2)
    allowed, dist = band_mask(q.shape[1], window, q.device, first_query, k.shape[1])
    scores = qf @ kf.transpose(-1, -2) * scale + slopes.float().to(q.device)[:, None, None] * dist
    if activation == "sigmoid":
        weights = torch.sigmoid(scores + sigmoid_bias) * allowed
    elif activation == "softmax":
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    return (weights @ vf).transpose(1, 2).to(q.dtype)


def swat_decode_ref(q, k_cache, v_cache, cache_len: int, pos: int, slopes: torch.Tensor, window: int,
                    activation: str = "sigmoid", sigmoid_bias: float = 0.0,
                    scale: float | None = None) -> torch.Tensor:
    """One query per sequence against a ring buffer of the last `window` keys and values.

    q [B, H, d]; k_cache, v_cache [B, W, Hkv, d], where the token at absolute position p sits in
    slot p % W; `pos` is the query's absolute position (its own key is already in the cache) and
    `cache_len` how many slots hold valid tokens (min(pos + 1, W)).
    """
    B, H, d = q.shape
    W, Hkv = k_cache.shape[1], k_cache.shape[2]
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    rep = H // Hkv
    slot = torch.arange(W, device=q.device)
    # absolute position of each slot: the latest p <= pos with p % W == slot
    slot_pos = pos - ((pos - slot) % W)
    dist = (pos - slot_pos).to(torch.float32)
    valid = (slot < cache_len) & (dist < window)
    kf = k_cache.float().repeat_interleave(rep, dim=2)  # B W H d
    vf = v_cache.float().repeat_interleave(rep, dim=2)
    scores = torch.einsum("bhd,bwhd->bhw", q.float(), kf) * scale + slopes.float().to(q.device)[:, None] * dist
    if activation == "sigmoid":
        weights = torch.sigmoid(scores + sigmoid_bias) * valid
    else:
        weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    return torch.einsum("bhw,bwhd->bhd", weights, vf).to(q.dtype)
