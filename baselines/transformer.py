"""Transformer++: full causal softmax attention with RoPE and the shared SwiGLU/RMSNorm blocks."""

from harness.model.attention import CausalAttention
from harness.model.backbone import DecoderLM
from harness.registry import register_model


@register_model("transformer", family="attention", reference=True,
                description="Transformer++: full causal softmax attention, RoPE")
def build(cfg):
    return DecoderLM(cfg, lambda cfg, i: CausalAttention(cfg))
