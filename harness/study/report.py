"""A study's tables, fits and plots, from its rows alone (results/<study>/rows.jsonl):

    lr_choice.json            each model's learning rate per size: swept (best, interpolated optimum)
                              or extrapolated
    lr_sweep.md/.csv/.png     held-out loss per learning rate, one line per model, a panel per size
    main.md/.csv              per size: budget, each model at its own learning rate, held-out loss
                              (mean +- std over seeds), WikiText-2, LAMBADA, the benchmarks with their
                              chance level; count-based references beside the models; a model that
                              does not beat the strongest of them (the study's last reference) is marked
    heldout_by_source.md      held-out loss per corpus source (mean over seeds)
    length.md, passkey.md, mqar.md (+ CSV), ppl_vs_length.png
                              per size: perplexity past the training length and the retrieval probes'
                              accuracy per length, each model at its own learning rate
    paired.md                 per size with two or more seeds: each model against the others, paired
                              by seed (same initialisation seed, same data order), with a t test
    gaps.md                   each focus model's held-out loss gap to every other model at each size,
                              and how it changed from the smallest size to the largest
    training_curves.png (+ CSV) training loss against tokens per size, each model at its own
                              learning rate (from the kept training logs, train/<size>/)
    scaling.md, loss_vs_params.png, loss_vs_compute.png (+ CSV)
                              power laws L = A x^b over the sizes, exponent +- its standard error;
                              compute is counted here, by harness/model/flops.py (`Results.flops`)
    status.md                 runs done and still to do, per stage and size

Every number is read from a stored row (but compute, which is the current count times the row's tokens
trained); a cell without one stays blank. A file of these that the rows
no longer give (a table of a seed since dropped) is removed, not left stale beside the others.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean, stdev

from harness.evaluation.lm_eval_tasks import chance_levels
from harness.files import atomic_write_text
from harness.model.build import build_model
from harness.model.flops import FlopCount, flops_per_token
from harness.registry import MissingExtraError, get_model
from harness.results.render import Cell, Table, human, render, text_cell
from harness.results.store import Row, read_rows
from harness.results.tables import mark_best, shown_digits
from harness.study.spec import (
    DIVERGED,
    Unit,
    choose_lrs,
    pending_tasks,
    power_law,
    rows_file,
    run_label,
    scored_weights,
    sweep_plan,
    units,
)
from harness.training.trainlog import LOG_FILE, read_log

# two-sided 95% critical values of Student's t by degrees of freedom, 1..30 (beyond: `t_critical`)
T_CRITICAL_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964  # the normal distribution's 97.5% quantile
# (task, metric, column title) of the benchmark columns, in the paper's order
BENCHMARKS = (("lambada_openai", "acc", "LMB. acc"), ("piqa", "acc", "PIQA"), ("hellaswag", "acc_norm", "Hella."),
              ("winogrande", "acc", "Wino."), ("arc_easy", "acc", "ARC-e"), ("arc_challenge", "acc_norm", "ARC-c"),
              ("social_iqa", "acc", "SIQA"), ("boolq", "acc", "BoolQ"))
PERPLEXITIES = (("wikitext_2_v1", "word_perplexity", "Wiki-2 ppl↓"), ("lambada_openai", "perplexity", "LMB. ppl↓"))


def t_critical(df: int) -> float:
    """The two-sided 95% critical t: tabulated to 30 degrees of freedom, beyond by the Cornish-Fisher
    expansion around the normal quantile (within 1e-4 there; the normal's 1.96 alone is too small,
    2.04 at 30, and would call differences the seeds do not support)."""
    if df <= len(T_CRITICAL_95):
        return T_CRITICAL_95[df - 1]
    z = Z_975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def is_total(r: Row) -> bool:
    """A row of a whole measurement, not its per-source or per-bucket part."""
    return r.extra.get("corpus_source") is None and r.extra.get("position_bucket") in (None, "all")


def size_seeds(study, size: str) -> list[int]:
    """The seeds of a size's final runs (the sweep's, at a size the final stage leaves out)."""
    return study.final_seeds.get(size, [study.sweep_seed])


def _stat(values: list[float]) -> tuple[float, float | None, int]:
    return mean(values), stdev(values) if len(values) > 1 else None, len(values)


class Results:
    """The rows of one study, indexed by what the report needs."""

    def __init__(self, study, rows: list[Row]):
        self.study = study
        self.rows = rows
        self.lrs = choose_lrs(rows, study)
        self.sweeps = sweep_plan(rows, study)  # (model, size) -> (grid, {lr: loss measured})
        self.sweep_losses = {key: got for key, (_, got) in self.sweeps.items() if got}
        # runs whose training diverged -> why (their rows hold no score)
        self.diverged = {Unit(r.model, r.preset, r.extra.get("lr"), r.seed, ()): r.extra.get(DIVERGED, "")
                         for r in rows if r.metric == DIVERGED}
        self._flops: dict[tuple[str, str], FlopCount | None] = {}

    def flops(self, model: str, size: str) -> FlopCount | None:
        """The model FLOPs per token of (model, size), counted now by harness/model/flops.py from the model
        the study builds at that size (on the meta device: nothing allocated) at its training length. The
        rows' `train_flops` hold what each training counted at its commit, which left the recurrent cores
        out before they had counts; one count for every row of a (model, size) keeps their compute
        comparable. None where the model cannot be built here (an extra it needs, e.g. fla, is not
        installed): its rows' own count stands, and the note says so."""
        if (model, size) not in self._flops:
            cfg = self.study.config(size, size_seeds(self.study, size)[0])
            try:
                model_here = build_model(model, cfg.model, "meta")
            except MissingExtraError:
                self._flops[model, size] = None
            else:
                self._flops[model, size] = flops_per_token(model_here, cfg.train.seq_len)
        return self._flops[model, size]

    def final_lr(self, model: str, size: str) -> float | None:
        return self.lrs.get(model, {}).get(size, {}).get("lr")

    def values(self, model: str, size: str, task: str, metric: str, source: str | None = None,
               at: dict | None = None, over: str | None = None) -> dict[int, float]:
        """{seed: value} of the final runs of (model, size): the model's chosen lr, the size's seeds.
        `at`: only rows whose extra fields hold these values (a context length, say); `over`: an extra
        field whose values are averaged within a seed (a passkey's depths)."""
        lr = None if model in self.study.references else self.final_lr(model, size)
        if lr is None and model not in self.study.references:
            return {}
        seeds = set(size_seeds(self.study, size))
        per_seed: dict[int, dict] = {}
        for r in self.rows:
            if (r.model, r.preset, r.task, r.metric) == (model, size, task, metric) and r.extra.get("lr") == lr \
                    and r.seed in seeds and r.extra.get("corpus_source") == source \
                    and r.extra.get("position_bucket") in (None, "all") and r.value is not None \
                    and all(r.extra.get(k) == v for k, v in (at or {}).items()):
                per_seed.setdefault(r.seed, {})[r.extra.get(over) if over else None] = r.value
        return {seed: mean(got.values()) for seed, got in per_seed.items()}

    def models(self) -> list[str]:
        return self.study.models + self.study.references


# ---------------------------------------------------------------- learning-rate sweep

def swept_lrs(study, losses: dict) -> list[float]:
    """The study's grid and every step past its edges that some model was swept at, ascending."""
    return sorted(set(study.lrs).union(*losses.values()))


def lr_sweep_table(res: Results) -> Table:
    study, losses = res.study, res.sweep_losses
    lrs = swept_lrs(study, losses)
    header = ["Model"] + [f"lr {lr:g}" for lr in lrs] + ["best lr", "optimum"]
    table = Table("Learning-rate sweep: held-out loss (nats/token) at the end of training", header,
                  [h.replace("_", r"\_") for h in header])
    for size in study.sweep_sizes:
        lines = []
        for model in study.models:
            got = losses.get((model, size), {})
            if not got:
                continue
            line = [text_cell(model)] + [sweep_cell(got.get(lr)) for lr in lrs]
            choice = res.lrs.get(model, {}).get(size)
            best = "" if choice is None else f"{choice['lr']:g}" + (" (grid edge)" if choice["edge"] else "")
            grid = res.sweeps[(model, size)][0]
            line.append(text_cell(best or sweep_progress(grid, got)))
            line.append(text_cell("" if choice is None else f"{choice['optimum']:g}"))
            if choice is not None:
                for c in line[1:-2]:
                    c.bold = c.value == choice["loss"]
            lines.append(line)
        if lines:
            budget = study.budgets[size]
            table.groups.append((f"{size}: {human(budget['budget_params'])} non-embedding parameters, "
                                 f"{human(budget['tokens'])} tokens ({budget['epochs']:.2f} epochs), seed "
                                 f"{study.sweep_seed}", lines))
    table.notes.append("Bold: the model's lowest held-out loss; `grid edge`: the best is the smallest or largest "
                       "learning rate swept, so the grid may not bracket the optimum. `optimum`: the vertex of "
                       "the parabola in log lr through the best rate and its two neighbours (the best itself at "
                       "an edge); sizes not swept take the power law through these.")
    if any(math.isinf(loss) for got in losses.values() for loss in got.values()):
        table.notes.append("`diverged`: training stopped at a loss or gradient norm that was not finite; that rate "
                           "is ruled out of the choice (status.md says where and why).")
    if study.window:
        table.notes.append(f"Sizes after the first sweep {study.window} rates around the model's best at the "
                           f"previous size, and go on past an edge where the best lies there; blank: not swept.")
    past = [f"{lr:g}" for lr in lrs if lr not in study.lrs]
    if past:
        table.notes.append(f"lr {', '.join(past)}: past the study's grid, swept only for the models whose best lay "
                           f"at that edge (up to {study.extend_edges} step(s) per side).")
    return table


def sweep_cell(loss: float | None) -> Cell:
    return text_cell(DIVERGED) if loss is not None and math.isinf(loss) else Cell(loss, digits=4)


def sweep_progress(grid: list[float] | None, got: dict[float, float]) -> str:
    """What a sweep without a best rate is at: waiting for the previous size, runs done, or all diverged."""
    if not grid:
        return "waits"
    if all(lr in got and math.isinf(got[lr]) for lr in grid):
        return "all diverged"
    return f"{sum(lr in got for lr in grid)}/{len(grid)} run"


def lr_sweep_plot(res: Results, out: Path, name: str) -> list[Path]:
    from harness.results.plots import _write_plot
    study, losses = res.study, res.sweep_losses
    lrs = swept_lrs(study, losses)
    sizes = [s for s in study.sweep_sizes if any(k[1] == s for k in losses)]
    if not sizes:
        return []
    fig, panels = size_panels(sizes, sharex=True)
    lines, handles = [], {}
    for ax, size in panels:
        for model in study.models:
            got = {lr: loss for lr, loss in losses.get((model, size), {}).items() if math.isfinite(loss)}
            if got:  # a diverged rate has no point to draw
                xs = sorted(got)
                handles[model], = ax.plot(xs, [got[x] for x in xs], label=model, **model_style(study, model))
                lines += [[size, model, x, got[x]] for x in xs]
        ax.set_xscale("log")
        ax.set_xlim(min(lrs) / 1.3, max(lrs) * 1.3)
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("held-out loss (nats/token)")
        ax.set_title(f"{size}: {human(study.budgets[size]['budget_params'])} non-embedding params")
        ax.grid(alpha=0.3)
    finish_panels(fig, study, handles)
    return _write_plot(fig, out, name, ["size", "model", "lr", "heldout_loss"], lines)


def size_panels(sizes: list[str], sharex: bool = False) -> tuple:
    """A figure with one panel per size, side by side: (figure, [(axes, size), ...])."""
    from harness.results.plots import pyplot
    fig, axes = pyplot().subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False, sharex=sharex)
    return fig, list(zip(axes[0], sizes))


def finish_panels(fig, study, handles: dict) -> None:
    """One legend of the study's models for all panels, beside them; then the layout."""
    shown = [m for m in study.models if m in handles]
    fig.legend([handles[m] for m in shown], shown, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()


def plain_log_ticks(axis, values: list[float]) -> None:
    """Plain labels (3.2, 3.6, 4; 300, 400, 600) on a log axis whose values span less than a
    decade, where matplotlib would write 4 x 10^0 at one or two ticks."""
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter
    if values and max(values) < 10 * min(values):
        axis.set_major_locator(MaxNLocator(6))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())


def sci_label(x: float, _pos=None) -> str:
    """A log axis's tick at m x 10^k as matplotlib mathtext: 10^k where m is 1."""
    k = math.floor(math.log10(x) + 1e-9)
    m = round(x / 10 ** k, 6)
    return f"$10^{{{k}}}$" if m == 1 else f"${m:g}\\times10^{{{k}}}$"


def model_style(study, model: str) -> dict:
    """One colour, marker and line style per model of the study, the same in every panel and plot:
    tab10's ten hues for the first ten models, then the same hues again with dashed lines and the
    next marker (tab20 pairs each hue dark and light, which a legend of a dozen models reads as one)."""
    from harness.results.plots import pyplot
    i = (study.models + study.references).index(model)
    return {"color": pyplot().cm.tab10(i % 10), "marker": "osD^v<>ph*"[(i + i // 10) % 10], "markersize": 5,
            "linestyle": "-" if i < 10 else "--"}


# ---------------------------------------------------------------- the main table

def seeds_suffix(n: int, defined: int) -> str:
    """` (n=N)` after a mean over N seeds where there are several, or fewer than the `defined` seeds of
    its size: a mean over 1 of 2 seeds (a run still to score) must not read as the size's result."""
    return f" (n={n})" if n > 1 or n < defined else ""


def _mean_cell(values: dict[int, float], defined: int, digits: int, scale: float = 1.0) -> Cell:
    """The mean over seeds ({seed: value}) ± their std, of a size with `defined` seeds, with two
    significant digits at least (an MQAR accuracy of 0.024% is no 0.00)."""
    if not values:
        return Cell()
    m, s, n = _stat([v * scale for v in values.values()])
    return Cell(m, s, digits=shown_digits(m, digits), suffix=seeds_suffix(n, defined))


def main_table(res: Results) -> Table:
    study = res.study
    bench = [(t, m, title) for t, m, title in BENCHMARKS if any((r.task, r.metric) == (t, m) for r in res.rows)]
    ppl = [(t, m, title) for t, m, title in PERPLEXITIES if any((r.task, r.metric) == (t, m) for r in res.rows)]
    chance = chance_levels() if bench else {}
    header = (["Model", "non-emb. params", "tokens/param", "lr", "held-out loss↓"]
              + [title for _, _, title in ppl] + [title for _, _, title in bench])
    table = Table("Models at matched budgets, each at its own learning rate", header,
                  [h.replace("_", r"\_").replace("↓", r"$\downarrow$") for h in header])
    bar = study.references[-1] if study.references else None  # references are listed weakest first
    below_bar = False
    for size in study.final_sizes:
        budget = study.budgets[size]
        seeds = len(size_seeds(study, size))
        lines = []
        bar_values = {key: res.values(bar, size, *key) for key in [("smoke", "loss")] + [(t, m) for t, m, _ in ppl]
                      } if bar else {}
        for model in res.models():
            loss = res.values(model, size, "smoke", "loss")
            if not loss:
                continue
            nonemb = next((r.extra.get("non_embedding_params") for r in res.rows
                           if (r.model, r.preset) == (model, size) and r.extra.get("non_embedding_params")), None)
            lr = res.final_lr(model, size)
            edge = res.lrs.get(model, {}).get(size, {}).get("edge")
            line = [text_cell(model), text_cell("counts") if model in study.references else Cell(nonemb, count=True),
                    text_cell(f"{study.tokens_per_param:g}"),
                    text_cell("" if lr is None else f"{lr:g}" + (" (grid edge)" if edge else ""))]
            for key, cell in [(("smoke", "loss"), _mean_cell(loss, seeds, 4))] + [
                    ((t, m), _mean_cell(res.values(model, size, t, m), seeds, 2)) for t, m, _ in ppl]:
                ref = bar_values.get(key)
                if model != bar and ref and cell.value is not None and cell.value >= mean(ref.values()):
                    cell.suffix = "‡" + cell.suffix  # a footnote, not a mark: the best is bold even under the bar
                    below_bar = True
                line.append(cell)
            line += [_mean_cell(res.values(model, size, t, m), seeds, 2, 100.0) for t, m, _ in bench]
            lines.append(line)
        if not lines:
            continue
        for j in range(4, len(header)):
            competing = [ln for ln in lines if ln[0].text not in study.references]
            mark_best(competing, j, j < 4 + 1 + len(ppl))
        if bench:
            lines.append([text_cell("chance"), text_cell(""), text_cell(""), text_cell("")]
                         + [Cell() for _ in range(1 + len(ppl))]
                         + [Cell(100 * chance[t], digits=2) if chance.get(t) else Cell() for t, _, _ in bench])
        table.groups.append((f"{size}: {human(budget['budget_params'])} non-embedding parameters (reference "
                             f"{study.reference_model}), {human(budget['tokens'])} tokens = {budget['epochs']:.2f} "
                             f"epochs", lines))
    table.notes.append("Held-out loss: nats per token on the corpus's held-out documents (the same documents for "
                       "every seed); mean ± std over seeds (n). Accuracies in percent; `chance`: a uniform guess "
                       "over each item's choices. Bold: best model per column (the count-based references "
                       "do not compete).")
    if below_bar:
        table.notes.append(f"‡ not better than the {get_model(bar).description}.")
    finals = [f"{unit.key} ({why})" for unit, why in res.diverged.items() if unit.size in study.final_sizes
              and unit.seed in study.final_seeds.get(unit.size, []) and unit.lr == res.final_lr(unit.model, unit.size)]
    if finals:
        table.notes.append(f"Diverged, so left out of the means: {'; '.join(finals)}.")
    if any(c.value is None and c.text is None for _, lines in table.groups for ln in lines
           if ln[0].text != "chance" for c in ln):  # the chance line's blanks are by design
        table.notes.append("Blank: not measured yet (status.md lists what is left); `grid edge`: the best learning "
                           "rate is the sweep's smallest or largest.")
    return table


def by_source_table(res: Results) -> Table | None:
    study = res.study
    sources = sorted({r.extra["corpus_source"] for r in res.rows if r.extra.get("corpus_source") is not None})
    if not sources:
        return None
    table = Table("Held-out loss per corpus source (nats/token, mean over seeds)", ["Model"] + sources,
                  ["Model"] + [s.replace("_", r"\_") for s in sources])
    for size in study.final_sizes:
        lines = []
        for model in res.models():
            cells = [_mean_cell(res.values(model, size, "smoke", "loss", source), len(size_seeds(study, size)), 3)
                     for source in sources]
            if any(c.value is not None for c in cells):
                for c in cells:
                    c.suffix = ""
                lines.append([text_cell(model)] + cells)
        for j in range(1, len(sources) + 1):
            mark_best([ln for ln in lines if ln[0].text not in study.references], j, True)
        if lines:
            table.groups.append((size, lines))
    tokens = {}
    for r in res.rows:
        if r.extra.get("corpus_source") is not None and r.n:
            tokens[r.extra["corpus_source"]] = r.n
    total = sum(tokens.values())
    if total:
        table.notes.append("Held-out tokens per source: " + ", ".join(
            f"{s} {human(n)} ({100 * n / total:.0f}%)" for s, n in sorted(tokens.items())) + ".")
    return table


# ---------------------------------------------------------------- paired comparisons over seeds

def seed_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a's value minus b's at each seed both have ({seed: value}), in seed order: the pairs share
    the initialisation seed and the data order."""
    return [a[seed] - b[seed] for seed in sorted(set(a) & set(b))]


def paired_table(res: Results) -> Table | None:
    study = res.study
    header = ["Model A", "Model B", "seeds", "mean A − B", "std", "t", "verdict"]
    table = Table("Held-out loss, paired by seed (A − B < 0: A is better)", header, header)
    untested, tested_sizes = 0, []
    for size in study.final_sizes:
        if len(study.final_seeds.get(size, [])) < 2:
            continue
        per_model = {m: res.values(m, size, "smoke", "loss") for m in study.models}
        lines = []
        for a in study.focus:
            for b in study.models:
                if b == a or (b in study.focus and study.focus.index(b) < study.focus.index(a)):
                    continue
                diffs = seed_differences(per_model[a], per_model[b])
                if len(diffs) >= 2:
                    lines.append(paired_line(a, b, diffs))
                elif per_model[a] and per_model[b]:
                    untested += 1
        if lines:
            table.groups.append((size, lines))
            tested_sizes.append(size)
    if not table.groups:
        return None
    table.notes += paired_notes(study, sum(len(lines) for _, lines in table.groups), untested, tested_sizes)
    return table


def paired_line(a: str, b: str, diffs: list[float]) -> list[Cell]:
    """One comparison: the mean difference over the seeds, its std, the paired t and its verdict."""
    m, s, n = _stat(diffs)
    t = m / (s / math.sqrt(n)) if s else math.copysign(math.inf, m) if m else 0.0
    crit = t_critical(n - 1)
    verdict = f"{a} better" if t < -crit else f"{b} better" if t > crit else f"not resolved (|t| < {crit:.2f})"
    return [text_cell(a), text_cell(b), text_cell(str(n)), Cell(m, digits=4, signed=True), Cell(s, digits=4),
            Cell(t, digits=2, signed=True), text_cell(verdict)]


def paired_notes(study, tested: int, untested: int, sizes: list[str]) -> list[str]:
    """What a verdict rests on: the test; how many were made, none corrected for the others (some
    pass by chance); the pairs left out; and the seed whose runs chose the learning rates, biased low."""
    notes = ["Pairs share the seed, hence the initialisation seed and the order of the training data; verdict: a "
             f"two-sided paired t test at 5% (critical t for n − 1 degrees of freedom), {tested} of them, none "
             "corrected for the others: where no two models differed, one test in twenty would still be called."]
    if untested:
        notes.append(f"Left out: {untested} pair(s) with fewer than two seeds in common (a t test needs two).")
    swept = [size for size in sizes if size in study.sweep_sizes and study.sweep_seed in study.final_seeds[size]]
    if swept:
        notes.append(f"Seed {study.sweep_seed} at {', '.join(swept)} is the sweep's run at the learning rate it "
                     "chose: the rate won on that very run, so its loss is biased low (each model's by its own "
                     "sweep), where the other seeds' are not.")
    return notes


def gaps_table(res: Results) -> Table | None:
    """Each focus model's held-out loss minus every other model's, per size: the gap as it moves
    with size. A cell is the mean over the seeds both models have at that size (± their std where
    there are two or more); `change` is the gap at the largest size that has one minus the gap at
    the smallest (< 0: the focus model gains on the other as the models grow)."""
    study = res.study
    sizes = study.final_sizes
    header = ["Other model"] + [f"gap at {size}" for size in sizes] + ["change"]
    table = Table("Held-out loss gap to each other model, per size (focus − other, nats/token; < 0: the focus "
                  "model is better)", header, [h.replace("_", r"\_") for h in header])
    losses = {(m, size): res.values(m, size, "smoke", "loss") for m in res.models() for size in sizes}
    for focus in study.focus:
        lines = []
        for other in res.models():
            if other == focus:
                continue
            cells, gaps = [], []
            for size in sizes:
                diffs = seed_differences(losses[(focus, size)], losses[(other, size)])
                if not diffs:
                    cells.append(Cell())
                    continue
                m, s, n = _stat(diffs)
                cells.append(Cell(m, s, digits=3, signed=True, suffix=seeds_suffix(n, len(size_seeds(study, size)))))
                gaps.append(m)
            if gaps:
                change = Cell(gaps[-1] - gaps[0], digits=3, signed=True) if len(gaps) > 1 else Cell()
                lines.append([text_cell(other)] + cells + [change])
        if lines:
            table.groups.append((f"{focus} − other", lines))
    if not table.groups:
        return None
    table.notes.append("A cell: the mean over the seeds both models have at that size, ± their std (n) where "
                       "there are two or more, (n) alone where fewer than the size's seeds; each model at its own "
                       "learning rate. `change`: the gap at the largest size with one minus the gap at the smallest "
                       "(< 0: the focus model gains as the models grow). A size with one seed gives no spread: "
                       "compare a change with the std at the size that has several before reading a trend into it.")
    return table


# ---------------------------------------------------------------- long context

# (file, task, metric, column key, averaged field, scale, lower is better, title, note)
LONG_CONTEXT = (
    ("length", "length", "ppl", "context", None, 1.0, True,
     "Per-token perplexity vs evaluation length (WikiText-2), each model at its own learning rate",
     "Columns: evaluation context in tokens (past the training length: extrapolation); perplexity per "
     "token of the study's tokenizer (main.md's WikiText-2 column is per word); mean ± std over seeds (n). "
     "Bold: lowest per column."),
    ("passkey", "passkey", "acc", "context", "depth", 100.0, False,
     "Passkey retrieval accuracy vs prompt length, each model at its own learning rate",
     "Columns: prompt length in tokens; accuracy in percent, averaged over the key's depths in the prompt; "
     "mean ± std over seeds (n). Bold: highest per column."),
    ("mqar", "mqar", "acc", "context", "num_kv", 100.0, False,
     "MQAR accuracy vs sequence length, each model at its own learning rate",
     "Columns: sequence length in tokens; accuracy in percent, averaged over the numbers of key-value "
     "pairs to recall; mean ± std over seeds (n). Bold: highest per column."),
)


def training_lengths(res: Results, task: str) -> list[int]:
    """The training lengths the task's rows were measured against."""
    return sorted({r.extra["train_length"] for r in res.rows if r.task == task and r.extra.get("train_length")})


def long_context_table(res: Results, task: str, metric: str, key: str, over: str | None, scale: float,
                       lower: bool, title: str, note: str) -> Table | None:
    """Rows = models per size, columns = the probe's lengths."""
    xs = sorted({r.extra[key] for r in res.rows if (r.task, r.metric) == (task, metric)
                 and r.extra.get(key) is not None})
    if not xs:
        return None
    header = ["Model"] + [f"{x // 1024}K" if x >= 1024 else str(x) for x in xs]
    table = Table(title, header, header)
    train_lengths = training_lengths(res, task)
    for size in res.study.final_sizes:
        lines, seeds = [], len(size_seeds(res.study, size))
        for model in res.models():
            cells = [_mean_cell(res.values(model, size, task, metric, at={key: x}, over=over), seeds, 2, scale)
                     for x in xs]
            if any(c.value is not None for c in cells):
                lines.append([text_cell(model)] + cells)
        if not lines:
            continue
        for j in range(1, len(header)):
            mark_best([ln for ln in lines if ln[0].text not in res.study.references], j, lower)
        table.groups.append((size, lines))
    table.notes.append(note + " The count-based references do not compete."
                       + (f" Training length: {', '.join(map(str, train_lengths))}." if train_lengths else ""))
    return table


def ppl_vs_length_plot(res: Results, out: Path, name: str) -> list[Path]:
    """Perplexity vs evaluation length, a panel per size, one line per model (mean over seeds)."""
    from harness.results.plots import _write_plot
    study = res.study
    xs = sorted({r.extra["context"] for r in res.rows if (r.task, r.metric) == ("length", "ppl")
                 and r.extra.get("context") is not None})
    curves = {}
    for size in study.final_sizes:
        for model in study.models:
            pts = {x: mean(v.values()) for x in xs
                   if (v := res.values(model, size, "length", "ppl", at={"context": x}))}
            if pts:
                curves[(size, model)] = pts
    sizes = [s for s in study.final_sizes if any(k[0] == s for k in curves)]
    if not sizes:
        return []
    fig, panels = size_panels(sizes)
    lines, handles = [], {}
    train_lengths = training_lengths(res, "length")
    for ax, size in panels:
        for model in study.models:
            pts = curves.get((size, model))
            if pts:
                got = sorted(pts)
                handles[model], = ax.plot(got, [pts[x] for x in got], label=model, **model_style(study, model))
                lines += [[size, model, x, pts[x]] for x in got]
        for x in train_lengths:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis, [v for (sz, _), pts in curves.items() if sz == size for v in pts.values()])
        ax.set_xlabel("evaluation length (tokens); dotted: training length")
        ax.set_ylabel("WikiText-2 perplexity per token")
        ax.set_title(f"{size}: {human(study.budgets[size]['budget_params'])} non-embedding params")
        ax.grid(alpha=0.3, which="both")
    finish_panels(fig, study, handles)
    return _write_plot(fig, out, name, ["size", "model", "context", "ppl"], lines)


def training_curve(path: Path) -> dict[int, tuple[int, float]]:
    """{step: (tokens, training loss)} from a kept training log (gzipped JSONL); where a run was cut
    and resumed from an earlier checkpoint, the steps it trained again keep their later values."""
    return {r["step"]: (r["tokens"], r["loss"]) for r in read_log(path) if r.get("loss") is not None}


def training_curves_plot(res: Results, out: Path, name: str, smooth: int = 10, every: int = 10) -> list[Path]:
    """Training loss against tokens, a panel per size, each model at its own learning rate and the
    size's first seed (a mean over `smooth` steps): whether a budget ends while the loss still falls, and
    whether a run spiked. The CSV holds every `every`-th smoothed point and the last."""
    from harness.results.plots import _write_plot
    study = res.study
    curves = {}
    for size in study.final_sizes:
        for model in study.models:
            lr = res.final_lr(model, size)
            path = out / "train" / size / f"{model}-{run_label(lr, size_seeds(study, size)[0])}_{LOG_FILE}.gz"
            if lr is not None and path.is_file():
                points = sorted(training_curve(path).items())
                losses = [loss for _, (_, loss) in points]
                curves[(size, model)] = [(tokens, mean(losses[max(0, i + 1 - smooth):i + 1]))
                                         for i, (_, (tokens, _)) in enumerate(points)]
    sizes = [s for s in study.final_sizes if any(k[0] == s for k in curves)]
    if not sizes:
        return []
    fig, panels = size_panels(sizes)
    lines, handles = [], {}
    for ax, size in panels:
        lowest = []
        for model in study.models:
            pts = curves.get((size, model))
            if pts:
                style = {**model_style(study, model), "marker": None}
                handles[model], = ax.plot([t for t, _ in pts], [v for _, v in pts], label=model, linewidth=1.2,
                                          **style)
                kept = pts[every - 1::every]
                kept += [pts[-1]] if kept[-1:] != pts[-1:] else []  # the end, also of a run under `every` steps
                lines += [[size, model, t, v] for t, v in kept]
                lowest.append(min(v for _, v in pts))
        ax.set_ylim(min(lowest) - 0.1, min(lowest) + 2.5)  # the warm-up's first losses (~9) would flatten the rest
        ax.set_xlabel("training tokens")
        ax.set_ylabel(f"training loss (nats/token, mean of {smooth} steps)")
        ax.set_title(f"{size}: {human(study.budgets[size]['budget_params'])} non-embedding params, seed "
                     f"{size_seeds(study, size)[0]}")
        ax.grid(alpha=0.3)
    finish_panels(fig, study, handles)
    return _write_plot(fig, out, name, ["size", "model", "tokens", "train_loss"], lines)


# ---------------------------------------------------------------- scaling fits

def scaling_points(res: Results, axis: str) -> dict[str, list[tuple[float, float]]]:
    """{model: [(x, mean held-out loss)]} over the final sizes; x = non-embedding params or training FLOPs
    (the current count per trained token, `Results.flops`, times the tokens the run trained)."""
    out = {}
    for model in res.study.models:
        pts = []
        for size in res.study.final_sizes:
            loss = res.values(model, size, "smoke", "loss")
            if not loss:
                continue
            rows = [r for r in res.rows if (r.model, r.preset, r.task, r.metric) == (model, size, "smoke", "loss")
                    and r.extra.get("lr") == res.final_lr(model, size) and is_total(r)]
            if not rows:
                continue
            if axis == "params":
                x = rows[0].extra.get("non_embedding_params")
            else:
                count = res.flops(model, size)
                x = count.train * (rows[0].tokens_trained or 0) if count else rows[0].extra.get("train_flops")
            if x:
                pts.append((float(x), mean(loss.values())))
        if pts:
            out[model] = pts
    return out


def flops_left_out(res: Results, models) -> list[str]:
    """The models whose FLOP count may leave part of their computation out at some final size (`partial`: a
    mixer with no count of its own, or a model off the shared backbone such as llama_hf; or not counted
    here for want of an extra, so read from rows that an older count may have written): their
    loss-vs-compute points may sit at less compute than they used."""
    def partial(model, size):
        count = res.flops(model, size)
        return count is None or bool(count.partial)
    return [model for model in models
            if any(partial(model, size) for size in res.study.final_sizes if res.values(model, size, "smoke", "loss"))]


def scaling_table(res: Results) -> tuple[Table | None, dict]:
    """Each model's power laws over the final sizes it has results at, and its loss at the largest of
    them, which names its size where that is not the study's largest (a model still to run there)."""
    fits = {}
    header = ["Model", "sizes", "exponent vs params", "exponent vs FLOPs", "loss at largest size"]
    table = Table("Power laws of held-out loss: L = A N^b (N: non-embedding parameters) and L = A C^b "
                  "(C: training FLOPs)", header, header)
    lines = []
    flops_points = scaling_points(res, "flops")
    for model, pts in scaling_points(res, "params").items():
        flops = flops_points.get(model, [])
        fp = power_law([x for x, _ in pts], [y for _, y in pts])
        fc = power_law([x for x, _ in flops], [y for _, y in flops]) if flops else None
        fits[model] = {"params": fp, "flops": fc, "points": pts}
        lines.append([text_cell(model), text_cell(str(len(pts))),
                      Cell(fp["b"], fp["b_se"], digits=4) if fp else Cell(),
                      Cell(fc["b"], fc["b_se"], digits=4) if fc else Cell(),
                      Cell(pts[-1][1], digits=4, suffix=largest_suffix(res, model))])
    if not lines:
        return None, fits
    table.groups.append(("", lines))
    left_out = flops_left_out(res, fits)
    table.notes.append(exponent_error_note(fits) + " FLOPs: training FLOPs per token as harness/model/flops.py "
                       "counts each model at report time, times the tokens trained (the rows' train_flops keep "
                       "what the training counted at its commit)" + (
                           f"; the count leaves out part of {', '.join(left_out)} (`partial`, or not built here for "
                           "want of an extra they need, so counted by their rows): their compute may be understated."
                           if left_out else "."))
    return table, fits


def exponent_error_note(fits: dict) -> str:
    """What the exponents' ± is worth: a fit through k sizes leaves k − 2 degrees of freedom, so through
    three the 95% interval is 12.7 standard errors each side, and the error itself rests on one residual."""
    dfs = sorted({fit["points"] - 2 for got in fits.values() for fit in (got["params"], got["flops"])
                  if fit and fit["b_se"] is not None})
    note = ("± the exponent's standard error from the fit's residuals, on (sizes − 2) degrees of freedom (blank "
            "with two sizes: a line through two points has none).")
    if dfs:
        note += " A 95% interval is the estimate ± " + ", ".join(
            f"{t_critical(df):.2f} standard errors at {df} degree{'s' * (df > 1)} of freedom" for df in dfs) + "."
    if 1 in dfs:
        note += (" With one degree of freedom the error is estimated from a single residual and may be far too "
                 "small or too large: the ± does not tell two exponents apart.")
    return note


def largest_suffix(res: Results, model: str) -> str:
    """` (at a)` after a model's loss at its largest size with results where that is not the study's
    largest: beside the others' losses at the largest size it would read as one of them."""
    sizes = res.study.final_sizes
    at = next(size for size in reversed(sizes) if res.values(model, size, "smoke", "loss"))
    return "" if at == sizes[-1] else f" (at {at})"


def scaling_plot(res: Results, fits: dict, axis: str, out: Path, name: str) -> list[Path]:
    from harness.results.plots import _write_plot, pyplot
    pts_all = scaling_points(res, axis)
    if not any(len(p) >= 2 for p in pts_all.values()):
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    lines = []
    for model, pts in pts_all.items():
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        fit = fits.get(model, {}).get(axis)
        label = model if fit is None else f"{model} (b = {fit['b']:.3f}" + (
            f" ± {fit['b_se']:.3f})" if fit["b_se"] is not None else ")")
        style = model_style(res.study, model)
        ax.plot(xs, ys, label=label, **{**style, "linestyle": "none"})
        if fit is not None:
            grid = [min(xs) * (max(xs) / min(xs)) ** (k / 20) for k in range(21)]
            ax.plot(grid, [fit["A"] * g ** fit["b"] for g in grid], color=style["color"],
                    linestyle=style["linestyle"], alpha=0.7)
        lines += [[model, x, y] for x, y in pts]
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis, [y for pts in pts_all.values() for _, y in pts])
    xs_all = [x for pts in pts_all.values() for x, _ in pts]
    if max(xs_all) >= 10 * min(xs_all):  # labels at 1, 2 and 5 x 10^k: all nine per decade run together
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(sci_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("non-embedding parameters" if axis == "params" else "training FLOPs")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _write_plot(fig, out, name, ["model", axis, "heldout_loss"], lines)


# ---------------------------------------------------------------- status

def status_text(res: Results) -> str:
    defined, waiting = units(res.study, res.rows)
    pending = pending_tasks(res.rows)
    lines = ["# Study status (generated from rows.jsonl)", "",
             "| size | runs done | runs with tasks left | waiting for their learning rate |", "|---|---|---|---|"]
    for size in res.study.sizes:
        mine = [u for u in defined if u.size == size]
        if not mine:
            continue
        left = [u for u in mine if pending(u)]
        lines.append(f"| {size} | {len(mine) - len(left)} | {len(left)} | |")
    lines.append(f"| all | | | {waiting} |")
    todo = [u for u in defined if pending(u)]
    if todo:
        lines += ["", "Still to run (run, tasks left):", ""]
        lines += [f"- `{u.key}`: {', '.join(pending(u))}" for u in todo]
    if res.diverged:
        lines += ["", "Diverged (counted as done, no scores; to train one again, delete its rows from rows.jsonl):",
                  ""]
        lines += [f"- `{unit.key}`: {why}" for unit, why in res.diverged.items()]
    mixed = {u.key: sorted(ids) for u in defined if len(ids := scored_weights(res.rows, u)) > 1}
    if mixed:
        lines += ["", "Rows scored on more than one set of weights (two models' results under one run, e.g. rows "
                  "files of two machines merged; to score one again, delete its rows from rows.jsonl and run the "
                  "study, which retrains it where its checkpoint is gone):", ""]
        lines += [f"- `{key}`: weights {', '.join(ids)}" for key, ids in mixed.items()]
    return "\n".join(lines) + "\n"


def write_report(study, results: Path) -> list[Path]:
    """Write every table and plot the study's rows allow into results/<study>/; returns the paths.
    Those of its files that these rows no longer give (a paired.md of a second seed since dropped, a
    table whose rows are gone) are removed, so that none is left stale beside the others; files it
    does not write itself (README.md, rows.jsonl, run.json, train/, ...) are left alone."""
    path = rows_file(study, results)
    rows = [r for r in read_rows(path)] if path.is_file() else []
    out = path.parent
    res = Results(study, rows)
    owned, written = set(), []  # every file this report writes where the rows allow, and those it wrote

    def text(name: str, content: str | None) -> None:
        owned.add(out / name)
        if content is not None:
            atomic_write_text(out / name, content)
            written.append(out / name)

    def table(name: str, t: Table | None, formats: tuple = ("md", "csv")) -> None:
        for fmt in formats:
            text(f"{name}.{fmt}", render(t, fmt) if t is not None and t.groups else None)

    def plot(name: str, draw, *args) -> None:
        """draw(*args, out, name) writes name.png and name.csv, or nothing where it has nothing to draw."""
        owned.update((out / f"{name}.png", out / f"{name}.csv"))
        written.extend(draw(*args, out, name))

    text("lr_choice.json", json.dumps(res.lrs, indent=1, sort_keys=True))
    table("lr_sweep", lr_sweep_table(res), ("md",))  # lr_sweep.csv: the plot's points, in long form
    plot("lr_sweep", lr_sweep_plot, res)
    table("main", main_table(res))
    table("heldout_by_source", by_source_table(res))
    table("paired", paired_table(res))
    table("gaps", gaps_table(res))
    for name, *spec in LONG_CONTEXT:
        table(name, long_context_table(res, *spec))
    plot("ppl_vs_length", ppl_vs_length_plot, res)
    plot("training_curves", training_curves_plot, res)
    scaling, fits = scaling_table(res)
    table("scaling", scaling)
    text("scaling_fits.json", json.dumps(fits, indent=1) if fits else None)
    plot("loss_vs_params", scaling_plot, res, fits, "params")
    plot("loss_vs_compute", scaling_plot, res, fits, "flops")
    text("status.md", status_text(res))
    for stale in owned - set(written):
        stale.unlink(missing_ok=True)
    return written
