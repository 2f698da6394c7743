"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2025, Gated Delta Networks) on fla's `GatedDeltaNet`
layer and chunked gated-delta-rule kernels.

fla's defaults, which are the paper's: head dim 256 for q and k, value heads expanded 2x
(expand_v 2), Mamba-2-style scalar decay per head (A_log, dt_bias) times the delta rule's write
strength beta, SiLU short convolutions on q, k, v, L2-normalised q and k, swish output gate fused
with a per-head RMSNorm. The paper's 1.3B model uses 6 heads of 256 at hidden 2048, keys 0.75 x
hidden; here the head count keeps that ratio (round(0.75 * hidden / 256): 3 heads at 340m, 4 at
760m). Below hidden 512 the head dim shrinks to hidden / 2 so that small test models stay small.
Each block adds the backbone's SwiGLU MLP, whose width is solved so that parameters match.

Training runs on fla's Triton kernels, forward and backward, except on a Hopper GPU with Triton
>= 3.4.0 and < 3.7.1 and no tilelang: there fla refuses one backward kernel, the gated
chunk_bwd_dqkwg (those Triton versions miscompile it, fla issue #640), and `build` registers
`baselines/fla_torch_backend.py`, a PyTorch implementation of that function, with fla's backend
dispatch, which then runs it in the kernel's place; every other kernel stays fla's.
"""

import torch

from baselines.fla_common import FlaMixer, delta_rule_flops, fla_layer_options, fla_model, fla_module, layer_options
from harness.model.build import extra_options
from harness.registry import KernelRefusedError, register_model

HEAD_DIM = 256
KEY_RATIO = 0.75


def torch_backend():
    """baselines.fla_torch_backend, imported (which registers it with fla's backend dispatch)."""
    return fla_module("gated_deltanet", "baselines.fla_torch_backend")


def check_backward_kernel(device: torch.device) -> None:
    """Fail in one line, before any work, where fla's gated backward still cannot run. Where fla
    refuses its Triton chunk_bwd_dqkwg kernel (Hopper, Triton >= 3.4.0 and < 3.7.1: wrong results,
    fla issue #640), fla's backend dispatch hands the call to our torch backend, or to fla's
    TileLang one; only with that dispatch switched off (FLA_DISABLE_BACKEND_DISPATCH=1) does fla
    reach its own check, which raises inside the first backward, after minutes of autotuning."""
    if device.type != "cuda" or not torch_backend().triton_kernel_refused():
        return
    import fla.backends
    if fla.backends._DISPATCH_DISABLED:
        import triton
        raise KernelRefusedError(f"gated_deltanet cannot train with Triton {triton.__version__} on "
                                 f"{torch.cuda.get_device_name(device)} while FLA_DISABLE_BACKEND_DISPATCH=1: "
                                 f"fla refuses its gated backward kernel there (wrong results, fla issue #640) and that "
                                 f"setting bypasses its replacements; unset FLA_DISABLE_BACKEND_DISPATCH or "
                                 f"pip install 'triton>=3.7.1' (with a matching torch)")


class GatedDeltaNetMixer(FlaMixer):
    """fla's GatedDeltaNet layer, checked at the first training forward so that a run that cannot
    train stops before it spends minutes compiling."""

    fla_exportable = True  # the check changes nothing the layer computes
    checked = False

    def forward(self, x, cu_seqlens=None):
        if torch.is_grad_enabled() and not self.checked:
            check_backward_kernel(x.device)
            self.checked = True
        return super().forward(x, cu_seqlens)


def options(cfg) -> dict:
    head_dim = min(HEAD_DIM, cfg.hidden_size // 2)
    return layer_options(cfg, "gated_deltanet", dict(
        mode="chunk", head_dim=head_dim, num_heads=max(1, round(KEY_RATIO * cfg.hidden_size / head_dim)),
        expand_v=2.0, use_gate=True, use_short_conv=True, conv_size=cfg.conv_kernel, allow_neg_eigval=False))


def core_flops(layer, seq_len: int) -> dict[str, float]:
    """The core's forward FLOPs per token: fla's chunk_gated_delta_rule (the scalar decays are elementwise),
    over the layer's value heads (num_v_heads; queries and keys repeated to them where they are more)."""
    return delta_rule_flops(layer.num_v_heads, layer.head_k_dim, layer.head_v_dim, seq_len)


@register_model("gated_deltanet", family="recurrent", requires=("fla",), extra="fla", gpu_only=True,
                match="mlp_hidden",
                description="Gated DeltaNet (fla): gated delta rule, head dim 256, expand_v 2, + SwiGLU MLP")
@extra_options(fla_layer_options("gated_deltanet", "GatedDeltaNet"))
def build(cfg):
    fla_module("gated_deltanet")  # fla's layers, then the torch backend into fla's dispatch (as the GPU check ran)
    torch_backend()
    return fla_model(cfg, "gated_deltanet", "GatedDeltaNet", options(cfg),
                     lambda layer, i: GatedDeltaNetMixer("gated_deltanet", layer, cfg.init_std), core_flops)
