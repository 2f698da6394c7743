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


@pytest.fixture(autouse=True)
def _registry_restored():
    """The registries as they were before the test: the models and tasks a test's plugins register
    (some broken on purpose) must not reach the tests that walk every registered model."""
    from harness.registry import _REG, load_plugins
    load_plugins()
    saved = dict(_REG.models), dict(_REG.tasks)
    yield
    for table, entries in zip((_REG.models, _REG.tasks), saved):
        table.clear()
        table.update(entries)


@pytest.fixture
def tiny_cfg():
    from harness.config import load_config
    return load_config("tiny")
