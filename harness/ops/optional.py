"""Optional fast kernels (flash-attn, mamba-ssm, causal-conv1d), looked up without making them
dependencies: each caller runs its reference where the package is missing."""

from __future__ import annotations

import functools
import importlib
import warnings


@functools.cache
def optional_kernel(module: str, name: str | None = None, missing: str | None = None):
    """`name` from `module` of an optional package (the module itself without a name), or None where
    it is not installed or its compiled extension does not load (the caller then runs its reference;
    `missing`, when given, is warned once). Looked up once: the fast paths ask on every forward and
    decode step, and a failed import searches sys.path again each time."""
    try:
        found = importlib.import_module(module)
    except ImportError:  # not installed (ModuleNotFoundError) or its extension does not load
        if missing:
            warnings.warn(missing, stacklevel=4)
        return None
    return found if name is None else getattr(found, name)
