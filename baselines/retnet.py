"""RetNet (Sun et al., 2023, Retentive Network) on fla's `MultiScaleRetention` layer.

As in the paper and fla's `RetNetConfig`: key dim = hidden (expand_k 1), value dim 2 x hidden
(expand_v 2), head dim 256 for keys (so hidden / 256 heads), fixed per-head decays
1 - 2^(-5-h), xPos-style rotary positions, swish output gate with a per-head RMSNorm. Each block
is retention plus the backbone's SwiGLU MLP (RetNet's FFN), whose width is solved so that
parameters match the reference (the paper's 2 x hidden FFN is what expand_v 2 pays for).
"""

from baselines.fla_common import fla_layer_options, fla_model, layer_options, linear_attention_flops
from harness.model.build import extra_options
from harness.registry import register_model

KEY_HEAD_DIM = 256


def options(cfg) -> dict:
    return layer_options(cfg, "retnet", dict(mode="chunk", expand_k=1.0, expand_v=2.0,
                                             num_heads=max(1, cfg.hidden_size // KEY_HEAD_DIM),
                                             use_short_conv=False, use_output_gate=True, gate_fn="swish",
                                             fuse_norm=True))


def core_flops(layer, seq_len: int) -> dict[str, float]:
    """The core's forward FLOPs per token: fla's chunk_retention, chunk_simple_gla with each head's fixed
    decay, over the layer's heads (keys and values repeated to them where num_kv_heads is fewer)."""
    return linear_attention_flops(layer.num_heads, layer.head_k_dim, layer.head_v_dim, seq_len)


@register_model("retnet", family="recurrent", requires=("fla",), extra="fla", gpu_only=True, match="mlp_hidden",
                description="RetNet: multi-scale retention (fla), head dim 256, expand_v 2, + SwiGLU MLP")
@extra_options(fla_layer_options("retnet", "MultiScaleRetention"))
def build(cfg):
    return fla_model(cfg, "retnet", "MultiScaleRetention", options(cfg), core_flops=core_flops)
