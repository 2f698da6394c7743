"""GLA (Yang et al., 2024, Gated Linear Attention Transformers with Hardware-Efficient Training) on
fla's `GatedLinearAttention` layer and chunked Triton kernels.

The paper's configuration (and fla's `GLAConfig`): 4 heads, key dim 0.5 x hidden (expand_k 0.5),
value dim 1 x hidden (expand_v 1), data-dependent low-rank (16) forget gates with logsigmoid / 16,
swish output gate fused with a per-head RMSNorm, no short convolution; each block is the mixer and
a SwiGLU MLP, as in the backbone, whose width is solved so that parameters match the reference.
"""

from baselines.fla_common import fla_layer_options, fla_model, layer_options, linear_attention_flops
from harness.model.build import extra_options
from harness.registry import register_model


def options(cfg) -> dict:
    return layer_options(cfg, "gla", dict(mode="chunk", expand_k=0.5, expand_v=1.0, num_heads=4,
                                          use_short_conv=False, use_output_gate=True, gate_fn="swish",
                                          gate_logit_normalizer=16, gate_low_rank_dim=16, fuse_norm=True))


def core_flops(layer, seq_len: int) -> dict[str, float]:
    """The core's forward FLOPs per token: fla's chunk_gla, linear attention with per-key gates (inside
    the same matmuls) over the layer's heads (keys and values repeated to them where num_kv_heads is fewer)."""
    return linear_attention_flops(layer.num_heads, layer.head_k_dim, layer.head_v_dim, seq_len)


@register_model("gla", family="recurrent", requires=("fla",), extra="fla", gpu_only=True, match="mlp_hidden",
                description="GLA: gated linear attention (fla), 4 heads, expand_k 0.5, + SwiGLU MLP")
@extra_options(fla_layer_options("gla", "GatedLinearAttention"))
def build(cfg):
    return fla_model(cfg, "gla", "GatedLinearAttention", options(cfg), core_flops=core_flops)
