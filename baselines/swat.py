"""SWAT: sliding-window attention with sigmoid scores, balanced ALiBi slopes and RoPE (Fu et al.,
2025, arXiv 2502.18845), and the variants that test why it trains as it does.

`swat` is the paper's formula and stays so: window semantics 0 <= i - j < W; slopes `balanced`
in the paper's form (fixed: heads 0..H/2-1 get -2^(-k), heads H/2..H-1 get +2^(-k), k = 1..H/2);
sigmoid bias 0; no q/k norm and no output normalisation (as the official config); RoPE on q and k.

Sigmoid weights are not normalised over the window: at initialisation each is about 1/2, so a
head's output is about W/2 times the mean of its values, orders of magnitude larger than a
softmax head's (a convex combination). The variants isolate that:

- `swat_official`: the official repository's released layer: softmax over the window, one-sided
  (negative) ALiBi with ALiBi's geometric slopes, RoPE. Not the paper's formula.
- `swat_logw` (this harness's variant): the paper's SWAT with a constant sigmoid bias of -log W
  (Ramapuram et al., 2024, Theory, Analysis, and Best Practices for Sigmoid Self-Attention), so
  that the weights start near 1/W and sum to about 1, like softmax's.
- `swat_onorm` (this harness's variant): the paper's SWAT with each head's output RMS-normalised
  before the output projection, as gated linear-attention layers norm theirs.

Each variant changes the config fields it names and nothing else, on top of what the user set.
"""

import dataclasses
import math

from harness.model.attention import SwatAttention
from harness.model.backbone import DecoderLM
from harness.registry import register_model


@register_model("swat", family="attention", requires=("triton",),
                description="SWAT (paper): sliding-window sigmoid attention + balanced ALiBi + RoPE")
def build(cfg):
    return DecoderLM(cfg, lambda cfg, i: SwatAttention(cfg))


@register_model("swat_official", family="attention",
                description="SWAT's official-repository layer: windowed softmax + one-sided ALiBi + RoPE")
def build_official(cfg):
    cfg = dataclasses.replace(cfg, activation="softmax", slopes="negative", slope_form="alibi")
    return DecoderLM(cfg, lambda cfg, i: SwatAttention(cfg))


@register_model("swat_logw", family="attention", requires=("triton",),
                description="harness variant: SWAT with sigmoid bias -log W (weights start near 1/W)")
def build_logw(cfg):
    cfg = dataclasses.replace(cfg, sigmoid_bias=cfg.sigmoid_bias - math.log(cfg.window))
    return DecoderLM(cfg, lambda cfg, i: SwatAttention(cfg))


@register_model("swat_onorm", family="attention", requires=("triton",),
                description="harness variant: SWAT with each head's output RMS-normalised")
def build_onorm(cfg):
    return DecoderLM(cfg, lambda cfg, i: SwatAttention(cfg, output_norm=True))
