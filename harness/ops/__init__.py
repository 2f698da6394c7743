"""Kernels and their plain-torch definitions: SWAT attention, RoPE, ALiBi slopes."""
