"""A complete third-party baseline in one file: a minimal gated linear recurrence ("gru").

    f_t = sigmoid(W_f x_t)            forget gate
    c_t = silu(W_c x_t)               candidate
    h_t = f_t * h_{t-1} + (1 - f_t) * c_t
    y_t = W_o h_t

Use it with any task, no change to the harness:

    harness run --plugin examples/plugin_model.py --models gru --tasks smoke --preset tiny

Only the token mixer is written here; the shared backbone (embeddings, RMSNorm, SwiGLU MLP,
init, generate) comes from the harness, and `match="mlp_hidden"` lets the harness size the MLP
so that the model has the same parameter count as the reference at every preset. A package
would expose this module under the entry-point group `harness.models` instead of `--plugin`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import register_model
from harness.backbone import DecoderLM


class GatedRecurrence(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.in_proj = nn.Linear(d, 2 * d, bias=False)  # forget gate and candidate
        self.out_proj = nn.Linear(d, d, bias=False)
        self.out_proj.residual_out = True  # scaled like other residual outputs at init

    def _gates(self, x):
        f, c = self.in_proj(x).chunk(2, dim=-1)
        f = torch.sigmoid(f.float())
        return f, (1 - f) * F.silu(c.float())

    def forward(self, x, cu_seqlens=None):
        f, u = self._gates(x)
        h = x.new_zeros(x.shape[0], x.shape[2], dtype=torch.float32)
        ys = []
        for t in range(x.shape[1]):
            h = f[:, t] * h + u[:, t]
            ys.append(h)
        return self.out_proj(torch.stack(ys, 1).to(x.dtype))

    def init_state(self, batch_size, device, dtype):
        return torch.zeros(batch_size, self.out_proj.in_features, device=device, dtype=torch.float32)

    def step(self, x, state):
        f, u = self._gates(x[:, 0])
        state = f * state + u
        return self.out_proj(state.to(x.dtype))[:, None], state


@register_model("gru", family="recurrent", match="mlp_hidden",
                description="example plugin: minimal gated linear recurrence")
def build(cfg):
    return DecoderLM(cfg, lambda cfg, i: GatedRecurrence(cfg))
