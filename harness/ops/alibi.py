"""ALiBi slopes, including SWAT's balanced (two-sided) variant.

Convention everywhere in the harness: the score of query i for key j gets `slope_h * (i - j)`
added. A negative slope favours recent keys (classic ALiBi); a positive one favours older keys
inside the window. SWAT's "balanced" design gives half the heads each sign.
"""

from __future__ import annotations

import torch


def geometric_magnitudes(n: int) -> list[float]:
    """ALiBi's magnitudes for n heads: 2^(-8k/n), k = 1..n."""
    return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]


def alibi_slopes(num_heads: int, kind="balanced") -> torch.Tensor:
    """Per-head slopes (float32, shape [num_heads]).

    balanced: heads 0..H/2-1 get -2^(-8k/(H/2)), heads H/2..H-1 get +2^(-8k/(H/2)) (PAPER.md);
    negative / positive: one-sided ALiBi with 2^(-8k/H); none: zeros; a list: taken as given.
    The slopes are fixed, not learned.
    """
    if not isinstance(kind, str):
        values = [float(x) for x in kind]
        if len(values) != num_heads:
            raise ValueError(f"slopes list has {len(values)} values for {num_heads} heads")
        return torch.tensor(values, dtype=torch.float32)
    if kind == "none":
        return torch.zeros(num_heads)
    if kind == "negative":
        return -torch.tensor(geometric_magnitudes(num_heads))
    if kind == "positive":
        return torch.tensor(geometric_magnitudes(num_heads))
    if kind == "balanced":
        n_neg = max(1, num_heads // 2) if num_heads > 1 else 1
        n_pos = num_heads - n_neg
        neg = [-m for m in geometric_magnitudes(n_neg)]
        pos = geometric_magnitudes(n_pos) if n_pos else []
        return torch.tensor(neg + pos)
    raise ValueError(f"unknown slopes {kind!r}: use balanced, negative, positive, none or a list")
