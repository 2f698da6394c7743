"""SWAT: sliding-window attention with sigmoid scores, balanced ALiBi slopes and RoPE (PAPER.md).

Choices (configurable through ModelConfig): window semantics 0 <= i - j < W; slopes `balanced`
(fixed, not learned: heads 0..H/2-1 negative, H/2..H-1 positive, magnitudes 2^(-8k/(H/2)));
sigmoid bias 0; no q/k norm (as the official config); RoPE on q and k.
"""

from harness.attention import AttentionMixer
from harness.backbone import DecoderLM
from harness.registry import register_model


@register_model("swat", family="attention", requires=("triton",),
                description="sliding-window sigmoid attention + balanced ALiBi + RoPE")
def build(cfg):
    return DecoderLM(cfg, lambda cfg, i: AttentionMixer(cfg, "swat"))
