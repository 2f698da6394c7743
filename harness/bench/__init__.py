"""Benchmarks: `harness bench kernels` (the SWAT kernel against its peers) and whole-model sweeps.

Every number is measured side by side with what it is compared to, in one process on the same
inputs, and written with its command, device, date and commit.
"""

import re


def device_slug(name: str) -> str:
    """A folder name for a device: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
