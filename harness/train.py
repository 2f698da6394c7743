"""Training: the same recipe for every registered model, on one device or many, checkpointed and
resumable bit for bit.

Recipe (PAPER.md, the fla family's): AdamW (no decay on norms, biases and other 1-D parameters),
linear warmup then cosine decay to `lr * min_lr_ratio`, gradient clipping, a global batch fixed in
tokens and reached by gradient accumulation, bf16 autocast on GPU (fp32 weights and optimizer).
Options: `train.compile` (torch.compile per layer), `train.activation_checkpointing` (recompute
each layer in the backward), `train.fused_ce` (fla's fused head + cross-entropy).

Data: sequences are slices of the packed token stream visited in a seeded order, so the data
position is one integer (sequences consumed). Step s takes sequences [p, p + S) of that order;
with N ranks, rank r takes the r-th of N equal parts, in micro-batches, so N ranks x accumulation
x micro-batch is the single-process global batch, whatever N.

Parallelism (harness.distributed): torchrun + DDP or FSDP2, the same loop at world size 1.

Checkpoints (<run>/checkpoint/): model.safetensors (full weights), trainer.pt (full optimizer
state keyed by parameter name, step, data position, each rank's RNG state; the LR schedule is a
function of the step, so the step is its whole state), meta.json (model, config, progress, the
harness commit, and the sha256 of the other two files, checked before they are read: a truncated
or corrupted file stops with one line naming it, never a half-read model). Full state dicts are gathered on rank 0 and written there, rather than sharded
torch.distributed.checkpoint files: the 340m/760m states fit one host's memory, and the result is
one file that any world size, a single process or `load_checkpoint` reads. A checkpoint is written
into a temporary folder and swapped in by rename, so an interruption at any moment leaves the
previous checkpoint whole (a half-finished swap is repaired at the next start).
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

from harness import distributed
from harness.config import Config, ConfigError
from harness.data.streams import TokenStream, cu_seqlens_for, prepare_streams
from harness.data.tokenizer import get_tokenizer
from harness.distributed import Dist
from harness.files import file_sha256
from harness.model.backbone import DecoderLM, count_params
from harness.model.build import build_model
from harness.model.flops import flops_per_token, measure_matmul_peak
from harness.results.provenance import command_line, device_name, git_commit, now
from harness.trainlog import TrainLog, plot_loss

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
META_FILE = "meta.json"
# train.* keys that may change between a checkpoint and its resumption: they alter speed, memory,
# the run's length or its bookkeeping, not the meaning of the state saved so far
RESUMABLE_CHANGES = {"tokens", "save_every", "eval_tokens", "micro_batch", "compile", "activation_checkpointing",
                     "fused_ce"}


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, out of memory); the message says what to change."""


class TrainingStopped(RuntimeError):
    """Training was asked to stop (`should_stop`) and saved a checkpoint first: it resumes there."""


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


def fused_cross_entropy(model, device: torch.device) -> torch.nn.Module:
    """fla's fused head + cross-entropy for a backbone model, or a one-line error naming the fix."""
    if not isinstance(model, DecoderLM):
        raise ConfigError("train.fused_ce works with models on the shared backbone (DecoderLM) only; "
                          "set train.fused_ce=false for this model")
    if device.type != "cuda":
        raise ConfigError("train.fused_ce needs a CUDA GPU (fla's Triton kernels); set train.fused_ce=false here")
    try:
        from fla.modules import FusedLinearCrossEntropyLoss
    except ImportError:
        raise ConfigError("train.fused_ce needs flash-linear-attention: pip install 'swat-harness[fla]' "
                          "(or set train.fused_ce=false)") from None
    return FusedLinearCrossEntropyLoss()


@dataclass
class HeldoutScore:
    """Mean next-token loss over the scored held-out tokens, their count, and the same per
    corpus source ({source: (loss, tokens)}; a target token belongs to its document's source)."""
    loss: float
    tokens: int
    by_source: dict


@torch.no_grad()
def heldout_score(model, stream: TokenStream, seq_len: int, max_tokens: int, batch: int, device,
                  autocast: Callable, d: Dist | None = None) -> HeldoutScore:
    """Score the first max_tokens of the held-out stream, overall and per source. With several
    ranks each scores every N-th sequence (all ranks the same count, rounded down to a multiple
    of N, so that sharded models run the same number of forwards) and the sums are reduced."""
    rank, world = (d.rank, d.world_size) if d is not None else (0, 1)
    n = min(stream.num_sequences(seq_len), max(1, max_tokens // seq_len))
    n -= n % world
    if n == 0:
        raise TrainingError(f"the held-out split is shorter than {world} sequence(s) of {seq_len} tokens; "
                            f"use a larger corpus or a smaller train.seq_len")
    was_training = model.training
    model.eval()
    n_sources = max(1, len(stream.source_names))
    sums = torch.zeros(2, n_sources, dtype=torch.float64, device=device)  # loss sum, tokens per source
    mine = list(range(rank, n, world))
    for lo in range(0, len(mine), batch):
        idx = mine[lo:lo + batch]
        tokens = torch.from_numpy(np.stack([stream.sequence(i, seq_len)[0] for i in idx])).to(device)
        with autocast():
            logits = model(tokens[:, :-1])
        losses = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        if stream.doc_sources is None:
            source = torch.zeros_like(losses, dtype=torch.long)
        else:  # the source of each target token (positions i*seq_len+1 .. (i+1)*seq_len)
            source = torch.from_numpy(np.concatenate([stream.token_sources(i * seq_len + 1, (i + 1) * seq_len + 1)
                                                      for i in idx]).astype(np.int64)).to(device)
        sums[0].index_add_(0, source, losses.double())
        sums[1].index_add_(0, source, torch.ones_like(losses, dtype=torch.float64))
    if d is not None:
        sums = d.sum(sums)
    model.train(was_training)
    total = sums.sum(1)
    names = stream.source_names or ("",)
    by_source = {names[k]: (float(sums[0, k] / sums[1, k]), int(sums[1, k])) for k in range(n_sources) if sums[1, k]}
    return HeldoutScore(float(total[0] / total[1]), int(total[1]), by_source)


def autocast_for(device: torch.device, dtype: str) -> Callable:
    if device.type == "cuda" and dtype == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return lambda: torch.autocast(device.type, enabled=False)


# ---------------------------------------------------------------- checkpoints

def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _tied_duplicates(model: torch.nn.Module) -> set[str]:
    """Names of parameters that repeat another (tied weights): safetensors stores each tensor once."""
    seen, dupes = set(), set()
    for name, p in distributed.unwrap(model).named_parameters(remove_duplicate=False):
        if id(p) in seen:
            dupes.add(name)
        seen.add(id(p))
    return dupes


def _fsync_dir(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


DAMAGED_FIX = "retrain it: `harness run ... --force`, or `harness train ... --no-resume`"


def read_meta(ckpt: Path) -> dict:
    """A checkpoint's meta.json, or a TrainingError naming it when it is not readable JSON."""
    try:
        return json.loads((Path(ckpt) / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainingError(f"{Path(ckpt) / META_FILE} is damaged ({err}); {DAMAGED_FIX}") from None


def verify_checkpoint(ckpt: Path, meta: dict, names: tuple[str, ...]) -> None:
    """Every named file of a checkpoint is there with the sha256 its meta.json records (checkpoints
    written before the checksums were kept pass: reading them then says when they are damaged)."""
    for name in names:
        path = Path(ckpt) / name
        if not path.is_file():
            raise TrainingError(f"{path} is missing, the checkpoint is incomplete; {DAMAGED_FIX}")
        expected = meta.get("sha256", {}).get(name)
        if expected is not None and file_sha256(path) != expected:
            raise TrainingError(f"{path} is damaged (truncated or corrupted: its sha256 is not the one in "
                                f"{META_FILE}); {DAMAGED_FIX}")


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` with renames only; `recover_checkpoint` finishes a swap cut short."""
    old = final.with_name(f".{CHECKPOINT_DIR}.old{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(run_dir: Path) -> None:
    """Remove unfinished checkpoint folders; restore the previous checkpoint if a swap was cut
    between its two renames."""
    run_dir = Path(run_dir)
    final = run_dir / CHECKPOINT_DIR
    for tmp in run_dir.glob(f".{CHECKPOINT_DIR}.tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(run_dir.glob(f".{CHECKPOINT_DIR}.old*"), key=lambda p: p.stat().st_mtime)
    if olds and not final.exists():
        olds.pop().rename(final)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(run_dir: Path, model, optimizer, meta: dict, trainer: dict, d: Dist) -> Path:
    """Gather the full state on rank 0 and write it atomically; every rank must call this.
    optimizer None: a model fitted by counting, which has no optimizer state."""
    from safetensors.torch import save_file
    weights = distributed.full_model_state(model)
    optim = distributed.full_optimizer_state(model, optimizer) if optimizer is not None else {}
    rng = d.gather_objects(_rng_state(d.device))
    final = Path(run_dir) / CHECKPOINT_DIR
    if d.is_main:
        tmp = final.with_name(f".{CHECKPOINT_DIR}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        dupes = _tied_duplicates(model)
        save_file({k: v.contiguous() for k, v in weights.items() if k not in dupes}, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt"})
        torch.save({**trainer, "optimizer": optim, "rng": rng}, tmp / TRAINER_FILE)
        sums = {name: file_sha256(tmp / name) for name in (WEIGHTS_FILE, TRAINER_FILE)}
        (tmp / META_FILE).write_text(json.dumps({**meta, "sha256": sums}, indent=1, default=str))
        _fsync_dir(tmp)
        _swap_in(tmp, final)
    d.barrier()
    return final


def load_checkpoint(path: Path, device="cpu"):
    """(model, Config, model name, meta) from a checkpoint folder written by `save_checkpoint`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no meta.json); pass the folder that "
                                f"`harness train` wrote (<run>/<model>/checkpoint)")
    meta = read_meta(path)
    verify_checkpoint(path, meta, (WEIGHTS_FILE,))
    cfg = Config.from_dict(meta["config"])
    model = build_model(meta["model"], cfg.model, device)
    try:
        load_model(model, str(path / WEIGHTS_FILE), device=str(device))
    except SafetensorError as err:
        raise TrainingError(f"{path / WEIGHTS_FILE} is damaged ({err}); {DAMAGED_FIX}") from None
    return model, cfg, meta["model"], meta


def _check_resumable(meta: dict, model_name: str, cfg: Config, ckpt: Path) -> None:
    saved = Config.from_dict(meta["config"])
    hint = "pass --no-resume to start over, or --out for a new run folder"
    if meta["model"] != model_name:
        raise ConfigError(f"{ckpt} holds a {meta['model']} checkpoint, not {model_name}; {hint}")
    if saved.to_dict()["model"] != cfg.to_dict()["model"]:
        raise ConfigError(f"{ckpt} was trained with another model config; {hint}")
    old, new = saved.to_dict()["train"], cfg.to_dict()["train"]
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if changed:
        raise ConfigError(f"{ckpt} was trained with other train.{changed[0]} ({old.get(changed[0])!r}, now "
                          f"{new[changed[0]]!r}); {hint}")


def _resume(ckpt: Path, model, optimizer, d: Dist) -> dict:
    """Load a checkpoint into the (wrapped) model and optimizer; returns its step, data position
    and meta. Rank 0 checks and reads the files and the state is broadcast."""
    weights, trainer, problem = {}, {}, None
    if d.is_main:
        try:
            weights, trainer = _read_state(ckpt)
        except TrainingError as err:
            problem = str(err)
    problem = d.broadcast_object(problem)  # every rank stops, not only the one that read
    if problem:
        raise TrainingError(problem)
    missing = _tied_duplicates(model)
    if d.is_main:  # tied names were stored once: give each its tensor back
        for name in missing:
            weights[name] = weights[_tie_source(model, name)]
    distributed.load_full_state(model, optimizer, weights, trainer.get("optimizer", {}))
    info = d.broadcast_object({k: trainer.get(k) for k in ("step", "position", "rng")})
    rng = info.pop("rng")
    if rng is not None and len(rng) == d.world_size:  # same layout: continue every rank's stream
        _set_rng_state(rng[d.rank], d.device)
    return info


def _read_state(ckpt: Path) -> tuple[dict, dict]:
    """(weights, trainer state) of a checkpoint, checked against its checksums first."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file
    verify_checkpoint(ckpt, read_meta(ckpt), (WEIGHTS_FILE, TRAINER_FILE))
    name = WEIGHTS_FILE
    try:
        weights = load_file(str(ckpt / WEIGHTS_FILE))
        name = TRAINER_FILE
        return weights, torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise TrainingError(f"{ckpt / name} is damaged ({type(err).__name__}); {DAMAGED_FIX}") from None


def _tie_source(model, name: str) -> str:
    params = dict(distributed.unwrap(model).named_parameters(remove_duplicate=False))
    return next(n for n, p in params.items() if p is params[name] and n != name)


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
    tokens_per_s: float | None = None  # steady state: steps after the first (compile, warm-up) of this run
    mfu: float | None = None  # model FLOPs utilisation against the measured bf16 matmul peak (CUDA)
    peak_mem_gib: float | None = None  # max CUDA memory allocated (GiB) on rank 0


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


def _batch_layout(tcfg, world: int) -> tuple[int, int, int]:
    """(sequences per step, micro-batch, accumulation steps) of one rank."""
    seqs = tcfg.batch_tokens // tcfg.seq_len
    if seqs % world:
        raise ConfigError(f"the global batch of {seqs} sequences (train.batch_tokens / train.seq_len) does not "
                          f"split over {world} ranks; choose a batch_tokens that does")
    per_rank = seqs // world
    micro = min(tcfg.micro_batch, per_rank)
    if per_rank % micro:
        raise ConfigError(f"train.micro_batch={micro} must divide the {per_rank} sequences each of {world} "
                          f"rank(s) takes per step")
    return seqs, micro, per_rank // micro


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
    meta = {"model": model_name, "config": cfg.to_dict(), "commit": git_commit(), "params": params,
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
    header = {"run": f"{model_name}-{cfg.preset}", "command": command_line(), "commit": meta["commit"],
              "device": device_name(str(d.device)), "date": now(), "world_size": d.world_size}
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


def fit_by_counting(model, model_name: str, cfg: Config, run_dir: Path, train_stream: TokenStream,
                    held_stream: TokenStream, micro: int, d: Dist, resume: bool = True) -> TrainResult:
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
    train.compile, activation_checkpointing and fused_ce do not apply and are ignored. A
    checkpoint with fewer steps (a run given more train.tokens) is counted on from its position.
    One process: counting the tokens costs a small fraction of training a neural model on them."""
    if d.world_size > 1:
        raise ConfigError(f"{model_name} is fitted by counting, in one process; run it without torchrun "
                          f"(harness train --model {model_name})")
    tcfg = cfg.train
    seqs_per_step = tcfg.batch_tokens // tcfg.seq_len
    ckpt = run_dir / CHECKPOINT_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(run_dir)
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    start_step, position = 0, 0
    if (ckpt / TRAINER_FILE).is_file():
        from safetensors.torch import load_model
        saved_meta = json.loads((ckpt / META_FILE).read_text())
        _check_resumable(saved_meta, model_name, cfg, ckpt)
        load_model(model, str(ckpt / WEIGHTS_FILE), device=str(d.device))
        if saved_meta["step"] >= tcfg.steps:
            return TrainResult(model, saved_meta["step"], saved_meta["tokens"], saved_meta["train_loss"],
                               saved_meta["heldout_loss"], saved_meta["params"], 0.0, ckpt)
        trainer = torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=True)
        start_step, position = trainer["step"], trainer["position"]
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
    meta = {"model": model_name, "config": cfg.to_dict(), "commit": git_commit(), "params": model.num_counts(),
            "world_size": 1, "parallel": None, "flops_per_token": None, "step": tcfg.steps, "tokens": tokens,
            "heldout_loss": held, "train_loss": train_loss, "tokens_per_s": None, "mfu": None, "peak_flops": None,
            "peak_mem_gib": None, "peak_mem_gib_per_rank": [None]}
    path = save_checkpoint(run_dir, model, None, meta, {"step": tcfg.steps, "position": position}, d)
    return TrainResult(model, tcfg.steps, tokens, train_loss, held, meta["params"], time.time() - t0, path)
