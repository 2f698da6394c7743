"""Training: the same recipe for every registered model, checkpointed and resumable.

AdamW (no decay on norms, biases and 1-D parameters), linear warmup then cosine decay to
`lr * min_lr_ratio`, gradient clipping, gradient accumulation to the global batch in tokens,
bf16 autocast on GPU. Sequences are slices of the packed token stream, visited in a seeded
order, so the data position is one integer and a resumed run sees exactly the batches a
straight run would. Checkpoints are folders written under a temporary name and renamed into
place: an interruption leaves the previous checkpoint intact.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.backbone import count_params
from harness.config import Config, ConfigError
from harness.data import TokenStream, cu_seqlens_for, get_tokenizer, prepare_streams
from harness.models import build_model

CHECKPOINT_DIR = "checkpoint"


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, out of memory); the message says what to change."""


def lr_at(step: int, cfg) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio."""
    warmup, total = cfg.warmup_steps, cfg.steps
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8)


@functools.lru_cache(maxsize=2)
def sequence_order(num_sequences: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_sequences)


def batch_at(stream: TokenStream, seq_len: int, seed: int, first: int, count: int, device) -> tuple:
    """Sequences first..first+count-1 of the seeded visiting order (epochs reshuffle): inputs,
    targets [count, seq_len] and the batch's cu_seqlens (document boundaries)."""
    n = stream.num_sequences(seq_len)
    windows, starts = [], []
    for k in range(first, first + count):
        epoch, i = divmod(k, n)
        window, doc_starts = stream.sequence(int(sequence_order(n, seed, epoch)[i]), seq_len)
        windows.append(window)
        starts.append(doc_starts)
    tokens = torch.from_numpy(np.stack(windows)).to(device)
    return tokens[:, :-1], tokens[:, 1:], cu_seqlens_for(starts, seq_len).to(device)


def lm_loss(model, inputs, targets, cu_seqlens=None) -> torch.Tensor:
    if cu_seqlens is not None and getattr(model, "supports_varlen", False):
        B, T = inputs.shape
        logits = model(inputs.reshape(1, B * T), cu_seqlens=cu_seqlens).view(B, T, -1)
    else:
        logits = model(inputs)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@torch.no_grad()
def heldout_loss(model, stream: TokenStream, seq_len: int, max_tokens: int, batch: int, device,
                 autocast: Callable) -> tuple[float, int]:
    """Mean next-token loss over the first max_tokens of the held-out stream, and tokens scored."""
    n = min(stream.num_sequences(seq_len), max(1, max_tokens // seq_len))
    if n == 0:
        raise TrainingError(f"the held-out split is shorter than one sequence of {seq_len} tokens; "
                            f"use a larger corpus or a smaller train.seq_len")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for lo in range(0, n, batch):
        idx = range(lo, min(n, lo + batch))
        tokens = torch.from_numpy(np.stack([stream.sequence(i, seq_len)[0] for i in idx])).to(device)
        with autocast():
            logits = model(tokens[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum").item()
        count += tokens[:, 1:].numel()
    model.train(was_training)
    return total / count, count


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(run_dir: Path, model, optimizer, step: int, meta: dict) -> Path:
    from safetensors.torch import save_model
    final = Path(run_dir) / CHECKPOINT_DIR
    tmp = final.with_name(f".{CHECKPOINT_DIR}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "trainer.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=1, default=str))
    old = final.with_name(f".{CHECKPOINT_DIR}.old{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, device="cpu"):
    """(model, Config, model name, meta) from a checkpoint folder written by `save_checkpoint`."""
    from safetensors.torch import load_model
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no meta.json); pass the folder that "
                                f"`harness train` wrote (<run>/<model>/checkpoint)")
    meta = json.loads(meta_file.read_text())
    cfg = Config.from_dict(meta["config"])
    model = build_model(meta["model"], cfg.model, device)
    load_model(model, str(path / "model.safetensors"), device=str(device))
    return model, cfg, meta["model"], meta


# ---------------------------------------------------------------- the loop

@dataclass
class TrainResult:
    model: torch.nn.Module
    steps: int
    tokens: int
    train_loss: float
    heldout_loss: float
    params: int
    seconds: float
    checkpoint: Path


def autocast_for(device: torch.device, dtype: str) -> Callable:
    if device.type == "cuda" and dtype == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return lambda: torch.autocast(device.type, enabled=False)


def train(model_name: str, cfg: Config, run_dir: Path, device: str = "cpu",
          on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model_name` at cfg into run_dir, resuming from run_dir/checkpoint when present."""
    tcfg = cfg.train
    device = torch.device(device)
    tokenizer = get_tokenizer(tcfg.tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer.vocab_size}; set model.vocab_size={tokenizer.vocab_size}")
    train_stream, held_stream = prepare_streams(tcfg.corpus, tokenizer, seed=tcfg.seed)
    if train_stream.num_sequences(tcfg.seq_len) == 0:
        raise TrainingError(f"corpus {tcfg.corpus!r} is shorter than one sequence of {tcfg.seq_len} tokens")
    torch.manual_seed(tcfg.seed)
    model = build_model(model_name, cfg.model, device)
    optimizer = make_optimizer(model, tcfg)
    run_dir = Path(run_dir)
    start_step = 0
    ckpt = run_dir / CHECKPOINT_DIR
    if (ckpt / "trainer.pt").is_file():
        from safetensors.torch import load_model
        load_model(model, str(ckpt / "model.safetensors"), device=str(device))
        state = torch.load(ckpt / "trainer.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
    seqs_per_step = tcfg.batch_tokens // tcfg.seq_len
    micro = min(tcfg.micro_batch, seqs_per_step)
    if seqs_per_step % micro:
        raise ConfigError(f"train.micro_batch={micro} must divide the {seqs_per_step} sequences of a batch")
    autocast = autocast_for(device, tcfg.dtype)
    meta = {"model": model_name, "config": cfg.to_dict(), "params": count_params(model)}
    model.train()
    t0, loss_value = time.time(), float("nan")
    for step in range(start_step, tcfg.steps):
        lr = lr_at(step, tcfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for m in range(seqs_per_step // micro):
            inputs, targets, cu = batch_at(train_stream, tcfg.seq_len, tcfg.seed,
                                           step * seqs_per_step + m * micro, micro, device)
            with autocast():
                loss = lm_loss(model, inputs, targets, cu)
            (loss * micro / seqs_per_step).backward()
            loss_sum += loss.item() * micro / seqs_per_step
        if not math.isfinite(loss_sum):
            raise TrainingError(f"loss is {loss_sum} at step {step}; the last good checkpoint is in {ckpt} "
                                f"(lower train.lr or raise train.warmup_tokens)")
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss_sum
        if on_step:
            on_step({"step": step + 1, "steps": tcfg.steps, "loss": loss_value, "lr": lr,
                     "tokens": (step + 1) * tcfg.batch_tokens, "seconds": time.time() - t0})
        if (step + 1) % tcfg.save_every == 0 and step + 1 < tcfg.steps:
            save_checkpoint(run_dir, model, optimizer, step + 1, meta)
    held, _ = heldout_loss(model, held_stream, tcfg.seq_len, tcfg.eval_tokens, micro, device, autocast)
    meta.update(heldout_loss=held, train_loss=loss_value, tokens=tcfg.steps * tcfg.batch_tokens)
    path = save_checkpoint(run_dir, model, optimizer, tcfg.steps, meta)
    return TrainResult(model, tcfg.steps, tcfg.steps * tcfg.batch_tokens, loss_value, held,
                       meta["params"], time.time() - t0, path)
