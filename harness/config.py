"""Model and training configuration: dataclasses, presets, and validated overrides.

One `ModelConfig` describes every architecture; fields a mixer does not use are ignored by it.
Presets fix the sizes and token budgets that make a comparison fair (same width, depth budget,
data and recipe for every model); `--set section.key=value` and YAML files override them, and
every value is checked here so that a typo fails in one line naming the key, not deep in a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

SLOPE_KINDS = ("balanced", "negative", "positive", "none")  # model.slopes (or a list), harness.ops.alibi's kinds
SLOPE_FORMS = ("paper", "alibi")  # model.slope_form: the magnitudes' form (harness.ops.alibi.magnitudes)


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and the fix."""


# torch's sizes and counts are int64: every integer of a config, and a width computed here, stays below it
MAX_DIM = 2 ** 63
# a float is exact for every whole number below 2^53, not from there on (1e29 reads as 99999999999999991433150857216):
# an integer field takes a float (1e6) only below it
EXACT_FLOAT = 2 ** 53
# layers are built one by one, some milliseconds each: 10,000 (ten times the deepest Transformer trained, DeepNet's
# 1,000) build in a minute, while a count near 2^63, which the sizes allow, would build for ever
MAX_LAYERS = 10_000


def folder_name(value, field: str) -> str:
    """A name that becomes one folder (a run's, a study's, a size's): a non-empty string with no path
    separator and not `.` or `..`, which would write beside or above the folder meant."""
    if not isinstance(value, str) or not value.strip() or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise ConfigError(f"{field} must be a non-empty name without / or \\, got {value!r}")
    return value


@dataclass
class ModelConfig:
    vocab_size: int = 32000
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int | None = None  # None: as many as num_heads (no GQA)
    mlp_hidden: int | None = None  # SwiGLU inner size; None: 8/3 * hidden rounded up to 64
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    init_std: float = 0.02
    max_seq_len: int = 1024  # training length; RoPE tables and length checks use it
    # attention mixers (harness.model.attention)
    window: int = 512  # keys j with 0 <= i - j < window (the query's own token included)
    activation: str = "sigmoid"  # swat's score activation: sigmoid | softmax (ablation)
    slopes: Any = "balanced"  # balanced | negative | positive | none | list of floats
    slope_form: str = "paper"  # magnitudes: paper (2^-k, the SWAT paper's Eq. 4) | alibi (2^(-8k/n))
    rope: bool = True
    rope_theta: float = 10000.0
    sigmoid_bias: float = 0.0  # constant added to every sigmoid score (e.g. -log W)
    # recurrent mixers (state-space and linear-recurrent layers)
    state_size: int = 16
    expand: float = 2.0
    d_inner: int | None = None  # None: expand * hidden_size
    conv_kernel: int = 4
    extra: dict = field(default_factory=dict)  # mixer-specific options of plugins

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def ffn_hidden(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return _round_up(8 * self.hidden_size // 3, 64)  # integers: a float quotient overflows a huge size

    @property
    def inner_size(self) -> int:
        return self.d_inner if self.d_inner is not None else int(self.expand * self.hidden_size)

    def validate(self) -> None:
        check_types("model", self)
        positive = ["vocab_size", "hidden_size", "num_layers", "num_heads", "window", "max_seq_len",
                    "state_size", "conv_kernel"]
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.num_layers > MAX_LAYERS:
            raise ConfigError(f"model.num_layers must be at most {MAX_LAYERS:,} (each layer is built on its own), "
                              f"got {self.num_layers}")
        for key in ["mlp_hidden", "d_inner", "num_kv_heads"]:
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"model.{key} must be positive or unset, got {value}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model.num_heads={self.num_heads} must divide "
                              f"model.hidden_size={self.hidden_size}")
        if self.num_heads % self.kv_heads:
            raise ConfigError(f"model.num_kv_heads={self.kv_heads} must divide "
                              f"model.num_heads={self.num_heads}")
        if self.head_dim % 2 and self.rope:
            raise ConfigError(f"model.rope needs an even head dim, got {self.head_dim}; "
                              f"change model.num_heads or set model.rope=false")
        if self.activation not in ("sigmoid", "softmax"):
            raise ConfigError(f"model.activation must be sigmoid or softmax, got {self.activation!r}")
        if isinstance(self.slopes, str):
            if self.slopes not in SLOPE_KINDS:
                raise ConfigError("model.slopes must be balanced, negative, positive, none or a list "
                                  f"of {self.num_heads} floats, got {self.slopes!r}")
        elif not isinstance(self.slopes, (list, tuple)) or len(self.slopes) != self.num_heads:
            raise ConfigError(f"model.slopes must be balanced, negative, positive, none or a list of "
                              f"{self.num_heads} floats, got {self.slopes!r}")
        if self.slope_form not in SLOPE_FORMS:
            raise ConfigError(f"model.slope_form must be {' or '.join(SLOPE_FORMS)}, got {self.slope_form!r}")
        if self.expand <= 0:
            raise ConfigError(f"model.expand must be positive, got {self.expand}")
        for key in ["norm_eps", "init_std", "rope_theta"]:
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        self.check_inner_size()
        check_int64("model", self)  # after the inner size, whose message names both factors of a product too large

    def check_inner_size(self) -> None:
        """expand x hidden_size, when d_inner is unset, is a whole width a tensor can have: the product is
        computed here, where it can be out of range, not in `inner_size` (an OverflowError mid-build)."""
        if self.d_inner is not None:
            return
        inner = _product(self.expand, self.hidden_size)
        if not inner < MAX_DIM:
            raise ConfigError(f"model.expand={self.expand} x model.hidden_size={self.hidden_size} is out of range "
                              f"(torch's sizes stay below 2^63); lower them or set model.d_inner")
        if inner < 1:
            raise ConfigError(f"model.expand={self.expand} x model.hidden_size={self.hidden_size} leaves no "
                              f"inner size; raise model.expand or set model.d_inner")


# train.* options that are switched on where they apply ("auto"), demanded ("on": an error names
# what is missing) or left off; true and false read as on and off
SWITCHES = ("compile", "fused_ce")
SWITCH_VALUES = ("auto", "on", "off")
# train.* keys that change how a run executes (speed, memory, bookkeeping), not what it trains:
# config_hash leaves them out, and a checkpoint resumes under other values of them
EXECUTION_KEYS = frozenset({"micro_batch", "compile", "activation_checkpointing", "fused_ce", "save_every"})


@dataclass
class TrainConfig:
    tokens: int = 15_000_000_000  # token budget; steps = tokens // batch_tokens
    batch_tokens: int = 524_288  # global batch in tokens (sequences * seq_len)
    seq_len: int = 1024
    micro_batch: int = 16  # sequences per device per forward; the rest is accumulation
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_tokens: int = 500_000_000
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "bf16"  # bf16 | fp32 (autocast dtype on GPU; the CPU runs fp32)
    # torch.compile per layer: auto | on | off (SWITCHES); auto compiles on a CUDA GPU the models
    # whose layers are known to compile (harness.training.recipe.compile_applies)
    compile: str = "auto"
    activation_checkpointing: bool = False
    # fla's FusedLinearCrossEntropyLoss for models on the shared backbone (CUDA, fla installed):
    # head matmul + cross-entropy in chunks, never materialising the [tokens, vocab] fp32 logits;
    # auto | on | off, auto using it wherever it applies
    fused_ce: str = "auto"
    eval_tokens: int = 1_000_000  # held-out tokens for the perplexity at the end of training
    save_every: int = 1000  # steps between checkpoints
    corpus: str = "english-mix"  # name of a corpus (harness.data.corpus) or a path to text/JSONL files
    tokenizer: str = "llama2"  # bytes | llama2 | path to a tokenizer.json

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_tokens)

    @property
    def warmup_steps(self) -> int:
        return min(self.steps, self.warmup_tokens // self.batch_tokens)

    def validate(self) -> None:
        check_types("train", self)
        for key in ["tokens", "batch_tokens", "seq_len", "micro_batch", "eval_tokens", "save_every"]:
            if getattr(self, key) <= 0:
                raise ConfigError(f"train.{key} must be positive, got {getattr(self, key)}")
        if self.batch_tokens % self.seq_len:
            raise ConfigError(f"train.batch_tokens={self.batch_tokens} must be a multiple of "
                              f"train.seq_len={self.seq_len}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.warmup_tokens < 0:
            raise ConfigError(f"train.warmup_tokens must be >= 0, got {self.warmup_tokens}")
        if self.dtype not in ("bf16", "fp32"):
            raise ConfigError(f"train.dtype must be bf16 or fp32, got {self.dtype!r}")
        for key in SWITCHES:
            if getattr(self, key) not in SWITCH_VALUES:
                raise ConfigError(f"train.{key} must be auto, on or off, got {getattr(self, key)!r}")
        # a negative clip flips the gradients, a negative ratio or decay turns the step around
        if self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be positive (the largest gradient norm), got {self.grad_clip}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be between 0 and 1 (a fraction of train.lr), "
                              f"got {self.min_lr_ratio}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), e.g. [0.9, 0.95], got {list(self.betas)}")
        if not 0 <= self.seed < 2 ** 63:
            raise ConfigError(f"train.seed must be between 0 and 2^63 - 1, got {self.seed}")
        for key in ["corpus", "tokenizer"]:
            if not getattr(self, key).strip():
                raise ConfigError(f"train.{key} is empty; name one (see the README's Data section)")
        check_int64("train", self)


@dataclass
class Config:
    preset: str
    model: ModelConfig
    train: TrainConfig

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()
        if self.train.seq_len > self.model.max_seq_len:
            raise ConfigError(f"train.seq_len={self.train.seq_len} exceeds "
                              f"model.max_seq_len={self.model.max_seq_len}; raise model.max_seq_len")

    def to_dict(self) -> dict:
        return {"preset": self.preset, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """A stored config (checkpoint meta, run.json). One written before `model.slope_form`
        existed ran ALiBi's geometric slopes, so it reads back as slope_form=alibi."""
        cfg = cls(data["preset"], ModelConfig(), TrainConfig())
        model = dict(data.get("model", {}))
        if model and "slope_form" not in model:
            model["slope_form"] = "alibi"
        apply_mapping(cfg, {"model": model, "train": data.get("train", {})})
        return cfg


def check_types(section: str, obj) -> None:
    """Every field of a config section holds its default's type, and every number is finite: a YAML
    file can hold any type, and NaN or infinity slips through the range checks that follow."""
    for f in fields(obj):
        default = f.default_factory() if f.default is MISSING else f.default
        value, name = getattr(obj, f.name), f"{section}.{f.name}"
        if value is None:
            if default is not None:
                raise ConfigError(f"{name} needs a value, got null")
        elif f.name == "slopes":
            if not isinstance(value, str) and not _numbers(value):
                raise ConfigError(f"{name} must be balanced, negative, positive, none or a list of numbers, "
                                  f"got {value!r}")
        elif isinstance(default, (bool, str, dict)):
            if type(value) is not type(default):
                kind = {bool: "true or false", str: "a string", dict: "a mapping"}[type(default)]
                raise ConfigError(f"{name} must be {kind}, got {value!r}")
        elif default is None or isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if not _numbers([value]):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        elif isinstance(default, tuple) and not _numbers(value):
            raise ConfigError(f"{name} must be a list of numbers, got {value!r}")


def check_int64(section: str, obj) -> None:
    """Every integer of a config section is below 2^63 (MAX_DIM): torch, numpy and the checkpoint's
    tensors hold them as int64, and a larger one fails there in a traceback (or, as a token budget,
    trains for ever). The sections check their lower bounds themselves."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= MAX_DIM:
            raise ConfigError(f"{section}.{f.name} must be below 2^63 (torch's integers are int64), got {value}")


def _numbers(values) -> bool:
    """Whether values is a list of finite numbers (booleans are not numbers here)."""
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _product(factor: float, size: int) -> float:
    """factor x size as a float, infinite where it is beyond a float (an integer size too large for a
    float makes the product itself raise OverflowError)."""
    try:
        return factor * size
    except OverflowError:
        return math.inf


def _round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple


# Presets. tiny: CPU in seconds (byte tokenizer, bundled text). small: one GPU in minutes.
# 340m / 760m: the SWAT paper's scales (arXiv 2502.18845): training length 4096 and 0.5M-token
# batches (128 sequences, in micro-batches of 4 per GPU: 16K tokens per forward, the memory of the
# 1024-token recipe), 15B / 30B tokens of FineWeb-Edu (fetched online with `harness data fetch
# fineweb-edu`), the fla family's AdamW recipe: lr 3e-4 with cosine decay, wd 0.01, clip 1.0.
PRESETS: dict[str, dict] = {
    "tiny": {
        "model": dict(vocab_size=257, hidden_size=64, num_layers=2, num_heads=4, window=32,
                      max_seq_len=128, state_size=8),
        "train": dict(tokens=64 * 128 * 8, batch_tokens=8 * 128, seq_len=128, micro_batch=8,
                      lr=3e-3, warmup_tokens=8 * 128 * 2, eval_tokens=8192, save_every=32,
                      dtype="fp32", corpus="bundled", tokenizer="bytes"),
    },
    "small": {
        "model": dict(vocab_size=32000, hidden_size=512, num_layers=8, num_heads=8, window=256,
                      max_seq_len=1024),
        "train": dict(tokens=200_000_000, batch_tokens=131_072, seq_len=1024, micro_batch=32,
                      lr=1e-3, warmup_tokens=10_000_000, eval_tokens=1_000_000, save_every=200,
                      corpus="english-mix"),
    },
    "340m": {
        "model": dict(vocab_size=32000, hidden_size=1024, num_layers=24, num_heads=16, window=512,
                      max_seq_len=4096),
        "train": dict(tokens=15_000_000_000, batch_tokens=524_288, seq_len=4096, micro_batch=4,
                      lr=3e-4, warmup_tokens=500_000_000, corpus="fineweb-edu"),
    },
    "760m": {
        "model": dict(vocab_size=32000, hidden_size=1536, num_layers=24, num_heads=24, window=512,
                      max_seq_len=4096),
        "train": dict(tokens=30_000_000_000, batch_tokens=524_288, seq_len=4096, micro_batch=4,
                      lr=3e-4, warmup_tokens=500_000_000, corpus="fineweb-edu"),
    },
}


def _switch(value: Any) -> Any:
    """auto, on or off from a switch's value: true/false (YAML, CLI, configs stored before the
    switches had auto) read as on/off; anything else is left for validate to name."""
    text = str(value).lower() if isinstance(value, (bool, str)) else value
    return {"true": "on", "false": "off"}.get(text, text)


def _coerce(section: str, key: str, current: Any, value: Any) -> Any:
    """Convert a CLI string or YAML value to the type of the field it replaces."""
    name = f"{section}.{key}"
    if section == "train" and key in SWITCHES:
        return _switch(value)
    # a string field that also takes a list (model.slopes) gets its list form from --set as `[...]`
    if isinstance(value, str) and (not isinstance(current, str) or value.lstrip().startswith("[")):
        try:
            value = load_yaml(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{name}: cannot parse {value!r} ({err.problem})") from None
    if value is None:  # null: allowed for the optional integers only (validate says so)
        return value
    if current is None:  # an unset optional integer (num_kv_heads, mlp_hidden, d_inner)
        current = 0
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, str):  # nan, inf (YAML's .nan, .inf): read, then refused as not finite
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if isinstance(current, int) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if abs(value) >= EXACT_FLOAT:
                raise ConfigError(f"{name} must be a whole number below 2^63 written in digits, got {value!r} (a "
                                  f"float is not exact from 2^53 on)")
        try:
            return type(current)(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"{name} is out of range, got {value!r}") from None
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, e.g. [0.9, 0.95], got {value!r}")
        return tuple(float(v) if type(v) is int else v for v in value)  # [0, 0.5]: AdamW wants floats
    return value


def apply_mapping(cfg: Config, mapping: dict) -> None:
    """Apply `{"model": {...}, "train": {...}}` to cfg, rejecting unknown sections and keys."""
    for section, values in mapping.items():
        if section not in ("model", "train"):
            hint = _section_hint(cfg, section)
            raise ConfigError(f"unknown config section {section!r}; use model.* or train.*{hint}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys to values")
        target = getattr(cfg, section)
        known = {f.name for f in fields(target)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown key {section}.{key}{_key_hint(target, section, str(key))}")
            setattr(target, key, _coerce(section, key, getattr(target, key), value))


def _key_hint(target, section: str, key: str) -> str:
    """What an unknown key was likely meant as: a mapping field's inner keys written dotted
    (model.extra.mamba2.ngroups, which is set whole as nested YAML), else the closest known key."""
    from difflib import get_close_matches
    head, _, inner = key.partition(".")
    if inner and isinstance(getattr(target, head, None), dict):
        value = "..."
        for part in reversed(inner.split(".")):
            value = f"{{{part}: {value}}}"
        return f"; set {section}.{head} whole, as YAML: --set '{section}.{head}={value}'"
    close = get_close_matches(key, [f.name for f in fields(target)], n=1)
    return f"; did you mean {section}.{close[0]}?" if close else ""


def _section_hint(cfg: Config, name) -> str:
    """Where a key written at a config file's top level (`window: 16`) belongs."""
    owners = [section for section in ("model", "train") if name in {f.name for f in fields(getattr(cfg, section))}]
    return f" ({name} belongs under {owners[0]}:)" if owners else ""


def parse_override(text: str) -> dict:
    """`model.window=256` -> {"model": {"window": "256"}}."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. model.window=256")
    dotted, value = text.split("=", 1)
    section, key = dotted.split(".", 1)
    return {section.strip(): {key.strip(): value.strip()}}


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (`window: 16`, later `window: 8`):
    PyYAML keeps the last silently, so one of the two values the user wrote would be dropped unseen."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key_node.tag != "tag:yaml.org,2002:merge":
                    if key in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                                key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        """An integer in decimal unless its prefix names a base (0x, 0o, 0b): `window: 064` is 64, where
        YAML 1.1 reads a leading zero as octal (52)."""
        text = self.construct_scalar(node).replace("_", "")
        sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
        base = {"0x": 16, "0o": 8, "0b": 2}.get(digits[:2].lower(), 10)
        return sign * int(digits if base == 10 else digits[2:], base)


# StrictLoader reads numbers as YAML 1.2 does, not as YAML 1.1 (PyYAML's): 1e-3 is a float, not the string
# "1e-3" (a list of them was refused), 064 is 64, not octal 52, and 1:30 is a string, not 90 (base 60)
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
StrictLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+)$"),
                                   list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT, re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)"
                                                      r"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
                                   list("-+0123456789."))
StrictLoader.add_constructor(_INT, StrictLoader.construct_yaml_int)


def load_yaml(text: str):
    """yaml.safe_load with duplicate keys refused (StrictLoader). A value PyYAML reads but cannot build
    raises ValueError (a date that is none, 2024-13-01; an integer of more digits than Python converts):
    it becomes the YAMLError that its callers turn into one line."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except ValueError as err:
        raise yaml.constructor.ConstructorError(problem=first_line(err)) from None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" where it has none): an error here is one line, and
    many a library's message spans several (PyYAML's context, transformers', a state dict's tensors)."""
    return next(iter(str(err).strip().splitlines()), "")


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line, with where it is (its message spans several lines of context)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or first_line(err)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_yaml_file(path: Path, what: str):
    """The YAML document of a file the user gave (`what` names it in errors): one ConfigError line
    when it is missing, not a file, not UTF-8 text or not valid YAML."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 YAML") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {yaml_problem(err)}") from None


def load_config(preset: str = "tiny", config_file: str | Path | None = None,
                overrides: list[str] = ()) -> Config:
    """Preset, then the YAML file, then `--set` overrides; validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = Config(preset, ModelConfig(), TrainConfig())
    apply_mapping(cfg, PRESETS[preset])
    if config_file is not None:
        if not str(config_file).strip():  # Path("") is ".", which would be reported as a folder
            raise ConfigError("config file is an empty name; give the path of a YAML file (--config FILE.yaml)")
        path = Path(config_file)
        data = read_yaml_file(path, "config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping with model: and train: sections")
        apply_mapping(cfg, data)
    for text in overrides:
        apply_mapping(cfg, parse_override(text))
    cfg.validate()
    return cfg


def config_hash(cfg: Config) -> str:
    """Short stable digest of what a config trains, used to tell finished work from work to redo
    (the EXECUTION_KEYS, which change only how it runs, are left out)."""
    import hashlib
    data = cfg.to_dict()
    data["train"] = {k: v for k, v in data["train"].items() if k not in EXECUTION_KEYS}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def config_difference(old: Config, new: Config) -> str | None:
    """None where two configs train the same (config_hash), else the first setting that tells them
    apart, as `section.key old, now new`: what a refusal to mix their work names."""
    if config_hash(old) == config_hash(new):
        return None
    before, after = old.to_dict(), new.to_dict()
    for section in ("model", "train"):
        for key, value in after[section].items():
            was = before[section].get(key)
            if not (section == "train" and key in EXECUTION_KEYS) and json.dumps(was) != json.dumps(value):
                return f"{section}.{key} {was!r}, now {value!r}"
    return f"preset {old.preset!r}, now {new.preset!r}"
