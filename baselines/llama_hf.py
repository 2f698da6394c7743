"""Hugging Face transformers' LlamaForCausalLM at the harness Transformer's shape: the
implementation a user would otherwise pick, measured beside the harness's models by `harness bench
models` (the speed peer of issue 24), and trainable and scored like any model. Same architecture as
`transformer` (RoPE, RMSNorm, SwiGLU, the head tied as model.tie_embeddings says, no biases) and the
same parameter count; its own initialisation (normal, std model.init_std), attention through torch
SDPA. Always with RoPE: LlamaForCausalLM has no switch to leave it out, so model.rope=false is
refused, not ignored."""

from harness.config import ConfigError
from harness.hf.causal_lm import HFCausalLM
from harness.registry import MissingExtraError, register_model


def llama_config(transformers, **fields):
    """transformers.LlamaConfig(**fields). Its validators refuse fields with a ValueError, which newer
    versions wrap in huggingface_hub's StrictDataclassClassValidationError (a bare Exception): raised as
    that ValueError, so that build_model says it in one line, as any layer's refusal of its arguments."""
    try:
        return transformers.LlamaConfig(**fields)
    except Exception as err:
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from err
        raise


@register_model("llama_hf", family="attention", requires=("transformers",), extra="hf",
                description="Hugging Face LlamaForCausalLM (SDPA) at the Transformer++ shape")
def build(cfg):
    if not cfg.rope:
        raise ConfigError("llama_hf always applies RoPE (transformers' LlamaForCausalLM cannot leave it out); set "
                          "model.rope=true, or train --model transformer, which runs without it")
    try:
        import transformers
    except ImportError:
        raise MissingExtraError("llama_hf needs transformers: pip install 'swat-harness[hf]'") from None
    config = llama_config(
        transformers, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        initializer_range=cfg.init_std, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False)
    config._attn_implementation = "sdpa"
    return HFCausalLM(transformers.LlamaForCausalLM(config))
