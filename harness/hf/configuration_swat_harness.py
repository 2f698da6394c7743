"""The configuration of a swat-harness model exported for Hugging Face transformers.

`harness export` writes this file, and modeling_swat_harness.py beside it, into the exported
folder; neither imports the harness. One decoder serves the harness's attention models, which
differ only in their attention core (`attention_core`):

- "swat": sliding window of `window` keys (0 <= i - j < window, the query's own token included),
  scores q.k / sqrt(d) + slope_h * (i - j), sigmoid (with `sigmoid_bias`) or softmax (`activation`);
  the models swat, swat_logw (sigmoid_bias -log W), swat_onorm (`head_output_norm`) and
  swat_official (softmax, one-sided slopes);
- "sliding": softmax over the same window, no slopes (sliding_softmax);
- "full": causal softmax over every earlier key (transformer).

`alibi_slopes` holds the per-head slopes as the trained model used them (fixed, not learned), so
that the modelling code needs no slope recipe. Written for transformers 5 (its dataclass
configurations and `cache` argument names).
"""

from __future__ import annotations

from transformers import PretrainedConfig

ATTENTION_CORES = ("swat", "sliding", "full")


class SwatHarnessConfig(PretrainedConfig):
    model_type = "swat_harness"

    vocab_size: int = 257
    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 128  # the training length (the model runs at any length)
    initializer_range: float = 0.02
    attention_core: str = "swat"
    window: int | None = 32  # None for the full core
    activation: str = "sigmoid"  # the swat core's score activation: sigmoid | softmax
    alibi_slopes: list[float] | None = None  # per head, added as slope_h * (i - j); None: no slopes
    sigmoid_bias: float = 0.0
    rope: bool = True
    rope_theta: float = 10000.0
    head_output_norm: bool = False  # RMS-normalise each head's output before o_proj (swat_onorm)
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = 256
    pad_token_id: int | None = None
    # the harness run it was exported from, which `harness eval --models hf:<folder>` reads: the model's
    # name (swat, transformer, ...), its held-out data (corpus, seq_len, eval_tokens) and the preset and
    # tokens it trained on
    harness_model: str | None = None
    harness_heldout: dict | None = None
    harness_trained: dict | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate_architecture(self):
        """Called by transformers when the configuration is built or saved."""
        if self.attention_core not in ATTENTION_CORES:
            raise ValueError(f"attention_core must be one of {ATTENTION_CORES}, got {self.attention_core!r}")
        if (self.window is None) != (self.attention_core == "full"):
            raise ValueError("window is required by the swat and sliding cores and must be None for the full core")
        if self.alibi_slopes is not None and len(self.alibi_slopes) != self.num_attention_heads:
            raise ValueError(f"alibi_slopes needs one slope per head ({self.num_attention_heads})")


__all__ = ["SwatHarnessConfig"]
