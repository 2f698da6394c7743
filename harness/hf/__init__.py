"""Hugging Face: `harness export` (export.py), the transformers code it copies into every exported
folder (configuration_ and modeling_swat_harness.py: the attention models; those two modules import
nothing from the harness, so the folder loads without it), and transformers models behind the
harness model contract (causal_lm.py)."""
