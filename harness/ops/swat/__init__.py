"""SWAT attention: the plain-torch definition (reference.py) and the dispatch to fast kernels.

`swat_attention` and `swat_decode` take the Triton kernels (function.py) for CUDA tensors whose
dtype and head_dim they support (bf16/fp16/fp32, d in 16/32/64/128) with activation="sigmoid";
everything else (CPU tensors, other head sizes, activation="softmax") runs the reference's
arithmetic over blocks of queries (`swat_attention_blocked`: O(L (block + W)) memory per sequence
or packed document; `swat_attention_ref`, the dense oracle, is O(L^2)). The model's softmax
ablation does not come here: its layers call harness.ops.softmax.softmax_attention with the slopes
(flash-attn's ALiBi or flex_attention).
"""

from harness.ops.swat.blocked import swat_attention_blocked
from harness.ops.swat.reference import swat_attention_ref, swat_decode_ref

_KERNEL_HEAD_DIMS = (16, 32, 64, 128)


def _kernel_applies(q, k, activation: str) -> bool:
    import torch
    return (activation == "sigmoid" and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16, torch.float32)
            and q.shape[-1] in _KERNEL_HEAD_DIMS and q.shape[-2] % k.shape[-2] == 0)


def swat_attention(q, k, v, slopes, window, activation="sigmoid", sigmoid_bias=0.0, cu_seqlens=None):
    """SWAT attention on the fastest path available for these inputs (the blocked reference on CPU)."""
    if _kernel_applies(q, k, activation):
        from harness.ops.swat.function import swat_attention_triton
        return swat_attention_triton(q, k, v, slopes, window, sigmoid_bias, cu_seqlens=cu_seqlens)
    return swat_attention_blocked(q, k, v, slopes, window, activation, sigmoid_bias, cu_seqlens=cu_seqlens)


def swat_decode(q, k_cache, v_cache, cache_len, pos, slopes, window, activation="sigmoid", sigmoid_bias=0.0):
    """One decode step against the ring-buffer cache, on the fastest path available."""
    if _kernel_applies(q, k_cache, activation):
        from harness.ops.swat.function import swat_decode_triton
        return swat_decode_triton(q, k_cache, v_cache, cache_len, pos, slopes, window, sigmoid_bias)
    return swat_decode_ref(q, k_cache, v_cache, cache_len, pos, slopes, window, activation, sigmoid_bias)


__all__ = ["swat_attention", "swat_decode", "swat_attention_blocked", "swat_attention_ref", "swat_decode_ref"]
