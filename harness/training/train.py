"""Training: the same recipe for every registered model, on one device or many, checkpointed and
resumable bit for bit. Parallelism (harness.training.distributed): torchrun + DDP or FSDP2, the
same loop at world size 1.

`train` runs named steps, in the manner of torchtitan's trainer: `build` (the model with its
options applied from outside, parallelism, optimizer), `restore` (from the run folder's
checkpoint), per optimizer step `forward_backward` (the first one's guarded, `first_forward_backward`,
then the run folder opened, `open_run`) and `optimizer_step`, `checkpoint`, and
`finish` (the held-out loss and the final checkpoint). The GPU runs ahead of the host except on
the steps that are logged (every `log_every` steps, the first, and those that checkpoint): there
the loss and gradient norm come to the host, a non-finite one stops training before the weights
are updated, and the throughput since the last logged step is measured.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from harness.config import Config, TrainConfig
from harness.data.streams import TokenStream, prepare_streams
from harness.files import FolderLocked, folder_lock
from harness.memory import check_training_memory, is_out_of_memory, out_of_memory
from harness.model.backbone import count_params
from harness.model.build import checked_model, plugin_call, runnable_model
from harness.model.flops import FlopCount, datasheet_matmul_peak, flops_per_token, measure_matmul_peak
from harness.registry import get_model
from harness.results.provenance import device_name, provenance
from harness.training import distributed
from harness.training.batches import _batch_layout, batch_at
from harness.training.checkpoint import (
    CHECKPOINT_DIR,
    TOKENIZER_KEY,
    _check_resumable,
    _resume,
    has_checkpoint,
    open_run_dir,
    read_meta,
    recover_checkpoint,
    save_checkpoint,
)
from harness.training.counting import fit_by_counting
from harness.training.distributed import Dist
from harness.training.heldout import heldout_score, scored_sequences
from harness.training.outcome import TrainingDiverged, TrainingError, TrainingStopped, TrainResult
from harness.training.recipe import (
    apply_training_options,
    autocast_for,
    check_tokenizer,
    lm_loss,
    lr_at,
    make_optimizer,
)
from harness.training.trainlog import PLOT_FILE, TrainLog, check_sinks, plot_loss


@dataclass
class Job:
    """A training run as `build` sets it up: what every later step needs."""
    model_name: str
    cfg: Config
    run_dir: Path
    d: Dist
    wrapped: torch.nn.Module  # the model as trained: options, compiled layers, DDP or FSDP2 applied
    optimizer: torch.optim.Optimizer
    autocast: Callable
    train_stream: TokenStream
    held_stream: TokenStream
    seqs_per_step: int  # sequences per optimizer step, all ranks together
    micro: int  # sequences per forward on one rank
    accum: int  # forwards per optimizer step on one rank
    flops: FlopCount
    params: int
    meta: dict  # what every checkpoint's meta.json says about the run
    resume: bool  # continue from the run folder's checkpoint (else the earlier run is dropped at the first step)

    @property
    def ckpt(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    @property
    def model(self) -> torch.nn.Module:
        return distributed.unwrap(self.wrapped)

    @property
    def step_tokens(self) -> int:
        return self.seqs_per_step * self.cfg.train.seq_len


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    position: int = 0  # sequences of the seeded order consumed
    saved_step: int = 0  # the step of the last checkpoint written or resumed from


def train(model_name: str, cfg: Config, run_dir: Path, device: str | None = None,
          on_step: Callable[[dict], None] | None = None, *, resume: bool = True, parallel: str = "ddp",
          loggers: tuple[str, ...] = (), should_stop: Callable[[], bool] | None = None,
          log_every: int = 1) -> TrainResult:
    """Train `model_name` at cfg into run_dir, continuing from run_dir/checkpoint when `resume`
    (a finished checkpoint is returned as it is); `resume=False` discards it and the log.

    Under torchrun every rank calls this; `on_step` (progress) and all files are rank 0's; without
    `on_step` (no progress bar) a resumed run says from which step in a line of its own.
    parallel: ddp | fsdp. loggers: optional mirrors of the JSONL log (tensorboard, wandb).
    Rank 0 holds the run folder's lock throughout (`hold_run_folder`): a second training into the
    same folder is refused at once. What can be refused up front is, before the run folder holds
    anything: a missing logger package, a corpus whose training or held-out split is shorter than
    one sequence. The folder is opened (the earlier run dropped unless `resume`, the log started)
    only once the first step has computed, so that a model that fails there (a plugin's: one line)
    leaves it as it was.
    should_stop: asked at every logged step (rank 0's answer counts); when it says so, a
    checkpoint is written and TrainingStopped raised, so that a job out of time loses no steps.
    log_every: log (and bring the step's numbers to the host) every this many steps.
    """
    cfg.validate()
    check_sinks(loggers)
    tcfg = cfg.train
    d = distributed.setup(device, parallel)
    builtin = get_model(model_name).builtin
    if builtin:  # on the meta device, before the corpus is tokenized; a plugin's once built
        check_training_memory(checked_model(model_name, cfg.model, d.device), cfg, d.device)
    run_dir = Path(run_dir)
    with hold_run_folder(run_dir, d):
        tokenizer = check_tokenizer(cfg)
        if d.is_main:  # rank 0 tokenizes; the others then read its cache
            prepare_streams(tcfg.corpus, tokenizer)
        d.barrier()
        train_stream, held_stream = prepare_streams(tcfg.corpus, tokenizer)
        check_split_lengths(tcfg, train_stream, held_stream)
        scored = scored_sequences(held_stream, tcfg.seq_len, tcfg.eval_tokens)
        if d.is_main and held_stream.num_sequences(tcfg.seq_len) * tcfg.seq_len < tcfg.eval_tokens:
            print(f"note: train.eval_tokens={tcfg.eval_tokens:,} is more than the held-out split of {tcfg.corpus} "
                  f"holds: the held-out loss scores all of it, {scored * tcfg.seq_len:,} tokens", file=sys.stderr,
                  flush=True)
        torch.manual_seed(tcfg.seed)
        model = runnable_model(model_name, cfg.model, d.device)  # refused before the run folder holds anything
        if not builtin:
            check_training_memory(model, cfg, d.device)
        if getattr(model, "fitted_by_counting", False):
            micro = _batch_layout(tcfg, d.world_size)[1]
            return fit_by_counting(model, model_name, cfg, run_dir, train_stream, held_stream, micro, d,
                                   tokenizer.fingerprint, resume)
        note = warmup_note(tcfg)
        if d.is_main and note:
            print(note, file=sys.stderr, flush=True)
        job = build(model_name, cfg, run_dir, d, model, parallel, train_stream, held_stream, resume,
                    tokenizer.fingerprint)
        progress = restore(job)
        if progress is None:  # finished: its checkpoint is the result
            meta = read_meta(job.ckpt)
            if d.is_main and not (run_dir / PLOT_FILE).is_file():  # a run stopped between its checkpoint and plot
                _plot_loss(job, meta["heldout_loss"])
            return TrainResult(job.model, meta["step"], meta["tokens"], meta["train_loss"], meta["heldout_loss"],
                               job.params, 0.0, job.ckpt, meta.get("tokens_per_s"), meta.get("mfu"),
                               meta.get("peak_mem_gib"), meta.get("mfu_datasheet"), reused=True)
        if progress.step and on_step is None and d.is_main:  # the progress bar says it where there is one
            print(f"train {model_name}: resumed from its checkpoint at step {progress.step:,} of {tcfg.steps:,}",
                  flush=True)

        on_gpu = d.device.type == "cuda"
        meter = Meter(job, measure_matmul_peak(d.device) if on_gpu else None,
                      datasheet_matmul_peak(device_name(str(d.device))) if on_gpu else None, progress.step)
        # the cadence too, so that a reader (`harness scaling`) can tell a lost line from a step not logged
        header = {"run": f"{model_name}-{cfg.preset}", **provenance(str(d.device)), "world_size": d.world_size,
                  "log_every": log_every, "save_every": tcfg.save_every}
        log = None  # opened once the first step has computed (`open_run`)
        job.wrapped.train()
        loss_value = float("nan")
        try:
            for step in range(progress.step, tcfg.steps):
                done, last = step + 1, step + 1 == tcfg.steps
                saves = done % tcfg.save_every == 0 and not last
                logged = done % log_every == 0 or done == meter.start_step + 1 or saves or last
                lr = lr_at(step, tcfg)
                if step == meter.start_step:
                    loss, grad_norm = first_forward_backward(job, progress.position, lr)
                    log = open_run(job, step, tuple(loggers), header)
                else:
                    loss, grad_norm = forward_backward(job, progress.position, lr)
                numbers = step_numbers(job, loss, grad_norm, done, progress) if logged else None
                optimizer_step(job)
                progress.step, progress.position = done, progress.position + job.seqs_per_step
                if numbers is None:
                    continue
                loss_value, norm_value = numbers
                record = {"step": done, "tokens": done * job.step_tokens, "loss": loss_value, "lr": lr,
                          "grad_norm": norm_value, **meter.lap(done)}
                stop = should_stop is not None and not last and d.broadcast_object(should_stop())
                # logged before it is checkpointed: a run stopped between the two resumes after this
                # step, so it would never be logged
                if log is not None:
                    log.write(record)
                if saves or stop:
                    checkpoint(job, progress)
                if on_step is not None and d.is_main:
                    on_step({**record, "steps": tcfg.steps, "start_step": meter.start_step})
                if stop:
                    raise TrainingStopped(f"stopped at step {done} of {tcfg.steps} as asked; the checkpoint in "
                                          f"{job.ckpt} resumes there")
                meter.restart()  # the time to log and checkpoint is not the next steps' training time
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            raise out_of_memory(f"training with train.micro_batch={job.micro} (x {tcfg.seq_len} tokens per forward)",
                                d.device, f"lower train.micro_batch (gradient accumulation keeps the global batch of "
                                f"{job.seqs_per_step} sequences) or set train.activation_checkpointing=true") from None
        finally:
            if log is not None:
                log.close()
        return finish(job, progress, loss_value, meter)


@contextlib.contextmanager
def hold_run_folder(run_dir: Path, d: Dist):
    """The run folder locked by rank 0 for the whole training: two trainings into one folder would
    interleave their checkpoints and logs (a meta.json of one run beside the log of the other), so a
    second one is refused at once, on every rank. The OS releases the lock when its holder dies,
    killed or not. The folders made here for the lock and left empty (training refused before it
    wrote anything) are removed: a refused command leaves no trace. The message names no option: each
    command chooses the folder its own way (--out, --run, a study's unit)."""
    made = [run_dir, *run_dir.parents]
    made = made[:next(i for i, folder in enumerate(made) if folder.exists())]  # the missing ones, deepest first
    with contextlib.ExitStack() as held:
        busy = None
        if d.is_main:
            try:
                held.enter_context(folder_lock(run_dir, wait=False))
            except FolderLocked as err:
                pid = f" (pid {err.pid})" if err.pid else ""
                busy = f"{run_dir} is being trained by another process{pid}; wait for it, or train into another folder"
        busy = d.broadcast_object(busy)
        if busy:
            raise TrainingError(busy)
        try:
            yield
        finally:
            for folder in made if d.is_main else ():
                with contextlib.suppress(OSError):  # not empty (written to, or by another process): kept
                    folder.rmdir()


def check_split_lengths(tcfg: TrainConfig, train_stream: TokenStream, held_stream: TokenStream) -> None:
    """Refuse, before training, a training or held-out split shorter than one sequence. The corpus
    is split by whole documents (`heldout_split`), so a corpus long enough in all can leave one
    split short (its long document held out): the message names the split and gives both splits'
    sizes."""
    splits = {"training": train_stream, "held-out": held_stream}
    for name, stream in splits.items():
        if stream.num_sequences(tcfg.seq_len) < 1:
            sizes = ", ".join(f"{split} {len(s.tokens):,} tokens in {len(s.doc_starts):,} document(s)"
                              for split, s in splits.items())
            raise TrainingError(f"the {name} split of corpus {tcfg.corpus!r} is shorter than one sequence of "
                                f"{tcfg.seq_len} tokens (the corpus is split by whole documents: {sizes}); give the "
                                f"corpus more documents or use a shorter train.seq_len")


def warmup_note(tcfg: TrainConfig) -> str | None:
    """One line saying what a warm-up longer than the run does (None where it is not): cut to the
    run (`TrainConfig.warmup_steps`), it takes all of it, so the learning rate reaches train.lr only
    at the last step and never decays. Said, not refused, since a user may want just that; a single
    step trains at train.lr whatever the warm-up."""
    tokens = tcfg.steps * tcfg.batch_tokens
    if tcfg.steps == 1 or tcfg.warmup_tokens <= tokens:  # a warm-up of exactly the run is what was asked
        return None
    return (f"note: train.warmup_tokens={tcfg.warmup_tokens:,} is longer than the run ({tokens:,} tokens): the "
            f"learning rate rises over all {tcfg.steps:,} steps, reaching train.lr={tcfg.lr:g} only at the last, "
            f"and never decays")


def build(model_name: str, cfg: Config, run_dir: Path, d: Dist, model: torch.nn.Module, parallel: str,
          train_stream: TokenStream, held_stream: TokenStream, resume: bool, tokenizer_sha256: str) -> Job:
    """The model with the training options applied from outside (fused loss, activation
    checkpointing, compiled layers), wrapped for the job (DDP or FSDP2), its optimizer, and a cut
    checkpoint swap in the run folder repaired. Nothing else in the folder changes until the first
    step has computed (`open_run`). tokenizer_sha256: the content of the tokenizer whose ids the
    streams hold, which meta.json records (`check_tokenizer_unchanged`)."""
    tcfg = cfg.train
    seqs_per_step, micro, accum = _batch_layout(tcfg, d.world_size)
    params, flops = count_params(model), flops_per_token(model, tcfg.seq_len)
    applied = apply_training_options(model, tcfg, d.device)
    wrapped = distributed.wrap(model, parallel, d)
    optimizer = make_optimizer(wrapped, tcfg)
    if d.is_main and run_dir.is_dir():
        recover_checkpoint(run_dir)
    d.barrier()
    meta = {"model": model_name, "config": cfg.to_dict(), "commit": provenance(str(d.device))["commit"],
            "params": params, "world_size": d.world_size, "parallel": parallel, "flops_per_token": flops.as_dict(),
            "applied": applied,  # what the auto switches resolved to here
            TOKENIZER_KEY: tokenizer_sha256}
    plugin = get_model(model_name).plugin_file
    if plugin is not None:  # the code that trains these weights: resuming or reusing them needs the same
        meta["plugin"] = plugin.record()
    return Job(model_name, cfg, run_dir, d, wrapped, optimizer, autocast_for(d.device, tcfg.dtype), train_stream,
               held_stream, seqs_per_step, micro, accum, flops, params, meta, resume)


def _plot_loss(job: Job, heldout: float) -> None:
    """The run's loss curve, as a finished run draws it and a rerun redraws a missing one."""
    plot_loss(job.run_dir, f"{job.model_name} ({job.cfg.preset})", heldout)


def restore(job: Job) -> Progress | None:
    """Where training starts: the run folder's checkpoint loaded into the model and optimizer
    (weights, optimizer state, step, data position, RNG), else (or without `resume`) step 0; None
    when the checkpoint is finished (it holds the held-out loss). A checkpoint (its meta.json)
    without its trainer state is incomplete and refused (starting over would silently overwrite it)."""
    if not job.resume or not has_checkpoint(job.ckpt):
        return Progress()
    saved_meta = read_meta(job.ckpt)
    _check_resumable(saved_meta, job.model_name, job.cfg, job.ckpt, job.meta[TOKENIZER_KEY])
    state = _resume(job.ckpt, job.wrapped, job.optimizer, job.d)
    if state["step"] >= job.cfg.train.steps and saved_meta.get("heldout_loss") is not None:
        return None
    return Progress(state["step"], state["position"], state["step"])


def first_forward_backward(job: Job, position: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward_backward` of the run's first step, where a plugin's model that keeps the contract
    (`check_contract`: a short batch, no gradients) can still fail on a training batch: a position
    table shorter than train.seq_len, detached logits, logits of another length. Its exception is
    then one line naming the model and the batch; the harness's own models keep their tracebacks."""
    shape = [job.micro, job.cfg.train.seq_len]
    return plugin_call(get_model(job.model_name), f"failed in training on input_ids {shape}",
                        lambda: forward_backward(job, position, lr))


def open_run(job: Job, start_step: int, loggers: tuple[str, ...], header: dict) -> TrainLog | None:
    """The run folder made ready (`open_run_dir`: the earlier run dropped unless resuming) and its
    log opened at start_step (rank 0's, None elsewhere), once the first step has computed: a model
    that fails there leaves the folder as it was before the command."""
    log = None
    if job.d.is_main:
        open_run_dir(job.run_dir, job.resume)
        log = TrainLog(job.run_dir, start_step, loggers, job.cfg.to_dict(), header["run"], header)
    job.d.barrier()
    return log


def forward_backward(job: Job, position: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of one global batch: this rank's share of the sequences [position, position + S)
    of the seeded order, in micro-batches with gradient accumulation (synchronised across ranks on
    the last). Returns the batch's mean loss over all ranks and the gradient norm before clipping,
    as tensors on the device: reading them is the host's choice (`step_numbers`)."""
    tcfg = job.cfg.train
    for group in job.optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=job.d.device)
    first = position + job.d.rank * (job.seqs_per_step // job.d.world_size)
    for m in range(job.accum):
        inputs, targets, cu = batch_at(job.train_stream, tcfg.seq_len, tcfg.seed, first + m * job.micro, job.micro,
                                       job.d.device)
        with distributed.gradient_sync(job.wrapped, m == job.accum - 1):
            with job.autocast():
                loss = lm_loss(job.wrapped, inputs, targets, cu)
            (loss / job.accum).backward()
        loss_sum += loss.detach() / job.accum
    return job.d.sum(loss_sum), distributed.clip_grad_norm(job.wrapped, tcfg.grad_clip)


# what a diverged run needs: a checkpoint resumes only under its own recipe (train.lr and warmup included)
RETRAIN = ("lower train.lr or raise train.warmup_tokens and train again from scratch (`harness train ... "
           "--no-resume` or another --out; `harness run ... --force`)")


def step_numbers(job: Job, loss: torch.Tensor, grad_norm: torch.Tensor, step: int,
                 progress: Progress) -> tuple[float, float]:
    """The step's loss and gradient norm on the host (this waits for the GPU); a non-finite one
    stops training here, before the optimizer step writes it into the weights."""
    loss_value, norm_value = float(loss) / job.d.world_size, float(grad_norm)
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        what = f"loss is {loss_value}" if not math.isfinite(loss_value) else f"gradient norm is {norm_value}"
        if step == 1:  # the initial weights: no learning rate has acted yet
            raise TrainingDiverged(f"{what} at step 1, before any update: the model gives it at its initial weights; "
                                   f"check its initialisation and train.dtype (the learning rate has not acted yet)")
        kept = (f"the last good checkpoint (step {progress.saved_step}) stays in {job.ckpt} for inspection"
                if progress.saved_step else "no checkpoint was written yet")
        raise TrainingDiverged(f"{what} at step {step}; stopped without updating the weights, {kept}; {RETRAIN}")
    return loss_value, norm_value


def optimizer_step(job: Job) -> None:
    job.optimizer.step()
    job.optimizer.zero_grad(set_to_none=True)


def checkpoint(job: Job, progress: Progress) -> None:
    """Write the run's state after `progress.step` steps (every rank takes part)."""
    save_checkpoint(job.run_dir, job.wrapped, job.optimizer,
                    {**job.meta, "step": progress.step, "tokens": progress.step * job.step_tokens},
                    {"step": progress.step, "position": progress.position}, job.d)
    progress.saved_step = progress.step


def finish(job: Job, progress: Progress, train_loss: float, meter: Meter) -> TrainResult:
    """The held-out loss of the trained weights, then the final checkpoint (with it in meta.json)
    and the loss plot."""
    tcfg = job.cfg.train
    held = heldout_score(job.model, job.held_stream, tcfg.seq_len, tcfg.eval_tokens, job.micro, job.d.device,
                         job.autocast, job.d).loss
    if not math.isfinite(held):  # the last update diverged: those weights are no result
        raise TrainingDiverged(f"held-out loss is {held} after step {tcfg.steps}; {RETRAIN}")
    tokens_per_s = meter.mean_tokens_per_s()
    mfu, mfu_datasheet = meter.mfu(tokens_per_s), meter.utilisation(tokens_per_s, meter.datasheet)
    meta = {**job.meta, "step": tcfg.steps, "tokens": tcfg.steps * job.step_tokens, "heldout_loss": held,
            "train_loss": train_loss, "tokens_per_s": tokens_per_s, "mfu": mfu, "mfu_datasheet": mfu_datasheet,
            "peak_flops": meter.peak, "datasheet_flops": meter.datasheet, "peak_mem_gib": meter.peak_mem,
            "peak_mem_gib_per_rank": job.d.gather_objects(meter.peak_mem)}
    path = save_checkpoint(job.run_dir, job.wrapped, job.optimizer, meta,
                           {"step": tcfg.steps, "position": progress.position}, job.d)
    if job.d.is_main:
        _plot_loss(job, held)
    return TrainResult(job.model, tcfg.steps, tcfg.steps * job.step_tokens, train_loss, held, job.params,
                       meter.elapsed(), path, tokens_per_s, mfu, meter.peak_mem, mfu_datasheet)


class Meter:
    """Throughput, MFU and memory between logged steps. The steady-state tokens/s leaves out the
    run's first step (it pays for compilation and warm-up); MFU is per GPU, against the bf16
    matmul peak measured at start (CUDA only), and at the end also against the GPU's datasheet
    peak (`datasheet`, where the GPU is in flops.DATASHEET_BF16_FLOPS)."""

    def __init__(self, job: Job, peak: float | None, datasheet: float | None, start_step: int):
        self.job, self.peak, self.datasheet, self.start_step = job, peak, datasheet, start_step
        self.t0 = time.time()
        self.timed_s, self.timed_tokens, self.peak_mem = 0.0, 0, None
        self.last_step = start_step
        if job.d.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(job.d.device)
        self.restart()

    def restart(self) -> None:
        self.since = time.perf_counter()

    def lap(self, step: int) -> dict:
        """The numbers of the steps since the last lap, ending at `step` (waits for the GPU)."""
        device = self.job.d.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.peak_mem = torch.cuda.max_memory_allocated(device) / 2 ** 30
        seconds = time.perf_counter() - self.since
        tokens = (step - self.last_step) * self.job.step_tokens
        if self.last_step > self.start_step:  # not the interval holding the run's first step
            self.timed_s, self.timed_tokens = self.timed_s + seconds, self.timed_tokens + tokens
        self.last_step = step
        tok_s = tokens / seconds
        return {"tokens_per_s": tok_s, "mfu": self.mfu(tok_s), "peak_mem_gib": self.peak_mem,
                "seconds": self.elapsed()}

    def mfu(self, tokens_per_s: float | None) -> float | None:
        """Model FLOPs utilisation per GPU of the job's tokens/s (all ranks together), against the
        measured peak."""
        return self.utilisation(tokens_per_s, self.peak)

    def utilisation(self, tokens_per_s: float | None, peak: float | None) -> float | None:
        """The job's model FLOP/s per GPU at tokens_per_s (all ranks together) over `peak` FLOP/s."""
        if not (peak and tokens_per_s):
            return None
        return self.job.flops.train * tokens_per_s / (peak * self.job.d.world_size)

    def mean_tokens_per_s(self) -> float | None:
        return self.timed_tokens / self.timed_s if self.timed_s else None

    def elapsed(self) -> float:
        return time.time() - self.t0
