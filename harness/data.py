"""Data: where the local mirror is, tokenizers, corpora, and packed token streams for training.

Documents are tokenized once, joined with an end-of-document token, and stored as flat uint32
token files (memory-mapped) beside an array of document start offsets, so a training sequence is a
plain slice and its document boundaries (`cu_seqlens`) come from the offsets. A fixed fraction of
documents, chosen by a seeded permutation, is held out for evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_TEXT = PACKAGE_DIR / "resources" / "wikitext2_valid_sample.txt"


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


def data_root() -> Path:
    """The first existing folder of `data_roots()` (the primary mirror)."""
    return next((r for r in data_roots() if r.is_dir()), user_data_dir())


def user_data_dir() -> Path:
    """Where `harness data fetch|import` write: `$HARNESS_DATA` when set, else the user cache."""
    env = os.environ.get("HARNESS_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "swat-harness")).expanduser()


# ---------------------------------------------------------------- tokenizers

class ByteTokenizer:
    """UTF-8 bytes plus one end-of-document id (256): needs no files, used by the tiny preset."""
    name = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers` tokenizer.json (e.g. the Llama-2 32k BPE); no special tokens added on encode."""

    def __init__(self, path: Path, name: str | None = None):
        from tokenizers import Tokenizer
        self.path = Path(path)
        self.name = name or str(path)
        self._tok = Tokenizer.from_file(str(path))
        self.vocab_size = self._tok.get_vocab_size()
        eos = next((t for t in ("</s>", "<|endoftext|>", "<eos>") if self._tok.token_to_id(t) is not None), None)
        if eos is None:
            raise DataError(f"tokenizer {path} has no end-of-document token (</s> or <|endoftext|>)")
        self.eos_id = self._tok.token_to_id(eos)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


def get_tokenizer(name: str):
    """`bytes`, a tokenizer name in the mirror (`<data>/tokenizers/<name>/tokenizer.json`), or a path."""
    if name == "bytes":
        return ByteTokenizer()
    path = Path(name)
    if path.is_file():
        return HFTokenizer(path)
    mirrored = data_root() / "tokenizers" / name / "tokenizer.json"
    if mirrored.is_file():
        return HFTokenizer(mirrored, name)
    raise DataError(f"tokenizer {name!r} not found at {mirrored}; run `harness data list` to see what the "
                    f"mirror holds, or pass train.tokenizer=bytes or a path to a tokenizer.json")


# ---------------------------------------------------------------- corpora

def split_wikitext(text: str) -> list[str]:
    """WikiText articles start at top-level headings ' = Title = '."""
    parts = re.split(r"^(?= = [^=].* = $)", text, flags=re.M)
    return [p.strip("\n") for p in parts if p.strip()]


def _read_text_file(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
        return docs
    if path.suffix == ".parquet":
        import pandas as pd
        frame = pd.read_parquet(path)
        if "text" not in frame.columns:
            raise DataError(f"{path}: parquet file has no 'text' column")
        return frame["text"].astype(str).tolist()
    text = path.read_text(encoding="utf-8", errors="replace")
    docs = split_wikitext(text)
    return docs if len(docs) > 1 else [d for d in re.split(r"\n\s*\n\s*\n", text) if d.strip()]


def corpus_files(corpus: str) -> list[Path]:
    """Files of a named corpus or a path (a file, or a folder of .txt/.jsonl/.parquet files)."""
    if corpus == "bundled":
        return [BUNDLED_TEXT]
    named = {"wikitext-2": data_root() / "wikitext-2" / "valid.txt"}
    path = named.get(corpus, Path(corpus))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl", ".parquet"))
        if files:
            return files
    elif path.is_file():
        return [path]
    raise DataError(f"corpus {corpus!r} not found (looked at {path}); use train.corpus=bundled, a path to "
                    f"text/JSONL/parquet files, or fill the mirror ($HARNESS_DATA, see `harness data list`)")


def load_documents(corpus: str) -> list[str]:
    return [doc for path in corpus_files(corpus) for doc in _read_text_file(path)]


# ---------------------------------------------------------------- tokenized, packed streams

@dataclass
class TokenStream:
    """A flat token array with the start offset of every document."""
    tokens: np.ndarray
    doc_starts: np.ndarray

    def num_sequences(self, seq_len: int) -> int:
        return max(0, (len(self.tokens) - 1) // seq_len)

    def sequence(self, index: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens [seq_len + 1] of sequence `index` and the document starts inside it (0 included)."""
        lo = index * seq_len
        window = np.asarray(self.tokens[lo:lo + seq_len + 1], dtype=np.int64)
        inside = self.doc_starts[(self.doc_starts > lo) & (self.doc_starts < lo + seq_len)] - lo
        return window, np.concatenate([[0], inside]).astype(np.int64)


def cu_seqlens_for(starts: list[np.ndarray], seq_len: int) -> torch.Tensor:
    """Document boundaries of a [B, seq_len] batch as int32 cu_seqlens of the flattened batch."""
    offsets = [s + b * seq_len for b, s in enumerate(starts)]
    return torch.tensor(np.concatenate(offsets + [[len(starts) * seq_len]]), dtype=torch.int32)


def _tokenize(docs: list[str], tokenizer) -> tuple[np.ndarray, np.ndarray]:
    encode_batch = getattr(tokenizer, "encode_batch", None)
    ids = encode_batch(docs) if encode_batch else [tokenizer.encode(d) for d in docs]
    lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.fromiter((t for doc in ids for t in (*doc, tokenizer.eos_id)), dtype=np.uint32,
                       count=int(lengths.sum()))
    return flat, starts


def heldout_split(num_docs: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out documents: a seeded choice of max(1, fraction * n) documents."""
    rng = np.random.default_rng(seed)
    n_held = max(1, int(round(fraction * num_docs))) if num_docs > 1 else 0
    mask = np.zeros(num_docs, dtype=bool)
    mask[rng.permutation(num_docs)[:n_held]] = True
    return mask


def prepare_streams(corpus: str, tokenizer, heldout_fraction: float = 0.05, seed: int = 1234
                    ) -> tuple[TokenStream, TokenStream]:
    """(train, heldout) streams, tokenized once and cached as memory-mapped files."""
    files = corpus_files(corpus)
    key = hashlib.sha256(json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
                                    + [tokenizer.name, tokenizer.vocab_size, heldout_fraction, seed]).encode())
    folder = cache_dir() / "tokenized" / f"{Path(corpus).name}-{key.hexdigest()[:16]}"
    if not (folder / "done").exists():
        docs = load_documents(corpus)
        if not docs:
            raise DataError(f"corpus {corpus!r} holds no documents")
        held = heldout_split(len(docs), heldout_fraction, seed)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for split, keep in (("train", ~held), ("heldout", held)):
            tokens, starts = _tokenize([d for d, k in zip(docs, keep) if k], tokenizer)
            tokens.tofile(tmp / f"{split}.bin")
            np.save(tmp / f"{split}.starts.npy", starts)
        (tmp / "done").write_text(json.dumps({"corpus": corpus, "documents": len(docs)}))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: use its copy
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return tuple(TokenStream(np.memmap(folder / f"{split}.bin", dtype=np.uint32, mode="r"),
                             np.load(folder / f"{split}.starts.npy")) for split in ("train", "heldout"))
