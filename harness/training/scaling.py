"""Multi-GPU scaling of training: runs of one model at one global batch, on one GPU and under
torchrun (DDP, FSDP2), compared step by step.

    harness scaling runs/d/swat-1gpu runs/d/swat-ddp runs/d/swat-fsdp --out results/distributed

Each argument is a run folder as `harness train` leaves it (train_log.jsonl, checkpoint/meta.json;
the weights are not read), named by its folder (with as many parent folders as tell it from the
other runs'), in the order given. Each model's baseline is its run on the fewest GPUs (the first
given of those), wherever it comes; a line under the table names it where it is not the model's
first row or ran on more than one GPU. Per run: world size, parallel mode ("-" for one plain
process; FSDP2 runs on a group even alone), tokens/s of all ranks together, scaling efficiency
(tokens/s per GPU / the baseline's tokens/s per GPU: 100% is perfect linear scaling from the
baseline's world size), MFU per GPU, peak memory on each rank, final train and held-out loss, how
closely the loss curve follows the baseline's (the largest |difference| over the logged steps, and
the first step where it exceeds `DIVERGED`), and the steps trained.
Runs of one model must share the recipe (global batch, length, tokens, seed, model config), or
the comparison would say nothing, and run each rank's share of a step alike (the device, the
sequences per forward, compile, activation checkpointing, fused cross-entropy), or the speed and
memory compared would be those settings'; a mismatch is an error naming the key and both values.
An efficiency above 100% is marked: the baseline ran slower per process than the run (other thread
counts, a busy machine), so the figure overstates the scaling. Runs on a CPU (the device their logs
name) are marked too: their ranks are processes sharing its cores (a table of CPU runs alone calls
them so), and their speed is no result.
A run resumed at another world size or on another device is refused (its speed and memory are its
last segment's alone), and so is a model fitted by counting (no training curve or speed), a
meta.json whose world size, speed or memory is not a number, and a log that is not whole: one that
stops short of its checkpoint's step (cut), holds damaged lines (a loss that is not finite, a step
logged twice), or lacks a step that its headers' cadence says was logged. The "steps compared"
column counts the logged steps a run shares with its baseline (fewer than it trained where either
logged every few steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.config import EXECUTION_KEYS, ConfigError
from harness.files import atomic_write_text
from harness.training.checkpoint import is_finite_number, read_meta
from harness.training.counting import is_counted
from harness.training.outcome import CheckpointDamaged
from harness.training.trainlog import LOG_FILE, read_headers, read_log

DIVERGED = 1e-3  # |loss difference| (nats) taken as the curves parting; bf16 noise stays far below it


@dataclass
class ScalingRun:
    name: str
    model: str
    world_size: int
    parallel: str
    config: dict
    trained_steps: int
    steps: list[int]  # the logged steps (every --log-every), with their losses
    losses: list[float]
    tokens_per_s: float | None
    mfu: float | None
    peak_mem_gib: list[float]  # per rank (rank 0's alone for runs written before ranks were gathered)
    train_loss: float
    heldout_loss: float
    device: str | None = None  # as the log's headers name it (None in logs written before they did)
    applied: dict | None = None  # what train.compile and train.fused_ce resolved to (meta.json's `applied`)


def read_run(folder: Path, name: str | None = None) -> ScalingRun:
    """The run in `folder`, called `name` (default: the folder's name)."""
    folder = Path(folder)
    meta_file, log_file = folder / "checkpoint" / "meta.json", folder / LOG_FILE
    if meta_file.is_file() and is_counted(meta := read_meta(meta_file.parent)):
        raise ConfigError(f"{folder} holds {meta['model']}, a model fitted by counting: it has no training curve or "
                          f"speed to compare; pass runs of models trained by gradients")
    if not meta_file.is_file() or not log_file.is_file():
        raise FileNotFoundError(f"{folder} is not a finished `harness train` run folder (needs {LOG_FILE} and "
                                f"checkpoint/meta.json); pass the --out folder of a training run")
    if meta.get("heldout_loss") is None:
        raise ConfigError(f"{folder} has not finished training; resume it with `harness train ... --out {folder}`")
    problem = _speed_problem(meta)
    if problem:
        raise CheckpointDamaged(f"{meta_file} is damaged ({problem})")
    headers = read_headers(log_file)
    for key, trained, resumed, one in (("world_size", "at world sizes", "at another", "at one world size"),
                                       ("device", "on", "on another", "on one device")):
        seen = list(dict.fromkeys(h[key] for h in headers if h.get(key) is not None))
        if len(seen) > 1:
            raise ConfigError(f"{folder} was trained {trained} {', '.join(map(str, seen))} in turn (resumed "
                              f"{resumed}): its speed and memory are its last part's alone; compare runs trained "
                              f"{one} throughout (`harness train ... --no-resume`)")
    log = read_log(log_file)
    _check_log_whole(log_file, log, headers, meta["step"])
    per_rank = [m for m in meta.get("peak_mem_gib_per_rank") or [meta.get("peak_mem_gib")] if m is not None]
    return ScalingRun(name or folder.name, meta["model"], meta.get("world_size", 1), meta.get("parallel", "ddp"),
                      meta["config"], meta["step"], [r["step"] for r in log], [r["loss"] for r in log],
                      meta.get("tokens_per_s"), meta.get("mfu"), per_rank, meta["train_loss"], meta["heldout_loss"],
                      next((h["device"] for h in headers if h.get("device")), None), meta.get("applied"))


def _speed_problem(meta: dict) -> str | None:
    """What is wrong in the fields of a meta.json that only this comparison reads (`read_meta` checks
    the losses and the step), or None: the world size and parallel mode, and the speed and memory,
    numbers where present (runs on a CPU record no MFU or memory)."""
    size = meta.get("world_size", 1)
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
        return f"its world_size is {size!r}, not a positive whole number"
    if meta.get("parallel", "ddp") not in ("ddp", "fsdp"):
        return f"its parallel is {meta['parallel']!r}, not ddp or fsdp"
    per_rank = meta.get("peak_mem_gib_per_rank")
    if per_rank is not None and not isinstance(per_rank, list):
        return f"its peak_mem_gib_per_rank is {per_rank!r}, not a list"
    fields = [("tokens_per_s", meta.get("tokens_per_s")), ("mfu", meta.get("mfu")),
              ("peak_mem_gib", meta.get("peak_mem_gib")), *(("peak_mem_gib_per_rank", m) for m in per_rank or [])]
    wrong = next(((key, value) for key, value in fields if value is not None and not is_finite_number(value)), None)
    return None if wrong is None else f"its {wrong[0]} holds {wrong[1]!r}, not a finite number"


def _check_log_whole(log_file: Path, log: list[dict], headers: list[dict], step: int) -> None:
    """Refuse a log with holes, whose curve would be compared over the steps it kept as if they were
    the whole run: damaged lines (left out by `read_log`; a torn last line, an interrupted write, is
    judged by the step the log ends at; step records no curve can use, `_unusable_records`), an end
    before the checkpoint's step (training always logs its last step, so a shorter log was cut: a
    copy or write that stopped), or a step missing that its segment logged (`_missing_steps`)."""
    damaged = _damaged_lines(log_file, len(log) + len(headers)) + _unusable_records(log)
    if damaged:
        raise ConfigError(f"{log_file} has {damaged} damaged line(s) (not JSON, a step record without a numeric "
                          f"step and finite loss, or a step logged twice), so its curve has holes; copy the whole "
                          f"log again or rerun the training, and compare only whole runs")
    last = max((r["step"] for r in log), default=None)
    if last is None or last < step:
        ends = "has no step records" if last is None else f"ends at step {last}"
        raise ConfigError(f"{log_file} {ends} but its run's checkpoint is at step {step}: the log was cut; copy the "
                          f"whole log again or rerun the training, and compare only whole runs")
    missing = _missing_steps({r["step"] for r in log}, headers, step)
    if missing:
        raise ConfigError(f"{log_file} lacks {len(missing)} of the steps its run logged (the first: step "
                          f"{missing[0]}): lines were lost; copy the whole log again or rerun the training, and "
                          f"compare only whole runs")


def _unusable_records(log: list[dict]) -> int:
    """How many step records `read_log` kept that no curve can use: a loss absent or not finite (a
    diverged step stops training unlogged), or a step logged before (training logs each step once)."""
    seen, unusable = set(), 0
    for record in log:
        unusable += record["step"] in seen or not is_finite_number(record.get("loss"))
        seen.add(record["step"])
    return unusable


def _missing_steps(logged: set[int], headers: list[dict], last: int) -> list[int]:
    """The steps a run of `last` steps logged that `logged` lacks. Each segment (a header: the first
    start, then each resumption, from its start_step to the next one's) logs its first step, every
    log_every-th, each checkpoint's (every save_every), the last, and the step it stopped at; its
    header records the two cadences (logs written before they were recorded are not checked)."""
    starts = [h.get("start_step", 0) for h in headers]
    missing = []
    for h, start, end in zip(headers, starts, starts[1:] + [last]):
        every, save = h.get("log_every"), h.get("save_every")
        if not (isinstance(every, int) and isinstance(save, int) and every > 0 and save > 0):
            continue
        written = {s for s in range(start + 1, end + 1) if s == start + 1 or s % every == 0 or s % save == 0} | {end}
        missing += sorted(written - logged)
    return missing


def _damaged_lines(log_file: Path, kept: int) -> int:
    """How many non-blank lines of the log `read_log` and `read_headers` left out (`kept`: the records
    they returned), less a last line that is not JSON: a torn write, which the caller judges as a cut."""
    lines = [line for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    try:
        json.loads(lines[-1] if lines else "{}")
    except json.JSONDecodeError:
        return len(lines) - kept - 1
    return len(lines) - kept


def run_names(folders: list[Path]) -> list[str]:
    """A name per run folder: its own name, with as many parent folders as it takes to tell it from
    the others' (dupA/swat and dupB/swat, not swat twice). One folder given twice is an error."""
    paths = [Path(f).resolve() for f in folders]
    twice = next((f for f, p in zip(folders, paths) if paths.count(p) > 1), None)
    if twice is not None:
        raise ConfigError(f"run folder {twice} is given twice; pass each run once")
    names = []
    for path in paths:
        depth = 1
        while any(other != path and other.parts[-depth:] == path.parts[-depth:] for other in paths):
            depth += 1
        names.append(Path(*path.parts[-depth:]).as_posix())
    return names


def _recipe(run: ScalingRun) -> dict:
    train = {k: v for k, v in run.config["train"].items() if k not in EXECUTION_KEYS}  # how each executes may differ
    return {"model": run.config["model"], "train": train}


def _execution(run: ScalingRun) -> dict:
    """How each rank runs its share of a step, which decides the speed and memory compared: the
    device and the EXECUTION_KEYS but save_every (checkpoints are not timed), with compile and
    fused_ce as they resolved (`auto` is on where it applies, so two `auto` runs may differ, and
    `auto` may equal `on`; runs trained before meta.json recorded it compare the setting as
    written), and the micro-batch as a rank runs it: train.micro_batch caps the sequences per
    forward at the rank's share of the global batch, so one value can mean 8 per forward on one
    process and 4 on each of two."""
    resolved = {key: "on" if on else "off" for key, on in (run.applied or {}).items()}
    train = {**run.config["train"], **resolved}
    share = train["batch_tokens"] // train["seq_len"] // run.world_size
    return {"device": run.device, **{f"train.{k}": train.get(k) for k in sorted(EXECUTION_KEYS - {"save_every"})},
            "train.micro_batch": min(train["micro_batch"], share)}


def _check_matched(base: ScalingRun, run: ScalingRun) -> None:
    a, b = _recipe(base), _recipe(run)
    for section in ("model", "train"):
        for key in sorted(set(a[section]) | set(b[section])):
            if a[section].get(key) != b[section].get(key):
                raise ConfigError(f"runs {base.name} and {run.name} differ in {section}.{key} "
                                  f"({a[section].get(key)!r} vs {b[section].get(key)!r}); compare runs of one recipe")
    a, b = _execution(base), _execution(run)
    smaller = min(a["train.micro_batch"], b["train.micro_batch"])
    fixes = {"device": "compare runs trained on one kind of device",
             "train.micro_batch": f"train both with --set train.micro_batch={smaller}"}
    for key in a:
        if a[key] != b[key] and not (key == "device" and None in (a[key], b[key])):  # older logs name no device
            unit = " sequences per forward on each rank" if key == "train.micro_batch" else ""
            raise ConfigError(f"runs {base.name} and {run.name} ran each rank's step otherwise: {key} {a[key]!r} vs "
                              f"{b[key]!r}{unit}, which changes the speed and memory compared; "
                              f"{fixes.get(key, f'train both with one --set {key}=...')}")


def baselines(runs: list[ScalingRun]) -> dict[str, ScalingRun]:
    """Each model's baseline: its run on the fewest GPUs (the first given among equals), not merely
    its first run: scaling is measured from the smallest world size, whatever order the runs come in."""
    out: dict[str, ScalingRun] = {}
    for run in runs:
        if run.model not in out or run.world_size < out[run.model].world_size:
            out[run.model] = run
    return out


def _efficiency(run: ScalingRun, base: ScalingRun) -> float | None:
    """Tokens/s per GPU against the baseline's per GPU (1.0: linear scaling from the baseline's world
    size). Written as one division so that a one-GPU baseline gives the very floats it always did."""
    if not run.tokens_per_s or not base.tokens_per_s:
        return None
    return run.tokens_per_s * base.world_size / (run.world_size * base.tokens_per_s)


def compare(runs: list[ScalingRun]) -> list[dict]:
    """One record per run, in the order given, against its model's baseline (`baselines`)."""
    bases = baselines(runs)
    out = []
    for run in runs:
        base = bases[run.model]
        _check_matched(base, run)
        base_loss = dict(zip(base.steps, base.losses))
        diffs = [(step, abs(loss - base_loss[step])) for step, loss in zip(run.steps, run.losses) if step in base_loss]
        efficiency = _efficiency(run, base)
        out.append({"run": run.name, "model": run.model, "baseline": base.name, "device": run.device,
                    "world_size": run.world_size,
                    # one process trains plain under ddp (no group, nothing wrapped), sharded under fsdp
                    "parallel": "-" if run.world_size == 1 and run.parallel == "ddp" else run.parallel,
                    "tokens_per_s": run.tokens_per_s,
                    "scaling_efficiency": efficiency, "mfu_per_gpu": run.mfu, "peak_mem_gib_per_rank": run.peak_mem_gib,
                    "train_loss": run.train_loss, "heldout_loss": run.heldout_loss,
                    "max_loss_diff": max((d for _, d in diffs), default=None),
                    "first_step_over": next((step for step, d in diffs if d > DIVERGED), None),
                    "steps_compared": len(diffs), "steps": run.trained_steps})
    return out


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(records: list[dict]) -> str:
    ranks = _rank_unit(records)
    head = (f"| run | {ranks[1]} | parallel | tokens/s | scaling efficiency | MFU per {ranks[0]} | peak memory per "
            f"{ranks[0]} (GiB, by rank) | train loss | held-out loss | max abs loss diff vs baseline "
            f"| first step diff > {DIVERGED:g} | steps compared |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in records:
        lines.append(f"| {r['run']} | {r['world_size']} | {r['parallel']} | {_fmt(r['tokens_per_s'], ',.0f')} | "
                     f"{_efficiency_cell(r['scaling_efficiency'])} | {_fmt(r['mfu_per_gpu'], '.1%')} | "
                     f"{' / '.join(f'{m:.1f}' for m in r['peak_mem_gib_per_rank']) or '-'} | {r['train_loss']:.4f} | "
                     f"{r['heldout_loss']:.4f} | "
                     f"{_fmt(r['max_loss_diff'], '.2e')} | {r['first_step_over'] or 'never'} | "
                     f"{r['steps_compared']} |")
    return "\n".join(lines) + "\n" + _baseline_note(records) + _over_note(records) + _cpu_note(records)


OVER = "†"  # marks an efficiency above 100%


def _efficiency_cell(efficiency: float | None) -> str:
    return _fmt(efficiency, ".1%") + (f" {OVER}" if efficiency is not None and efficiency > 1 else "")


def _over_note(records: list[dict]) -> str:
    """A line under a table with an efficiency above 100%: more tokens/s per process than the baseline
    is not scaling but a baseline that ran slower per process (matched settings leave the machine: other
    thread counts, a busy device), and the figure is not to be read as it stands; none otherwise."""
    if not any((r["scaling_efficiency"] or 0) > 1 for r in records):
        return ""
    return (f"\n{OVER} Above 100%: the baseline ran slower per process than this run (other thread counts, e.g. "
            f"OMP_NUM_THREADS, or a busier machine); measure both alike before reading the efficiency.\n")


def _on_cpu(device: str | None) -> bool:
    return device is not None and device.startswith("cpu")


def _rank_unit(records: list[dict]) -> tuple[str, str]:
    """What the table's ranks ran on, singular and plural: processes where every run was on a CPU, else
    GPUs (a CPU run among GPU ones is named by the note under the table)."""
    return ("process", "processes") if all(_on_cpu(r["device"]) for r in records) else ("GPU", "GPUs")


def _ranks(n: int, device: str | None) -> str:
    """A world size as what its ranks ran on: GPUs, or processes sharing a CPU."""
    unit = ("CPU process", "CPU processes") if _on_cpu(device) else ("GPU", "GPUs")
    return f"{n} {unit[n != 1]}"


def _cpu_note(records: list[dict]) -> str:
    """A line under a table of runs on a CPU: its "GPUs" are processes sharing one machine's cores, whose
    tokens/s and efficiency measure that sharing (thread counts, the machine's load), not a speed to
    report; their loss curves compare as on GPUs. Empty for runs on GPUs."""
    cpu = [r["run"] for r in records if _on_cpu(r["device"])]
    if not cpu:
        return ""
    counted = "the processes share" if len(cpu) == len(records) else '"GPUs" counts processes sharing'
    return (f"\nOn CPU ({', '.join(cpu)}): {counted} one machine's cores, so their tokens/s "
            f"and scaling efficiency are no speed result (nor is MFU or memory measured there); read the loss "
            f"agreement only.\n")


def _baseline_note(records: list[dict]) -> str:
    """A line naming each model's baseline where the table alone does not show it (the baseline is
    not the model's first row, or ran on several GPUs, so its 100% is not one GPU's speed); none
    otherwise, so that tables of runs given one-GPU run first stay as they were."""
    by_name = {r["run"]: r for r in records}
    firsts: dict[str, dict] = {}
    for r in records:
        firsts.setdefault(r["model"], r)
    if all(r["run"] == r["baseline"] and r["world_size"] == 1 for r in firsts.values()):
        return ""
    bases = {model: by_name[r["baseline"]] for model, r in firsts.items()}
    named = ", ".join(f"{base['run']} for {model} ({_ranks(base['world_size'], base['device'])})"
                      for model, base in bases.items())
    return (f"\nBaseline (each model's run on the fewest {_rank_unit(records)[1]}; scaling efficiency and loss "
            f"differences are against it): {named}.\n")


def plot(runs: list[ScalingRun], path: Path) -> Path:
    """Loss curves per model (top row) and |loss - baseline loss| per step (bottom row, log scale)."""
    from harness.results.plots import pyplot, save_figure
    plt = pyplot()
    models = list(dict.fromkeys(r.model for r in runs))
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 7), squeeze=False)
    markers, bases = "os^dvx", baselines(runs)
    for col, model in enumerate(models):
        mine, ref = [r for r in runs if r.model == model], bases[model]
        base = dict(zip(ref.steps, ref.losses))
        for i, r in enumerate(mine):
            style = dict(label=f"{r.name} ({_ranks(r.world_size, r.device)})", color=f"C{i}",
                         marker=markers[i % len(markers)], markevery=max(1, len(r.steps) // 8), markersize=4)
            axes[0][col].plot(r.steps, r.losses, **style)
            if r is not ref:
                gap = [(s, abs(v - base[s])) for s, v in zip(r.steps, r.losses) if s in base]
                axes[1][col].plot([s for s, _ in gap], [max(d, 1e-7) for _, d in gap], **style)
        axes[0][col].set_title(f"{model}: training loss")
        axes[0][col].set_ylabel("train loss (nats/token)")
        axes[1][col].set_yscale("log")
        axes[1][col].set_ylabel(f"|loss - {ref.name} loss| (floor 1e-7)")
        axes[1][col].set_xlabel("step")
        for ax in axes[:, col]:
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path


def write(folders: list[Path], out: Path | None) -> tuple[str, list[dict]]:
    """(markdown, records) of the runs; with `out`, also scaling.md, scaling.json and scaling.png there,
    the plot first, the one whose drawing or writing can fail on its own: a failure there writes none
    of the three, not a new table beside an old plot or none."""
    runs = [read_run(f, name) for f, name in zip(folders, run_names(folders))]
    records = compare(runs)
    text = markdown(records)
    if out is not None:
        out = Path(out)
        plot(runs, out / "scaling.png")
        atomic_write_text(out / "scaling.md", text)
        atomic_write_text(out / "scaling.json", json.dumps(records, indent=1))
    return text, records
