"""Studies: models x sizes x learning rates x seeds, at budgets stated in tokens per parameter,
from one YAML file, resumable, with several trainings side by side on one GPU or one per GPU.

    harness study STUDY.yaml [--jobs N] [--time-limit SECONDS]

A study file names a base config and what varies (results/scaling/study.yaml is the committed one):

    name: scaling                  # rows -> RESULTS/scaling/rows.jsonl, checkpoints -> RUNS/scaling/
    preset: small                  # the base config: a preset ...
    model: {vocab_size: 8192}      # ... with overrides for every run
    train: {tokenizer: english-mix-bpe8k}
    tokens_per_param: 20           # tokens = ratio x non-embedding parameters of the reference model
    warmup_fraction: 0.1           # warm-up tokens as a fraction of the budget
    max_epochs: 4                  # a budget needing more passes over the corpus is an error
    sizes:                         # the rungs, smallest first
      s: {model: {hidden_size: 128, num_layers: 3, num_heads: 4}, train: {batch_tokens: 32768}}
    models: [swat, transformer]    # trained by gradient descent, at a learning rate of their own
    references: [unigram, bigram]  # count-based models: no learning rate (optional)
    focus: [swat]                  # compared with every other model, paired by seed (default: the first)
    sweep: {sizes: [s], lrs: [1e-3, 2e-3, 4e-3, 8e-3], seed: 0, tasks: [smoke], extend_edges: 2}
    final: {sizes: [s], seeds: {s: [0, 1, 2]}, tasks: [smoke, wikitext_2_v1, lambada_openai]}

Every run trains with `harness.training.train.train` and is scored by the registered tasks, exactly as
`harness run` does; its rows carry `lr` and the budget (`tokens_per_param`, `epochs`,
`non_embedding_params`, `train_flops`) and use the size's name as their `preset`. The final stage
trains each model at its own learning rate: the sweep's best on a swept size, else the power law
(in non-embedding parameters) through the swept sizes' optima, each the vertex of a parabola in
log lr through the best rate and its two neighbours, clamped to the swept range. With `window: N`
a swept size after the first sweeps only N of the grid's rates, around the model's best at the
previous swept size. Where a model's best is the largest (or smallest)
rate swept, the sweep goes on a step: to the grid's next rate, and past the grid by its own ratio
up to `extend_edges` steps per side (default 0), so that each model's optimum is bracketed; a best
still at the edge is flagged in `lr_choice.json`.
A final run at a swept learning rate and the sweep's seed is the sweep's run (same checkpoint), not
a second one.

Resuming: a run whose rows are complete is skipped (`pending_tasks`); a cut training resumes from its checkpoint
(harness.study.runner runs them). Rows, kept configs or checkpoints made under another version of
the study file are refused, not reused (a new `name:` starts a new study). A run whose training
diverges (a loss or gradient norm that is not finite) is a result: rows of metric `diverged`, a
rate the learning-rate choice rules out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Callable

from harness.config import Config, ConfigError, apply_mapping, folder_name, load_config, read_yaml_file
from harness.results.store import WEIGHTS_KEY

STUDY_KEYS = {"name", "preset", "model", "train", "tokens_per_param", "warmup_fraction", "max_epochs", "sizes",
              "models", "references", "reference_model", "focus", "sweep", "final"}
SWEEP_KEYS = {"sizes", "lrs", "seed", "tasks", "extend_edges", "window"}
FINAL_KEYS = {"sizes", "seeds", "tasks"}
# training settings the study sets for every run, and what sets them (`Study.config`)
SET_BY_STUDY = {"tokens": "tokens_per_param", "warmup_tokens": "warmup_fraction", "seed": "sweep.seed and final.seeds",
                "lr": "sweep.lrs"}
DIVERGED = "diverged"  # the metric of a diverged run's rows (value null; extra `diverged`: why)
# the task of the row that keeps a run's first held-out loss when it is trained again (harness.study.runner)
FIRST_SCORE = "first_heldout"


@dataclass(frozen=True)
class Unit:
    """One training run and the tasks scored on it."""
    model: str
    size: str
    lr: float | None  # None: a count-based reference
    seed: int
    tasks: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.size}/{self.model}/{run_label(self.lr, self.seed)}"


def of_unit(row, unit: Unit) -> bool:
    """Whether a stored row is a result of `unit`'s run (any task, its kept first score included)."""
    return (row.preset, row.model, row.extra.get("lr"), row.seed) == (unit.size, unit.model, unit.lr, unit.seed)


def scored_weights(rows: list, unit: Unit) -> set[str]:
    """The weights (checkpoint digests, `weights` in a row) the unit's rows were scored on, but for its
    first score's row, which keeps those of a training since replaced. Rows from before the study
    recorded weights name none; more than one is a run whose rows are two models' results."""
    return {r.extra.get(WEIGHTS_KEY) for r in rows if of_unit(r, unit) and r.task != FIRST_SCORE} - {None}


def run_label(lr: float | None, seed: int) -> str:
    return f"seed{seed}" if lr is None else f"lr{lr:g}-seed{seed}"


@dataclass
class Study:
    path: Path
    data: dict  # the file's mapping as loaded: what this invocation and its workers run, though the file be edited
    name: str
    base: dict  # {"preset": ..., "model": {...}, "train": {...}}
    sizes: dict[str, dict]
    models: list[str]
    references: list[str]
    tokens_per_param: float
    warmup_fraction: float
    max_epochs: float
    reference_model: str
    sweep_sizes: list[str]
    lrs: list[float]  # the grid every model is swept over (sorted)
    sweep_seed: int
    sweep_tasks: list[str]
    final_sizes: list[str]
    final_seeds: dict[str, list[int]]
    final_tasks: list[str]
    focus: list[str] = field(default_factory=list)
    extend_edges: int = 0  # steps the sweep may go past the grid's edge where a model's best lies there
    window: int = 0  # rates swept on a size after the first, around the previous size's best (0: all)
    only: set[str] | None = None  # `restrict`: the models this invocation runs (None: all)
    only_sizes: set[str] | None = None  # `restrict_sizes`: the sizes this invocation runs (None: all)
    budgets: dict[str, dict] = field(default_factory=dict)  # size -> budget (tokens, epochs, ...), by `plan`
    _reference_params: dict[str, int] = field(default_factory=dict, repr=False)  # by `reference_params`

    def restrict(self, names: list[str]) -> None:
        """Run only these models and references of the study (the rows of the others stay)."""
        stray = [n for n in names if n not in self.models + self.references]
        if stray:
            raise ConfigError(f"--models names {stray[0]}; the study's models are "
                              f"{', '.join(self.models + self.references)}")
        self.only = set(names)

    def restrict_sizes(self, names: list[str]) -> None:
        """Run only these sizes (e.g. leave out one whose trainings outlast the machine at hand)."""
        stray = [n for n in names if n not in self.sizes]
        if stray:
            raise ConfigError(f"--sizes names {stray[0]}; the study's sizes are {', '.join(self.sizes)}")
        self.only_sizes = set(names)

    def config(self, size: str, seed: int, lr: float | None = None) -> Config:
        """The run's config: base, the size's overrides, the budget, then seed and learning rate."""
        cfg = load_config(self.base["preset"])
        apply_mapping(cfg, {"model": self.base.get("model", {}), "train": self.base.get("train", {})})
        try:  # an error names the size: every size's overrides hold the same keys
            apply_mapping(cfg, self.sizes[size])
            cfg.preset = size
            budget = self.budgets.get(size)
            if budget:
                cfg.train.tokens = budget["tokens"]
                cfg.train.warmup_tokens = budget["warmup_tokens"]
            cfg.train.seed = seed
            if lr is not None:
                cfg.train.lr = lr
            cfg.validate()
        except ConfigError as err:
            raise ConfigError(f"size {size}: {err}") from None
        return cfg

    def reference_params(self, size: str) -> int:
        """The reference model's non-embedding parameters at a size, which set its budget (counted
        once: the load checks their order, `plan` turns them into tokens)."""
        if size not in self._reference_params:
            from harness.model.build import non_embedding_params
            self._reference_params[size] = non_embedding_params(self.reference_model, self.config(size, 0).model)
        return self._reference_params[size]


# A study file's values are checked by the helpers below, each naming the field (`sweep.lrs[1]`) and
# what it must be, so that a bad value stops the study in one line before any work, instead of a
# traceback or a silently different study (a string where a list is expected would be read letter by
# letter). load_study prefixes their errors with the file.

def _known(section: dict, keys: set[str], field: str) -> None:
    """A key the study does not read is refused: a typo (`seeds:` for `seed:`) would otherwise be ignored."""
    from difflib import get_close_matches
    unknown = sorted(map(str, set(section) - keys))
    if unknown:
        close = get_close_matches(unknown[0], sorted(keys), n=1)
        hint = f"; did you mean `{field}{close[0]}`?" if close else ""
        raise ConfigError(f"unknown key `{field}{unknown[0]}`{hint}; known: {', '.join(sorted(keys))}")


def _required(section: dict, field: str):
    """The value of field (`sweep.lrs`: key `lrs` of section), which must be given (not null)."""
    value = section.get(field.rsplit(".", 1)[-1])
    if value is None:
        raise ConfigError(f"missing `{field}`")
    return value


def _optional(section: dict, field: str, default):
    """The value of field, or default where it is absent or null (`references:` with nothing after it)."""
    value = section.get(field.rsplit(".", 1)[-1])
    return default if value is None else value


def _mapping(value, field: str, example: str) -> dict:
    """A mapping (a YAML `{key: value}` section), refused with an example of one."""
    if not isinstance(value, dict):
        raise ConfigError(f"{field} must be a mapping, e.g. {example}, got {value!r}")
    return value


def _list(value, field: str, example: str, item: Callable) -> list:
    """A non-empty list (a string is not one: `sizes: ab` would be sizes a and b), each entry checked
    by item(entry, its field), without repeats (which would run or count the same thing twice)."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{field} must be a non-empty list, e.g. {example}, got {value!r}")
    out = [item(v, f"{field}[{i}]") for i, v in enumerate(value)]
    twice = [v for i, v in enumerate(out) if v in out[:i]]
    if twice:
        raise ConfigError(f"{field} names {twice[0]!r} twice")
    return out


def _number(value, field: str, what: str, ok: Callable[[float], bool], integer: bool = False) -> float | int:
    """A finite number (an int where `integer`) for which ok holds, refused with `what` it must be.
    A bool is not a number here (YAML reads `yes` as true); a string is one where it reads as a float
    (YAML 1.1 reads 1e-3 as a string), unless an integer is expected."""
    if isinstance(value, str) and not integer:
        try:
            value = float(value)
        except ValueError:
            pass
    number = isinstance(value, int) or (isinstance(value, float) and not integer)
    if isinstance(value, bool) or not number or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{field} must be {what}, got {value!r}")
    return value if integer else float(value)


def _positive(value, field: str) -> float:
    return _number(value, field, "a positive number", lambda v: v > 0)


def _seed(value, field: str) -> int:
    return _number(value, field, "a non-negative integer (a seed)", lambda v: v >= 0, integer=True)


def _names(value, field: str, example: str) -> list[str]:
    return _list(value, field, example, folder_name)


def _not_set_by_study(overrides: dict, field: str) -> None:
    """A training setting that the study sets for every run is refused where the base config or a size
    gives it: the study would override it unseen, and its runs differ from what the file says."""
    train = overrides.get("train")
    for key, instead in SET_BY_STUDY.items():
        if isinstance(train, dict) and key in train:
            raise ConfigError(f"{field}train.{key} is set by the study for every run: remove it and give "
                              f"{instead} instead")


def load_study(path: str | Path, data=None) -> Study:
    """Parse and check a study file (or `data`, its mapping as a pool's parent read it: each worker runs
    the version its pool started with, not one edited since): every name, size, key and value is checked
    before any work."""
    path = Path(path)
    data = read_yaml_file(path, "study file") if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"study file {path} must hold a mapping (name, preset, sizes, models, sweep, final, ...)")
    from harness.registry import RegistryError
    try:
        return _parse(data, path)
    except (ConfigError, RegistryError) as err:  # an unknown model name too: the file is where to fix it
        raise type(err)(f"study file {path}: {err}") from None


def _stage(data: dict, stage: str, keys: set[str], sizes: dict) -> tuple[dict, list[str], list[str]]:
    """The sweep's or the final stage's section, sizes (of the study's, in its smallest-first order, however
    listed here: the window sweeps, the gaps' change and the fits read them in order) and tasks (groups expanded)."""
    from harness.registry import expand_tasks
    section = _mapping(_required(data, stage), stage, "{sizes: [s], tasks: [smoke]}")
    _known(section, keys, f"{stage}.")
    chosen = _names(_required(section, f"{stage}.sizes"), f"{stage}.sizes", "[s, m]")
    for size in chosen:
        if size not in sizes:
            raise ConfigError(f"{stage}.sizes names `{size}`, not one of sizes: {', '.join(sizes)}")
    tasks = expand_tasks(_names(_required(section, f"{stage}.tasks"), f"{stage}.tasks", "[smoke]"))
    return section, [size for size in sizes if size in chosen], tasks


def _parse(data: dict, path: Path) -> Study:
    """The Study that a study file's mapping describes; a ConfigError naming the field where it is bad."""
    from harness.registry import get_model, reference_model
    _known(data, STUDY_KEYS, "")
    name = folder_name(_required(data, "name"), "name")
    sizes = _mapping(_required(data, "sizes"), "sizes", "{s: {model: {hidden_size: 128}}}")
    if not sizes:
        raise ConfigError("`sizes` names no size")
    _not_set_by_study(data, "")
    for size, overrides in sizes.items():
        folder_name(size, "each name under sizes")
        _mapping(overrides, f"sizes.{size}", "{model: {hidden_size: 128}, train: {batch_tokens: 32768}}")
        _not_set_by_study(overrides, f"sizes.{size}.")
    models = _names(_required(data, "models"), "models", "[swat, transformer]")
    references = _optional(data, "references", [])
    if references != []:  # none is allowed
        references = _names(references, "references", "[unigram, bigram]")
    both = [m for m in references if m in models]
    if both:  # one name in two roles: which of them a run or row belongs to would be ambiguous
        raise ConfigError(f"`{both[0]}` is in both models and references; list it in one of them")
    ref_model = folder_name(_optional(data, "reference_model", reference_model()), "reference_model")
    for model in models + references + [ref_model]:
        get_model(model)
    focus = _names(_optional(data, "focus", models[:1]), "focus", "[swat]")
    stray = [m for m in focus if m not in models]
    if stray:
        raise ConfigError(f"focus names `{stray[0]}`, which is not one of models")
    sweep, sweep_sizes, sweep_tasks = _stage(data, "sweep", SWEEP_KEYS, sizes)
    if "smoke" not in sweep_tasks:  # without its rows the sweep would never choose, and the final stage wait for ever
        raise ConfigError("sweep.tasks must include smoke (the learning rate is chosen by its held-out loss)")
    final, final_sizes, final_tasks = _stage(data, "final", FINAL_KEYS, sizes)
    if "smoke" not in final_tasks:  # the report's main table, fits, gaps and paired seeds are its held-out loss
        raise ConfigError("final.tasks must include smoke (the main table, the power-law fits and the gaps are its "
                          "held-out loss)")
    lrs = sorted(_list(_required(sweep, "sweep.lrs"), "sweep.lrs", "[1e-3, 2e-3, 4e-3]", _positive))
    seeds = _mapping(_optional(final, "final.seeds", {}), "final.seeds", "{m: [0, 1, 2], default: [0]}")
    for key in seeds:
        if key != "default" and key not in final_sizes:
            raise ConfigError(f"final.seeds names `{key}`, not one of final.sizes ({', '.join(final_sizes)}) "
                              f"or `default`")
    seed_lists = {key: _list(value, f"final.seeds.{key}", "[0, 1, 2]", _seed) for key, value in seeds.items()}
    study = Study(
        path=path, data=data, name=name,
        base={"preset": folder_name(_optional(data, "preset", "small"), "preset"),
              "model": _mapping(_optional(data, "model", {}), "model", "{vocab_size: 8192}"),
              "train": _mapping(_optional(data, "train", {}), "train", "{tokenizer: english-mix-bpe8k}")},
        sizes=sizes, models=models, references=references,
        tokens_per_param=_positive(_required(data, "tokens_per_param"), "tokens_per_param"),
        warmup_fraction=_number(_optional(data, "warmup_fraction", 0.1), "warmup_fraction",
                                "a fraction of the budget in [0, 1), e.g. 0.1", lambda v: 0 <= v < 1),
        max_epochs=_positive(_optional(data, "max_epochs", 4), "max_epochs"),
        reference_model=ref_model,
        sweep_sizes=sweep_sizes, lrs=lrs, sweep_seed=_seed(_optional(sweep, "sweep.seed", 0), "sweep.seed"),
        sweep_tasks=sweep_tasks, final_sizes=final_sizes,
        final_seeds={size: seed_lists.get(size, seed_lists.get("default", [0])) for size in final_sizes},
        final_tasks=final_tasks, focus=focus,
        extend_edges=_number(_optional(sweep, "sweep.extend_edges", 0), "sweep.extend_edges",
                             "an integer >= 0 (steps past the grid's edge)", lambda v: v >= 0, integer=True),
        window=_number(_optional(sweep, "sweep.window", 0), "sweep.window",
                       f"0 (the whole grid) or 2 to {len(lrs)} (the grid's {len(lrs)} rates)",
                       lambda v: v == 0 or 2 <= v <= len(lrs), integer=True))
    for size in sizes:
        study.config(size, 0)  # every override is checked here, before any work
    _check_references(study)
    _check_sizes_ascend(study)
    return study


def _check_references(study: Study) -> None:
    """References take no learning rate, so a trained model listed there would train unswept at the base
    config's rate and be reported as a count-based reference; they must be fitted by counting."""
    from harness.model.build import build_model
    cfg = study.config(next(iter(study.sizes)), 0).model
    for name in study.references:
        if not getattr(build_model(name, cfg, "meta"), "fitted_by_counting", False):
            raise ConfigError(f"references names `{name}`, which is trained, not fitted by counting; references are "
                              f"count-based models (e.g. unigram, bigram): list {name} under models")


def _check_sizes_ascend(study: Study) -> None:
    """The reference model's non-embedding parameters set every budget, so it must have some (a
    count-based one has none: every size would train one step); and the sizes must be listed smallest
    first by them, since the window sweeps, the gaps' change and --largest-first read the list's order."""
    counts = {size: study.reference_params(size) for size in study.sizes}
    first = next(iter(study.sizes))
    if counts[first] == 0:
        raise ConfigError(f"reference_model `{study.reference_model}` has no non-embedding parameters (a count-based "
                          f"model), so every budget would be 0 tokens; name a trained model, e.g. transformer")
    for smaller, size in zip(study.sizes, list(study.sizes)[1:]):
        if counts[size] < counts[smaller]:
            raise ConfigError(f"sizes must be listed smallest first: `{size}` ({counts[size]:,} non-embedding "
                              f"parameters of {study.reference_model}) comes after `{smaller}` ({counts[smaller]:,}); "
                              f"reorder sizes")


# ---------------------------------------------------------------- budgets

def plan(study: Study, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Each size's budget: tokens (the ratio times the reference model's non-embedding parameters,
    in whole steps), warm-up, epochs of the corpus's training split. Tokenizes the corpus (once,
    cached) to count that split. Refuses budgets above max_epochs."""
    from harness.data.streams import prepare_streams
    from harness.data.tokenizer import get_tokenizer
    budgets = {}
    for size in study.sizes:
        cfg = study.config(size, 0)
        train_stream, _ = prepare_streams(cfg.train.corpus, get_tokenizer(cfg.train.tokenizer))
        corpus_tokens = len(train_stream.tokens)
        params = study.reference_params(size)
        steps = max(1, int(study.tokens_per_param * params) // cfg.train.batch_tokens)
        tokens = steps * cfg.train.batch_tokens
        epochs = tokens / corpus_tokens
        if epochs > study.max_epochs:
            raise ConfigError(f"size {size}: {tokens:,} tokens ({study.tokens_per_param:g} per non-embedding "
                              f"parameter of {params:,}) are {epochs:.2f} epochs of corpus {cfg.train.corpus} "
                              f"({corpus_tokens:,} training tokens), above max_epochs={study.max_epochs:g}; "
                              f"use a smaller size or a larger corpus")
        budgets[size] = {"tokens": tokens, "steps": steps, "warmup_tokens": int(study.warmup_fraction * tokens),
                         "epochs": epochs, "budget_params": params, "corpus_tokens": corpus_tokens}
    study.budgets = budgets
    return budgets


# ---------------------------------------------------------------- learning rates

def sweep_plan(rows: list, study: Study) -> dict[tuple[str, str], tuple[list[float] | None, dict[float, float]]]:
    """{(model, size): (grid, {lr: held-out loss})} for every model at every swept size: the
    learning rates it is swept over (None while it waits for the previous size's best, under
    `sweep.window`) and the losses measured at that size (seed `sweep.seed`; those off its grid,
    e.g. run before a window was set, are shown but do not choose; a diverged run's is inf, so that
    it completes the grid but is never the best), from rows.

    The first swept size takes the study's grid; with `sweep.window` a later one takes that many
    of the grid's rates around the previous size's best (`lr_window`). Either grid is then extended
    while its best so far is its largest (smallest) rate and every point has a loss: to the grid's
    next rate, and past the study's grid by its ratio, at most `extend_edges` steps per side.

    A run trained again (its checkpoint lost with a machine, its tasks left) scores a held-out loss
    that differs from its first by the noise of training on another device (0.01-0.02 nats seen):
    the sweep keeps the first (its FIRST_SCORE row), with which the rates of the sizes after it were
    already chosen and trained."""
    found: dict[tuple[str, str], dict[float, float]] = {}
    first: dict[tuple[str, str], dict[float, float]] = {}
    for r in rows:
        scored = r.task in ("smoke", FIRST_SCORE) and r.metric in ("loss", DIVERGED)
        if scored and r.extra.get("corpus_source") is None and r.seed == study.sweep_seed \
                and r.extra.get("lr") is not None and r.preset in study.sweep_sizes:
            kept = first if r.task == FIRST_SCORE else found
            kept.setdefault((r.model, r.preset), {})[r.extra["lr"]] = math.inf if r.metric == DIVERGED else r.value
    for key, losses in first.items():
        found.setdefault(key, {}).update(losses)
    out = {}
    for model in study.models:
        prior = None  # the previous swept size's best
        for k, size in enumerate(study.sweep_sizes):
            got = found.get((model, size), {})
            if study.window and k > 0:
                base = None if prior is None else lr_window(study, prior)
            else:
                base = list(study.lrs)
            grid = None if base is None else extended_grid(study, base, got)
            out[(model, size)] = (grid, dict(got))
            prior = min(grid, key=got.get) if grid and all(lr in got for lr in grid) else None
    return out


def lr_window(study: Study, prior: float) -> list[float]:
    """`sweep.window` consecutive rates of the grid around `prior` (for an even window, one more
    below it than above: a larger model tends to want a smaller rate)."""
    grid = study.lrs
    i = min(range(len(grid)), key=lambda j: abs(math.log(grid[j] / prior)))
    start = min(max(0, i - study.window // 2), len(grid) - study.window)
    return grid[start:start + study.window]


def extended_grid(study: Study, base: list[float], losses: dict[float, float]) -> list[float]:
    """base, extended while its best so far is its largest (smallest) rate and every point has a
    loss: by the study grid's next rate, past the grid by its ratio (at most `extend_edges` steps)."""
    grid, past = list(base), {"up": 0, "down": 0}
    lrs = study.lrs
    while len(lrs) > 1 and all(lr in losses for lr in grid):
        best = min(grid, key=losses.get)
        side = "up" if best == grid[-1] else "down" if best == grid[0] else None
        if side is None:
            break
        inside = [x for x in lrs if x > best] if side == "up" else [x for x in lrs if x < best][::-1]
        if inside:
            step = inside[0]
        elif past[side] < study.extend_edges:
            ratio = lrs[-1] / lrs[-2] if side == "up" else lrs[0] / lrs[1]
            step = float(f"{best * ratio:.3g}")
            past[side] += 1
        else:
            break
        grid = grid + [step] if side == "up" else [step] + grid
    return grid


def choose_lrs(rows: list, study: Study) -> dict[str, dict[str, dict]]:
    """{model: {size: {"lr", "how", "edge"}}} for the final stage, from the sweep rows present:
    a swept size takes its best learning rate once every one of its grid (`sweep_plan`) has a
    row, and records its `optimum` (`interpolated_optimum`); a size not swept takes the power law
    through the swept sizes' optima (least squares in log lr vs log non-embedding parameters) once
    all of them are known, clamped to the range swept. The optima, not the grid's best rates,
    carry the trend: a grid of factor-2 steps would make it jump by a factor of two wherever two
    rates nearly tie."""
    sweeps = sweep_plan(rows, study)
    choice: dict[str, dict[str, dict]] = {}
    for model in study.models:
        optima, swept = {}, list(study.lrs)
        for size in study.sweep_sizes:
            grid, got = sweeps[(model, size)]
            if grid is None:
                continue
            swept += grid
            if all(lr in got for lr in grid) and not all(math.isinf(got[rate]) for rate in grid):
                lr = min(grid, key=got.get)
                optima[size] = interpolated_optimum({rate: got[rate] for rate in grid})  # what chooses
                edge = lr in (grid[0], grid[-1]) and len(grid) > 1
                choice.setdefault(model, {})[size] = {"lr": lr, "how": "swept", "edge": edge,
                                                      "loss": got[lr], "optimum": float(f"{optima[size]:.3g}")}
        if len(optima) < len(study.sweep_sizes):
            continue
        fit = power_law([study.budgets[s]["budget_params"] for s in optima], list(optima.values()))
        for size in study.final_sizes:
            if size in optima:
                continue
            lr = fit["A"] * study.budgets[size]["budget_params"] ** fit["b"] if fit else next(iter(optima.values()))
            lr = float(f"{min(max(lr, min(swept)), max(swept)):.3g}")
            choice.setdefault(model, {})[size] = {"lr": lr, "how": "extrapolated", "edge": False}
    return choice


def interpolated_optimum(losses: dict[float, float]) -> float:
    """The learning rate at the vertex of the parabola in log lr through the lowest loss measured
    and its two neighbours ({lr: loss}); the lowest one's own rate where it has no neighbour on
    one side (an edge of what was swept, or of the rates that did not diverge: a parabola through an
    infinite loss has no vertex)."""
    losses = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    lrs = sorted(losses)
    i = min(range(len(lrs)), key=lambda j: losses[lrs[j]])
    if i == 0 or i == len(lrs) - 1:
        return lrs[i]
    (x0, x1, x2), (y0, y1, y2) = ([math.log(lr) for lr in lrs[i - 1:i + 2]],
                                  [losses[lr] for lr in lrs[i - 1:i + 2]])
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if den == 0:  # three equal losses: no curvature to place a vertex
        return lrs[i]
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / den
    return math.exp(min(max(vertex, x0), x2))


def power_law(xs: list[float], ys: list[float]) -> dict | None:
    """Least squares of log y = log A + b log x: A, b and b's standard error (None with 2 points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = mean(lx), mean(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    b = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sxx
    a = my - b * mx
    se = None
    if len(xs) > 2:
        resid = sum((y - (a + b * x)) ** 2 for x, y in zip(lx, ly))
        se = math.sqrt(resid / (len(xs) - 2) / sxx)
    return {"A": math.exp(a), "b": b, "b_se": se, "points": len(xs)}


# ---------------------------------------------------------------- the runs

def units(study: Study, rows: list, only: set[str] | None = None,
          only_sizes: set[str] | None = None) -> tuple[list[Unit], int]:
    """(runs that can be defined now, runs still waiting for the sweep), both of the models in `only`
    and the sizes in `only_sizes` (None: all), size by size (a size's sweep, then its final runs), so
    that the smaller sizes finish first. The final stage of a model waits for its learning rate;
    references need none. Each run counts once: a final run at a swept size and the sweep's seed will
    be one of the sweep's runs (the best), counted there, not among those waiting too."""
    out, waiting = [], 0
    lrs, sweeps = choose_lrs(rows, study), sweep_plan(rows, study)
    models = [m for m in study.models if only is None or m in only]
    references = [m for m in study.references if only is None or m in only]
    for size in study.sizes:
        if only_sizes is not None and size not in only_sizes:
            continue
        if size in study.sweep_sizes:
            for model in models:
                grid = sweeps[(model, size)][0]
                if grid is None:  # its window waits for the previous size's best
                    waiting += study.window
                    continue
                out += [Unit(model, size, lr, study.sweep_seed, tuple(study.sweep_tasks)) for lr in grid]
        for seed in study.final_seeds.get(size, []):
            for model in models:
                lr = lrs.get(model, {}).get(size, {}).get("lr")
                if lr is None:
                    if size not in study.sweep_sizes or seed != study.sweep_seed:
                        waiting += 1
                else:
                    out.append(Unit(model, size, lr, seed, tuple(study.final_tasks)))
            out += [Unit(ref, size, None, seed, tuple(study.final_tasks)) for ref in references]
    merged: dict[str, Unit] = {}
    for u in out:  # a final run at a swept lr and the sweep's seed shares the sweep's training
        prior = merged.get(u.key)
        merged[u.key] = u if prior is None else Unit(u.model, u.size, u.lr, u.seed,
                                                     tuple(dict.fromkeys(prior.tasks + u.tasks)))
    return list(merged.values()), waiting


def sweeps_left_out(study: Study, rows: list) -> list[str]:
    """The swept sizes that `restrict_sizes` leaves out and that have not chosen every model's
    learning rate yet: the chosen sizes' runs that wait for them would wait for ever in this run."""
    if study.only_sizes is None:
        return []
    needed = {swept for size in study.only_sizes for swept in sweeps_needed(study, size)}
    chosen = choose_lrs(rows, study)
    models = [m for m in study.models if study.only is None or m in study.only]
    return [size for size in study.sweep_sizes if size in needed and size not in study.only_sizes
            and any(size not in chosen.get(model, {}) for model in models)]


def sweeps_needed(study: Study, size: str) -> list[str]:
    """The other swept sizes whose sweep a size's runs wait for: all of them for a size that takes
    the power law; the ones before it for a swept size under `sweep.window`; none otherwise."""
    if size not in study.sweep_sizes:
        return list(study.sweep_sizes)
    return study.sweep_sizes[:study.sweep_sizes.index(size)] if study.window else []


def rows_file(study: Study, results: Path) -> Path:
    return Path(results) / study.name / "rows.jsonl"


def pending_tasks(rows: list) -> Callable[[Unit], list[str]]:
    """pending(unit): the unit's tasks not done in rows. A run's task is done when its rows hold every
    metric (per corpus source) that the rows of the same task hold for any other run at that size, or
    say that its training diverged. A run that lost a row (smoke's `loss`, which the sweep and the
    tables read) is then scored again from its checkpoint, rather than counted as done with a hole
    that a mean over fewer seeds would hide. Context lengths and depths are not compared: a sweep
    over lengths that ran out of memory stops early by design, and would be scored again at every rerun."""
    held: dict[tuple, set] = {}  # (size, task, model, lr, seed) -> the metrics the run's rows of the task hold
    diverged = set()
    for r in rows:
        key = (r.preset, r.task, r.model, r.extra.get("lr"), r.seed)
        held.setdefault(key, set()).add((r.metric, r.extra.get("corpus_source")))
        if r.metric == DIVERGED:
            diverged.add(key)
    needed: dict[tuple, set] = {}  # (size, task) -> what its runs that did not diverge measured
    for key, measured in held.items():
        if key not in diverged:
            needed.setdefault(key[:2], set()).update(measured)

    def pending(unit: Unit) -> list[str]:
        keys = {task: (unit.size, task, unit.model, unit.lr, unit.seed) for task in unit.tasks}
        return [task for task, key in keys.items()
                if key not in diverged and not (key in held and needed[key[:2]] <= held[key])]
    return pending
