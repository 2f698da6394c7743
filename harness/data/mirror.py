"""The local data mirror of the evaluation sets: catalogue, lookup, status and verification.

Every evaluation set is stored in the schema of the Hugging Face hub dataset that lm-eval's built-in
task reads (same field names and types), one JSONL file per split, so a task YAML can point
`dataset_path: json` + `data_files` at it and run offline. The catalogue below says where each set
comes from and its schema; `data/MANIFEST.json` (committed) records each stored file's origin,
license, example count and sha256 of its uncompressed JSONL, and `harness data verify` checks
against it. Importing and fetching sets: harness.data.importers.

Lookup order (see `harness.data.paths.data_roots`): `$HARNESS_DATA` alone when set; otherwise the
repository's `data/`, then `../shared/data` beside the checkout, then the user cache
(`~/.cache/swat-harness/data`, where `fetch` and `import` write). Files may be stored gzipped
(`<name>/<split>.jsonl.gz`); `require` hands out a plain JSONL copy in the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from harness.data.corpus import files_in
from harness.data.paths import REPO_DATA, DataError, cache_dir, data_roots
from harness.files import atomic_write_bytes, file_sha256

MANIFEST_PATH = REPO_DATA / "MANIFEST.json"

# Field types of a hub schema: "str", "int", "list[str]", or a dict for a nested struct.
Schema = dict


@dataclass(frozen=True)
class Answer:
    """The field that holds a record's gold answer and the values it may take: lm-eval indexes the
    record's choices with it, so a value outside them would import fine and crash an evaluation."""
    field: str
    allowed: Callable[[dict], list]  # the record (fields and types checked) -> its valid answers
    meaning: str                     # what the values are, for the error message


@dataclass(frozen=True)
class Dataset:
    """One evaluation set as the hub holds it: where lm-eval loads it from and its schema."""
    name: str                 # lm-eval task name (or a distinct name for a non-standard variant)
    hub: str                  # hub dataset lm-eval's YAML names
    hub_config: str | None
    splits: dict              # split -> official example count
    schema: Schema
    license: str
    lm_eval_task: str | None  # the built-in task that reads it, None for variants no task reads
    note: str = ""
    answer: Answer | None = None  # None: no choices (language modelling)


# lm-eval's ARC target is choices.label.index(answerKey), a position in choices.text: a label
# beyond the texts would crash it as surely as one not in the list.
ARC_ANSWER = Answer("answerKey", lambda r: r["choices"]["label"][:len(r["choices"]["text"])],
                    "one of the labels of its choices")

CATALOGUE: dict[str, Dataset] = {d.name: d for d in [
    Dataset("piqa", "baber/piqa", None, {"validation": 1838},
            {"goal": "str", "sol1": "str", "sol2": "str", "label": "int"}, "AFL-3.0", "piqa",
            answer=Answer("label", lambda r: [0, 1], "0 = sol1, 1 = sol2")),
    Dataset("arc_easy", "allenai/ai2_arc", "ARC-Easy", {"test": 2376},
            {"id": "str", "question": "str", "choices": {"text": "list[str]", "label": "list[str]"},
             "answerKey": "str"}, "CC BY-SA 4.0", "arc_easy", answer=ARC_ANSWER),
    Dataset("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", {"test": 1172},
            {"id": "str", "question": "str", "choices": {"text": "list[str]", "label": "list[str]"},
             "answerKey": "str"}, "CC BY-SA 4.0", "arc_challenge", answer=ARC_ANSWER),
    Dataset("boolq", "aps/super_glue", "boolq", {"validation": 3270},
            {"question": "str", "passage": "str", "idx": "int", "label": "int"}, "CC BY-SA 3.0", "boolq",
            answer=Answer("label", lambda r: [0, 1], "0 = no, 1 = yes")),
    Dataset("winogrande", "allenai/winogrande", "winogrande_xl", {"validation": 1267},
            {"sentence": "str", "option1": "str", "option2": "str", "answer": "str"}, "CC BY 4.0",
            "winogrande", answer=Answer("answer", lambda r: ["1", "2"], "option1 or option2")),
    Dataset("lambada_openai", "EleutherAI/lambada_openai", "default", {"test": 5153},
            {"text": "str"}, "CC BY 4.0", "lambada_openai"),
    Dataset("hellaswag", "Rowan/hellaswag", None, {"validation": 10042},
            {"ind": "int", "activity_label": "str", "ctx_a": "str", "ctx_b": "str", "ctx": "str",
             "endings": "list[str]", "source_id": "str", "split": "str", "split_type": "str", "label": "str"},
            "MIT", "hellaswag", answer=Answer("label", lambda r: [str(i) for i in range(len(r["endings"]))],
                                              "the 0-based index of one of its endings")),
    Dataset("social_iqa", "lighteval/siqa", None, {"validation": 1954},
            {"context": "str", "question": "str", "answerA": "str", "answerB": "str", "answerC": "str",
             "label": "str"}, "CC BY 4.0", "social_iqa",
            answer=Answer("label", lambda r: ["1", "2", "3"], "1 = answerA, 2 = answerB, 3 = answerC")),
    Dataset("wikitext", "EleutherAI/wikitext_document_level", "wikitext-2-raw-v1",
            {"test": 62, "validation": 60}, {"page": "str"}, "CC BY-SA 3.0", "wikitext"),
    Dataset("wikitext_2_v1", "EleutherAI/wikitext_document_level", "wikitext-2-v1",
            {"test": 62, "validation": 60}, {"page": "str"}, "CC BY-SA 3.0", None,
            note="the tokenized v1 text (<unk>, ' @-@ '), not the raw text lm-eval's wikitext task reads"),
]}


def dataset(name: str) -> Dataset:
    if name not in CATALOGUE:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


# ---------------------------------------------------------------- schema

def _type_ok(value, kind) -> bool:
    if isinstance(kind, dict):
        return isinstance(value, dict) and set(value) == set(kind) and all(
            _type_ok(value[k], t) for k, t in kind.items())
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise ValueError(f"unknown schema type {kind!r}")


def check_record(ds: Dataset, record: dict, where: str) -> dict:
    """The record with its fields in schema order, or a DataError naming the first mismatch (a
    missing field, a wrong type, an answer outside the record's choices)."""
    if not isinstance(record, dict) or set(record) != set(ds.schema):
        got = f"fields {sorted(record)}" if isinstance(record, dict) else f"a {type(record).__name__}"
        raise DataError(f"{where}: {ds.name} records need fields {sorted(ds.schema)}, got {got}")
    for key, kind in ds.schema.items():
        if not _type_ok(record[key], kind):
            raise DataError(f"{where}: {ds.name} field {key!r} must be {kind}, got {record[key]!r:.60}")
    if ds.answer and record[ds.answer.field] not in (allowed := ds.answer.allowed(record)):
        raise DataError(f"{where}: {ds.name} field {ds.answer.field!r} is {record[ds.answer.field]!r:.60}, outside "
                        f"the record's choices: allowed {', '.join(map(repr, allowed)) or 'nothing (no choices)'} "
                        f"({ds.answer.meaning})")
    return {k: record[k] for k in ds.schema}


def to_jsonl(ds: Dataset, records: Iterable[dict], where: str) -> bytes:
    """Canonical JSONL bytes (schema key order, UTF-8, one record a line): what sha256 is taken of."""
    lines = [json.dumps(check_record(ds, r, f"{where} record {i}"), ensure_ascii=False)
             for i, r in enumerate(records, 1)]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- where files are

def stored_file(name: str, split: str) -> Path | None:
    """The first stored copy of a split in lookup order (plain or gzipped JSONL), else None."""
    for root in data_roots():
        for suffix in (".jsonl", ".jsonl.gz"):
            path = root / name / f"{split}{suffix}"
            if path.is_file():
                return path
    return None


# What to do about a damaged file in the mirror: a copy of a file recorded elsewhere, so not repaired by hand.
REPLACE_MIRRORED = "replace it: restore the repository's copy, or fetch, import or train it again (with --force)"


def read_stored(path: Path, fix: str = REPLACE_MIRRORED) -> bytes:
    """A file's bytes, gunzipped for .gz; a damaged .gz is a DataError naming the file and `fix`, not a
    traceback (a mirrored file is replaced; an input file given to import is compressed again)."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a complete gzip file ({err}); {fix}") from None


def how_to_get(name: str) -> str:
    ds = dataset(name)
    hub = ds.hub + (f" ({ds.hub_config})" if ds.hub_config else "")
    return (f"run `harness data fetch {name}` where the Hugging Face hub is reachable (hub: {hub}), or "
            f"`harness data import FILE --name {name} --split SPLIT` with a local copy")


def require(name: str) -> dict[str, Path]:
    """{split: local plain JSONL file in the hub schema} for every split of `name`, or a DataError
    that names the dataset, where it was looked for and how to get it."""
    ds = dataset(name)
    out = {}
    for split in ds.splits:
        path = stored_file(name, split)
        if path is None:
            looked = ", ".join(str(r / name) for r in data_roots())
            raise DataError(f"dataset {name} split {split} is not in the mirror (looked in {looked}); "
                            f"{how_to_get(name)}")
        out[split] = path if path.suffix == ".jsonl" else _plain_copy(path)
    return out


def _plain_copy(path: Path) -> Path:
    """Decompress a gzipped split once into the cache, keyed by content, and return the copy."""
    data = read_stored(path)
    digest = sha256(data)
    target = cache_dir() / "mirror" / path.parent.name / digest[:16] / path.name.removesuffix(".gz")
    if not target.is_file():
        atomic_write_bytes(target, data)
    return target


def available() -> dict[str, bool]:
    """Dataset name -> whether every split is present in the mirror."""
    return {name: all(stored_file(name, s) for s in ds.splits) for name, ds in CATALOGUE.items()}


# ---------------------------------------------------------------- manifest

def load_manifest(path: Path | None = None) -> dict:
    """A mirror's MANIFEST.json; by default the committed data/MANIFEST.json. A damaged one is a
    DataError: every checksum of its mirror is checked against it."""
    path = path or MANIFEST_PATH
    if not path.is_file():
        return {"datasets": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable MANIFEST.json ({err}); restore the repository's copy, or import "
                        f"the mirror's files again into an empty folder") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("datasets", {}), dict):
        raise DataError(f"{path}: not a MANIFEST.json (no 'datasets' object); restore the repository's copy")
    return {"datasets": {}, **manifest}


def count_lines(data: bytes) -> int:
    return sum(1 for line in io.BytesIO(data) if line.strip())


@dataclass
class Status:
    """What `list` and `verify` report about one split."""
    name: str
    split: str
    path: Path | None
    count: int | None
    official: int
    sha256: str | None
    problem: str = ""


def status(name: str, split: str) -> Status:
    """Presence, count and checksum of one split, with any disagreement with the official size or
    with the MANIFEST.json of the mirror folder that holds it (committed for data/, written by
    fetch/import elsewhere)."""
    ds = dataset(name)
    official = ds.splits[split]
    path = stored_file(name, split)
    if path is None:
        return Status(name, split, None, None, official, None, "missing")
    manifest_path = path.parent.parent / "MANIFEST.json"
    try:
        data = read_stored(path)
        expected = load_manifest(manifest_path)["datasets"].get(name, {}).get("splits", {}).get(split)
    except DataError as err:  # a damaged file is one problem among the others listed
        return Status(name, split, path, None, official, None, str(err))
    st = Status(name, split, path, count_lines(data), official, sha256(data))
    problems = []
    if st.count != official:
        problems.append(f"{st.count} examples, official {official}")
    if expected is None:
        problems.append(f"not recorded in {manifest_path}")
    elif expected["sha256"] != st.sha256:
        problems.append(f"sha256 differs from {manifest_path} (a modified file)")
    st.problem = "; ".join(problems)
    return st


def statuses() -> Iterator[Status]:
    for name, ds in CATALOGUE.items():
        for split in ds.splits:
            yield status(name, split)


def verify() -> list[str]:
    """Every problem found, not only the first (a damaged file is one of them): splits whose count
    differs from the official size or whose sha256 differs from the manifest beside them, and
    tokenizer or corpus files, in the lookup roots, that differ from their manifest."""
    problems = [f"{st.name}/{st.split}: {st.problem}" for st in statuses() if st.path and st.problem]
    for name, path, entry, manifest_path in recorded("tokenizers"):
        problems += [f"tokenizer {name}: {p}" for p in _tokenizer_problems(path, entry, manifest_path)]
    for name, folder, entry, manifest_path in recorded("corpora"):
        problems += [f"corpus {name}: {p}" for p in _corpus_problems(folder, entry, manifest_path)]
    return problems


def recorded(kind: str) -> Iterator[tuple[str, Path, dict, Path]]:
    """(name, path, entry, manifest path) of every tokenizer or corpus (`kind`: "tokenizers" or
    "corpora") that data/MANIFEST.json or a lookup root's MANIFEST.json records and a root holds:
    the copy found first in lookup order (the one that gets used), with the entry of the manifest
    beside it, else of data/MANIFEST.json (a copy of data/ keeps the committed entries)."""
    paths = dict.fromkeys([MANIFEST_PATH, *(root / "MANIFEST.json" for root in data_roots())])
    manifests = {path: load_manifest(path) for path in paths}
    names = dict.fromkeys(name for m in manifests.values() for name in m.get(kind, {}))
    for name in names:
        for root in data_roots():
            own = manifests[root / "MANIFEST.json"].get(kind, {}).get(name)
            entry, manifest_path = (own, root / "MANIFEST.json") if own else \
                (manifests[MANIFEST_PATH].get(kind, {}).get(name), MANIFEST_PATH)
            relative = entry and (entry["file"] if kind == "tokenizers" else entry["folder"])
            if relative and (root / relative).exists():
                yield name, root / relative, entry, manifest_path
                break


def _tokenizer_problems(path: Path, entry: dict, manifest_path: Path) -> list[str]:
    try:
        digest = sha256(read_stored(path))
    except DataError as err:
        return [str(err)]
    if digest != entry["sha256"]:
        return [f"{path} differs from {manifest_path} (a modified file); {REPLACE_MIRRORED}"]
    return []


def corpus_sizes_differ(folder: Path, entry: dict) -> bool:
    """Whether a corpus folder lacks a file its manifest entry records or holds one of another size
    than recorded: the check `data list` can afford (verify reads every byte)."""
    return any(not (folder / file).is_file() or (folder / file).stat().st_size != meta["bytes"]
               for file, meta in entry["files"].items() if "bytes" in meta)


def _corpus_problems(folder: Path, entry: dict, manifest_path: Path) -> list[str]:
    """A corpus folder against its entry: files missing, damaged or modified, and files it does not
    record (training reads every corpus file in the folder)."""
    problems = []
    for file, meta in entry["files"].items():
        path = folder / file
        if not path.is_file():
            problems.append(f"{path} is missing ({manifest_path} records it); {REPLACE_MIRRORED}")
        elif file_sha256(path) != meta["sha256"]:
            problems.append(f"{path} differs from {manifest_path} (a damaged, truncated or modified file); "
                            f"{REPLACE_MIRRORED}")
    problems += [f"{path} is not recorded in {manifest_path}; remove it from the corpus folder"
                 for path in files_in(folder) if path.name not in entry["files"]]
    return problems
