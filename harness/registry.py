"""Registries of models and tasks, filled by decorators, found by entry point or plugin file.

A baseline is one file with one `@register_model` call. Built-ins live in `baselines/` and
`tasks/`; third-party packages expose modules under the entry-point groups `harness.models` and
`harness.tasks`; `--plugin path.py` loads a single file. Lookups of unknown names fail with the
known names and the closest match.

Registration is checked where it happens, so that a plugin's mistake stops with one line naming it
rather than passing silently (a name that is a path or holds a comma, `gpu_only="no"` read as
true, a second model of the same name replacing the first) or failing far from its cause.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field, fields
from difflib import get_close_matches
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable


class RegistryError(LookupError):
    """An unknown model or task name, or a plugin that cannot be loaded."""


class ContractError(RegistryError):
    """A registered model or task breaks the harness's contract: its builder fails or returns no
    nn.Module, its forward gives no [B, T, vocab_size] logits, a plugin's task fails or returns
    something other than its finite rows. The message names the model or task and what it must do."""


class MissingExtraError(RegistryError, ImportError):
    """An optional package of a model is not installed; the message names the extra to install.
    (An ImportError, so that callers that skip uninstalled optional models keep working.)"""


class KernelRefusedError(RegistryError, RuntimeError):
    """A model's library refuses one of its kernels on this GPU and software (e.g. fla's gated
    backward on Hopper with some Triton versions); the message names the fix. Benchmarks skip the
    refused sweep; training stops in one line."""


@dataclass(frozen=True)
class PluginFile:
    """A plugin file as it was imported (`--plugin`): the path given and the sha256 of its bytes, which
    a checkpoint of its model records (an edited file is other code on the same weights)."""
    path: str
    sha256: str

    def record(self) -> dict:
        return {"file": self.path, "sha256": self.sha256}


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
    origin: str = ""  # where it was registered: a plugin file, an entry point or a module
    builtin: bool = False  # registered by the harness's own modules (baselines, tasks, harness)
    plugin_file: PluginFile | None = None  # the --plugin file that registered it

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
    origin: str = ""  # as ModelSpec's
    builtin: bool = False  # the harness's own: its failures keep their tracebacks
    plugin_file: PluginFile | None = None
    row_tasks: tuple = ()  # the task names its rows carry, where not its own (speed: speed_train, ...)
    per_device: bool = False  # its rows time the device they ran on: another device's rows are not its result
    chance: Callable | None = None  # chance(tokenizer name or None) -> a uniform guess's accuracy at its acc rows

    @property
    def row_task_names(self) -> tuple:
        """The `task` of the rows it writes: what a rerun finds done, and replaces."""
        return self.row_tasks or (self.name,)


@dataclass
class _Registry:
    models: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)
    loaded: bool = False
    registered: int = 0  # registrations so far: a plugin file that adds none is worth a warning
    loading: PluginFile | str | None = None  # the plugin file (or entry point) being imported


_REG = _Registry()
BUILTIN_MODULES = ("baselines", "tasks")
# a name becomes a folder (runs/<run>/<model>), a file prefix and an item of a comma-separated list
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def unknown_hint(kind: str) -> str:
    """What to try when a name is not registered here: most often a plugin's, loaded by another command."""
    return f"a plugin {kind}? pass its --plugin FILE.py"


def matchable_fields() -> tuple[str, ...]:
    """The ModelConfig fields `match` may name: the integers left unset by default, which the
    harness solves for the reference parameter count (a set value is the user's and kept)."""
    from harness.config import ModelConfig
    return tuple(f.name for f in fields(ModelConfig) if f.default is None)


# what each kind of registration argument takes, as its error message says it
ARGUMENT_KINDS = {str: "a string", bool: "True or False", "str?": "a string or None", "strs": "a list of strings",
                  "str|strs": "a string or a list of strings", "callable?": "a function or None"}


def _fits(value, kind) -> bool:
    """Whether value is of the ARGUMENT_KINDS kind `kind`."""
    if kind == "str?":
        return value is None or isinstance(value, str)
    if kind == "callable?":
        return value is None or callable(value)
    if kind in ("strs", "str|strs"):
        return (kind == "str|strs" and isinstance(value, str)) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
    return type(value) is kind  # bool exactly: "no" and 1 are not booleans


def check_registration(function: str, name, arguments: dict[str, tuple]) -> None:
    """The arguments of a register_model / register_task call, `{argument: (value, kind)}`, checked
    before anything is registered: a string where a list belongs would be split into letters, a
    string where a boolean belongs reads as true, and a name that is a path (`../x`) writes outside
    --runs, one with a comma can never be selected. One line names the argument and what it takes."""
    if callable(name) and not isinstance(name, str):  # @register_model without its parentheses
        raise RegistryError(f'{function} needs a name: @{function}("{getattr(name, "__name__", "name")}")')
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RegistryError(f"{function}({name!r}): the name must be a string of letters, digits, _, - and ., not "
                            f"starting with '.' (it names folders and is given in comma-separated lists)")
    for key, (value, kind) in arguments.items():
        if not _fits(value, kind):
            example = f" such as {key}=[{value!r}]" if isinstance(value, str) and kind == "strs" else ""
            raise RegistryError(f"{function}({name!r}, {key}={value!r}): {key} must be {ARGUMENT_KINDS[kind]}{example}")


def _registering(fn, function: str, name: str) -> dict:
    """Where the callable registered under `name` comes from: origin, builtin, plugin_file; it
    must be callable."""
    if not callable(fn):
        raise RegistryError(f"{function}({name!r}) decorates {fn!r} ({type(fn).__name__}), which is not callable; "
                            f"decorate a function")
    loading = _REG.loading
    module = getattr(fn, "__module__", "") or ""
    plugin = loading if isinstance(loading, PluginFile) else None
    origin = plugin.path if plugin else loading if isinstance(loading, str) else module
    builtin = loading is None and module.split(".")[0] in (*BUILTIN_MODULES, "harness")
    return {"origin": origin, "builtin": builtin, "plugin_file": plugin}


def _claim(kind: str, table: dict, name: str, fn: Callable, override: bool) -> None:
    """Refuse a second registration of `name` (a plugin named like a built-in would silently replace
    it) unless `override`; the same function registered again (a plugin file loaded twice) is fine,
    but not twice in one load of a file (two lambdas share a module and a name)."""
    old = table.get(name)
    if old is None or override:
        return
    old_fn = old.build if kind == "model" else old.run
    again = old.plugin_file is None or old.plugin_file is not _REG.loading
    if again and (old_fn.__module__, old_fn.__qualname__) == (fn.__module__, fn.__qualname__):
        return
    raise RegistryError(f"{kind} {name!r} is already registered (by {old.origin}); pick another name, or "
                        f"pass register_{kind}({name!r}, ..., override=True) to replace it")


def register_model(name: str, family: str = "custom", requires: tuple = (), match: str | None = None,
                   description: str = "", extra: str | None = None, gpu_only: bool = False,
                   reference: bool = False, override: bool = False):
    """Decorator over `build(cfg) -> nn.Module`; registers it under `name`. The module maps input_ids
    [B, T] to logits [B, T, V]; `init_state`/`step`/`prefill` (the shared backbone has them) give
    the tasks that decode a decode state. reference: the parameter budget every `match`ed model is
    sized to (the built-in `transformer`; one model only). override: replace a model already
    registered as `name`."""
    check_registration("register_model", name, {
        "family": (family, str), "requires": (requires, "strs"), "match": (match, "str?"),
        "description": (description, str), "extra": (extra, "str?"), "gpu_only": (gpu_only, bool),
        "reference": (reference, bool), "override": (override, bool)})
    if match is not None and match not in matchable_fields():
        raise RegistryError(f"register_model({name!r}, match={match!r}): match names the model field the harness "
                            f"sizes to the reference parameter count, one of {', '.join(matchable_fields())}")

    def deco(build: Callable) -> Callable:
        where = _registering(build, "register_model", name)
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
                                      extra, gpu_only, reference, **where)
        _REG.registered += 1
        return build
    return deco


def register_task(name: str, group: str | tuple = (), description: str = "", needs_model: bool = True,
                  data_parallel: bool = False, datasets: tuple = (), online: bool = False, override: bool = False,
                  row_tasks: tuple = (), per_device: bool = False, chance: Callable | None = None):
    """Decorator over `run(model, tokenizer, ctx) -> list[Row]`; registers it under `name`.
    data_parallel: the task splits its work over the ranks of a torchrun job itself (`ctx.dist`) and
    returns its rows on rank 0; other tasks run on rank 0 alone while the other ranks wait.
    datasets: the mirror datasets the task reads, any one of which will do; a run checks that one
    is present before any model work, and `harness data list` shows them. online: the task can
    read its dataset from the hub instead (`--online`). row_tasks: the task names its rows carry where
    they are not `name` (one task writing several kinds of row). per_device: its rows are timings of the
    device they ran on, redone on another device. chance: `chance(tokenizer name, or None where the
    run's is unknown)`, the accuracy of a uniform guess at the task's `acc` rows (None where it
    cannot be told), which tables print beside them. override: replace a task already
    registered as `name`. A task is not named like a group of other tasks, nor is its group another
    task's name: `--tasks NAME` would run the group, or both."""
    check_registration("register_task", name, {
        "group": (group, "str|strs"), "description": (description, str), "needs_model": (needs_model, bool),
        "data_parallel": (data_parallel, bool), "datasets": (datasets, "strs"), "online": (online, bool),
        "override": (override, bool), "row_tasks": (row_tasks, "strs"), "per_device": (per_device, bool),
        "chance": (chance, "callable?")})
    groups = (group,) if isinstance(group, str) else tuple(group)

    def deco(run: Callable) -> Callable:
        where = _registering(run, "register_task", name)
        _claim("task", _REG.tasks, name, run, override)
        members = [t.name for t in _REG.tasks.values() if name in t.group and t.name != name]
        if members:
            raise RegistryError(f"task {name!r} is named like the task group of {', '.join(members)}, which "
                                f"`--tasks {name}` runs instead; pick another name")
        clash = next((g for g in groups if g != name and g in _REG.tasks), None)
        if clash is not None:
            raise RegistryError(f"register_task({name!r}, group={clash!r}): {clash!r} is a task, and `--tasks "
                                f"{clash}` would run {name!r} too; pick another group name")
        _REG.tasks[name] = TaskSpec(name, run, groups,
                                    description or (run.__doc__ or "").strip().split("\n")[0],
                                    needs_model, data_parallel, tuple(datasets), online, **where,
                                    row_tasks=tuple(row_tasks), per_device=per_device, chance=chance)
        _REG.registered += 1
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
                _REG.loading = f"entry point {ep.value}"
                try:
                    ep.load()
                except Exception as err:  # a broken third-party plugin must not hide the others
                    print(f"warning: plugin {ep.name} ({ep.value}) failed to load: {err}", file=sys.stderr)
                finally:
                    _REG.loading = None
    for path in files:
        load_plugin_file(path)


def load_plugin_file(path: str | Path) -> None:
    """Import one `--plugin` file as a module named after its resolved path (two files called
    model.py stay two modules, so the second cannot pass for the first and replace its models),
    its registrations recording the file and its sha256. Everything that can go wrong is one
    RegistryError naming the file: not a .py file, a folder, a failed import, sys.exit; a file that
    registers nothing gets a warning line."""
    path = Path(path)
    if path.is_dir():
        raise RegistryError(f"plugin file {path} is a folder; pass the .py file in it that registers the model or task")
    if not path.is_file():
        raise RegistryError(f"plugin file {path} not found")
    if path.suffix != ".py":
        raise RegistryError(f"plugin file {path} is not a Python (.py) file; pass the .py file that registers "
                            f"the model or task")
    resolved = path.resolve()
    plugin = PluginFile(str(path), hashlib.sha256(resolved.read_bytes()).hexdigest())
    of_path = hashlib.sha256(bytes(resolved)).hexdigest()[:8]
    name = f"harness_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{of_path}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    before, outer, _REG.loading = _REG.registered, _REG.loading, plugin
    try:
        spec.loader.exec_module(module)
    except RegistryError as err:
        del sys.modules[name]
        raise RegistryError(f"plugin file {path}: {err}") from None
    except SystemExit as err:  # not the command's to end: its own message would be lost
        del sys.modules[name]
        raise RegistryError(f"plugin file {path} exited (SystemExit {err.code}) while importing; a plugin "
                            f"registers models and tasks, and must not call sys.exit") from None
    except Exception as err:
        del sys.modules[name]
        raise RegistryError(f"plugin file {path} failed to import: {type(err).__name__}: {err}") from err
    finally:
        _REG.loading = outer
    if _REG.registered == before:
        print(f'warning: plugin file {path} registered no model or task (decorate a builder with '
              f'@register_model("name"), a task with @register_task("name"))', file=sys.stderr)


def _lookup(kind: str, table: dict, name: str):
    load_plugins()
    if name in table:
        return table[name]
    known = sorted(table)
    close = get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RegistryError(f"unknown {kind} {name!r} ({unknown_hint(kind)}).{hint} Known {kind}s: {', '.join(known)}")


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
