"""The shared decoder LM: every baseline supplies only its token mixer (or its native block).

    embed -> N x [x + mixer(norm(x)); x + mlp(norm(x))] -> norm -> tied head

Matched embeddings, RMSNorm, SwiGLU MLP and init across models mean a comparison measures the
mixer and nothing else. A mixer is an nn.Module with

    forward(x [B, T, D], cu_seqlens=None) -> [B, T, D]
    init_state(batch_size, device, dtype) -> state        (per-layer decode state)
    step(x [B, 1, D], state) -> (y [B, 1, D], state)       (one token; equals forward)
    prefill(x [B, T, D]) -> (y, state)                     (optional; default: step per token)

and the class attributes `supports_varlen` when it honours `cu_seqlens` (packed documents) and
`compiles` when torch.compile of its layer is known to run and help (train.compile=auto uses it).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.config import ModelConfig


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension, or with `groups` over each of that many equal slices of it apart
    (Mamba-2's gated norm with several B/C groups, as mamba-ssm's RMSNormGated), then one weight."""

    def __init__(self, dim: int, eps: float = 1e-6, groups: int = 1):
        super().__init__()
        self.eps, self.groups = eps, groups
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = self.groups > 1  # only then the views: every block's norms run this, eager included
        xf = x.float().unflatten(-1, (self.groups, -1)) if grouped else x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return ((xf.flatten(-2) if grouped else xf) * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.down.residual_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, mixer: nn.Module, mlp: bool):
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mixer = mixer
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps) if mlp else None
        self.mlp = SwiGLU(cfg.hidden_size, cfg.ffn_hidden) if mlp else None

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mlp is None else x + self.mlp(self.mlp_norm(x))

    def forward(self, x, cu_seqlens=None):
        return self._mlp(x + self.mixer(self.mixer_norm(x), cu_seqlens=cu_seqlens))

    def step(self, x, state):
        y, state = self.mixer.step(self.mixer_norm(x), state)
        return self._mlp(x + y), state

    def prefill(self, x):
        h = self.mixer_norm(x)
        if hasattr(self.mixer, "prefill"):
            y, state = self.mixer.prefill(h)
        else:
            state = self.mixer.init_state(x.shape[0], x.device, x.dtype)
            ys = []
            for t in range(x.shape[1]):
                y_t, state = self.mixer.step(h[:, t:t + 1], state)
                ys.append(y_t)
            y = torch.cat(ys, dim=1)
        return self._mlp(x + y), state


class DecoderLM(nn.Module):
    """Decoder-only LM over per-layer mixers made by `make_mixer(cfg, layer_idx)`."""

    def __init__(self, cfg: ModelConfig, make_mixer: Callable[[ModelConfig, int], nn.Module],
                 mlp: bool = True, num_blocks: int | None = None):
        super().__init__()
        self.cfg = cfg
        n = num_blocks or cfg.num_layers
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(Block(cfg, make_mixer(cfg, i), mlp) for i in range(n))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.supports_varlen = all(getattr(b.mixer, "supports_varlen", False) for b in self.blocks)
        self.fused_ce: nn.Module | None = None  # a fused head + cross-entropy (train.fused_ce)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """One scheme for all models: N(0, init_std) for every linear and embedding weight, residual
        output projections scaled by 1/sqrt(2 * blocks) (GPT-2), then each mixer's own special
        parameters (decay rates, dt biases, ...) through its `reset_special()`."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * len(self.blocks))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, out_std if getattr(module, "residual_out", False) else std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_special"):
                module.reset_special()

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V]; with `targets` [B, T], the mean next-token cross-entropy instead,
        computed inside forward so that the head's weight is at hand under FSDP and the loss can be
        fused with the head (`fused_ce`, set by the trainer) without materialising the logits."""
        h = self.embed(input_ids)
        for block in self.blocks:
            h = block(h, cu_seqlens=cu_seqlens)
        if targets is None:
            return self._logits(h)
        if self.fused_ce is not None:
            x = self.norm(h)
            weight = self.embed.weight if self.head is None else self.head.weight
            if torch.is_autocast_enabled(x.device.type):  # the fused op is not autocast-aware
                dtype = torch.get_autocast_dtype(x.device.type)
                x, weight = x.to(dtype), weight.to(dtype)
            return self.fused_ce(x, targets.reshape(h.shape[:-1]), weight)
        return F.cross_entropy(self._logits(h).float().flatten(0, -2), targets.flatten())

    def init_state(self, batch_size: int, device=None, dtype=None) -> list:
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        return [b.mixer.init_state(batch_size, device, dtype) for b in self.blocks]

    def step(self, input_ids: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """Next-token logits [B, V] for input_ids [B] (or [B, 1]) given the decode state."""
        h = self.embed(input_ids.reshape(-1, 1))
        new_state = []
        for block, s in zip(self.blocks, state):
            h, s = block.step(h, s)
            new_state.append(s)
        return self._logits(h)[:, -1], new_state

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Logits [B, T, V] of a prompt and the decode state after it."""
        h = self.embed(input_ids)
        state = []
        for block in self.blocks:
            h, s = block.prefill(h)
            state.append(s)
        return self._logits(h), state

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, eos_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Prompt [B, T] -> new tokens [B, <= max_new_tokens], through the per-layer decode state
        (`generate`)."""
        return generate(self, input_ids, max_new_tokens, temperature, top_k, eos_id, generator)


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, eos_id: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Prompt [B, T] -> new tokens [B, <= max_new_tokens] of any model with prefill and step (the
    decode contract). Greedy at temperature 0; otherwise sampling (top-k when given). Stops early
    when every sequence has produced eos_id."""
    logits, state = model.prefill(input_ids)
    next_logits = logits[:, -1]
    out = []
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        token = sample(next_logits, temperature, top_k, generator)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        out.append(token)
        if eos_id is not None and bool(done.all()):
            break
        next_logits, state = model.step(token, state)
    return torch.stack(out, dim=1) if out else input_ids.new_zeros(input_ids.shape[0], 0)


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def count_params(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
