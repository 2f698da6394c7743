"""The evaluation loop: model sources x tasks -> rows, behind `harness run` and `harness eval`.

    results/<run>/rows.jsonl     every task's rows, all models
    results/<run>/run.json       the commands that wrote here: models, tasks, config, provenance
    results/<run>/table.md       the tables the command prints (`run_tables`), then every row
    results/<run>/train/         `harness run`: each model's per-step training log and checkpoint summary
    runs/<run>/<model>/          `harness run`: checkpoints (not committed; reproducible)

A source gives the model to score (harness.evaluation.sources): `harness run` trains each model, or
reuses its finished checkpoint when it was trained with the same config; `harness eval` loads
checkpoint or Hugging Face folders. Everything a run would refuse (unknown models, a corpus or
dataset that is missing, a model that cannot train here) is checked before anything is written.
Finished work is reused: a (model, task) pair whose rows were scored on the same weights (the rows
record the source's `weights_id`) completely, or cut by the same --limit (rows record a limit only
where it cut the task), is not rerun unless `force`, and lm-eval's request cache per checkpoint
version resumes an interrupted task. A `force` that retrains a model drops its rows first, so that
an interrupted retraining is redone, not reported as done.
Rows are written atomically after each task, so an interruption loses at most the task in flight.

Under torchrun every rank takes part: training with DDP, lm-eval's tasks split over the ranks,
other tasks on rank 0 while the others wait; rank 0 alone writes and logs.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from harness.config import Config, ConfigError, config_difference, config_hash, folder_name
from harness.data import mirror
from harness.data.paths import DataError
from harness.evaluation.sources import (
    RECORD_DIR,
    ModelSource,
    RunError,
    TrainedSource,
    clear_request_cache,
    request_cache,
)
from harness.files import atomic_write_text
from harness.memory import is_out_of_memory
from harness.registry import ContractError, RegistryError, TaskSpec, get_model, get_task
from harness.results.provenance import provenance, record_run
from harness.results.store import WEIGHTS_KEY, Row, read_rows, replace_rows
from harness.results.tables import rows_table, run_tables
from harness.training import distributed
from harness.training.distributed import EVAL_TIMEOUT_S, Dist
from harness.training.outcome import StopRequests


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
    # keys every row carries that describe the run without naming it (a study's parameter and FLOP counts):
    # a count corrected in the code since must not make a rerun's rows stand beside those they replace
    row_facts: dict = field(default_factory=dict)
    weights_id: str | None = None  # the weights scored (ModelSource.weights_id), stamped into every row

    def row(self, task: str, metric: str, value: float | None, stderr: float | None = None, n: int | None = None,
            **extra) -> Row:
        return Row(run=self.run, model=self.model_name, preset=self.cfg.preset, task=task, metric=metric,
                   value=None if value is None else float(value), stderr=stderr, n=n, params=self.params,
                   tokens_trained=self.tokens_trained, seed=self.cfg.train.seed, checkpoint=self.checkpoint,
                   extra={**self.row_extra, **self.row_facts, **extra}, **self.provenance)

    def take(self, available: int) -> int:
        """How many of a task's `available` examples (documents, windows, samples per cell) it scores:
        the first --limit of them, or all."""
        return available if self.limit is None else min(available, self.limit)

    def limit_if_cut(self, available: int) -> int | None:
        """The `limit` a task records on its rows: the --limit where it scored fewer than its
        `available` examples, else None. A limit that covers the whole task leaves complete rows, which
        tables do not mark (§) and which a later run, limited or not, reuses."""
        return self.limit if self.take(available) < available else None

    def owns(self, row: Row, task: TaskSpec | str) -> bool:
        """Whether a stored row is this context's result of `task` (and so replaced by a rerun)."""
        names = (get_task(task) if isinstance(task, str) else task).row_task_names
        if row.model != self.model_name or row.task not in names:
            return False
        if not self.row_extra:
            return True
        return (row.preset, row.seed) == (self.cfg.preset, self.cfg.train.seed) and all(
            row.extra.get(k) == v for k, v in self.row_extra.items())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problem(text: str) -> str | None:
    """Why the harness cannot run on device `text` here, with the fix (None: it can): cpu, cuda or
    cuda:N, and CUDA only where a GPU is visible. Also checked by the lm-eval adapter, which lm-eval
    hands its own --device."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", text):
        return f"{text!r} is not a device the harness runs on; use cpu, cuda or cuda:N"
    if text != "cpu":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"{text} asked for, but no CUDA GPU is visible here; use --device cpu"
        if int(text.partition(":")[2] or 0) >= count:
            return f"{text} asked for, but {count} GPU(s) are visible: use cuda:0 to cuda:{count - 1}"
    return None


def run_models(models: list[str], task_names: list[str], cfg: Config, run_name: str, results_dir: Path,
               runs_dir: Path, device: str | None = None, force: bool = False, limit: int | None = None,
               log: Callable[[str], None] = print, on_step: Callable | None = None,
               skip_missing: bool = False, grouped: frozenset = frozenset(),
               stops: StopRequests | None = None) -> list[Row]:
    """`harness run`: each registered model trained at cfg (or its checkpoint reused), then scored.
    grouped: the tasks that a group name brought in; missing data skips them with a warning.
    stops: the signals that stop a model's training at a checkpoint (TrainingStopped)."""
    for name in models:
        get_model(name)  # an unknown name stops the run first, naming the known ones
    main = distributed.is_main_process()
    out = Path(results_dir) / run_name
    sources = [TrainedSource(name, cfg, Path(runs_dir) / run_name / name, out / RECORD_DIR, force,
                             on_step if main else None, writes_record=main, stops=stops) for name in models]
    record = {"config": cfg.to_dict(), "config_hash": config_hash(cfg)}
    plugins = {name: spec.plugin_file.record() for name in models if (spec := get_model(name)).plugin_file}
    if plugins:  # the code of the plugin models trained here, as their checkpoints keep it
        record["plugins"] = plugins
    return score(sources, task_names, run_name, results_dir, device or default_device(), limit=limit, force=force,
                 log=log, skip_missing=skip_missing, grouped=grouped, record=record)


def score(sources: list[ModelSource], task_names: list[str], run: str, results_dir: Path, device: str,
          limit: int | None = None, force: bool = False, online: bool = False, skip_missing: bool = False,
          bootstrap_iters: int | None = None, log: Callable[[str], None] = print,
          grouped: frozenset = frozenset(), record: dict | None = None) -> list[Row]:
    """Score every source on the tasks `task_names` into results/<run>/ and return the run's rows.
    online: lm-eval's tasks read data the mirror lacks from the hub; bootstrap_iters: lm-eval's
    bootstrap resamples for stderr (None: its default); record: what run.json keeps besides the
    models, tasks and provenance (the config of a `harness run`); grouped: the tasks that a group
    name brought in (missing data skips them with a warning)."""
    folder_name(run, "--run")
    d, device, log = join_job(device, log)
    main = d is None or d.is_main
    for source in sources:  # before anything is written
        source.check(device, d.world_size if d is not None else 1)
    tasks = check_task_data([get_task(t) for t in task_names], online, skip_missing, log, grouped)
    out = Path(results_dir) / run
    rows_file = out / "rows.jsonl"
    existing = stored_rows(rows_file, d, log, "; its task counts as done if its other rows are there: restore the "
                                              "line, or pass --force to score it again")
    if record is not None and "config_hash" in record:
        check_run_config(out, record, [s.name for s in sources], existing)
    else:
        trained = {s.checkpoint: c for s in sources if (c := s.trained_config()) is not None}
        check_checkpoints_fit_run(out, trained)
        if (config := checkpoints_config(trained)) is not None:  # so that a later eval is checked against it
            record = {**(record or {}), "config": config.to_dict(), "config_hash": config_hash(config)}
    recorded = False

    def keep_record() -> None:  # run.json, once a model has loaded: a failed load leaves nothing behind
        nonlocal recorded
        if main and not recorded:
            record_run(out, {"run": run, "models": [s.name for s in sources], "tasks": list(task_names),
                             **(record or {})}, device)
        recorded = True
    stamp = provenance(device)
    options = {"online": online} | ({"bootstrap_iters": bootstrap_iters} if bootstrap_iters is not None else {})
    for source in sources:
        pending = pending_tasks(source, tasks, existing, limit, force, log, stamp["device"])
        if not pending:
            log(f"{source.name}: all tasks done already (pass --force to redo)")
            continue
        if source.retrains and main and (dropped := sorted({r.task for r in existing if r.model == source.name})):
            existing = replace_rows(rows_file, [], lambda r: r.model == source.name, warn=log)
            log(f"{source.name}: dropped its rows of {', '.join(dropped)}: they describe the weights being retrained")
        loaded = source.load(device, log)
        keep_record()
        if force and main:
            clear_request_cache(run, source)
        if d is not None:
            d.barrier()
        ctx = TaskContext(loaded.cfg, run, source.name, device, loaded.meta.get("params"), loaded.meta.get("tokens"),
                          source.checkpoint, limit, stamp,
                          options={**options, "cache_dir": str(request_cache(run, source))}, dist=d,
                          weights_id=source.weights_id())
        existing = run_tasks(loaded.model, loaded.tokenizer, ctx, pending, existing, rows_file, log)
        del loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    keep_record()
    if main:
        configs = {run: record["config"]} if record and "config" in record else {}
        atomic_write_text(out / "table.md", run_table_md(existing, configs))
    return existing


def run_table_md(rows: list[Row], configs: dict) -> str:
    """results/<run>/table.md: the tables the command prints at its end, then every row of the run
    (rows_table: the sweeps' settings and the rows no table shows)."""
    tables = run_tables(rows, configs)
    return (tables + "\n" if tables else "") + "**All rows**\n\n" + rows_table(rows)


def pending_tasks(source: ModelSource, tasks: list[TaskSpec], rows: list[Row], limit: int | None, force: bool,
                  log: Callable[[str], None], device: str | None = None) -> list[TaskSpec]:
    """The tasks that have no rows of this source's current weights under this limit (all of them with
    `force`), nor, for a task that times its device (`per_device`), of this `device` (provenance's
    name); says which tasks are redone because their rows are of other weights, limit or device."""
    if force:
        return list(tasks)
    weights = source.weights_id()
    alike = [r for r in rows if scored_alike(r, source, weights, limit)]
    pending = [t for t in tasks if not any(answers(r, t, device) for r in alike)]
    redone = [t.name for t in pending if any(r.model == source.name and r.task in t.row_task_names for r in rows)]
    if redone:
        log(f"{source.name}: redoing {', '.join(redone)}: the rows stored were scored on other weights, under "
            f"another --limit, on another corpus or dataset or (timings) on another device")
    return pending


def answers(row: Row, task: TaskSpec, device: str | None) -> bool:
    """Whether a stored row (of the source's weights and limit) is a result of `task` as it runs now:
    under one of its names, on `device` where the task times its device, and on the dataset it reads
    now where the row names one of the task's datasets."""
    if row.task not in task.row_task_names or (task.per_device and row.device != device):
        return False
    return row.extra.get("dataset") not in task.datasets or row.extra["dataset"] == dataset_read(task)


def dataset_read(task: TaskSpec) -> str | None:
    """The dataset the task reads now: the first of its `datasets` in the mirror (the length task reads
    the raw WikiText-2 once it is mirrored, else the tokenized v1 copy); None where none is. Rows that
    name another one (`dataset`) were scored on other text, and tables would set them beside these."""
    for dataset in task.datasets:
        try:
            mirror.require(dataset)
            return dataset
        except DataError:
            continue
    return None


def scored_alike(row: Row, source: ModelSource, weights: str | None, limit: int | None) -> bool:
    """Whether a stored row is the source's result on `weights` under `limit` (and, where the source
    names one, its held-out corpus). Rows written before rows named their weights count for the same
    checkpoint path. Full rows (no `limit`: also those of a limit that covered the whole task) count
    for any limit: they answer a quick look better than a limited rerun, which would replace them."""
    if row.model != source.name or weights is None or row.extra.get("limit") not in (None, limit):
        return False
    if source.corpus is not None and row.extra.get("corpus", source.corpus) != source.corpus:
        return False
    return row.extra[WEIGHTS_KEY] == weights if WEIGHTS_KEY in row.extra else row.checkpoint == source.checkpoint


def recorded_config(out: Path) -> Config | None:
    """The config run.json records for a run folder (that of its `harness run`, or of the checkpoints
    `harness eval` scored there); None where it records none."""
    path = out / "run.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged record is replaced by this command's
    return Config.from_dict(recorded["config"]) if isinstance(recorded.get("config"), dict) else None


def check_run_config(out: Path, record: dict, models: list[str], rows: list[Row]) -> None:
    """run.json keeps one config per run, and tables label every model of the run with it: a command at
    another config may not rewrite it while the run holds rows of models it does not train."""
    recorded = recorded_config(out)
    if recorded is None or config_hash(recorded) == record["config_hash"]:
        return
    others = sorted({r.model for r in rows} - set(models))
    if others:
        change = config_difference(recorded, Config.from_dict(record["config"]))
        raise RunError(f"{out} holds rows of {', '.join(others)} trained with another config ({change}); pass "
                       f"--run NEW_NAME for a run at this config, or retrain them too (--models with them, --force)")


def check_checkpoints_fit_run(out: Path, trained: dict[str, Config]) -> None:
    """`harness eval` into a run folder: its run.json's config labels every row there, so a checkpoint
    trained at another one (retrained by `harness train`, say) is scored into a run of its own.
    trained: {checkpoint: the config it was trained at} of the harness checkpoints scored."""
    recorded = recorded_config(out)
    for checkpoint, cfg in trained.items() if recorded is not None else ():
        change = config_difference(recorded, cfg)
        if change:
            raise RunError(f"{out}/run.json records the config its rows were made at, and {checkpoint} was "
                           f"trained with another ({change}); pass --run NEW_NAME to score it in a run of its own")


def checkpoints_config(trained: dict[str, Config]) -> Config | None:
    """The one config of the harness checkpoints scored (`trained`, as above; None where there are
    none, e.g. only hf: models): run.json records it as a `harness run` records its own, since tables
    label every row of the run with it, so checkpoints trained at different configs are refused."""
    configs = {config_hash(c): c for c in trained.values()}
    if len(configs) > 1:
        first, second = list(configs.values())[:2]
        raise RunError(f"the checkpoints were trained with different configs ({config_difference(first, second)}), "
                       f"and a run's tables label all its rows with one; score each config into a run of its own "
                       f"(--run NAME)")
    return next(iter(configs.values()), None)


def join_job(device: str, log: Callable[[str], None]) -> tuple[Dist | None, str, Callable[[str], None]]:
    """(job, device, log) of a command that may run under torchrun: there it joins the process
    group (with a timeout long enough for rank 0 to run a task alone), runs on its rank's GPU, and
    only rank 0 logs; started plainly, (None, device, log) unchanged."""
    if not distributed.launched_by_torchrun():
        return None, device, log
    d = distributed.setup(device, timeout_s=EVAL_TIMEOUT_S)
    return d, str(d.device), log if d.is_main else (lambda message: None)


def stored_rows(rows_file: Path, d: Dist | None, log: Callable[[str], None], skipped_means: str = "") -> list[Row]:
    """The rows already in rows_file, as rank 0 reads them before writing anything: every rank of
    a job must agree on what is left to do. skipped_means ends the warning of a corrupt row skipped
    (`read_rows`): what that means to the command, and its way out."""
    main = d is None or d.is_main
    rows = read_rows(rows_file, log, skipped_means) if main and rows_file.is_file() else []
    return d.broadcast_object(rows) if d is not None else rows


def run_tasks(model, tokenizer, ctx: TaskContext, tasks: list[TaskSpec], existing: list[Row], rows_file: Path,
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
        rows = task_rows(task, model, tokenizer, ctx) if main or not alone else []
        if alone:
            d.barrier()
        seconds = time.time() - t0
        if not main:
            continue
        stamp_rows(rows, ctx, task, seconds)
        existing = replace_rows(rows_file, rows, lambda r: ctx.owns(r, task), warn=log)
        log(f"{ctx.model_name}: {task.name} done in {seconds:.1f}s ({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return existing


def stamp_rows(rows: list[Row], ctx: TaskContext, task: TaskSpec, seconds: float) -> None:
    """What every row records beside the task's own keys: its wall time, the processes that computed
    it, the --limit where that cut the task, and the weights it was scored on (so that a rerun tells
    its own rows from another checkpoint's). A task says whether the limit cut it
    (`limit=ctx.limit_if_cut(...)`; None: it scored everything, and the row carries no limit); a row
    that does not say (a plugin's task written without --limit in mind) is taken to be cut, so that
    it never passes for a complete evaluation."""
    for row in rows:
        row.extra["eval_seconds"] = round(seconds, 2)
        if ctx.dist is not None and task.data_parallel:  # computed by every rank of the job
            row.extra["world_size"] = ctx.dist.world_size
        limit = row.extra.pop("limit", ctx.limit)
        if limit is not None:
            row.extra["limit"] = limit
        if ctx.weights_id is not None:
            row.extra[WEIGHTS_KEY] = ctx.weights_id


def task_rows(task: TaskSpec, model, tokenizer, ctx: TaskContext) -> list[Row]:
    """task.run's rows, checked before any is stored: a list of Row from every task. From a plugin's
    task also no exception without its task's name; from every task no row under a name it does not
    declare (`row_tasks`: a rerun would not find the task done, run it again and append the row
    once more) and no NaN or infinity (rows.jsonl is strict JSON). The harness's own tasks keep
    their tracebacks (bugs to see)."""
    try:
        rows = task.run(model, tokenizer, ctx)
    except (RegistryError, ConfigError, DataError):
        raise
    except Exception as err:
        if task.builtin or is_out_of_memory(err):
            raise
        raise ContractError(f"task {task.name} failed on {ctx.model_name}: {type(err).__name__}: {err}") from None
    if not isinstance(rows, list) or not all(isinstance(r, Row) for r in rows):
        got = type(rows).__name__ if not isinstance(rows, list) else \
            "a list holding " + next(type(r).__name__ for r in rows if not isinstance(r, Row))
        raise ContractError(f"task {task.name} returned {got} on {ctx.model_name}; a task returns a list of Row "
                            f"(ctx.row(task, metric, value, ...))")
    for row in rows:
        if row.task not in task.row_task_names:
            raise ContractError(f"task {task.name} wrote a row of task {row.task!r} on {ctx.model_name}; a task "
                                f"writes rows under its own name: ctx.row({task.name!r}, ...)")
        bad = next((k for k in ("value", "stderr") if getattr(row, k) is not None
                    and not math.isfinite(getattr(row, k))), None)
        if bad is not None:
            raise ContractError(f"task {task.name} wrote {row.metric} {bad} = {getattr(row, bad)} on "
                                f"{ctx.model_name}; rows hold finite numbers (None where there is no value)")
    return rows


def missing_data(task: TaskSpec, online: bool = False) -> DataError | None:
    """The DataError of a task none of whose datasets is in the mirror (None when one is, when it
    reads none, or when it may read the hub)."""
    if online and task.online:
        return None
    errors = []
    for dataset in task.datasets:
        try:
            mirror.require(dataset)
            return None
        except DataError as err:
            errors.append(err)
    return errors[0] if errors else None


def check_task_data(tasks: list[TaskSpec], online: bool = False, skip_missing: bool = False,
                    log: Callable[[str], None] = print, grouped: frozenset = frozenset()) -> list[TaskSpec]:
    """The tasks whose data is present, checked before any model work. A task named on its own
    whose data is missing raises its DataError (naming path and fix); one that a group brought in
    (`grouped`), or any with skip_missing, is dropped, and one warning line names all those dropped
    and how to get their data. Nothing left to run is an error."""
    runnable, skipped = [], []
    for task in tasks:
        err = missing_data(task, online)
        if err is None:
            runnable.append(task)
        elif skip_missing or task.name in grouped:
            skipped.append(task)
        else:
            raise DataError(f"{err}; or pass --skip-missing to run the other tasks") from None
    if skipped:
        names = ", ".join(t.name for t in skipped)
        datasets = " ".join(dict.fromkeys(t.datasets[0] for t in skipped))
        how = (f"get the data with `harness data fetch {datasets}` where the Hugging Face hub is reachable, or "
               f"`harness data import FILE --name NAME` from a local copy (`harness data list` shows what is here)")
        if not runnable:
            raise DataError(f"no task left to run: the data of {names} is not in the mirror; {how}")
        log(f"warning: skipped {names} (data not in the mirror); {how}")
    return runnable
