"""The `harness` command line: list, run, train (rich output, one-line errors).

Every expected failure (unknown model, bad config, missing data, out of memory, NaN) is printed
as one line starting with `error:` that names the fix, with exit status 2; no traceback. Out of
memory while other processes held the GPU exits 75 (EX_TEMPFAIL: run it again once they finish).
Under torchrun every rank fails alike: rank 0 alone prints the line (and the one of an interruption).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.bench import KERNEL_BENCH_LENGTHS
from harness.terminal import print_table

# soft_wrap: each message stays one line wherever it goes (a terminal wraps it itself), so that a
# log file read back (the study pool quotes a worker's last message) or grepped holds whole messages
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


# ---------------------------------------------------------------- shared options

def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="tiny (CPU, seconds) | small (1 GPU) | 340m | 760m")
    p.add_argument("--config", help="YAML file with model: and train: sections overriding the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set model.window=256 (repeatable)")


def add_plugin_arg(p: argparse.ArgumentParser, command=None) -> None:
    """--plugin (repeatable), and the function that runs the command, when given."""
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a model or task plugin from a Python file (repeatable)")
    if command is not None:
        p.set_defaults(func=command)


def add_run_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """--run, also spelled --run-name: torchrun's own parser takes `--run` for its `--run-path` (an
    abbreviation it allows) even after the module name, so jobs under torchrun spell it in full."""
    p.add_argument("--run", "--run-name", dest="run",
                   help=help_text + "; under torchrun spell it --run-name (torchrun reads --run as its --run-path)")


def run_name(args, default: str) -> str:
    """--run, or `default` where it is not given: a name given is checked as a folder name, so that
    `--run ""` is refused as `--run .` is, not taken for the default."""
    from harness.config import folder_name
    return default if args.run is None else folder_name(args.run, "--run")


def say(message: str) -> None:
    """A progress or warning line as written: not wrapped at the terminal's width, no markup."""
    console.print(message, markup=False, highlight=False)


def split_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


class Parser(argparse.ArgumentParser):
    """argparse with the harness's convention for bad input: one `error:` line, exit status 2
    (argparse's own prints its usage block first, which buries what to change). An argument no
    parser knows is reported by the top one, so the (sub)command that was left it is noted, and the
    error points at that command's --help, which lists its options."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, "_help_for"):  # the innermost command parses first
            namespace._help_for = self.prog
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}", getattr(namespace, "_help_for", self.prog))
        return namespace

    def error(self, message: str, prog: str | None = None):
        from harness.training.distributed import is_main_process
        self.exit(2, f"error: {message} (see `{prog or self.prog} --help`)\n" if is_main_process() else None)


def int_from(lowest: int):
    """argparse type of an integer >= lowest: `--limit 0` would otherwise mean no limit at all, and a
    negative count fails deep inside lm-eval after training."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if value < lowest:
            kind = "a positive integer" if lowest == 1 else f"an integer >= {lowest}"
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}")
        return value
    return parse


def seconds(text: str) -> float:
    """argparse type of a duration: a negative one (or NaN) would end the command before it starts."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def folder(text: str) -> str:
    """argparse type of a folder to write into: refused at once where a file stands on its path (the
    command would fail only when it first writes there, after training or evaluating)."""
    from harness.files import file_in_the_way
    try:
        blocking = file_in_the_way(Path(text))
    except OSError as err:  # a path the system will not look up: a name too long, a loop of links
        raise argparse.ArgumentTypeError(path_problem(err)) from None
    if blocking == Path(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, where a folder is needed; give another path")
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{text} cannot be a folder: {blocking} is a file; give another path")
    return text


def name_list(text: str) -> str:
    """argparse type of comma-separated names: at least one (`--models ""` would run nothing, exit 0)."""
    if not split_names(text):
        raise argparse.ArgumentTypeError(f"names nothing ({text!r}); give one or more comma-separated names")
    return text


def device_arg(text: str) -> str:
    """argparse type of --device (see harness.evaluation.loop.device_problem)."""
    from harness.evaluation.loop import device_problem
    if problem := device_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def config_from(args):
    from harness.config import load_config
    return load_config(args.preset, args.config, args.overrides)


class StepProgress:
    """A rich progress bar per training run: step, loss, lr, and tokens/s as the mean since the run
    (re)started (one step's rate jumps with every checkpoint save); a resumed run says from where."""

    def __init__(self, label: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        self.label = label
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def __call__(self, info: dict) -> None:
        start = info.get("start_step", 0)
        if self.task is None:
            if start:
                console.print(f"{self.label}: resumed from its checkpoint at step {start:,} of {info['steps']:,}",
                              highlight=False)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=info["steps"], info="", completed=start)
        tok_s = info["tokens"] / info["step"] * (info["step"] - start) / max(info["seconds"], 1e-9)
        self.progress.update(self.task, completed=info["step"],
                             info=f"loss {info['loss']:.3f}  lr {info['lr']:.2e}  {tok_s:,.0f} tok/s")
        if info["step"] >= info["steps"]:
            self.close()
            # the held-out score comes next, silent and at 340m minutes long (eval_tokens, 1M at small)
            steps = f"{info['steps']:,} step{'s' if info['steps'] != 1 else ''}"
            console.print(f"{self.label}: {steps} done; scoring the held-out split", highlight=False)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


# ---------------------------------------------------------------- commands

def model_params(name: str, cfg) -> tuple[str, str | None]:
    """The model's parameter count at cfg, and why it is `?` when its build fails (a plugin's
    builder, a harness model that cannot be built at cfg: one model that cannot be built must not hide
    the others). A model whose layers come
    from an extra that is not installed cannot be built, not even on the meta device; when it has
    a `match` field its count is the reference model's by construction (within the matching
    tolerance), shown with `≈`."""
    from harness.config import ConfigError
    from harness.model.backbone import count_params
    from harness.model.build import build_model, params_of
    from harness.registry import RegistryError, get_model, reference_model
    spec = get_model(name)
    try:
        model = build_model(name, cfg, "meta")  # built without memory, even at 760m
    except ImportError:
        return (f"≈{params_of(reference_model(), cfg):,}" if spec.match else "?"), None
    except (RegistryError, ConfigError) as err:
        return "?", str(err)
    # a count model's size (its distinct n-grams) is known only once it is fitted
    return ("counts" if getattr(model, "fitted_by_counting", False) else f"{count_params(model):,}"), None


def cmd_list(args) -> None:
    """One line per model and per task (print_table); `--model NAME` gives everything about one model."""
    from harness.config import load_config
    from harness.model.build import check_extra
    from harness.registry import get_model, load_plugins, models, tasks
    load_plugins(args.plugin)
    cfg = load_config(args.preset, args.config, args.overrides).model
    check_extra(cfg)  # a key of model.extra that no model reads: one error, not a `?` for every model
    if args.model:
        spec = get_model(args.model)
        count, problem = model_params(spec.name, cfg)
        details = {"model": spec.name, "family": spec.family, f"params ({args.preset})": count,
                   "fast path here": spec.fast_path(), "needs": ", ".join(spec.requires) or "torch only",
                   "extra": spec.extra or "-", "runs on": "CUDA GPU only" if spec.gpu_only else "CPU and GPU",
                   "matched field": f"model.{spec.match}" if spec.match else "- (count as built)",
                   "built by": f"{spec.build.__qualname__} in {spec.origin}", "description": spec.description,
                   **({"problem": problem} if problem else {})}
        for key, value in details.items():
            console.print(f"{key + ':':<16}{value}", markup=False, highlight=False)
        return
    counted = {name: model_params(name, cfg) for name in sorted(models())}
    lines = [(name, spec.family, counted[name][0], spec.fast_path_short(), spec.description)
             for name, spec in sorted(models().items())]
    table = one_line_table(f"models (preset {args.preset}; details: harness list --model NAME)",
                           ("model", "family", "params", "fast path", "description"), lines)
    if any(line[2].startswith("≈") for line in lines):
        table.caption = "≈: its extra is not installed here; matched to the reference's count"
    print_table(table, console, droppable=("family",))
    for problem in dict.fromkeys(problem for _, problem in counted.values() if problem):  # each once
        say(f"?: {problem}")
    task_lines = [(name, ",".join(spec.group), spec.description) for name, spec in sorted(tasks().items())]
    print_table(one_line_table("tasks", ("task", "groups", "description"), task_lines), console,
                droppable=("groups",))


def one_line_table(title: str, header: tuple, lines: list[tuple]) -> Table:
    """A table of plain text (no markup), params right-aligned; print it with print_table."""
    table = Table(title=title)
    for col in header:
        table.add_column(col, justify="right" if col == "params" else "left")
    for line in lines:
        table.add_row(*map(escape, line))
    return table


def say_budget_note(cfg) -> None:
    """Say, before training, what budget a train.tokens between whole batches trains instead."""
    from harness.training.recipe import budget_note
    if note := budget_note(cfg.train):
        err_console.print(note, markup=False, highlight=False)


def cmd_run(args) -> None:
    from harness.evaluation.loop import run_models
    from harness.registry import expand_tasks, grouped_tasks, load_plugins
    from harness.training.distributed import is_main_process
    load_plugins(args.plugin)
    cfg = config_from(args)
    models = split_names(args.models)
    task_names = expand_tasks(split_names(args.tasks))
    run = run_name(args, args.preset)
    if is_main_process():
        say_budget_note(cfg)
    progress = {}

    def on_step(info):
        name = info.get("model", "")
        bar = progress.setdefault(name, StepProgress(f"train {name}".strip()))
        bar(info)

    t0, before = time.time(), rows_stamp(Path(args.results) / run)
    with stopped_at_a_checkpoint(lambda err: run_again(args.force, models, err.model)) as stops:
        try:
            rows = run_models(models, task_names, cfg, run, Path(args.results), Path(args.runs), args.device,
                              args.force, args.limit, log=say, on_step=on_step, skip_missing=args.skip_missing,
                              grouped=grouped_tasks(split_names(args.tasks)), stops=stops)
        finally:  # before the `interrupted:` line: a bar stopped after it would draw itself below it
            for bar in progress.values():
                bar.close()
    if not is_main_process():  # rank 0 of a torchrun job reports
        return
    show_tables([r for r in rows if r.model in models], {run: cfg.to_dict()})
    runs = Path(args.runs) / run
    say(f"{outcome(Path(args.results) / run, before)}; checkpoints in {runs}/<model>/checkpoint, loss plots in "
        f"{runs}/<model>/loss.png, training logs in {Path(args.results) / run}/train/ (<model>: {', '.join(models)}) "
        f"({time.time() - t0:.1f}s)")


def rows_stamp(out: Path) -> tuple | None:
    """What tells whether a command wrote out/rows.jsonl (its size and modification time; None: absent)."""
    try:
        stat = (out / "rows.jsonl").stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def outcome(out: Path, before: tuple | None) -> str:
    """What `harness run` and `harness eval` wrote into out: rows, or none where every task was done
    already (run.json and table.md are rewritten either way)."""
    if rows_stamp(out) == before:
        return (f"nothing new to score (every task was done already; --force redoes it): {out}/rows.jsonl unchanged, "
                f"run.json and table.md rewritten")
    return f"wrote {out}/rows.jsonl, run.json, table.md"


def show_tables(rows: list, configs: dict) -> None:
    """Print the tables these rows fill (`run_tables`, which table.md holds too)."""
    from harness.results.tables import run_tables
    console.print(run_tables(rows, configs), markup=False, highlight=False, end="")


def run_again(force: bool, models: list[str], stopped: str) -> str:
    """What goes on from `harness run`'s stop in the training of `stopped`: the same command, but
    without --force, which would train it from scratch again; the models after it, which the run
    without --force would reuse as they are, then take --force alone."""
    if not force:
        return "the same command again"
    rest = models[models.index(stopped) + 1:]
    then = f", then with --force and --models {','.join(rest)}" if rest else ""
    return f"the same command again without --force (it would train {stopped} from scratch){then}"


@contextlib.contextmanager
def stopped_at_a_checkpoint(again):
    """Signals held back while training asks (`stop_requests`, yielded): a stop asked for ends the
    command once its checkpoint is written, with one line saying where it stopped and what to run to
    resume (`again(err)`), and the exit status of the signal (128 + its number: 130 for Ctrl-C, 143
    for SIGTERM)."""
    from harness.training.distributed import is_main_process
    from harness.training.outcome import TrainingStopped, stop_requests
    try:
        with stop_requests() as stops:
            yield stops
    except TrainingStopped as err:
        if is_main_process():
            err_console.print(f"interrupted: {err}: run {again(err)}", markup=False, highlight=False)  # paths hold [ ]
        # under torchrun a rank may stop on rank 0's signal before its own has come: as if terminated
        raise SystemExit(128 + (stops.received[0] if stops.received else signal.SIGTERM)) from None


def train_until_asked(args, cfg, out: Path, bar):
    """`harness train`'s training, stopped at a checkpoint when asked (`stopped_at_a_checkpoint`)."""
    from harness.evaluation.loop import default_device
    from harness.training.train import train
    loggers = tuple(name for name, on in (("tensorboard", args.tensorboard), ("wandb", args.wandb)) if on)
    again = "the same command again" if args.resume else "the same command without --no-resume"
    with stopped_at_a_checkpoint(lambda err: again) as stops:
        try:
            with stops.training() as should_stop:
                return train(args.model, cfg, out, args.device or default_device(), on_step=bar,
                             resume=args.resume, parallel=args.parallel, loggers=loggers, log_every=args.log_every,
                             should_stop=should_stop)
        finally:
            if bar is not None:
                bar.close()


def cmd_train(args) -> None:
    from harness.registry import load_plugins
    from harness.training.distributed import is_main_process
    load_plugins(args.plugin)
    cfg = config_from(args)
    run = run_name(args, args.preset)  # checked even where --out leaves it unused
    out = Path(args.out or Path(args.runs) / run / args.model)
    main_rank = is_main_process()
    if main_rank:
        say_budget_note(cfg)
    bar = StepProgress(f"train {args.model}") if main_rank and not args.quiet else None
    result = train_until_asked(args, cfg, out, bar)
    if main_rank:
        speed = (f", {result.tokens_per_s:,.0f} tokens/s" if result.tokens_per_s else "") + \
            (f", MFU {result.mfu:.1%}" if result.mfu else "") + \
            (f" ({result.mfu_datasheet:.1%} of the datasheet peak)" if result.mfu_datasheet else "") + \
            (f", peak memory {result.peak_mem_gib:.1f} GiB" if result.peak_mem_gib else "")
        if result.reused:
            console.print(f"{args.model}: already trained in {out} (--no-resume trains it again)", highlight=False)
        # a model fitted by counting has counts for parameters, and no per-step log or loss curve
        counted = getattr(result.model, "fitted_by_counting", False)
        written = " (fitted by counting: no training log or loss.png)" if counted else f", log and loss.png in {out}"
        console.print(f"{args.model}: {result.params:,} {'counts' if counted else 'params'}, {result.tokens:,} tokens, "
                      f"train loss {result.train_loss:.4f}, held-out loss {result.heldout_loss:.4f}{speed}; "
                      f"checkpoint {result.checkpoint}{written}", highlight=False)


def cmd_study(args) -> None:
    """Run a study file (models x sizes x learning rates x seeds), resumable; then its report."""
    from harness.config import ConfigError
    from harness.evaluation.loop import default_device
    from harness.registry import load_plugins
    from harness.study.runner import report_only, run_study, run_worker
    from harness.study.spec import load_study
    if args.force and args.report_only:
        raise ConfigError("--force trains runs again and --report-only trains none: drop one of them")
    load_plugins(args.plugin)
    device = args.device or default_device()
    if args.unit:
        code = run_worker(args.study, args.unit, Path(args.results), Path(args.runs), device,
                          log=lambda m: console.print(m, highlight=False))
        if code:
            raise SystemExit(code)
        return
    study = load_study(args.study)
    if args.models:
        study.restrict(split_names(args.models))
    if args.sizes:
        study.restrict_sizes(split_names(args.sizes))
    out = Path(args.results) / study.name
    if args.report_only:
        written = report_only(study, Path(args.results), log=console.print)
        console.print(f"wrote {', '.join(p.name for p in written)} in {out}", highlight=False)
        return
    # each model to run checked here at the first size (gpu_only, a plugin's model contract): each run
    # checks its own, but only after the study has written its record
    from harness.model.build import checked_model
    first_size = next(s for s in study.sizes if study.only_sizes is None or s in study.only_sizes)
    first = study.config(first_size, 0).model
    for model in sorted(study.only or {*study.models, *study.references}):
        checked_model(model, first, device)
    bar = {}

    def on_step(info):  # one bar per run, in the order they train (on_step is rank 0's alone)
        if "current" not in bar or bar["current"].task is None:
            bar["current"] = StepProgress(f"train {info.get('model', '')}".strip())
        bar["current"](info)

    t0 = time.time()
    counts = run_study(study, Path(args.results), Path(args.runs), device, args.jobs, args.time_limit,
                       log=lambda m: console.print(m, highlight=False), on_step=on_step if args.jobs <= 1 else None,
                       progress=lambda done, total, _: console.print(f"study {study.name}: {done}/{total} runs done",
                                                                     highlight=False), plugins=tuple(args.plugin),
                       start_new_for=args.start_new_for, largest_first=args.largest_first, force=args.force)
    if "current" in bar:
        bar["current"].close()
    from harness.training.distributed import is_main_process
    if not is_main_process():  # rank 0 of a torchrun job reports
        return
    console.print(f"study {study.name}: {study_summary(counts, args.force)}; tables and plots in {out} "
                  f"({time.time() - t0:.0f}s)", highlight=False)
    if counts["failed"]:
        raise RunFailed(f"{counts['failed']} run(s) failed; their logs are in {Path(args.runs) / study.name / 'logs'}")


def study_summary(counts: dict, force: bool = False) -> str:
    """What `harness study` did (run_study's counts), and of the runs it did not start those done before
    it (a rerun of a finished study says so) and those --start-new-for held back; counts of none are left
    out, and where runs are left to do it says how to go on: without `force`, which would discard the runs
    trained again so far once more."""
    if counts["runs"] and counts["already"] == counts["runs"]:
        return f"all {counts['runs']} runs already done"
    done = f"{counts['done']} {'run' if counts['done'] == 1 else 'runs'} done"
    if counts["already"]:
        done += f" ({counts['already']} were done already)"
    parts = [done] + [text.format(counts[key]) for key, text in (
        ("diverged", "{} diverged (recorded, ruled out of the lr choice)"), ("stopped", "{} stopped (resumable)"),
        ("failed", "{} failed"), ("squeezed", "{} start(s) squeezed out of GPU memory"),
        ("not_started", "{} not started (--start-new-for)"), ("unreached", "{} not reached (--time-limit)"),
        ("waiting", "{} waiting for their learning rate")) if counts[key]]
    if counts["stopped"] or counts["not_started"] or counts["unreached"]:
        parts.append(f"{same_command(force)} to go on")
    return ", ".join(parts)


def same_command(force: bool) -> str:
    """How a cut command goes on: the same command again, without --force where it had it (that would
    discard or redo what was done so far once more)."""
    return f"run the same command {'without --force' if force else 'again'}"


def cmd_tables(args) -> None:
    """Print (or write) one of the paper's tables from stored rows; optionally draw the plots. The
    output paths are checked before anything is written or printed: a late refusal would leave
    a table written and no plots, or overwrite an input."""
    from harness.results.plots import TABLE_PLOTS, write_plots
    from harness.results.render import render
    from harness.results.tables import build, check_outputs, collect, inputs
    runs, reference_files = inputs(args.run, args.reference, args.results)
    check_outputs(args.out, args.plots, [rows_file for _, rows_file in runs] + reference_files)
    rows, refs, configs = collect(args.run, args.reference, args.results,
                                  warn=lambda m: err_console.print(m, markup=False, highlight=False))
    text = render(build(args.table, rows, refs, configs, None if args.run else Path(args.results)), args.format)
    if args.out:
        from harness.files import atomic_write_text
        atomic_write_text(Path(args.out), text)
        err_console.print(f"wrote {args.out}", highlight=False)
    else:
        sys.stdout.write(text)
    if args.plots:
        from harness.evaluation.sources import kept_logs
        written = write_plots(rows + refs, Path(args.plots), configs, kept_logs([f.parent for _, f in runs]),
                              table=args.table)
        none = (f"none: the rows hold nothing for the {args.table} table's plots ({TABLE_PLOTS[args.table]})"
                if args.table in TABLE_PLOTS else
                f"none: the {args.table} table has no plots (the {', '.join(TABLE_PLOTS)} tables do)")
        err_console.print(f"plots: {', '.join(str(p) for p in written) or none}", highlight=False)


def cmd_scaling(args) -> None:
    """Multi-GPU training runs against their one-GPU baseline: speed, memory, loss agreement. Under
    torchrun rank 0 alone compares (the runs are read, not trained: every rank would print and write
    the same)."""
    from harness.training.distributed import is_main_process
    from harness.training.scaling import write
    if not is_main_process():
        return
    text, _ = write([Path(f) for f in args.runs], Path(args.out) if args.out else None)
    sys.stdout.write(text)
    if args.out:
        err_console.print(f"wrote {args.out}/scaling.md, scaling.json, scaling.png", highlight=False)


def parse_lengths(items: list[str], sweeps: tuple) -> dict:
    """['train=2048,4096', 'decode=1024'] -> {'train': [2048, 4096], 'decode': [1024]}."""
    from harness.bench import parse_ints
    from harness.config import ConfigError
    out = {}
    for item in items:
        sweep, equals, values = (part.strip() for part in item.partition("="))
        if not equals or sweep not in sweeps:
            raise ConfigError(f"--lengths {item!r} must look like train=2048,4096 (sweeps: {', '.join(sweeps)})")
        out[sweep] = parse_ints(values, f"--lengths {sweep}")
    return out


def cmd_bench_models(args) -> None:
    """Training / prefill / decode throughput and memory sweeps of whole models."""
    import torch

    from harness.bench import models as bm
    from harness.bench import parse_ints
    from harness.config import ConfigError
    from harness.evaluation.loop import default_device
    from harness.files import atomic_write_text
    from harness.registry import get_model, load_plugins
    from harness.results.provenance import device_name, device_slug
    from harness.results.render import render
    from harness.results.tables import peer_ratio_table
    load_plugins(args.plugin)
    cfg = config_from(args)
    device = torch.device(args.device or default_device())
    names = split_names(args.models)
    for name in names:
        get_model(name)
    if args.peer is not None and args.peer not in names:
        raise ConfigError(f"--peer {args.peer} is not one of --models; add it there (e.g. --models "
                          f"{','.join(names)},{args.peer})")
    sweeps = split_names(args.sweeps)
    unknown = [s for s in sweeps if s not in bm.SWEEPS]
    if unknown:
        raise ConfigError(f"unknown sweep {unknown[0]!r}; choose from {', '.join(bm.SWEEPS)}")
    plan = bm.default_plan(device)
    lengths = {**plan.lengths, **parse_lengths(args.lengths, bm.SWEEPS)}
    # rows with recomputation go to a folder of their own: same keys, other measurement
    folder = args.preset + ("-activation-checkpointing" if cfg.train.activation_checkpointing else "")
    out = Path(args.out or Path(args.results) / "speed" / device_slug(device_name(str(device))) / folder)

    def show(point):
        shown = ", ".join(f"{k} {v:,.3g}" for k, v in point.metrics.items()) or point.status
        console.print(f"{point.model} {point.sweep} length {point.length:,} batch {point.batch}: {shown}",
                      highlight=False)

    rows = bm.run_bench(names, cfg, sweeps, lengths, device, out, args.train_tokens or plan.train_tokens,
                        parse_ints(args.decode_batches, "--decode-batches") if args.decode_batches
                        else plan.decode_batches, force=args.force, log=say,
                        on_point=show, profile=args.profile, documents=args.documents)
    console.print(f"wrote {out}/rows.jsonl, run.json, table.md and plots", highlight=False)
    if args.peer is not None:
        ratio = render(peer_ratio_table(rows, args.peer), "md")
        atomic_write_text(out / "ratio.md", ratio)
        console.print(ratio, highlight=False, markup=False)
        console.print(f"wrote {out}/ratio.md", highlight=False)


def cmd_bench_kernels(args) -> None:
    """The SWAT Triton kernel against flex_attention, fla, SDPA, triton-sigmoid: fwd, fwd+bwd, decode."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.bench import parse_ints
    from harness.bench.kernels import BenchSpec, parse_windows, render, run_kernel_bench
    if args.render_only:
        written = render(Path(args.render_only))
        console.print(f"wrote {args.render_only}: {', '.join(p.name for p in written)} from its kernels.csv",
                      highlight=False)
        return
    spec = BenchSpec(head_dims=parse_ints(args.head_dims, "--head-dims"), lengths=parse_ints(args.lengths, "--lengths"),
                     windows=parse_windows(args.windows), tokens=args.tokens, hidden=args.hidden,
                     peers=tuple(split_names(args.peers)), modes=tuple(split_names(args.modes)),
                     decode_contexts=tuple(parse_ints(args.decode_contexts, "--decode-contexts")),
                     decode_batches=tuple(parse_ints(args.decode_batches, "--decode-batches")))
    bar = Progress(TextColumn("[bold]bench kernels"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.description}"), TimeElapsedColumn(), console=console) if console.is_terminal else None
    with bar or contextlib.nullcontext():
        task = bar.add_task("", total=None) if bar else None

        def progress(i: int, n: int, what: str) -> None:  # a log file (a device call) gets a line per point
            if bar:
                bar.update(task, completed=i, total=n, description=what)
            else:
                console.print(f"bench kernels {i}/{n}: {what}", highlight=False)
        out = run_kernel_bench(spec, Path(args.out), force=args.force,
                               log=say, progress=progress)
    console.print((out / "kernels.md").read_text(encoding="utf-8"), markup=False, highlight=False)


def cmd_eval(args) -> None:
    """Evaluate trained checkpoints (or hf:<path> models) on tasks; rows go to RESULTS/RUN/rows.jsonl."""
    if args.online:  # before lm-eval (and datasets) are imported: they read the offline flags once
        os.environ["HARNESS_ONLINE"] = "1"
    from harness.evaluation.loop import default_device, score
    from harness.evaluation.sources import model_sources
    from harness.registry import expand_tasks, get_task, grouped_tasks, load_plugins
    from harness.training.distributed import is_main_process
    load_plugins(args.plugin)
    task_names = expand_tasks(split_names(args.tasks))
    run = run_name(args, "eval")
    sources = model_sources(run, Path(args.runs), split_names(args.models or ""), args.checkpoint, args.corpus)
    t0, before = time.time(), rows_stamp(Path(args.results) / run)
    rows = score(sources, task_names, run, Path(args.results), args.device or default_device(), args.limit,
                 args.force, args.online, args.skip_missing, args.bootstrap_iters, log=say,
                 grouped=grouped_tasks(split_names(args.tasks)))
    if not is_main_process():  # rank 0 of a data-parallel evaluation reports
        return
    names = {s.name for s in sources}
    row_tasks = {name for task in task_names for name in get_task(task).row_task_names}
    show_tables([r for r in rows if r.model in names and r.task in row_tasks], {})
    say(f"{outcome(Path(args.results) / run, before)} ({time.time() - t0:.1f}s)")


def cmd_export(args) -> None:
    """A checkpoint as a Hugging Face model folder (transformers, lm-eval --model hf; no harness needed)."""
    from harness.hf.export import export
    from harness.registry import load_plugins
    load_plugins(args.plugin)
    export(Path(args.checkpoint), Path(args.out), args.max_shard_size, args.push_to_hub, [Path(p) for p in args.rows],
           args.force, log=say)


def cmd_data(args) -> None:
    from harness.data.commands import run_command
    run_command(args, console)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="harness", description="Benchmark SWAT against linear recurrent "
                                     "and softmax baselines: train, evaluate, time, tabulate.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models (params per preset, fast-path status) and tasks")
    p.add_argument("--model", metavar="NAME", help="everything about one model instead")
    add_config_args(p)  # the config whose parameter counts are shown
    add_plugin_arg(p, cmd_list)

    p = sub.add_parser("run", help="train (or reuse) models, run tasks, write results/<run>/")
    p.add_argument("--models", required=True, type=name_list, help="comma-separated model names (see `harness list`)")
    p.add_argument("--tasks", default="smoke", type=name_list, help="comma-separated tasks or groups (see `harness list`)")
    add_run_arg(p, "run name (default: the preset); results go to RESULTS/RUN")
    p.add_argument("--results", type=folder, default="results", help="results folder (default: results)")
    p.add_argument("--runs", type=folder, default="runs", help="checkpoint folder (default: runs)")
    p.add_argument("--device", type=device_arg, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="retrain and rerun even what is finished")
    p.add_argument("--limit", type=int_from(1), help="examples (or sequences) per task, for quick checks")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop tasks whose data is not in the mirror instead of stopping (checked before training)")
    add_config_args(p)
    add_plugin_arg(p, cmd_run)

    p = sub.add_parser("train", help="train one model at a preset (resumes from its checkpoint); "
                       "several GPUs: torchrun --nproc-per-node N -m harness train ...")
    p.add_argument("--model", required=True, help="the model to train (see `harness list`)")
    p.add_argument("--out", type=folder, help="run folder (default: RUNS/RUN/MODEL)")
    add_run_arg(p, "run name (default: the preset)")
    p.add_argument("--runs", type=folder, default="runs",
                   help="checkpoint folder: the run folder is RUNS/RUN/MODEL unless --out names it (default: runs)")
    p.add_argument("--device", type=device_arg,
                   help="cpu | cuda | cuda:N (under torchrun: each rank's own GPU; default: cuda when available)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the run folder's checkpoint (default); --no-resume discards it, the log "
                   "and loss.png")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp",
                   help="under torchrun: replicate (ddp, default) or shard (fsdp: FSDP2 fully_shard per layer)")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard (needs tensorboard)")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs wandb)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the JSONL log is still written)")
    p.add_argument("--log-every", type=int_from(1), default=1, metavar="N",
                   help="log every N steps (default 1); the GPU runs ahead of the host between logged steps")
    add_config_args(p)
    add_plugin_arg(p, cmd_train)

    p = sub.add_parser("eval", help="evaluate checkpoints (or hf:<path> models) on tasks; rows to RESULTS/RUN/; "
                       "data-parallel over several GPUs: torchrun --nproc-per-node N -m harness eval ...")
    add_run_arg(p, "run name: checkpoints under RUNS/RUN/<model>/checkpoint, rows to RESULTS/RUN (default: eval)")
    p.add_argument("--models", type=name_list, help="comma-separated model names of the run, or hf:PATH for a Hugging Face "
                   "checkpoint folder (default: every checkpoint of the run)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="DIR",
                   help="a checkpoint folder written by `harness train` (repeatable)")
    p.add_argument("--tasks", default="commonsense,perplexity", type=name_list,
                   help="comma-separated tasks or groups: commonsense, perplexity, length, retrieval, all")
    p.add_argument("--limit", type=int_from(1), help="examples (windows, samples per cell) per task, for quick runs")
    p.add_argument("--device", type=device_arg, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--results", type=folder, default="results", help="results folder: rows to RESULTS/RUN (default: "
                   "results)")
    p.add_argument("--runs", type=folder, default="runs", help="checkpoint folder the run's checkpoints are read from "
                   "(default: runs)")
    p.add_argument("--force", action="store_true", help="rerun (model, task) pairs that already have rows")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip tasks whose data is not in the mirror (default: stop before any model work)")
    p.add_argument("--online", action="store_true",
                   help="lm-eval tasks whose data is not mirrored load it from the Hugging Face hub")
    p.add_argument("--bootstrap-iters", type=int_from(0), default=1000, help="bootstrap resamples for stderr")
    p.add_argument("--corpus", help="held-out corpus of the hf: models (smoke), e.g. the one they were trained on "
                   "(default: the training run's, which `harness export` records; else english-mix); a "
                   "checkpoint scores on its own training corpus")
    add_plugin_arg(p, cmd_eval)

    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face model folder that transformers and "
                       "`lm_eval --model hf` load without the harness (attention models)")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a checkpoint folder written by `harness train`")
    p.add_argument("--out", type=folder, required=True, metavar="HF_DIR", help="the folder to write")
    p.add_argument("--max-shard-size", default="2GB", metavar="SIZE",
                   help="largest weights file, e.g. 500MB; larger models are sharded (default 2GB)")
    p.add_argument("--rows", action="append", default=[], metavar="ROWS.jsonl",
                   help="evaluation rows for the model card (default: results/<run>/rows.jsonl, if there)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload the folder to this Hugging Face hub repo")
    p.add_argument("--force", action="store_true", help="replace HF_DIR when it exists and is not empty")
    add_plugin_arg(p, cmd_export)

    p = sub.add_parser("tables", help="the paper's tables from stored rows (md, LaTeX, CSV), with reference "
                       "rows and plots")
    p.add_argument("--run", action="append", default=[], metavar="RUN",
                   help="run name under --results (e.g. speed/nvidia-h100-80gb-hbm3/340m), run folder or rows file "
                   "(repeatable; default: every run folder directly under --results, RESULTS/*/rows.jsonl; nested "
                   "ones only when named)")
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="published numbers: a CSV, a file name in RESULTS/paper (else the harness's own "
                        "results/paper), or `all` (repeatable)")
    p.add_argument("--table", default="main", choices=["main", "ablation", "length", "retrieval", "speed"],
                   help="which of the paper's layouts (default: main)")
    p.add_argument("--format", default="md", choices=["md", "latex", "csv"], help="output format (default: md)")
    p.add_argument("--results", type=folder, default="results", help="results folder (default: results)")
    p.add_argument("--out", help="write the table to this file instead of printing it")
    p.add_argument("--plots", metavar="DIR", help="also write the plots (PNG + CSV) into DIR")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("study", help="a study file: models x sizes x learning rates x seeds at budgets in tokens "
                       "per parameter, resumable, several runs side by side (--jobs); tables, fits and plots")
    p.add_argument("study", metavar="STUDY.yaml", help="the study file (see results/scaling/study.yaml)")
    p.add_argument("--jobs", type=int_from(1), default=1,
                   help="runs side by side in worker processes, round-robin over the visible GPUs (default 1)")
    p.add_argument("--time-limit", type=seconds, metavar="SECONDS",
                   help="start no run after this long; running ones checkpoint and stop (resume: run again)")
    p.add_argument("--results", type=folder, default="results", help="results folder (default: results)")
    p.add_argument("--runs", type=folder, default="runs", help="checkpoint folder (default: runs)")
    p.add_argument("--device", type=device_arg, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--models", type=name_list,
                   help="run only these of the study's models (comma-separated); the report covers all")
    p.add_argument("--sizes", type=name_list, help="run only these of the study's sizes (comma-separated), e.g. on "
                   "a machine that goes away before the largest one's trainings could finish; the report covers all")
    p.add_argument("--report-only", action="store_true", help="only rewrite the tables and plots from the rows")
    p.add_argument("--start-new-for", type=seconds, metavar="SECONDS", help="for a machine's last call: start "
                   "trainings only in the first SECONDS, and with --time-limit only those that the study's finished "
                   "runs of their size say can finish in the time left; after that only runs with a checkpoint "
                   "under RUNS (cut ones resume, trained ones score their tasks left) (0: none)")
    p.add_argument("--largest-first", action="store_true", help="start the largest size's runs first (the "
                   "longest trainings: on a machine that goes away, they start early enough to finish); by default "
                   "size by size from the smallest")
    p.add_argument("--force", action="store_true", help="train and score again, from scratch, every run of the "
                   "models and sizes this call runs (all, or those of --models and --sizes): before any training it "
                   "DELETES their rows from RESULTS/<name>/rows.jsonl (every task, and the kept first held-out losses "
                   "the learning-rate choice used) and their checkpoints under RUNS/<name>; other runs are kept. "
                   "Interrupted or stopped, go on with the same command WITHOUT --force (cut trainings resume): "
                   "with it, the runs trained again so far would be discarded again")
    p.add_argument("--unit", help=argparse.SUPPRESS)  # one run, in a worker process of --jobs
    add_plugin_arg(p, cmd_study)

    p = sub.add_parser("scaling", help="compare finished `harness train` runs of one recipe on 1 GPU and under "
                       "torchrun (DDP, FSDP2): scaling efficiency, memory per rank, loss agreement step by step")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="`harness train` output folders; each model's baseline is its run on the fewest GPUs")
    p.add_argument("--out", type=folder, metavar="DIR",
                   help="also write scaling.md, scaling.json and scaling.png into DIR")
    p.set_defaults(func=cmd_scaling)

    p = sub.add_parser("bench", help="speed and memory benchmarks (models; kernels)")
    bench = p.add_subparsers(dest="bench_command", required=True)
    b = bench.add_parser("models", help="training / prefill / decode tokens/s and memory vs length, per model")
    b.add_argument("--models", required=True, type=name_list,
                   help="comma-separated model names, measured side by side (see `harness list`)")
    b.add_argument("--sweeps", default="train,prefill,decode", type=name_list,
                   help="comma-separated: train, prefill, decode")
    b.add_argument("--lengths", action="append", default=[], metavar="SWEEP=L1,L2",
                   help="lengths of one sweep, e.g. train=2048,4096 (repeatable; defaults: 2K-64K train, "
                   "1K-128K prefill and decode on GPU, short lengths on CPU)")
    b.add_argument("--train-tokens", type=int_from(1),
                   help="tokens per training batch at every length (default 32768; 512 on a CPU)")
    b.add_argument("--documents", type=int_from(1), metavar="TOKENS",
                   help="pack documents of TOKENS tokens into each training sequence, attended apart as `harness "
                        "train` attends the corpus's packed documents (default: one document per sequence)")
    b.add_argument("--decode-batches", help="comma-separated decode batch sizes (default 1,64; 1,4 on a CPU)")
    b.add_argument("--device", type=device_arg, help="cpu | cuda | cuda:N (default: cuda when available)")
    b.add_argument("--results", type=folder, default="results", help="results folder (default: results)")
    b.add_argument("--out", type=folder, help="output folder (default: RESULTS/speed/<device>/<preset>, "
                   "<preset>-activation-checkpointing with --set train.activation_checkpointing=true)")
    b.add_argument("--force", action="store_true", help="measure again models already in the output folder")
    b.add_argument("--peer", metavar="MODEL", help="one of --models (e.g. llama_hf, Hugging Face's Llama): "
                   "also write ratio.md, every model's tokens/s over the peer's at each point")
    b.add_argument("--profile", action="store_true", help="also profile each training step: OUT/profiles/"
                   "<model>-train-<length>.md, the top kernels by time")
    b.add_argument("--preset", default="340m", help="model sizes (default 340m, the paper's scale)")
    b.add_argument("--config", help="YAML file with model: and train: sections overriding the preset")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.compile=off (repeatable)")
    add_plugin_arg(b, cmd_bench_models)

    b = bench.add_parser("kernels", help="SWAT attention kernel vs flex_attention, fla, SDPA, triton-sigmoid "
                         "(fwd, fwd+bwd, decode; ratio to the fastest peer)")
    b.add_argument("--head-dims", default="64,128", help="comma-separated head sizes (default 64,128)")
    lengths = ",".join(map(str, KERNEL_BENCH_LENGTHS))
    b.add_argument("--lengths", default=lengths, help=f"sequence lengths T (default {lengths})")
    b.add_argument("--windows", default="128,512,2048,T", help="windows W; T means full causal (default 128,512,2048,T)")
    b.add_argument("--tokens", type=int_from(1), default=65536, help="B*T tokens per batch (default 65536)")
    b.add_argument("--hidden", type=int_from(1), default=1024, help="H*d: heads = hidden / d (default 1024)")
    b.add_argument("--peers", default="swat,flex,fla,flash_attn,sdpa,triton_sigmoid", type=name_list,
                   help="comma-separated peers")
    b.add_argument("--modes", default="fwd,fwd_bwd,decode", type=name_list,
                   help="comma-separated: fwd, fwd_bwd, decode")
    b.add_argument("--decode-contexts", default="1024,8192,32768,131072", help="decode context lengths")
    b.add_argument("--decode-batches", default="8", help="comma-separated sequences per decode step (default 8)")
    b.add_argument("--out", type=folder, default="results/kernels", help="output root; files go to OUT/<device>/")
    b.add_argument("--force", action="store_true", help="measure again what OUT/<device>/kernels.csv holds")
    b.add_argument("--render-only", metavar="DIR", help="only rewrite DIR/kernels.md and plots from DIR/kernels.csv")
    b.set_defaults(func=cmd_bench_kernels)

    p = sub.add_parser("data", help="the local data mirror: evaluation sets, tokenizers, corpora "
                       "(list|fetch|verify|import|train-tokenizer)")
    dsub = p.add_subparsers(dest="data_command", required=True)
    add_plugin_arg(dsub.add_parser("list", help="what the tasks need (a plugin's tasks too: --plugin), where it is "
                                   "looked for, present or missing, counts, sha256"))
    dsub.add_parser("verify", help="check counts against the official sizes and sha256 against the MANIFEST.json "
                    "beside each file (data/MANIFEST.json for copies of data/); lists every problem")
    d = dsub.add_parser("fetch", help="fill the mirror from the Hugging Face hub (needs network and `datasets`)")
    d.add_argument("names", nargs="+", help="datasets (see `harness data list`) or hub corpora (slimpajama, fineweb, fineweb-edu)")
    d.add_argument("--documents", type=int_from(1), help="for a corpus: how many documents to stream")
    d.add_argument("--to", help="mirror folder to write (default: $HARNESS_DATA or ~/.cache/swat-harness/data)")
    d.add_argument("--force", action="store_true", help="store a split whose size is not the official one, and "
                   "replace a different one already stored")
    d = dsub.add_parser("import", help="add a dataset from local files (JSON/JSONL/parquet/txt, or a folder of "
                        "known raw releases such as ../shared/data), converted to the hub schema")
    d.add_argument("path", help="a JSON, JSONL, parquet or txt file, or a folder of known raw releases")
    d.add_argument("--name", help="dataset name, needed for a single file")
    d.add_argument("--split", help="split, needed when the dataset has several")
    d.add_argument("--to", help="mirror folder to write (default: $HARNESS_DATA or ~/.cache/swat-harness/data)")
    d.add_argument("--force", action="store_true", help="store a split whose size is not the official one, and "
                   "replace a different split or tokenizer already stored")
    d = dsub.add_parser("train-tokenizer", help="train a byte-level BPE on a corpus's training split (the "
                        "held-out documents excluded) and store it in the mirror")
    d.add_argument("--corpus", default="english-mix", help="corpus name or path (default english-mix)")
    d.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size, 512 to 1048576 (default 8192)")
    d.add_argument("--name", required=True, help="tokenizer name: use it as train.tokenizer=NAME")
    d.add_argument("--to", help="mirror folder to write (default: $HARNESS_DATA or ~/.cache/swat-harness/data)")
    d.add_argument("--force", action="store_true", help="replace a tokenizer already stored under --name")
    p.set_defaults(func=cmd_data)
    return parser


class RunFailed(RuntimeError):
    """Some of a command's runs failed (the others finished); the message says where their logs are."""


# What the operating system says of a path given on the command line (--out, --results, --runs, ...)
# that runs into a file where a folder is needed, or the reverse: the path, and that it is the fix.
# Any other refusal of a path (a folder that cannot be made there, as under /proc; a name too long)
# is said in the system's words, with the same fix.
PATH_ERRORS = {NotADirectoryError: "a file stands where this path needs a folder",
               FileExistsError: "a file stands where this path needs a folder",  # mkdir over a file
               IsADirectoryError: "a folder stands where this path needs a file",
               PermissionError: "not allowed to write or read it here"}


# The options that choose where a command writes (each spelled --DEST), for the fix of a path error.
PATH_OPTIONS = ("out", "results", "runs", "plots", "to")


def path_problem(err: OSError, args=None) -> str:
    """An OSError about one path (its `filename`) as the path, what is wrong with it, and the fix: the
    option of `args` that chose the path, where one did. A file in the way of a folder is named itself
    (runs/tiny, not the runs/tiny/swat made under it); a file that a refused write was to make (a
    read-only or not-writable folder) is named by its folder: the file is often the atomic writer's
    .NAME.xxxx.tmp, no name the user knows. A full disk (ENOSPC) is no fault of the path: the fix is
    space, and a write to an open file that ran out of it names no path at all."""
    import errno

    from harness.files import file_in_the_way
    path = err.filename
    if isinstance(err, (NotADirectoryError, FileExistsError)) and path:
        path = file_in_the_way(Path(path)) or path
    elif (err.errno == errno.EROFS or isinstance(err, PermissionError)) and path and not os.path.lexists(path):
        path = Path(path).parent
    options = " or ".join(path_options(args, path)) if path and args is not None else ""
    with_option = f" with {options}" if options else ""
    if err.errno == errno.ENOSPC:
        where = f"{path}: no space left on its disk" if path else "no space left on the disk written to"
        return f"{where}; free space there or give another folder{with_option}"
    why = next((why for kind, why in PATH_ERRORS.items() if isinstance(err, kind)), None)
    return f"{path}: {why or (err.strerror or 'unusable').lower()}; give another path{with_option}"


def path_options(args, path) -> list[str]:
    """The options of `args` (PATH_OPTIONS) that chose `path`: the one whose path holds it (the
    innermost, where one such path holds another), else those naming a file or folder to be made
    in it (tables --out FILE in a read-only folder; --results and --runs in a read-only working
    folder)."""
    where = Path(os.path.abspath(path))
    chosen = {f"--{dest}": Path(os.path.abspath(value)) for dest in PATH_OPTIONS
              if isinstance(value := getattr(args, dest, None), str)}
    holding = [(len(p.parts), option) for option, p in chosen.items() if p == where or p in where.parents]
    if holding:
        return [max(holding)[1]]
    return [option for option, p in chosen.items() if p.parent == where]


def expected_errors() -> tuple:
    from harness.config import ConfigError
    from harness.data.paths import DataError
    from harness.evaluation.sources import RunError
    from harness.hf.export import ExportError
    from harness.memory import OutOfMemory
    from harness.registry import RegistryError
    from harness.results.store import ResultsError
    from harness.training.outcome import TrainingError
    return (ConfigError, DataError, RegistryError, RunError, TrainingError, ResultsError, ExportError,
            OutOfMemory, FileNotFoundError, RunFailed)


def failure(err: Exception, args, program: str) -> int:
    """An expected failure (or the system's refusal of a path) said as one `error:` line (rank 0's,
    under torchrun), and the exit status; any other exception is raised again: a bug, whose
    traceback is wanted. program: the command, as the out-of-memory line names it."""
    import errno

    from harness.memory import SQUEEZED_EXIT, OutOfMemory, is_out_of_memory, out_of_memory
    from harness.training.distributed import is_main_process
    if isinstance(err, OSError) and (err.filename is not None or err.errno == errno.ENOSPC):  # the system's refusal
        from harness.config import ConfigError
        err = ConfigError(path_problem(err, args))
    if not isinstance(err, expected_errors()):
        if not is_out_of_memory(err):
            raise err
        # raised outside training (evaluation, a model too large for the host to build)
        from harness.evaluation.loop import default_device
        err = out_of_memory(program, getattr(args, "device", None) or default_device())
    if is_main_process():  # under torchrun every rank fails alike; one line says why
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
    return SQUEEZED_EXIT if isinstance(err, OutOfMemory) and err.squeezed else 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    owner = os.getpid()

    def stop_requested(signum, frame):
        if os.getpid() != owner:  # a forked child (a library's process pool) ends as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt
    # SIGTERM (a scheduler's or `kill`'s stop request) ends a command as Ctrl-C does: cleanly, with
    # its workers stopped and a line saying so, not silently mid-write
    terminate = signal.signal(signal.SIGTERM, stop_requested)
    try:
        args.func(args)
    except KeyboardInterrupt:
        from harness.training.distributed import is_main_process
        if is_main_process():  # under torchrun every rank stops; one line says so
            err_console.print(f"interrupted: the rows and checkpoints written so far are kept; "
                              f"{same_command(getattr(args, 'force', False))} to go on from the last of them")
        return 130
    except Exception as err:
        return failure(err, args, f"harness {args.command}")
    finally:
        signal.signal(signal.SIGTERM, terminate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
