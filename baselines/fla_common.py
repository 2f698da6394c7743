"""The bridge from flash-linear-attention (fla) layers to the shared backbone's mixer contract.

gla, retnet, hgrn2, deltanet and gated_deltanet use fla's own layers (`fla.layers.*`): the
projections, short convolutions, gates and output norms of each architecture exactly as its
authors' fla code builds them, on fla's Triton kernels (chunked for training and prefill,
fused-recurrent for decoding). The fla model classes put those layers in the same block as our
backbone (pre-norm mixer, pre-norm SwiGLU MLP), so only the mixer comes from fla; where a model
adds something across blocks (HGRN2's lower bounds), its baseline file supplies that part.

fla's kernels run only on CUDA GPUs, and fla has no CPU path (its `naive.py` references are
op-level oracles, used in the GPU tests). So these models build anywhere fla is installed (for
parameter counts, also on the meta device) and fail on a CPU input with one line saying so.
The decode state of each mixer is an `fla.models.cache_utils.FLACache`, the cache fla's layers
read and write (recurrent state, short-convolution state, tokens seen); `step()` feeds it one
token through the layer's fused-recurrent path, which must equal the chunked full forward.

`harness export` writes these models as fla's own model classes (harness.hf.fla_export), their configs
read from the options each layer was built with (`FlaMixer.layer_options`, `export_config`).

Each baseline counts its layer's core for harness.model.flops (the `core_flops` it gives `fla_model`),
with the counts of fla's two chunked algorithms below: `linear_attention_flops` (GLA, RetNet, HGRN2)
and `delta_rule_flops` (DeltaNet, Gated DeltaNet).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Callable

import torch
import torch.nn as nn

from harness.model.backbone import DecoderLM
from harness.registry import MissingExtraError, RegistryError

FLA_INSTALL = "pip install 'swat-harness[fla]'"


class NeedsGPUError(RegistryError, RuntimeError):
    """A model with no CPU path was given a CPU input."""


def fla_module(model: str, module: str = "fla.layers"):
    """Import an fla module for `model`, or fail in one line naming the extra."""
    try:
        with warnings.catch_warnings():  # fla warns on import that a CPU-only machine has no Triton GPU
            warnings.filterwarnings("ignore", message="Triton is not supported", category=UserWarning)
            return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{model} needs flash-linear-attention and a CUDA GPU: {FLA_INSTALL} "
                                f"({err})") from None


def require_cuda(x: torch.Tensor, model: str) -> None:
    if x.device.type != "cuda":
        raise NeedsGPUError(f"{model} runs only on a CUDA GPU (fla's Triton kernels have no CPU path); "
                            f"use --device cuda on a GPU machine with {FLA_INSTALL}")


def layer_options(cfg, model: str, defaults: dict) -> dict:
    """The layer's keyword arguments: the paper defaults, then `model.extra.<model>` overrides
    (e.g. `--set 'model.extra={gla: {num_heads: 8}}'`), whose keys `build_model` has checked against
    the model's `extra_options`."""
    overrides = cfg.extra.get(model, {}) if isinstance(cfg.extra, dict) else {}
    if not isinstance(overrides, dict):
        from harness.config import ConfigError
        raise ConfigError(f"model.extra.{model} must be a mapping of {model} layer options, got {overrides!r}")
    return {**defaults, **overrides}


# the fla layers' arguments that the harness sets from model.* (d_model: DeltaNet's alias of hidden_size)
HARNESS_SET = frozenset({"self", "hidden_size", "d_model", "norm_eps", "layer_idx"})


def fla_layer_options(model: str, layer: str) -> Callable[[], tuple[str, ...]]:
    """For `extra_options`: the options of fla's `fla.layers.<layer>` that model.extra.<model> may set, its
    named keyword arguments less those the harness sets. Named ones only: some layers take **kwargs and
    drop what they do not know, so a misspelt option would change nothing. A function, so that fla is
    imported only when the model is built."""
    def options() -> tuple[str, ...]:
        params = inspect.signature(getattr(fla_module(model), layer).__init__).parameters.values()
        return tuple(p.name for p in params if p.name not in HARNESS_SET and p.kind in KEYWORD_KINDS)
    return options


KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


FLA_CHUNK = 64  # the chunk length of fla's chunked kernels (their BT)


def linear_attention_flops(heads: int, key_dim: int, value_dim: int, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token of fla's chunked (gated) linear attention (chunk_gla, chunk_simple_gla; the
    pure-torch form is fla's naive_chunk_simple_gla), heads of key_dim K and value_dim V, chunks of
    c = min(64, seq_len) tokens. Per head and token, 2 FLOPs per multiply-add of its matmuls:
    q.k^T and scores.v within the chunk, 2c(K + V), over the whole c x c block as the chunked form
    computes it before its causal mask; the read-out of the carried state, q.S, and the state update,
    k^T.v, 2KV each. The gates' decays are elementwise and left out; a whole number of chunks is
    assumed (a shorter last one costs a padded tile in the kernel)."""
    c = min(FLA_CHUNK, seq_len)
    return {"scan": heads * (2.0 * c * (key_dim + value_dim) + 4.0 * key_dim * value_dim)}


def delta_rule_flops(heads: int, key_dim: int, value_dim: int, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token of fla's chunked delta rule (chunk_delta_rule, chunk_gated_delta_rule; the
    pure-torch forms are fla's delta_rule_chunkwise and naive_chunk_gated_delta_rule), as
    `linear_attention_flops` counts them, with the delta rule's own products: the WY (UT) transform of
    each chunk, (beta k).k^T, then w = A.(beta k) and u = A.(beta v), 2c(2K + V); the correction of the
    values by the carried state, w.S, 2KV. The triangular solve for A (forward substitution, about c^2/3
    FLOPs per token and head, about 1% at head dims of 64 to 128) is left out with the elementwise work.
    Per head and token:
    2c(3K + 2V) + 6KV."""
    c = min(FLA_CHUNK, seq_len)
    return {"scan": heads * (2.0 * c * (3 * key_dim + 2 * value_dim) + 6.0 * key_dim * value_dim)}


class FlaMixer(nn.Module):
    """One fla layer as a backbone mixer: full forward (chunked kernels, packed documents through
    cu_seqlens), prefill and one-token steps through an FLACache."""

    supports_varlen = True
    # `harness export` writes fla's own model class (harness.hf.fla_export), whose blocks run the layer as this
    # class does; a subclass computes what it changes, so it exports only where its own body says so again
    fla_exportable = True

    def __init__(self, model: str, layer: nn.Module, init_std: float):
        super().__init__()
        self.model = model
        self.layer = layer
        self.init_std = init_std
        self.layer_options: dict | None = None  # the options the layer was built with (set by fla_model)
        # the baseline's count of its layer's core (set by fla_model): core_flops(layer, seq_len) -> {kind: FLOPs}
        self.core_flops: Callable[[nn.Module, int], dict[str, float]] | None = None
        # the backbone's one init scheme scales residual outputs by 1/sqrt(2 * blocks) (GPT-2); fla's own
        # models leave them at init_std
        self.layer.o_proj.residual_out = True

    def flops_per_token(self, seq_len: int) -> dict[str, float] | None:
        """The core's forward FLOPs per token at training length seq_len (harness.model.flops), by the count
        the baseline gave fla_model, or None where it gave none (then the count says it is partial)."""
        return None if self.core_flops is None else self.core_flops(self.layer, seq_len)

    def reset_special(self) -> None:
        """fla's models initialise short convolutions like linear layers (normal(0, std), zero
        bias); the backbone's reset covers the linear layers, this the convolutions."""
        for module in self.layer.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.normal_(module.weight, 0.0, self.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def layer_kwargs(self) -> dict:
        """Extra keyword arguments of the layer's forward (HGRN2's lower bound)."""
        return {}

    @property
    def exported_mode(self) -> str:
        """The kernel mode of the exported layer (fla's config gives its layers one): the layer's."""
        return self.layer.mode

    def export_config(self) -> dict:
        """The layer's options in the terms of fla's config classes: by their own names, but `mode`, which
        the configs call `attn_mode`. Those a config has no field for reach fla's layer at its defaults, which
        the export checks against this layer."""
        options = {key: value for key, value in self.layer_options.items() if key != "mode"}
        return {"attn_mode": self.exported_mode, **options}

    def export_weights(self) -> dict[str, str]:
        """The mixer's weights outside its layer by fla's model's name (HGRN2's lower bounds): none."""
        return {}

    def export_refusal(self) -> str | None:
        """Why this mixer cannot be written as fla's model holds it (a shape it cannot hold), or None."""
        return None

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        require_cuda(x, self.model)
        if cu_seqlens is not None:
            cu_seqlens = cu_seqlens.to(device=x.device, dtype=torch.long)
        return self.layer(x, cu_seqlens=cu_seqlens, **self.layer_kwargs())[0]

    def init_state(self, batch_size: int, device, dtype):
        return fla_module(self.model, "fla.models.cache_utils").FLACache()

    def step(self, x: torch.Tensor, state):
        """One token [B, 1, D]; the FLACache is updated in place and returned."""
        require_cuda(x, self.model)
        y, _, state = self.layer(x, past_key_values=state, use_cache=True, **self.layer_kwargs())
        return y, state

    def prefill(self, x: torch.Tensor):
        return self.step(x, self.init_state(x.shape[0], x.device, x.dtype))


def fla_model(cfg, model: str, layer: str, options: dict,
              wrap: Callable[[nn.Module, int], nn.Module] | None = None,
              core_flops: Callable[[nn.Module, int], dict[str, float]] | None = None) -> DecoderLM:
    """The shared backbone with fla's `fla.layers.<layer>(**options)` as every block's mixer, wrapped
    by `wrap(layer, block index)` (default: a FlaMixer); `core_flops(layer, seq_len)`: the forward FLOPs
    per token of the layer's core (`FlaMixer.flops_per_token`), which each baseline counts for its layer."""
    layers = fla_module(model)
    wrap = wrap or (lambda fla_layer, i: FlaMixer(model, fla_layer, cfg.init_std))

    def mixer(cfg, i):
        wrapped = wrap(getattr(layers, layer)(hidden_size=cfg.hidden_size, norm_eps=cfg.norm_eps, layer_idx=i,
                                             **options), i)
        wrapped.layer_options = dict(options)
        wrapped.core_flops = core_flops
        return wrapped
    return DecoderLM(cfg, mixer)
