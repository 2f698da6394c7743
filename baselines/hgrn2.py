"""HGRN2 (Qin et al., 2024, HGRN2: Gated Linear RNNs with State Expansion) on fla's
`HGRN2Attention` layer (GLA's chunked kernels with input gate = 1 - forget gate).

As in the paper and fla's `HGRN2Config`: state expansion ratio 128 (hidden / 128 heads, each with
a 128 x head-dim state), no short convolution, and the paper's layer-wise lower bounds on the
forget gates: one learnable [layers, forget dim] table shared by all blocks, turned into monotone
bounds by softmax over layers and a cumulative sum (zero for the first layer), so that higher
layers keep longer memories. fla's model holds that table above its blocks, as wide as the hidden
size, which is the forget dim only where the hidden size is a multiple of 128; here every mixer
holds the same `LowerBounds` module, as wide as the layers' forget gates (128 at hidden size 192:
one head), and reads its own row. Each block adds the backbone's SwiGLU
MLP, whose width is solved so that parameters match the reference. `harness export` writes the
table as fla's `lower_bounds` where the two are as wide, and refuses the other hidden sizes.
"""

import torch
import torch.nn as nn

from baselines.fla_common import FlaMixer, fla_layer_options, fla_model, layer_options, linear_attention_flops
from harness.model.build import extra_options
from harness.registry import register_model

EXPAND_RATIO = 128


class LowerBounds(nn.Module):
    """The shared table of forget-gate lower bounds (fla's `HGRN2Model.lower_bounds`)."""

    def __init__(self, num_layers: int, hidden_size: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(num_layers, hidden_size))

    def reset_special(self) -> None:
        nn.init.zeros_(self.table)

    def forward(self, layer_idx: int) -> torch.Tensor:
        bounds = self.table.softmax(0, dtype=torch.float)
        return (bounds.cumsum(0) - bounds[0])[layer_idx]


class HGRN2Mixer(FlaMixer):
    """fla's HGRN2 layer with its row of the shared lower bounds, as fla's HGRN2Model runs it."""

    fla_exportable = True

    def __init__(self, layer: nn.Module, bounds: LowerBounds, layer_idx: int, init_std: float):
        super().__init__("hgrn2", layer, init_std)
        self.bounds = bounds
        self.layer_idx = layer_idx

    def layer_kwargs(self) -> dict:
        return {"lower_bound": self.bounds(self.layer_idx)}

    def export_config(self) -> dict:
        return {**super().export_config(), "use_lower_bound": True}

    def export_weights(self) -> dict[str, str]:
        return {"model.lower_bounds": "bounds.table"}

    def export_refusal(self) -> str | None:
        """fla's model holds the table as wide as the hidden size: a narrower one (hidden 192: one head of 128)
        has no place there."""
        layer = self.layer
        if layer.forget_dim == layer.hidden_size:
            return None
        return (f"its forget gates are {layer.forget_dim} wide (hidden size {layer.hidden_size} // expand_ratio "
                f"{layer.expand_ratio} heads of {layer.expand_ratio}), and fla's HGRN2 model holds the lower bounds "
                f"as wide as the hidden size; only a hidden size that expand_ratio divides exports")


def options(cfg) -> dict:
    return layer_options(cfg, "hgrn2", dict(mode="chunk", expand_ratio=min(EXPAND_RATIO, cfg.hidden_size),
                                            use_short_conv=False))


def core_flops(layer, seq_len: int) -> dict[str, float]:
    """The core's forward FLOPs per token: fla's chunk_gla with keys 1 - forget gate, per head a key dim of
    expand_ratio (the state expansion) and a value dim of hidden / heads."""
    return linear_attention_flops(layer.num_heads, layer.head_f_dim, layer.head_i_dim, seq_len)


@register_model("hgrn2", family="recurrent", requires=("fla",), extra="fla", gpu_only=True, match="mlp_hidden",
                description="HGRN2: gated linear RNN, state expansion 128, layer lower bounds (fla), + SwiGLU MLP")
@extra_options(fla_layer_options("hgrn2", "HGRN2Attention"))
def build(cfg):
    shared = {}

    def mixer(layer, i):
        bounds = shared.setdefault("bounds", LowerBounds(cfg.num_layers, layer.forget_dim))
        return HGRN2Mixer(layer, bounds, i, cfg.init_std)
    return fla_model(cfg, "hgrn2", "HGRN2Attention", options(cfg), mixer, core_flops)
