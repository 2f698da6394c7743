"""The result store: rows in one schema, written atomically as JSONL, one folder per run.

    results/<run>/rows.jsonl   one JSON object per line, the Row schema below
    results/<run>/run.json     command, configs, versions, commit, device, date (harness.results.provenance)

Rows are merged into a rows file under a lock on its folder, so that jobs writing into one run
folder at once (one per GPU) keep each other's rows. Reading tolerates damage: a corrupt line is
skipped with a warning, duplicates are counted once and conflicts reported.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from harness.files import atomic_write_text, folder_lock
from harness.results.provenance import BOOKKEEPING_KEYS, PROVENANCE_KEYS

ROW_FIELDS = ("run", "model", "preset", "params", "tokens_trained", "task", "metric", "value", "stderr",
              "n", "seed", "checkpoint", "commit", "device", "date", "command")
# The rows that time the device they ran on: those of the tasks registered with per_device=True
# (harness.registry; tasks/speed.py's `speed`, whose rows `harness bench models` writes too). Named
# here rather than asked of the registry, which knows its tasks only once every task module is
# imported (torch and the baselines with them): reading a rows file must not need that.
# tests/test_tables.py checks that the two agree.
SPEED_TASKS = ("speed_train", "speed_prefill", "speed_decode")
WEIGHTS_KEY = "weights"  # the row's extra key naming the weights it was scored on (ModelSource.weights_id)


def is_fraction(metric: str) -> bool:
    """Whether a metric is an accuracy (acc, acc_norm, ...): lm-eval's fraction in [0, 1], which
    the tables show in percent."""
    return metric.startswith("acc")


@dataclass
class Row:
    run: str
    model: str
    preset: str
    task: str
    metric: str
    value: float
    params: int | None = None
    tokens_trained: int | None = None
    stderr: float | None = None
    n: int | None = None
    seed: int | None = None
    checkpoint: str | None = None
    commit: str | None = None
    device: str | None = None
    date: str | None = None
    command: str | None = None
    extra: dict = field(default_factory=dict)  # task-specific keys (e.g. context length, task version)

    def to_dict(self) -> dict:
        data = {k: getattr(self, k) for k in ROW_FIELDS}
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Row":
        return cls(**{k: v for k, v in data.items() if k in _ROW_ATTRS},
                   extra={k: v for k, v in data.items() if k not in _ROW_ATTRS})


_ROW_ATTRS = frozenset(f.name for f in dataclasses.fields(Row)) - {"extra"}


def write_rows(path: Path, rows: Iterable[Row]) -> None:
    atomic_write_text(path, "".join(json.dumps(r.to_dict(), default=str) + "\n" for r in rows))


def replace_rows(path: Path, rows: Iterable[Row], replaced: Callable[[Row], bool], warn=print) -> list[Row]:
    """Write rows into the rows file at path in place of the stored rows that `replaced` selects,
    and return the file's new content. The file is read again under the folder's lock, so rows that
    another job wrote since this one started (two `harness run` on two GPUs into one run folder)
    are kept, where writing this job's start-time view would drop them."""
    path = Path(path)
    with folder_lock(path.parent):
        current = read_rows(path, warn=warn) if path.is_file() else []
        merged = [r for r in current if not replaced(r)] + list(rows)
        write_rows(path, merged)
    return merged


def read_rows(path: Path, warn=print, skipped_means: str = "") -> list[Row]:
    """Rows of a JSONL file; a corrupt or truncated line (bytes that are not UTF-8 included), or a row
    whose schema fields are missing, null, of the wrong type or out of range (`row_problem`), is
    skipped with a warning naming file, line and what is wrong: such a row would otherwise vanish
    from a table, split a line in two, win its column or fail much later in a sort or a format.
    skipped_means: what a skipped row means to the reader, and the way out, ending the warning."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            warn(f"warning: {path}:{n}: skipped a corrupt row ({err}){skipped_means}")
            continue
        problem = row_problem(data)
        if problem:
            warn(f"warning: {path}:{n}: skipped a corrupt row ({problem}){skipped_means}")
        else:
            rows.append(Row.from_dict(data))
    return rows


# What each schema field holds. A row must name what it measured (the text fields) and carry a value
# (a number, or null for a measurement that produced none); the others may be null or absent. A
# number is finite: JSON's NaN and Infinity parse, but no measurement is one (an infinity would win
# its column in a table, a NaN would drop out of an average unseen); an accuracy is a fraction.
_TEXT, _WHOLE, _NUMBER = "text", "a whole number", "a number"
_FIELD_KINDS = {"run": _TEXT, "model": _TEXT, "preset": _TEXT, "task": _TEXT, "metric": _TEXT, "value": _NUMBER,
                "params": _WHOLE, "tokens_trained": _WHOLE, "stderr": _NUMBER, "n": _WHOLE, "seed": _WHOLE,
                "checkpoint": _TEXT, "commit": _TEXT, "device": _TEXT, "date": _TEXT, "command": _TEXT}
_REQUIRED = ("run", "model", "preset", "task", "metric", "value")
_NULLABLE = frozenset(_FIELD_KINDS) - set(_REQUIRED) | {"value"}


def _holds(kind: str, value) -> bool:
    if kind == _TEXT:
        return isinstance(value, str)
    if isinstance(value, bool):  # JSON's true is not the number 1 here
        return False
    return isinstance(value, int) if kind == _WHOLE else isinstance(value, (int, float))


def row_problem(data) -> str | None:
    """What keeps `data` (a parsed JSON line or CSV row) from being a Row, in words, or None."""
    if not isinstance(data, dict):
        return f"JSON {json.dumps(data)[:40]}, not an object"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        return f"no {', '.join(missing)} field"
    for key, kind in _FIELD_KINDS.items():
        value = data.get(key)
        if value is None:
            if key not in _NULLABLE:
                return f"{key} is null"
        elif not _holds(kind, value):
            return f"{key} {value!r:.40} is not {kind}"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{key} {value!r} is not finite"
    if data["value"] is not None and is_fraction(data["metric"]) and not 0 <= data["value"] <= 1:
        return f"{data['metric']} {data['value']!r:.40} is not a fraction in [0, 1]"
    return None


# ---------------------------------------------------------------- loading runs and references

class ResultsError(ValueError):
    """A run folder or reference file cannot be found or read; the message names the fix."""


# Fields that describe how or when a row was measured, not what was measured: two rows that differ
# only in these are the same measurement (a duplicate, or a conflict when the values differ). What
# was measured stays in the identity: learning rate, length, depth, corpus source, limit, ... The
# digest of the weights scored (`weights`, harness.evaluation.loop) is provenance too: a rerun on
# retrained weights replaces a row, it does not add a second measurement. So is the device, except
# for the rows that time it (SPEED_TASKS, `measures_device`): a loss or an accuracy retrained or
# rescored on another GPU is the same measurement, a throughput on another GPU is another one.
_NOT_IDENTITY = {"value", "stderr", "n", "params", *PROVENANCE_KEYS}
_DESCRIPTIVE_EXTRAS = {"task_version", "version", "source", "table", "label", "published", "note", WEIGHTS_KEY,
                       *BOOKKEEPING_KEYS}
_IDENTITY_FIELDS = tuple(k for k in ROW_FIELDS if k not in _NOT_IDENTITY)


def measured_extras(row: Row) -> dict:
    """The row's extra keys that say what it measured (context length, depth, lr, ...), not how or
    when (versions, wall time, the source of a published number). A key set to None says what its
    absence says (`limit: null`, written by rows of every complete run until rows recorded a limit
    only where it cut the task), so it is left out."""
    return {k: v for k, v in row.extra.items() if k not in _DESCRIPTIVE_EXTRAS and v is not None}


def measures_device(row: Row) -> bool:
    """Whether the row times the device it ran on (SPEED_TASKS), which is then part of what it measured."""
    return row.task in SPEED_TASKS


def row_key(row: Row) -> tuple:
    """What a row measures: run, model, preset, task, metric, seed, checkpoint, tokens and extra keys,
    and the device of a row that times it."""
    core = tuple(getattr(row, k) for k in _IDENTITY_FIELDS) + ((row.device,) if measures_device(row) else ())
    extra = tuple(sorted((k, v if isinstance(v, (str, int, float, bool, type(None)))
                          else json.dumps(v, sort_keys=True, default=str))
                         for k, v in measured_extras(row).items()))
    return core + extra


def _same_value(a: Row, b: Row) -> bool:
    if a.value is None or b.value is None:
        return a.value is b.value
    return a.value == b.value or (a.value != a.value and b.value != b.value)  # NaN == NaN here


def dedupe_rows(rows: list[Row], warn=print) -> list[Row]:
    """One row per measurement. Identical repeats are dropped with a note; rows that measure the same
    thing with different values are reported with both values, and the one written last (latest
    `date`, then file order) is kept, as a rerun replaces what it reruns."""
    by_key: dict[tuple, list[Row]] = {}
    for r in rows:
        by_key.setdefault(row_key(r), []).append(r)
    kept = []
    for group in by_key.values():
        if len(group) > 1:
            latest = max(enumerate(group), key=lambda ir: (ir[1].date or "", ir[0]))[1]
            what = f"{group[0].run}/{group[0].model} {group[0].task}/{group[0].metric}"
            extra = measured_extras(group[0])
            what += f" {extra}" if extra else ""
            what += f" on {group[0].device}" if measures_device(group[0]) and group[0].device else ""
            if all(_same_value(r, group[0]) for r in group):
                warn(f"warning: {len(group)} identical rows for {what}; counted once")
            else:
                values = ", ".join(f"{r.value} ({r.date or 'no date'})" for r in group)
                warn(f"warning: conflicting rows for {what}: {values}; using {latest.value} "
                     f"(written last); delete the wrong row from the run's rows.jsonl")
            group = [latest]
        kept.append(group[0])
    return kept


@dataclass
class RunRecord:
    """A run folder: its rows and its run.json (command, config, versions, commit, device, date)."""
    name: str
    path: Path
    rows: list[Row]
    info: dict = field(default_factory=dict)


def run_location(spec: str | Path, results_dir: Path = Path("results")) -> tuple[Path, Path]:
    """(folder, rows file) of a run given by folder, rows file or name under `results_dir`."""
    path = Path(spec)
    if not path.exists() and (Path(results_dir) / str(spec)).exists():
        path = Path(results_dir) / str(spec)
    if path.is_dir():
        return path, path / "rows.jsonl"
    if path.is_file():
        return path.parent, path
    raise ResultsError(f"no run {spec!r}: neither a folder/file nor {Path(results_dir) / str(spec)}; "
                       f"list runs with `ls {results_dir}` or pass --results DIR")


def load_run(spec: str | Path, results_dir: Path = Path("results"), warn=print) -> RunRecord:
    """A run by folder, rows file or name under `results_dir` (its rows: `read_given_rows`)."""
    folder, rows_file = run_location(spec, results_dir)
    if not rows_file.is_file():
        raise ResultsError(f"{folder} has no rows.jsonl; run `harness run ... --run {folder.name}` first")
    info = {}
    if (folder / "run.json").is_file():
        try:
            info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            warn(f"warning: {folder / 'run.json'}: unreadable ({err}); its config is not used")
    return RunRecord(folder.name, folder, read_given_rows(rows_file, warn=warn), info)


def read_given_rows(path: Path, warn=print, flag: str = "",
                    fix: str = "name a run folder or the rows.jsonl that `harness run`, `harness eval` or "
                               "`harness bench models` wrote") -> list[Row]:
    """The rows of a file named as a rows file (`flag`: the option that named it, for the message).
    One none of whose lines is a row (a README, a CSV, a table named by mistake) is an error before
    any of its lines is reported, not a warning per line and then an empty table; a rows file with
    some damaged lines gives its other rows, each damaged line a warning."""
    problems: list[str] = []
    rows = read_rows(path, warn=problems.append)
    if problems and not rows:
        raise ResultsError(f"{flag}{path} is not a rows file: none of its lines is a result row (first: "
                           f"{problems[0].removeprefix('warning: ')}); {fix}")
    for problem in problems:
        warn(problem)
    return rows


def run_folders(results_dir: Path) -> list[Path]:
    """Every run folder (one with rows.jsonl) directly under `results_dir`."""
    return sorted(p.parent for p in Path(results_dir).glob("*/rows.jsonl"))


_INT_FIELDS = {"params", "tokens_trained", "n", "seed"}
_FLOAT_FIELDS = {"value", "stderr"}


def read_reference(path: Path, warn=print) -> list[Row]:
    """Published numbers from a CSV in the row schema (plus `source`, `table` and any extra columns).

    Empty cells are None. A line that is not a row (harness.results.store.row_problem: an empty model,
    task, metric or preset, say) or lacks its value or source is skipped with a warning naming file and line.
    """
    import csv
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"reference file {path} not found; see results/paper/README.md")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"run", "model", "preset", "task", "metric", "value", "source", "table"} - set(
            reader.fieldnames or ())
        if missing:
            raise ResultsError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; "
                               f"see results/paper/README.md for the layout")
        for line in reader:
            where = f"{path}:{reader.line_num}"
            try:
                data = {}
                for k, v in line.items():
                    if k is None:
                        raise ValueError("more cells than columns")
                    v = (v or "").strip()
                    if v == "":
                        data[k] = None
                    elif k in _INT_FIELDS:
                        data[k] = int(float(v))
                    elif k in _FLOAT_FIELDS:
                        data[k] = float(v)
                    else:
                        data[k] = v
                problem = row_problem(data) or next((f"empty {k}" for k in ("value", "source") if data.get(k) is None),
                                                    None)
                if problem:
                    raise ValueError(problem)
                rows.append(Row.from_dict(data))
            except (ValueError, TypeError) as err:
                warn(f"warning: {where}: skipped a corrupt reference row ({err})")
    return rows
