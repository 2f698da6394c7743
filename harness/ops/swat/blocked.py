"""SWAT attention for inputs the kernels do not take (CPU tensors, other head sizes, the softmax
activation): the reference's arithmetic (`swat_span`) over blocks of queries, each against the
keys it reaches, so a sequence costs O(T (block + W)) memory and time instead of O(T^2).
"""

from __future__ import annotations

import torch

from harness.ops.banded import over_query_blocks, per_document
from harness.ops.swat.reference import swat_span


def swat_attention_blocked(q, k, v, slopes: torch.Tensor, window: int, activation: str = "sigmoid",
                           sigmoid_bias: float = 0.0, scale: float | None = None,
                           cu_seqlens: torch.Tensor | None = None, block: int | None = None) -> torch.Tensor:
    """`swat_attention_ref`'s arithmetic over blocks of queries (`over_query_blocks`): the same
    result in O(T (block + W)) memory, the path for inputs the kernels do not take (CPU tensors)."""
    if cu_seqlens is not None:
        return per_document(lambda q, k, v: swat_attention_blocked(q, k, v, slopes, window, activation,
                                                                   sigmoid_bias, scale, block=block),
                            cu_seqlens, q, k, v)
    return over_query_blocks(lambda q, k, v, first: swat_span(q, k, v, first, slopes, window, activation,
                                                              sigmoid_bias, scale), q, k, v, window, block)
