"""Mamba-2 (Dao & Gu, 2024, Transformers are SSMs): the Mamba-2 block, native structure (no MLP),
2 blocks per layer as in the paper's language models (48 blocks at 340m, hidden 1024).

The block, as mamba-ssm's `Mamba2` with its defaults: one input projection to
[z, x, B, C, dt]; a depthwise causal convolution (kernel 4) with SiLU over [x, B, C]; the SSD
recurrence per head with a scalar decay

    h_t = exp(dt_t * A) h_{t-1} + dt_t x_t B_t^T        ([headdim, d_state] per head)
    y_t = h_t C_t + D x_t,     dt_t = softplus(dt_t + dt_bias),  A = -exp(A_log)

with headdim 64, d_state 128, one B/C group, expand 2; then RMSNorm(y * silu(z)) (over each B/C
group's features apart when ngroups > 1, as mamba-ssm's RMSNormGated) and the output projection.
Training runs on mamba-ssm's SSD Triton kernel (`mamba_chunk_scan_combined`) when mamba-ssm is
installed and the input is on a GPU, else on `ssd_ref` (plain torch, the oracle), saying so once;
the convolution uses causal-conv1d's kernel when installed. Decoding keeps the last conv_kernel
inputs of the convolution and the [heads, headdim, d_state] state, updated on a GPU by mamba-ssm's
fused `selective_state_update` (in place), else by `ssd_ref` over one token.

Parameter matching: the number of heads is the knob (d_inner = heads * headdim), so counts move in
steps of one head (under 1.5% of the budget at the paper presets); `build` picks the head count
closest to the reference when `model.d_inner` is unset. Options under `model.extra.mamba2`
(headdim, d_state, ngroups, chunk_size) override the defaults; headdim (at most hidden / 8) and
d_state (at most hidden / 4) shrink only below hidden 512, so that test-size models stay small.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.fla_common import layer_options
from baselines.mamba import causal_conv1d_silu, fast_state_update
from harness.config import ConfigError
from harness.model.backbone import DecoderLM, RMSNorm
from harness.model.build import extra_options
from harness.ops.optional import optional_kernel
from harness.registry import register_model


def ssd_ref(x, dt, A, B, C, D, initial_state=None):
    """The SSD recurrence, one step at a time, in fp32 (mamba-ssm's kernels are tested against it).

    x [b, l, h, p]; dt [b, l, h] (already softplus'ed); A [h]; B, C [b, l, g, n] with g dividing h;
    D [h]; initial_state [b, h, p, n]. Returns y [b, l, h, p] in x's dtype and the final state.
    """
    b, l, h, p = x.shape
    rep = h // B.shape[2]
    Bh = B.float().repeat_interleave(rep, dim=2)  # b l h n
    Ch = C.float().repeat_interleave(rep, dim=2)
    xf, dtf = x.float(), dt.float()
    state = (initial_state.float() if initial_state is not None
             else x.new_zeros(b, h, p, B.shape[-1], dtype=torch.float32))
    ys = []
    for t in range(l):
        decay = torch.exp(dtf[:, t] * A.float())  # b h
        state = state * decay[..., None, None] + (dtf[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None]
        ys.append((state * Ch[:, t, :, None]).sum(-1))
    y = torch.stack(ys, dim=1) + xf * D.float()[:, None]
    return y.to(x.dtype), state


def _fast_ssd():
    """mamba-ssm's chunked SSD Triton kernel, or None (then `ssd_ref` is used, said once)."""
    return optional_kernel("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined",
                           "mamba2: mamba-ssm is not installed, using the pure-torch SSD recurrence (slow on GPU); "
                           "pip install 'swat-harness[gpu]' for the Triton kernels")


OPTIONS = ("headdim", "d_state", "ngroups", "chunk_size")  # what model.extra.mamba2 may set


def options(cfg) -> dict:
    return layer_options(cfg, "mamba2", dict(headdim=min(64, cfg.hidden_size // 8),
                                             d_state=min(128, cfg.hidden_size // 4), ngroups=1, chunk_size=256))


class Mamba2Mixer(nn.Module):
    # transformers' Mamba2Mixer takes its inner width as the whole number expand x hidden_size (its config
    # checks it against heads x head_dim), where the harness solves model.d_inner for the parameter budget
    export_refused = ("the Hugging Face Mamba classes derive the inner width from expand x hidden_size, while "
                      "the harness solves model.d_inner for the parameter budget, so there is no exact mapping yet")

    def __init__(self, cfg):
        super().__init__()
        opts = options(cfg)
        d = cfg.hidden_size
        self.headdim, self.n, self.ngroups, self.chunk_size = (opts["headdim"], opts["d_state"], opts["ngroups"],
                                                               opts["chunk_size"])
        self.d_inner, self.k = cfg.inner_size, cfg.conv_kernel
        if self.d_inner % self.headdim:
            raise ConfigError(f"mamba2: model.d_inner={self.d_inner} must be a multiple of headdim={self.headdim}")
        self.nheads = self.d_inner // self.headdim
        if self.nheads % self.ngroups:
            raise ConfigError(f"mamba2: ngroups={self.ngroups} must divide the {self.nheads} heads")
        self.conv_dim = self.d_inner + 2 * self.ngroups * self.n
        self.in_proj = nn.Linear(d, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.k, groups=self.conv_dim, padding=self.k - 1)
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        self.norm = RMSNorm(self.d_inner, cfg.norm_eps, groups=self.ngroups)
        self.out_proj = nn.Linear(self.d_inner, d, bias=False)
        self.out_proj.residual_out = True

    def flops_per_token(self, seq_len: int) -> dict[str, float]:
        """The SSD core's forward FLOPs per token at training length seq_len (harness.model.flops): the
        matmuls of the chunked form that mamba-ssm's kernel runs (mamba_chunk_scan_combined; ssd_minimal
        in plain torch), over chunks of c = min(chunk_size, seq_len) tokens, 2 FLOPs per multiply-add:
        C.B^T within the chunk per group, 2cN per token and group; those decay-masked scores times x,
        2cP per head; the chunk's state B^T.x and the read-out of the state carried in, C.state, 2NP per
        head each. Passing the states from chunk to chunk (a scalar decay per head), the decays and the
        D skip are elementwise and left out; a whole number of chunks is assumed."""
        c = min(self.chunk_size, seq_len)
        return {"scan": 2.0 * c * self.n * self.ngroups + 2.0 * c * self.d_inner + 4.0 * self.n * self.d_inner}

    def reset_special(self, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4, a_range=(1.0, 16.0)):
        """mamba-ssm's init: A ~ U[1, 16], D = 1, softplus(dt_bias) log-uniform in [dt_min, dt_max]."""
        with torch.no_grad():
            dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_log.copy_(torch.log(torch.empty(self.nheads).uniform_(*a_range)))
            self.D.fill_(1.0)
            bound = 1 / math.sqrt(self.k)
            nn.init.uniform_(self.conv1d.weight, -bound, bound)
            nn.init.uniform_(self.conv1d.bias, -bound, bound)

    def _split(self, zxbcdt):
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _heads(self, xbc):
        """[..., conv_dim] -> x [..., h, p], B, C [..., g, n]."""
        x, B, C = xbc.split([self.d_inner, self.ngroups * self.n, self.ngroups * self.n], dim=-1)
        return (x.unflatten(-1, (self.nheads, self.headdim)), B.unflatten(-1, (self.ngroups, self.n)),
                C.unflatten(-1, (self.ngroups, self.n)))

    def _out(self, y, z):
        return self.out_proj(self.norm(y.flatten(-2) * F.silu(z)))

    def _mix(self, hidden, return_state=False):
        z, xbc_in, dt = self._split(self.in_proj(hidden))
        xbc = causal_conv1d_silu(xbc_in.transpose(1, 2), self.conv1d).transpose(1, 2)
        x, B, C = self._heads(xbc)
        A = -torch.exp(self.A_log.float())
        fast = _fast_ssd() if hidden.is_cuda else None
        if fast is not None:
            out = fast(x, dt, A, B, C, self.chunk_size, D=self.D.float(), dt_bias=self.dt_bias.float(),
                       dt_softplus=True, return_final_states=return_state)
            y, ssm = out if return_state else (out, None)
        else:
            y, ssm = ssd_ref(x, F.softplus(dt.float() + self.dt_bias.float()), A, B, C, self.D)
        y = self._out(y, z)
        if not return_state:
            return y
        L = hidden.shape[1]
        conv = F.pad(xbc_in.transpose(1, 2), (max(0, self.k - L), 0))[..., -self.k:]
        return y, {"conv": conv, "ssm": ssm.float()}

    def forward(self, hidden, cu_seqlens=None):
        return self._mix(hidden)

    def prefill(self, hidden):
        return self._mix(hidden, return_state=True)

    def init_state(self, batch_size, device, dtype):
        return {"conv": torch.zeros(batch_size, self.conv_dim, self.k, device=device, dtype=dtype),
                "ssm": torch.zeros(batch_size, self.nheads, self.headdim, self.n, device=device,
                                   dtype=torch.float32)}

    def step(self, hidden, state):
        z, xbc_in, dt = self._split(self.in_proj(hidden[:, 0]))  # [b, ...]
        conv = torch.cat([state["conv"][..., 1:], xbc_in[..., None].to(state["conv"].dtype)], dim=-1)
        xbc = F.silu((conv * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        x, B, C = self._heads(xbc[:, None])
        A = -torch.exp(self.A_log.float())
        update = fast_state_update(hidden)
        if update is not None:  # per-head scalars broadcast over headdim and d_state, as mamba-ssm's step
            h, p = self.nheads, self.headdim
            ssm = state["ssm"]
            y = update(ssm, x[:, 0], dt[..., None].expand(-1, h, p), A[:, None, None].expand(h, p, self.n),
                       B[:, 0], C[:, 0], self.D.float()[:, None].expand(h, p),
                       dt_bias=self.dt_bias.float()[:, None].expand(h, p), dt_softplus=True)[:, None]
        else:
            y, ssm = ssd_ref(x, F.softplus(dt.float() + self.dt_bias.float())[:, None], A, B, C, self.D,
                             initial_state=state["ssm"])
        return self._out(y, z[:, None]), {"conv": conv, "ssm": ssm}


def _model(cfg):
    return DecoderLM(cfg, lambda cfg, i: Mamba2Mixer(cfg), mlp=False, num_blocks=2 * cfg.num_layers)


def matched_d_inner(cfg) -> int:
    """d_inner (a whole number of heads) whose parameter count is closest to the reference's.
    Counts are affine in the head count, so two probes on the meta device find it."""
    from harness.model.backbone import count_params
    from harness.model.build import params_of
    from harness.registry import reference_model
    headdim = options(cfg)["headdim"]
    ngroups = options(cfg)["ngroups"]
    with torch.device("meta"):
        one, two = (count_params(_model(dataclasses.replace(cfg, d_inner=h * ngroups * headdim)))
                    for h in (1, 2))
    target = params_of(reference_model(), cfg)
    groups_of_heads = max(1, round((target - one) / (two - one)) + 1)
    return groups_of_heads * ngroups * headdim


@register_model("mamba2", family="ssm", requires=("mamba_ssm",), extra="gpu",
                description="Mamba-2 blocks (SSD, headdim 64, d_state 128), 2 per layer, no MLP")
@extra_options(OPTIONS)
def build(cfg):
    if cfg.d_inner is None:
        cfg = dataclasses.replace(cfg, d_inner=matched_d_inner(cfg))
    return _model(cfg)
