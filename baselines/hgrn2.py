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
MLP, whose width is solved so that parameters match the reference.
"""

import torch
import torch.nn as nn

from baselines.fla_common import FlaMixer, fla_layer_options, fla_model, layer_options
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
    def __init__(self, layer: nn.Module, bounds: LowerBounds, layer_idx: int, init_std: float):
        super().__init__("hgrn2", layer, init_std)
        self.bounds = bounds
        self.layer_idx = layer_idx

    def layer_kwargs(self) -> dict:
        return {"lower_bound": self.bounds(self.layer_idx)}


def options(cfg) -> dict:
    return layer_options(cfg, "hgrn2", dict(mode="chunk", expand_ratio=min(EXPAND_RATIO, cfg.hidden_size),
                                            use_short_conv=False))


@register_model("hgrn2", family="recurrent", requires=("fla",), extra="fla", gpu_only=True, match="mlp_hidden",
                description="HGRN2: gated linear RNN, state expansion 128, layer lower bounds (fla), + SwiGLU MLP")
@extra_options(fla_layer_options("hgrn2", "HGRN2Attention"))
def build(cfg):
    shared = {}

    def mixer(layer, i):
        bounds = shared.setdefault("bounds", LowerBounds(cfg.num_layers, layer.forget_dim))
        return HGRN2Mixer(layer, bounds, i, cfg.init_std)
    return fla_model(cfg, "hgrn2", "HGRN2Attention", options(cfg), mixer)
