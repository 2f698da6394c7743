"""lm-eval's tasks as harness tasks, run offline on the mirror: each declared once by the task
module that registers it (`register_lm_eval_task`), given an overlay of lm-eval's own task YAML,
evaluated through the adapter, and turned into rows.

The hub is unreachable here, so every lm-eval task we run is an *overlay*: a YAML that
`include:`s lm-eval's own task YAML (prompts, metrics, version) and only swaps the data for the
mirror's JSONL files (`harness.data.mirror.require`). Overlays are rendered into the cache, because
they hold absolute paths (lm-eval's install, the mirror); the task modules' group YAMLs go beside
them. With `online=True` a task whose data is not mirrored keeps its hub path.

lm-eval itself, and the adapter, which imports it, are imported only when a task runs (lm-eval is an
optional dependency, and slow to import).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.config import ConfigError
from harness.data import mirror
from harness.data.corpus import jsonl_lines
from harness.data.paths import DataError, cache_dir
from harness.evaluation.request_cache import batch_request_cache
from harness.files import atomic_write_text
from harness.registry import load_plugins, register_task

DEFAULT_BOOTSTRAP_ITERS = 1000  # stderr of perplexity-type metrics is bootstrapped; acc's is analytic


@dataclass(frozen=True)
class LmEvalTask:
    """One of lm-eval's tasks, run as the harness task of the same name."""
    name: str                       # the task's name in lm-eval (the overlay's `task:`) and in the harness
    builtin: str                    # lm-eval's own YAML the overlay includes, under lm_eval/tasks/
    dataset: str                    # the mirror dataset that feeds it (harness.data.mirror)
    paper_metrics: tuple[str, ...]  # the metrics the paper's tables report; rows carry paper_metric
    hub_config: str | None = None   # the hub config to read online, where the included YAML names another
    choices: Callable[[dict], int] | None = None  # answer choices of a record: chance is 1 / choices


LM_EVAL_TASKS: dict[str, LmEvalTask] = {}  # filled by register_lm_eval_task
GROUP_FOLDERS: list[Path] = []  # folders of lm-eval group YAMLs over these tasks (register_lm_eval_group_folder)


def register_lm_eval_task(task: LmEvalTask, group: str | tuple = (), description: str = "") -> None:
    """Register `task` as a harness task: it reads its mirror dataset (or the hub, `--online`), and
    under torchrun lm-eval shards its requests over the ranks."""
    LM_EVAL_TASKS[task.name] = task

    def run(model, tokenizer, ctx):
        return lm_eval_task_rows(task.name, model, tokenizer, ctx)
    register_task(task.name, group=group, description=description, data_parallel=True, datasets=(task.dataset,),
                  online=True)(run)


def register_lm_eval_group_folder(folder: Path) -> None:
    """Put the lm-eval group YAMLs of `folder` (e.g. `group: commonsense`) beside the overlays, so that
    lm-eval's own command line (`harness-lm-eval --tasks commonsense`) finds them."""
    if Path(folder) not in GROUP_FOLDERS:
        GROUP_FOLDERS.append(Path(folder))


def lm_eval_tasks() -> dict[str, LmEvalTask]:
    """Every registered lm-eval task (the built-in task modules and plugins loaded first)."""
    load_plugins()
    return LM_EVAL_TASKS


# ---------------------------------------------------------------- offline task overlays

def _task(name: str) -> LmEvalTask:
    tasks = lm_eval_tasks()
    if name not in tasks:
        raise ConfigError(f"no lm-eval overlay for task {name!r}; known: {', '.join(tasks)}")
    return tasks[name]


def overlay_config(name: str, files: dict[str, Path] | None) -> dict:
    """The overlay YAML of one lm-eval task: include the built-in YAML, read `files` (None: keep
    the hub path). Splits the mirror lacks are switched off so lm-eval never asks the hub."""
    from harness.evaluation.lm_eval_adapter import import_lm_eval
    task = _task(name)
    lm_eval = import_lm_eval()
    cfg: dict[str, Any] = {"include": str(Path(lm_eval.__file__).parent / "tasks" / task.builtin), "task": name}
    if files is not None:
        cfg.update(dataset_path="json", dataset_name=None,
                   dataset_kwargs={"data_files": {split: str(path) for split, path in sorted(files.items())}})
        for key, split in (("training_split", "train"), ("validation_split", "validation"),
                           ("test_split", "test")):
            cfg[key] = split if split in files else None
        cfg["fewshot_split"] = None
    elif task.hub_config is not None:
        cfg["dataset_name"] = task.hub_config
    return cfg


def task_files(names: list[str], online: bool = False) -> dict[str, dict[str, Path] | None]:
    """Mirror files per task, checked before any model work; None for a task left on the hub."""
    out = {}
    for name in names:
        try:
            out[name] = mirror.require(_task(name).dataset)
        except DataError:
            if not online:
                raise
            out[name] = None
    return out


def mirrored_files() -> dict[str, dict[str, Path]]:
    """Mirror files of every lm-eval task whose data is present."""
    out = {}
    for name, task in lm_eval_tasks().items():
        try:
            out[name] = mirror.require(task.dataset)
        except DataError:
            continue
    return out


def render_overlays(files: dict[str, dict[str, Path] | None]) -> Path:
    """Write the overlay YAMLs of `files` and the group YAMLs into a cache folder named by their
    content; return it."""
    import yaml
    configs = {name: overlay_config(name, f) for name, f in sorted(files.items())}
    groups = sorted((g for folder in GROUP_FOLDERS for g in folder.glob("*.yaml")), key=lambda g: g.name)
    digest = hashlib.sha256(json.dumps([configs, [g.read_text() for g in groups]], sort_keys=True).encode())
    folder = cache_dir() / "lm_eval_tasks" / digest.hexdigest()[:16]
    if not (folder / "done").is_file():
        for name, cfg in configs.items():
            atomic_write_text(folder / f"{name}.yaml", yaml.safe_dump(cfg, sort_keys=False))
        for group in groups:  # one include path holds all
            atomic_write_text(folder / group.name, group.read_text())
        atomic_write_text(folder / "done", "\n".join(configs) + "\n")
    return folder


_MANAGERS: dict[str, Any] = {}


def task_manager(overlay_dir: Path):
    """One lm-eval TaskManager per overlay folder, indexing that folder alone: every task we run
    is an overlay there, and its `include:` of lm-eval's own YAML is a path. (Indexing lm-eval's
    ~14,000 task files too took 12 s per process on a 2-core CPU.)"""
    key = str(overlay_dir)
    if key not in _MANAGERS:
        import logging

        from harness.evaluation.lm_eval_adapter import import_lm_eval
        import_lm_eval()
        from lm_eval.tasks import TaskManager
        # our overlays replace built-in tasks by design: lm-eval's warning about each is noise
        logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)
        _MANAGERS[key] = TaskManager(include_path=key, include_defaults=False)
    return _MANAGERS[key]


# ---------------------------------------------------------------- running lm-eval tasks

@functools.cache
def _compiled_template(template: str):
    from lm_eval import utils
    return utils.env.from_string(template)


def cache_prompt_templates() -> None:
    """Compile each of lm-eval's Jinja prompt templates once. lm-eval 0.4 compiles the template anew
    for every document and field (`utils.apply_template` -> `env.from_string`): 23 of the 52 s of a
    LAMBADA evaluation on a 2-core CPU. Same environment, same templates: the rendered prompts are
    identical."""
    from lm_eval import utils
    if getattr(utils.apply_template, "compiles_once", False):
        return

    def apply_template(template: str, doc: dict) -> str:
        return _compiled_template(template).render(**doc)
    apply_template.compiles_once = True
    apply_template.original = utils.apply_template
    utils.apply_template = apply_template


def quiet_lm_eval() -> None:
    """Silence what lm-eval and `datasets` print besides the results, for `harness run` and `harness
    eval`, whose own progress lines their tqdm bars would cut into: the bars over documents and
    cached requests, the stderr bootstrap's, the dataset builders' bars, lm-eval's notes on its task
    configs (defaults it fills in), and the `git describe` that lm-eval runs for its results' metadata (outside a git
    checkout it prints `fatal: not a git repository` per task). Errors still show."""
    import contextlib
    import functools
    import io
    import logging

    import datasets
    import lm_eval.api.metrics
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator
    from tqdm import tqdm

    from harness.results.provenance import git_commit

    def no_bar(*args, **kwargs):  # also where lm-eval passes disable= itself
        return tqdm(*args, **{**kwargs, "disable": True})
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    for module in (lm_eval.api.model, lm_eval.api.task):
        module.tqdm = no_bar
    lm_eval.evaluator.get_git_commit_hash = git_commit
    # the stderr bootstrap prints `bootstrapping for stddev: NAME` and a bar of its own (a tqdm it imports
    # inside the function): both silenced around the call; once, however often this runs
    bootstrap = getattr(lm_eval.api.metrics.bootstrap_stderr, "__wrapped__", lm_eval.api.metrics.bootstrap_stderr)

    @functools.wraps(bootstrap)
    def quiet_bootstrap(*args, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return bootstrap(*args, **kwargs)
    lm_eval.api.metrics.bootstrap_stderr = quiet_bootstrap


def run_lm_eval(lm, names: list[str], limit: int | None = None, online: bool = False,
                bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS, cache: str | Path | None = None) -> dict:
    """lm-eval's `simple_evaluate` of `lm` (an lm-eval LM, e.g. the adapter's HarnessLM) on our
    overlays of the tasks `names` (data checked first). `cache`: a SQLite file of lm-eval's request
    cache, so an interrupted evaluation resumes where it stopped."""
    files = task_files(names, online)  # fails here, before any model work, when data is missing
    # one overlay folder for everything mirrored, so every call shares one TaskManager
    overlay = render_overlays({**mirrored_files(), **files})
    from lm_eval import simple_evaluate
    cache_prompt_templates()
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        batch_request_cache()
    return simple_evaluate(model=lm, tasks=list(names), limit=limit, bootstrap_iters=bootstrap_iters,
                           task_manager=task_manager(overlay), use_cache=str(cache) if cache else None,
                           log_samples=True)


def document_bootstrap_stderr(samples: list[dict], metric: str, iters: int, seed: int = 1234) -> float | None:
    """Bootstrap stderr of a corpus-level metric (lm-eval gives none for word perplexity and the
    other weighted aggregates): resample documents with replacement, re-aggregate with lm-eval's
    own aggregation function, take the standard deviation."""
    import numpy as np
    from lm_eval.api.registry import get_metric_aggregation
    # in document order: a data-parallel evaluation gathers the samples rank by rank
    items = [s[metric] for s in sorted(samples, key=lambda s: s.get("doc_id", 0)) if metric in s]
    if len(items) < 2 or iters <= 0:
        return None
    aggregate = get_metric_aggregation(metric)
    rng = np.random.default_rng(seed)
    values = [aggregate([items[j] for j in rng.integers(len(items), size=len(items))]) for _ in range(iters)]
    return float(np.std(values, ddof=1))


def result_rows(results: dict, ctx, limit: int | None, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS) -> list:
    """Rows in the common schema, one per (task, metric): value, stderr, n, task_version, and the
    `limit` lm-eval ran under where it cut the task: its sample counts say so (`n-samples`: fewer
    `effective` than `original` documents); a limit that covered them all leaves complete rows."""
    rows = []
    tasks = lm_eval_tasks()
    for name, metrics in results["results"].items():
        if name not in tasks:
            continue
        counts = results.get("n-samples", {}).get(name, {})
        n = counts.get("effective")
        cut = limit if n is None or n != counts.get("original") else None
        version = results.get("versions", {}).get(name)
        for key, value in metrics.items():
            metric, comma, filt = key.partition(",")  # lm-eval's metric keys are "metric,filter"
            if not comma or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) else None
            if stderr is None:
                stderr = document_bootstrap_stderr(results.get("samples", {}).get(name, []), metric,
                                                   bootstrap_iters)
            rows.append(ctx.row(name, metric, value, stderr=stderr, n=n, task_version=version, limit=cut,
                                paper_metric=metric in tasks[name].paper_metrics))
    return rows


def lm_eval_task_rows(name: str, model, tokenizer, ctx) -> list:
    """The runner of every lm-eval task: the model behind the adapter, lm-eval on the task's overlay,
    the results as rows (ctx.options: `online`, `bootstrap_iters`, `cache_dir` of lm-eval's request
    cache, all optional)."""
    from harness.evaluation.lm_eval_adapter import HarnessLM
    lm = HarnessLM(model=model, tokenizer=tokenizer, device=ctx.device,
                   max_length=ctx.cfg.model.max_seq_len, dtype=ctx.cfg.train.dtype, progress=False)
    quiet_lm_eval()
    cache = ctx.options.get("cache_dir")
    iters = ctx.options.get("bootstrap_iters", DEFAULT_BOOTSTRAP_ITERS)
    results = run_lm_eval(lm, [name], limit=ctx.limit, online=ctx.options.get("online", False),
                          bootstrap_iters=iters, cache=Path(cache) / f"{name}.sqlite" if cache else None)
    if results is None:  # a rank other than 0 of a data-parallel evaluation: rank 0 holds the metrics
        return []
    return result_rows(results, ctx, ctx.limit, iters)


def chance_levels() -> dict[str, float]:
    """Accuracy of a uniform random guess per task that declares its choices (`LmEvalTask.choices`),
    from the mirrored data: the mean of 1 / choices over its first split's records."""
    from statistics import mean
    out = {}
    for name, task in lm_eval_tasks().items():
        if task.choices is None:
            continue
        ds = mirror.dataset(task.dataset)
        path = mirror.stored_file(task.dataset, next(iter(ds.splits)))
        if path is None:
            continue
        records = [json.loads(line) for line in jsonl_lines(mirror.read_stored(path).decode("utf-8")) if line.strip()]
        out[name] = mean(1 / task.choices(r) for r in records) if records else None
    return out
