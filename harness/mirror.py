"""The local data mirror of the evaluation sets: catalogue, lookup, import, fetch and verify.

Every evaluation set is stored in the schema of the Hugging Face hub dataset that lm-eval's built-in
task reads (same field names and types), one JSONL file per split, so a task YAML can point
`dataset_path: json` + `data_files` at it and run offline. The catalogue below is the single list of
what the tasks need; `data/MANIFEST.json` (committed) records each stored file's origin, license,
example count and sha256 of its uncompressed JSONL, and `harness data verify` checks against it.

Lookup order (see `harness.data.data_roots`): `$HARNESS_DATA` alone when set; otherwise the
repository's `data/`, then `../shared/data` beside the checkout, then the user cache
(`~/.cache/swat-harness/data`, where `fetch` and `import` write). Files may be stored gzipped
(`<name>/<split>.jsonl.gz`); `require` hands out a plain JSONL copy in the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from harness.data import (HUB_CORPORA, DataError, cache_dir, corpus_files, data_roots, fetch_corpus,
                          files_in, get_tokenizer, prepare_streams, read_decompressed, read_documents,
                          split_wikitext, user_data_dir)

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
MANIFEST_PATH = REPO_DATA / "MANIFEST.json"

# Field types of a hub schema: "str", "int", "list[str]", or a dict for a nested struct.
Schema = dict


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


CATALOGUE: dict[str, Dataset] = {d.name: d for d in [
    Dataset("piqa", "baber/piqa", None, {"validation": 1838},
            {"goal": "str", "sol1": "str", "sol2": "str", "label": "int"}, "AFL-3.0", "piqa"),
    Dataset("arc_easy", "allenai/ai2_arc", "ARC-Easy", {"test": 2376},
            {"id": "str", "question": "str", "choices": {"text": "list[str]", "label": "list[str]"},
             "answerKey": "str"}, "CC BY-SA 4.0", "arc_easy"),
    Dataset("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", {"test": 1172},
            {"id": "str", "question": "str", "choices": {"text": "list[str]", "label": "list[str]"},
             "answerKey": "str"}, "CC BY-SA 4.0", "arc_challenge"),
    Dataset("boolq", "aps/super_glue", "boolq", {"validation": 3270},
            {"question": "str", "passage": "str", "idx": "int", "label": "int"}, "CC BY-SA 3.0", "boolq"),
    Dataset("winogrande", "allenai/winogrande", "winogrande_xl", {"validation": 1267},
            {"sentence": "str", "option1": "str", "option2": "str", "answer": "str"}, "CC BY 4.0",
            "winogrande"),
    Dataset("lambada_openai", "EleutherAI/lambada_openai", "default", {"test": 5153},
            {"text": "str"}, "CC BY 4.0", "lambada_openai"),
    Dataset("hellaswag", "Rowan/hellaswag", None, {"validation": 10042},
            {"ind": "int", "activity_label": "str", "ctx_a": "str", "ctx_b": "str", "ctx": "str",
             "endings": "list[str]", "source_id": "str", "split": "str", "split_type": "str", "label": "str"},
            "MIT", "hellaswag"),
    Dataset("social_iqa", "lighteval/siqa", None, {"validation": 1954},
            {"context": "str", "question": "str", "answerA": "str", "answerB": "str", "answerC": "str",
             "label": "str"}, "CC BY 4.0", "social_iqa"),
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
    """The record with its fields in schema order, or a DataError naming the first mismatch."""
    if not isinstance(record, dict) or set(record) != set(ds.schema):
        got = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where}: {ds.name} records need fields {sorted(ds.schema)}, got {got}")
    for key, kind in ds.schema.items():
        if not _type_ok(record[key], kind):
            raise DataError(f"{where}: {ds.name} field {key!r} must be {kind}, got {record[key]!r:.60}")
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


def read_stored(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """A mirror's MANIFEST.json; by default the committed data/MANIFEST.json."""
    path = path or MANIFEST_PATH
    if not path.is_file():
        return {"datasets": {}}
    return json.loads(path.read_text(encoding="utf-8"))


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
    data = read_stored(path)
    st = Status(name, split, path, count_lines(data), official, sha256(data))
    manifest_path = path.parent.parent / "MANIFEST.json"
    expected = load_manifest(manifest_path)["datasets"].get(name, {}).get("splits", {}).get(split)
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


# ---------------------------------------------------------------- converters (raw files -> hub schema)

def read_records(path: Path) -> list[dict]:
    """Records of a JSON list, JSONL (optionally .gz) or parquet file."""
    if path.suffix == ".parquet":
        import pandas as pd
        return json.loads(pd.read_parquet(path).to_json(orient="records", force_ascii=False))
    text = read_stored(path).decode("utf-8")
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not JSON Lines ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    return data


def _coerce(kind, value):
    """Digit strings and ints are interchangeable (raw files store labels either way)."""
    if kind == "str" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind == "int" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def from_hub_records(ds: Dataset, records: list[dict]) -> list[dict]:
    """Records already in the hub schema (or a raw release with the same fields): keep the schema's
    fields, cast int/str labels to the hub's type; a missing field is an error in check_record."""
    return [{k: _coerce(t, r[k]) for k, t in ds.schema.items() if k in r} if isinstance(r, dict) else r
            for r in records]


def from_labels_file(ds: Dataset, records: list[dict], labels: list[str]) -> list[dict]:
    """Authors' releases (PIQA, SIQA) keep labels in a separate `*-labels.lst`, one per line."""
    if len(labels) != len(records):
        raise DataError(f"{ds.name}: {len(records)} records but {len(labels)} labels")
    return from_hub_records(ds, [{**r, "label": lab.strip()} for r, lab in zip(records, labels)])


def _strip_prefix(text: str, prefix: str, where: str) -> str:
    if not text.startswith(prefix):
        raise DataError(f"{where}: expected text starting with {prefix!r}, got {text[:40]!r}")
    return text[len(prefix):]


def from_foundry_arc(ds: Dataset, records: list[dict]) -> list[dict]:
    """llm-foundry ARC items ("Question: ...", 4 choices, gold index). llm-foundry padded the
    original 3-choice items to 4 by repeating a wrong choice; the repeat is dropped here so those
    items have their 3 distinct choices again. Choice labels become A, B, C(, D) and the original
    ids are not in the source, so `id` is empty."""
    out = []
    for i, r in enumerate(records):
        texts = list(dict.fromkeys(r["choices"]))
        gold = texts.index(r["choices"][r["gold"]])
        labels = [chr(ord("A") + k) for k in range(len(texts))]
        out.append({"id": "", "question": _strip_prefix(r["query"], "Question: ", f"{ds.name} item {i}"),
                    "choices": {"text": texts, "label": labels}, "answerKey": labels[gold]})
    return out


def from_foundry_boolq(ds: Dataset, records: list[dict]) -> list[dict]:
    """llm-foundry BoolQ ("Passage: P\\nQuestion: Q?", choices [no, yes]): idx is the position in
    the validation split, label 1 = yes (True) as in super_glue."""
    out = []
    for i, r in enumerate(records):
        body = _strip_prefix(r["query"], "Passage: ", f"boolq item {i}")
        passage, sep, question = body.rpartition("\nQuestion: ")
        if not sep or not question.endswith("?") or r["choices"] != ["no", "yes"]:
            raise DataError(f"boolq item {i}: not the llm-foundry BoolQ format")
        out.append({"question": question[:-1], "passage": passage, "idx": i, "label": int(r["gold"])})
    return out


def from_foundry_winogrande(ds: Dataset, records: list[dict]) -> list[dict]:
    """llm-foundry WinoGrande (the sentence prefix with each option, the text after the blank): the
    blank goes after the longest common prefix that ends at a space, so lm-eval builds the same
    choices and target; where both options start with the same word it stays in the prefix."""
    out = []
    for i, r in enumerate(records):
        a, b = r["context_options"]
        common = os.path.commonprefix([a, b])
        cut = common.rfind(" ") + 1
        out.append({"sentence": f"{a[:cut]}_ {r['continuation']}", "option1": a[cut:], "option2": b[cut:],
                    "answer": str(int(r["gold"]) + 1)})
    return out


def from_foundry_lambada(ds: Dataset, records: list[dict]) -> list[dict]:
    """llm-foundry LAMBADA (context, final word): lm-eval splits `text` at its last space again."""
    return [{"text": f"{r['context']} {r['continuation']}"} for r in records]


def from_wikitext_tokens(ds: Dataset, text: str) -> list[dict]:
    """WikiText token files (one article after another): one page per top-level ' = Title = '."""
    return [{"page": page} for page in split_wikitext(text)]


FOUNDRY = "mosaicml/llm-foundry @ 8c8dd48f7216, scripts/eval/local_data/ (Apache-2.0 code; data keeps its license)"
PIQA_AUTHORS = "authors' repository ybisk/ybisk.github.io @ 21edab439af6, piqa/data/"
WIKITEXT_PT = "pytorch/examples @ 77f55b912142, word_language_model/data/wikitext-2/"


@dataclass(frozen=True)
class RawLayout:
    """A known raw release inside a folder (e.g. ../shared/data): which files make which split."""
    name: str
    split: str
    files: tuple          # paths relative to the imported folder
    origin: str
    note: str = ""


RAW_LAYOUTS = [
    RawLayout("piqa", "validation", ("piqa/valid.jsonl", "piqa/valid-labels.lst"), PIQA_AUTHORS),
    RawLayout("arc_easy", "test", ("llm-foundry-local-data/arc_easy.jsonl",), FOUNDRY,
              "converted from llm-foundry's ICL file, which has 4 choices for every item: the 3-choice "
              "originals were padded with a repeated wrong choice, dropped again here (7 items in "
              "ARC-Easy, 4 in ARC-Challenge); whether 5-choice originals were cut to 4 cannot be told "
              "from the file; labels re-lettered A-D, original ids absent (id empty)"),
    RawLayout("arc_challenge", "test", ("llm-foundry-local-data/arc_challenge.jsonl",), FOUNDRY,
              "as arc_easy"),
    RawLayout("boolq", "validation", ("llm-foundry-local-data/boolq.jsonl",), FOUNDRY,
              "converted from llm-foundry's ICL file; idx = position in the split (the order is SuperGLUE's: "
              "item 0 is the ethanol question); the passages are google/boolq's, without the 'Title -- ' "
              "prefix that SuperGLUE's passages carry, so lm-eval's prompts lack the article title"),
    RawLayout("winogrande", "validation", ("llm-foundry-local-data/winogrande.jsonl",), FOUNDRY,
              "converted from llm-foundry's ICL file; lm-eval's prompts are identical to the hub's, the "
              "sentence/option split may differ where both options start with the same word"),
    RawLayout("lambada_openai", "test", ("llm-foundry-local-data/lambada_openai.jsonl",), FOUNDRY,
              "text = context + ' ' + final word"),
    RawLayout("wikitext_2_v1", "test", ("wikitext-2/test.txt",), WIKITEXT_PT,
              "pages split at top-level headings"),
    RawLayout("wikitext_2_v1", "validation", ("wikitext-2/valid.txt",), WIKITEXT_PT,
              "pages split at top-level headings"),
]

FOUNDRY_CONVERTERS = {"arc_easy": from_foundry_arc, "arc_challenge": from_foundry_arc,
                      "boolq": from_foundry_boolq, "winogrande": from_foundry_winogrande,
                      "lambada_openai": from_foundry_lambada}


def convert_files(ds: Dataset, files: list[Path]) -> list[dict]:
    """Hub-schema records from one raw file (plus its labels file): the format is recognised by
    the file type and the raw field names."""
    main = files[0]
    if main.suffix == ".txt":
        return from_wikitext_tokens(ds, main.read_text(encoding="utf-8"))
    records = read_records(main)
    labels = files[1] if len(files) > 1 else main.with_name(main.name.split(".")[0] + "-labels.lst")
    if labels.is_file():
        return from_labels_file(ds, records, labels.read_text(encoding="utf-8").splitlines())
    first = records[0] if records else {}
    if isinstance(first, dict) and {"query", "context_options", "context"} & set(first) \
            and not set(ds.schema) <= set(first):
        if ds.name not in FOUNDRY_CONVERTERS:
            raise DataError(f"{main}: llm-foundry's ICL format has no converter to {ds.name} (its "
                            f"choices or labels are not those of {ds.hub})")
        return FOUNDRY_CONVERTERS[ds.name](ds, records)
    return from_hub_records(ds, records)


def write_split(dest: Path, ds: Dataset, split: str, records: list[dict], origin: str, note: str,
                where: str) -> dict:
    """Store one split as `<dest>/<name>/<split>.jsonl.gz` and record it in `<dest>/MANIFEST.json`."""
    if split not in ds.splits:
        raise DataError(f"{ds.name} has splits {', '.join(ds.splits)}, not {split!r}")
    data = to_jsonl(ds, records, where)
    if not data:
        raise DataError(f"{where}: no records")
    path = dest / ds.name / f"{split}.jsonl.gz"
    atomic_write_bytes(path, gzip.compress(data, compresslevel=9, mtime=0))
    entry = {"file": str(path.relative_to(dest)), "count": count_lines(data), "official": ds.splits[split],
             "sha256": sha256(data), "origin": origin, "note": note}
    def add(manifest):
        record = manifest["datasets"].setdefault(ds.name, {"hub": ds.hub, "hub_config": ds.hub_config,
                                                            "license": ds.license, "splits": {}})
        record["splits"][split] = entry
    update_manifest(dest, add)
    return entry


def update_manifest(dest: Path, change) -> None:
    """Apply `change(manifest)` to `<dest>/MANIFEST.json` and write it back atomically."""
    from harness.results import atomic_write_text
    manifest = load_manifest(dest / "MANIFEST.json")
    change(manifest)
    manifest = {k: dict(sorted(v.items())) for k, v in sorted(manifest.items())}
    atomic_write_text(dest / "MANIFEST.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def import_path(path: Path, dest: Path, name: str | None = None, split: str | None = None) -> list[dict]:
    """Import a file (`name` required), a folder of known raw releases, or the npm package
    llama-tokenizer-js (its folder or `llama-tokenizer.js`) into `dest`; returns what was written."""
    path = Path(path)
    js = path / "llama-tokenizer.js" if path.is_dir() else path
    if js.name == "llama-tokenizer.js" and js.is_file():
        return [import_tokenizer(js, dest)]
    if path.is_dir() and name is None:
        found = [lay for lay in RAW_LAYOUTS if all((path / f).is_file() for f in lay.files)]
        if not found:
            raise DataError(f"{path}: no known raw release found (expected e.g. "
                            f"{', '.join(RAW_LAYOUTS[0].files)}); import single files with --name NAME")
        entries = []
        for lay in found:
            ds = dataset(lay.name)
            records = convert_files(ds, [path / f for f in lay.files])
            entries.append({"name": lay.name, "split": lay.split,
                            **write_split(dest, ds, lay.split, records, lay.origin, lay.note,
                                          str(path / lay.files[0]))})
        return entries
    if path.is_dir():
        raise DataError(f"{path} is a folder: import one file with --name NAME [--split SPLIT], or a folder of "
                        f"known raw releases (like ../shared/data) without --name")
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass a JSON/JSONL/parquet/txt file with --name NAME")
    if name is None:
        raise DataError(f"importing a single file needs --name (one of {', '.join(CATALOGUE)})")
    ds = dataset(name)
    if split is None:
        if len(ds.splits) > 1:
            raise DataError(f"{name} has splits {', '.join(ds.splits)}: pass --split")
        split = next(iter(ds.splits))
    records = convert_files(ds, [path])
    return [{"name": name, "split": split,
             **write_split(dest, ds, split, records, f"imported from {path}", "", str(path))}]


def fetch(name: str, dest: Path) -> list[dict]:
    """Download every split of `name` from the Hugging Face hub into `dest` (needs `datasets` and
    network access to the hub)."""
    ds = dataset(name)
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError("fetching from the hub needs the `datasets` package: pip install datasets") from None
    entries = []
    for split in ds.splits:
        try:
            rows = load_dataset(ds.hub, ds.hub_config, split=split)
        except Exception as err:  # offline, hub moved, auth: the message says what happened
            hub = ds.hub + (f" ({ds.hub_config})" if ds.hub_config else "")
            raise DataError(f"could not fetch {hub} split {split} from the hub: "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                            f"`harness data import` takes local files instead") from None
        records = from_hub_records(ds, [dict(r) for r in rows])
        entries.append({"name": name, "split": split,
                        **write_split(dest, ds, split, records, f"hub {ds.hub} {ds.hub_config or ''}".strip(), "",
                                      f"{ds.hub}:{split}")})
    return entries


# ---------------------------------------------------------------- the Llama-2 tokenizer

def llama2_tokenizer_from_js(path: Path):
    """The Llama-2 32k tokenizer as a `tokenizers` Tokenizer, rebuilt from the vocabulary (in id
    order) and merges (in priority order) that the npm package llama-tokenizer-js ships inside
    `llama-tokenizer.js` (MIT). The pipeline is that of Meta's HF conversion: prepend '▁', spaces
    to '▁', BPE with byte fallback; decoding undoes it. <unk>, <s>, </s> stay plain vocabulary
    entries, not added tokens, so text that contains them is encoded literally, as SentencePiece
    does (WikiText is full of '<unk>')."""
    import base64
    import re

    import numpy as np
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    source = Path(path).read_text(encoding="utf-8")
    found = {k: re.search(rf'^const llama_{k} = "([A-Za-z0-9+/=]+)"', source, re.M)
             for k in ("vocab_base64", "merges_binary")}
    if not all(found.values()):
        raise DataError(f"{path}: not llama-tokenizer.js (no llama_vocab_base64 / llama_merges_binary)")
    vocab = base64.b64decode(found["vocab_base64"].group(1)).decode("utf-8").split("\n")
    pairs = np.frombuffer(base64.b64decode(found["merges_binary"].group(1)), dtype="<u2").reshape(-1, 2)
    if len(vocab) != 32000:
        raise DataError(f"{path}: expected the 32000-token Llama-2 vocabulary, found {len(vocab)}")
    model = models.BPE(vocab={tok: i for i, tok in enumerate(vocab)},
                       merges=[(vocab[a], vocab[b]) for a, b in pairs.tolist()],
                       unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    if any("\n" in t for t in vocab):
        raise DataError(f"{path}: a vocabulary entry contains a newline; the newline split below would change ids")
    # No entry contains a newline, so no merge crosses one: BPE on the lines separately gives the
    # same ids as on the whole text, and is faster on long documents.
    tok.pre_tokenizer = pre_tokenizers.Split("\n", behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def import_tokenizer(path: Path, dest: Path) -> dict:
    """Store the Llama-2 tokenizer from llama-tokenizer.js as `<dest>/tokenizers/llama2/tokenizer.json.gz`."""
    tok = llama2_tokenizer_from_js(path)
    data = tok.to_str().encode("utf-8")
    target = dest / "tokenizers" / "llama2" / "tokenizer.json.gz"
    atomic_write_bytes(target, gzip.compress(data, compresslevel=9, mtime=0))
    entry = {"file": str(target.relative_to(dest)), "vocab_size": tok.get_vocab_size(), "sha256": sha256(data),
             "origin": f"npm llama-tokenizer-js ({Path(path).name}), vocabulary and merges of Meta's Llama-2 "
                       f"tokenizer", "license": "Llama 2 Community License (vocabulary); MIT (llama-tokenizer-js)"}
    update_manifest(dest, lambda m: m.setdefault("tokenizers", {}).__setitem__("llama2", entry))
    return {"name": "llama2", **entry}


# ---------------------------------------------------------------- tokenizers trained here

EOT = "<|endoftext|>"


def train_bpe(corpus: str, vocab_size: int, heldout_fraction: float = 0.05):
    """A byte-level BPE (GPT-2's pre-tokenizer and byte alphabet, so every text encodes, with no
    unknown token; one special token `<|endoftext|>` that ends documents) trained with `tokenizers`
    on the TRAINING documents of a corpus only: the held-out split (`harness.data.heldout_split`,
    by content) is fixed before any tokenizer exists, so the tokenizer never saw the text that
    measures the models. A vocabulary this small keeps the embeddings a small share of small models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from harness.data import heldout_texts
    if vocab_size < 512:
        raise DataError(f"a BPE vocabulary of {vocab_size} is smaller than its 256 byte symbols plus merges; "
                        f"use --vocab-size 512 or more")
    train_docs, _ = heldout_texts(corpus, heldout_fraction)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_docs, trainer=trainer, length=len(train_docs))
    return tok, len(train_docs)


def store_bpe(corpus: str, vocab_size: int, name: str, dest: Path) -> dict:
    """Train `train_bpe` and store it as `<dest>/tokenizers/<name>/tokenizer.json.gz`, recorded in
    the manifest with the corpus, vocabulary size and the documents it was trained on."""
    tok, documents = train_bpe(corpus, vocab_size)
    data = tok.to_str().encode("utf-8")
    target = dest / "tokenizers" / name / "tokenizer.json.gz"
    atomic_write_bytes(target, gzip.compress(data, compresslevel=9, mtime=0))
    entry = {"file": str(target.relative_to(dest)), "vocab_size": tok.get_vocab_size(), "sha256": sha256(data),
             "origin": f"byte-level BPE trained with `tokenizers` on the {documents:,} training documents of "
                       f"corpus {corpus} (held-out split excluded): harness data train-tokenizer --corpus {corpus} "
                       f"--vocab-size {vocab_size} --name {name}",
             "license": f"derived from corpus {corpus} (merge statistics of its training split; see that corpus's "
                        f"licenses)"}
    update_manifest(dest, lambda m: m.setdefault("tokenizers", {}).__setitem__(name, entry))
    return {"name": name, **entry}


# ---------------------------------------------------------------- corpora and tokenizers in the manifest

def record_corpus(name: str, dest: Path = REPO_DATA, tokenizer: str | None = "llama2") -> dict:
    """Record `<dest>/corpora/<name>/` in `<dest>/MANIFEST.json`: per-file sha256, bytes and
    documents, and the corpus size in tokens of `tokenizer` (which tokenizes it once, cached)."""
    folder = dest / "corpora" / name
    files = {}
    for path in files_in(folder):
        files[path.name] = {"sha256": sha256(path.read_bytes()), "bytes": path.stat().st_size,
                            "text_bytes": len(read_decompressed(path)), "documents": len(read_documents(path))}
    if not files:
        raise DataError(f"{folder}: no corpus files (.txt/.jsonl/.parquet, optionally .gz/.xz)")
    entry = {"folder": str(folder.relative_to(dest)), "files": files,
             "documents": sum(f["documents"] for f in files.values())}
    if tokenizer:
        train, held = prepare_streams(str(folder), get_tokenizer(tokenizer))
        entry["tokens"] = {tokenizer: {"train": len(train.tokens), "heldout": len(held.tokens)}}
    update_manifest(dest, lambda m: m.setdefault("corpora", {}).__setitem__(name, entry))
    return entry


# ---------------------------------------------------------------- command line (`harness data ...`)

def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _where(path: Path) -> str:
    """A path relative to the working directory when it is inside it (short table cells)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_list(console) -> None:
    """Every dataset the tasks need (present or missing, count vs official, size, checksum, path),
    then the tokenizers and the corpora."""
    from rich.table import Table

    manifest = load_manifest()
    console.print("lookup order: " + " > ".join(_where(r) for r in data_roots()), highlight=False)
    table = Table(title="evaluation sets")
    for col in ("dataset", "split", "status", "n", "official", "size", "sha256", "where"):
        table.add_column(col, overflow="fold")
    missing = []
    for st in statuses():
        if st.path is None:
            ds = dataset(st.name)
            missing.append(st.name)
            table.add_row(st.name, st.split, "[red]missing[/red]", "-", str(st.official), "-", "-",
                          f"hub {ds.hub}" + (f" {ds.hub_config}" if ds.hub_config else ""))
            continue
        flag = "[green]ok[/green]" if not st.problem else f"[yellow]{st.problem}[/yellow]"
        table.add_row(st.name, st.split, flag, str(st.count), str(st.official), _size(st.path.stat().st_size),
                      st.sha256[:8], _where(st.path))
    console.print(table)
    if missing:
        console.print(f"missing: {', '.join(dict.fromkeys(missing))}; get them with `harness data fetch NAME` "
                      f"(online) or `harness data import FILE --name NAME [--split SPLIT]`", highlight=False)
    other = Table(title="tokenizers and pretraining corpora")
    for col in ("name", "status", "documents", "tokens (llama2)", "size", "where"):
        other.add_column(col, overflow="fold")
    for name, entry in manifest.get("tokenizers", {}).items():
        try:
            tok = get_tokenizer(name)
            other.add_row(f"tokenizer {name}", "[green]ok[/green]", f"vocab {tok.vocab_size}", "-",
                          _size(tok.path.stat().st_size), _where(tok.path))
        except DataError:
            other.add_row(f"tokenizer {name}", "[red]missing[/red]", f"vocab {entry['vocab_size']}", "-", "-",
                          "harness data import PATH/llama-tokenizer-js")
    for name in [*manifest.get("corpora", {}), *HUB_CORPORA]:
        entry = manifest.get("corpora", {}).get(name, {})
        try:
            files = corpus_files(name)
        except DataError:
            files = []
        tokens = entry.get("tokens", {}).get("llama2")
        other.add_row(f"corpus {name}", "[green]ok[/green]" if files else "[red]missing[/red]",
                      f"{entry['documents']:,}" if entry else "-", f"{sum(tokens.values()):,}" if tokens else "-",
                      _size(sum(f.stat().st_size for f in files)) if files else "-",
                      _where(files[0].parent) if files else f"harness data fetch {name} --documents N")
    console.print(other)


def verify() -> list[str]:
    """Problems found: splits whose count differs from the official size or whose sha256 differs
    from data/MANIFEST.json, and tokenizer or corpus files that differ from it."""
    manifest = load_manifest()
    problems = [f"{st.name}/{st.split}: {st.problem}" for st in statuses() if st.path and st.problem]
    for name, entry in manifest.get("tokenizers", {}).items():
        path = next((r / entry["file"] for r in data_roots() if (r / entry["file"]).is_file()), None)
        if path and sha256(read_stored(path)) != entry["sha256"]:
            problems.append(f"tokenizer {name}: {path} differs from data/MANIFEST.json")
    for name, entry in manifest.get("corpora", {}).items():
        folder = REPO_DATA / entry["folder"]
        for file, meta in entry["files"].items():
            path = folder / file
            if path.is_file() and sha256(path.read_bytes()) != meta["sha256"]:
                problems.append(f"corpus {name}: {path} differs from data/MANIFEST.json")
    return problems


def run_command(args, console) -> None:
    """`harness data list|fetch|verify|import|train-tokenizer` (argparse namespace from harness.cli)."""
    if args.data_command == "list":
        cmd_list(console)
    elif args.data_command == "verify":
        problems = verify()
        present = sum(1 for st in statuses() if st.path)
        for p in problems:
            console.print(f"[red]x[/red] {p}", highlight=False)
        if problems:
            raise DataError(f"{len(problems)} problem(s) in the mirror (see above); re-import or re-fetch those "
                            f"datasets")
        console.print(f"ok: {present} splits match the official counts and their MANIFEST.json; tokenizers and "
                      f"corpora match data/MANIFEST.json")
    elif args.data_command == "fetch":
        dest = Path(args.to) if args.to else user_data_dir()
        for name in args.names:
            if name in HUB_CORPORA:
                if not args.documents:
                    raise DataError(f"fetching corpus {name} needs --documents N (how many to stream)")
                folder = fetch_corpus(name, args.documents, dest,
                                      progress=lambda d, n: console.print(f"{name}: {d:,}/{n:,} documents"))
                console.print(f"{name}: {folder}")
                continue
            for e in fetch(name, dest):
                console.print(f"{name}/{e['split']}: {e['count']} examples -> {dest / e['file']}")
    elif args.data_command == "train-tokenizer":
        dest = Path(args.to) if args.to else user_data_dir()
        e = store_bpe(args.corpus, args.vocab_size, args.name, dest)
        console.print(f"tokenizer {e['name']}: vocabulary {e['vocab_size']} -> {dest / e['file']}; use it with "
                      f"--set train.tokenizer={e['name']} --set model.vocab_size={e['vocab_size']}", highlight=False)
    elif args.data_command == "import":
        dest = Path(args.to) if args.to else user_data_dir()
        for e in import_path(Path(args.path), dest, args.name, args.split):
            what = f"{e['name']}/{e['split']}: {e['count']} examples (official {e['official']})" if "split" in e \
                else f"tokenizer {e['name']}: vocabulary {e['vocab_size']}"
            console.print(f"{what} -> {dest / e['file']}")
