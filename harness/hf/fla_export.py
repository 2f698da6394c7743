"""`harness export` of the fla-backed baselines (gla, retnet, hgrn2, deltanet, gated_deltanet): the folder
holds fla's own model class (`fla.models.GLAForCausalLM`, ...), whose blocks are the backbone's (pre-norm
mixer, pre-norm gated MLP, final norm, head) around the same fla layer.

    config.json        fla's config class (model_type gla, retnet, ...), every setting read from the options
                       the baseline built its layers with (`FlaMixer.export_config`), auto_map to modeling_fla.py
    modeling_fla.py    imports fla's classes (trust_remote_code=True), or fails naming the pip install

Loading needs fla and, for a forward, a CUDA GPU, as the harness's models do. The weights are the harness's
under fla's names, the SwiGLU's fused gate_up split as the attention export splits it.

A setting that fla's config cannot carry (an option its blocks do not pass on, e.g. GLA's gate_low_rank_dim)
would give fla's layer its default: so every fla layer built from the exported config is compared with the
harness's layer, submodule by submodule (classes, plain settings, chosen functions), and any difference is a
refusal in one line, as is any shape fla's model cannot hold (HGRN2's lower bounds) or a mixer that is not
one of the fla baselines' own (a plugin's subclass computes what it changes).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from harness.hf.mapping import (
    HFExport,
    exact_mixers_refusal,
    foreign_module,
    hf_state_dict,
    layer_settings,
    mlp_sources,
    shape_refusal,
    weights_left_out,
)

REMOTE_CODE = Path(__file__).with_name("modeling_fla.py")
# fla's layer class -> the name stem of the fla model class that holds it (fla.models.<stem>Config, <stem>ForCausalLM)
FLA_MODELS = {"GatedLinearAttention": "GLA", "MultiScaleRetention": "RetNet", "HGRN2Attention": "HGRN2",
              "DeltaNet": "DeltaNet", "GatedDeltaNet": "GatedDeltaNet"}


def is_fla_model(model) -> bool:
    """Whether any block's mixer is an fla layer in the fla baselines' wrapper (baselines.fla_common.FlaMixer)."""
    return any(hasattr(block.mixer, "fla_exportable") for block in model.blocks)


def fla_classes(mixer) -> tuple[type, type]:
    """fla's (config class, causal LM class) that hold the mixer's layer."""
    import fla.models
    stem = FLA_MODELS[type(mixer.layer).__name__]
    return getattr(fla.models, f"{stem}Config"), getattr(fla.models, f"{stem}ForCausalLM")


def fla_refusal(model) -> str | None:
    """Why the fla model `model` (a DecoderLM) has no export as fla's own model class, or None."""
    if why := exact_mixers_refusal(model, "fla_exportable", "fla layers", "fla's model class has fla blocks only",
                                   "the fla baselines'", "fla's own blocks"):
        return why
    mixers = [block.mixer for block in model.blocks]
    for mixer in mixers:
        if type(mixer.layer).__name__ not in FLA_MODELS:
            return (f"its fla layer {type(mixer.layer).__name__} has no fla model class that the export knows "
                    f"(it knows {', '.join(FLA_MODELS)})")
        if mixer.layer_options is None:
            return "its fla layers were not built by the fla baselines' fla_model, so their options are unknown"
        if why := mixer.export_refusal():
            return why
    if len({type(m.layer) for m in mixers}) > 1:
        return "its layers mix fla layer classes, and fla's model class has one"
    if why := foreign_module(model, skip=tuple(f"blocks.{i}.mixer" for i in range(len(mixers)))):
        return why
    if any(block.mlp is None for block in model.blocks):
        return "its blocks have no SwiGLU MLP"
    if why := dropped_option(mixers[0]):
        return why
    fla_model = fla_hf_model(model, fla_config(model, None))
    return settings_refusal(model, fla_model) or weights_refusal(model, fla_model)


def dropped_option(mixer) -> str | None:
    """Why an option the baseline gave the layer cannot be exported: fla's config has no field for it (its
    model then builds the layer with the layer's default), and the value is not that default; or None."""
    config_class, _ = fla_classes(mixer)
    fields = inspect.signature(config_class.__init__).parameters
    defaults = inspect.signature(type(mixer.layer).__init__).parameters
    for key, value in mixer.export_config().items():
        if key not in fields and key in defaults and defaults[key].default != value:
            return (f"its option {key} is {value!r}, which fla's {config_class.__name__} has no field for (its layers "
                    f"take {defaults[key].default!r}); it exports with {key} at that default (leave it out of "
                    f"model.extra's {mixer.model} options)")
    return None


def fla_config(model, eos_id: int | None, **extra):
    """fla's config of `model`: the backbone's sizes, and the layer's settings as the baseline built it."""
    config_class, _ = fla_classes(model.blocks[0].mixer)
    named = inspect.signature(config_class.__init__).parameters
    layer = {key: value for key, value in model.blocks[0].mixer.export_config().items() if key in named}
    cfg = model.cfg
    # hidden_act is the MLP's (SwiGLU: swish) and, in GLA and RetNet, also the layer's gate_fn: the settings
    # check refuses a layer whose gate differs
    return config_class(**layer, hidden_size=model.embed.embedding_dim, num_hidden_layers=len(model.blocks),
                        vocab_size=model.embed.num_embeddings, intermediate_size=model.blocks[0].mlp.down.in_features,
                        hidden_act="swish", norm_eps=model.norm.eps, tie_word_embeddings=model.head is None,
                        max_position_embeddings=cfg.max_seq_len, initializer_range=cfg.init_std,
                        bos_token_id=None, eos_token_id=eos_id, pad_token_id=None, dtype="float32", **extra)


def fla_hf_model(model, config, device: str = "meta"):
    """fla's causal LM of `config`, built on `device` (meta: no memory, no init)."""
    _, lm_class = fla_classes(model.blocks[0].mixer)
    with torch.device(device):
        return lm_class(config)


def weight_sources(model) -> list[tuple[str, tuple[str, int | None]]]:
    """(fla's name, (the harness weight, the half of it taken or None)) of each exported weight: the backbone
    under fla's names, the layer's weights under its own, the mixer's others where it says (HGRN2's lower
    bounds, one table of all layers: named once per layer here)."""
    sd_names = model.state_dict().keys()
    sources = [("model.embeddings.weight", ("embed.weight", None)), ("model.norm.weight", ("norm.weight", None)),
               ("lm_head.weight", ("embed.weight" if model.head is None else "head.weight", None))]
    for i, block in enumerate(model.blocks):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        layer = src + "mixer.layer."
        sources += [(dst + "attn_norm.weight", (src + "mixer_norm.weight", None)),
                    (dst + "mlp_norm.weight", (src + "mlp_norm.weight", None)),
                    *mlp_sources(src + "mlp.", dst + "mlp.").items(),
                    *((dst + "attn." + name[len(layer):], (name, None)) for name in sd_names if name.startswith(layer)),
                    *((fla_name, (src + "mixer." + name, None))
                      for fla_name, name in block.mixer.export_weights().items())]
    return sources


def weights_refusal(model, fla_model) -> str | None:
    """Why the harness's weights do not map one to one onto fla's model: a weight no exported one takes, two
    harness weights behind one of fla's (a table the harness shares, held apart), or a shape fla's differs in."""
    params = dict(model.named_parameters(remove_duplicate=False))
    sources = weight_sources(model)
    if left_out := weights_left_out(model, sources):
        return f"its weights {', '.join(left_out)} have no place in fla's model, which would run without them"
    taken: dict[str, str] = {}
    for fla_name, (name, _) in sources:
        first = taken.setdefault(fla_name, name)
        if params.get(first) is not params.get(name):
            return f"its {first} and {name} are separate weights, and fla's model holds one {fla_name}"
    return shape_refusal(model, fla_model, sources, "fla's model")


def settings_refusal(model, fla_model) -> str | None:
    """Why a layer of `fla_model` (built from the exported config) differs from the harness's (a setting the
    config cannot carry, which fla's layer then takes at its default), or None."""
    for i, (block, fla_block) in enumerate(zip(model.blocks, fla_model.model.layers)):
        ours, theirs = exported_settings(block.mixer), layer_settings(fla_block.attn)
        for key in sorted(ours.keys() | theirs.keys()):
            if ours.get(key) != theirs.get(key):
                return (f"its layer {i}'s {key} is {ours.get(key)!r}, where fla's {type(fla_model).__name__} builds "
                        f"{theirs.get(key)!r} from its config, which cannot hold the layer's setting")
    return None


def exported_settings(mixer) -> dict:
    """The settings of the harness's fla layer that the exported layer must have: all of its own, the kernel
    mode being the one the mixer exports (DeltaNet's full-precision kernel)."""
    return {**layer_settings(mixer.layer), "mode": mixer.exported_mode}


def card_rows(config, mixer) -> list[tuple[str, object]]:
    """The model card's rows of fla's model: its class and fla's version, the layer and its options."""
    import fla
    options = ", ".join(f"{key} {value}" for key, value in mixer.export_config().items())
    return [("fla model", f"`{fla_classes(mixer)[1].__name__}` (model_type `{config.model_type}`, "
                          f"flash-linear-attention {fla.__version__})"),
            ("token mixer", f"fla's `{type(mixer.layer).__name__}`: {options}")]


CARD_NOTE = ("The modelling code is fla's (flash-linear-attention): `modeling_fla.py` imports its classes, so "
             "loading needs `pip install flash-linear-attention` (trust_remote_code=True lets transformers run that "
             "import; in a process that imported fla first, the model type is already known), and a forward needs a "
             "CUDA GPU (fla's Triton kernels). Decoding keeps a recurrent state per layer, so memory per sequence "
             "does not grow with the context. The tokenizer is plain `tokenizers`. ")


def fla_export(model, cfg, eos_id: int):
    """An fla model as fla's own causal LM class, with modeling_fla.py for config.json's auto_map."""
    mixer = model.blocks[0].mixer
    config = fla_config(model, eos_id)
    config.auto_map = {"AutoConfig": f"{REMOTE_CODE.stem}.{type(config).__name__}",
                       "AutoModelForCausalLM": f"{REMOTE_CODE.stem}.{fla_classes(mixer)[1].__name__}"}
    hf_model = fla_hf_model(model, config)
    hf_model.load_state_dict(hf_state_dict(model, weight_sources(model)), strict=True, assign=True)
    hf_model.tie_weights()
    return HFExport(hf_model, card_rows(config, mixer), CARD_NOTE, (REMOTE_CODE,))
