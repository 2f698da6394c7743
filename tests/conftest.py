"""Shared test setup: CPU only, caches in a temporary folder, the repository on sys.path."""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Without a GPU, Triton kernels (the SWAT kernel tests) run under the CPU interpreter, which triton
# reads once, when it is first imported: so it is chosen here, before any test module imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("harness-cache"))
    yield


@pytest.fixture
def tiny_cfg():
    from harness.config import load_config
    return load_config("tiny")
