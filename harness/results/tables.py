"""The paper's tables, pivoted from result rows: main, ablation, length, retrieval, speed (written as md,
LaTeX or CSV by harness.results.render).

Rows come in the common schema (harness.results.store.Row); a table is a pivot of them, nothing more, so
every cell can be traced to one stored row. The conventions the pivots rely on:

- main: one column per (task, metric) of the paper (MAIN_COLUMNS); accuracies are stored as
  lm-eval's fractions and shown in percent; perplexities as they are. Beside the paper's WikiText
  column (the raw text), one of ours for the tokenized v1 text (WIKI_V1: all the offline mirror
  holds), shown only where a row fills it, since the paper has no such number. Table rows are
  models grouped by preset (size), one line per Line: a model's runs, learning rates and seeds each
  get their own, labelled where they vary ("swat lr=0.008 seed=0"), so that no line joins cells of
  two trainings.
  A line evaluated at several checkpoints shows its last one (largest `tokens_trained`). Avg is the
  mean of the accuracy columns present (a paper's row: the average it published, where its file
  has one): complete (all eight) it is plain and can be bold; incomplete it carries a dagger and a
  footnote, and is never bold. Rows of the `smoke` task (held-out loss and perplexity on the
  training corpus) add their two columns in front: all that the README's first run has to show.
- variants: a run whose config differs from its preset in the ablation keys (SWAT's design choices:
  activation, slopes, rope, window, sigmoid_bias; and the training length, seq_len, except for speed
  rows) is labelled by the difference, e.g. "swat (slopes=negative)"; a row's own `variant` extra
  key wins over the config. The ablation table shows the models with variants, beside their base rows.
- references: rows from results/paper/*.csv; each is matched to our rows of the same preset, model
  and variant, and a "Δ" line under our row gives ours minus the paper's, per column.
- missing cells stay blank (a footnote says so), never zero; OOM cells read "OOM".
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.files import file_in_the_way, nearest_existing
from harness.results.render import (
    SCIENTIFIC_ABOVE,
    Cell,
    Table,
    human,
    latex_escape,
    number_text,
    readable_numbers,
    render,
    sort_key,
    text_cell,
)
from harness.results.store import (
    SPEED_TASKS,
    ResultsError,
    Row,
    dedupe_rows,
    is_fraction,
    load_run,
    measured_extras,
    read_reference,
    run_folders,
    run_location,
)

# ---------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Column:
    title: str
    latex: str
    task: str
    metric: str

    @property
    def lower_is_better(self) -> bool:
        return "perplexity" in self.metric or self.metric in ("ppl", "loss")

    @property
    def is_accuracy(self) -> bool:
        return is_fraction(self.metric)


# our column, not the paper's: WikiText-2 v1's text is tokenized, its word perplexity another number
WIKI_V1 = Column("Wiki-2 v1 word ppl↓", r"Wiki-2 v1 word ppl$\downarrow$", "wikitext_2_v1", "word_perplexity")
WIKI_V1_NOTE = ("Wiki-2 v1: word perplexity on WikiText-2 v1 (task wikitext_2_v1, the copy the offline mirror holds), "
                "whose text is tokenized, rare words replaced by an unknown-word token: not comparable with the "
                "paper's word perplexity on the raw text (Wiki.).")
MAIN_COLUMNS = (
    Column("Wiki. word ppl↓", r"Wiki.\ word ppl$\downarrow$", "wikitext", "word_perplexity"),
    WIKI_V1,
    Column("LMB. ppl↓", r"LMB.\ ppl$\downarrow$", "lambada_openai", "perplexity"),
    Column("LMB. acc", "LMB.\\ acc", "lambada_openai", "acc"),
    Column("PIQA acc", "PIQA acc", "piqa", "acc"),
    Column("Hella. acc_n", r"Hella.\ acc\_n", "hellaswag", "acc_norm"),
    Column("Wino. acc", "Wino.\\ acc", "winogrande", "acc"),
    Column("ARC-e acc", "ARC-e acc", "arc_easy", "acc"),
    Column("ARC-c acc_n", r"ARC-c acc\_n", "arc_challenge", "acc_norm"),
    Column("SIQA acc", "SIQA acc", "social_iqa", "acc"),
    Column("BoolQ acc", "BoolQ acc", "boolq", "acc"),
)
ACC_COLUMNS = tuple(c for c in MAIN_COLUMNS if c.is_accuracy)
SMOKE_COLUMNS = (Column("Held-out loss↓", r"Held-out loss$\downarrow$", "smoke", "loss"),
                 Column("Held-out ppl↓", r"Held-out ppl$\downarrow$", "smoke", "ppl"))
AVERAGE_TASK = "commonsense_avg"  # a published average in a reference file; shown in its row's Avg cell
AVERAGE = Column("Avg", "Avg", AVERAGE_TASK, "acc")
ABLATION_KEYS = ("activation", "slopes", "rope", "window", "sigmoid_bias")
RETRIEVAL_TASKS = ("passkey", "mqar")  # sweeps (context x depth, context x key-value pairs): the retrieval table
TABLES = ("main", "ablation", "length", "retrieval", "speed")

# ---------------------------------------------------------------- the rows as they are


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
    """A plain long-form table of rows (model, task, metric, setting, value ± stderr, n). `setting`
    holds what tells a task's rows apart (context length, depth, position bucket, key-value pairs:
    `distinguishing_keys`), without which a sweep's rows read as identical lines; it is left out
    where no task's rows differ in any."""
    keys = distinguishing_keys(rows)
    settings = [" ".join(f"{k}={_setting(r.extra[k])}" for k in keys[r.task, r.metric] if r.extra.get(k) is not None)
                for r in rows]
    shown = any(settings)
    body = [[r.model, r.preset, f"{r.params:,}" if r.params else "", r.task, r.metric, *([setting] if shown else []),
             _long_form_value(r), r.n or ""] for r, setting in zip(rows, settings)]
    header = ["model", "preset", "params", "task", "metric", *(["setting"] if shown else []), "value", "n"]
    return markdown_table(header, body)


def _long_form_value(r: Row) -> str:
    """value ± stderr with 4 decimals below 10 (2 above), more where that would hide a small value,
    in e-notation from SCIENTIFIC_ABOVE (readable_numbers); empty for a row with no value (out of memory)."""
    if any(x is not None and math.isfinite(x) and abs(x) >= SCIENTIFIC_ABOVE for x in (r.value, r.stderr)):
        return f"{r.value:.2e}" + (f" ± {r.stderr:.2e}" if r.stderr is not None else "")
    digits = 4 if r.value is not None and abs(r.value) < 10 else 2
    return format_value(r.value, r.stderr, shown_digits(r.value, digits))


def distinguishing_keys(rows: list[Row]) -> dict[tuple[str, str], list[str]]:
    """Per (task, metric), the extra keys whose values differ among its rows (absent counts as a
    value), in the order the rows hold them; keys on how a row was made (versions, dates) are not
    among them."""
    by_metric: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_metric.setdefault((r.task, r.metric), []).append(measured_extras(r))
    keys = {}
    for task_metric, extras in by_metric.items():
        named = dict.fromkeys(k for extra in extras for k in extra)
        keys[task_metric] = [k for k in named if len({_setting(extra.get(k)) for extra in extras}) > 1]
    return keys


def _setting(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- shared helpers


def display(value: float | None, metric: str) -> float | None:
    """Accuracies in percent (lm-eval stores fractions), everything else as stored."""
    if value is None:
        return None
    return value * 100 if is_fraction(metric) else value


def is_oom(row: Row) -> bool:
    return bool(row.extra.get("oom")) or str(row.extra.get("status", "")).lower() == "oom"


COUNT_MODELS = ("unigram", "bigram")  # count-based references: their params count the n-grams seen


def preset_order(rows: list[Row]) -> list[str]:
    """Presets from small to large, by the median parameter count of their trained models' rows. The
    count-based references (COUNT_MODELS) do not size a preset where trained models do: their params
    grow with the n-grams seen, not with the preset, so a larger preset holding only them would sort
    between smaller ones; such presets come after those with trained models (a study's n-gram-only
    size is its largest, not trained yet), ordered among themselves by the same median."""
    trained: dict[str, list[int]] = {}
    counted: dict[str, list[int]] = {}
    for r in rows:
        (counted if r.model in COUNT_MODELS else trained).setdefault(r.preset or "", []).append(r.params or 0)

    def size(preset: str) -> tuple:
        params = sorted(trained.get(preset) or counted[preset])
        return preset not in trained, params[len(params) // 2], preset
    return sorted(set(trained) | set(counted), key=size)


def variant_of(row: Row, run_configs: dict[str, dict]) -> str:
    """The ablation label of a row: its `variant` key, else how its run's config differs from the
    preset in ABLATION_KEYS and the training length (not for a speed row: a sweep measures an
    untrained model at lengths of its own, so the run's training length says nothing of it)."""
    if row.extra.get("variant") is not None:
        return str(row.extra["variant"])
    return config_diff(run_configs.get(row.run), training_length=row.task not in SPEED_TASKS)


def config_diff(config: dict | None, training_length: bool = True) -> str:
    from harness.config import PRESETS, load_config
    if not config or config.get("preset") not in PRESETS:
        return ""
    base = load_config(config["preset"])
    diffs = [f"{k}={config.get('model', {}).get(k)}" for k in ABLATION_KEYS
             if k in config.get("model", {}) and config["model"][k] != getattr(base.model, k)]
    seq = config.get("train", {}).get("seq_len")
    if training_length and seq is not None and seq != base.train.seq_len:
        diffs.append(f"seq_len={seq}")
    return ", ".join(diffs)


def mark_best(rows: list[list[Cell]], col: int, lower: bool) -> bool:
    """Bold the best value of one column among the cells that compete (`_competing`), when there are
    two or more and they are not all equal (a tie of everyone has no winner). Values compare as
    printed: of two cells that read 58.85, both are bold or neither. Returns whether a limited cell
    (§) was kept out of the competition, which the § footnote then explains."""
    numbers = [r[col] for r in rows if r[col].value is not None and not r[col].mark and r[col].text is None
               and math.isfinite(r[col].value)]
    competing = _competing(numbers)
    values = [_as_printed(c) for c in competing]
    if len(values) >= 2 and len(set(values)) > 1:
        best = min(values) if lower else max(values)
        for c, value in zip(competing, values):
            c.bold |= value == best
    return len(competing) < len(numbers)


def _as_printed(cell: Cell) -> float:
    """A number cell's value rounded to the decimals it is shown with."""
    return float(f"{cell.value:.{cell.digits}f}")


def _competing(cells: list[Cell]) -> list[Cell]:
    """The cells evaluated alike, which alone may be compared: the full evaluations where there are
    any, else the limited ones where they share one --limit, else none (a score on 3 examples does
    not beat one on 300, nor one on 300 a full evaluation)."""
    full = [c for c in cells if c.limit is None]
    return full if full else cells if len({c.limit for c in cells}) == 1 else []


def limit_note(limits: set, set_aside: bool = False) -> str:
    """The § footnote: the limits in the order of their numbers; and, where a § cell was kept out of
    its column's bold (`mark_best`), the rule that did it."""
    return (f"§ evaluated on the first {', '.join(str(n) for n in sorted(limits, key=sort_key))} examples only "
            "(--limit): a quick check, not comparable with full evaluations."
            + (" Bold compares like with like: a column's full evaluations where it has any, else its § cells "
               "where they share one limit." if set_aside else ""))


def latest(rows: list[Row]) -> Row:
    """The row of the last checkpoint (largest tokens_trained), then the latest date."""
    return max(rows, key=lambda r: (r.tokens_trained or 0, r.date or ""))


class Sources:
    """Footnote numbers for reference sources, in order of first use."""

    def __init__(self):
        self.index: dict[str, int] = {}

    def mark(self, source: str) -> str:
        return f" [{self.index.setdefault(source, len(self.index) + 1)}]"

    def notes(self) -> list[str]:
        return [f"[{i}] {src}" for src, i in self.index.items()]


# ---------------------------------------------------------------- who a line is

@dataclass(frozen=True)
class Line:
    """Who one line of a table (and one series of a plot) is. The learning rate and the seed are part
    of it like the model, so that no line mixes the runs of a sweep; `detail` is a sweep table's
    setting per line (decode batch, passkey depth, MQAR pairs); `source` and `label` are a reference
    row's publication and its name there (empty for our rows)."""
    preset: str
    model: str
    variant: str = ""
    run: str = ""
    lr: float | str | None = None
    seed: int | None = None
    detail: str = ""
    source: str = ""
    label: str = ""


def line_of(row: Row, run_configs: dict, reference: bool = False, detail: str = "") -> Line:
    lr = row.extra.get("lr")
    return Line(row.preset, row.model, variant_of(row, run_configs), row.run,
                lr if lr is None or isinstance(lr, (int, float, str)) else str(lr), row.seed, detail,
                str(row.extra.get("source") or "") if reference else "",
                str(row.extra.get("label") or "") if reference else "")


def line_order(line: Line) -> tuple:
    """A sweep table's order: lines of a model together, then by run, size, learning rate, seed (as
    numbers) and detail."""
    return (line.model, line.variant, line.source, line.label, line.run, line.preset, sort_key(line.lr),
            sort_key(line.seed), _natural(line.detail))


def line_names(lines, with_preset: bool = False) -> dict[Line, str]:
    """Each line's name: the model and its variant (a reference row: its printed name), then what
    tells it from the model's other lines where that varies: [run], lr=, seed=; then its detail.
    A plot's series span sizes, which a table's groups keep apart: `with_preset` puts preset= after
    the model where the lines are of several sizes."""
    values: dict[tuple, set] = {}
    for line in lines:
        model = (line.preset, line.model, line.variant, line.source, line.label)
        values.setdefault(("run",) + model, set()).add(line.run)
        values.setdefault(("lr",) + model + (line.run,), set()).add(line.lr)
        values.setdefault(("seed",) + model + (line.run,), set()).add(line.seed)
    several_presets = with_preset and len({line.preset for line in lines}) > 1
    names = {}
    for line in lines:
        model = (line.preset, line.model, line.variant, line.source, line.label)
        name = line.label or line.model + (f" ({line.variant})" if line.variant else "")
        name += f" preset={line.preset}" if several_presets else ""
        name += f" [{line.run}]" if not line.source and len(values[("run",) + model]) > 1 else ""
        name += f" lr={_number(line.lr)}" if len(values[("lr",) + model + (line.run,)]) > 1 else ""
        name += f" seed={line.seed}" if len(values[("seed",) + model + (line.run,)]) > 1 else ""
        names[line] = name + line.detail
    return names


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def rate_notes(names) -> list[str]:
    """The footnote of a table with a line per learning rate (lr=): which rate counts is not decided here."""
    if not any(" lr=" in name for name in names):
        return []
    return [("lr=: one line per learning rate of a sweep, none picked here; a study's own report "
             "(results/<study>/main.md, written by `harness study STUDY.yaml --report-only`) picks each "
             "model's learning rate.")]


# ---------------------------------------------------------------- main table

@dataclass
class Entry:
    """One line of the main table: who, its name, and the row behind each column."""
    label: str
    line: Line
    cells: dict  # Column -> Row
    reference: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def preset(self) -> str:
        return self.line.preset

    @property
    def model(self) -> str:
        return self.line.model

    @property
    def source(self) -> str:
        return self.line.source


def by_name(entry: Entry) -> tuple:
    """Entries of a model together, in the order of their names with numbers (rates, seeds) by value."""
    return entry.model, _natural(entry.label)


def _entries(rows: list[Row], run_configs: dict, reference: bool, columns) -> list[Entry]:
    by_col = {(c.task, c.metric): c for c in columns}
    buckets: dict[Line, dict] = {}
    for r in rows:
        col = by_col.get((r.task, r.metric))
        if col is None or r.extra.get("corpus_source") is not None:  # per-source parts of a column's number
            continue
        buckets.setdefault(line_of(r, run_configs, reference), {}).setdefault(col, []).append(r)
    names = line_names(buckets)
    entries = []
    for line, cols in buckets.items():
        cells = {c: latest(rs) for c, rs in cols.items()}
        entries.append(Entry(names[line], line, cells, reference,
                             settings_of(next(iter(cells.values())), run_configs, reference)))
    return entries


MIN_AVERAGED = len(ACC_COLUMNS) // 2  # fewer accuracies than this (e.g. LAMBADA's alone) get no average


def _average(cells: dict) -> tuple[float | None, int]:
    vals = [display(cells[c].value, c.metric) for c in ACC_COLUMNS if c in cells and cells[c].value is not None]
    vals = [v for v in vals if not math.isnan(v)]
    return (sum(vals) / len(vals) if len(vals) >= MIN_AVERAGED else None), len(vals)


def main_table(rows: list[Row], references: list[Row] = (), run_configs: dict | None = None) -> Table:
    """The paper's Table 1 layout: Wiki/LMB perplexity, the eight accuracies and their average."""
    run_configs = run_configs or {}
    held = {(r.task, r.metric) for r in list(rows) + list(references)}
    columns = ((SMOKE_COLUMNS if any(r.task == "smoke" for r in rows) else ())
               + tuple(c for c in MAIN_COLUMNS if c is not WIKI_V1 or (c.task, c.metric) in held))
    ours = _entries(rows, run_configs, False, columns)
    refs = _entries([r for r in references if r.extra.get("table", "main") == "main"], {}, True, columns + (AVERAGE,))
    header = ["Model", "Params", "Tokens"] + [c.title for c in columns] + ["Avg"]
    latex_header = ["Model", "Params", "Tokens"] + [c.latex for c in columns] + ["Avg"]
    table = Table("Language modeling and zero-shot commonsense reasoning", header, latex_header)
    sources = Sources()
    missing = incomplete = stderr_seen = published = accuracy_shown = set_aside = False
    unlike: list[str] = []  # published averages that are not the mean of their row's cells
    limits: set = set()
    ncols = len(columns)
    every = ours + refs
    for preset in preset_order([r for e in every for r in e.cells.values()]):
        lines: list[list[Cell]] = []
        scored: dict[str, list[list[Cell]]] = {}  # per source (ours = ""): the lines that compete for bold
        group_ours = sorted((e for e in ours if e.preset == preset), key=by_name)
        group_refs = [e for e in refs if e.preset == preset]
        for entry in group_ours + group_refs:
            any_row = next(iter(entry.cells.values()))
            label = entry.label + (sources.mark(entry.source) if entry.reference else "")
            line = [text_cell(label), Cell(any_row.params, count=True), Cell(any_row.tokens_trained, count=True)]
            for col in columns:
                r = entry.cells.get(col)
                if r is None:
                    line.append(Cell())
                    missing = True
                elif is_oom(r):
                    line.append(text_cell("OOM"))
                else:
                    stderr = display(r.stderr, col.metric) if r.stderr is not None else None
                    stderr_seen |= stderr is not None
                    accuracy_shown |= col.is_accuracy
                    limits.update([r.extra["limit"]] if r.extra.get("limit") else [])
                    line.append(measured_cell(r, col.metric, stderr))
            avg, k = _shown_average(entry)
            mark = "†" if avg is not None and k < len(ACC_COLUMNS) else ""
            incomplete |= bool(mark)
            published |= AVERAGE in entry.cells
            own = _average(entry.cells)[0]
            off = AVERAGE in entry.cells and own is not None and abs(avg - own) > PUBLISHED_AVG_ROUNDING
            if off:
                unlike.append(f"{entry.label} at {preset} ({avg:.2f}; its cells: {own:.2f})")
            shown = printed_digits(entry.cells[AVERAGE], 2) if AVERAGE in entry.cells else 2
            limit = _average_limit(entry)  # an average over quick checks (--limit) is one too: it keeps their §
            line.append(Cell(avg, mark=mark, percent=True, limit=limit,
                             suffix=("§" if limit else "") + ("¶" if off else ""), digits=shown))
            lines.append(line)
            scored.setdefault(entry.source, []).append(line)
            if not entry.reference:
                for ref in group_refs:
                    if ref.model == entry.model and matches(entry.settings, ref.settings):
                        lines.append(_delta_line(entry, ref, sources, columns))
        for competing in scored.values():
            for j in range(3, 3 + ncols):
                set_aside |= mark_best(competing, j, columns[j - 3].lower_is_better)
            set_aside |= mark_best(competing, 3 + ncols, False)
        if lines:
            table.groups.append((preset, lines))
    table.notes.append(main_note(accuracy_shown or published, published))
    if WIKI_V1 in columns:
        table.notes.append(WIKI_V1_NOTE)
    if stderr_seen:
        table.notes.append("± is the standard error lm-eval reports.")
    if missing:
        table.notes.append("Blank cell: no result stored for it (not run, or not published).")
    if limits:
        table.notes.append(limit_note(limits, set_aside))
    if unlike:
        table.notes.append(f"¶ the paper's published average, which is not the mean of its row's accuracies: "
                           f"{'; '.join(unlike)} (results/paper/README.md).")
    if incomplete:
        table.notes.append(f"† average over the accuracy columns present only (fewer than {len(ACC_COLUMNS)}); "
                           "not comparable with complete averages and never bold. Rows with fewer than "
                           f"{MIN_AVERAGED} accuracies have no average.")
    if any(len(line) and line[0].text and line[0].text.startswith("Δ") for _, ls in table.groups for line in ls):
        table.notes.append("Δ: ours minus the reference named, per column (same preset and model, and every setting "
                           "the reference states, e.g. slopes, is ours too; its training data and recipe may differ).")
    table.notes += rate_notes(e.label for e in ours)
    table.notes += sources.notes()
    return table


def measured_cell(row: Row, metric: str, stderr: float | None, digits: int = 2) -> Cell:
    """The cell of a stored row of `metric`, in every table: in display units, marked § (and kept to
    its like in bold) where it was evaluated under --limit; a paper's number with the decimals it was
    printed with (GLA's 31.0 is not 31.00)."""
    limit = row.extra.get("limit") or None
    return Cell(display(row.value, metric), stderr, digits=printed_digits(row, digits), suffix="§" if limit else "",
                limit=limit, percent=is_fraction(metric))


def printed_digits(row: Row, digits: int) -> int:
    """The decimals a paper printed its number with (its `published` text), else `digits`."""
    printed = str(row.extra.get("published") or "").rstrip("*")
    return len(printed.split(".")[1]) if "." in printed else digits


def main_note(accuracies: bool, published: bool) -> str:
    """The main table's first footnote; what it says of accuracies and their average only where the
    table shows some (a run of held-out loss and perplexities alone has neither)."""
    bold = ("Bold: best in its size group among rows of the same source (our runs, or one paper), as setups differ "
            "between sources.")
    if not accuracies:
        return f"Perplexity and loss: lower is better. {bold}"
    return (f"Accuracies in percent; perplexity lower is better. {bold} Avg: "
            + ("as published for a paper's row that prints one, else " if published else "")
            + "recomputed from the accuracy cells shown.")


# a published average differs from the mean of its row's cells by the printed rounding (two decimals
# in SWAT's table, one in GLA's) at most; by more, the paper's own numbers disagree, and the table says so
PUBLISHED_AVG_ROUNDING = 0.1


def _shown_average(entry: Entry) -> tuple[float | None, int]:
    """The Avg cell's number and how many accuracy cells it covers: a paper's published average where
    its reference file has one (papers' averages can differ from the mean of their printed cells, see
    results/paper/README.md, and it is the number a reader checks against), else the mean of the
    accuracy cells."""
    mean, k = _average(entry.cells)
    published = entry.cells.get(AVERAGE)
    return (display(published.value, AVERAGE.metric) if published is not None else mean), k


def _average_limit(entry: Entry) -> frozenset | None:
    """The --limits of the accuracy cells that an Avg covers, None where all are full evaluations: an
    average over quick checks competes only with averages over the same."""
    limits = frozenset(r.extra.get("limit") or None for c, r in entry.cells.items() if c in ACC_COLUMNS)
    return None if limits <= {None} else limits


def _delta_line(ours: Entry, ref: Entry, sources: Sources, columns=MAIN_COLUMNS) -> list[Cell]:
    line = [text_cell(f"Δ vs {ref.label}{sources.mark(ref.source)}"), text_cell(""), text_cell("")]
    for col in columns:
        a, b = ours.cells.get(col), ref.cells.get(col)
        if a is None or b is None or is_oom(a) or a.value is None or b.value is None:
            line.append(Cell())
        else:  # a difference from a quick check (--limit) is one too: it keeps its §
            line.append(Cell(display(a.value, col.metric) - display(b.value, col.metric), signed=True,
                             percent=col.is_accuracy, suffix="§" if a.extra.get("limit") else ""))
    (avg_a, _), (avg_b, _) = _shown_average(ours), _shown_average(ref)
    # averages over different task sets are not comparable: no delta then
    same_tasks = {c for c in ACC_COLUMNS if c in ours.cells} == {c for c in ACC_COLUMNS if c in ref.cells}
    line.append(Cell(avg_a - avg_b, signed=True, percent=True, suffix="§" if _average_limit(ours) else "")
                if avg_a is not None and avg_b is not None and same_tasks else Cell())
    return line


# ---------------------------------------------------------------- ablation table

def ablation_table(rows: list[Row], references: list[Row] = (), run_configs: dict | None = None) -> Table:
    """SWAT variants side by side: their config (activation, slopes, rope, window, training length)
    and every result they have that one number per line can hold, smoke (held-out loss and
    perplexity) first, then the main table's columns: not the sweeps of the length, retrieval and
    speed tables, whose many rows per line would leave one arbitrary point in the cell."""
    run_configs = run_configs or {}
    known = {(c.task, c.metric): c for c in MAIN_COLUMNS}
    main_tasks = {c.task for c in MAIN_COLUMNS}

    def wanted(r: Row) -> bool:
        """Not length/retrieval/speed (their own tables); of a benchmark, only the paper's metric; no
        bookkeeping (lm-eval's sample_len, rows a task marks paper_metric=false)."""
        if r.task in SPEED_TASKS + RETRIEVAL_TASKS + ("length", AVERAGE_TASK) or r.metric == "sample_len":
            return False
        if r.task in main_tasks:
            return (r.task, r.metric) in known
        return r.extra.get("paper_metric") is not False

    # the models with a variant among these rows, beside their base rows
    varied = {r.model for r in rows if wanted(r) and variant_of(r, run_configs)}
    pick = [r for r in rows if (r.model in varied or r.extra.get("variant") is not None) and wanted(r)]
    refs = [r for r in references if (r.model in varied or r.extra.get("table") == "ablation") and wanted(r)]

    def order(tm: tuple[str, str]) -> tuple:
        """Smoke first (the held-out loss that every run measures), then the main table's columns,
        then the others by name."""
        return (tm[0] != "smoke",) + ((0, MAIN_COLUMNS.index(known[tm])) if tm in known else (1, tm))
    pairs = sorted({(r.task, r.metric) for r in pick + refs}, key=order)
    columns = [known.get(tm) or Column(f"{tm[0]} {tm[1]}", latex_escape(f"{tm[0]} {tm[1]}"), *tm) for tm in pairs]
    keys = list(ABLATION_KEYS) + ["seq_len"]
    header = ["Model", "Preset"] + keys + [c.title for c in columns]
    latex_header = ["Model", "Preset"] + [latex_escape(k) for k in keys] + [c.latex for c in columns]
    table = Table("Ablation: SWAT variants", header, latex_header)
    sources = Sources()
    entries = _entries(pick, run_configs, False, columns) + _entries(refs, {}, True, columns)
    missing = set_aside = False
    limits: set = set()
    for preset in preset_order([r for e in entries for r in e.cells.values()]):
        lines, scored = [], {}
        for e in sorted((e for e in entries if e.preset == preset), key=lambda e: (e.reference, *by_name(e))):
            any_row = next(iter(e.cells.values()))
            settings = settings_of(any_row, run_configs, e.reference)
            label = e.label + (sources.mark(e.source) if e.reference else "")
            line = [text_cell(label), text_cell(preset)] + [text_cell(settings.get(k, "")) for k in keys]
            for col in columns:
                r = e.cells.get(col)
                missing |= r is None
                if r is not None and r.extra.get("limit"):
                    limits.add(r.extra["limit"])
                line.append(Cell() if r is None else text_cell("OOM") if is_oom(r) else
                            measured_cell(r, col.metric, display(r.stderr, col.metric),
                                          2 if col.is_accuracy or col.lower_is_better else 4))
            lines.append(line)
            scored.setdefault(e.source, []).append(line)
        offset = 2 + len(keys)
        for competing in scored.values():
            for j, col in enumerate(columns):
                set_aside |= mark_best(competing, offset + j, col.lower_is_better)
        if lines:
            table.groups.append((preset, lines))
    table.notes.append("Settings from each run's run.json config (or the row's own keys); "
                       "accuracies in percent; bold: best in its preset among rows of the same source.")
    if WIKI_V1 in columns:
        table.notes.append(WIKI_V1_NOTE)
    if missing:
        table.notes.append("Blank cell: no result stored for it.")
    if limits:
        table.notes.append(limit_note(limits, set_aside))
    table.notes += rate_notes(e.label for e in entries)
    table.notes += sources.notes()
    return table


def settings_of(row: Row, run_configs: dict, reference: bool = False) -> dict[str, str]:
    """The ablation settings of a row as lower-case strings. Ours: the preset's defaults, then the
    run's config, then the row's own keys. A reference row: only what it states (its keys and
    `variant`), since a paper's unstated settings are unknown."""
    from harness.config import PRESETS, load_config
    keys = ABLATION_KEYS + ("seq_len",)
    out: dict = {}
    if not reference:
        config = run_configs.get(row.run) or {}
        preset = config.get("preset", row.preset)
        if preset in PRESETS:
            base = load_config(preset)
            out = {k: getattr(base.model, k) for k in ABLATION_KEYS} | {"seq_len": base.train.seq_len}
        out.update({k: v for k, v in config.get("model", {}).items() if k in ABLATION_KEYS})
        if "seq_len" in config.get("train", {}):
            out["seq_len"] = config["train"]["seq_len"]
    out.update({k: row.extra[k] for k in keys if row.extra.get(k) is not None})
    for part in filter(None, (p.strip() for p in str(row.extra.get("variant") or "").split(","))):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip()
    return {k: str(v).lower() for k, v in out.items()}


def matches(ours: dict[str, str], reference: dict[str, str]) -> bool:
    """A reference row describes our row when every setting it states is ours too."""
    return all(ours.get(k) == v for k, v in reference.items())


# ---------------------------------------------------------------- length and speed tables

def _length_key(r: Row):
    return r.extra.get("context", r.extra.get("seq_len"))


def batch_detail(r: Row) -> str:
    return f" b={r.extra['batch']}" if r.extra.get("batch") is not None else ""


def _natural(text: str) -> list:
    """Sort key ordering the numbers in text by value: kv=4 before kv=16, depth=0.25 before depth=0.5."""
    import re
    return [float(t) if i % 2 else t for i, t in enumerate(re.split(r"([0-9]+(?:\.[0-9]+)?)", text))]


def _sweep_table(title: str, sections: list[tuple[str, str, list[Row]]], run_configs: dict, note: str,
                 detail=batch_detail) -> Table:
    """Lines = models, one per Line (run, learning rate, seed and `detail`: the batch, say), columns =
    the sweep's lengths; one group per section. Bold compares the lines of one detail only (a
    throughput at batch 64 always beats one at batch 1, a passkey near the start of the prompt one
    at its end). A cell scored under --limit is marked § as in the main table (measured_cell), and
    bold compares it only with its like."""
    lengths = sorted({int(_length_key(r)) for _, _, rs in sections for r in rs if _length_key(r) is not None})
    header = ["Model"] + [human(n) if n >= 1024 and n % 1024 else _kilo(n) for n in lengths]
    table = Table(title, header, ["Model"] + [latex_escape(h) for h in header[1:]])
    sources = Sources()
    missing = set_aside = several_details = False
    oom: set[str] = set()  # the devices of the rows that ran out of memory
    limits: set = set()
    every_name: list[str] = []
    for label, metric, rs in sections:
        by_line: dict[Line, dict] = {}
        for r in rs:
            if _length_key(r) is not None:
                who = line_of(r, run_configs, r.run.startswith("paper:"), detail(r))
                by_line.setdefault(who, {}).setdefault(int(_length_key(r)), []).append(r)
        names = line_names(by_line)
        every_name += names.values()
        lines, alike = [], {}  # alike: detail -> its lines, which compete for bold
        for who in sorted(by_line, key=line_order):
            cols = by_line[who]
            name = names[who] + (sources.mark(who.source) if who.source else "")
            line = [text_cell(name)]
            for n in lengths:
                r = latest(cols[n]) if n in cols else None
                missing |= r is None
                oom |= {r.device or "an unnamed device"} if r is not None and is_oom(r) else set()
                cell = (Cell() if r is None else text_cell("OOM") if is_oom(r) else
                        measured_cell(r, metric, display(r.stderr, metric),
                                      shown_digits(display(r.value, metric), 1) if is_fraction(metric)
                                      else 2 if metric.endswith("ratio") else _digits(r.value)))
                limits.update([cell.limit] if cell.limit else [])
                line.append(cell)
            lines.append(line)
            alike.setdefault(who.detail, []).append(line)
        lower = _lower_is_better(metric)
        for competing in alike.values():
            for j in range(1, len(lengths) + 1):
                set_aside |= mark_best(competing, j, lower)
        several_details |= len(alike) > 1
        if lines:
            table.groups.append((label, lines))
    table.notes.append(note)
    if several_details:
        table.notes.append("Bold compares the lines of one setting (the same batch, depth or key-value pairs).")
    if missing:
        table.notes.append("Blank cell: not measured at that length.")
    if oom:
        table.notes.append(f"OOM: ran out of memory at that length (on {', '.join(sorted(oom))}).")
    if limits:
        table.notes.append(limit_note(limits, set_aside))
    table.notes += rate_notes(every_name)
    table.notes += sources.notes()
    return table


def _kilo(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _digits(value: float | None) -> int:
    if value is None or math.isnan(value) or value == 0:
        return 2
    return 0 if abs(value) >= 1000 else 1 if abs(value) >= 100 else 2 if abs(value) >= 1 else shown_digits(value, 4)


def shown_digits(value: float | None, digits: int) -> int:
    """`digits`, or more where a value below 1 would show fewer than two significant digits: a
    window's decode state of 3e-5 GB read as a (bold) 0.0000."""
    if value is None or value == 0 or math.isnan(value) or abs(value) >= 1:
        return digits
    return max(digits, 1 - math.floor(math.log10(abs(value))))


def _lower_is_better(metric: str) -> bool:
    m = metric.lower()
    return not ("per_s" in m or "throughput" in m or "tflop" in m or "mfu" in m or is_fraction(m))


def length_table(rows: list[Row], references: list[Row] = (), run_configs: dict | None = None) -> Table:
    """Perplexity per evaluation length (rows task=length, metric=ppl, key `context`); rows split by
    `position_bucket` are left to the plots, whole-sequence rows make the table."""
    run_configs = run_configs or {}
    pick = [r for r in list(rows) + [r for r in references if r.extra.get("table") == "length"]
            if r.task == "length" and r.extra.get("position_bucket") in (None, "all")]
    if any(r.metric == "ppl" for r in pick):  # the paper's curve; loss rows are the same numbers' log
        pick = [r for r in pick if r.metric == "ppl"]
    sections = [(f"{preset} · token {metric}", metric, [r for r in pick if r.preset == preset and r.metric == metric])
                for preset in preset_order(pick) for metric in sorted({r.metric for r in pick})]
    sections = [s for s in sections if s[2]]
    return _sweep_table("Per-token perplexity vs evaluation length", sections, run_configs,
                        "Per-token perplexity (loss: nats per token) of WikiText-2's test text in each model's "
                        "tokens, not the main table's word perplexity. Columns: evaluation context length in "
                        "tokens; bold: lowest in its group.")


def by_device(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """(device, its rows) in the order of the devices' names, "" for rows that name none: timings of
    two devices are two measurements (harness.results.store.measures_device), never one group's."""
    devices = sorted({r.device or "" for r in rows})
    return [(device, [r for r in rows if (r.device or "") == device]) for device in devices]


def speed_table(rows: list[Row], references: list[Row] = (), run_configs: dict | None = None) -> Table:
    """Throughput, latency and memory per sequence length, one group per (task, metric, preset, device)."""
    run_configs = run_configs or {}
    pick = [r for r in list(rows) + [r for r in references if r.extra.get("table") == "speed"]
            if r.task in SPEED_TASKS]
    sections = []
    for task in SPEED_TASKS:
        for metric in sorted({r.metric for r in pick if r.task == task}):
            for preset in preset_order([r for r in pick if r.task == task]):
                rows_here = [r for r in pick if (r.task, r.metric, r.preset) == (task, metric, preset)]
                for device, rs in by_device(rows_here):
                    sections.append((f"{task} · {metric} · {preset}" + (f" · {device}" if device else ""), metric, rs))
    return _sweep_table("Speed and memory vs sequence length", sections, run_configs,
                        "Columns: sequence length (training, prefill) or context (decode) in tokens; "
                        "bold: best in its group (highest throughput, lowest latency or memory). "
                        "Numbers from different devices are not comparable.")


def peer_ratio_table(rows: list[Row], peer: str) -> Table:
    """Each model's tokens/s over `peer`'s at the same point (sweep, preset, device, length, batch):
    the speed sweeps side by side as ratios, the peer itself at 1."""
    pick = [r for r in rows if r.task in SPEED_TASKS and r.metric == "tokens_per_s" and r.value]

    def point(r: Row) -> tuple:
        return r.task, r.preset, r.device, _length_key(r), r.extra.get("batch")
    base = {point(r): r.value for r in pick if r.model == peer}
    ratios = [replace(r, value=r.value / base[point(r)], stderr=None, metric="tokens_per_s_ratio")
              for r in pick if point(r) in base]
    sections = []
    for task in SPEED_TASKS:
        for preset in preset_order([r for r in ratios if r.task == task]):
            for device, rs in by_device([r for r in ratios if (r.task, r.preset) == (task, preset)]):
                sections.append((f"{task} · {preset}" + (f" · {device}" if device else ""), "tokens_per_s_ratio", rs))
    return _sweep_table(f"Throughput relative to {peer}", sections, {},
                        f"Each model's tokens/s over {peer}'s at the same length (and decode batch) on the same "
                        f"device; above 1: faster than {peer}. Columns: sequence length (training, prefill) or "
                        f"context (decode) in tokens.")


def retrieval_table(rows: list[Row], references: list[Row] = (), run_configs: dict | None = None) -> Table:
    """Accuracy per context length: passkey at each depth, MQAR at each number of key-value pairs;
    each group labelled with the accuracy of a uniform guess where it is known (`chance_level`)."""
    run_configs = run_configs or {}
    pick = [r for r in list(rows) + [r for r in references if r.extra.get("table") == "retrieval"]
            if r.task in RETRIEVAL_TASKS and r.metric == "acc"]
    sections = []
    for task in RETRIEVAL_TASKS:
        for preset in preset_order([r for r in pick if r.task == task]):
            rs = [r for r in pick if (r.preset, r.task) == (preset, task)]
            sections.append((f"{preset} · {task} acc" + _chance_label(rs, run_configs), "acc", rs))

    def detail(r: Row) -> str:
        if r.extra.get("depth") is not None:
            return f" depth={float(r.extra['depth']):g}"
        return f" kv={r.extra['num_kv']}" if r.extra.get("num_kv") is not None else ""
    table = _sweep_table("Retrieval accuracy vs context length", sections, run_configs,
                         "Columns: prompt (passkey) or sequence (MQAR) length in tokens; accuracy in percent; "
                         "depth: where the key sits in the prompt; kv: key-value pairs to recall.", detail)
    if any("· chance" in label for label, _ in table.groups):
        table.notes.append("chance: the accuracy of a uniform guess, for passkey one of the five-digit keys, for "
                           "MQAR one of the values the task draws from (a third of the tokenizer's first 8,192 "
                           "ordinary ids).")
    return table


def _chance_label(rows: list[Row], run_configs: dict) -> str:
    """' · chance 1.2%' for a group of our retrieval rows (several values where their tokenizers
    differ), '' where no row's chance level is known."""
    levels = sorted({level for r in rows if not r.run.startswith("paper:")
                     if (level := chance_level(r, run_configs)) is not None}, reverse=True)
    return " · chance " + ", ".join(f"{100 * level:.2g}%" for level in levels) if levels else ""


def chance_level(row: Row, run_configs: dict) -> float | None:
    """The accuracy of a uniform guess at a row of a task that registers its chance (`register_task`'s
    `chance`), with the run's tokenizer (its config's, else its preset's, else None: unknown); None
    where the task gives none, or its chance depends on a tokenizer that is unknown or not here."""
    from harness.registry import RegistryError, get_task
    try:
        chance = get_task(row.task).chance
    except RegistryError:  # rows of a plugin's task, read without its plugin
        return None
    config = run_configs.get(row.run) or {}
    name = config.get("train", {}).get("tokenizer") or _preset_tokenizer(config.get("preset", row.preset))
    return None if chance is None else chance(name)


def _preset_tokenizer(preset: str) -> str | None:
    from harness.config import PRESETS, load_config
    return load_config(preset).train.tokenizer if preset in PRESETS else None


def compact(table: Table) -> Table:
    """The table without the columns that are blank on every line: what a run measured, not the
    paper's whole width (the end of `harness run` and `harness eval`); and without the notes on what
    those columns held: a blank cell where none is left, the average where its column went."""
    lines = [line for _, group in table.groups for line in group]
    keep = [j for j in range(len(table.header))
            if j == 0 or any(j < len(line) and number_text(line[j]) for line in lines)]

    def pick(items: list) -> list:
        return [items[j] for j in keep if j < len(items)]
    blank = any(j < len(line) and not number_text(line[j]) for line in lines for j in keep[1:])
    notes = [note for note in table.notes if blank or not note.startswith("Blank cell")]
    if "Avg" in table.header and "Avg" not in pick(table.header):  # main_note's last sentence is on Avg
        notes = [note.split(" Avg: ")[0] for note in notes]
    return Table(table.title, pick(table.header), pick(table.latex_header),
                 [(label, [pick(line) for line in group]) for label, group in table.groups], notes)


def run_tables(rows: list[Row], run_configs: dict) -> str:
    """The tables that the end of `harness run` and `harness eval` prints, as markdown (also their
    results/<run>/table.md): the paper-layout tables these rows fill (main, length, retrieval, speed)
    without their blank columns, large numbers in e-notation (`readable_numbers`), then the paper
    metrics that none of them has a column for."""
    parts = []
    for kind in ("main", "length", "retrieval", "speed"):
        try:
            parts.append(render(readable_numbers(compact(build(kind, rows, [], run_configs))), "md"))
        except ResultsError:  # no rows for this table
            continue
    columns = {(c.task, c.metric) for c in MAIN_COLUMNS + SMOKE_COLUMNS}
    tabled = {"length", "passkey", "mqar", *SPEED_TASKS}
    rest = [r for r in rows if r.task not in tabled and (r.task, r.metric) not in columns
            and r.extra.get("paper_metric") is not False and r.extra.get("position_bucket") is None]
    if rest:
        parts.append("**Other results**\n\n" + rows_table(rest))
    return "\n".join(parts)


BUILDERS = {"main": main_table, "ablation": ablation_table, "length": length_table, "retrieval": retrieval_table,
            "speed": speed_table}


NEEDS = {"main": "any of the tasks smoke (held-out loss), wikitext, lambada_openai, piqa, hellaswag, winogrande, "
                 "arc_easy, arc_challenge, social_iqa, boolq (`harness run --tasks smoke,commonsense,perplexity`)",
         "ablation": "runs with a changed config (`harness run --models swat --set model.slopes=negative "
                     "--run NAME`) or rows with a `variant` key",
         "length": "task length (`harness run --tasks length`)",
         "retrieval": "tasks passkey, mqar (`harness run --tasks retrieval`)",
         "speed": "tasks speed_train, speed_prefill, speed_decode (`harness run --tasks speed` or "
                  "`harness bench models`)"}


def build(kind: str, rows: list[Row], references: list[Row] = (), run_configs: dict | None = None,
          results_dir: Path | None = None) -> Table:
    """The table `kind`; a table with no line at all is an error that says which rows it needs and,
    given the results folder whose runs were read for want of --run, which run folders nested deeper
    in it (read only when named) hold such rows."""
    table = BUILDERS[kind](rows, references, run_configs)
    if not table.groups:
        held = sorted({f"{r.task}/{r.metric}" for r in rows})
        what = (f"nothing for the {kind} table in these rows (they hold: {', '.join(held[:12])}"
                f"{', ...' if len(held) > 12 else ''})" if held else f"no rows to make the {kind} table of")
        raise ResultsError(f"{what}; it needs {NEEDS[kind]}" + (_nested_hint(kind, results_dir) if results_dir else ""))
    return table


def _nested_hint(kind: str, results_dir: Path) -> str:
    found = nested_runs(kind, results_dir)
    if not found:
        return ""
    more = f" (or {', '.join(found[1:4])}{', ...' if len(found) > 4 else ''})" if len(found) > 1 else ""
    return f"; runs nested deeper in {results_dir} are read only when named: try --run {found[0]}{more}"


def nested_runs(kind: str, results_dir: Path) -> list[str]:
    """The run folders two or more levels down in results_dir (e.g. speed/<device>/340m), which are not
    read without --run, whose rows fill the table `kind`; as --run names relative to results_dir."""
    found = []
    for rows_file in sorted(set(Path(results_dir).glob("*/*/**/rows.jsonl"))):
        try:
            record = load_run(rows_file.parent, warn=lambda _: None)
        except ResultsError:  # not a rows file: it fills no table
            continue
        configs = {name: record.info.get("config") for name in {r.run for r in record.rows}}
        if BUILDERS[kind](record.rows, [], configs).groups:
            found.append(rows_file.parent.relative_to(results_dir).as_posix())
    return found


# ---------------------------------------------------------------- inputs and outputs

def inputs(run_specs: list[str], reference_specs: list[str], results_dir) -> tuple[list[tuple[str, Path]], list[Path]]:
    """What `collect` reads: the runs, as (spec, rows file), and the reference files; each once
    however often or however spelt it is named.

    No runs named: every run folder directly under results_dir (results/paper holds no rows.jsonl);
    nested ones (results/speed/<device>/340m) only when named. A reference may be a path or the name
    of a file in `reference_folder` (with or without .csv), or `all` for every file there.
    """
    results_dir = Path(results_dir)
    if not run_specs and not results_dir.is_dir():
        raise ResultsError(f"the results folder {results_dir} does not exist; pass --results DIR (the folder "
                           f"that holds the runs) or --run RUN")
    specs = list(run_specs) or run_folders(results_dir)
    runs = _once([(spec, run_location(spec, results_dir)[1]) for spec in specs], path=lambda run: run[1])
    refs = []
    paper = reference_folder(results_dir)
    for spec in reference_specs:
        if spec == "all":
            files = sorted(paper.glob("*.csv"))
            if not files:
                raise ResultsError(f"no reference files in {paper}; see results/paper/README.md")
        else:
            candidates = [Path(spec), paper / spec, paper / f"{spec}.csv"]
            files = [next((p for p in candidates if p.is_file()), Path(spec))]
        refs += files
    return runs, _once(refs)


SHIPPED_REFERENCES = Path(__file__).resolve().parents[2] / "results" / "paper"  # in a clone of the repository


def reference_folder(results_dir: Path) -> Path:
    """Where reference files are looked up by name: results_dir/paper where it holds any, else the
    verified published rows committed with the harness (results/paper of the clone it runs from), so
    that --results pointing at one's own runs elsewhere still finds them."""
    own = results_dir / "paper"
    return own if any(own.glob("*.csv")) or not SHIPPED_REFERENCES.is_dir() else SHIPPED_REFERENCES


def _once(items: list, path=lambda item: item) -> list:
    """The items, one per file (resolved): the first item that names it is kept."""
    kept: dict[Path, object] = {}
    for item in items:
        kept.setdefault(Path(path(item)).resolve(), item)
    return list(kept.values())


def collect(run_specs: list[str], reference_specs: list[str], results_dir, warn=print):
    """(rows, reference rows, run configs) from run names/folders/files and reference files/names
    (`inputs`). Duplicates and conflicts are reported (harness.results.store.dedupe_rows)."""
    runs, reference_files = inputs(run_specs, reference_specs, results_dir)
    rows, configs = [], {}
    for spec, _ in runs:
        record = load_run(spec, results_dir, warn=warn)
        rows += record.rows
        for name in {r.run for r in record.rows}:
            configs[name] = record.info.get("config")
    refs = [r for f in reference_files for r in read_reference(f, warn=warn)]
    return dedupe_rows(rows, warn=warn), dedupe_rows(refs, warn=warn), configs


def check_outputs(out: str | None, plots: str | None, read: list[Path]) -> None:
    """Refuse, before anything is written or printed, an output path that cannot be written or would
    destroy an input: --out on a folder, under a file, or on a rows or reference file being read;
    --plots where a file stands."""
    if out:
        path = Path(out)
        if path.is_dir():
            raise ResultsError(f"--out {out} is a folder, where the table needs a file; give another path, "
                               f"e.g. {path / 'table.md'}")
        blocking = file_in_the_way(path.parent)
        if blocking is not None:
            raise ResultsError(f"--out {out}: {blocking} is a file, where a folder would hold the table; "
                               f"give another path")
        if path.exists() and any(f.exists() and path.samefile(f) for f in read):
            raise ResultsError(f"--out {out} is a file this table is read from; writing the table there would "
                               f"destroy it: give another path")
    if plots:
        blocking = file_in_the_way(Path(plots))
        if blocking is not None:
            raise ResultsError(f"--plots {plots}: {blocking} is a file, where the plots need a folder; "
                               f"give another path")
    for option, path, folder in (("--out", out, Path(out or ".").parent), ("--plots", plots, Path(plots or "."))):
        if path:
            _check_writable(option, path, folder)


def _check_writable(option: str, given: str, folder: Path) -> None:
    """A file can be made in `folder`, or in its nearest existing parent where it is still to be made
    (a read-only disk, a folder of another user, /proc): found by making one, so that the table is not
    printed or written before the plots fail."""
    existing = nearest_existing(folder)
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".harness-tables.", suffix=".tmp")
    except OSError as err:
        raise ResultsError(f"{option} {given} cannot be written: no file can be made in {existing} "
                           f"({(err.strerror or type(err).__name__).lower()}); give another path") from None
    os.close(fd)
    os.unlink(probe)
