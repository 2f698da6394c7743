"""Filling the mirror: evaluation sets imported from local files (the hub's own files, the authors'
releases, llm-foundry's ICL files, the tokenized WikiText-2 pages) or fetched from the hub, each
converted to the hub schema and recorded in MANIFEST.json; the Llama-2 tokenizer rebuilt from
llama-tokenizer-js; a byte-level BPE trained on a corpus's training documents; a corpus's counts.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.config import first_line
from harness.data.corpus import (
    files_in,
    jsonl_lines,
    read_decompressed,
    read_documents,
    read_parquet,
    split_wikitext,
)
from harness.data.mirror import (
    CATALOGUE,
    REPO_DATA,
    Dataset,
    count_lines,
    dataset,
    load_manifest,
    read_stored,
    sha256,
    stored_file,
    to_jsonl,
)
from harness.data.paths import DataError, data_roots
from harness.data.streams import prepare_streams
from harness.data.tokenizer import get_tokenizer, trained_tokenizer_path
from harness.files import atomic_write_bytes

# ---------------------------------------------------------------- converters (raw files -> hub schema)


def read_text(path: Path) -> str:
    """A file's text (gunzipped for .gz): bytes that are not UTF-8 are a DataError naming the file
    and where, since every format read here is UTF-8 text."""
    data = read_stored(path, fix="compress it again with gzip, or drop the .gz suffix if it is not compressed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); pass a UTF-8 "
                        f"JSON/JSONL/txt file (or parquet with a .parquet suffix)") from None


def read_records(path: Path) -> list[dict]:
    """Records of a JSON list, JSONL (optionally .gz) or parquet file."""
    if path.suffix == ".parquet":  # values keep their parquet types: check_record refuses a null or a number as text
        return read_parquet(path, "pass a parquet file, or the JSON/JSONL file under its own suffix").to_pylist()
    text = read_text(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        records = []
        for number, line in enumerate(jsonl_lines(text), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not JSON Lines (line {number} column {err.colno}: {err.msg})") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    return data


def _coerce(ds: Dataset, key: str, value):
    """Digit strings become ints where the hub has an int, and an int label becomes the hub's string
    label (raw files store labels either way). An int in any other string field is left for
    check_record to refuse: as text it would be the number's digits."""
    kind = ds.schema[key]
    if kind == "str" and ds.answer and key == ds.answer.field and isinstance(value, int) \
            and not isinstance(value, bool):
        return str(value)
    if kind == "int" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def from_hub_records(ds: Dataset, records: list[dict]) -> list[dict]:
    """Records already in the hub schema (or a raw release with the same fields and more): keep the
    schema's fields, cast int/str labels to the hub's type. A record that lacks one of them is passed
    on whole, so that check_record's error names the fields it does have."""
    return [{k: _coerce(ds, k, r[k]) for k in ds.schema} if isinstance(r, dict) and set(ds.schema) <= set(r)
            else r for r in records]


def from_labels_file(ds: Dataset, records: list[dict], labels: list[str]) -> list[dict]:
    """Authors' releases (PIQA, SIQA) keep labels in a separate `*-labels.lst`, one per line."""
    if len(labels) != len(records):
        raise DataError(f"{ds.name}: {len(records)} records but {len(labels)} labels")
    return from_hub_records(ds, [{**r, "label": lab.strip()} if isinstance(r, dict) else r
                                 for r, lab in zip(records, labels)])


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
        return from_wikitext_tokens(ds, read_text(main))
    records = read_records(main)
    labels = files[1] if len(files) > 1 else main.with_name(main.name.split(".")[0] + "-labels.lst")
    if labels.is_file():
        return from_labels_file(ds, records, read_text(labels).splitlines())
    first = records[0] if records else {}
    if isinstance(first, dict) and {"query", "context_options", "context"} & set(first) \
            and not set(ds.schema) <= set(first):
        if ds.name not in FOUNDRY_CONVERTERS:
            raise DataError(f"{main}: llm-foundry's ICL format has no converter to {ds.name} (its "
                            f"choices or labels are not those of {ds.hub})")
        try:
            return FOUNDRY_CONVERTERS[ds.name](ds, records)
        except (KeyError, IndexError, TypeError, ValueError) as err:  # a field missing or of the wrong kind
            raise DataError(f"{main}: not llm-foundry's ICL format for {ds.name} ({type(err).__name__}: {err}); "
                            f"pass the file as llm-foundry ships it, or records in the hub schema") from None
    return from_hub_records(ds, records)


def checked_split(ds: Dataset, split: str, records: list[dict], where: str, dest: Path, force: bool) -> bytes:
    """One split's canonical JSONL, every record checked: done for all the splits of an import
    before any is written, so bad input leaves the mirror as it was. Unless `force`, a split whose
    size is not the official one (a truncated or partial file) and one that would replace a
    different split stored in `dest` are refused too."""
    if split not in ds.splits:
        raise DataError(f"{ds.name} has splits {', '.join(ds.splits)}, not {split!r}")
    refuse_shadowed(ds, split, dest)
    data = to_jsonl(ds, records, where)
    if not data:
        raise DataError(f"{where}: no records; {ds.name} {split} is {ds.splits[split]} records in the schema of hub "
                        f"{ds.hub}, {json.dumps(ds.schema)}, one JSON object a line (or a JSON list, or parquet "
                        f"rows), or the raw release data/README.md names; pass a file that holds them, or run "
                        f"`harness data fetch {ds.name}` where the hub is reachable")
    if not force:
        count, official = count_lines(data), ds.splits[split]
        if count != official:
            raise DataError(f"{where}: {count} examples, but {ds.name} {split} has {official} (the official "
                            f"size): a truncated or partial file? Pass the complete split, or --force to store it "
                            f"anyway")
        refuse_replacing(dest / ds.name / f"{split}.jsonl.gz", data, f"{ds.name} {split}")
    return data


def refuse_shadowed(ds: Dataset, split: str, dest: Path) -> None:
    """A DataError when a data root looked up before `dest` holds the split already: the tasks would
    go on reading that copy, and the one imported into `dest` would never be used."""
    roots = [root.resolve() for root in data_roots()]
    first = stored_file(ds.name, split)
    if dest.resolve() not in roots or first is None:
        return
    holder = first.parent.parent.resolve()
    if roots.index(holder) < roots.index(dest.resolve()):
        raise DataError(f"{ds.name} {split} is read from {first}, which is looked up before {dest}: a copy imported "
                        f"there would never be used; pass --to {holder} (with --force to replace it), or set "
                        f"HARNESS_DATA to a mirror of your own")


def refuse_replacing(target: Path, data: bytes, what: str) -> None:
    """A DataError when `target` holds readable content other than `data`: data already in the
    mirror is only replaced on request (--force). A damaged file is not kept: replacing it is the fix."""
    if not target.is_file():
        return
    try:
        stored = read_stored(target)
    except DataError:
        return
    if stored != data:
        raise DataError(f"{what} already exists as {target}, with other content; pass --force to replace it, or "
                        f"--to another folder")


def write_split(dest: Path, ds: Dataset, split: str, data: bytes, origin: str, note: str) -> dict:
    """Store one split (`checked_split`'s bytes) as `<dest>/<name>/<split>.jsonl.gz` and record it in
    `<dest>/MANIFEST.json`."""
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
    from harness.files import atomic_write_text
    manifest = load_manifest(dest / "MANIFEST.json")
    change(manifest)
    manifest = {k: dict(sorted(v.items())) for k, v in sorted(manifest.items())}
    atomic_write_text(dest / "MANIFEST.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def import_path(path: Path, dest: Path, name: str | None = None, split: str | None = None,
                force: bool = False) -> list[dict]:
    """Import a file (`name` required), a folder of known raw releases, or the npm package
    llama-tokenizer-js (its folder or `llama-tokenizer.js`) into `dest`; returns what was written.
    `force` stores splits of another size than the official one and replaces different stored data."""
    path = Path(path)
    js = path / "llama-tokenizer.js" if path.is_dir() else path
    if js.name == "llama-tokenizer.js" and js.is_file():
        return [import_tokenizer(js, dest, force)]
    if path.is_dir() and name is None:
        found = [lay for lay in RAW_LAYOUTS if all((path / f).is_file() for f in lay.files)]
        if not found:
            raise DataError(f"{path}: no known raw release found (expected e.g. "
                            f"{', '.join(RAW_LAYOUTS[0].files)}); import single files with --name NAME")
        checked = []
        for lay in found:
            ds = dataset(lay.name)
            records = convert_files(ds, [path / f for f in lay.files])
            checked.append((lay, ds, checked_split(ds, lay.split, records, str(path / lay.files[0]), dest, force)))
        return [{"name": lay.name, "split": lay.split, **write_split(dest, ds, lay.split, data, lay.origin, lay.note)}
                for lay, ds, data in checked]
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
    data = checked_split(ds, split, convert_files(ds, [path]), str(path), dest, force)
    return [{"name": name, "split": split, **write_split(dest, ds, split, data, f"imported from {path}", "")}]


def fetch(name: str, dest: Path, force: bool = False) -> list[dict]:
    """Download every split of `name` from the Hugging Face hub into `dest` (needs `datasets` and
    network access to the hub); `force` as for `import_path`."""
    ds = dataset(name)
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError("fetching from the hub needs the `datasets` package: pip install datasets") from None
    checked = {}
    for split in ds.splits:
        try:
            rows = load_dataset(ds.hub, ds.hub_config, split=split)
        except Exception as err:  # offline, hub moved, auth: the message says what happened
            hub = ds.hub + (f" ({ds.hub_config})" if ds.hub_config else "")
            raise DataError(f"could not fetch {hub} split {split} from the hub: "
                            f"{first_line(err) or type(err).__name__}; "
                            f"`harness data import` takes local files instead") from None
        checked[split] = checked_split(ds, split, from_hub_records(ds, [dict(r) for r in rows]), f"{ds.hub}:{split}",
                                       dest, force)
    origin = f"hub {ds.hub} {ds.hub_config or ''}".strip()
    return [{"name": name, "split": split, **write_split(dest, ds, split, data, origin, "")}
            for split, data in checked.items()]


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
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
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


def import_tokenizer(path: Path, dest: Path, force: bool = False) -> dict:
    """Store the Llama-2 tokenizer from llama-tokenizer.js as `<dest>/tokenizers/llama2/tokenizer.json.gz`;
    another tokenizer stored under that name is replaced only with `force`."""
    tok = llama2_tokenizer_from_js(path)
    data = tok.to_str().encode("utf-8")
    target = dest / "tokenizers" / "llama2" / "tokenizer.json.gz"
    if not force:
        refuse_replacing(target, data, "tokenizer llama2")
    atomic_write_bytes(target, gzip.compress(data, compresslevel=9, mtime=0))
    entry = {"file": str(target.relative_to(dest)), "vocab_size": tok.get_vocab_size(), "sha256": sha256(data),
             "origin": f"npm llama-tokenizer-js ({Path(path).name}), vocabulary and merges of Meta's Llama-2 "
                       f"tokenizer", "license": "Llama 2 Community License (vocabulary); MIT (llama-tokenizer-js)"}
    update_manifest(dest, lambda m: m.setdefault("tokenizers", {}).__setitem__("llama2", entry))
    return {"name": "llama2", **entry}


# ---------------------------------------------------------------- tokenizers trained here

EOT = "<|endoftext|>"
# `tokenizers` reserves memory for the whole vocabulary before training (about 45 bytes an entry):
# far larger sizes abort the process. 2**20 is four times the largest vocabularies in use (256k).
MAX_BPE_VOCAB = 1 << 20
# The 256 byte symbols and <|endoftext|> take 257 entries: under 512, fewer than 255 merges are left, little
# more than the byte tokenizer (train.tokenizer=bytes) gives with no training.
MIN_BPE_VOCAB = 512


def train_bpe(corpus: str, vocab_size: int, heldout_fraction: float = 0.05):
    """A byte-level BPE (GPT-2's pre-tokenizer and byte alphabet, so every text encodes, with no
    unknown token; one special token `<|endoftext|>` that ends documents) trained with `tokenizers`
    on the TRAINING documents of a corpus only: the held-out split (`harness.data.corpus.heldout_split`,
    by content) is fixed before any tokenizer exists, so the tokenizer never saw the text that
    measures the models. A vocabulary this small keeps the embeddings a small share of small models.
    Training stops early when no pair of tokens occurs twice more: a result under MIN_BPE_VOCAB (a
    corpus far too small) is refused as a request for one would be, and not stored."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from harness.data.corpus import heldout_texts
    if vocab_size < MIN_BPE_VOCAB:
        raise DataError(f"a BPE vocabulary of {vocab_size} is smaller than its 256 byte symbols plus merges; "
                        f"use --vocab-size {MIN_BPE_VOCAB} or more")
    if vocab_size > MAX_BPE_VOCAB:
        raise DataError(f"--vocab-size {vocab_size} is over {MAX_BPE_VOCAB:,}: `tokenizers` reserves memory for the "
                        f"whole vocabulary before training, and the largest vocabularies in use are about 256k; use "
                        f"{MIN_BPE_VOCAB} to {MAX_BPE_VOCAB}")
    train_docs, _ = heldout_texts(corpus, heldout_fraction)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_docs, trainer=trainer, length=len(train_docs))
    if tok.get_vocab_size() < MIN_BPE_VOCAB:
        raise DataError(f"corpus {corpus} gave a vocabulary of only {tok.get_vocab_size()}, under the minimum of "
                        f"{MIN_BPE_VOCAB}: its training split ({len(train_docs):,} documents) holds too few pairs seen "
                        f"twice for more merges; train on a larger corpus, or use train.tokenizer=bytes")
    return tok, len(train_docs)


def store_bpe(corpus: str, vocab_size: int, name: str, dest: Path, force: bool = False) -> dict:
    """Train `train_bpe` and store it as `<dest>/tokenizers/<name>/tokenizer.json.gz`, recorded in
    the manifest with the corpus, vocabulary size and the documents it was trained on. The name is
    checked first (`trained_tokenizer_path`; a tokenizer already stored there is replaced only with
    `force`): training is long, and a name that train.tokenizer cannot load the result by makes it useless."""
    target = trained_tokenizer_path(name, dest)
    if target.is_file() and not force:
        raise DataError(f"tokenizer {name} already exists as {target}; choose another --name, or pass --force to "
                        f"replace it")
    tok, documents = train_bpe(corpus, vocab_size)
    data = tok.to_str().encode("utf-8")
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
