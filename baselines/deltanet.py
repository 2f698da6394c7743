"""DeltaNet (Yang et al., 2024, Parallelizing Linear Transformers with the Delta Rule over Sequence
Length) on fla's `DeltaNet` layer and its chunked WY-representation kernels.

As in the paper and fla's `DeltaNetConfig`: head dim 128 (hidden / 128 heads), key and value dims
= hidden, SiLU feature map then L2 norm on q and k, a learned per-head write strength beta
(sigmoid), depthwise short convolutions (kernel `model.conv_kernel`, 4) on q, k, v, per-head
RMSNorm on the output, no output gate. Each block adds the backbone's SwiGLU MLP, whose width is
solved so that parameters match the reference.
"""

import torch

from baselines.fla_common import FlaMixer, delta_rule_flops, fla_layer_options, fla_model, layer_options
from harness.model.build import extra_options
from harness.registry import register_model

HEAD_DIM = 128


def options(cfg) -> dict:
    return layer_options(cfg, "deltanet", dict(mode="chunk", expand_k=1.0, expand_v=1.0,
                                               num_heads=max(1, cfg.hidden_size // HEAD_DIM), use_beta=True,
                                               use_gate=False, use_short_conv=True, conv_size=cfg.conv_kernel,
                                               qk_activation="silu", qk_norm="l2"))


class DeltaNetMixer(FlaMixer):
    """fla's chunked delta-rule kernel takes only 16-bit inputs (it asserts so): in full precision
    (fp32 evaluation, the GPU equality tests) the layer runs fla's fused recurrent kernel instead,
    the same recurrence computed in fp32, rather than failing or rounding silently to bf16."""

    fla_exportable = True

    @property
    def exported_mode(self) -> str:
        """fla's model gives its layers one mode: the fused recurrent kernel, which this mixer runs in full
        precision (transformers loads a model in fp32) and which takes 16-bit inputs too, where chunk would
        refuse fp32 past 64 tokens."""
        return "fused_recurrent"

    def take_kernel(self, x: torch.Tensor) -> None:
        full_precision = x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)
        self.layer.mode = "fused_recurrent" if full_precision else "chunk"

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        self.take_kernel(x)
        return super().forward(x, cu_seqlens)

    def step(self, x: torch.Tensor, state):
        """One token, or a whole prompt from prefill: past 64 tokens fla runs the layer's mode there too."""
        self.take_kernel(x)
        return super().step(x, state)


def core_flops(layer, seq_len: int) -> dict[str, float]:
    """The core's forward FLOPs per token: fla's chunk_delta_rule, which trains in 16 bits (the fused
    recurrent kernel of fp32 runs the same recurrence token by token), over the layer's heads."""
    return delta_rule_flops(layer.num_heads, layer.head_k_dim, layer.head_v_dim, seq_len)


@register_model("deltanet", family="recurrent", requires=("fla",), extra="fla", gpu_only=True, match="mlp_hidden",
                description="DeltaNet: delta rule (fla), head dim 128, short conv, L2 qk norm, + SwiGLU MLP")
@extra_options(fla_layer_options("deltanet", "DeltaNet"))
def build(cfg):
    return fla_model(cfg, "deltanet", "DeltaNet", options(cfg),
                     lambda layer, i: DeltaNetMixer("deltanet", layer, cfg.init_std), core_flops)
