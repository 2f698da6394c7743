"""Mamba (Gu & Dao, 2023): the Mamba-1 block, native block structure (no MLP), 2 blocks per layer.

A Mamba model of `num_layers = L` has 2L Mamba blocks, the convention of the Mamba paper for
matching a Transformer's L (attention + MLP) layers; `d_inner` (default expand * hidden) is the
knob solved to match parameter counts. The selective scan runs on mamba-ssm's CUDA kernel when
mamba-ssm is installed and the input is on a GPU, and on `selective_scan_ref` (plain torch, the
oracle) otherwise; causal-conv1d is used the same way. A decode step on a GPU updates the
[d_inner, d_state] state in place with mamba-ssm's fused `selective_state_update`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.model.backbone import DecoderLM
from harness.ops.optional import optional_kernel
from harness.registry import register_model


def selective_scan_ref(u, delta, A, B, C, D, z=None, delta_bias=None, delta_softplus=True,
                       return_last_state=False, state=None):
    """Plain-torch selective scan (as mamba_ssm's `selective_scan_ref`), one step at a time.

    u, delta, z: [b, d, l]; A: [d, n]; B, C: [b, n, l]; D: [d]. Returns y [b, d, l] (and the
    final state [b, d, n]). Works in fp32 and keeps only one step's [b, d, n] at a time.
    """
    dtype = u.dtype
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    A = A.float()
    x = state.float() if state is not None else u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]
        x = torch.exp(dt * A) * x + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=2) + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, x) if return_last_state else y


def _fast_scan():
    """mamba-ssm's fused selective scan, or None (then the reference is used, said once)."""
    return optional_kernel("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn",
                           "mamba: mamba-ssm is not installed, using the pure-torch selective scan (slow on GPU); "
                           "pip install 'swat-harness[gpu]' for the CUDA kernels")


def fast_state_update(x: torch.Tensor):
    """For a CUDA input, mamba-ssm's fused one-token state update (the kernel its own `step` uses;
    it writes the state in place and returns the output), else None (then the decode step runs the
    reference scan over one token)."""
    if not x.is_cuda:
        return None
    return optional_kernel("mamba_ssm.ops.triton.selective_state_update", "selective_state_update")


def _fast_conv():
    return optional_kernel("causal_conv1d", "causal_conv1d_fn")


def causal_conv1d_silu(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """silu(depthwise causal conv) of x [b, d, l]: causal-conv1d's kernel on a GPU when installed,
    else torch's conv with left padding (`conv` has padding k - 1; the tail is cut off)."""
    fast = _fast_conv() if x.is_cuda else None
    if fast is not None:
        return fast(x, conv.weight.squeeze(1), conv.bias, activation="silu")
    return F.silu(conv(x)[..., :x.shape[-1]])


class MambaMixer(nn.Module):
    # `harness export` writes transformers' MambaForCausalLM (harness.hf.mamba_export), whose mixer computes what
    # this class does; a subclass computes what it changes, so it exports only where its own body says so again
    mamba_exportable = True
    no_weight_decay = ("A_log",)  # as in mamba_ssm (harness.training.recipe.make_optimizer)

    def __init__(self, cfg):
        super().__init__()
        d, self.d_inner, self.n = cfg.hidden_size, cfg.inner_size, cfg.state_size
        self.dt_rank = math.ceil(d / 16)
        self.k = cfg.conv_kernel
        self.in_proj = nn.Linear(d, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, self.k, groups=self.d_inner, padding=self.k - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.n, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.n))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d, bias=False)
        self.out_proj.residual_out = True

    def flops_per_token(self, seq_len: int) -> dict[str, float]:
        """The selective scan: 9 * d_inner * state_size per token (the Mamba paper's count: discretise,
        update the state, read it out), although it is not a matmul."""
        return {"scan": 9.0 * self.d_inner * self.n}

    def reset_special(self, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4):
        """Mamba's own init: S4D-real A, D = 1, dt bias so that softplus(bias) ~ U[dt_min, dt_max]."""
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.arange(1, self.n + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
            self.D.fill_(1.0)
            nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            bound = 1 / math.sqrt(self.k)
            nn.init.uniform_(self.conv1d.weight, -bound, bound)
            nn.init.uniform_(self.conv1d.bias, -bound, bound)

    def _ssm_inputs(self, x):
        """x [b, d_inner, l] after conv -> delta [b, d_inner, l], B, C [b, n, l]."""
        x_dbl = self.x_proj(x.transpose(1, 2))
        dt, B, C = x_dbl.split([self.dt_rank, self.n, self.n], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
        return delta, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()

    def _scan(self, x, z, return_last_state=False, cu_seqlens=None):
        L = x.shape[-1]
        xc = causal_conv1d_silu(x, self.conv1d)
        delta, B, C = self._ssm_inputs(xc)
        A = -torch.exp(self.A_log.float())
        scan = _fast_scan() if x.is_cuda else None
        fn = scan if scan is not None else selective_scan_ref
        out = fn(xc, delta, A, B, C, self.D.float(), z, delta_bias=self.dt_proj.bias.float(),
                 delta_softplus=True, return_last_state=return_last_state)
        if return_last_state:
            y, ssm_state = out
            conv_state = F.pad(x, (max(0, self.k - L), 0))[..., -self.k:]
            return y, {"conv": conv_state, "ssm": ssm_state.float()}
        return out

    def forward(self, hidden, cu_seqlens=None):
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
        return self.out_proj(self._scan(x, z).transpose(1, 2))

    def prefill(self, hidden):
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
        y, state = self._scan(x, z, return_last_state=True)
        return self.out_proj(y.transpose(1, 2)), state

    def init_state(self, batch_size, device, dtype):
        return {"conv": torch.zeros(batch_size, self.d_inner, self.k, device=device, dtype=dtype),
                "ssm": torch.zeros(batch_size, self.d_inner, self.n, device=device, dtype=torch.float32)}

    def step(self, hidden, state):
        x, z = self.in_proj(hidden[:, 0]).chunk(2, dim=-1)  # [b, d_inner]
        conv_state = torch.cat([state["conv"][..., 1:], x[..., None]], dim=-1)
        xc = F.silu((conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        delta, B, C = self._ssm_inputs(xc[..., None])
        A = -torch.exp(self.A_log.float())
        update = fast_state_update(hidden)
        if update is not None:
            ssm = state["ssm"]
            y = update(ssm, xc, delta[..., 0], A, B[..., 0], C[..., 0], self.D.float(), z=z,
                       dt_bias=self.dt_proj.bias.float(), dt_softplus=True)[..., None]
        else:
            y, ssm = selective_scan_ref(xc[..., None], delta, A, B, C, self.D, z[..., None],
                                        delta_bias=self.dt_proj.bias, delta_softplus=True,
                                        return_last_state=True, state=state["ssm"])
        return self.out_proj(y.transpose(1, 2)), {"conv": conv_state, "ssm": ssm}


@register_model("mamba", family="ssm", requires=("mamba_ssm", "causal_conv1d"), extra="gpu", match="d_inner",
                description="Mamba-1 blocks (selective SSM), 2 per layer, no MLP")
def build(cfg):
    return DecoderLM(cfg, lambda cfg, i: MambaMixer(cfg), mlp=False, num_blocks=2 * cfg.num_layers)
