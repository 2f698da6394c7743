"""The result store: rows in one schema, written atomically as JSONL, one folder per run.

    results/<run>/rows.jsonl   one JSON object per line, the Row schema below
    results/<run>/run.json     command, configs, versions, commit, device, date

Files are replaced through a temporary file and os.replace, so an interrupted run leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

ROW_FIELDS = ("run", "model", "preset", "params", "tokens_trained", "task", "metric", "value", "stderr",
              "n", "seed", "checkpoint", "commit", "device", "date", "command")


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
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(path: Path, rows: Iterable[Row]) -> None:
    atomic_write_text(path, "".join(json.dumps(r.to_dict(), default=str) + "\n" for r in rows))


def append_rows(path: Path, rows: Iterable[Row]) -> None:
    """Add rows to a JSONL file atomically (the whole file is rewritten through a temporary)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + "".join(json.dumps(r.to_dict(), default=str) + "\n" for r in rows))


def read_rows(path: Path, warn=print) -> list[Row]:
    """Rows of a JSONL file; a corrupt or truncated line is skipped with a warning naming file and line."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or not {"model", "task", "metric", "value"} <= data.keys():
                raise ValueError("missing model/task/metric/value")
            rows.append(Row.from_dict(data))
        except (json.JSONDecodeError, ValueError, TypeError) as err:
            warn(f"warning: {path}:{n}: skipped a corrupt row ({err})")
    return rows


# ---------------------------------------------------------------- provenance

def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str = "cuda") -> str:
    """The GPU's name for a CUDA device, else a description of the CPU."""
    import torch
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def versions() -> dict[str, Any]:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "triton", "swat-harness", "lm_eval", "fla-core", "mamba-ssm", "flash-attn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(["harness", *sys.argv[1:]]) if Path(sys.argv[0]).name == "harness" else " ".join(sys.argv)


# ---------------------------------------------------------------- tables

def format_value(value: float | None, stderr: float | None = None, digits: int = 2) -> str:
    if value is None:
        return ""
    text = f"{value:.{digits}f}"
    return text + (f" ± {stderr:.{digits}f}" if stderr is not None else "")


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def rows_table(rows: list[Row]) -> str:
    """A plain long-form table of rows (model, task, metric, value ± stderr, n)."""
    body = [[r.model, r.preset, f"{r.params:,}" if r.params else "", r.task, r.metric,
             format_value(r.value, r.stderr, 4 if abs(r.value) < 10 else 2), r.n or ""] for r in rows]
    return markdown_table(["model", "preset", "params", "task", "metric", "value", "n"], body)
