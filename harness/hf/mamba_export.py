"""`harness export` of the mamba baseline (baselines/mamba.py): the folder holds transformers' own
`MambaForCausalLM` (model_type mamba), which transformers builds with no remote code. Its blocks are the
harness's Mamba blocks (pre-norm mixer, residual, no MLP; 2 per harness layer, so num_hidden_layers counts
blocks), its final norm `norm_f` and its head the backbone's; the mixer's weights keep their names
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), and its computation is the harness's: in_proj split
into x and the gate z, silu(causal depthwise conv with bias), x_proj into dt (time_step_rank wide), B and C,
softplus(dt_proj(dt)) with its bias, A = -exp(A_log), the scan with the D skip, gated by silu(z), out_proj.

The inner width is config.json's `intermediate_size`, which the harness solves for the parameter budget
(the tiny preset's 115 at hidden size 64): MambaConfig derives it from the whole number `expand` x
hidden_size, then sets the keys it has no field for from config.json, this one among them, so the width
survives loading. `expand` is written as the nearest whole number, which nothing reads after that. The
export reads its config back as from_pretrained does, builds transformers' model from it and compares each
layer with the harness's (widths, state size, kernel, dt rank, norm eps, each projection's settings) and
each weight's shape: a transformers that derived the width again, or any other difference, is a refusal in
one line, as is a mixer that is not exactly the harness's MambaMixer (a plugin's subclass computes what it
changes) or a block with an MLP. residual_in_fp32 is on: the harness's residual stream is fp32 (its weights
are, under bf16 autocast too). The init-only settings (time_step_min, ...) stay at transformers' defaults,
which are Mamba's and the harness's; a loaded model's weights replace what they would initialise.
"""

from __future__ import annotations

import torch

from harness.hf import mapping

HIDDEN_ACT = "silu"  # the harness MambaMixer's conv and gate activation (F.silu in its code)
# the harness mixer's settings by the name transformers' MambaMixer gives them
MIXER_NAMES = {"d_inner": "intermediate_size", "n": "ssm_state_size", "k": "conv_kernel_size",
               "dt_rank": "time_step_rank"}


def is_mamba_model(model) -> bool:
    """Whether any block's mixer is the mamba baseline's MambaMixer (or a subclass of it)."""
    return any(hasattr(block.mixer, "mamba_exportable") for block in model.blocks)


def mamba_refusal(model) -> str | None:
    """Why the Mamba model `model` (a DecoderLM) has no export as transformers' MambaForCausalLM, or None."""
    if why := mapping.exact_mixers_refusal(model, "mamba_exportable", "Mamba mixers", "transformers' Mamba has "
                                           "Mamba blocks only", "the harness's", "transformers' MambaMixer"):
        return why
    if why := mapping.foreign_module(model, skip=tuple(f"blocks.{i}.mixer" for i in range(len(model.blocks)))):
        return why  # the mixers' own modules are compared with transformers' below
    if any(block.mlp is not None for block in model.blocks):
        return "its blocks have a SwiGLU MLP, and transformers' Mamba blocks have none"
    if why := mapping.layers_differ(model.blocks):
        return why
    config = mamba_config(model, None)
    hf_model = mamba_hf_model(type(config).from_dict(config.to_dict()))  # config.json read back, as from_pretrained
    return settings_refusal(model, hf_model) or weights_refusal(model, hf_model)


def mamba_config(model, eos_id: int | None, **extra):
    """transformers' MambaConfig of `model`, every setting read from its built modules."""
    from transformers import MambaConfig
    mixer, hidden = model.blocks[0].mixer, model.embed.embedding_dim
    return MambaConfig(
        vocab_size=model.embed.num_embeddings, hidden_size=hidden, num_hidden_layers=len(model.blocks),
        state_size=mixer.n, expand=max(1, round(mixer.d_inner / hidden)), intermediate_size=mixer.d_inner,
        conv_kernel=mixer.k, time_step_rank=mixer.dt_rank, use_bias=mixer.in_proj.bias is not None,
        use_conv_bias=mixer.conv1d.bias is not None, hidden_act=HIDDEN_ACT, layer_norm_epsilon=model.norm.eps,
        residual_in_fp32=True, tie_word_embeddings=model.head is None, initializer_range=model.cfg.init_std,
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=None, dtype="float32", **extra)


def mamba_hf_model(config, device: str = "meta"):
    """transformers' MambaForCausalLM of `config`, built on `device` (meta: no memory, no init)."""
    from transformers import MambaForCausalLM
    with torch.device(device):
        return MambaForCausalLM(config)


def weight_sources(model) -> list[tuple[str, tuple[str, None]]]:
    """(transformers' name, (the harness weight, None: none is split)) of each exported weight: the backbone
    under MambaForCausalLM's names, each mixer's weights under their own."""
    sources = [("backbone.embeddings.weight", ("embed.weight", None)),
               ("backbone.norm_f.weight", ("norm.weight", None)),
               ("lm_head.weight", ("embed.weight" if model.head is None else "head.weight", None))]
    for i, block in enumerate(model.blocks):
        src, dst = f"blocks.{i}.", f"backbone.layers.{i}."
        sources += [(dst + "norm.weight", (src + "mixer_norm.weight", None)),
                    *((dst + "mixer." + name, (src + "mixer." + name, None)) for name in block.mixer.state_dict())]
    return sources


def weights_refusal(model, hf_model) -> str | None:
    """Why the harness's weights do not map one to one onto transformers' model: a weight no exported one
    takes, one of transformers' that none fills, or a shape it differs in."""
    sources = weight_sources(model)
    if left_out := mapping.weights_left_out(model, sources):
        return f"its weights {', '.join(left_out)} have no place in transformers' Mamba, which would run without them"
    if unfilled := sorted(set(hf_model.state_dict()) - {hf_name for hf_name, _ in sources}):
        return f"transformers' Mamba holds {', '.join(unfilled)}, which the harness model has no weight for"
    return mapping.shape_refusal(model, hf_model, sources, "transformers' Mamba")


def settings_refusal(model, hf_model) -> str | None:
    """Why a block of `hf_model` (built from the config as loading reads it) computes otherwise than the
    harness's (a setting the config did not carry, a projection a plugin replaced), or None."""
    pairs = [("final norm eps", model.norm.eps, hf_model.backbone.norm_f.variance_epsilon)]
    for i, (block, hf_block) in enumerate(zip(model.blocks, hf_model.backbone.layers, strict=True)):
        ours, theirs = harness_settings(block), hf_settings(hf_block)
        pairs += [(f"layer {i}'s {key}", value, theirs.get(key)) for key, value in ours.items()]
    for what, ours, theirs in pairs:
        if ours != theirs:
            return (f"its {what} is {ours!r}, where transformers' MambaForCausalLM builds {theirs!r} from its config, "
                    f"which cannot hold the harness's setting")
    return None


def harness_settings(block) -> dict:
    """What a harness Mamba block computes besides its weights, by transformers' names: the norm's eps, the
    mixer's widths and activation, and each of its modules' classes and settings."""
    mixer = block.mixer
    return {"norm eps": block.mixer_norm.eps, "activation": HIDDEN_ACT,
            **{theirs: getattr(mixer, ours) for ours, theirs in MIXER_NAMES.items()}, **children_settings(mixer)}


def hf_settings(hf_block) -> dict:
    """The same of a block of transformers' Mamba (its mixer's activation module `act` among its modules,
    which the harness's code calls as F.silu)."""
    mixer = hf_block.mixer
    return {"norm eps": hf_block.norm.variance_epsilon, "activation": mixer.activation,
            **{name: getattr(mixer, name) for name in MIXER_NAMES.values()}, **children_settings(mixer)}


def children_settings(mixer) -> dict:
    """Each module of a mixer (in_proj, conv1d, ...): its class and plain settings, by the module's name."""
    return {f"{name}: {key}": value for name, child in mixer.named_children()
            for key, value in mapping.layer_settings(child).items()}


def card_rows(config, model) -> list[tuple[str, object]]:
    """The model card's rows of transformers' Mamba: its class and version, the blocks and the mixer's widths."""
    import transformers
    return [("transformers model", f"`MambaForCausalLM` (model_type `mamba`, transformers {transformers.__version__})"),
            ("Mamba blocks", f"{config.num_hidden_layers} for the harness's {model.cfg.num_layers} layers (norm, "
                             f"mixer, residual; no MLP)"),
            ("token mixer", f"Mamba-1: inner width {config.intermediate_size}, state size {config.state_size}, conv "
                            f"kernel {config.conv_kernel}, dt rank {config.time_step_rank}")]


CARD_NOTE = ("The modelling code is transformers' own (`MambaForCausalLM`, no remote code); on a GPU it uses "
             "mamba-ssm's and causal-conv1d's kernels where they are installed, else plain PyTorch. In a process "
             "that imported flash-linear-attention (fla), transformers' Auto classes give fla's own Mamba class for "
             "model_type `mamba` (fla registers it), which reads other config keys: hence the class named above. "
             "Decoding keeps a convolution and a recurrent state per block, so memory per sequence does not grow "
             "with the context. The tokenizer is plain `tokenizers`. ")


def mamba_export(model, cfg, eos_id: int) -> mapping.HFExport:
    """A Mamba model as transformers' MambaForCausalLM (config.json and the weights; no code)."""
    config = mamba_config(model, eos_id)
    hf_model = mamba_hf_model(config)
    hf_model.load_state_dict(mapping.hf_state_dict(model, weight_sources(model)), strict=True, assign=True)
    hf_model.tie_weights()
    # transformers' own class, named: in a process that imported fla, the Auto classes would give fla's Mamba
    return mapping.HFExport(hf_model, card_rows(config, model), CARD_NOTE, loader="MambaForCausalLM", remote_code=False)
