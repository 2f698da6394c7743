"""`harness run`: train (or reuse) each model at one preset, run each task, store the rows.

    runs/<run>/<model>/checkpoint/   weights + optimizer state (not committed; reproducible)
    results/<run>/rows.jsonl         every task's rows, all models
    results/<run>/run.json           command, config, versions, commit, device, date
    results/<run>/table.md           the rows as a markdown table
    results/<run>/train/             each model's per-step training log and checkpoint summary

Finished work is reused: a model whose checkpoint is complete and was trained with the same
config is not retrained, and a (model, task) pair that already has rows is not rerun, unless
`force`. Rows are written atomically after each task, so an interruption loses at most the
task in flight.

Under torchrun (`torchrun --nproc-per-node N -m harness run ...`) every rank takes part: training
with DDP, lm-eval's tasks split over the ranks, other tasks on rank 0; rank 0 alone writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from harness.config import Config, config_hash
from harness.data.tokenizer import get_tokenizer
from harness.files import atomic_write_text, folder_lock
from harness.registry import get_model, get_task
from harness.results.provenance import (
    command_line,
    device_name,
    git_commit,
    now,
    versions,
)
from harness.results.store import Row, read_rows, replace_rows
from harness.results.tables import rows_table
from harness.training import distributed
from harness.training.checkpoint import CHECKPOINT_DIR, load_checkpoint, read_meta
from harness.training.distributed import Dist
from harness.training.recipe import check_tokenizer
from harness.training.train import train
from harness.training.trainlog import LOG_FILE


class RunError(RuntimeError):
    """A run cannot proceed as asked; the message says how to proceed."""


@dataclass
class TaskContext:
    """What a task gets besides the model: config, provenance for its rows, options."""
    cfg: Config
    run: str
    model_name: str
    device: str
    params: int | None = None
    tokens_trained: int | None = None
    checkpoint: str | None = None
    limit: int | None = None
    provenance: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # task options, e.g. lm-eval's cache_dir, online, bootstrap_iters
    dist: Dist | None = None  # the torchrun job this task runs in (None: one process)
    # keys every row of this model carries, naming the training run among others of the same model
    # in one rows file (a study's size, learning rate, budget); empty for a plain `harness run`
    row_extra: dict = field(default_factory=dict)

    def row(self, task: str, metric: str, value: float | None, stderr: float | None = None, n: int | None = None,
            **extra) -> Row:
        return Row(run=self.run, model=self.model_name, preset=self.cfg.preset, task=task, metric=metric,
                   value=None if value is None else float(value), stderr=stderr, n=n, params=self.params,
                   tokens_trained=self.tokens_trained, seed=self.cfg.train.seed, checkpoint=self.checkpoint,
                   extra={**self.row_extra, **extra}, **self.provenance)

    def owns(self, row: Row, task: str) -> bool:
        """Whether a stored row is this context's result of `task` (and so replaced by a rerun)."""
        if (row.model, row.task) != (self.model_name, task):
            return False
        if not self.row_extra:
            return True
        return (row.preset, row.seed) == (self.cfg.preset, self.cfg.train.seed) and all(
            row.extra.get(k) == v for k, v in self.row_extra.items())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def trained_model(name: str, cfg: Config, ckpt_dir: Path, device: str, force: bool,
                  on_step: Callable | None = None, should_stop: Callable[[], bool] | None = None):
    """(model, meta): the finished checkpoint when it matches cfg, else a training run into ckpt_dir."""
    ckpt = ckpt_dir / CHECKPOINT_DIR
    meta_file = ckpt / "meta.json"
    if meta_file.is_file() and not force:
        meta = read_meta(ckpt)
        if config_hash(Config.from_dict(meta["config"])) != config_hash(cfg):
            raise RunError(f"{ckpt_dir} holds {name} trained with another config; pass --run NEW_NAME for a "
                           f"new run, or --force to retrain")
        if meta.get("heldout_loss") is not None:
            model, _, _, meta = load_checkpoint(ckpt, device)
            return model, meta, False
    tagged = (lambda info: on_step({**info, "model": name})) if on_step else None
    result = train(name, cfg, ckpt_dir, device, on_step=tagged, resume=not force,  # force: start afresh
                   should_stop=should_stop)
    return result.model, json.loads((result.checkpoint / "meta.json").read_text()), True


def run(models: list[str], task_names: list[str], cfg: Config, run_name: str, results_dir: Path,
        runs_dir: Path, device: str | None = None, force: bool = False, limit: int | None = None,
        log: Callable[[str], None] = print, on_step: Callable | None = None,
        skip_missing: bool = False, grouped: frozenset = frozenset()) -> list[Row]:
    """grouped: the tasks that a group name brought in; missing data skips them with a warning."""
    d, device, log = join_job(device or default_device(), log)  # DDP training, data-parallel lm-eval tasks
    main = d is None or d.is_main
    if not main:
        on_step = None
    check_models(models, cfg, device, d.world_size if d is not None else 1)  # before anything is written
    tasks = check_task_data([get_task(t) for t in task_names], skip_missing=skip_missing, log=log, grouped=grouped)
    out = Path(results_dir) / run_name
    rows_file = out / "rows.jsonl"
    provenance = {"commit": git_commit(), "device": device_name(device),
                  "date": now(), "command": command_line()}
    info = {"run": run_name, "models": models, "tasks": task_names, "config": cfg.to_dict(),
            "config_hash": config_hash(cfg), "versions": versions(), **provenance}
    run_json = out / "run.json"
    existing = stored_rows(rows_file, d, log)
    if main:
        with folder_lock(out):  # another job may be adding its models to this run's record
            if run_json.is_file():
                previous = json.loads(run_json.read_text())
                info["models"] = list(dict.fromkeys(previous.get("models", []) + models))
                info["tasks"] = list(dict.fromkeys(previous.get("tasks", []) + task_names))
            atomic_write_text(run_json, json.dumps(info, indent=1, default=str))
    done = {(r.model, r.task) for r in existing}
    tokenizer = get_tokenizer(cfg.train.tokenizer)
    for name in models:
        pending = [t for t in tasks if force or (name, t.name) not in done]
        if not pending:
            log(f"{name}: all tasks done already (pass --force to redo)")
            continue
        model, meta, trained = trained_model(name, cfg, Path(runs_dir) / run_name / name, device, force, on_step)
        log(f"{name}: {'trained' if trained else 'reused checkpoint'}, {meta['params']:,} params, "
            f"held-out loss {meta['heldout_loss']:.4f}")
        if main:
            keep_training_record(Path(runs_dir) / run_name / name, out, name)
        ctx = TaskContext(cfg, run_name, name, device, meta["params"], meta.get("tokens"),
                          str(Path(runs_dir) / run_name / name / CHECKPOINT_DIR), limit, provenance, dist=d)
        existing = run_tasks(model, tokenizer, ctx, pending, existing, rows_file, log)
    if main:
        atomic_write_text(out / "table.md", rows_table(existing))
    return existing


def check_models(models: list[str], cfg: Config, device: str, world_size: int) -> None:
    """What training or loading would refuse, checked before a run writes anything (run.json
    included): unknown names, the tokenizer and corpus, the batch layout, and each model's build
    (on the meta device: no memory) and training options on this device."""
    from harness.data.corpus import corpus_files
    from harness.model.build import build_model
    from harness.training.batches import _batch_layout
    from harness.training.distributed import layers_of
    from harness.training.recipe import fused_cross_entropy
    specs = [get_model(name) for name in models]
    check_tokenizer(cfg)
    corpus_files(cfg.train.corpus)
    _batch_layout(cfg.train, world_size)
    on = torch.device(device)
    for spec in specs:
        if spec.gpu_only and on.type != "cuda":
            raise RunError(f"{spec.name} runs only on a CUDA GPU (fast path here: {spec.fast_path()}); run it on a "
                           f"GPU machine, or leave it out here")
        model = build_model(spec.name, cfg.model, "meta")
        if cfg.train.fused_ce:
            fused_cross_entropy(model, on)
        if cfg.train.activation_checkpointing and not layers_of(model):
            raise RunError(f"train.activation_checkpointing needs a model with a `blocks` ModuleList (the shared "
                           f"backbone), which {spec.name} lacks; set train.activation_checkpointing=false")


def join_job(device: str, log: Callable[[str], None]) -> tuple[Dist | None, str, Callable[[str], None]]:
    """(job, device, log) of a command that may run under torchrun: there it joins the process
    group (with a timeout long enough for rank 0 to run a task alone), runs on its rank's GPU, and
    only rank 0 logs; started plainly, (None, device, log) unchanged."""
    if not distributed.launched_by_torchrun():
        return None, device, log
    from harness.evaluate import EVAL_TIMEOUT_S
    d = distributed.setup(device, timeout_s=EVAL_TIMEOUT_S)
    return d, str(d.device), log if d.is_main else (lambda message: None)


def stored_rows(rows_file: Path, d: Dist | None, log: Callable[[str], None]) -> list[Row]:
    """The rows already in rows_file, as rank 0 reads them before writing anything: every rank of
    a job must agree on what is left to do."""
    main = d is None or d.is_main
    rows = read_rows(rows_file, warn=log) if main and rows_file.is_file() else []
    return d.broadcast_object(rows) if d is not None else rows


def keep_training_record(model_dir: Path, out: Path, name: str) -> None:
    """Copy the model's per-step training log and checkpoint summary (tokens/s, MFU, memory,
    held-out loss) into out/train/, so that a committed results folder keeps the curves and the
    throughput behind its rows without the checkpoints (which are not committed)."""
    sources = {model_dir / LOG_FILE: f"{name}_{LOG_FILE}", model_dir / CHECKPOINT_DIR / "meta.json": f"{name}_meta.json"}
    for source, target in sources.items():
        if source.is_file():
            atomic_write_text(out / "train" / target, source.read_text(encoding="utf-8"))


def run_tasks(model, tokenizer, ctx: TaskContext, tasks: list, existing: list[Row], rows_file: Path,
              log: Callable[[str], None] = print) -> list[Row]:
    """Run tasks on one model, replacing its earlier rows of each task; the rows file is rewritten
    atomically after every task, so an interruption loses only the task in flight, and merged with
    what is on disk then (`replace_rows`), so a job running beside this one keeps its rows.

    In a torchrun job (`ctx.dist`) a data-parallel task runs on every rank and returns its rows on
    rank 0; any other task runs on rank 0 while the other ranks wait; rank 0 alone writes."""
    model.eval()
    d = ctx.dist
    main = d is None or d.is_main
    for task in tasks:
        alone = d is not None and not task.data_parallel
        t0 = time.time()
        rows = task.run(model, tokenizer, ctx) if main or not alone else []
        if alone:
            d.barrier()
        seconds = time.time() - t0
        if not main:
            continue
        for row in rows:
            row.extra["eval_seconds"] = round(seconds, 2)
            if d is not None and task.data_parallel:  # computed by every rank of the job
                row.extra["world_size"] = d.world_size
        existing = replace_rows(rows_file, rows, lambda r: ctx.owns(r, task.name), warn=log)
        log(f"{ctx.model_name}: {task.name} done in {seconds:.1f}s ({len(rows)} rows)")
    return existing


def check_task_data(tasks: list, online: bool = False, skip_missing: bool = False,
                    log: Callable[[str], None] = print, grouped: frozenset = frozenset()) -> list:
    """The tasks whose data is present, checked before any model work. A task named on its own
    whose data is missing raises its DataError (naming path and fix); one that a group brought in
    (`grouped`), or any with skip_missing, is dropped, and one warning line names all those dropped
    and how to get their data. Nothing left to run is an error."""
    from harness.data.paths import DataError
    from harness.evaluate import TASK_DATA, missing_data
    runnable, skipped = [], []
    for task in tasks:
        err = missing_data(task.name, online)
        if err is None:
            runnable.append(task)
        elif skip_missing or task.name in grouped:
            skipped.append(task.name)
        else:
            raise DataError(f"{err}; or pass --skip-missing to run the other tasks") from None
    if skipped:
        datasets = " ".join(dict.fromkeys(TASK_DATA[name][0] for name in skipped))
        how = (f"get the data with `harness data fetch {datasets}` where the Hugging Face hub is reachable, or "
               f"`harness data import FILE --name NAME` from a local copy (`harness data list` shows what is here)")
        if not runnable:
            raise DataError(f"no task left to run: the data of {', '.join(skipped)} is not in the mirror; {how}")
        log(f"warning: skipped {', '.join(skipped)} (data not in the mirror); {how}")
    return runnable

