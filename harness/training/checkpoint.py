"""Checkpoints (<run>/checkpoint/): model.safetensors (full weights), trainer.pt (full optimizer
state keyed by parameter name, step, data position, each rank's RNG state; the LR schedule is a
function of the step, so the step is its whole state), meta.json (model, config, progress, the
harness commit, and the sha256 of the other two files, checked before they are read: a truncated
or corrupted file stops with one line naming it, never a half-read model). Full state dicts are
gathered on rank 0 and written there, rather than sharded torch.distributed.checkpoint files:
the 340m/760m states fit one host's memory, and the result is one file that any world size, a
single process or `load_checkpoint` reads. A checkpoint is written into a temporary folder and
swapped in by rename, so an interruption at any moment leaves the previous checkpoint whole (a
half-finished swap is repaired at the next start); resuming continues bit for bit.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from harness.config import EXECUTION_KEYS, Config, ConfigError, first_line
from harness.data.tokenizer import get_tokenizer
from harness.files import file_sha256, share_like_any_file
from harness.memory import is_out_of_memory
from harness.model.build import build_model, runnable_model
from harness.registry import get_model, models
from harness.training import distributed
from harness.training.distributed import Dist
from harness.training.outcome import CheckpointDamaged, TrainingError
from harness.training.trainlog import LOG_FILE, PLOT_FILE

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
META_FILE = "meta.json"
# train.* keys that may change between a checkpoint and its resumption: they alter speed, memory
# or the final held-out scoring, not the meaning of the state saved so far. train.tokens is not one
# of them: the learning-rate schedule of the steps already taken depends on it.
RESUMABLE_CHANGES = EXECUTION_KEYS | {"eval_tokens"}


# ---------------------------------------------------------------- checkpoints

def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _tied_duplicates(model: torch.nn.Module) -> set[str]:
    """Names of parameters that repeat another (tied weights): safetensors stores each tensor once."""
    seen, dupes = set(), set()
    for name, p in distributed.unwrap(model).named_parameters(remove_duplicate=False):
        if id(p) in seen:
            dupes.add(name)
        seen.add(id(p))
    return dupes


def _fsync_dir(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def has_checkpoint(ckpt: Path) -> bool:
    """Whether a run folder's checkpoint exists to resume. One that lost its meta.json is damaged,
    not absent: starting over would silently overwrite its weights."""
    if (ckpt / META_FILE).is_file():
        return True
    if ckpt.is_dir() and any(ckpt.iterdir()):
        raise CheckpointDamaged(f"{ckpt} has no {META_FILE}, so the checkpoint is damaged")
    return False


def read_meta(ckpt: Path) -> dict:
    """A checkpoint's meta.json, or a CheckpointDamaged naming it when it is not readable JSON or holds
    wrongly what is read from it (its config, `_meta_problem`): a damaged record is one line that says
    so, not a traceback deep in the command, nor a NaN written back into it."""
    path = Path(ckpt) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointDamaged(f"{path} is damaged ({err})") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("model"), str) and isinstance(meta.get("config"), dict)):
        raise CheckpointDamaged(f"{path} is damaged (it has no model name and config)")
    cfg = _saved_config(meta["config"])
    if isinstance(cfg, str):
        raise _unreadable_config(path, meta, cfg)
    problem = _meta_problem(meta, cfg)
    if problem:
        raise CheckpointDamaged(f"{path} is damaged ({problem})")
    return meta


def _unreadable_config(path: Path, meta: dict, problem: str) -> CheckpointDamaged:
    """The error of a meta.json whose config does not read: damaged, or, when another commit wrote it,
    written by a version whose config this one does not take (an option renamed or removed since):
    deleting such a checkpoint is not the only way on."""
    from harness.results.provenance import git_commit
    commit = meta.get("commit")
    if isinstance(commit, str) and commit != git_commit():
        return CheckpointDamaged(f"{path} was written by commit {commit}, whose config this version does not read "
                                 f"({problem})", keep="evaluate it with that commit")
    return CheckpointDamaged(f"{path} is damaged ({problem})")


def _meta_problem(meta: dict, cfg: Config) -> str | None:
    """What is wrong in a meta.json, besides its model name and config (`cfg`, read from it), among what
    the commands read from it, or None. Optional fields (those of checkpoints written before them, or by
    tests) are checked where present."""
    sums = meta.get("sha256", {})
    if not (isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())):
        return "its sha256 is not a mapping of file names to checksums"
    plugin = meta.get("plugin")
    if plugin and not (isinstance(plugin, dict) and all(isinstance(plugin.get(k), str) for k in ("file", "sha256"))):
        return "its plugin is not a file name and sha256"
    for key in ("step", "tokens", "params"):
        if meta.get(key) is not None and not _is_count(meta[key]):
            return _not_a("whole number", key, meta[key])
    return _result_problem(meta, cfg)


def _saved_config(config: dict) -> Config | str:
    """The Config a meta.json records, or what keeps it from being read or used (`Config.validate`: a
    config that trained passed it)."""
    if not isinstance(config.get("preset"), str):
        return "its config has no preset"
    for section in ("model", "train"):
        if not isinstance(config.get(section, {}), dict):
            return f"its config's {section} is not a mapping"
    try:
        cfg = Config.from_dict(config)
        cfg.validate()
        return cfg
    except ConfigError as err:
        return f"its config: {err}"
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return f"its config: {type(err).__name__}: {err}"


def _result_problem(meta: dict, cfg: Config) -> str | None:
    """A finished checkpoint (its last step, or a held-out loss recorded) holds its losses as finite numbers:
    reusing it reports them, and resuming it would train no step and write a NaN train loss."""
    last = meta.get("step") is not None and meta["step"] >= cfg.train.steps
    if not last and meta.get("heldout_loss") is None:
        return None
    for key in ("heldout_loss", "train_loss"):
        if not is_finite_number(meta.get(key)):
            return f"it is finished but {_not_a('finite number', key, meta.get(key))}"
    return None


def _not_a(kind: str, key: str, value) -> str:
    """How a field of a damaged file is wrong: absent, or not of its kind."""
    return f"it has no {key}" if value is None else f"its {key} is {value!r}, not a {kind}"


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_finite_number(value) -> bool:
    """A real number, not a bool, and finite: what a loss or a speed read from a stored file must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verify_checkpoint(ckpt: Path, meta: dict, names: tuple[str, ...]) -> None:
    """Every named file of a checkpoint is there with the sha256 its meta.json records (checkpoints
    written before the checksums were kept pass: reading them then says when they are damaged)."""
    for name in names:
        path = Path(ckpt) / name
        if not path.is_file():
            raise CheckpointDamaged(f"{path} is missing, the checkpoint is incomplete")
        expected = meta.get("sha256", {}).get(name)
        if expected is not None and file_sha256(path) != expected:
            raise CheckpointDamaged(f"{path} is damaged (truncated or corrupted: its sha256 is not the one in "
                                    f"{META_FILE})")


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` with renames only; `recover_checkpoint` finishes a swap cut short."""
    old = final.with_name(f".{CHECKPOINT_DIR}.old{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(run_dir: Path) -> None:
    """Remove unfinished checkpoint folders; restore the previous checkpoint if a swap was cut
    between its two renames."""
    run_dir = Path(run_dir)
    final = run_dir / CHECKPOINT_DIR
    for tmp in run_dir.glob(f".{CHECKPOINT_DIR}.tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(run_dir.glob(f".{CHECKPOINT_DIR}.old*"), key=lambda p: p.stat().st_mtime)
    if olds and not final.exists():
        olds.pop().rename(final)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def open_run_dir(run_dir: Path, resume: bool) -> None:
    """The run folder made ready to train into (rank 0): a cut checkpoint swap repaired and, unless
    `resume`, the earlier run discarded whole (checkpoint, log and loss plot), so that nothing in the
    folder describes a run that is no longer there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(run_dir)
    if not resume:
        _discard_checkpoint(run_dir / CHECKPOINT_DIR)
        for name in (LOG_FILE, PLOT_FILE):
            (run_dir / name).unlink(missing_ok=True)


def _discard_checkpoint(final: Path) -> None:
    """Delete a checkpoint, renamed out of the way first: a deletion cut short (Ctrl-C) leaves the
    rest of it where `recover_checkpoint` removes it, not a checkpoint without its meta.json that
    the next run refuses as damaged."""
    if final.exists():
        doomed = final.with_name(f".{CHECKPOINT_DIR}.tmp-discarded{os.getpid()}")
        final.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(run_dir: Path, model, optimizer, meta: dict, trainer: dict, d: Dist) -> Path:
    """Gather the full state on rank 0 and write it atomically; every rank must call this.
    optimizer None: a model fitted by counting, which has no optimizer state. Rank 0 tells the
    others whether the write failed (a full disk, say): they stop with it instead of waiting at a
    barrier for a rank that has gone, until the job's timeout."""
    weights = distributed.full_model_state(model)
    optim = distributed.full_optimizer_state(model, optimizer) if optimizer is not None else {}
    rng = d.gather_objects(_rng_state(d.device))
    final = Path(run_dir) / CHECKPOINT_DIR
    failure = None
    if d.is_main:
        try:
            _write_checkpoint(final, model, weights, {**trainer, "optimizer": optim, "rng": rng}, meta)
        except Exception as err:
            failure = err
    if d.broadcast_object(failure is not None):
        if failure is not None:
            raise failure
        raise TrainingError(f"rank 0 could not write the checkpoint {final} (its error says why); this rank stops "
                            f"with it")
    return final


def _write_checkpoint(final: Path, model, weights: dict, trainer: dict, meta: dict) -> None:
    """Rank 0's part of save_checkpoint: the files into a temporary folder, then swapped in whole."""
    from safetensors.torch import save_file
    tmp = final.with_name(f".{CHECKPOINT_DIR}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        dupes = _tied_duplicates(model)
        save_file({k: v.contiguous() for k, v in weights.items() if k not in dupes}, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt"})
        share_like_any_file(tmp / WEIGHTS_FILE)
        _torch_save(trainer, tmp / TRAINER_FILE)
        sums = {name: file_sha256(tmp / name) for name in (WEIGHTS_FILE, TRAINER_FILE)}
        (tmp / META_FILE).write_text(json.dumps({**meta, "sha256": sums}, indent=1, default=str))
        _fsync_dir(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # half written, it is no checkpoint and holds the disk's space
        if full := no_space(err, final.parent):
            raise full from None
        raise
    _swap_in(tmp, final)


def _torch_save(obj, path: Path) -> None:
    """torch.save through a Python file, so that a write the disk refuses raises its OSError (ENOSPC
    when the disk is full): torch's own writer reports any short write as "unexpected pos", no cause."""
    refused = []
    with open(path, "wb") as f:
        def write(data):
            try:
                return f.write(data)
            except OSError as err:
                refused.append(err)
                raise
        try:
            torch.save(obj, SimpleNamespace(write=write, flush=f.flush))
        except RuntimeError:
            if refused:
                raise refused[0] from None
            raise


def no_space(err: BaseException, folder: Path) -> OSError | None:
    """A write into `folder` that failed for want of disk space, as the ENOSPC OSError of the folder
    (which the command line says in one line, with the fix), or None for any other failure. safetensors
    names the cause only in its message ("... (os error 28)")."""
    if getattr(err, "errno", None) == errno.ENOSPC or f"(os error {errno.ENOSPC})" in str(err):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    return None


def weights_digest(meta: dict, weights: Path) -> str | None:
    """The sha256 of a checkpoint's weights file (16 hex digits), as its meta.json records it, else
    read from the file (checkpoints written before the checksums were kept); None without either."""
    digest = meta.get("sha256", {}).get(WEIGHTS_FILE)
    if digest is None and weights.is_file():
        digest = file_sha256(weights)
    return digest[:16] if digest else None


TOKENIZER_KEY = "tokenizer_sha256"  # meta.json: the content of the tokenizer the weights' ids are of


def check_tokenizer_unchanged(meta: dict, ckpt: Path, now: str | None = None) -> None:
    """A checkpoint is read only with the tokenizer it was trained with: train.tokenizer names a file
    (a mirror name or a path), and one retrained under that name (`harness data train-tokenizer
    --force`) gives other ids, which the weights would read as garbage, silently. `now`: the
    fingerprint of the tokenizer as it is, where the caller has it loaded already (else it is
    loaded). Checkpoints written before meta.json recorded the tokenizer's content are not checked."""
    saved = meta.get(TOKENIZER_KEY)
    if saved is None:
        return
    name = Config.from_dict(meta["config"]).train.tokenizer
    now = get_tokenizer(name).fingerprint if now is None else now
    if now != saved:
        raise TrainingError(f"{ckpt} was trained with tokenizer {name} of sha256 {saved[:12]}, but {name} is now "
                            f"another (sha256 {now[:12]}; retrained?); restore the tokenizer it was trained with, or "
                            f"train anew: `harness train ... --no-resume` (or another --out), "
                            f"`harness run ... --force`")


def require_checkpoint(path: Path | str) -> None:
    """FileNotFoundError unless `path` holds a checkpoint (its meta.json). Where it is the run's model
    folder above one (<runs>/<run>/<model>, the folder a run prints and the one users pass), the
    error names the checkpoint folder inside it."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return
    inner = path / CHECKPOINT_DIR
    fix = (f"did you mean {inner}?" if (inner / META_FILE).is_file()
           else "pass the folder that `harness train` wrote (<runs>/<run>/<model>/checkpoint)")
    raise FileNotFoundError(f"{path} is not a checkpoint folder (no meta.json); {fix}")


def load_checkpoint(path: Path, device="cpu", to_run: bool = True):
    """(model, Config, model name, meta) from a checkpoint folder written by `save_checkpoint`.
    `to_run=False`: the weights only read, not run (harness export): the model is built on `device`
    even where it could not run there (fla's layers on a CPU), without the checks a run makes first."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    path = Path(path)
    require_checkpoint(path)
    meta = read_meta(path)
    verify_checkpoint(path, meta, (WEIGHTS_FILE,))
    check_plugin_unchanged(meta, path)
    check_tokenizer_unchanged(meta, path)
    cfg = Config.from_dict(meta["config"])
    model = (runnable_model if to_run else build_model)(meta["model"], cfg.model, device)
    try:
        check_fit(model, _stored_shapes(path / WEIGHTS_FILE), path / WEIGHTS_FILE)
        load_model(model, str(path / WEIGHTS_FILE), device=str(device))
    except TrainingError:  # check_fit's, which says what does not fit
        raise
    except SafetensorError as err:
        raise CheckpointDamaged(f"{path / WEIGHTS_FILE} is damaged ({err})") from None
    except RuntimeError as err:  # anything else that does not load (check_fit named the tensors' names and shapes)
        if is_out_of_memory(err):
            raise
        raise CheckpointDamaged(f"{path / WEIGHTS_FILE} does not fit the model its {META_FILE} describes "
                                f"({first_line(err)})") from None
    return model, cfg, meta["model"], meta


def check_plugin_unchanged(meta: dict, ckpt: Path) -> None:
    """A checkpoint of a plugin file's model is read only by that file as it trained it (meta.json
    keeps its sha256), and one of the harness's own model only by it: an edited file, or a plugin that
    replaces the model (`override=True`), would resume or score other code on these weights, silently."""
    saved = meta.get("plugin")
    if saved and meta["model"] not in models():  # the command was not given the file: say which it is
        raise TrainingError(f"{ckpt} holds {meta['model']}, a model of plugin file {saved['file']}; pass "
                            f"--plugin {saved['file']}")
    spec = get_model(meta["model"])
    now = spec.plugin_file
    if not saved:
        if now is not None:
            raise TrainingError(f"{ckpt} was trained by the built-in {spec.name}, not by plugin file {now.path}, "
                                f"which replaces it now; leave out --plugin {now.path} to use the checkpoint, or "
                                f"train the plugin's model anew: `harness train ... --no-resume` (or another --out), "
                                f"`harness run ... --force`")
        return
    if now is not None and now.sha256 == saved["sha256"]:
        return
    where = (f"{now.path} now has sha256 {now.sha256[:12]}" if now is not None
             else f"{spec.name} now comes from {spec.origin}")
    raise TrainingError(f"{ckpt} was trained by plugin file {saved['file']} (sha256 {saved['sha256'][:12]}), but "
                        f"{where}; restore that file, or retrain with the new code: `harness run ... --force`, "
                        f"`harness train ... --no-resume`")


def _check_resumable(meta: dict, model_name: str, cfg: Config, ckpt: Path, tokenizer_sha256: str,
                     counted: bool = False) -> None:
    """Refuse to resume under another recipe, or with another tokenizer than the one whose content
    is `tokenizer_sha256` (the run's, loaded). `counted`: a model fitted by counting, whose counts
    over more tokens are those of fewer plus the rest, so its budget may grow (not shrink)."""
    saved = Config.from_dict(meta["config"])
    hint = "pass --no-resume to start over, or --out for a new run folder"
    if meta["model"] != model_name:
        raise ConfigError(f"{ckpt} holds a {meta['model']} checkpoint, not {model_name}; {hint}")
    check_plugin_unchanged(meta, ckpt)
    check_tokenizer_unchanged(meta, ckpt, tokenizer_sha256)
    if saved.to_dict()["model"] != cfg.to_dict()["model"]:
        raise ConfigError(f"{ckpt} was trained with another model config; {hint}")
    old, new = saved.to_dict()["train"], cfg.to_dict()["train"]
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]
                     and not (counted and k == "tokens" and new[k] > old[k]))
    if not changed and meta.get("heldout_loss") is not None and old.get("eval_tokens") != new["eval_tokens"]:
        changed = ["eval_tokens"]  # a finished run's held-out loss was scored on the old count
    if changed:
        raise ConfigError(f"{ckpt} was trained with other train.{changed[0]} ({old.get(changed[0])!r}, now "
                          f"{new[changed[0]]!r}); {hint}")


def _resume(ckpt: Path, model, optimizer, d: Dist) -> dict:
    """Load a checkpoint into the (wrapped) model and optimizer; returns its step, data position
    and meta. Rank 0 checks and reads the files, and that they fit the model, and the state is
    broadcast."""
    weights, trainer, failure = {}, {}, None
    if d.is_main:
        try:
            weights, trainer = _read_state(ckpt)
            check_fit(model, {k: tuple(v.shape) for k, v in weights.items()}, ckpt / WEIGHTS_FILE)
            check_optimizer_fit(model, trainer["optimizer"], ckpt / TRAINER_FILE)
        except TrainingError as err:
            failure = err
    # every rank stops, not only the one that read, and with the error itself: a CheckpointDamaged
    # stays one on every rank (`harness study` gives it its own fix)
    failure = d.broadcast_object(failure)
    if failure is not None:
        raise failure
    missing = _tied_duplicates(model)
    if d.is_main:  # tied names were stored once: give each its tensor back
        for name in missing:
            weights[name] = weights[_tie_source(model, name)]
    _load_state(ckpt, model, optimizer, weights, trainer.get("optimizer", {}))
    info = d.broadcast_object({k: trainer.get(k) for k in ("step", "position", "rng")})
    rng = info.pop("rng")
    if rng is not None and len(rng) == d.world_size:  # same layout: continue every rank's stream
        _set_rng_state(rng[d.rank], d.device)
    return info


def _load_state(ckpt: Path, model, optimizer, weights: dict, optim: dict) -> None:
    """`distributed.load_full_state`, where a state that does not load (an optimizer state of other
    parameters, say: the weights were checked before) is one line naming the checkpoint."""
    try:
        distributed.load_full_state(model, optimizer, weights, optim)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        if is_out_of_memory(err):
            raise
        raise CheckpointDamaged(f"{ckpt} does not load into the model its {META_FILE} describes "
                                f"({type(err).__name__}: {first_line(err)})") from None


def _stored_shapes(weights_file: Path) -> dict[str, tuple[int, ...]]:
    """The tensors of a safetensors file, name: shape, read from its header alone."""
    from safetensors import safe_open
    with safe_open(str(weights_file), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def check_fit(model, stored: dict[str, tuple[int, ...]], weights_file: Path) -> None:
    """The stored tensors (name: shape) are the model's, all of them and in its shapes: a weight
    missing from the file would otherwise train on freshly initialised (a full-state load does not
    ask for every key), and one of another shape stopped in a traceback."""
    problem = _fit_problem(_tensor_groups(model), stored)
    if problem:
        raise CheckpointDamaged(f"{weights_file} does not fit the model its {META_FILE} describes ({problem}): a "
                                f"checkpoint of an older version of the model, or damaged")


def check_optimizer_fit(model, optim: dict, trainer_file: Path) -> None:
    """The optimizer state's per-parameter tensors (Adam's moments) are in their parameters' shapes:
    loading does not compare them, and moments of another model would stop the first optimizer step in
    a traceback."""
    shapes = {name: shape for names, shape in _tensor_groups(model) if shape is not None for name in names}
    state = optim.get("state")
    entries = [(name, entry) for name, entry in state.items() if name in shapes and isinstance(entry, dict)] \
        if isinstance(state, dict) else []  # any other layout is refused by the load itself (`_load_state`)
    reshaped = [f"{name} {key} {list(value.shape)}, the model's {list(shapes[name])}"
                for name, entry in entries for key, value in entry.items()
                if isinstance(value, torch.Tensor) and value.dim() and tuple(value.shape) != shapes[name]]
    if reshaped:
        raise CheckpointDamaged(f"{trainer_file} does not fit the model its {META_FILE} describes (optimizer state "
                                f"of other shapes: {_some(reshaped)}): a trainer state of another run, or damaged")


def _tensor_groups(model) -> list[tuple[tuple[str, ...], tuple[int, ...] | None]]:
    """The model's tensors as a checkpoint holds them: each with all its names (a tied weight is stored
    once, under any of them) and, for a parameter, its full shape (FSDP2's sharded tensors report it);
    a buffer's shape may be the data's (a count model's tables are sized when loaded), so it is None."""
    model = distributed.unwrap(model)
    parameters = {id(p) for p in model.parameters()}
    groups: dict[int, tuple[list[str], tuple[int, ...] | None]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        shape = tuple(tensor.shape) if id(tensor) in parameters else None
        groups.setdefault(id(tensor), ([], shape))[0].append(name)
    return [(tuple(names), shape) for names, shape in groups.values()]


def _fit_problem(groups: list[tuple[tuple[str, ...], tuple[int, ...] | None]], stored: dict) -> str | None:
    """What differs between the model's tensors and the stored ones, in a few words, or None."""
    known = {name for names, _ in groups for name in names}
    missing = [names[0] for names, _ in groups if not any(n in stored for n in names)]
    unexpected = sorted(set(stored) - known)
    reshaped = [f"{n} {list(stored[n])}, the model's {list(shape)}" for names, shape in groups for n in names
                if shape is not None and n in stored and tuple(stored[n]) != shape]
    parts = [f"{what} {_some(items)}" for what, items in
             (("missing tensors", missing), ("unexpected tensors", unexpected), ("other shapes:", reshaped)) if items]
    return "; ".join(parts) or None


def _some(items: list[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _read_state(ckpt: Path) -> tuple[dict, dict]:
    """(weights, trainer state) of a checkpoint, checked against its checksums first, the trainer
    state then against what resuming reads from it (`_trainer_problem`)."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file
    meta = read_meta(ckpt)
    verify_checkpoint(ckpt, meta, (WEIGHTS_FILE, TRAINER_FILE))
    name = WEIGHTS_FILE
    try:
        weights = load_file(str(ckpt / WEIGHTS_FILE))
        name = TRAINER_FILE
        trainer = torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointDamaged(f"{ckpt / name} is damaged ({type(err).__name__})") from None
    problem = _trainer_problem(trainer, meta)
    if problem:
        raise CheckpointDamaged(f"{ckpt / TRAINER_FILE} is damaged ({problem})")
    return weights, trainer


def _trainer_problem(trainer, meta: dict) -> str | None:
    """What is wrong in a trainer state among what resuming reads (step, position, optimizer state, RNG
    states), or None; its step is meta.json's (both are written by one save)."""
    if not isinstance(trainer, dict):
        return f"it holds {type(trainer).__name__}, not the trainer state"
    for key in ("step", "position"):
        if not _is_count(trainer.get(key)):
            return _not_a("whole number", key, trainer.get(key))
    if meta.get("step") is not None and trainer["step"] != meta["step"]:
        return f"its step {trainer['step']} is not the step {meta['step']} of {META_FILE}"
    if not isinstance(trainer.get("optimizer"), dict):
        return "it has no optimizer state"
    rng = trainer.get("rng")
    if rng is not None and not (isinstance(rng, list) and all(
            isinstance(r, dict) and isinstance(r.get("cpu"), torch.Tensor) for r in rng)):
        return "its RNG states are not one per rank"
    return None


def _tie_source(model, name: str) -> str:
    params = dict(distributed.unwrap(model).named_parameters(remove_duplicate=False))
    return next(n for n, p in params.items() if p is params[name] and n != name)
