"""A transformers causal LM behind the harness model contract: what `harness eval hf:PATH` loads
and what the `llama_hf` baseline builds."""

from __future__ import annotations

import inspect

import torch

from harness.model.backbone import generate


class HFCausalLM(torch.nn.Module):
    """A transformers causal LM (e.g. an fla recurrent model, or Llama) behind the harness model
    contract: logits from forward, and the decode state (the model's recurrent state or KV cache:
    `past_key_values`, named `cache` from transformers 5.25 on) through init_state/prefill/step/generate."""

    def __init__(self, model):
        super().__init__()
        self.hf = model
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @staticmethod
    def _cache_of(out):
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def forward(self, input_ids):
        return self.hf(input_ids=input_ids, use_cache=False).logits

    def init_state(self, batch_size: int, device=None, dtype=None):
        """The state before any token: none (the model makes its cache at the first step)."""
        return None

    def prefill(self, input_ids):
        out = self.hf(input_ids=input_ids, use_cache=True)
        return out.logits, self._cache_of(out)

    def step(self, input_ids, state):
        out = self.hf(input_ids=input_ids.reshape(-1, 1), use_cache=True, **{self._cache_arg: state})
        return out.logits[:, -1], self._cache_of(out)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, eos_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """As the shared backbone's `generate`, through this model's prefill and step."""
        return generate(self, input_ids, max_new_tokens, temperature, top_k, eos_id, generator)
