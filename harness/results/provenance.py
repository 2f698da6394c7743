"""Provenance: what every stored result says about how it was made (commit, device, date, the
command as a user would retype it, package versions), and the record of the commands that wrote
into a results folder (`run.json`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Callable

from harness.files import atomic_write_text, folder_lock

PROVENANCE_KEYS = ("commit", "device", "date", "command")
PACKAGES = ("torch", "triton", "swat-harness", "lm_eval", "fla-core", "mamba-ssm", "flash-attn", "triton-sigmoid")
# Keys a row may carry beside PROVENANCE_KEYS on how its run went, not on what it measured: the
# evaluation's wall time, how many processes shared it, the package versions (`harness bench
# models` stamps torch and triton). Two rows that differ only in these are one measurement.
BOOKKEEPING_KEYS = ("eval_seconds", "world_size", "python", *PACKAGES)


def provenance(device: str = "cuda", command: str | None = None) -> dict:
    """The commit, device, date and command that every row and record of this process carries
    (`command`: when the process is not the `harness` command line, what to type to measure again)."""
    return {"commit": git_commit(), "device": device_name(device), "date": now(), "command": command or command_line()}


def stamped_row_writer(out: IO[str], device: str = "cuda", command: str | None = None,
                       echo: bool = False) -> Callable[[dict], None]:
    """A writer of measured rows into `out` as JSON lines, each stamped with this process's
    provenance and package versions (how to measure it again), flushed as it is written, so that a
    run cut short (a device call's time limit) keeps the rows it measured. With echo, each row
    (unstamped) is also printed, for a device call's console."""
    made = {**provenance(device, command), "versions": versions()}

    def write(row: dict) -> None:
        out.write(json.dumps({**row, **made}) + "\n")
        out.flush()
        if echo:
            print(json.dumps(row), flush=True)
    return write


def record_run(folder: Path, info: dict, device: str = "cuda", command: str | None = None) -> dict:
    """Write folder/run.json, the record of the commands that wrote into a results folder: `info`
    (what this command did: models, tasks, config, ...) with its provenance and package versions.
    Several commands fill one folder (jobs side by side, resumed runs, more models later), so it is
    merged, under the folder's lock, with the record already there: lists (models, tasks, ...) are
    united in order, other keys take this command's value (an earlier one's stays where this command
    has none), and every earlier command's provenance is listed under `earlier`."""
    path = Path(folder) / "run.json"
    record = {**info, **provenance(device, command), "versions": versions()}
    with folder_lock(path.parent):
        try:
            previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except json.JSONDecodeError:
            previous = {}  # a damaged record is replaced by this command's
        earlier = previous.pop("earlier", [])
        if previous:
            before = {k: previous.get(k) for k in PROVENANCE_KEYS}
            if any(before[k] != record[k] for k in ("command", "commit", "device")):  # not this command again
                earlier.append(before)
        for key, value in previous.items():
            if key not in record:
                record[key] = value
            elif isinstance(value, list) and isinstance(record[key], list):
                record[key] = _united(value, record[key])
        if earlier:
            record["earlier"] = earlier
        atomic_write_text(path, json.dumps(record, indent=1, default=str))
    return record


def _united(first: list, second: list) -> list:
    """The items of both lists in order, each once (`second` alone when its items are not hashable)."""
    try:
        return list(dict.fromkeys(first + second))
    except TypeError:
        return second


def git_commit(cwd: Path | None = None) -> str:
    """The HARNESS_COMMIT environment variable when set, else HEAD's short hash (+ "-dirty" with
    uncommitted changes), else the installed package's version (a wheel or sdist has no .git), else
    "unknown". The variable comes first because whoever sends a copy of the tree to another machine
    knows what it sent, and the copy's .git can be absent or stale (the device tool's copies
    reported the session's first HEAD for later commits' code)."""
    return os.environ.get("HARNESS_COMMIT") or _git_head(cwd) or _package_version()


def _package_version() -> str:
    import importlib.metadata as md
    try:
        return f"swat-harness=={md.version('swat-harness')}"
    except md.PackageNotFoundError:
        return "unknown"


def _git_head(cwd: Path | None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)  # stderr too: no "fatal: ..." line
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


def device_slug(name: str) -> str:
    """A folder name for a device: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def versions() -> dict[str, Any]:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """The command as a user would retype it: `harness ...` for the console script and for
    `python -m harness` (whose argv[0] is harness/__main__.py), else argv as given."""
    program = Path(sys.argv[0])
    if program.name == "harness" or program.parts[-2:] == ("harness", "__main__.py"):
        return " ".join(["harness", *sys.argv[1:]])
    return " ".join(sys.argv)
