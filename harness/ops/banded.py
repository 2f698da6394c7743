"""Attention over the band of keys each query reaches, in bounded memory on the CPU: a band mask, the
queries cut into blocks that each score only the keys they can reach, and packed documents
attended one by one. SWAT's blocked path and softmax attention on the CPU run on these.
"""

from __future__ import annotations

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
