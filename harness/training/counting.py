"""Fitting the count-based reference models (harness.model.ngram) on exactly the batches a neural
model of the same run trains on.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from harness.config import Config, ConfigError
from harness.data.streams import TokenStream
from harness.results.provenance import provenance
from harness.training.batches import batch_at
from harness.training.checkpoint import (
    CHECKPOINT_DIR,
    TOKENIZER_KEY,
    TRAINER_FILE,
    _check_resumable,
    _read_state,
    has_checkpoint,
    open_run_dir,
    read_meta,
    save_checkpoint,
)
from harness.training.distributed import Dist
from harness.training.heldout import heldout_score
from harness.training.outcome import CheckpointDamaged, TrainResult
from harness.training.recipe import autocast_for


def is_counted(meta: dict) -> bool:
    """Whether a checkpoint's meta.json is one `fit_by_counting` wrote: the only run that no parallel
    mode trained (its `parallel` is None; a gradient run's is ddp or fsdp, or absent in old runs)."""
    return "parallel" in meta and meta["parallel"] is None


def one_process_only(model_name: str) -> ConfigError:
    """The error of a model fitted by counting under torchrun: `fit_by_counting` runs in one process."""
    return ConfigError(f"{model_name} is fitted by counting, in one process; run it without torchrun "
                       f"(harness train --model {model_name})")


def fit_by_counting(model, model_name: str, cfg: Config, run_dir: Path, train_stream: TokenStream,
                    held_stream: TokenStream, micro: int, d: Dist, tokenizer_sha256: str,
                    resume: bool = True) -> TrainResult:
    """Fit a model that learns by counting (`fitted_by_counting`: the n-gram reference rows) on
    exactly the batches the gradient loop would visit: step s counts `batch_at` sequences
    [s * S, (s + 1) * S) of the seeded order (S sequences per step), so it sees the same tokens,
    in the same order and with the same repeats across epochs, as a neural model of this run.
    Then the held-out loss as for every model, and the same checkpoint files and meta keys, so
    that `harness run`, `harness eval` and `load_checkpoint` take it as they take a trained model.

    Differences, each because there is nothing to record: trainer.pt holds no optimizer state;
    meta's `params` is the model's number of nonzero counts (`num_counts`, distinct tokens or
    pairs: it has no trained parameters), `train_loss` the fitted model's loss on the last step's
    batch, the speed and FLOP fields are None, and there is no per-step log (no loss curve).
    train.compile, activation_checkpointing and fused_ce do not apply and are ignored (`applied`
    says both off). A checkpoint with fewer steps (a run given more train.tokens) is counted on
    from its position. tokenizer_sha256: as a trained model's meta.json records it.
    One process: counting the tokens costs a small fraction of training a neural model on them."""
    if d.world_size > 1:
        raise one_process_only(model_name)
    tcfg = cfg.train
    seqs_per_step = tcfg.batch_tokens // tcfg.seq_len
    ckpt = run_dir / CHECKPOINT_DIR
    open_run_dir(run_dir, resume)
    start_step, position = 0, 0
    if has_checkpoint(ckpt):
        saved_meta = read_meta(ckpt)
        _check_resumable(saved_meta, model_name, cfg, ckpt, tokenizer_sha256, counted=True)
        # as a neural model's resume reads them: checksums first, then the trainer state's step and
        # position (whole numbers, the step meta.json's), so a damaged one is a line, not a traceback
        weights, trainer = _read_state(ckpt)
        model.load_state_dict(weights)
        if saved_meta["step"] >= tcfg.steps:
            return TrainResult(model, saved_meta["step"], saved_meta["tokens"], saved_meta["train_loss"],
                               saved_meta["heldout_loss"], saved_meta["params"], 0.0, ckpt, reused=True)
        start_step, position = trainer["step"], trainer["position"]
        # each step counts S sequences from where the last one ended: another position skips or repeats some
        if position != start_step * seqs_per_step:
            raise CheckpointDamaged(f"{ckpt / TRAINER_FILE} is damaged (its position {position} is not step "
                                    f"{start_step} times {seqs_per_step} sequences)")
    t0 = time.time()
    for _ in range(start_step, tcfg.steps):
        inputs, targets, _ = batch_at(train_stream, tcfg.seq_len, tcfg.seed, position, seqs_per_step, d.device)
        model.count(inputs, targets)
        position += seqs_per_step
    model.finish()
    autocast = autocast_for(d.device, tcfg.dtype)
    with torch.no_grad():
        train_loss = float(model(inputs, targets=targets))
    held = heldout_score(model, held_stream, tcfg.seq_len, tcfg.eval_tokens, micro, d.device, autocast, d).loss
    tokens = tcfg.steps * seqs_per_step * tcfg.seq_len
    meta = {"model": model_name, "config": cfg.to_dict(), "commit": provenance(str(d.device))["commit"], "params": model.num_counts(),
            "world_size": 1, "parallel": None, "flops_per_token": None, "applied": {"compile": False, "fused_ce": False},
            "step": tcfg.steps, "tokens": tokens,
            "heldout_loss": held, "train_loss": train_loss, "tokens_per_s": None, "mfu": None, "mfu_datasheet": None,
            "peak_flops": None, "datasheet_flops": None,
            "peak_mem_gib": None, "peak_mem_gib_per_rank": [None], TOKENIZER_KEY: tokenizer_sha256}
    path = save_checkpoint(run_dir, model, None, meta, {"step": tcfg.steps, "position": position}, d)
    return TrainResult(model, tcfg.steps, tokens, train_loss, held, meta["params"], time.time() - t0, path)
