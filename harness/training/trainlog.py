"""What a training run records in its folder: a JSONL line per step, optional TensorBoard / W&B
mirrors of it, and the loss curve as a PNG.

    <run>/train_log.jsonl   {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                             "peak_mem_gib", "seconds"} per optimizer step
    <run>/loss.png          training loss against tokens (and the held-out loss at the end)

The JSONL log is appended line by line (flushed), so an interruption loses at most the line being
written; a resumed run first cuts the log back to the checkpoint's step (and drops the headers of
segments that began after it) so that the file always describes the run that the checkpoint
continues; a run started afresh or with --no-resume keeps nothing of an earlier one. Written by
rank 0 only.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from harness.config import ConfigError
from harness.files import atomic_write_text

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss.png"
SINKS = ("tensorboard", "wandb")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_lines(path: Path) -> list[dict]:
    """Every JSON object of a log (gzipped where it ends in .gz, as a study keeps it), step records
    and run headers; a torn line (an interrupted write) is dropped, and so is a step record whose
    step or loss is not a number (a damaged one)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", errors="replace")
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and ("step" not in record or _is_number(record["step"])
                                         and _is_number(record.get("loss", 0))):
            records.append(record)
    return records


def read_log(path: Path) -> list[dict]:
    """The per-step records of a JSONL log (run headers left out)."""
    return [r for r in _read_lines(path) if "step" in r]


def read_headers(path: Path) -> list[dict]:
    """The run headers of a JSONL log: one per segment (the first start and each resumption)."""
    return [r for r in _read_lines(path) if "step" not in r]


def _kept(record: dict, start_step: int) -> bool:
    """Whether a log line still describes a run (re)started at start_step: a step record up to it,
    a header of a segment that began before it (a later segment's steps are all cut, so its header
    would describe none; a fresh start keeps no header at all)."""
    if "step" in record:
        return record["step"] <= start_step
    began = record.get("start_step", 0)
    return not _is_number(began) or began < start_step


class TrainLog:
    """The per-step log of one run (rank 0), with the optional sinks asked for."""

    def __init__(self, run_dir: Path, start_step: int, sinks: tuple[str, ...] = (), config: dict | None = None,
                 name: str = "train", header: dict | None = None):
        """`header` (command, commit, device, date) is written as a record of its own before the steps
        of this (possibly resumed) segment, so that the log says how each part of it was produced."""
        self.path = Path(run_dir) / LOG_FILE
        kept = [r for r in _read_lines(self.path) if _kept(r, start_step)]
        if header is not None:
            kept.append({**header, "start_step": start_step})
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")
        self._sinks = [_open_sink(s, Path(run_dir), config or {}, name) for s in sinks]

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for sink in self._sinks:
            sink(record)

    def close(self) -> None:
        self._file.close()
        for sink in self._sinks:
            getattr(sink, "close", lambda: None)()


def _sink_package(kind: str):
    """What a sink writes through: TensorBoard's SummaryWriter or the wandb module; a ConfigError that
    names the install when its package is missing, or the choices when the kind is unknown."""
    if kind == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter
    if kind == "wandb":
        try:
            import wandb
        except ImportError:
            raise ConfigError("W&B logging needs the wandb package: pip install wandb") from None
        return wandb
    raise ConfigError(f"unknown logger {kind!r}; choose from {', '.join(SINKS)}")


def check_sinks(sinks: tuple[str, ...]) -> None:
    """Refuse a sink that cannot be opened before a run writes anything: the log is opened (its
    header written) after the run folder and checkpoint are set up, too late for a refusal."""
    for kind in sinks:
        _sink_package(kind)


def _open_sink(kind: str, run_dir: Path, config: dict, name: str):
    """A callable record -> None that mirrors the log into TensorBoard or W&B."""
    scalars = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_gib")
    package = _sink_package(kind)
    if kind == "tensorboard":
        writer = package(str(run_dir / "tensorboard"))

        def write(record):
            for key in scalars:
                if record.get(key) is not None:
                    writer.add_scalar(f"train/{key}", record[key], record["step"])
        write.close = writer.close
        return write
    wrun = package.init(project=os.environ.get("WANDB_PROJECT", "swat-harness"), name=name, dir=str(run_dir),
                        config=config, resume="allow")

    def write(record):
        wrun.log({f"train/{k}": record[k] for k in scalars if record.get(k) is not None}, step=record["step"])
    write.close = wrun.finish
    return write


def plot_loss(run_dir: Path, title: str, heldout: float | None = None) -> Path | None:
    """Training loss (raw and smoothed) against tokens from the run's log into <run>/loss.png."""
    from harness.results.plots import pyplot, save_figure, trailing_mean
    records = read_log(Path(run_dir) / LOG_FILE)
    if not records:
        return None
    plt = pyplot()
    tokens = [r["tokens"] for r in records]
    loss = [r["loss"] for r in records]
    span = max(1, len(loss) // 50)
    smooth = trailing_mean(loss, span)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if span > 1:
        ax.plot(tokens, loss, color="0.75", linewidth=0.8, label="train loss")
        ax.plot(tokens, smooth, color="C0", linewidth=1.6, label=f"train loss (mean of {span} steps)")
    else:
        ax.plot(tokens, loss, color="C0", linewidth=1.2, label="train loss")
    if heldout is not None:
        ax.scatter([tokens[-1]], [heldout], color="C3", zorder=3, label=f"held-out loss {heldout:.3f}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(run_dir) / PLOT_FILE
    save_figure(fig, path)
    plt.close(fig)
    return path
