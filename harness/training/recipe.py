"""The training recipe, the same for every registered model (the SWAT paper's, as the fla family's):
AdamW (no decay on norms, biases and other 1-D parameters), linear warmup then cosine decay to
`lr * min_lr_ratio`, the next-token loss (fused with the head under `train.fused_ce`), bf16
autocast on GPU (fp32 weights and optimizer), and the options applied to a built model from
outside: `train.compile` (torch.compile per layer), `train.activation_checkpointing`. The
switches compile and fused_ce default to auto: on where they apply (a CUDA GPU; see
`compile_applies`, `fused_cross_entropy`), so that a plain `harness train` on a GPU runs fast.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from harness.config import Config, ConfigError
from harness.data.tokenizer import get_tokenizer
from harness.model.backbone import DecoderLM
from harness.training import distributed


def lr_at(step: int, cfg) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio."""
    warmup, total = cfg.warmup_steps, cfg.steps
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def budget_note(cfg) -> str | None:
    """One line saying what a train.tokens that is no whole number of global batches trains instead
    (whole steps: tokens // batch_tokens, at least one), None when it is whole. Rounded, not refused
    (TrainConfig.steps is the documented rule, and budgets stated otherwise, as a study's tokens per
    parameter, fall between batches), but said: the run would otherwise train another budget silently.
    The batches are cut, not rounded, to hundredths: their whole part is then the steps trained (32,767
    tokens in batches of 1,024 read 31.99, not 32.00, for 31 steps), bar the one step of a budget under
    one batch."""
    if cfg.tokens % cfg.batch_tokens == 0:
        return None
    steps = cfg.steps
    hundredths = cfg.tokens * 100 // cfg.batch_tokens  # in integers: exact at any size
    return (f"note: train.tokens={cfg.tokens} is {hundredths // 100:,}.{hundredths % 100:02d} batches of "
            f"{cfg.batch_tokens:,} tokens: training {steps:,} step{'s' if steps > 1 else ''} "
            f"({steps * cfg.batch_tokens:,} tokens)")


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW with weight decay on the matrices only. A module exempts parameters of its own by naming
    them in a `no_weight_decay` tuple, as Mamba's A_log: decaying it would pull every state's decay
    rate toward one value, and Mamba's own training exempts it. Names, not marks on the tensors,
    because FSDP2 replaces the parameters (and their attributes) while keeping the modules."""
    exempt = {id(getattr(m, name)) for m in model.modules() for name in getattr(m, "no_weight_decay", ())}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 and id(p) not in exempt]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in exempt]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8)


def lm_loss(model, inputs, targets, cu_seqlens=None) -> torch.Tensor:
    """Mean next-token cross-entropy; packed documents stay apart where the model supports it.
    Models on the shared backbone compute the loss in their forward (fused with the head when
    train.fused_ce is on); other models (plugins, Hugging Face wrappers) return logits."""
    inner = distributed.unwrap(model)
    if cu_seqlens is not None and getattr(inner, "supports_varlen", False):
        B, T = inputs.shape
        inputs, kwargs = inputs.reshape(1, B * T), {"cu_seqlens": cu_seqlens}
    else:
        kwargs = {}
    if isinstance(inner, DecoderLM):
        return model(inputs, targets=targets.reshape(inputs.shape), **kwargs)
    logits = model(inputs, **kwargs)
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten())


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """fp32 matmuls on CUDA run on TF32 tensor cores inside, and as before after (torch's per-backend
    switch where it has one: setting the legacy flag and reading the new one raise in recent torch)."""
    matmul = torch.backends.cuda.matmul
    name, on = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)
    before = getattr(matmul, name)
    setattr(matmul, name, on)
    try:
        yield
    finally:
        setattr(matmul, name, before)


class FusedHeadLoss(torch.nn.Module):
    """A fused head + cross-entropy (fla's) whose fp32 products run on TF32 tensor cores. fla
    accumulates the head's weight gradient in fp32, upcasting its bf16 operands; without TF32 that
    product is a SIMT SGEMM, 18% of a 340m SWAT training step on an H100
    (`results/train/h100-340m/`). bf16 and fp16 values are exact in TF32 (7 and 10 of its 10
    mantissa bits), so the product is the fp32 one up to summation order. fp32 operands
    (train.dtype=fp32) would be rounded, and keep the fp32 path."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return self.loss(x, target, weight)
        with tf32_matmuls():
            return self.loss(x, target, weight)


def fused_cross_entropy(model, device: torch.device, switch: str = "on") -> torch.nn.Module | None:
    """fla's fused head + cross-entropy for a backbone model under train.fused_ce=`switch`: None
    when off, or when auto and it does not apply here; under on, a one-line error naming the fix."""
    if switch == "off":
        return None
    problem = None
    if not isinstance(model, DecoderLM):
        problem = "works with models on the shared backbone (DecoderLM) only; set train.fused_ce=off for this model"
    elif device.type != "cuda":
        problem = "needs a CUDA GPU (fla's Triton kernels); set train.fused_ce=off here"
    else:
        try:
            from fla.modules import FusedLinearCrossEntropyLoss
        except ImportError:
            problem = "needs flash-linear-attention: pip install 'swat-harness[fla]' (or set train.fused_ce=off)"
    if problem is None:
        return FusedHeadLoss(FusedLinearCrossEntropyLoss())
    if switch == "on":
        raise ConfigError(f"train.fused_ce {problem}")
    return None


def compile_applies(model, device: torch.device, switch: str) -> bool:
    """Whether train.compile=`switch` compiles this model's layers here: on always (torch.compile
    runs on any device), auto on a CUDA GPU for models on the shared backbone whose every mixer is
    known to compile (class attribute `compiles`: the attention mixers, whose compiled training is
    measured in results/train/h100/; the fla and mamba-ssm layers call their own kernels and stay
    eager)."""
    if switch != "auto":
        return switch == "on"
    return device.type == "cuda" and isinstance(model, DecoderLM) and all(
        getattr(b.mixer, "compiles", False) for b in model.blocks)


def autocast_for(device: torch.device, dtype: str) -> Callable:
    if device.type == "cuda" and dtype == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return lambda: torch.autocast(device.type, enabled=False)


def apply_activation_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward instead of storing them."""
    from torch.utils.checkpoint import checkpoint
    layers = distributed.layers_of(model)
    if not layers:
        raise ConfigError("train.activation_checkpointing needs a model with a `blocks` ModuleList "
                          "(the shared backbone); set train.activation_checkpointing=false")
    for layer in layers:
        def forward(*args, _forward=layer.forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
        layer.forward = forward


def apply_training_options(model, tcfg, device: torch.device) -> dict[str, bool]:
    """Apply train.fused_ce, train.activation_checkpointing and train.compile to a built model, in
    place, as `harness train` runs it (and `harness bench models` times it); returns what the auto
    switches resolved to here, {"compile": ..., "fused_ce": ...}."""
    fused = fused_cross_entropy(model, device, tcfg.fused_ce)
    if fused is not None:
        model.fused_ce = fused
    if tcfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    compiled = compile_applies(model, device, tcfg.compile)
    if compiled:
        _compile(model)
    return {"compile": compiled, "fused_ce": fused is not None}


def _compile(model) -> None:
    """torch.compile each layer (in place: parameter names and checkpoints are unchanged)."""
    for layer in distributed.layers_of(model) or [model]:
        layer.compile()


def check_tokenizer(cfg: Config):
    """The run's tokenizer, when the model's vocabulary holds its ids."""
    tokenizer = get_tokenizer(cfg.train.tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer.vocab_size}; set model.vocab_size={tokenizer.vocab_size}")
    return tokenizer
