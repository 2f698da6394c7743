"""What gets evaluated: a model source gives the evaluation loop a model, its tokenizer, config and
checkpoint summary.

- `TrainedSource` (`harness run`): the run's finished checkpoint of a registered model when it was
  trained with the same config, else a training run into it (resumed when cut);
- `CheckpointSource` (`harness eval --checkpoint` / `--models`): a `harness train` checkpoint folder;
- `HFSource` (`hf:<path>`): a Hugging Face checkpoint folder (e.g. an fla model) behind the harness
  model contract.

Every source has a checkpoint on disk once loaded, which keys lm-eval's request cache, and says
which weights it gives (`weights_id`), which its rows record so that a rerun reuses only rows of the
same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from harness.config import (
    Config,
    ConfigError,
    ModelConfig,
    TrainConfig,
    config_difference,
    first_line,
    folder_name,
)
from harness.data.paths import DataError, cache_dir
from harness.data.tokenizer import get_tokenizer
from harness.hf.causal_lm import HFCausalLM
from harness.hf.progress import no_transformers_bars
from harness.model.build import checked_model
from harness.registry import get_model
from harness.registry import models as registered_models
from harness.training.checkpoint import (
    CHECKPOINT_DIR,
    META_FILE,
    WEIGHTS_FILE,
    check_plugin_unchanged,
    load_checkpoint,
    read_meta,
    require_checkpoint,
    verify_checkpoint,
    weights_digest,
)
from harness.training.outcome import StopRequests, TrainingStopped
from harness.training.train import train
from harness.training.trainlog import LOG_FILE, read_log


class RunError(RuntimeError):
    """A run cannot proceed as asked; the message says how to proceed."""


@dataclass
class Loaded:
    """A source's model, ready to score."""
    model: torch.nn.Module
    tokenizer: object
    cfg: Config
    meta: dict  # the checkpoint's summary: params, tokens, held-out loss, ...


class ModelSource(ABC):
    """A named model to score, with the checkpoint folder it is (or will be) read from."""
    name: str
    checkpoint: str
    retrains = False  # whether loading replaces the checkpoint, so that its earlier rows describe weights gone
    corpus: str | None = None  # the held-out corpus it is told to score on, where not its checkpoint's own

    @abstractmethod
    def check(self, device: str, world_size: int) -> None:
        """Raise what loading would refuse, before the loop writes anything."""

    @abstractmethod
    def weights_id(self) -> str | None:
        """What tells the weights this source gives now from any others (None: none yet, they are to
        be trained): the rows record it, so that a rerun reuses only rows of these same weights."""

    @abstractmethod
    def load(self, device: str, log: Callable[[str], None]) -> Loaded:
        """The model, its tokenizer, config and checkpoint summary (`log` says what was done)."""

    def trained_config(self) -> Config | None:
        """The config the weights were trained with, where the source knows it."""
        return None


@dataclass
class CheckpointSource(ModelSource):
    """A checkpoint folder written by `harness train` (or `harness run`)."""
    name: str
    checkpoint: str

    def check(self, device: str, world_size: int) -> None:
        ckpt = Path(self.checkpoint)
        meta = read_meta(ckpt)
        if self.name in registered_models():
            check_model_name(self.name, meta, ckpt)
        verify_checkpoint(ckpt, meta, (WEIGHTS_FILE,))
        check_plugin_unchanged(meta, ckpt)
        checked_model(meta["model"], Config.from_dict(meta["config"]).model, device)

    def load(self, device: str, log: Callable[[str], None] = print) -> Loaded:
        model, cfg, _, meta = load_checkpoint(Path(self.checkpoint), device)
        return Loaded(model, get_tokenizer(cfg.train.tokenizer), cfg, meta)

    def trained_config(self) -> Config | None:
        return Config.from_dict(read_meta(Path(self.checkpoint))["config"])

    def weights_id(self) -> str | None:
        ckpt = Path(self.checkpoint)
        return weights_digest(read_meta(ckpt), ckpt / WEIGHTS_FILE)


@dataclass
class HFSource(ModelSource):
    """A Hugging Face checkpoint folder: `checkpoint` is `hf:<path>`. Its held-out scores (smoke) read
    `corpus`, else the training run's held-out settings that a `harness export` folder records, else
    TrainConfig's defaults; the rows name the corpus. A `harness export` folder's rows also carry the
    preset and tokens its run trained on, so that they stand beside the checkpoint's; other folders'
    rows are preset "hf", tokens unknown."""
    name: str
    checkpoint: str
    corpus: str | None = None

    def check(self, device: str, world_size: int) -> None:
        from harness.data.corpus import corpus_files
        export_record(hf_folder(self.checkpoint.removeprefix("hf:")))
        if self.corpus is not None:
            corpus_files(self.corpus)

    def load(self, device: str, log: Callable[[str], None] = print) -> Loaded:
        from harness.model.backbone import count_params
        path = self.checkpoint.removeprefix("hf:")
        model, tokenizer, length = load_hf(path, device)
        heldout, trained = export_record(Path(path))
        train = TrainConfig(dtype="bf16", tokenizer=path, **heldout)
        if self.corpus is not None:
            train.corpus = self.corpus
        cfg = Config(trained.get("preset", "hf"), ModelConfig(vocab_size=tokenizer.vocab_size, max_seq_len=length),
                     train)
        return Loaded(model, tokenizer, cfg, {"params": count_params(model), "tokens": trained.get("tokens")})

    def weights_id(self) -> str | None:
        return hf_weights_id(Path(self.checkpoint.removeprefix("hf:")))


@dataclass
class TrainedSource(ModelSource):
    """A registered model of a `harness run`: trained into RUNS/<run>/<model>/ (or reused from there),
    its per-step log and checkpoint summary kept in `record_dir` (results/<run>/train/), which stands
    for the checkpoint where that is gone (the results are committed, the checkpoints are not)."""
    name: str
    cfg: Config
    run_dir: Path
    record_dir: Path
    force: bool = False  # retrain from scratch even when a finished checkpoint matches
    on_step: Callable | None = None
    writes_record: bool = True  # False on a rank other than 0, which only reads the record
    stops: StopRequests | None = None  # signals that stop its training at a checkpoint (else they stop at once)
    checkpoint: str = field(init=False)

    def __post_init__(self):
        self.checkpoint = str(Path(self.run_dir) / CHECKPOINT_DIR)

    @property
    def retrains(self) -> bool:
        return self.force

    def check(self, device: str, world_size: int) -> None:
        check_trainable(self.name, self.cfg, device, world_size)
        if self.force:
            return
        meta, where = self.trained_meta()
        if meta is None:
            return
        if where == Path(self.checkpoint):  # to be reused or resumed: by the code that trained it
            check_plugin_unchanged(meta, where)
        check_model_name(self.name, meta, where)
        check_same_config(self.name, meta, self.cfg, where)

    def load(self, device: str, log: Callable[[str], None] = print) -> Loaded:
        if self.force and self.writes_record:  # it describes the run about to be replaced
            discard_training_record(self.record_dir, self.name)
        try:
            with self.stops.training() if self.stops else contextlib.nullcontext() as should_stop:
                model, meta, trained = trained_model(self.name, self.cfg, Path(self.run_dir), device, self.force,
                                                     self.on_step, should_stop)
        except TrainingStopped as err:
            raise TrainingStopped(f"{self.name}: {err}", self.name) from None
        log(f"{self.name}: {'trained' if trained else 'reused checkpoint'}, {meta['params']:,} params, "
            f"held-out loss {meta['heldout_loss']:.4f}")
        if self.writes_record:
            keep_training_record(Path(self.run_dir), self.record_dir, self.name)
        return Loaded(model, get_tokenizer(self.cfg.train.tokenizer), self.cfg, meta)

    def weights_id(self) -> str | None:
        meta, _ = self.trained_meta()
        if meta is None or meta.get("heldout_loss") is None:  # not trained, or cut: training comes first
            return None
        return weights_digest(meta, Path(self.checkpoint) / WEIGHTS_FILE)

    def trained_meta(self) -> tuple[dict | None, Path | None]:
        """(meta, where it was read): the checkpoint's meta.json, else its copy in the training
        record; (None, None) for a model not trained into this run (a damaged record counts as none)."""
        ckpt = Path(self.checkpoint)
        if (ckpt / META_FILE).is_file():
            return read_meta(ckpt), ckpt
        record = training_record(self.run_dir, self.record_dir, self.name)[ckpt / META_FILE]
        try:
            meta = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = None
        return (meta, record) if isinstance(meta, dict) and isinstance(meta.get("config"), dict) else (None, None)


def trained_model(name: str, cfg: Config, run_dir: Path, device: str, force: bool,
                  on_step: Callable | None = None, should_stop: Callable[[], bool] | None = None):
    """(model, meta, trained): the finished checkpoint in run_dir when it matches cfg, else a
    training run into run_dir (resumed from its checkpoint unless `force`). Either way the model is
    the checkpoint as loaded, so that the tasks score the same module whether it was trained now or
    earlier (not the trained one with its training options applied: compiled layers, fused loss)."""
    ckpt = run_dir / CHECKPOINT_DIR
    if (ckpt / META_FILE).is_file() and not force:
        meta = read_meta(ckpt)
        check_same_config(name, meta, cfg, run_dir)
        if meta.get("heldout_loss") is not None:
            model, _, _, meta = load_checkpoint(ckpt, device)
            return model, meta, False
    tagged = (lambda info: on_step({**info, "model": name})) if on_step else None
    result = train(name, cfg, run_dir, device, on_step=tagged, resume=not force,  # force: start afresh
                   should_stop=should_stop)
    del result
    model, _, _, meta = load_checkpoint(ckpt, device)
    return model, meta, True


def check_model_name(name: str, meta: dict, where: Path) -> None:
    """Refuse a checkpoint of another model in `name`'s folder: its scores would be written as name's."""
    if meta.get("model") != name:
        raise RunError(f"{where} holds a {meta.get('model')} checkpoint, but its folder names it {name}, another "
                       f"model; move it to a folder named {meta.get('model')}")


def check_same_config(name: str, meta: dict, cfg: Config, where: Path) -> None:
    """Refuse a model trained (as `meta`, read from `where`) with another config than cfg: reused,
    its rows would be labelled with a config that did not produce them."""
    change = config_difference(Config.from_dict(meta["config"]), cfg)
    if change:
        raise RunError(f"{where} holds {name} trained with another config ({change}); "
                       f"pass --run NEW_NAME for a new run, or --force to retrain")


def check_trainable(name: str, cfg: Config, device: str, world_size: int) -> None:
    """What training or loading `name` at cfg would refuse: the tokenizer and corpus, the batch
    layout, the model (`checked_model`: runs here, a plugin's keeps the model contract) and its
    training options."""
    from harness.data.corpus import corpus_files
    from harness.memory import check_training_memory
    from harness.training.batches import _batch_layout
    from harness.training.counting import one_process_only
    from harness.training.distributed import layers_of
    from harness.training.recipe import check_tokenizer, fused_cross_entropy
    spec = get_model(name)
    check_tokenizer(cfg)
    corpus_files(cfg.train.corpus)
    _batch_layout(cfg.train, world_size)
    model = checked_model(spec.name, cfg.model, device)
    if world_size > 1 and getattr(model, "fitted_by_counting", False):  # before any other model's work
        raise one_process_only(spec.name)
    fused_cross_entropy(model, torch.device(device), cfg.train.fused_ce)
    check_training_memory(model, cfg, device)
    if cfg.train.activation_checkpointing and not layers_of(model):
        raise RunError(f"train.activation_checkpointing needs a model with a `blocks` ModuleList (the shared "
                       f"backbone), which {spec.name} lacks; set train.activation_checkpointing=false")


RECORD_DIR = "train"  # results/<run>/train/: the copies of its runs' training records (`record_copies`)


def kept_logs(results_dirs: list[Path]) -> dict[tuple[str, str], list[dict]]:
    """The per-step training logs that results folders keep, read: {(folder name, model): records}."""
    return {(Path(d).name, f.name[:-len(f"_{LOG_FILE}")]): read_log(f)
            for d in results_dirs for f in sorted((Path(d) / RECORD_DIR).glob(f"*_{LOG_FILE}"))}


def record_copies(out: Path, name: str) -> dict[str, Path]:
    """{file of a run folder, relative to it: its copy in out/}: the per-step log and the
    checkpoint summary."""
    return {LOG_FILE: out / f"{name}_{LOG_FILE}", f"{CHECKPOINT_DIR}/{META_FILE}": out / f"{name}_meta.json"}


def training_record(run_dir: Path, out: Path, name: str) -> dict[Path, Path]:
    """{file of the run folder: its copy in out/}."""
    return {run_dir / source: copy for source, copy in record_copies(out, name).items()}


def keep_training_record(run_dir: Path, out: Path, name: str) -> None:
    """Copy the model's per-step training log and checkpoint summary (tokens/s, MFU, memory,
    held-out loss) into out/, so that a committed results folder keeps the curves and the
    throughput behind its rows without the checkpoints (which are not committed)."""
    from harness.files import atomic_write_text
    for source, target in training_record(run_dir, out, name).items():
        if source.is_file():
            atomic_write_text(target, source.read_text(encoding="utf-8"))


def discard_training_record(out: Path, name: str) -> None:
    for copy in record_copies(out, name).values():
        copy.unlink(missing_ok=True)


def model_sources(run: str, runs_dir: Path, models: list[str], checkpoints: list[str],
                  corpus: str | None = None) -> list[ModelSource]:
    """Sources from `--models` (run model names, or hf:<path>) and `--checkpoint` folders; with
    neither, every finished checkpoint under runs/<run>/. corpus: the held-out corpus of the hf:
    models (a harness checkpoint scores on the corpus it was trained on)."""
    folder_name(run, "--run")
    if corpus is not None and not any(name.startswith("hf:") for name in models):
        raise ConfigError("--corpus sets the held-out corpus of hf: models, and none is given; a checkpoint "
                          "scores on the corpus it was trained on: drop --corpus")
    out: list[ModelSource] = [CheckpointSource(Path(c).resolve().parent.name, str(c)) for c in checkpoints]
    for name in models:
        if name.startswith("hf:"):
            out.append(HFSource("hf-" + Path(name[3:]).name, name, corpus))
        else:
            out.append(CheckpointSource(name, str(Path(runs_dir) / run / name / CHECKPOINT_DIR)))
    if not out:
        folder = Path(runs_dir) / run
        out = [CheckpointSource(p.parent.parent.name, str(p.parent))
               for p in sorted(folder.glob(f"*/{CHECKPOINT_DIR}/{META_FILE}"))]
        if not out:
            raise FileNotFoundError(f"no checkpoints under {folder}; train first (`harness run` or `harness "
                                    f"train`), or pass --checkpoint PATH or --models hf:PATH")
    for source in out:
        if isinstance(source, CheckpointSource):
            require_checkpoint(source.checkpoint)
    names = [source.name for source in out]
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        same = ", ".join(source.checkpoint for source in out if source.name == name)
        raise RunError(f"{same} would all be the model {name!r} (a checkpoint is named after the folder above "
                       f"it), and their rows would mix; evaluate them in separate runs (--run), or rename a folder")
    return out


def source_for(checkpoint: str) -> ModelSource:
    """The source of a checkpoint folder, or of a Hugging Face folder given as hf:<path>."""
    return HFSource(checkpoint, checkpoint) if checkpoint.startswith("hf:") else CheckpointSource(checkpoint,
                                                                                                   checkpoint)


def request_cache(run: str, source: ModelSource) -> Path:
    """lm-eval's request cache of one version of a source's weights: keyed by the checkpoint folder and
    the weights it holds (`weights_id`), so that answers stored for other weights in the same folder (a
    retrained checkpoint, an hf: folder whose shards were copied over) are never served again."""
    path = Path(source.checkpoint.removeprefix("hf:")).resolve()
    digest = hashlib.sha256(f"{path}|{source.weights_id()}".encode()).hexdigest()[:12]
    return cache_dir() / "lm_eval_requests" / f"{run}-{source.name}-{digest}"


def clear_request_cache(run: str, source: ModelSource) -> None:
    shutil.rmtree(request_cache(run, source), ignore_errors=True)


# ---------------------------------------------------------------- Hugging Face checkpoints

class TransformersTokenizer:
    """A transformers tokenizer behind the harness tokenizer interface (no special tokens added)."""

    def __init__(self, tok, name: str):
        self._tok, self.name = tok, name
        self.vocab_size = len(tok)
        if tok.eos_token_id is None:
            raise DataError(f"tokenizer of {name} has no end-of-sequence token")
        self.eos_id = tok.eos_token_id

    @property
    def fingerprint(self) -> str:
        """sha256 of what decides the ids (a fast tokenizer's whole definition, else its class and
        vocabulary): the token streams' cache key (`streams_folder`), so that another tokenizer of
        the same folder name is not handed this one's tokens."""
        backend = getattr(self._tok, "backend_tokenizer", None)
        text = (backend.to_str() if backend is not None
                else json.dumps([type(self._tok).__name__, self._tok.get_vocab()], sort_keys=True))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


def hf_folder(path: str) -> Path:
    """The folder, once it looks loadable: a config.json, and weights files whose headers fit their
    length (a truncated copy fails here, naming its file, not deep inside transformers)."""
    from safetensors import SafetensorError, safe_open
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"hf:{path}: no such folder; pass a local Hugging Face checkpoint folder")
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"hf:{path} has no config.json; pass a folder written by save_pretrained or "
                                f"`harness export`")
    for weights in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except SafetensorError as err:
            raise ConfigError(f"{weights} is damaged ({err}); copy the folder again, or export it again "
                              f"(`harness export --checkpoint DIR --out {path} --force`)") from None
    return Path(path)


def config_json(folder: Path) -> dict:
    """A Hugging Face folder's config.json as a dict, or {} where it cannot be read as one
    (transformers says what is wrong with the file when it loads the folder)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


EXPORT_RECORD = {"harness_heldout": {"corpus": str, "seq_len": int, "eval_tokens": int},
                 "harness_trained": {"preset": str, "tokens": int}}  # harness.hf.export.run_record's keys


def export_record(folder: Path) -> tuple[dict, dict]:
    """(held-out settings, training) that a `harness export` folder's config.json records, each {}
    where it records none (another tool's folder). A record of another shape, as a hand-edited file
    may hold, is an error that names it, not a TypeError from the config it would be passed to."""
    config = config_json(folder)
    records = []
    for key, fields in EXPORT_RECORD.items():
        record = config.get(key) or {}
        if not isinstance(record, dict) or any(name not in fields or type(value) is not fields[name]
                                               for name, value in record.items()):
            wanted = ", ".join(f"{name}: {kind.__name__}" for name, kind in fields.items())
            raise ConfigError(f"{folder / 'config.json'}: {key} {record!r} is not what `harness export` writes "
                              f"({wanted}); export the checkpoint again, or delete {key}")
        records.append(record)
    return records[0], records[1]


def hf_weights_id(folder: Path) -> str:
    """A digest of the names, sizes and modification times of an hf: folder's weights files: hashing
    their contents (gigabytes for a hub model) on every command would cost more than it saves."""
    stamps = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.iterdir())
              if p.suffix in (".safetensors", ".bin")]
    return hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]


def register_exported_model() -> None:
    """Give transformers' Auto classes the harness's own exported model type (`harness export`), so
    that an `hf:` folder the harness wrote loads with this installation's copy of its modelling code
    rather than the folder's (which would need trust_remote_code, and a question on a terminal)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from harness.hf.configuration_swat_harness import SwatHarnessConfig
    from harness.hf.modeling_swat_harness import SwatHarnessForCausalLM
    if SwatHarnessConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(SwatHarnessConfig.model_type, SwatHarnessConfig)
        AutoModelForCausalLM.register(SwatHarnessConfig, SwatHarnessForCausalLM)


def causal_lm_class(path: str):
    """The class that loads the folder. A `harness export` of a model type that transformers defines itself
    (mamba) was written for transformers' own class, and loads with it: fla registers its own classes
    for some of those types with the Auto classes (exist_ok=True), which read such a config by other
    field names (its norm eps among them). Anything else loads through the Auto classes, with fla
    imported first, when installed, for the types it alone provides (GLA, RetNet, HGRN2, DeltaNet, ...);
    so a Mamba folder that the harness did not write (fla's own checkpoints share the model type) loads
    as fla's class where fla is installed."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    config = config_json(Path(path))
    own = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type"))
    if own is not None and "harness_model" in config:
        return getattr(transformers, own)
    try:
        with warnings.catch_warnings():  # on a CPU, fla warns at import that Triton is not supported
            warnings.simplefilter("ignore")
            import fla  # noqa: F401  (registers GLA, RetNet, HGRN2, DeltaNet, ... with transformers)
    except ImportError:
        pass
    return transformers.AutoModelForCausalLM


def load_hf(path: str, device: str):
    """(model, tokenizer, max_length) of a Hugging Face checkpoint folder (`causal_lm_class` says which
    class loads it)."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("hf: checkpoints need transformers (and fla for its recurrent models): "
                          "pip install transformers 'swat-harness[fla]'") from None
    hf_folder(path)
    register_exported_model()
    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:  # a folder's own code never runs: trust_remote_code=False, also for the tokenizer
        with no_transformers_bars():
            model = causal_lm_class(path).from_pretrained(path, dtype=dtype, trust_remote_code=False)
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:  # transformers' errors for a folder it cannot read or does not know
        raise ConfigError(f"hf:{path}: transformers cannot load it ({first_line(err)}); pass a "
                          f"folder written by save_pretrained or `harness export`, of a model type transformers "
                          f"(or fla, when installed) provides") from None
    model = model.to(device).eval()
    tokenizer = TransformersTokenizer(hf_tokenizer, Path(path).name)
    length = getattr(model.config, "max_position_embeddings", None) or 2048
    return HFCausalLM(model), tokenizer, length
