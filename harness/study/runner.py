"""Running a study: every run not yet done, trained (or resumed) and scored into the study's rows,
one after another in this process, side by side in worker processes (`--jobs N`, round-robin over
the visible GPUs, `harness study FILE --unit KEY` each), or on every rank of a torchrun job; at
`--time-limit` the workers checkpoint and stop. Then the report (harness.study.report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from harness.config import Config, ConfigError, config_difference
from harness.data.tokenizer import get_tokenizer
from harness.evaluation.loop import (
    TaskContext,
    check_task_data,
    join_job,
    run_tasks,
    stored_rows,
)
from harness.evaluation.sources import trained_model
from harness.files import atomic_write_bytes, atomic_write_text
from harness.memory import SQUEEZED_EXIT
from harness.model.build import non_embedding_params
from harness.registry import get_task
from harness.results.provenance import provenance, record_run
from harness.results.store import Row, read_rows, replace_rows
from harness.study.report import write_report
from harness.study.spec import (
    DIVERGED,
    FIRST_SCORE,
    Study,
    Unit,
    load_study,
    of_unit,
    pending_tasks,
    plan,
    rows_file,
    run_label,
    scored_weights,
    sweeps_left_out,
    units,
)
from harness.training.checkpoint import CHECKPOINT_DIR, META_FILE, WEIGHTS_FILE, read_meta, weights_digest
from harness.training.outcome import CheckpointDamaged, TrainingDiverged, TrainingStopped
from harness.training.trainlog import LOG_FILE

STOPPED_EXIT = 3  # a worker that checkpointed and stopped at the time limit
DIVERGED_EXIT = 4  # a worker whose training diverged, recorded as such in the rows
INTERRUPTED_EXIT = 130  # the CLI's exit on SIGTERM, for a worker signalled before its own handler was set
KILL_GRACE_S = 45  # seconds past the time limit after which a worker that has not stopped is killed
SQUEEZED_TRIES = 4  # starts of a unit that keeps running out of memory beside other processes, then it failed
STUDY_ENV = "HARNESS_STUDY"  # the study file's mapping as the pool read it (JSON, in its order), for its workers


def run_unit(study: Study, unit: Unit, results: Path, runs: Path, device: str,
             log: Callable[[str], None] = print, on_step: Callable | None = None,
             should_stop: Callable[[], bool] | None = None, d=None) -> str:
    """Train (or resume, or reuse) one run and score its pending tasks into the study's rows
    (`d`: the torchrun job every rank of which calls this; rank 0 writes). Returns "done", or
    "diverged" where training diverged: that is a result of the sweep (the rate is too high), recorded
    in the rows, not an error that would end the study or block it at every rerun."""
    path = rows_file(study, results)
    existing = stored_rows(path, d, log)
    todo = pending_tasks(existing)(unit)
    if not todo:
        return "done"
    cfg = study.config(unit.size, unit.seed, unit.lr)
    run_dir = Path(runs) / study.name / unit.key
    check_checkpoint(study, unit, cfg, results, runs)
    model, meta, diverged = trained_or_diverged(unit, cfg, run_dir, device, on_step, should_stop)
    if d is None or d.is_main:
        keep_record(run_dir, record_prefix(study, results, unit))
    weights = weights_digest(meta, run_dir / CHECKPOINT_DIR / WEIGHTS_FILE) if meta else None
    ctx = unit_context(study, unit, cfg, run_dir, device, meta, weights, d)
    if diverged:
        record_divergence(unit, ctx, todo, path, diverged, log)
        return "diverged"
    retrained = tasks_to_score(unit, todo, existing, meta, weights, log)
    if retrained != todo and (d is None or d.is_main):
        start_scoring_over(unit, ctx, existing, path, log)
    todo = retrained
    tokenizer = get_tokenizer(cfg.train.tokenizer)
    for i, task in enumerate(todo):  # a stop asked for between tasks keeps the rows of those done
        if i and should_stop is not None and (d.broadcast_object(should_stop()) if d is not None else should_stop()):
            raise TrainingStopped(f"stopped before {task}; the tasks left resume from {run_dir / CHECKPOINT_DIR}")
        existing = run_tasks(model, tokenizer, ctx, [get_task(task)], existing, path, log)
    return "done"


SAME_WEIGHTS_REL_TOL = 1e-9  # one set of weights scores its held-out loss alike to ~1e-14; other weights differ


def held_out_loss_row(r: Row, unit: Unit, task: str) -> bool:
    """Whether `r` is the unit's held-out loss over the whole split (not one corpus source's) under `task`:
    smoke's, or the FIRST_SCORE kept of its first training."""
    return of_unit(r, unit) and (r.task, r.metric) == (task, "loss") and r.extra.get("corpus_source") is None


def tasks_to_score(unit: Unit, todo: list[str], existing: list, meta: dict, weights: str | None,
                   log: Callable[[str], None]) -> list[str]:
    """The unit's tasks left (`todo`), or all its tasks where the weights in its run folder are not
    those its stored rows were scored on: a run trained again after its checkpoint was lost (a
    study's device machine goes back with it) reproduces its weights bit for bit only on the same
    kind of device and software, and rows of two models under one run would pass for one. The rows'
    weights digest tells them apart (`weights`: the run folder's); rows from before the study
    recorded it, by their held-out loss: training records it for the weights it leaves, and the
    smoke task stored it for the weights it scored."""
    others = scored_weights(existing, unit) - {weights}
    if weights is not None and others:
        log(f"{unit.key}: its weights ({weights}) are not those some of its rows were scored on "
            f"({', '.join(sorted(others))}: trained again on another device or software); scoring all its tasks again")
        return list(unit.tasks)
    stored = [r.value for r in existing if held_out_loss_row(r, unit, "smoke")]
    now = meta.get("heldout_loss")
    if not stored or now is None or math.isclose(stored[0], now, rel_tol=SAME_WEIGHTS_REL_TOL):
        return todo
    log(f"{unit.key}: its weights are not those its rows were scored on (held-out loss {now:.6f}, its rows' "
        f"{stored[0]:.6f}: trained again on another device or software); scoring all its tasks again")
    return list(unit.tasks)


def start_scoring_over(unit: Unit, ctx: TaskContext, existing: list[Row], path: Path,
                       log: Callable[[str], None]) -> None:
    """Before a run trained again scores its tasks anew: drop every row of its earlier weights, and keep
    their held-out loss as a FIRST_SCORE row (a run trained again twice keeps its first), with which the
    learning-rate sweep goes on choosing (spec.sweep_plan). Dropped up front, not task by task: a stop
    between the tasks would otherwise leave the tasks not reached with the old weights' rows, which a
    resumed run (its held-out loss now that of its weights) keeps as done, two models' rows under one run."""
    first = [] if any(held_out_loss_row(r, unit, FIRST_SCORE) for r in existing) else [
        dataclasses.replace(r, task=FIRST_SCORE) for r in existing if held_out_loss_row(r, unit, "smoke")][:1]
    replace_rows(path, first, lambda r: any(ctx.owns(r, task) for task in unit.tasks), warn=log)


def trained_or_diverged(unit: Unit, cfg, run_dir: Path, device: str, on_step, should_stop) -> tuple:
    """(model, meta, None) of the trained run, or (None, {}, why) where its training diverged."""
    try:
        with damage_fix(run_dir):
            model, meta, _ = trained_model(unit.model, cfg, run_dir, device, False, on_step, should_stop)
    except TrainingDiverged as err:
        return None, {}, str(err).split(";")[0]
    return model, meta, None


@contextlib.contextmanager
def damage_fix(run_dir: Path):
    """A damaged checkpoint's error with the fix of `harness study`: its usual way to retrain names options
    of `harness run` and `harness train` that the study does not have; the study's is to delete the run's
    folder, whose run it then trains again."""
    try:
        yield
    except CheckpointDamaged as err:
        raise CheckpointDamaged(err.problem, f"delete {run_dir} and run the study again", err.keep) from None


def unit_context(study: Study, unit: Unit, cfg, run_dir: Path, device: str, meta: dict, weights: str | None,
                 d) -> TaskContext:
    """The context the unit's rows are made in: every row carries the run's learning rate and budget,
    and the checkpoint it was scored on and its weights' digest (none where training diverged: `meta`
    is empty)."""
    budget = study.budgets[unit.size]
    row_extra = {"lr": unit.lr, "tokens_per_param": study.tokens_per_param, "epochs": round(budget["epochs"], 4),
                 "budget_params": budget["budget_params"]}
    row_facts = {"non_embedding_params": non_embedding_params(unit.model, cfg.model),
                 "train_flops": (meta.get("flops_per_token") or {}).get("train", 0.0) * meta.get("tokens", 0)}
    return TaskContext(cfg, study.name, unit.model, device, meta.get("params"), meta.get("tokens"),
                       str(run_dir / CHECKPOINT_DIR) if meta else None, None, provenance(device),
                       row_extra=row_extra, row_facts=row_facts, dist=d, weights_id=weights)


def record_divergence(unit: Unit, ctx: TaskContext, todo: list[str], path: Path, why: str,
                      log: Callable[[str], None]) -> None:
    """A row per task left, of metric `diverged` with no value and why: the run counts as done (a rerun
    does not train it into the same divergence again), the sweep rules its rate out, the tables say so."""
    rows = [ctx.row(task, DIVERGED, None, diverged=why) for task in todo]
    if ctx.dist is None or ctx.dist.is_main:
        replace_rows(path, rows, lambda r: any(ctx.owns(r, task) for task in todo), warn=log)
    log(f"{unit.key}: diverged ({why}); recorded as diverged, and ruled out of the learning-rate choice")


def record_prefix(study: Study, results: Path, unit: Unit) -> Path:
    """Where the run's kept checkpoint summary and training log go, beside the study's rows."""
    return rows_file(study, results).parent / "train" / unit.size / f"{unit.model}-{run_label(unit.lr, unit.seed)}"


def checked_rows(path: Path, d=None) -> list[Row]:
    """The study's rows, refused where a line is corrupt: the study cannot tell which results that
    line held, and another row of the same run would count its task as done for ever."""
    problems: list[str] = []
    rows = stored_rows(path, d, problems.append)
    if d is not None:
        problems = d.broadcast_object(problems)
    if problems:
        where = problems[0].removeprefix("warning: ").replace("skipped a corrupt row", "a corrupt row")
        raise ConfigError(f"{where}; the study cannot tell which results it lost: restore the file from a copy, or "
                          f"delete that line and every other row of its run, which then runs again")
    return rows


def check_unchanged(study: Study, rows: list[Row], results: Path, runs: Path | None) -> None:
    """Refuse rows, kept checkpoint summaries and (with `runs`) checkpoints made under another version
    of the study file: a rerun would skip their runs as done and report them under the new budget."""
    seen = set()
    for row in rows:
        if row.preset not in study.sizes or row.model not in study.models + study.references:
            continue  # a size or model since dropped from the study: not reported
        check_row_budget(study, row, results, runs)
        unit = Unit(row.model, row.preset, row.extra.get("lr"), row.seed, ())
        if unit.key not in seen:
            seen.add(unit.key)
            check_kept_config(study, unit, results, runs)


def check_row_budget(study: Study, row: Row, results: Path, runs: Path | None) -> None:
    budget = study.budgets[row.preset]
    recorded = {"tokens_per_param": (row.extra.get("tokens_per_param"), study.tokens_per_param),
                "budget_params": (row.extra.get("budget_params"), budget["budget_params"]),
                "tokens_trained": (row.tokens_trained, budget["tokens"])}
    for name, (got, now) in recorded.items():
        if got is not None and got != now:
            key = Unit(row.model, row.preset, row.extra.get("lr"), row.seed, ()).key
            raise changed_study(study, results, runs, f"{rows_file(study, results)} holds rows of {key} with "
                                                      f"{name} {got}, where the study now gives {now}")


def check_kept_config(study: Study, unit: Unit, results: Path, runs: Path | None) -> None:
    """The run's kept checkpoint summary (train/<size>/<run>_meta.json) records the config it trained."""
    path = Path(f"{record_prefix(study, results, unit)}_meta.json")
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))["config"] if path.is_file() else None
    except (ValueError, KeyError, TypeError):
        return  # a damaged copy; the rows' budget was checked all the same
    change = kept and config_difference(Config.from_dict(kept), study.config(unit.size, unit.seed, unit.lr))
    if change:
        raise changed_study(study, results, runs, f"{path} records {unit.key} trained with another config than "
                                                  f"the study gives it now ({change})")


def check_checkpoint(study: Study, unit: Unit, cfg: Config, results: Path, runs: Path) -> None:
    """A checkpoint of the run trained with another config is not resumed or reused, nor retrained over."""
    ckpt = Path(runs) / study.name / unit.key / CHECKPOINT_DIR
    with damage_fix(ckpt.parent):
        recorded = read_meta(ckpt)["config"] if (ckpt / META_FILE).is_file() else None
    change = recorded and config_difference(Config.from_dict(recorded), cfg)
    if change:
        raise changed_study(study, results, runs, f"{ckpt.parent} holds {unit.model} trained with another config "
                                                  f"than the study gives it now ({change})")


def changed_study(study: Study, results: Path, runs: Path | None, what: str) -> ConfigError:
    """The error for work done under another version of the study file, naming both ways on."""
    folders = " and ".join(str(Path(f) / study.name) for f in (results, runs)
                           if f is not None and (Path(f) / study.name).exists())
    return ConfigError(f"{what}: {study.path} changed since; for a new study give it a new `name:`, or move "
                       f"{folders} away to start this one over")


def keep_record(run_dir: Path, prefix: Path) -> None:
    """The run's checkpoint summary (`<prefix>_meta.json`) and per-step training log, gzipped
    (`<prefix>_train_log.jsonl.gz`: a study keeps hundreds of them), beside the study's rows."""
    import gzip

    meta, log = run_dir / CHECKPOINT_DIR / META_FILE, run_dir / LOG_FILE
    if meta.is_file():
        atomic_write_text(Path(f"{prefix}_meta.json"), meta.read_text(encoding="utf-8"))
    if log.is_file():
        atomic_write_bytes(Path(f"{prefix}_{LOG_FILE}.gz"), gzip.compress(log.read_bytes(), mtime=0))


def write_record(study: Study, results: Path, device: str) -> None:
    """results/<name>/run.json: the study file, budgets, provenance."""
    record_run(Path(results) / study.name, {"study": study.data, "budgets": study.budgets,
                                            "config": study.config(next(iter(study.sizes)), 0).to_dict()}, device)


def run_study(study: Study, results: Path, runs: Path, device: str, jobs: int = 1,
              time_limit: float | None = None, log: Callable[[str], None] = print,
              on_step: Callable | None = None, progress: Callable[[int, int, str], None] | None = None,
              plugins: tuple[str, ...] = (), start_new_for: float | None = None,
              largest_first: bool = False, force: bool = False) -> dict:
    """Run every unit not yet done, the next one picked whenever a slot frees (a final run
    becomes runnable once its model's sweep has chosen its learning rate), then write the report (also
    when interrupted, stopped or failed, so that status.md and the tables say where the study stands).
    `start_new_for`: seconds after which a unit starts only if its run has a checkpoint under
    `runs` (a cut training resumes, a trained one scores its tasks left): on a machine about to go
    away, a training started too late to finish would be lost with it. Before then, with a
    `time_limit`, a unit without a checkpoint starts only if the study's finished runs say it
    can finish in the time left (`past_durations`). `largest_first`: runs of
    the largest size first (the longest trainings; by default a size's runs come before the next
    size's, so the small sizes' results come first), so that on such a machine they start early
    enough to finish, while the shorter ones fill the slots beside them. `force`: every run of the
    models and sizes this invocation runs is first discarded (`discard_runs`), then trained and scored anew.
    Returns counts: done, diverged (recorded in the rows as such), failed, stopped, waiting, squeezed
    (starts that ran out of GPU memory beside other processes and were queued again), not_started
    (held back by `start_new_for`), unreached (not started before `time_limit`), and of the study's
    runs when it started (`runs`, those waiting for their learning rate included) those `already` done."""
    d, device, log = join_job(device, log)
    if d is not None and jobs > 1:
        raise ConfigError("under torchrun every run trains on all ranks: drop --jobs (or run without torchrun "
                          "for several runs side by side)")
    main = d is None or d.is_main
    drop_missing_tasks(study, log)
    plan(study, log)
    rows = checked_rows(rows_file(study, results), d)
    at_start, waiting, left = check_before_running(study, rows, results, runs, force)
    check_jobs_fit(study, min(jobs, len(left) + waiting), device)
    if main:  # before the study's record: a --runs where no folder can be made is refused with --results untouched
        (Path(runs) / study.name).mkdir(parents=True, exist_ok=True)
        if force:
            discard_runs(study, rows, results, runs, log)
    deadline = None if time_limit is None else time.time() + time_limit
    new_until = None if start_new_for is None else time.time() + start_new_for
    counts = {"done": 0, "diverged": 0, "failed": 0, "stopped": 0, "waiting": 0, "squeezed": 0, "not_started": 0,
              "unreached": 0, "runs": len(at_start) + waiting, "already": len(at_start) - len(left)}
    # (run, its tasks left) started in this invocation: a sweep run is claimed again, for the final
    # stage's tasks, once its learning rate turns out to be the model's best
    claimed: set[tuple[str, tuple]] = set()
    held_back: set[str] = set()  # units not started for `start_new_for`: too late, or too long for the time left
    shown = None  # the progress last shown (done, of how many runs)

    def next_unit(running: tuple[str, ...] = ()) -> Unit | None:
        """The first unit with tasks left that this invocation has not started. A (model, size)
        none of whose runs has finished yet waits while one of its runs is going: that first run
        autotunes the model's kernels (minutes of CPU for the fla models), the next ones then find
        the tuned configurations in Triton's cache instead of tuning them again side by side."""
        nonlocal shown
        rows = stored_rows(rows_file(study, results), d, log)
        defined, counts["waiting"] = units(study, rows, study.only, study.only_sizes)
        if main:
            write_record(study, results, device)
        pending = pending_tasks(rows)
        left = [u for u in defined if pending(u)]
        if largest_first:
            left.sort(key=lambda u: -list(study.sizes).index(u.size))
        done = (len(defined) - len(left), len(defined) + counts["waiting"])  # of every run, waiting ones too
        if progress and left and main and done != shown:  # a pool asks at each free slot, often with no news
            shown = done
            progress(*done, "")
        tuned = {(r.model, r.preset) for r in rows}
        busy = {tuple(key.split("/")[:2]) for key in running}
        # read only on a machine's last call (`start_new_for`), the one that holds fresh runs back
        expected = past_durations(study, results, rows, pending) if new_until is not None else None

        def may_start(u: Unit) -> bool:
            """Always, but on a machine's last call (`start_new_for`): a run with a checkpoint here, or a
            fresh one in the first seconds that the finished runs expect to end before the time limit."""
            if new_until is None or (Path(runs) / study.name / u.key / CHECKPOINT_DIR / META_FILE).is_file():
                return True
            seconds = expected(u)
            fits = deadline is None or seconds is None or time.time() + seconds <= deadline
            if fits and time.time() < new_until:
                return True
            if not fits and u.key not in held_back:
                log(f"not starting {u.key}: the study's runs of its size took about {seconds:.0f}s, "
                    f"{max(0, deadline - time.time()):.0f}s are left before the time limit")
            held_back.add(u.key)
            return False

        def ready(u: Unit) -> bool:
            return u.key not in running and (u.key, tuple(pending(u))) not in claimed and (
                (u.model, u.size) in tuned or (u.size, u.model) not in busy) and may_start(u)
        unit = next((u for u in left if ready(u)), None)
        if unit is not None:
            claimed.add((unit.key, tuple(pending(unit))))
        return unit

    def expired() -> bool:
        return deadline is not None and time.time() >= deadline

    try:
        if jobs <= 1:
            while not expired() and (unit := next_unit()) is not None:
                log(f"run {unit.key}: {', '.join(unit.tasks)}")
                stop = (lambda: time.time() >= deadline) if deadline is not None else None
                counts[_in_process(study, unit, results, runs, device, log, on_step, stop, d)] += 1
        else:
            def requeue(key: str) -> None:  # the unit may be claimed again for the tasks it has left
                claimed.difference_update({c for c in claimed if c[0] == key})
            for status in _pool(study, next_unit, results, runs, device, jobs, deadline, log, plugins, requeue):
                counts[status] += 1
    finally:  # interrupted (Ctrl-C, SIGTERM) or failed too, the interruption or error going on after it
        if main:
            write_report(study, Path(results))
    counts["not_started"] = len(held_back - {key for key, _ in claimed})  # one held back may start later
    final_rows = stored_rows(rows_file(study, results), d, log)
    if expired():  # runs the time limit left unstarted: the next invocation's
        started = {key for key, _ in claimed} | held_back
        defined, _ = units(study, final_rows, study.only, study.only_sizes)
        counts["unreached"] = sum(u.key not in started for u in filter(pending_tasks(final_rows), defined))
    left_out = sweeps_left_out(study, final_rows)
    if counts["waiting"] and left_out:
        log(f"note: {waiting_for(study, left_out)}")
    return counts


def past_durations(study: Study, results: Path, rows: list[Row],
                   pending: Callable[[Unit], list[str]]) -> Callable[[Unit], float | None]:
    """A fresh unit's expected wall time, from the study's finished runs of its size: training (each
    kept summary's tokens over its tokens/s, measured beside as many runs as shared the GPU then)
    plus each task it has left (its rows' eval_seconds), medians of this model's runs where it has
    some at the size, else of every model's. None where nothing of the size has finished (a training
    or a task): the unit then starts as if it fits, for want of evidence that it does not.
    `pending`: the tasks each unit has left in these rows (`pending_tasks`)."""
    kept: dict[str, list[tuple[str, float]]] = {}  # size -> (model, training seconds) of its kept summaries
    scored = {(r.preset, r.model, r.task, r.extra.get("lr"), r.seed): r.extra["eval_seconds"]
              for r in rows if isinstance(r.extra.get("eval_seconds"), (int, float))}  # one run's task -> seconds

    def training(size: str) -> list[tuple[str, float]]:
        if size not in kept:
            kept[size] = []
            for path in (rows_file(study, results).parent / "train" / size).glob("*_meta.json"):
                try:
                    meta = json.loads(path.read_text(encoding="utf-8"))
                    kept[size].append((meta["model"], meta["tokens"] / meta["tokens_per_s"]))
                except (ValueError, KeyError, TypeError, ZeroDivisionError):
                    continue  # a count-based fit (no tokens/s) or a damaged copy: no evidence
        return kept[size]

    def median_of(own: list[float], every: list[float]) -> float | None:
        return statistics.median(own or every) if own or every else None

    def expected(unit: Unit) -> float | None:
        done = training(unit.size)
        parts = [median_of([t for m, t in done if m == unit.model], [t for _, t in done])]
        for task in pending(unit):
            every = [(model, t) for (size, model, name, *_), t in scored.items() if size == unit.size and name == task]
            parts.append(median_of([t for m, t in every if m == unit.model], [t for _, t in every]))
        known = [p for p in parts if p is not None]
        return sum(known) if known else None
    return expected


def check_before_running(study: Study, rows: list[Row], results: Path, runs: Path,
                         force: bool = False) -> tuple[list[Unit], int, list]:
    """What would make this invocation's work wrong or idle, refused before it writes anything: rows or
    checkpoints of another version of the study file (`force` does not lift that: the runs it keeps would
    mix two versions), or chosen sizes that can only wait. Returns the units the rows define (less the
    rows that `force` discards), how many runs wait for their learning rate, and the units with tasks left."""
    check_unchanged(study, rows, results, runs)
    if force:
        rows = [r for r in rows if not chosen(study, r.model, r.preset)]
    defined, waiting = units(study, rows, study.only, study.only_sizes)
    left = list(filter(pending_tasks(rows), defined))
    for unit in left:
        check_checkpoint(study, unit, study.config(unit.size, unit.seed, unit.lr), results, runs)
    left_out = sweeps_left_out(study, rows)
    if waiting and left_out and not left:
        raise ConfigError(waiting_for(study, left_out))
    return defined, waiting, left


def chosen(study: Study, model: str, size: str) -> bool:
    """Whether this invocation runs the model at the size: the study's, or those of --models and --sizes."""
    return (model in (study.models + study.references if study.only is None else study.only)
            and size in (study.sizes if study.only_sizes is None else study.only_sizes))


def discard_runs(study: Study, rows: list[Row], results: Path, runs: Path, log: Callable[[str], None]) -> None:
    """`--force`: delete the rows (every task's, FIRST_SCORE's too) and run folders of every run this invocation
    runs, before it trains any. Each is then a run with nothing done, trained from scratch and scored once; one
    left unfinished is a run with tasks left to any later invocation, which resumes it without --force (rows
    kept until their run trained again would make a run not reached yet count as done to it). A folder is
    renamed before it is deleted: a deletion cut short leaves no partial checkpoint to resume."""
    path = rows_file(study, results)
    if path.is_file():
        replace_rows(path, [], lambda r: chosen(study, r.model, r.preset), warn=log)
    folders = 0
    for size in study.sizes:
        for model in study.models + study.references:
            folder = Path(runs) / study.name / size / model
            if chosen(study, model, size) and folder.is_dir():
                folders += sum(p.is_dir() for p in folder.iterdir())
                doomed = folder.with_name(f".{model}.discarded-{os.getpid()}")
                folder.rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
    rows_gone = sum(chosen(study, r.model, r.preset) for r in rows)
    log(f"--force: discarded {rows_gone} rows and {folders} run folders (checkpoints); their runs train again")


def check_jobs_fit(study: Study, jobs: int, device: str) -> None:
    """`jobs` trainings side by side on the CPU refused before any starts where they cannot fit the host
    together (harness.memory.check_side_by_side): each worker's own check sees only its run. Every model
    and size this invocation may run is counted, on the meta device (no memory)."""
    from harness.memory import check_side_by_side, model_step_bytes
    from harness.model.build import checked_model
    if jobs <= 1 or not device.startswith("cpu"):
        return
    steps = {}
    for size in study.sizes:
        names = [name for name in study.models if chosen(study, name, size)]
        cfg = study.config(size, study.sweep_seed) if names else None
        for name in names:
            step = model_step_bytes(checked_model(name, cfg.model, device), cfg)
            if step is not None:  # an n-gram counts its batches, holds no step
                steps[f"{name} at size {size}"] = step
    check_side_by_side(steps, jobs)


def waiting_for(study: Study, left_out: list[str]) -> str:
    chosen = ", ".join(s for s in study.sizes if s in study.only_sizes)
    sweeps = ", ".join(left_out)
    return (f"the runs of --sizes {chosen} wait for the learning-rate sweep at {sweeps}, which --sizes leaves out: "
            f"run --sizes {sweeps} first, or add {sweeps} to --sizes")


def report_only(study: Study, results: Path, log: Callable[[str], None] = print) -> list[Path]:
    """`harness study FILE --report-only`: the tables from the rows there are, refused where there are
    none (nothing to report: run the study first) or where they belong to another version of the file."""
    drop_missing_tasks(study, lambda m: None)  # as a run would: their rows cannot exist
    plan(study, log)
    path = rows_file(study, results)
    rows = checked_rows(path)
    if not rows:
        raise ConfigError(f"no rows in {path} yet: run the study first (harness study {study.path})")
    check_unchanged(study, rows, results, None)
    return write_report(study, Path(results))


def drop_missing_tasks(study: Study, log: Callable[[str], None]) -> None:
    """Leave out, with one warning line, the study's tasks whose data is not in the mirror."""
    for attr in ("sweep_tasks", "final_tasks"):
        names = getattr(study, attr)
        kept = {t.name for t in check_task_data([get_task(n) for n in names], skip_missing=True, log=log)}
        setattr(study, attr, [n for n in names if n in kept])


def _in_process(study, unit, results, runs, device, log, on_step, should_stop, d=None) -> str:
    try:
        return run_unit(study, unit, results, runs, device, log, on_step, should_stop, d)
    except TrainingStopped as err:
        log(f"{unit.key}: {err}")
        return "stopped"


def _visible_gpus() -> list[str]:
    import torch
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g.strip() for g in env.split(",") if g.strip()] if env else [str(i) for i in range(torch.cuda.device_count())]


def _pool(study, next_unit, results, runs, device, jobs, deadline, log, plugins=(), requeue=lambda key: None):
    """Run units in up to `jobs` worker processes, asking `next_unit` whenever a slot is free; yield
    each one's status as it ends. A worker squeezed out of GPU memory by other processes (exit
    SQUEEZED_EXIT, harness.memory) hands its unit back (`requeue`) to run again later, up to
    SQUEEZED_TRIES starts, and from then on no more of this pool's run side by side than were
    running beside it. Past the deadline no unit starts and the workers are stopped (`stop_workers`);
    when the caller goes (interrupted, terminated), they are stopped and waited for (`end_workers`)."""
    running: dict = {}  # key -> (worker process, its log file, start time, where this start's output begins)
    try:
        yield from _schedule(study, next_unit, results, runs, device, jobs, deadline, log, plugins, requeue, running)
    finally:
        if running:
            log(f"stopping {len(running)} run(s): each checkpoints first (interrupt again to kill them now)")
            end_workers({key: proc for key, (proc, *_) in running.items()})
            for _, out, *_ in running.values():
                out.close()


def _schedule(study, next_unit, results, runs, device, jobs, deadline, log, plugins, requeue, running: dict):
    """_pool's loop; `running` is its caller's, so that the workers it holds can be stopped."""
    gpus = _visible_gpus() if device.startswith("cuda") else []
    logs = Path(runs) / study.name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    slot, exhausted, signalled, limit, squeezed = 0, False, {}, jobs, {}
    while True:
        expired = deadline is not None and time.time() >= deadline
        while not expired and not exhausted and len(running) < limit:
            unit = next_unit(tuple(running))
            if unit is None:
                exhausted = True  # asked again when a run ends: its rows may define new units
                break
            env = {**os.environ, STUDY_ENV: json.dumps(study.data)}  # JSON keeps the sizes' order
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            slot += 1
            cmd = [sys.executable, "-m", "harness", "study", str(study.path), "--unit", unit.key,
                   "--results", str(results), "--runs", str(runs), "--device", "cuda" if gpus else device]
            cmd += [arg for plugin in plugins for arg in ("--plugin", str(Path(plugin).resolve()))]
            out = open(logs / (unit.key.replace("/", "_") + ".log"), "ab")  # every start of the unit, appended
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            running[unit.key] = (proc, out, time.time(), out.tell())
            log(f"start {unit.key} ({len(running)} running)")
        if not running:
            return
        if expired:
            stop_workers({key: proc for key, (proc, *_) in running.items()}, signalled)
        time.sleep(0.5)
        ended = {key: code for key, (proc, *_) in running.items() if (code := proc.poll()) is not None}
        neighbours = len(running) - 1  # beside each worker that ended in this round
        for key, code in ended.items():
            _, out, t0, since = running.pop(key)
            out.close()
            exhausted = False
            status = worker_status(code, key in signalled)
            if status == "squeezed":
                squeezed[key] = squeezed.get(key, 0) + 1
                if neighbours:  # squeezed beside this pool's own runs: fewer of them from now on
                    limit = min(limit, neighbours)
                if squeezed[key] < SQUEEZED_TRIES:
                    requeue(key)
                    log(f"squeezed out of GPU memory {key} beside {neighbours} other run(s) of this study: queued "
                        f"again; at most {limit} side by side from now on")
                    yield status
                    continue
                status = "failed"
            reason = "" if status == "done" else f": {end_reason(code, key in signalled, out.name, since)}"
            log(f"{status} {key} in {time.time() - t0:.0f}s{reason}")
            yield status


def end_workers(workers: dict) -> None:
    """Stop every worker and wait for it: SIGTERM (it checkpoints and exits), SIGKILL KILL_GRACE_S
    later, or at once on a second interrupt. A worker left running alone would go on writing its
    run folder while the rerun the interruption message asks for trains the same run beside it."""
    signalled: dict = {}
    try:
        while any(proc.poll() is None for proc in workers.values()):
            stop_workers(workers, signalled)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
        raise


def stop_workers(workers: dict, signalled: dict) -> None:
    """SIGTERM each running worker once (it checkpoints and exits STOPPED_EXIT), SIGKILL one still
    running KILL_GRACE_S later. Once only: a worker that has finished its unit restores the default
    SIGTERM action while the interpreter shuts down, and a repeated signal would kill it there."""
    now = time.time()
    for key, proc in workers.items():
        if proc.poll() is not None:
            continue
        if key not in signalled:
            proc.send_signal(signal.SIGTERM)
            signalled[key] = now
        elif now >= signalled[key] + KILL_GRACE_S:
            proc.send_signal(signal.SIGKILL)


def worker_status(code: int, signalled: bool) -> str:
    """done, diverged (recorded in the rows), stopped (resumable: checkpointed, or ended by our signal
    at the deadline), squeezed (out of memory beside other processes: to run again), or failed."""
    if code == 0:
        return "done"
    if code == DIVERGED_EXIT:
        return "diverged"
    if code == STOPPED_EXIT or (signalled and code in (-signal.SIGTERM, -signal.SIGKILL, INTERRUPTED_EXIT)):
        return "stopped"
    return "squeezed" if code == SQUEEZED_EXIT else "failed"


def end_reason(code: int, signalled: bool, log_path: str, since: int) -> str:
    """Why a worker ended without finishing its unit: the last line it wrote in this start (its log
    holds every start of the unit, and an earlier start's last words would read as this one's
    reason); for one killed after the stop signal, that it was; for one killed unasked, most likely
    for want of memory, what to change."""
    if code == -signal.SIGKILL and signalled:
        return (f"killed {KILL_GRACE_S} s after the stop signal, in a task it could not leave; it resumes "
                "from its last checkpoint, if it wrote one")
    if code == -signal.SIGKILL:  # no word of its own: the kernel's OOM killer ends a process so
        return ("killed (SIGKILL), most likely by the kernel for want of host memory; run fewer side by side "
                "(a lower --jobs); it resumes from its last checkpoint, if it wrote one")
    with open(log_path, "rb") as f:
        f.seek(since)
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"


def run_worker(study_file: str, key: str, results: Path, runs: Path, device: str, log=print) -> int:
    """`harness study FILE --unit KEY`: one unit in this process, of the study as its pool read it
    (STUDY_ENV): a file edited while the pool runs would otherwise train the pool's later runs at
    another budget or config than its earlier ones, each reported as the study. SIGTERM checkpoints and stops."""
    pool_data = os.environ.get(STUDY_ENV)
    study = load_study(study_file, None if pool_data is None else json.loads(pool_data))
    drop_missing_tasks(study, lambda m: None)  # the parent has warned
    plan(study, log)
    path = rows_file(study, results)
    rows = read_rows(path, warn=log) if path.is_file() else []
    unit = next((u for u in units(study, rows)[0] if u.key == key), None)
    if unit is None:
        raise ConfigError(f"no run {key!r} in study {study.path} (or its learning rate is not chosen yet)")
    asked, parent = [], os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: asked.append(True))
    # stop as asked, or when the parent pool is gone (killed outright): no worker trains on alone
    status = _in_process(study, unit, results, runs, device, log, None, lambda: bool(asked) or os.getppid() != parent)
    return {"stopped": STOPPED_EXIT, "diverged": DIVERGED_EXIT}.get(status, 0)
