"""SWAT attention: the plain-torch definition (reference.py) and the dispatch to fast kernels."""

from harness.ops.swat.reference import swat_attention_ref, swat_decode_ref


def swat_attention(q, k, v, slopes, window, activation="sigmoid", sigmoid_bias=0.0, cu_seqlens=None):
    """SWAT attention on the fastest path available for these inputs (the reference on CPU)."""
    return swat_attention_ref(q, k, v, slopes, window, activation, sigmoid_bias, cu_seqlens=cu_seqlens)


def swat_decode(q, k_cache, v_cache, cache_len, pos, slopes, window, activation="sigmoid", sigmoid_bias=0.0):
    """One decode step against the ring-buffer cache, on the fastest path available."""
    return swat_decode_ref(q, k_cache, v_cache, cache_len, pos, slopes, window, activation, sigmoid_bias)


__all__ = ["swat_attention", "swat_decode", "swat_attention_ref", "swat_decode_ref"]
