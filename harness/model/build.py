"""Build registered models at a preset, with parameter counts matched to the reference model.

A fair comparison holds the parameter budget fixed. A baseline whose architecture does not land
on the reference count by itself (Mamba's blocks, say) names one integer ModelConfig field at
registration (`match="d_inner"`); `matched_config` solves that field so that the model's count
is as close as possible to the reference model's (`register_model(..., reference=True)`) at the
same config. Counting happens on
the meta device, so solving costs no memory even at 760m.

A command that runs a model (`runnable_model`) refuses it in one line before anything is written
where it cannot run (a gpu_only model off a CUDA GPU) or breaks the model contract
(`check_contract`): a wrong-shaped output would otherwise crash mid-run or, with the vocabulary
off by a few, train and score silently wrong.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Callable, Iterable

import torch

from harness.config import ConfigError, ModelConfig, first_line
from harness.memory import is_out_of_memory
from harness.model.backbone import count_params
from harness.registry import ContractError, ModelSpec, RegistryError, get_model, models, reference_model

MATCH_MULTIPLE = 8  # solved sizes prefer multiples of 8 (tensor-core friendly)...
MATCH_TOLERANCE = 0.005  # ...when that costs at most 0.5% of the parameter budget
MATCH_REACH = 0.02  # a solved size lands this close to the reference count, or the model is refused
MATCH_STEPS = 32  # secant steps of the solve: an affine count needs one, a quadratic one a handful
CONTRACT_SHAPE = (2, 16)  # the contract check's batch [B, T] (T at most model.max_seq_len): milliseconds
# step() against the forward, relative logit error: fp32 reaches ~1e-6 on a CPU, ~1e-3 where a GPU's
# fp32 dots run in tf32; a step that loses its state is off by tens of percent
STEP_TOLERANCE = 2e-2
# what a layer raises when it refuses its arguments as it is built (fla's asserts, a size torch cannot hold)
CONSTRUCTOR_ERRORS = (AssertionError, ValueError, TypeError, OverflowError)
# torch's RuntimeError for a tensor whose sizes each fit int64 but whose bytes do not (257 x 2^58 floats)
TOO_MANY_BYTES = "Storage size calculation overflowed"


def plugin_call(spec: ModelSpec, what: str, call: Callable):
    """call(), where a plugin's exception becomes one line naming the model and what failed (an
    ImportError: the package, and where to declare it); errors that name their fix, out of memory,
    and the harness's own models' exceptions (bugs to see, with their traceback) pass as they are."""
    try:
        return call()
    except (RegistryError, ConfigError):
        raise
    except Exception as err:
        if spec.builtin or is_out_of_memory(err):
            raise
        why = f"{type(err).__name__}: {first_line(err)}"
        if isinstance(err, ImportError) and err.name:
            why = (f"it needs package {err.name} (declare it in register_model(requires=[...]), then `harness "
                   f"list` says what to install)")
        raise ContractError(f"model {spec.name} {what}: {why}") from None


def _builtin_call(spec: ModelSpec, call: Callable):
    """call(), building one of the harness's own models. Its layers check their arguments as they are
    built (fla's asserts on head counts, torch's on sizes and on a tensor's bytes); at a config the user
    chose, such a refusal is a config error: one line naming the model and the problem (the layer's
    exception is its cause). Any other exception is a bug, and keeps its traceback."""
    try:
        return call()
    except (RegistryError, ConfigError):
        raise
    except CONSTRUCTOR_ERRORS as err:
        raise _refused(spec, first_line(err) or type(err).__name__) from err
    except RuntimeError as err:
        if not first_line(err).startswith(TOO_MANY_BYTES):
            raise  # out of memory (the command says so), or a bug
        raise _refused(spec, f"{first_line(err)} (a tensor's bytes must stay below 2^63)") from err


def _refused(spec: ModelSpec, problem: str) -> ConfigError:
    options = f" or its options under model.extra.{spec.name}" if hasattr(spec.build, "extra_options") else ""
    return ConfigError(f"model {spec.name} cannot be built at this config: {problem.rstrip('.')}; change the model.* "
                       f"sizes{options}")


def built(spec: ModelSpec, cfg: ModelConfig) -> torch.nn.Module:
    """spec.build(cfg), which must be an nn.Module (a builder that refuses cfg is one line)."""
    call = functools.partial(spec.build, cfg)
    model = _builtin_call(spec, call) if spec.builtin else plugin_call(spec, "could not be built", call)
    if not isinstance(model, torch.nn.Module):
        raise ContractError(f"model {spec.name} could not be built: its builder returned {type(model).__name__}, "
                            f"which is not a torch.nn.Module")
    return model


def params_of(name: str, cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return count_params(built(get_model(name), cfg))


def embedding_params(model: torch.nn.Module) -> int:
    """Parameters of the token embeddings and of an untied output head (a Linear named `head`):
    what scales with the vocabulary rather than with the model."""
    found = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        found[id(head.weight)] = head.weight.numel()
    return sum(found.values())


def non_embedding_params(name: str, cfg: ModelConfig) -> int:
    """The model's parameters less its embeddings (the count scaling laws are stated in), at the
    parameter-matched config."""
    model = build_model(name, cfg, "meta")
    return count_params(model) - embedding_params(model)


def matched_config(name: str, cfg: ModelConfig) -> ModelConfig:
    """cfg with the model's `match` field solved for the reference parameter count, or cfg itself
    when the model has no such field or the user set it explicitly. A size that cannot bring the
    model within MATCH_REACH of the reference (a field the builder does not read, a model too large
    at its smallest) is refused: its rows would pass for parameter-matched ones."""
    spec = get_model(name)
    if spec.match is None or getattr(cfg, spec.match) is not None:
        return cfg
    try:
        target = params_of(reference_model(), cfg)
    except ConfigError as err:  # the user asked for `name`: say why the reference is built at all
        raise ConfigError(f"model {name} is matched in parameters to the reference model {reference_model()}: "
                          f"{err}") from None

    @functools.lru_cache(maxsize=None)
    def count(size: int) -> int:
        return params_of(name, dataclasses.replace(cfg, **{spec.match: size}))

    guess, per_unit = _solved_size(spec, count, target)
    aligned = max(MATCH_MULTIPLE, round(guess / MATCH_MULTIPLE) * MATCH_MULTIPLE)
    # at tiny widths a multiple of 8 can be several percent off: then take the exact size
    best = aligned if abs(aligned - guess) * per_unit <= MATCH_TOLERANCE * target else max(1, round(guess))
    reached = count(best)
    if abs(reached - target) > MATCH_REACH * target:
        raise ConfigError(f"model {name} cannot be matched to the reference {reference_model()}'s {target:,} "
                          f"parameters by sizing model.{spec.match}: at {spec.match}={best} it has {reached:,}; "
                          f"make the rest of the model smaller, or set model.{spec.match} (--set "
                          f"model.{spec.match}=N) to run it unmatched")
    return dataclasses.replace(cfg, **{spec.match: best})


def _solved_size(spec: ModelSpec, count: Callable[[int], int], target: int) -> tuple[float, float]:
    """The size whose count is `target`, and the count's growth per unit of size there: solved
    from the counts at two sizes, exact where the count is affine in the size (the harness's
    models), then refined by secant steps where it grows faster (an LSTM's width, squared)."""
    (low, p_low), (high, p_high) = ((size, count(size)) for size in (MATCH_MULTIPLE, 8 * MATCH_MULTIPLE))
    for _ in range(MATCH_STEPS):
        per_unit = (p_high - p_low) / (high - low)
        if per_unit <= 0:
            raise ConfigError(f"model {spec.name} is registered with match={spec.match!r}, but its parameter "
                              f"count does not grow with model.{spec.match} ({p_low:,} at {low}, {p_high:,} at "
                              f"{high}); size the model from cfg.{spec.match}, or drop match")
        guess = low + (target - p_low) / per_unit
        size = max(1, round(guess))
        if size in (low, high) or abs(count(size) - target) <= per_unit:
            break
        (low, p_low), (high, p_high) = (high, p_high), (size, count(size))
    return guess, per_unit


def extra_options(keys: Iterable[str] | Callable[[], Iterable[str]]):
    """Decorator of a harness model's builder, under its @register_model: the keys it reads under
    `model.extra.<model name>` (its layer options), or a function giving them where they are known only
    once the model's package is imported (an fla layer's keyword arguments). The one declaration
    check_extra holds a section to; a model without it reads none there."""
    def declare(build: Callable) -> Callable:
        build.extra_options = keys
        return build
    return declare


def options_read(spec: ModelSpec) -> set[str]:
    """The keys the model reads under model.extra.<its name> (extra_options; none if undeclared)."""
    keys = getattr(spec.build, "extra_options", ())
    return set(keys() if callable(keys) else keys)


def check_extra(cfg: ModelConfig, name: str | None = None) -> None:
    """model.extra holds a plugin's own options (the flat keys its builder reads) and the harness's
    per-model layer options (`model.extra.<model name>`). With only the harness's models loaded, a
    key that names no model is read by nothing, a typo or a misplaced option, and the run would go
    ahead without it. The section of the harness model `name` (the one being built) holds only keys
    it reads (check_options)."""
    registered = models()
    if not isinstance(cfg.extra, dict):
        return
    if name is not None and name in registered and registered[name].builtin:
        check_options(registered[name], cfg.extra.get(name))
    if not all(spec.builtin for spec in registered.values()):
        return
    for key in sorted(k for k in cfg.extra if k not in registered):
        hint = (f"it is a model field: --set model.{key}=..." if key in _model_fields() else
                "the harness's models read their layer options under model.extra.<model name> (e.g. --set "
                "'model.extra={gla: {num_heads: 8}}'), a plugin's options need its --plugin")
        raise ConfigError(f"model.extra.{key} is read by no model here; {hint}")


def check_options(spec: ModelSpec, section) -> None:
    """A harness model's section of model.extra: a mapping of keys it reads (extra_options). A key it
    does not read would be ignored, the run going ahead without it; one line names the keys it reads,
    and the model field where the key is one (options shared by all models, as the window, are)."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise ConfigError(f"model.extra.{spec.name} must be a mapping of {spec.name}'s layer options, got {section!r}")
    reads = options_read(spec)
    for key in sorted((k for k in section if k not in reads), key=str):
        field = (f"{key} is a model field: --set model.{key}=..." if key in _model_fields() else
                 "options shared by all models are model fields (e.g. --set model.window=...)")
        takes = f"it reads {', '.join(sorted(reads))}" if reads else f"{spec.name} reads no options there"
        raise ConfigError(f"model.extra.{spec.name}.{key} is not an option of {spec.name} ({takes}); {field}")


def _model_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(ModelConfig)}


def build_model(name: str, cfg: ModelConfig, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The registered model `name` at cfg (parameter-matched), initialised on `device`."""
    check_extra(cfg, name)
    cfg = matched_config(name, cfg)
    with torch.device(device):
        model = built(get_model(name), cfg)
    model.cfg = cfg
    return model


def runnable_model(name: str, cfg: ModelConfig, device: str | torch.device) -> torch.nn.Module:
    """build_model for a command that runs the model on `device` (train, run, eval, bench, a study's
    runs): refused first where it cannot run (gpu_only off a CUDA GPU), then, for a plugin's model,
    checked against the model contract (`check_contract`), so that nothing is written for a model
    that would fail. The harness's own models are held to it by the test suite instead (on a GPU a
    first forward would also autotune kernels for a shape no run uses)."""
    spec = get_model(name)
    _refuse_off_gpu(spec, device)
    model = build_model(name, cfg, device)
    if not spec.builtin:
        check_contract(spec, model, torch.device(device))
        if note := unmatched_note(spec, model, cfg):
            print(note, file=sys.stderr, flush=True)
    return model


def unmatched_note(spec: ModelSpec, model: torch.nn.Module, cfg: ModelConfig) -> str | None:
    """A warning line for a plugin's model without `match` whose count is more than MATCH_REACH from
    the reference's: it runs as its builder made it (the least a plugin takes), but its rows stand
    beside parameter-matched ones, and only the Params column would tell."""
    if spec.match is not None or getattr(model, "fitted_by_counting", False):
        return None
    try:
        target = params_of(reference_model(), cfg)
    except ConfigError:
        return None
    have = count_params(model)
    if abs(have - target) <= MATCH_REACH * target:
        return None
    return (f"warning: {spec.name} has {have:,} parameters, {have / target - 1:+.0%} against the reference "
            f"{reference_model()}'s {target:,}: its rows are not parameter-matched; register it with match=FIELD "
            f"(a size field its builder reads) to have the harness size it")


def checked_model(name: str, cfg: ModelConfig, device: str | torch.device) -> torch.nn.Module:
    """What runnable_model would refuse, found before a command writes anything, at the least cost:
    a harness model is built on the meta device (no memory, even at 760m, and no kernel runs), a
    plugin's on `device`, where its contract is checked by running it. The model answers questions
    about its structure (its layers, its loss head), not about its weights."""
    spec = get_model(name)
    if not spec.builtin:
        return runnable_model(name, cfg, device)
    _refuse_off_gpu(spec, device)
    return build_model(name, cfg, "meta")


def _refuse_off_gpu(spec: ModelSpec, device: str | torch.device) -> None:
    if spec.gpu_only and torch.device(device).type != "cuda":
        raise RegistryError(f"{spec.name} runs only on a CUDA GPU (fast path here: {spec.fast_path()}); run it on "
                            f"a GPU machine, or leave it out here")


@torch.no_grad()
def check_contract(spec: ModelSpec, model: torch.nn.Module, device: torch.device) -> None:
    """One forward of a [2, 16] batch (fixed ids: the global RNG, and so training, is untouched; eval
    mode: no dropout) must give float logits [B, T, vocab_size], the model must have trainable
    parameters (unless it is fitted by counting), and where it decodes (`prefill` and `step`) one
    step after a prefill must give the forward's last logits: every task scores on these, and a
    model that breaks them would crash mid-run, or train and score silently wrong."""
    name, cfg = spec.name, model.cfg
    if not getattr(model, "fitted_by_counting", False) and not any(p.requires_grad for p in model.parameters()):
        raise ContractError(f"model {name} has no trainable parameters; its module must hold the nn.Parameters "
                            f"that training updates")
    batch, length = CONTRACT_SHAPE[0], min(CONTRACT_SHAPE[1], cfg.max_seq_len)
    ids = (torch.arange(batch * length, device=device) * 7919 % cfg.vocab_size).view(batch, length)
    expected = [batch, length, cfg.vocab_size]
    training = model.training
    model.eval()
    try:
        logits = plugin_call(spec, f"failed on input_ids of shape {expected[:2]}", lambda: model(ids))
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            got = type(logits).__name__ if not isinstance(logits, torch.Tensor) else f"a {logits.dtype} tensor"
            raise ContractError(f"model {name} returned {got} from forward(input_ids); expected float logits "
                                f"[B, T, vocab_size] = {expected}")
        if list(logits.shape) != expected:
            raise ContractError(f"model {name} returned logits of shape {list(logits.shape)}; expected "
                                f"[B, T, vocab_size] = {expected}")
        if not bool(torch.isfinite(logits).all()):
            raise ContractError(f"model {name} returned NaN or infinite logits as initialised; its forward "
                                f"must give finite numbers before any training")
        if hasattr(model, "prefill") and hasattr(model, "step"):
            stepped = plugin_call(spec, "failed to decode (prefill, then step)",
                                   lambda: model.step(ids[:, -1], model.prefill(ids[:, :-1])[1])[0])
            _check_step(name, stepped, logits[:, -1])
    finally:
        model.train(training)


def _check_step(name: str, stepped, last: torch.Tensor) -> None:
    """step()'s logits after a prefill against the forward's at the same position."""
    if not isinstance(stepped, torch.Tensor) or stepped.shape != last.shape:
        got = list(stepped.shape) if isinstance(stepped, torch.Tensor) else type(stepped).__name__
        raise ContractError(f"model {name}: step(token, state) returned logits {got}; expected the next token's "
                            f"[B, vocab_size] = {list(last.shape)}")
    err = float((stepped.float() - last.float()).norm() / last.float().norm().clamp_min(1e-12))
    if not err <= STEP_TOLERANCE:
        raise ContractError(f"model {name}: step() after prefill() gives other logits than forward() (relative "
                            f"error {err:.2g}); step(token, state) must continue the sequence as the forward does")
