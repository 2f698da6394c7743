"""Quiet loading and saving of transformers models: their progress bars would cut into the harness
command's own lines."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def no_transformers_bars():
    """transformers' progress bars off (from_pretrained's "Loading weights", save_pretrained's shards),
    then as they were. transformers' switch also turns huggingface_hub's bars:
    those are put back as they were too."""
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging
    transformers_on, hub_off = hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()
        if hub_off != hub.are_progress_bars_disabled():
            (hub.disable_progress_bars if hub_off else hub.enable_progress_bars)()
