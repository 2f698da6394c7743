"""`harness export` of the attention models (swat and its variants, sliding_softmax, transformer): the
folder holds SwatHarnessForCausalLM (configuration_ and modeling_swat_harness.py, plain PyTorch, copied
into it by save_pretrained with config.json's auto_map), its config read from the built layers (each
attention layer states its core in the config's terms, `export_config`), the weights under Llama-style
names with the fused projections split (kv_proj into k_proj and v_proj, the SwiGLU's gate_up into
gate_proj and up_proj)."""

from __future__ import annotations

import torch

from harness.hf.mapping import (
    HFExport,
    foreign_module,
    hf_state_dict,
    layers_differ,
    mlp_sources,
    weights_left_out,
)


def attention_refusal(model) -> str | None:
    """Why the backbone model `model` has no export as the harness's attention classes, or None. The exported
    code computes what the harness's own classes compute, so every module must be exactly one of them (or of
    the torch modules they are built of): a subclass (a plugin's layer that overrides its attention, say)
    would export as its parent, and another module in their place as what it replaced, and give other logits
    without a word."""
    from harness.model.attention import CausalAttention, SlidingAttention, SwatAttention
    mixers = (CausalAttention, SlidingAttention, SwatAttention)
    for block in model.blocks:
        if not isinstance(block.mixer, mixers):
            return getattr(block.mixer, "export_refused",
                           f"its token mixer {type(block.mixer).__name__} is not one of the harness's attention layers")
        if block.mlp is None:
            return "its blocks have no SwiGLU MLP"
    if why := foreign_module(model, mixers):
        return why
    if len({type(block.mixer) for block in model.blocks}) > 1:
        return "its layers mix attention cores, and the exported config has one"
    if left_out := weights_left_out(model, weight_sources(model).items()):
        return f"its weights {', '.join(left_out)} have no place in the exported model, which would run without them"
    return layers_differ(model.blocks)


def hf_config(model, cfg, eos_id: int):
    """The SwatHarnessConfig of a harness attention model, read from its built layers (so that a
    variant's changes, e.g. a sigmoid bias its builder sets, are the ones the model ran)."""
    from harness.hf.configuration_swat_harness import SwatHarnessConfig
    mixer = model.blocks[0].mixer
    return SwatHarnessConfig(
        vocab_size=model.embed.num_embeddings, hidden_size=model.embed.embedding_dim,
        intermediate_size=model.blocks[0].mlp.down.in_features, num_hidden_layers=len(model.blocks),
        num_attention_heads=mixer.num_heads, num_key_value_heads=mixer.kv_heads, rms_norm_eps=model.norm.eps,
        tie_word_embeddings=model.head is None, max_position_embeddings=cfg.model.max_seq_len,
        initializer_range=cfg.model.init_std, **mixer.export_config(), rope=mixer.rope,
        rope_theta=float(mixer.rope_theta), head_output_norm=mixer.out_norm is not None, eos_token_id=eos_id,
        dtype="float32")


def weight_sources(model) -> dict[str, tuple[str, int | None]]:
    """Each exported weight's harness weight under its Llama-style name, with the half of it taken
    where the harness fuses two projections (kv_proj: k_proj then v_proj, as the forward views it as
    [2, kv_heads, d]; the SwiGLU's gate_up: gate_proj then up_proj, as the forward chunks it), else None."""
    sources = {"model.embed_tokens.weight": ("embed.weight", None), "model.norm.weight": ("norm.weight", None),
               "lm_head.weight": ("embed.weight" if model.head is None else "head.weight", None)}
    for i, block in enumerate(model.blocks):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        sources.update({dst + "input_layernorm.weight": (src + "mixer_norm.weight", None),
                        dst + "self_attn.q_proj.weight": (src + "mixer.q_proj.weight", None),
                        dst + "self_attn.k_proj.weight": (src + "mixer.kv_proj.weight", 0),
                        dst + "self_attn.v_proj.weight": (src + "mixer.kv_proj.weight", 1),
                        dst + "self_attn.o_proj.weight": (src + "mixer.o_proj.weight", None),
                        dst + "post_attention_layernorm.weight": (src + "mlp_norm.weight", None),
                        **mlp_sources(src + "mlp.", dst + "mlp.")})
        if block.mixer.out_norm is not None:
            sources[dst + "self_attn.o_norm.weight"] = (src + "mixer.out_norm.weight", None)
    return sources


def attention_card(config) -> tuple[list[tuple[str, object]], str]:
    """The model card's rows of an attention model's core, and its words on the modelling code."""
    rows = [("heads (key/value heads)", f"{config.num_attention_heads} ({config.num_key_value_heads})"),
            ("attention", {"swat": "sliding window, ALiBi-style slopes", "sliding": "sliding window, softmax",
                           "full": "full causal softmax"}[config.attention_core]),
            ("window", config.window if config.window is not None else "none (full causal)"),
            ("score activation", config.activation if config.attention_core == "swat" else "softmax"),
            ("slopes per head", ", ".join(f"{s:g}" for s in config.alibi_slopes) if config.alibi_slopes else "none"),
            ("sigmoid bias", f"{config.sigmoid_bias:g}" if config.attention_core == "swat" else "-"),
            ("RoPE", f"theta {config.rope_theta:g}" if config.rope else "none"),
            ("per-head output norm", "yes" if config.head_output_norm else "no")]
    note = ("The modelling code (`modeling_swat_harness.py`) is plain PyTorch and needs no swat-harness; the "
            "tokenizer is plain `tokenizers` (trust_remote_code only spares transformers' question about the "
            "model's config). "
            + ("Decoding keeps a ring buffer of the last window of keys and values per layer, so memory "
               "per sequence does not grow with the context. " if config.window is not None else ""))
    return rows, note


def attention_export(model, cfg, eos_id: int) -> HFExport:
    """An attention model as a SwatHarnessForCausalLM, whose modules save_pretrained copies into the folder
    (with config.json's auto_map)."""
    from harness.hf.configuration_swat_harness import SwatHarnessConfig
    from harness.hf.modeling_swat_harness import SwatHarnessForCausalLM
    config = hf_config(model, cfg, eos_id)
    with torch.device("meta"):
        hf_model = SwatHarnessForCausalLM(config)
    hf_model.load_state_dict(hf_state_dict(model, weight_sources(model).items()), strict=True, assign=True)
    hf_model.tie_weights()
    SwatHarnessConfig.register_for_auto_class()
    SwatHarnessForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    return HFExport(hf_model, *attention_card(config))
