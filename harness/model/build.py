"""Build registered models at a preset, with parameter counts matched to the reference model.

A fair comparison holds the parameter budget fixed. A baseline whose architecture does not land
on the reference count by itself (Mamba's blocks, say) names one integer ModelConfig field at
registration (`match="d_inner"`); `matched_config` solves that field so that the model's count
is as close as possible to the reference model's (`register_model(..., reference=True)`) at the
same config. Counting happens on
the meta device, so solving costs no memory even at 760m.
"""

from __future__ import annotations

import dataclasses

import torch

from harness.config import ModelConfig
from harness.model.backbone import count_params
from harness.registry import get_model, reference_model

MATCH_MULTIPLE = 8  # solved sizes prefer multiples of 8 (tensor-core friendly)...
MATCH_TOLERANCE = 0.005  # ...when that costs at most 0.5% of the parameter budget


def params_of(name: str, cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return count_params(get_model(name).build(cfg))


def embedding_params(model: torch.nn.Module) -> int:
    """Parameters of the token embeddings and of an untied output head (a Linear named `head`):
    what scales with the vocabulary rather than with the model."""
    found = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        found[id(head.weight)] = head.weight.numel()
    return sum(found.values())


def non_embedding_params(name: str, cfg: ModelConfig) -> int:
    """The model's parameters less its embeddings (the count scaling laws are stated in), at the
    parameter-matched config."""
    with torch.device("meta"):
        model = get_model(name).build(matched_config(name, cfg))
    return count_params(model) - embedding_params(model)


def matched_config(name: str, cfg: ModelConfig) -> ModelConfig:
    """cfg with the model's `match` field solved for the reference parameter count, or cfg itself
    when the model has no such field or the user set it explicitly."""
    spec = get_model(name)
    if spec.match is None or getattr(cfg, spec.match) is not None:
        return cfg
    target = params_of(reference_model(), cfg)
    lo, hi = MATCH_MULTIPLE, 8 * MATCH_MULTIPLE
    p_lo = params_of(name, dataclasses.replace(cfg, **{spec.match: lo}))
    p_hi = params_of(name, dataclasses.replace(cfg, **{spec.match: hi}))
    per_unit = (p_hi - p_lo) / (hi - lo)  # counts are affine in the solved size
    guess = lo + (target - p_lo) / per_unit
    aligned = max(MATCH_MULTIPLE, round(guess / MATCH_MULTIPLE) * MATCH_MULTIPLE)
    # at tiny widths a multiple of 8 can be several percent off: then take the exact size
    best = aligned if abs(aligned - guess) * per_unit <= MATCH_TOLERANCE * target else max(1, round(guess))
    return dataclasses.replace(cfg, **{spec.match: best})


def build_model(name: str, cfg: ModelConfig, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The registered model `name` at cfg (parameter-matched), initialised on `device`."""
    cfg = matched_config(name, cfg)
    with torch.device(device):
        model = get_model(name).build(cfg)
    model.cfg = cfg
    return model
