"""Where data lives: the mirror's roots (committed data/, ../shared/data, the user cache), the
cache of derived files, and the checksum every stored file is checked by.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # harness/
REPO_DATA = PACKAGE_DIR.parent / "data"  # the repository's committed mirror


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
    roots = [REPO_DATA]
    for base in (PACKAGE_DIR.parent, Path.cwd()):
        candidate = (base.parent / "shared" / "data").resolve()
        if candidate.is_dir() and candidate not in roots:
            roots.append(candidate)
    return roots + [user_data_dir()]


def harness_data_problem() -> str | None:
    """What makes `$HARNESS_DATA` no mirror to read (it does not exist, or is a file), else None. It is
    the only root looked in when set, so such a value (most likely a typo) hides every file: each
    lookup finds nothing, and a check of the mirror would check nothing."""
    env = os.environ.get("HARNESS_DATA")
    if not env or Path(env).expanduser().is_dir():
        return None
    what = "a file, not a folder" if Path(env).expanduser().exists() else "a folder that does not exist"
    return f"HARNESS_DATA={env} is {what}"


def user_data_dir() -> Path:
    """Where `harness data fetch|import` write: `$HARNESS_DATA` when set, else the user cache."""
    env = os.environ.get("HARNESS_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def cache_dir() -> Path:
    """`$HARNESS_CACHE`, else ~/.cache/swat-harness: tokenized streams, decompressed splits, fetches."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "swat-harness")).expanduser()
