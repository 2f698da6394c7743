"""The definition of SWAT attention, in plain torch. Every kernel is tested against this file.

    s_ij = q_i . k_j * scale + slope_h * (i - j) + bias      for 0 <= i - j < W, same document
    o_i  = sum_j sigmoid(s_ij) v_j                           (no normalisation over j)

`activation="softmax"` normalises the same masked scores with softmax instead (the paper's
ablation, and sliding-window softmax attention when the slopes are zero). Shapes: q [B, T, H, d],
k and v [B, T, Hkv, d] with H a multiple of Hkv (GQA); `cu_seqlens` (int32 [N+1], B == 1) marks
packed documents that must not attend to each other (each is computed on its own). Computation in
fp32, output in q's dtype. The dense [B, H, L, L] score matrix of each sequence or document makes
`swat_attention_ref` O(L^2) in memory: it is the oracle; `swat_attention_blocked` does the same
arithmetic over blocks of queries, in O(L (block + W)), for inputs the kernels do not take.
"""

from __future__ import annotations

import math

import torch


def band_mask(T: int, window: int, device, first_query: int = 0,
              keys: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed [T, keys] bool: 0 <= i - j < window, distance i - j [T, keys] float), for T queries
    at positions first_query.. and `keys` keys (default T) at positions 0.. of the same span."""
    qi = torch.arange(first_query, first_query + T, device=device)[:, None]
    kj = torch.arange(T if keys is None else keys, device=device)[None, :]
    dist = qi - kj
    allowed = (dist >= 0) & (dist < window)
    return allowed, dist.to(torch.float32)


QUERY_BLOCK = 1024  # the most queries per block of `over_query_blocks`


def query_block(window: int) -> int:
    """Queries per block: about the window, so that a block scores about 2 W keys per query (CPU,
    T = 8192: W = 256 fastest at 256, 7x faster than at 1024), at least 64 (fewer, larger products;
    W = 32: 64 fastest) and at most QUERY_BLOCK (bounded memory for full causal windows)."""
    return max(64, min(window, QUERY_BLOCK))


def over_query_blocks(attend, q, k, v, window: int, block: int | None = None) -> torch.Tensor:
    """attend(q_block, k_span, v_span, first_query) on blocks of `block` (default `query_block`)
    queries, each against the keys it can reach (the last `window` - 1 before the block, and the
    block's own), concatenated along T: the scores of a sequence take O(T (block + window)) memory
    and time instead of O(T^2), so long sequences run on a CPU. Tensors [B, T, heads, d];
    first_query is the block's first query's position within its key span."""
    T = q.shape[1]
    block = block or query_block(window)
    if T <= block:
        return attend(q, k, v, 0)
    outs = []
    for a in range(0, T, block):
        b, lo = min(T, a + block), max(0, a - window + 1)
        outs.append(attend(q[:, a:b], k[:, lo:b], v[:, lo:b], a - lo))
    return torch.cat(outs, dim=1)


def per_document(attend, cu_seqlens: torch.Tensor, q, k, v) -> torch.Tensor:
    """attend(q, k, v) on each document of a packed row (B == 1, tensors [1, T, heads, d]) on its
    own, concatenated along T: attention cannot cross documents, and memory is the largest
    document's L^2 instead of T^2 (a packed training row of T = 32K tokens would need T^2 scores
    per head). Tokens before cu_seqlens[0] or after cu_seqlens[-1] form documents of their own."""
    if q.shape[0] != 1:
        raise ValueError("cu_seqlens needs the packed layout with batch size 1")
    T = q.shape[1]
    bounds = sorted({0, T, *(min(max(int(b), 0), T) for b in cu_seqlens.tolist())})
    return torch.cat([attend(q[:, a:b], k[:, a:b], v[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])], dim=1)


def swat_attention_ref(q, k, v, slopes: torch.Tensor, window: int, activation: str = "sigmoid",
                       sigmoid_bias: float = 0.0, scale: float | None = None,
                       cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    if cu_seqlens is not None:
        return per_document(lambda q, k, v: swat_attention_ref(q, k, v, slopes, window, activation, sigmoid_bias,
                                                               scale), cu_seqlens, q, k, v)
    return _swat_span(q, k, v, 0, slopes, window, activation, sigmoid_bias, scale)


def swat_attention_blocked(q, k, v, slopes: torch.Tensor, window: int, activation: str = "sigmoid",
                           sigmoid_bias: float = 0.0, scale: float | None = None,
                           cu_seqlens: torch.Tensor | None = None, block: int | None = None) -> torch.Tensor:
    """`swat_attention_ref`'s arithmetic over blocks of queries (`over_query_blocks`): the same
    result in O(T (block + W)) memory, the path for inputs the kernels do not take (CPU tensors)."""
    if cu_seqlens is not None:
        return per_document(lambda q, k, v: swat_attention_blocked(q, k, v, slopes, window, activation,
                                                                   sigmoid_bias, scale, block=block),
                            cu_seqlens, q, k, v)
    return over_query_blocks(lambda q, k, v, first: _swat_span(q, k, v, first, slopes, window, activation,
                                                               sigmoid_bias, scale), q, k, v, window, block)


def _swat_span(q, k, v, first_query: int, slopes, window, activation, sigmoid_bias, scale) -> torch.Tensor:
    """Queries q [B, Tq, H, d] at positions first_query.. of the keys k, v [B, Tk, Hkv, d]."""
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
