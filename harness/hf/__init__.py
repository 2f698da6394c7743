"""Hugging Face export: `harness export` (export.py), and the transformers code it copies into every
exported folder (configuration_ and modeling_swat_harness.py: the attention models; those two
modules import nothing from the harness, so the folder loads without it)."""
