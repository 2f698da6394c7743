"""Pretraining corpora: their files (bundled, committed, fetched from the hub, or any folder),
their documents and each document's source, and the held-out split.

The held-out split is a property of the corpus alone: within each source (a record's `source`
field, else its file), the documents whose text digests (sha256) are smallest are held out, a
fixed fraction of each source, and with them every copy of their text. So it is the same for
every training seed, tokenizer and machine, a tokenizer can be trained on the training split
before anything is tokenized, and the held-out loss can be reported per source. What a training
seed varies is the order in which the trainer visits the packed sequences (harness.training.batches).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import re
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.config import first_line
from harness.data.paths import (
    PACKAGE_DIR,
    REPO_DATA,
    DataError,
    data_roots,
    user_data_dir,
)
from harness.files import atomic_write_bytes

BUNDLED_TEXT = PACKAGE_DIR / "resources" / "wikitext2_valid_sample.txt"


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
    """A corpus file's bytes, decompressed for .gz/.xz. A damaged or truncated archive is a DataError
    naming the file: training on what could be read of it would be silently wrong."""
    data = path.read_bytes()
    if path.suffix not in (".gz", ".xz"):
        return data
    try:
        return gzip.decompress(data) if path.suffix == ".gz" else lzma.decompress(data)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        raise DataError(f"{path}: not a readable {'gzip' if path.suffix == '.gz' else 'xz'} file ({err}), damaged "
                        f"or truncated; fetch or copy it again, or remove it from the corpus") from None


def read_corpus_text(path: Path) -> str:
    """A corpus file's text: bytes that are not UTF-8, or NUL bytes (binary data), are a DataError
    naming the file, since a tokenizer or model would otherwise learn from garbage."""
    data = read_decompressed(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); a corpus holds UTF-8 "
                        f"text/JSONL (or parquet) files: replace it or remove it from the corpus") from None
    if "\x00" in text:
        raise DataError(f"{path}: holds NUL bytes, so binary data, not text; replace it or remove it from the corpus")
    return text


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text, split at newlines only: str.splitlines() also splits at U+2028,
    U+2029 and U+0085, which JSON leaves unescaped inside strings (json.dumps(ensure_ascii=False)
    writes them as they are, as `fetch_corpus` does), so it would cut such a record in two."""
    return text.split("\n")


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
        for n, line in enumerate(jsonl_lines(read_corpus_text(path)), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text, source = record["text"], str(record.get("source") or default)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise DataError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
            if not isinstance(text, str):  # a number or null would reach the tokenizer
                raise DataError(f"{path}:{n}: expected a JSON object with a 'text' field that is a string, "
                                f"got 'text': {json.dumps(text)[:40]}")
            docs.append((text, source))
        return docs
    if name.endswith(".parquet"):
        table = read_parquet(path, "replace it or remove it from the corpus")
        sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * len(table)
        return [(text, str(source or default)) for text, source in zip(parquet_texts(path, table), sources)]
    text = read_corpus_text(path)
    docs = split_wikitext(text)
    docs = docs if len(docs) > 1 else [d for d in re.split(r"\n\s*\n\s*\n", text) if d.strip()]
    return [(d, default) for d in docs]


def read_parquet(path: Path, fix: str):
    """A parquet file's pyarrow table, which keeps each column's type (so a `text` column of numbers
    or nulls is seen as such), or a DataError naming the file and `fix`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow; install it (pip install pyarrow)") from None
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:  # ArrowInvalid for a non-parquet file, OSError for a damaged one
        raise DataError(f"{path}: not a readable parquet file ({first_line(err)}); {fix}") from None


def parquet_texts(path: Path, table) -> list[str]:
    """The documents of a parquet table's `text` column. The column's type is checked, not each
    value converted: str() made a null the document "None" and a number the document "5"."""
    if "text" not in table.column_names:
        raise DataError(f"{path}: parquet file has no 'text' column; store the documents in a string column 'text'")
    import pyarrow as pa
    import pyarrow.compute as pc
    column = table.column("text")
    if pa.types.is_dictionary(column.type):  # pandas' categorical strings: still strings
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        first = column[0].as_py() if len(column) else None
        raise DataError(f"{path}: row 0: the 'text' column holds {column.type}, not strings (got 'text': "
                        f"{first!r:.40}); store the documents as a string column")
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise DataError(f"{path}: row {row} (counting from 0): 'text' is null; drop the rows without text or "
                        f"fill them, e.g. with pandas' dropna(subset=['text'])")
    return column.to_pylist()


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
    if path.is_dir():
        if files_in(path):
            return files_in(path)
        raise DataError(f"corpus folder {path} holds no corpus files ({', '.join(CORPUS_SUFFIXES)})")
    if path.is_file():
        return [path]
    where = f"looked in {', '.join(map(str, looked))} and at the path {path}" if looked else f"no such path {path}"
    origin = corpus_origin(corpus) if looked else None
    # no option name: train.corpus, train-tokenizer's and eval's --corpus all end here
    raise DataError(f"corpus {corpus!r} not found ({where}); {origin + '; else ' if origin else ''}use a corpus "
                    f"found here ({', '.join(corpus_names())}) or a path to text/JSONL/parquet files")


def corpus_origin(name: str) -> str | None:
    """How a named corpus is obtained, for a message saying it is missing: a hub corpus's fetch
    command, or the repository's committed copy (english-mix, built by a script from local sources,
    which no harness command makes; $HARNESS_DATA hides it); None for any other name."""
    if name in HUB_CORPORA:
        return f"fetch it with `harness data fetch {name} --documents N` where the hub is reachable"
    committed = REPO_DATA / "corpora" / name
    if not committed.is_dir():
        return None
    built = ", built from local sources by its build.py" if (committed / "build.py").is_file() else ""
    hidden = " (not looked in while HARNESS_DATA is set)" if REPO_DATA not in data_roots() else ""
    return f"the repository commits it in {committed}{hidden}{built}"


def corpus_names() -> list[str]:
    """The corpus names that `corpus_files` finds in the data roots, `bundled` first."""
    found = [folder.name for root in data_roots() if (root / "corpora").is_dir()
             for folder in sorted((root / "corpora").iterdir()) if folder.is_dir() and files_in(folder)]
    wikitext = ["wikitext-2"] if any((root / "wikitext-2" / "valid.txt").is_file() for root in data_roots()) else []
    return list(dict.fromkeys(["bundled", *found, *wikitext]))


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
    folder of one-document files), the corpus is split as one source. Every copy of a held-out
    text, in any source, is held out too: a copy left in training would make the held-out loss
    measure memorisation."""
    mask = _smallest_per_source(digests, sources, fraction)
    if not mask.any() and len(set(sources)) > 1:
        mask = _smallest_per_source(digests, [""] * len(digests), fraction)
    held = {digests[i] for i in np.flatnonzero(mask)}
    return np.fromiter((d in held for d in digests), dtype=bool, count=len(digests))


def _smallest_per_source(digests: list[bytes], sources: list[str], fraction: float) -> np.ndarray:
    """In each source of n >= 2 documents, the max(1, round(fraction * n)) of smallest digest."""
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
    folder = (dest or user_data_dir()) / "corpora" / name  # made by the first shard: a failed fetch leaves none
    shards = sorted(folder.glob("part-*.jsonl.gz"))
    done = sum(read_decompressed(p).count(b"\n") for p in shards)
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
        reason = first_line(err) or type(err).__name__
        kept = f"{done} documents are in {folder}; run the same command again to resume" if done else \
            "nothing was written"
        raise DataError(f"could not stream {hub} from the hub ({reason}); {kept}") from None
    return folder


def _write_shard(path: Path, lines: list[str]) -> None:
    atomic_write_bytes(path, gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
