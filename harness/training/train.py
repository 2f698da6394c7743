"""Training: the same recipe for every registered model, on one device or many, checkpointed and
resumable bit for bit. Parallelism (harness.training.distributed): torchrun + DDP or FSDP2, the
same loop at world size 1.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from harness.config import Config
from harness.data.streams import prepare_streams
from harness.model.backbone import count_params
from harness.model.build import build_model
from harness.model.flops import flops_per_token, measure_matmul_peak
from harness.results.provenance import provenance
from harness.training import distributed
from harness.training.batches import _batch_layout, batch_at
from harness.training.checkpoint import (
    CHECKPOINT_DIR,
    TRAINER_FILE,
    _check_resumable,
    _resume,
    read_meta,
    recover_checkpoint,
    save_checkpoint,
)
from harness.training.counting import fit_by_counting
from harness.training.heldout import heldout_score
from harness.training.outcome import TrainingError, TrainingStopped, TrainResult
from harness.training.recipe import (
    _compile,
    apply_activation_checkpointing,
    autocast_for,
    check_tokenizer,
    fused_cross_entropy,
    lm_loss,
    lr_at,
    make_optimizer,
)
from harness.training.trainlog import TrainLog, plot_loss

# ---------------------------------------------------------------- the loop


def train(model_name: str, cfg: Config, run_dir: Path, device: str | None = None,
          on_step: Callable[[dict], None] | None = None, *, resume: bool = True, parallel: str = "ddp",
          loggers: tuple[str, ...] = (), should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train `model_name` at cfg into run_dir, continuing from run_dir/checkpoint when `resume`
    (a finished checkpoint is returned as it is); `resume=False` discards it and the log.

    Under torchrun every rank calls this; `on_step` (progress) and all files are rank 0's.
    parallel: ddp | fsdp. loggers: optional mirrors of the JSONL log (tensorboard, wandb).
    should_stop: asked after every step (rank 0's answer counts); when it says so, a checkpoint is
    written and TrainingStopped raised, so that a job out of time loses no steps.
    """
    cfg.validate()
    tcfg = cfg.train
    d = distributed.setup(device, parallel)
    run_dir = Path(run_dir)
    tokenizer = check_tokenizer(cfg)
    if d.is_main:  # rank 0 tokenizes; the others then read its cache
        prepare_streams(tcfg.corpus, tokenizer)
    d.barrier()
    train_stream, held_stream = prepare_streams(tcfg.corpus, tokenizer)
    if train_stream.num_sequences(tcfg.seq_len) == 0:
        raise TrainingError(f"corpus {tcfg.corpus!r} is shorter than one sequence of {tcfg.seq_len} tokens; "
                            f"use a larger corpus or a smaller train.seq_len")
    seqs_per_step, micro, accum = _batch_layout(tcfg, d.world_size)

    torch.manual_seed(tcfg.seed)
    model = build_model(model_name, cfg.model, d.device)
    if getattr(model, "fitted_by_counting", False):
        return fit_by_counting(model, model_name, cfg, run_dir, train_stream, held_stream, micro, d, resume)
    if tcfg.fused_ce:
        model.fused_ce = fused_cross_entropy(model, d.device)
    params = count_params(model)
    flops = flops_per_token(model, tcfg.seq_len)
    if tcfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if tcfg.compile:
        _compile(model)
    wrapped = distributed.wrap(model, parallel, d)
    optimizer = make_optimizer(wrapped, tcfg)
    autocast = autocast_for(d.device, tcfg.dtype)

    ckpt = run_dir / CHECKPOINT_DIR
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(run_dir)
        if not resume:
            shutil.rmtree(ckpt, ignore_errors=True)
    d.barrier()
    stamp = provenance(str(d.device))
    meta = {"model": model_name, "config": cfg.to_dict(), "commit": stamp["commit"], "params": params,
            "world_size": d.world_size, "parallel": parallel, "flops_per_token": flops.as_dict()}
    start_step, position = 0, 0
    if (ckpt / TRAINER_FILE).is_file():
        saved_meta = read_meta(ckpt)
        _check_resumable(saved_meta, model_name, cfg, ckpt)
        state = _resume(ckpt, wrapped, optimizer, d)
        start_step, position = state["step"], state["position"]
        if start_step >= tcfg.steps and saved_meta.get("heldout_loss") is not None:
            return TrainResult(distributed.unwrap(wrapped), start_step, saved_meta["tokens"], saved_meta["train_loss"],
                               saved_meta["heldout_loss"], params, 0.0, ckpt, saved_meta.get("tokens_per_s"),
                               saved_meta.get("mfu"), saved_meta.get("peak_mem_gib"))

    peak = measure_matmul_peak(d.device) if d.device.type == "cuda" else None

    def mfu_of(tokens_per_s: float | None) -> float | None:
        """Model FLOPs utilisation per GPU of the job's tokens/s (all ranks together)."""
        return flops.train * tokens_per_s / (peak * d.world_size) if peak and tokens_per_s else None

    if d.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(d.device)
    header = {"run": f"{model_name}-{cfg.preset}", **stamp, "world_size": d.world_size}
    log = TrainLog(run_dir, start_step, tuple(loggers), cfg.to_dict(), header["run"], header) if d.is_main else None
    step_tokens = seqs_per_step * tcfg.seq_len
    wrapped.train()
    t0, loss_value, timed_s, timed_tokens, peak_mem = time.time(), float("nan"), 0.0, 0, None
    saved_step = start_step
    try:
        for step in range(start_step, tcfg.steps):
            t_step = time.perf_counter()
            lr = lr_at(step, tcfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=d.device)
            first = position + d.rank * (seqs_per_step // d.world_size)
            for m in range(accum):
                inputs, targets, cu = batch_at(train_stream, tcfg.seq_len, tcfg.seed, first + m * micro, micro,
                                               d.device)
                with distributed.gradient_sync(wrapped, m == accum - 1):
                    with autocast():
                        loss = lm_loss(wrapped, inputs, targets, cu)
                    (loss / accum).backward()
                loss_sum += loss.detach() / accum
            loss_value = float(d.sum(loss_sum)) / d.world_size
            grad_norm = distributed.clip_grad_norm(wrapped, tcfg.grad_clip)
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                what = f"loss is {loss_value}" if not math.isfinite(loss_value) else f"gradient norm is {grad_norm}"
                kept = f"the last good checkpoint (step {saved_step}) is {ckpt}" if saved_step else "no checkpoint yet"
                raise TrainingError(f"{what} at step {step + 1}; stopped without updating the weights, {kept}; "
                                    f"lower train.lr or raise train.warmup_tokens, then resume")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            position += seqs_per_step
            if d.device.type == "cuda":
                torch.cuda.synchronize(d.device)
                peak_mem = torch.cuda.max_memory_allocated(d.device) / 2 ** 30
            seconds = time.perf_counter() - t_step
            if step > start_step:  # the first step of a run pays for compilation and warm-up
                timed_s, timed_tokens = timed_s + seconds, timed_tokens + step_tokens
            tok_s = step_tokens / seconds
            record = {"step": step + 1, "tokens": (step + 1) * step_tokens, "loss": loss_value, "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_s": tok_s,
                      "mfu": mfu_of(tok_s), "peak_mem_gib": peak_mem,
                      "seconds": time.time() - t0}
            stop = should_stop is not None and step + 1 < tcfg.steps and d.broadcast_object(should_stop())
            if ((step + 1) % tcfg.save_every == 0 and step + 1 < tcfg.steps) or stop:
                save_checkpoint(run_dir, wrapped, optimizer, {**meta, "step": step + 1, "tokens": record["tokens"]},
                                {"step": step + 1, "position": position}, d)
                saved_step = step + 1
            if log is not None:
                log.write(record)
            if on_step is not None and d.is_main:
                on_step({**record, "steps": tcfg.steps, "start_step": start_step})
            if stop:
                raise TrainingStopped(f"stopped at step {step + 1} of {tcfg.steps} as asked; the checkpoint in "
                                      f"{ckpt} resumes there")
    except torch.OutOfMemoryError:
        raise TrainingError(f"out of memory on {d.device} with train.micro_batch={micro} (x {tcfg.seq_len} tokens "
                            f"per forward); lower train.micro_batch (gradient accumulation keeps the global batch "
                            f"of {seqs_per_step} sequences) or set train.activation_checkpointing=true") from None
    finally:
        if log is not None:
            log.close()

    held = heldout_score(distributed.unwrap(wrapped), held_stream, tcfg.seq_len, tcfg.eval_tokens, micro,
                         d.device, autocast, d).loss
    if not math.isfinite(held):  # the last update diverged: those weights are no result
        raise TrainingError(f"held-out loss is {held} after step {tcfg.steps}; lower train.lr or raise "
                            f"train.warmup_tokens, then train again with --no-resume")
    tokens_per_s = timed_tokens / timed_s if timed_s else None  # all ranks together
    mfu = mfu_of(tokens_per_s)
    meta.update(step=tcfg.steps, tokens=tcfg.steps * step_tokens, heldout_loss=held, train_loss=loss_value,
                tokens_per_s=tokens_per_s, mfu=mfu, peak_flops=peak, peak_mem_gib=peak_mem,
                peak_mem_gib_per_rank=d.gather_objects(peak_mem))
    path = save_checkpoint(run_dir, wrapped, optimizer, meta, {"step": tcfg.steps, "position": position}, d)
    if d.is_main:
        plot_loss(run_dir, f"{model_name} ({cfg.preset})", held)
    return TrainResult(distributed.unwrap(wrapped), tcfg.steps, tcfg.steps * step_tokens, loss_value, held, params,
                       time.time() - t0, path, tokens_per_s, mfu, peak_mem)
