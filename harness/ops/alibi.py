"""ALiBi slopes, including SWAT's balanced (two-sided) variant.

Convention everywhere in the harness: the score of query i for key j gets `slope_h * (i - j)`
added. A negative slope favours recent keys (classic ALiBi); a positive one favours older keys
inside the window. SWAT's "balanced" design gives half the heads each sign.

Two forms of the magnitudes for the n heads of one sign, k = 1..n:
- `paper` (default): 2^(-k), as the SWAT paper's text writes them (its Eq. 4; arXiv 2502.18845);
- `alibi`: ALiBi's geometric 2^(-8k/n), which the harness used before and official ALiBi uses.
They agree only at n = 8 (SWAT's 340M model: 16 heads, 8 per sign, balanced).
"""

from __future__ import annotations

import torch

from harness.config import SLOPE_FORMS, SLOPE_KINDS


def magnitudes(n: int, form: str = "paper") -> list[float]:
    """The n magnitudes of one sign in `form` (paper: 2^(-k); alibi: 2^(-8k/n)), k = 1..n."""
    if form == "paper":
        return [2.0 ** -k for k in range(1, n + 1)]
    if form == "alibi":
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]
    raise ValueError(f"unknown slope form {form!r}: use {' or '.join(SLOPE_FORMS)}")


def alibi_slopes(num_heads: int, kind="balanced", form: str = "paper"):
    """Per-head slopes (float32, shape [num_heads]).

    balanced: heads 0..H/2-1 get -m_k, heads H/2..H-1 get +m_k with the magnitudes m_k of H/2 heads
    (the paper's Eq. 4); negative / positive: one-sided, the magnitudes of H heads; none: zeros; a list:
    taken as given. The slopes are fixed, not learned.
    """
    if not isinstance(kind, str):
        values = [float(x) for x in kind]
        if len(values) != num_heads:
            raise ValueError(f"slopes list has {len(values)} values for {num_heads} heads")
        return torch.tensor(values, dtype=torch.float32)
    if kind == "none":
        return torch.zeros(num_heads)
    if kind == "negative":
        return -torch.tensor(magnitudes(num_heads, form))
    if kind == "positive":
        return torch.tensor(magnitudes(num_heads, form))
    if kind == "balanced":
        n_neg = max(1, num_heads // 2)
        n_pos = num_heads - n_neg
        neg = [-m for m in magnitudes(n_neg, form)]
        pos = magnitudes(n_pos, form) if n_pos else []
        return torch.tensor(neg + pos)
    raise ValueError(f"unknown slopes {kind!r}: use {', '.join(SLOPE_KINDS)} or a list")
