"""Registries of models and tasks, filled by decorators, found by entry point or plugin file.

A baseline is one file with one `@register_model` call. Built-ins live in `baselines/` and
`tasks/`; third-party packages expose modules under the entry-point groups `harness.models` and
`harness.tasks`; `--plugin path.py` loads a single file. Lookups of unknown names fail with the
known names and the closest match.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable


class RegistryError(LookupError):
    """An unknown model or task name, or a plugin that cannot be loaded."""


class MissingExtraError(RegistryError, ImportError):
    """An optional package of a model is not installed; the message names the extra to install.
    (An ImportError, so that callers that skip uninstalled optional models keep working.)"""


class KernelRefusedError(RegistryError, RuntimeError):
    """A model's library refuses one of its kernels on this GPU and software (e.g. fla's gated
    backward on Hopper with some Triton versions); the message names the fix. Benchmarks skip the
    refused sweep; training stops in one line."""


@dataclass
class ModelSpec:
    name: str
    build: Callable  # build(cfg: ModelConfig) -> nn.Module mapping input_ids [B, T] to logits [B, T, V]
    family: str  # attention | recurrent | ssm | ... (for grouping in tables)
    requires: tuple = ()  # optional packages of the fast path, e.g. ("mamba_ssm",)
    match: str | None = None  # ModelConfig field solved so that params match the reference model
    description: str = ""
    extra: str | None = None  # the swat-harness extra that installs `requires`, e.g. "fla"
    gpu_only: bool = False  # no reference path: the model runs only on a CUDA GPU
    reference: bool = False  # the model whose parameter count the others are matched to (one of them)

    def fast_path(self) -> str:
        """'yes', or why not: missing packages or no GPU (the model then runs its reference path,
        or, when gpu_only, does not run here at all)."""
        if not self.requires:
            return "yes (torch)"
        missing = [pkg for pkg in self.requires if importlib.util.find_spec(pkg) is None]
        if missing:
            install = (f"pip install 'swat-harness[{self.extra}]'" if self.extra
                       else "pip install " + " ".join(m.replace("_", "-") for m in missing))
            return f"no: {install}" if self.gpu_only else f"no: reference path; {install}"
        import torch
        if torch.cuda.is_available():
            return "yes"
        return "no: needs a CUDA GPU" if self.gpu_only else "no GPU: reference path"

    def fast_path_short(self) -> str:
        """fast_path() in a word or two, for one line per model in `harness list`."""
        full = self.fast_path()
        if full.startswith("yes"):
            return "yes"
        if "reference path" in full:
            return "reference"
        return "needs a GPU" if "GPU" in full else f"needs [{self.extra}]" if self.extra else "needs packages"


@dataclass
class TaskSpec:
    name: str
    run: Callable  # run(model, tokenizer, ctx) -> list[Row]
    group: tuple = ()
    description: str = ""
    needs_model: bool = True
    data_parallel: bool = False  # shards its own work over torchrun ranks (lm-eval's tasks); else rank 0 runs it
    datasets: tuple = ()  # mirror datasets it reads, any one of which will do (harness.data.mirror)
    online: bool = False  # reads its dataset from the Hugging Face hub when the mirror lacks it (--online)


@dataclass
class _Registry:
    models: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)
    loaded: bool = False


_REG = _Registry()
BUILTIN_MODULES = ("baselines", "tasks")


def _claim(kind: str, table: dict, name: str, fn: Callable, override: bool) -> None:
    """Refuse a second registration of `name` (a plugin named like a built-in would silently replace
    it) unless `override`; the same function registered again (a plugin file loaded twice) is fine."""
    old = table.get(name)
    if old is None or override:
        return
    old_fn = old.build if kind == "model" else old.run
    if (old_fn.__module__, old_fn.__qualname__) == (fn.__module__, fn.__qualname__):
        return
    raise RegistryError(f"{kind} {name!r} is already registered (by {old_fn.__module__}); pick another name, or "
                        f"pass register_{kind}({name!r}, ..., override=True) to replace it")


def register_model(name: str, family: str = "custom", requires: tuple = (), match: str | None = None,
                   description: str = "", extra: str | None = None, gpu_only: bool = False,
                   reference: bool = False, override: bool = False):
    """Decorator over `build(cfg) -> nn.Module`; registers it under `name`. The module maps input_ids
    [B, T] to logits [B, T, V]; `init_state`/`step`/`prefill` (the shared backbone has them) give
    the tasks that decode a decode state. reference: the parameter budget every `match`ed model is
    sized to (the built-in `transformer`; one model only). override: replace a model already
    registered as `name`."""
    def deco(build: Callable) -> Callable:
        _claim("model", _REG.models, name, build, override)
        if reference:
            other = next((s.name for s in _REG.models.values() if s.reference and s.name != name), None)
            if other is not None and not override:
                raise RegistryError(f"model {name!r} is registered as the reference, but {other!r} already is; "
                                    f"register one reference model (or pass override=True)")
            for spec in _REG.models.values():
                spec.reference = False
        _REG.models[name] = ModelSpec(name, build, family, tuple(requires), match,
                                      description or (build.__doc__ or "").strip().split("\n")[0],
                                      extra, gpu_only, reference)
        return build
    return deco


def register_task(name: str, group: str | tuple = (), description: str = "", needs_model: bool = True,
                  data_parallel: bool = False, datasets: tuple = (), online: bool = False, override: bool = False):
    """Decorator over `run(model, tokenizer, ctx) -> list[Row]`; registers it under `name`.
    data_parallel: the task splits its work over the ranks of a torchrun job itself (`ctx.dist`) and
    returns its rows on rank 0; other tasks run on rank 0 alone while the other ranks wait.
    datasets: the mirror datasets the task reads, any one of which will do; a run checks that one
    is present before any model work, and `harness data list` shows them. online: the task can
    read its dataset from the hub instead (`--online`). override: replace a task already
    registered as `name`."""
    groups = (group,) if isinstance(group, str) else tuple(group)

    def deco(run: Callable) -> Callable:
        _claim("task", _REG.tasks, name, run, override)
        _REG.tasks[name] = TaskSpec(name, run, groups,
                                    description or (run.__doc__ or "").strip().split("\n")[0],
                                    needs_model, data_parallel, tuple(datasets), online)
        return run
    return deco


def load_plugins(files: list[str | Path] = ()) -> None:
    """Import built-ins and entry-point plugins once, and plugin files every time they are named."""
    if not _REG.loaded:
        _REG.loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for group in ("harness.models", "harness.tasks"):
            for ep in entry_points(group=group):
                try:
                    ep.load()
                except Exception as err:  # a broken third-party plugin must not hide the others
                    print(f"warning: plugin {ep.name} ({ep.value}) failed to load: {err}", file=sys.stderr)
    for path in files:
        load_plugin_file(path)


def load_plugin_file(path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"plugin file {path} not found")
    name = f"harness_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise RegistryError(f"plugin file {path} failed to import: {type(err).__name__}: {err}") from err


def _lookup(kind: str, table: dict, name: str):
    load_plugins()
    if name in table:
        return table[name]
    known = sorted(table)
    close = get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RegistryError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}")


def get_model(name: str) -> ModelSpec:
    return _lookup("model", _REG.models, name)


def reference_model() -> str:
    """The registered reference model's name: the parameter budget of matched models."""
    found = [spec.name for spec in models().values() if spec.reference]
    if not found:
        raise RegistryError("no model is registered as the reference (register_model(..., reference=True)); "
                            "the built-in transformer is, unless a plugin replaced it")
    return found[0]


def get_task(name: str) -> TaskSpec:
    return _lookup("task", _REG.tasks, name)


def models() -> dict[str, ModelSpec]:
    load_plugins()
    return dict(_REG.models)


def tasks() -> dict[str, TaskSpec]:
    load_plugins()
    return dict(_REG.tasks)


def grouped_tasks(names: list[str]) -> frozenset:
    """The tasks that `names` brings in only through a group (`all`, `commonsense`), not by their own
    name: a group runs what has data here, a task named on its own must have it."""
    return frozenset(expand_tasks(names)) - set(names)


def expand_tasks(names: list[str]) -> list[str]:
    """Resolve task names and group names (e.g. `all`, `commonsense`) to task names, in order."""
    table = tasks()
    out: list[str] = []
    for name in names:
        members = [t.name for t in table.values() if name in t.group]
        for task in members or [get_task(name).name]:
            if task not in out:
                out.append(task)
    return out
