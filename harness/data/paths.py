"""Where data lives: the mirror's roots (committed data/, ../shared/data, the user cache), the
cache of derived files, and the checksum every stored file is checked by.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # harness/


class DataError(FileNotFoundError):
    """Data that a task or corpus needs is missing or malformed; the message says how to get it."""


def data_roots() -> list[Path]:
    """Where data is looked for, in order: `$HARNESS_DATA` alone when set; otherwise the repository's
    `data/` (committed: evaluation sets, tokenizer, corpus), `../shared/data` beside the checkout or
    the working directory (raw provenance files), and the user cache `~/.cache/swat-harness/data`
    (what `harness data fetch|import` wrote)."""
    env = os.environ.get("HARNESS_DATA")
    if env:
        return [Path(env).expanduser()]
    roots = [PACKAGE_DIR.parent / "data"]
    for base in (PACKAGE_DIR.parent, Path.cwd()):
        candidate = (base.parent / "shared" / "data").resolve()
        if candidate.is_dir() and candidate not in roots:
            roots.append(candidate)
    return roots + [user_data_dir()]


def user_data_dir() -> Path:
    """Where `harness data fetch|import` write: `$HARNESS_DATA` when set, else the user cache."""
    env = os.environ.get("HARNESS_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def cache_dir() -> Path:
    """`$HARNESS_CACHE`, else ~/.cache/swat-harness: tokenized streams, decompressed splits, fetches."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "swat-harness")).expanduser()
