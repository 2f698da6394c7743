"""Plots of stored rows (matplotlib, PNG), each written with the CSV of exactly the points it draws.

    ppl_vs_length.png/.csv      per-token perplexity vs evaluation length (task `length`)
    speed_<task>_<metric>.png   throughput / latency / memory vs length (log-log)
    acc_vs_tokens.png/.csv      accuracy vs training tokens, one panel per benchmark, when a model
                                was evaluated at two or more checkpoints
    loss_curves.png/.csv        training loss vs tokens, one line per model of the run folders
                                (their train/<model>_train_log.jsonl, kept there by `harness run`)

One series per line of the tables (harness.results.tables.Line: model, size, variant, run, learning
rate, seed, decode batch), named as the tables name their lines, with preset= where the series are
of several sizes: a series never joins rows of two models, sizes or runs of a sweep. A plot whose
rows are absent is not drawn (and not written).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from harness.files import atomic_write_bytes, atomic_write_text
from harness.results.provenance import device_slug
from harness.results.store import Row
from harness.results.tables import (
    ACC_COLUMNS,
    SPEED_TASKS,
    Line,
    batch_detail,
    by_device,
    display,
    is_oom,
    latest,
    line_names,
    line_of,
    preset_order,
)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _write_csv(path: Path, header: list[str], lines: list[list]) -> None:
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(lines)
    atomic_write_text(path, buf.getvalue())


def save_figure(fig, path: Path) -> None:
    """The figure as a PNG at `path`, drawn in memory and then written whole or not at all
    (`atomic_write_bytes`): a failed or interrupted write leaves no temporary file behind."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _write_plot(fig, out_dir: Path, name: str, header: list[str], lines: list[list]) -> list[Path]:
    """out_dir/name.png (the figure, then closed) and out_dir/name.csv (exactly its points)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, data = out_dir / f"{name}.png", out_dir / f"{name}.csv"
    save_figure(fig, png)
    pyplot().close(fig)
    _write_csv(data, header, lines)
    return [png, data]


def _collect(rows: list[Row], run_configs: dict, x_key) -> dict[str, dict[float, Row]]:
    """series name -> {x: row}, one series per table line, with the last checkpoint's row at each x;
    OOM points dropped."""
    out: dict[Line, dict[float, list[Row]]] = {}
    for r in rows:
        x = x_key(r)
        if x is None or r.value is None or is_oom(r) or math.isnan(r.value):
            continue
        line = line_of(r, run_configs, r.run.startswith("paper:"), batch_detail(r))
        out.setdefault(line, {}).setdefault(float(x), []).append(r)
    names = line_names(out, with_preset=True)
    return {names[line]: {x: latest(rs) for x, rs in pts.items()} for line, pts in out.items()}


MARKERS = "osD^v<>ph*"
LEGEND_ROWS = 14  # legend entries (fontsize 8) that fit beside a panel of the length plots
LINESTYLES = ("-", "--", ":")


def _length(r: Row):
    return r.extra.get("context", r.extra.get("seq_len"))


def _length_plot(series: dict, out_dir: Path, name: str, ylabel: str, title: str, log_y: bool,
                 vlines: list[int] = ()) -> list[Path]:
    """One line per series over a log2 length axis, a panel per preset (one above the other, each
    with its legend beside it) where the series span several: a study's sizes would otherwise share
    one axis, dozens of lines. The PNG and a CSV of its points (series, length, value, stderr,
    device, run)."""
    plt = pyplot()
    presets = preset_order([row for pts in series.values() for row in pts.values()])
    fig, axes = plt.subplots(len(presets), 1, figsize=(6, 4 * len(presets)), squeeze=False)
    if len(presets) > 1:  # the long title once above the panels; beside each panel's legend it would run under it
        fig.suptitle(title)
    lines = []
    # one colour and marker per model (a decode series' label ends in its batch, " b=64", which
    # picks the line style), so that a model's batch sizes read as a pair; marker sizes alternate,
    # so that models with equal values (e.g. the same decode state of two windowed models) stay
    # visible on top of each other; past the colours of the map the marker shifts, so that no two
    # series (a study's sizes, rates and seeds make dozens) look alike. Past ten models, tab20's ten
    # dark hues come first and its light ones after them: in its own order each hue's dark and light
    # shades are neighbours, which read as one model in the legend
    models = sorted({label.split(" b=")[0] for label in series})
    tab20 = plt.get_cmap("tab20").colors
    colours = plt.get_cmap("tab10").colors if len(models) <= 10 else tab20[0::2] + tab20[1::2]
    for ax, preset in zip(axes[:, 0], presets):
        for label, pts in sorted(series.items()):
            if next(iter(pts.values())).preset != preset:
                continue
            xs = sorted(pts)
            i = models.index(label.split(" b=")[0])
            marker = MARKERS[(i + i // len(colours)) % len(MARKERS)]
            ax.plot(xs, [pts[x].value for x in xs], marker=marker, markersize=7 - 3 * (i % 2),
                    color=colours[i % len(colours)],
                    linestyle="--" if " b=" in label and not label.endswith(" b=1") else "-", label=label)
            lines += [[label, int(x), pts[x].value, pts[x].stderr, pts[x].device, pts[x].run] for x in xs]
        for x in vlines:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("length (tokens)" + ("; dotted: training length" if vlines else ""))
        ax.set_ylabel(ylabel)
        ax.set_title(title if len(presets) == 1 else f"preset {preset}", fontsize=None if len(presets) == 1 else 10)
        ax.grid(True, which="both", alpha=0.3)
        # beside the axes (no line hidden), in as many columns as keep it as tall as its panel: a study's
        # 40 series in one column would run over the panels below (the saved PNG widens to hold it)
        shown = sum(not line.get_label().startswith("_") for line in ax.get_lines())
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), ncols=math.ceil(shown / LEGEND_ROWS))
    if len(presets) > 1:  # room for each panel's title and axis label; tight_layout would squeeze the axes
        # to fit the legends into the figure's 6 inches
        fig.subplots_adjust(hspace=0.35, top=1 - 0.75 / fig.get_figheight())
    return _write_plot(fig, out_dir, name, ["series", "length", ylabel, "stderr", "device", "run"], lines)


def ppl_vs_length(rows: list[Row], out_dir: Path, run_configs: dict | None = None) -> list[Path]:
    pick = [r for r in rows if r.task == "length" and r.metric == "ppl"
            and r.extra.get("position_bucket") in (None, "all")]
    series = _collect(pick, run_configs or {}, _length)
    if not series:
        return []
    train_lengths = sorted({int(r.extra["train_length"]) for r in pick if r.extra.get("train_length")})
    return _length_plot(series, out_dir, "ppl_vs_length", "token perplexity",
                        "Per-token perplexity (WikiText-2 test) vs evaluation length", False, train_lengths)


def speed_curves(rows: list[Row], out_dir: Path, run_configs: dict | None = None) -> list[Path]:
    """A plot per speed task and metric, and per device where the rows hold several: a timing is
    its device's (one series never joins two GPUs' points); the file then names the device."""
    written = []
    for task in SPEED_TASKS:
        for metric in sorted({r.metric for r in rows if r.task == task}):
            devices = by_device([r for r in rows if r.task == task and r.metric == metric])
            for device, mine in devices:
                series = _collect(mine, run_configs or {}, _length)
                if series:
                    name = f"{task}_{metric}" + (f"_{device_slug(device)}" if len(devices) > 1 else "")
                    title = f"{task}: {metric}" + (f" ({device})" if device else "")
                    written += _length_plot(series, out_dir, name, metric, title, True)
    return written


def accuracy_vs_tokens(rows: list[Row], out_dir: Path, run_configs: dict | None = None) -> list[Path]:
    """Only models with two or more checkpoints (distinct tokens_trained) are drawn."""
    panels = []
    for col in ACC_COLUMNS:
        pick = [r for r in rows if (r.task, r.metric) == (col.task, col.metric) and r.tokens_trained]
        series = _collect(pick, run_configs or {}, lambda r: r.tokens_trained)
        series = {k: v for k, v in series.items() if len(v) >= 2}
        if series:
            panels.append((col, series))
    if not panels:
        return []
    plt = pyplot()
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
    lines = []
    for ax, (col, series) in zip(axes.flat, panels):
        for label, pts in sorted(series.items()):
            xs = sorted(pts)
            ax.plot(xs, [display(pts[x].value, col.metric) for x in xs], marker="o", label=label)
            lines += [[col.task, col.metric, label, int(x), display(pts[x].value, col.metric), pts[x].run]
                      for x in xs]
        ax.set_xscale("log")
        ax.set_title(col.title, fontsize=9)
        ax.set_xlabel("training tokens")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _write_plot(fig, out_dir, "acc_vs_tokens",
                       ["task", "metric", "series", "tokens_trained", "accuracy_pct", "run"], lines)


def trailing_mean(values: list[float], span: int) -> list[float]:
    """Each value replaced by the mean of it and the span - 1 before it (fewer at the start)."""
    return [sum(values[max(0, i - span + 1):i + 1]) / (i + 1 - max(0, i - span + 1)) for i in range(len(values))]


def _line_look(i: int, model: int, run: int, models: int, runs: int) -> dict:
    """Colour and line style of the i-th line, of the model-th model and run-th run: a colour per
    model and a style per run, or the other way round where the runs outnumber the models, when the
    10 colours and the styles tell every pair apart; else the i-th colour and style in turn
    (distinct for 30 lines)."""
    ways = [(model, run, models, runs), (run, model, runs, models)]
    for colour, style, colours, styles in (ways[::-1] if runs > models else ways):
        if colours <= 10 and styles <= len(LINESTYLES):
            return {"color": f"C{colour}", "linestyle": LINESTYLES[style]}
    return {"color": f"C{i % 10}", "linestyle": LINESTYLES[i // 10 % len(LINESTYLES)]}


def loss_curves(logs: dict[tuple[str, str], list[dict]], out_dir: Path, smooth_steps: int = 10) -> list[Path]:
    """Training loss against tokens, one line per (run, model) of `logs` (their per-step records):
    the matched-budget runs' curves side by side. A colour per model and a line style per run (the
    seeds of one model alike in colour), or a colour per run and a style per model (ablation runs
    of one model), where that gives every line its own look; else colours and styles in turn.
    Each line is the mean of the last `smooth_steps` steps' losses; the CSV has every step."""
    logs = {key: records for key, records in logs.items() if records}
    if not logs:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = list(dict.fromkeys(model for _, model in logs))
    runs = list(dict.fromkeys(run for run, _ in logs))
    lines = []
    for i, ((run, model), records) in enumerate(logs.items()):
        tokens, loss = [r["tokens"] for r in records], [r["loss"] for r in records]
        look = _line_look(i, models.index(model), runs.index(run), len(models), len(runs))
        ax.plot(tokens, trailing_mean(loss, smooth_steps), **look, label=model + (f" [{run}]" if len(runs) > 1 else ""))
        lines += [[run, model, t, v] for t, v in zip(tokens, loss)]
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"train loss (nats/token, mean of {smooth_steps} steps)")
    ax.set_title("Training loss at a matched token budget")
    ax.set_ylim(top=min(ax.get_ylim()[1], 8))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: no line hidden
    return _write_plot(fig, out_dir, "loss_curves", ["run", "model", "tokens", "loss"], lines)


# what each table of `harness tables` draws beside it (the ablation and retrieval tables: nothing)
TABLE_PLOTS = {"main": "acc_vs_tokens, loss_curves", "length": "ppl_vs_length", "speed": "speed_<task>_<metric>"}


def write_plots(rows: list[Row], out_dir: Path, run_configs: dict | None = None,
                logs: dict[tuple[str, str], list[dict]] | None = None, table: str | None = None) -> list[Path]:
    """The plots of the table `table` (TABLE_PLOTS), or every plot where none is named, as far as
    the rows (and the training logs, {(run, model): records}) allow; returns the files written."""
    plots = {"main": lambda: accuracy_vs_tokens(rows, out_dir, run_configs) + loss_curves(logs or {}, out_dir),
             "length": lambda: ppl_vs_length(rows, out_dir, run_configs),
             "speed": lambda: speed_curves(rows, out_dir, run_configs)}
    kinds = list(plots) if table is None else [table] if table in plots else []
    return [path for kind in kinds for path in plots[kind]()]
