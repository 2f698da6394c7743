"""Sliding-window softmax attention with RoPE: SWAT's window with the usual softmax and no ALiBi."""

from harness.model.attention import SlidingAttention
from harness.model.backbone import DecoderLM
from harness.registry import register_model


@register_model("sliding_softmax", family="attention",
                description="sliding-window softmax attention (same window as swat), RoPE")
def build(cfg):
    return DecoderLM(cfg, lambda cfg, i: SlidingAttention(cfg))
