"""Packed token streams for training: a corpus tokenized once (in parallel), each split's documents
joined with an end-of-document token and stored as flat uint16 (vocabularies up to 65536) or
uint32 token files (memory-mapped) beside an array of document start offsets, so a training
sequence is a plain slice and its document boundaries (`cu_seqlens`) come from the offsets.
Documents are packed in digest order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from harness.data.corpus import (
    corpus_files,
    document_digest,
    heldout_split,
    iter_sourced_documents,
)
from harness.data.paths import DataError, cache_dir
from harness.files import file_sha256

# ---------------------------------------------------------------- tokenized, packed streams


@dataclass
class TokenStream:
    """A flat token array (memory-mapped uint16/uint32) with the start offset of every document,
    and each document's source (an index into `source_names`)."""
    tokens: np.ndarray
    doc_starts: np.ndarray
    doc_sources: np.ndarray | None = None
    source_names: tuple[str, ...] = ()

    def token_sources(self, lo: int, hi: int) -> np.ndarray:
        """Source index of each token at positions lo..hi-1."""
        docs = np.searchsorted(self.doc_starts, np.arange(lo, hi), side="right") - 1
        return self.doc_sources[docs]

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


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _tokenize_to(path: Path, docs: Iterable[tuple[str, str]], tokenizer, batch_docs: int = 512,
                 advance=None) -> tuple[np.ndarray, list[bytes], list[str]]:
    """Encode a stream of (text, source) documents in batches (each batch on all cores), append
    each one's tokens and the end-of-document token to `path`; return the documents' lengths,
    text digests and sources. Only one batch of text is in memory at a time."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    dtype = token_dtype(tokenizer.vocab_size)
    lengths: list[int] = []
    digests: list[bytes] = []
    sources: list[str] = []
    with open(path, "wb") as f:
        for chunk in _batched(docs, batch_docs):
            texts = [text for text, _ in chunk]
            ids = encode_batch(texts) if encode_batch else [tokenizer.encode(d) for d in texts]
            for doc in ids:
                np.asarray([*doc, tokenizer.eos_id], dtype=dtype).tofile(f)
                lengths.append(len(doc) + 1)
            digests += [document_digest(t) for t in texts]
            sources += [source for _, source in chunk]
            if advance:
                advance(len(chunk))
    return np.asarray(lengths, dtype=np.int64), digests, sources


def _batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_documents(tokens: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, ids: np.ndarray,
                     path: Path) -> np.ndarray:
    """Copy documents `ids` (in that order) of a token file into `path`; their new start offsets."""
    with open(path, "wb") as f:
        for i in ids:
            f.write(tokens[offsets[i]:offsets[i] + lengths[i]].tobytes())
    return np.concatenate([[0], np.cumsum(lengths[ids])[:-1]]).astype(np.int64) if len(ids) else np.zeros(0, np.int64)


def _files_key(files: list[Path]) -> list:
    """Content digests of the corpus files: the cache survives copies (new mtimes) of the same data."""
    return [[f.name, file_sha256(f)] for f in files]


SPLIT_RULE = "per-source-smallest-sha256-copies-held"  # part of the cache key: a new rule makes new streams


def streams_folder(corpus: str, tokenizer, heldout_fraction: float) -> Path:
    """The cache folder of a corpus's streams, keyed by what decides their tokens: the files' content,
    the tokenizer's content (`fingerprint`, not its name: one retrained under the same name gives
    other ids), the held-out fraction and the split rule."""
    files = corpus_files(corpus)
    key = hashlib.sha256(json.dumps(_files_key(files) + [tokenizer.fingerprint, tokenizer.vocab_size,
                                                          heldout_fraction, SPLIT_RULE]).encode())
    return cache_dir() / "tokenized" / f"{Path(corpus).name}-{key.hexdigest()[:16]}"


def prepare_streams(corpus: str, tokenizer, heldout_fraction: float = 0.05) -> tuple[TokenStream, TokenStream]:
    """(train, heldout) streams of a corpus, tokenized once and cached as memory-mapped files.

    Documents are held out by `heldout_split` (by content, per source; no seed), each split is
    written in digest order, every document ends with the end-of-document token, and the start
    offset and source of each document are kept (document boundaries for `cu_seqlens`, per-source
    held-out loss). The same corpus, tokenizer and fraction give the same files on any machine;
    the cache key is the files' content, so a copied corpus is not tokenized again. Documents are
    streamed into one token file first and then copied in order, so memory holds one batch of
    text, not the corpus."""
    folder = streams_folder(corpus, tokenizer, heldout_fraction)
    if not (folder / "done").exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            _split_into(tmp, corpus, tokenizer, heldout_fraction)
        except BaseException:  # a damaged file, too few documents, Ctrl-C: leave no half-written cache
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    dtype = token_dtype(tokenizer.vocab_size)
    names = tuple(json.loads((folder / "done").read_text())["sources"])
    return tuple(TokenStream(np.memmap(folder / f"{split}.bin", dtype=dtype, mode="r"),
                             np.load(folder / f"{split}.starts.npy"), np.load(folder / f"{split}.sources.npy"),
                             names) for split in ("train", "heldout"))


def _split_into(tmp: Path, corpus: str, tokenizer, heldout_fraction: float) -> None:
    """Tokenize the corpus into `tmp`: the train and held-out token files, their document starts
    and sources, and `done` with the counts (see token_streams)."""
    with _progress(f"tokenizing {corpus}") as advance:
        lengths, digests, sources = _tokenize_to(tmp / "all.bin", iter_sourced_documents(corpus), tokenizer,
                                                 advance=advance)
    if not len(lengths):
        raise DataError(f"corpus {corpus!r} holds no documents")
    held = heldout_split(digests, sources, heldout_fraction)
    if held.all() or not held.any():
        raise DataError(f"corpus {corpus!r} has {len(set(digests))} distinct document(s) ({len(lengths)} in all): "
                        "too few to hold some out for evaluation; give it at least two (a text file splits at runs "
                        "of two or more blank lines)")
    tokens = np.memmap(tmp / "all.bin", dtype=token_dtype(tokenizer.vocab_size), mode="r")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    order = np.asarray(sorted(range(len(lengths)), key=lambda i: (digests[i], i)), dtype=np.int64)
    names = sorted(set(sources))
    index = {name: k for k, name in enumerate(names)}  # int32: one source per file can pass int16's 32767
    source_ids = np.asarray([index[s] for s in sources], dtype=np.int32)
    counts = {}
    for split, keep in (("train", ~held), ("heldout", held)):
        ids = order[keep[order]]
        np.save(tmp / f"{split}.starts.npy", _write_documents(tokens, offsets, lengths, ids, tmp / f"{split}.bin"))
        np.save(tmp / f"{split}.sources.npy", source_ids[ids])
        counts[split] = {"documents": len(ids), "tokens": int(lengths[ids].sum()),
                         "tokens_per_source": dict(zip(names, np.bincount(source_ids[ids], weights=lengths[ids],
                                                                          minlength=len(names)).astype(int).tolist()))}
    del tokens
    (tmp / "all.bin").unlink()
    (tmp / "done").write_text(json.dumps({"corpus": corpus, "tokenizer": tokenizer.name, "split": SPLIT_RULE,
                                          "heldout_fraction": heldout_fraction, "sources": names, **counts},
                                         indent=1))


@contextlib.contextmanager
def _progress(label: str):
    """A transient rich progress line on stderr (documents done, elapsed); yields advance(n)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}: {task.completed:,} documents"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as bar:  # a log file gets no spinner frames or blank line
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)
