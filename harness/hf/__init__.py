"""Hugging Face: `harness export` (export.py: the folder, tokenizer and model card), the attention
models as the harness's own transformers classes (attention_export.py; configuration_ and
modeling_swat_harness.py, copied into the folder, import nothing from the harness, so it loads
without it), the fla-backed models as fla's own classes (fla_export.py, with modeling_fla.py, which
only imports fla's), the mamba baseline as transformers' own MambaForCausalLM (mamba_export.py, no
code in the folder), what they share (mapping.py), and transformers models behind the harness model
contract (causal_lm.py)."""
