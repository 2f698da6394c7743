"""Data: where the local mirror is, tokenizers, corpora, and packed token streams for training.

Documents are tokenized once (in parallel), joined with an end-of-document token, and stored as
flat uint16 (vocabularies up to 65536) or uint32 token files (memory-mapped) beside an array of
document start offsets, so a training sequence is a plain slice and its document boundaries
(`cu_seqlens`) come from the offsets.

The held-out split is a property of the corpus alone: within each source (a record's `source`
field, else its file), the documents whose text digests (sha256) are smallest are held out, a
fixed fraction of each source. So it is the same for every training seed, tokenizer and machine,
a tokenizer can be trained on the training split before anything is tokenized, and the held-out
loss can be reported per source. Documents are packed in digest order; what a training seed
varies is the order in which the trainer visits the packed sequences (harness.train).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

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


def user_data_dir() -> Path:
    """Where `harness data fetch|import` write: `$HARNESS_DATA` when set, else the user cache."""
    env = os.environ.get("HARNESS_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def cache_dir() -> Path:
    """`$HARNESS_CACHE`, else ~/.cache/swat-harness: tokenized streams, decompressed splits, fetches."""
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
    """A `tokenizers` tokenizer.json (or .json.gz), e.g. the Llama-2 32k BPE; no special tokens
    are added on encode."""

    def __init__(self, path: Path, name: str | None = None):
        from tokenizers import Tokenizer
        self.path = Path(path)
        self.name = name or str(path)
        if self.path.suffix == ".gz":
            self._tok = Tokenizer.from_str(gzip.decompress(self.path.read_bytes()).decode("utf-8"))
        else:
            self._tok = Tokenizer.from_file(str(path))
        self.vocab_size = self._tok.get_vocab_size()
        eos = next((t for t in ("</s>", "<|endoftext|>", "<eos>") if self._tok.token_to_id(t) is not None), None)
        if eos is None:
            raise DataError(f"tokenizer {path} has no end-of-document token (</s> or <|endoftext|>)")
        self.eos_id = self._tok.token_to_id(eos)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encodes on all cores (the `tokenizers` thread pool); same ids as `encode` one by one."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


def get_tokenizer(name: str):
    """`bytes`, a tokenizer name in the mirror (`<root>/tokenizers/<name>/tokenizer.json[.gz]`, the
    roots searched in `data_roots()` order; `llama2` is committed in data/), or a path."""
    if name == "bytes":
        return ByteTokenizer()
    path = Path(name)
    if path.is_file():
        return HFTokenizer(path)
    candidates = [root / "tokenizers" / name / f for root in data_roots() for f in ("tokenizer.json", "tokenizer.json.gz")]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(f"tokenizer {name!r} not found (looked for {candidates[0]} and the same under "
                        f"{', '.join(str(r) for r in data_roots()[1:])}); pass train.tokenizer=bytes or a path "
                        f"to a tokenizer.json, or run `harness data import PATH/llama-tokenizer-js`")
    return HFTokenizer(found, name)


# ---------------------------------------------------------------- corpora

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet", ".txt.gz", ".jsonl.gz", ".txt.xz", ".jsonl.xz")

# Pretraining corpora on the Hugging Face hub, streamed into `<data>/corpora/<name>/` by
# `harness data fetch NAME` (the same layout as the committed english-mix): (path, config, field).
HUB_CORPORA = {
    "slimpajama": ("cerebras/SlimPajama-627B", None, "text"),
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT", "text"),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "text"),
}


def split_wikitext(text: str) -> list[str]:
    """WikiText articles start at top-level headings ' = Title = '."""
    parts = re.split(r"^(?= = [^=].* = $)", text, flags=re.M)
    return [p.strip("\n") for p in parts if p.strip()]


def read_decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".xz":
        return lzma.decompress(data)
    return data


def read_documents(path: Path) -> list[str]:
    """Documents of one file: JSONL/parquet records' `text` field, or a text file split into
    WikiText articles (else at runs of two or more blank lines)."""
    return [text for text, _ in read_sourced_documents(path)]


def file_source(path: Path) -> str:
    """The source a file's documents belong to when its records name none: the file's name
    without its suffixes (`gutenberg.jsonl.xz` -> `gutenberg`)."""
    return path.name.split(".")[0]


def read_sourced_documents(path: Path) -> list[tuple[str, str]]:
    """(text, source) of every document of one file; the source is a JSONL/parquet record's
    `source` field when it has one, else `file_source(path)`."""
    name = path.name.removesuffix(".gz").removesuffix(".xz")
    default = file_source(path)
    if name.endswith(".jsonl"):
        docs = []
        for n, line in enumerate(read_decompressed(path).decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                docs.append((record["text"], str(record.get("source") or default)))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise DataError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
        return docs
    if name.endswith(".parquet"):
        import pandas as pd
        frame = pd.read_parquet(path)
        if "text" not in frame.columns:
            raise DataError(f"{path}: parquet file has no 'text' column")
        sources = frame["source"].astype(str) if "source" in frame.columns else [default] * len(frame)
        return list(zip(frame["text"].astype(str).tolist(), sources))
    text = read_decompressed(path).decode("utf-8", errors="replace")
    docs = split_wikitext(text)
    docs = docs if len(docs) > 1 else [d for d in re.split(r"\n\s*\n\s*\n", text) if d.strip()]
    return [(d, default) for d in docs]


def files_in(path: Path) -> list[Path]:
    """Corpus files under a folder, sorted by path (a stable document order)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(CORPUS_SUFFIXES))


def corpus_files(corpus: str) -> list[Path]:
    """Files of a corpus: `bundled` (a WikiText-2 slice in the package), `wikitext-2` (the v1
    validation file, `wikitext-2/valid.txt` in ../shared/data), a named folder `<root>/corpora/<name>/` (e.g. `english-mix`,
    committed; `slimpajama` after `harness data fetch`), or a path (a file, or a folder of
    .txt/.jsonl/.parquet files, optionally .gz/.xz)."""
    if corpus == "bundled":
        return [BUNDLED_TEXT]
    looked = []
    named_roots = [] if "/" in corpus or Path(corpus).is_absolute() else data_roots()  # a path is not a name
    for root in named_roots:
        named = root / "wikitext-2" / "valid.txt" if corpus == "wikitext-2" else root / "corpora" / corpus
        looked.append(named)
        files = files_in(named) if named.is_dir() else [named] if named.is_file() else []
        if files:
            return files
    path = Path(corpus)
    if path.is_dir() and files_in(path):
        return files_in(path)
    if path.is_file():
        return [path]
    hint = f"run `harness data fetch {corpus}` where the hub is reachable, or " if corpus in HUB_CORPORA else ""
    where = f"looked in {', '.join(map(str, looked))} and at the path {path}" if looked else f"no such path {path}"
    raise DataError(f"corpus {corpus!r} not found ({where}); {hint}use train.corpus=english-mix, bundled, or a "
                    f"path to text/JSONL/parquet files")


def iter_documents(corpus: str) -> Iterator[str]:
    """The documents of a corpus, file by file (one file's text in memory at a time)."""
    for text, _ in iter_sourced_documents(corpus):
        yield text


def iter_sourced_documents(corpus: str) -> Iterator[tuple[str, str]]:
    """(text, source) of the documents of a corpus, file by file."""
    for path in corpus_files(corpus):
        yield from read_sourced_documents(path)


def document_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def heldout_split(digests: list[bytes], sources: list[str], fraction: float) -> np.ndarray:
    """Boolean mask of held-out documents: in each source of n >= 2 documents, the
    max(1, round(fraction * n)) documents of smallest digest (ties by position). A source keeps
    its share of the held-out text whatever the mix, and the choice depends on the documents'
    text alone, never on a seed. When that holds out nothing (every source a single document: a
    folder of one-document files), the corpus is split as one source."""
    mask = np.zeros(len(digests), dtype=bool)
    by_source: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        by_source.setdefault(source, []).append(i)
    for members in by_source.values():
        if len(members) < 2:
            continue
        n_held = max(1, int(round(fraction * len(members))))
        ranked = sorted(members, key=lambda i: (digests[i], i))
        mask[ranked[:n_held]] = True
    if not mask.any() and len(by_source) > 1:
        return heldout_split(digests, [""] * len(digests), fraction)
    return mask


def heldout_texts(corpus: str, fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) of a corpus as text, by `heldout_split`: what a
    tokenizer is trained on must exclude the held-out documents."""
    docs = list(iter_sourced_documents(corpus))
    held = heldout_split([document_digest(t) for t, _ in docs], [s for _, s in docs], fraction)
    return [t for (t, _), h in zip(docs, held) if not h], [t for (t, _), h in zip(docs, held) if h]



def fetch_corpus(name: str, documents: int, dest: Path | None = None, shard_docs: int = 20_000,
                 progress=None) -> Path:
    """Stream the first `documents` documents of a hub corpus (HUB_CORPORA) into
    `<dest>/corpora/<name>/part-NNNNN.jsonl.gz`. Shards are written atomically and finished ones
    are skipped, so an interrupted fetch resumes."""
    if name not in HUB_CORPORA:
        raise DataError(f"unknown hub corpus {name!r}; choose one of {', '.join(HUB_CORPORA)}")
    hub, config, field = HUB_CORPORA[name]
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError("fetching a corpus from the hub needs the `datasets` package: pip install datasets") from None
    folder = (dest or user_data_dir()) / "corpora" / name
    folder.mkdir(parents=True, exist_ok=True)
    shards = sorted(folder.glob("part-*.jsonl.gz"))
    done = sum(gzip.decompress(p.read_bytes()).count(b"\n") for p in shards)
    if done >= documents:
        return folder
    try:
        stream = load_dataset(hub, config, split="train", streaming=True).skip(done)
        batch, index = [], len(shards)
        for row in stream:
            batch.append(json.dumps({"text": row[field]}, ensure_ascii=False))
            if len(batch) == shard_docs or done + len(batch) >= documents:
                _write_shard(folder / f"part-{index:05d}.jsonl.gz", batch)
                done, index, batch = done + len(batch), index + 1, []
                if progress:
                    progress(done, documents)
                if done >= documents:
                    break
    except Exception as err:  # offline or hub errors: one line, the shards so far are kept
        if isinstance(err, DataError):
            raise
        raise DataError(f"could not stream {hub} from the hub ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                        f"{done} documents are in {folder}; run the same command again to resume") from None
    return folder


def _write_shard(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    tmp.replace(path)


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


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 16 MiB blocks (corpora and checkpoints need not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_key(files: list[Path]) -> list:
    """Content digests of the corpus files: the cache survives copies (new mtimes) of the same data."""
    return [[f.name, file_sha256(f)] for f in files]


SPLIT_RULE = "per-source-smallest-sha256"  # part of the cache key: a new rule makes new streams


def streams_folder(corpus: str, tokenizer, heldout_fraction: float) -> Path:
    files = corpus_files(corpus)
    key = hashlib.sha256(json.dumps(_files_key(files) + [tokenizer.name, tokenizer.vocab_size,
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
        with _progress(f"tokenizing {corpus}") as advance:
            lengths, digests, sources = _tokenize_to(tmp / "all.bin", iter_sourced_documents(corpus), tokenizer,
                                                     advance=advance)
        if not len(lengths):
            raise DataError(f"corpus {corpus!r} holds no documents")
        tokens = np.memmap(tmp / "all.bin", dtype=token_dtype(tokenizer.vocab_size), mode="r")
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        held = heldout_split(digests, sources, heldout_fraction)
        order = np.asarray(sorted(range(len(lengths)), key=lambda i: (digests[i], i)), dtype=np.int64)
        names = sorted(set(sources))
        source_ids = np.asarray([names.index(s) for s in sources], dtype=np.int16)
        counts = {}
        for split, keep in (("train", ~held), ("heldout", held)):
            ids = order[keep[order]]
            np.save(tmp / f"{split}.starts.npy", _write_documents(tokens, offsets, lengths, ids, tmp / f"{split}.bin"))
            np.save(tmp / f"{split}.sources.npy", source_ids[ids])
            counts[split] = {"documents": len(ids), "tokens": int(lengths[ids].sum()),
                             "tokens_per_source": {n: int(lengths[ids][source_ids[ids] == k].sum())
                                                   for k, n in enumerate(names)}}
        del tokens
        (tmp / "all.bin").unlink()
        (tmp / "done").write_text(json.dumps({"corpus": corpus, "tokenizer": tokenizer.name, "split": SPLIT_RULE,
                                              "heldout_fraction": heldout_fraction, "sources": names, **counts},
                                             indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: use its copy
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    dtype = token_dtype(tokenizer.vocab_size)
    names = tuple(json.loads((folder / "done").read_text())["sources"])
    return tuple(TokenStream(np.memmap(folder / f"{split}.bin", dtype=dtype, mode="r"),
                             np.load(folder / f"{split}.starts.npy"), np.load(folder / f"{split}.sources.npy"),
                             names) for split in ("train", "heldout"))


@contextlib.contextmanager
def _progress(label: str):
    """A transient rich progress line on stderr (documents done, elapsed); yields advance(n)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    with Progress(SpinnerColumn(), TextColumn("{task.description}: {task.completed:,} documents"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)
