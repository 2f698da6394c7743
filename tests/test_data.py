"""The data mirror: converters give the hub schemas lm-eval reads, import/verify/require on fixtures,
the committed mirror matches the official split sizes, the Llama-2 tokenizer reproduces the
reference encoder, and packed token streams keep document boundaries."""

import gzip
import json
import lzma
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.data import corpus, importers, mirror, streams, tokenizer
from harness.data.paths import DataError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LM_EVAL_TASKS = {"piqa": "piqa/piqa.yaml", "arc_easy": "arc/arc_easy.yaml", "boolq": "super_glue/boolq/default.yaml",
                 "lambada_openai": "lambada/lambada_openai.yaml", "winogrande": "winogrande/default.yaml",
                 "hellaswag": "hellaswag/hellaswag.yaml", "social_iqa": "siqa/siqa.yaml"}


@pytest.fixture
def mirror_dir(tmp_path, monkeypatch):
    """An empty mirror as $HARNESS_DATA (the only root searched), filled from the fixtures (forced:
    they hold a few examples, not the official counts)."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "mirror"))
    importers.import_path(FIXTURES, tmp_path / "mirror", force=True)
    importers.import_path(FIXTURES / "hellaswag_format_fixture.jsonl", tmp_path / "mirror", "hellaswag", force=True)
    importers.import_path(FIXTURES / "siqa_format_fixture.jsonl", tmp_path / "mirror", "social_iqa", force=True)
    return tmp_path / "mirror"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_import_fixtures_gives_hub_schemas(mirror_dir):
    manifest = json.loads((mirror_dir / "MANIFEST.json").read_text())
    assert set(manifest["datasets"]) == {"piqa", "arc_easy", "arc_challenge", "boolq", "winogrande",
                                         "lambada_openai", "wikitext_2_v1", "hellaswag", "social_iqa"}
    for name in manifest["datasets"]:
        ds = mirror.CATALOGUE[name]
        for split, path in mirror.require(name).items():
            assert path.suffix == ".jsonl"
            rows = records(path)
            assert len(rows) == manifest["datasets"][name]["splits"][split]["count"]
            for row in rows:
                assert list(row) == list(ds.schema)  # same fields, hub order
                mirror.check_record(ds, row, name)   # same types
    piqa = records(mirror.require("piqa")["validation"])
    assert piqa[0]["goal"].startswith("How do I ready a guinea pig cage") and piqa[0]["label"] == 0
    assert [r["label"] for r in records(mirror.require("hellaswag")["validation"])] == ["2", "0"]
    assert [r["label"] for r in records(mirror.require("social_iqa")["validation"])] == ["1", "2"]
    assert [len(p["page"]) > 0 for p in records(mirror.require("wikitext_2_v1")["test"])] == [True, True]


def test_arc_padding_is_removed_and_answer_kept(mirror_dir):
    raw = records(FIXTURES / "llm-foundry-local-data" / "arc_easy.jsonl")
    rows = records(mirror.require("arc_easy")["test"])
    for r, row in zip(raw, rows):
        labels = row["choices"]["label"]
        assert row["choices"]["text"][labels.index(row["answerKey"])] == r["choices"][r["gold"]]
        assert len(set(row["choices"]["text"])) == len(row["choices"]["text"])
    assert [len(r["choices"]["text"]) for r in rows] == [4, 4, 3]


def test_winogrande_conversion_reproduces_lm_eval_prompts(mirror_dir):
    """lm-eval's own winogrande functions on the converted rows give llm-foundry's contexts back."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks.winogrande import preprocess_winogrande as wg
    raw = records(FIXTURES / "llm-foundry-local-data" / "winogrande.jsonl")
    for r, row in zip(raw, records(mirror.require("winogrande")["validation"])):
        assert wg.doc_to_choice(row) == r["context_options"]
        assert wg.doc_to_target(row) == r["continuation"]
        assert wg.doc_to_text(row) == r["gold"]


class _FunctionTag(str):
    pass


def _task_yaml(rel: str) -> dict:
    """An lm-eval task YAML (with its `include:`), `!function` entries kept as markers."""
    import lm_eval
    root = Path(lm_eval.__file__).parent / "tasks"
    loader = type("L", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda ld, node: _FunctionTag(ld.construct_scalar(node)))
    cfg = yaml.load((root / rel).read_text(), Loader=loader)
    if "include" in cfg:
        cfg = {**_task_yaml(str(Path(rel).parent / cfg.pop("include"))), **cfg}
    return cfg


@pytest.mark.parametrize("name", sorted(LM_EVAL_TASKS))
def test_lm_eval_task_templates_render_on_mirror_records(mirror_dir, name):
    """The built-in task's own templates, rendered with lm-eval's jinja helper on our records."""
    pytest.importorskip("lm_eval")
    from lm_eval.utils import apply_template
    cfg = _task_yaml(LM_EVAL_TASKS[name])
    assert cfg["dataset_path"] == mirror.CATALOGUE[name].hub
    row = records(next(iter(mirror.require(name).values())))[0]
    if isinstance(cfg.get("process_docs"), _FunctionTag):  # hellaswag: its own process_docs first
        from datasets import Dataset
        from lm_eval.tasks.hellaswag import utils
        row = utils.process_docs(Dataset.from_list([row]))[0]
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        template = cfg.get(key)
        if isinstance(template, _FunctionTag) or not isinstance(template, str):
            continue
        rendered = row[template] if template in row else apply_template(template, row)
        assert rendered not in ("", None), (name, key)
        if key == "doc_to_target" and "choice" in str(cfg.get("doc_to_choice", "")):
            assert int(rendered) >= 0


def test_require_missing_names_dataset_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        mirror.require("hellaswag")
    msg = str(err.value)
    assert "hellaswag" in msg and str(tmp_path / "hellaswag") in msg and "harness data fetch hellaswag" in msg
    assert mirror.available()["hellaswag"] is False
    with pytest.raises(DataError, match="unknown dataset"):
        mirror.require("hellaswag_made_up")


def test_import_rejects_wrong_schema_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"goal": "g", "sol1": "a"}) + "\n")
    with pytest.raises(DataError, match="piqa records need fields"):
        importers.import_path(bad, tmp_path / "mirror", "piqa")
    assert not (tmp_path / "mirror" / "piqa").exists()


def test_verify_detects_a_modified_file(mirror_dir):
    assert [st for st in mirror.statuses() if st.path and "sha256" in st.problem] == []
    path = mirror_dir / "boolq" / "validation.jsonl.gz"
    rows = [json.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]
    rows[0]["label"] = 1 - rows[0]["label"]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert any(p.startswith("boolq/validation") and "sha256" in p for p in mirror.verify())


def test_cli_data_list_verify_import(mirror_dir, tmp_path, capsys):
    from harness.cli import main
    assert main(["data", "list"]) == 0
    assert "lookup order" in capsys.readouterr().out
    present = {(st.name, st.split) for st in mirror.statuses() if st.path}
    assert ("hellaswag", "validation") in present and ("wikitext", "test") not in present
    assert main(["data", "verify"]) == 2  # fixtures hold 3 items, not the official counts
    assert "official" in capsys.readouterr().out
    assert main(["data", "import", str(tmp_path / "nowhere.jsonl"), "--name", "piqa"]) == 2
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.skipif(not (mirror.REPO_DATA / "MANIFEST.json").is_file(), reason="no committed mirror")
def test_committed_mirror_matches_official_counts_and_manifest(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    manifest = mirror.load_manifest()
    assert {"piqa", "arc_easy", "arc_challenge", "boolq", "winogrande", "lambada_openai"} <= set(manifest["datasets"])
    for name, entry in manifest["datasets"].items():
        for split, meta in entry["splits"].items():
            st = mirror.status(name, split)
            assert st.path is not None and st.path.is_relative_to(mirror.REPO_DATA)
            assert (st.count, st.sha256) == (mirror.CATALOGUE[name].splits[split], meta["sha256"]), (name, split)
    assert mirror.verify() == []
    from harness.cli import main
    assert main(["data", "verify"]) == 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (raw provenance files) is absent")
def test_committed_mirror_is_reproducible_from_the_raw_files(tmp_path):
    """Re-importing ../shared/data gives byte-identical splits (same sha256) as the committed ones."""
    entries = importers.import_path(SHARED, tmp_path)
    committed = mirror.load_manifest()["datasets"]
    assert entries
    for e in entries:
        assert e["count"] == e["official"], e
        assert e["sha256"] == committed[e["name"]]["splits"][e["split"]]["sha256"], e


def test_llama2_tokenizer_matches_reference_encoder_and_round_trips():
    tok = tokenizer.get_tokenizer("llama2")
    assert (tok.vocab_size, tok.eos_id) == (32000, 2)
    cases = json.loads((FIXTURES / "llama2_js_ids.json").read_text(encoding="utf-8"))
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"][:40]
        assert tok.decode(tok.encode(case["text"])) == case["text"]
    assert tok.encode_batch([c["text"] for c in cases]) == [c["ids"] for c in cases]


def _write_corpus(folder: Path, docs: list[str]) -> None:
    folder.mkdir(parents=True)
    payload = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    (folder / "part.jsonl.xz").write_bytes(lzma.compress(payload))


def test_streams_keep_document_boundaries_split_and_cache(tmp_path, monkeypatch):
    text = (FIXTURES / "wikitext-2" / "test.txt").read_text() + (FIXTURES / "wikitext-2" / "valid.txt").read_text()
    docs = [s for s in re.split(r"(?<=\.) ", text) if s.strip()]
    assert len(docs) >= 20
    _write_corpus(tmp_path / "corpus", docs)
    tok = tokenizer.ByteTokenizer()
    train, held = streams.prepare_streams(str(tmp_path / "corpus"), tok, heldout_fraction=0.1)
    assert train.tokens.dtype == np.uint16 and isinstance(train.tokens, np.memmap)
    n_held = max(1, round(0.1 * len(docs)))
    assert len(held.doc_starts) == n_held and len(train.doc_starts) == len(docs) - n_held
    for stream in (train, held):
        ends = np.append(stream.doc_starts[1:], len(stream.tokens)) - 1
        assert (np.asarray(stream.tokens)[ends] == tok.eos_id).all()
        assert (np.asarray(stream.tokens)[stream.doc_starts[1:] - 1] == tok.eos_id).all()
    got = {tok.decode(held.tokens[a:b]) for a, b in zip(held.doc_starts, np.append(held.doc_starts[1:], len(held.tokens)))}
    by_digest = sorted(set(docs), key=corpus.document_digest)
    assert got == set(by_digest[:n_held])  # the documents of smallest digest, whatever the seed
    window, starts = train.sequence(0, 64)
    assert starts[0] == 0 and all(window[s - 1] == tok.eos_id for s in starts[1:])
    # cached: a second call reads the files without loading documents
    monkeypatch.setattr(streams, "iter_sourced_documents", lambda corpus: pytest.fail("tokenized twice"))
    again, _ = streams.prepare_streams(str(tmp_path / "corpus"), tok, heldout_fraction=0.1)
    assert np.array_equal(again.tokens, train.tokens)


def test_heldout_split_is_per_source_and_by_content(tmp_path):
    """Each source keeps its share of held-out documents; which ones depends on their text only, so
    adding documents to one source or reordering the files does not move the others'."""
    books = [f"book {i}. " * 20 for i in range(40)]
    docs = [f"doc {i}." for i in range(4)]
    folder = tmp_path / "mix"
    folder.mkdir()
    (folder / "books.jsonl").write_text("".join(json.dumps({"text": t, "source": "books"}) + "\n" for t in books))
    (folder / "docs.txt").write_text("\n\n\n".join(docs))
    texts, sources = zip(*corpus.iter_sourced_documents(str(folder)))
    assert sources.count("books") == 40 and sources.count("docs") == 4
    mask = corpus.heldout_split([corpus.document_digest(t) for t in texts], list(sources), 0.05)
    held = {t for t, h in zip(texts, mask) if h}
    assert sum(t in held for t in books) == 2 and sum(t in held for t in docs) == 1
    more = [f"book {i}. " * 20 for i in range(40, 60)] + list(texts)
    mask2 = corpus.heldout_split([corpus.document_digest(t) for t in more], ["books"] * 20 + list(sources), 0.05)
    assert {t for t, h in zip(more, mask2) if h and t in docs} == {t for t in held if t in docs}
    train, held_stream = streams.prepare_streams(str(folder), tokenizer.ByteTokenizer())
    assert held_stream.source_names == ("books", "docs")
    assert sorted(held_stream.doc_sources.tolist()) == [0, 0, 1]
    assert (held_stream.token_sources(0, len(held_stream.tokens)) >= 0).all()
    train_text, held_text = corpus.heldout_texts(str(folder))
    assert set(held_text) == held and len(train_text) == 44 - 3


def test_every_copy_of_a_held_out_text_is_held_out(tmp_path):
    """A text that occurs more than once (boilerplate, a page crawled twice), in one source or in
    several, is held out with all its copies: one left in training would make the held-out loss
    measure memorisation."""
    docs = [f"document {i}. " * 30 for i in range(20)]
    smallest = min(docs, key=corpus.document_digest)
    others = [f"other {i}. " * 30 for i in range(200)]
    below = [t for t in others if corpus.document_digest(t) < corpus.document_digest(smallest)]
    folder = tmp_path / "copies"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in [*docs, smallest]))
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in [below[0], *others[:19], smallest]))
    train_text, held_text = corpus.heldout_texts(str(folder))
    assert held_text.count(smallest) == 3 and smallest not in train_text
    train, held = streams.prepare_streams(str(folder), tokenizer.ByteTokenizer())
    def texts(stream):
        ends = np.append(stream.doc_starts[1:], len(stream.tokens)) - 1
        return [bytes(np.asarray(stream.tokens[a:b], dtype=np.uint8)) for a, b in zip(stream.doc_starts, ends)]
    assert not set(texts(held)) & set(texts(train))


def test_a_corpus_of_more_sources_than_int16_holds_tokenizes(tmp_path):
    """A folder of one-document files has a source per file: 2^15 and more of them must not overflow."""
    folder = tmp_path / "many"
    folder.mkdir()
    n = 2 ** 15 + 2
    (folder / "docs.jsonl").write_text("".join(json.dumps({"text": f"d{i}", "source": f"s{i}"}) + "\n"
                                               for i in range(n)))
    train, held = streams.prepare_streams(str(folder), tokenizer.ByteTokenizer())
    assert len(train.source_names) == n and held.doc_sources.max() < n
    assert sorted([*train.doc_sources.tolist(), *held.doc_sources.tolist()]) == list(range(n))


def test_named_corpus_lookup_and_missing_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    _write_corpus(tmp_path / "corpora" / "mini", ["one document.", "another document."])
    assert list(corpus.iter_documents("mini")) == ["one document.", "another document."]
    with pytest.raises(DataError, match="harness data fetch slimpajama"):
        corpus.corpus_files("slimpajama")


def test_fetch_writes_hub_rows_in_the_same_layout(tmp_path, monkeypatch):
    """The hub path, with `datasets.load_dataset` answering from the HellaSwag-format fixture."""
    datasets = pytest.importorskip("datasets")
    rows = records(FIXTURES / "hellaswag_format_fixture.jsonl")
    asked = []

    def fake_load(path, name=None, split=None, streaming=False):
        asked.append((path, name, split))
        return [{**r, "label": str(r["label"])} for r in rows]
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (entry,) = importers.fetch("hellaswag", tmp_path, force=True)
    assert asked == [("Rowan/hellaswag", None, "validation")]
    assert entry["file"] == "hellaswag/validation.jsonl.gz" and entry["count"] == 2
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert records(mirror.require("hellaswag")["validation"])[0]["endings"] == rows[0]["endings"]

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"could not fetch baber/piqa split validation .*hub unreachable.*harness data import"):
        importers.fetch("piqa", tmp_path)


def test_fetch_corpus_streams_resumable_shards(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    class Stream(list):
        def skip(self, n):
            return Stream(self[n:])
    texts = [f"document number {i}." for i in range(7)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Stream({"text": t} for t in texts))
    folder = corpus.fetch_corpus("slimpajama", 5, tmp_path, shard_docs=2)
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.jsonl.gz", "part-00001.jsonl.gz",
                                                         "part-00002.jsonl.gz"]
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert list(corpus.iter_documents("slimpajama")) == texts[:5]
    corpus.fetch_corpus("slimpajama", 7, tmp_path, shard_docs=2)  # resumes after the 2 full shards
    assert list(corpus.iter_documents("slimpajama"))[-3:] == texts[4:]


# ---------------------------------------------------------------- bad input: one error line, nothing written

def cli_error(argv: list, capsys) -> str:
    """`harness ARGV` refused the project's way: exit 2 and one `error:` line on stderr (a traceback
    would escape main and fail the test); returns that line."""
    from harness.cli import main
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("file, content, problem", [
    ("bad.parquet", b"plain text, not parquet\n", "not a readable parquet file"),
    ("bin.jsonl", b"\xff\xfe\x00", "not UTF-8 text"),
    ("bad.jsonl.gz", b"not gzip", "not a complete gzip file"),
    ("lines.jsonl", b'{"goal": "g"}\n\n{broken\n', "line 3 column 2"),
], ids=["parquet", "utf-8", "gzip", "jsonl"])
def test_import_refuses_unreadable_files(tmp_path, capsys, file, content, problem):
    (tmp_path / file).write_bytes(content)
    err = cli_error(["data", "import", tmp_path / file, "--name", "piqa", "--split", "validation",
                     "--to", tmp_path / "mirror"], capsys)
    assert str(tmp_path / file) in err and problem in err
    assert not (tmp_path / "mirror").exists()


PIQA_ROW = {"goal": "g", "sol1": "a", "sol2": "b", "label": 0}


@pytest.mark.parametrize("name, rows, allowed", [
    ("piqa", [PIQA_ROW, {**PIQA_ROW, "label": 7}], "allowed 0, 1"),
    ("hellaswag", [*records(FIXTURES / "hellaswag_format_fixture.jsonl")[:1],
                   {**records(FIXTURES / "hellaswag_format_fixture.jsonl")[1], "label": "9"}],
     "allowed '0', '1', '2', '3'"),
    ("winogrande", [{"sentence": "s _", "option1": "a", "option2": "b", "answer": "1"},
                    {"sentence": "s _", "option1": "a", "option2": "b", "answer": "0"}], "allowed '1', '2'"),
    ("arc_easy", [{"id": "x", "question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"},
                  {"id": "y", "question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B", "C"]},
                   "answerKey": "C"}], "allowed 'A', 'B'"),
])
def test_import_refuses_labels_outside_the_choices(tmp_path, capsys, name, rows, allowed):
    """lm-eval indexes the choices with the label: out of range, it would crash the evaluation."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = next(iter(mirror.CATALOGUE[name].splits))
    err = cli_error(["data", "import", path, "--name", name, "--split", split, "--to", tmp_path / "mirror"], capsys)
    assert f"{path} record 2" in err and allowed in err
    assert not (tmp_path / "mirror").exists()


def test_folder_import_with_one_bad_release_writes_nothing(tmp_path, capsys):
    """The raw releases are all checked before any is written (piqa comes before arc_easy)."""
    import shutil
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES, raw)
    arc = raw / "llm-foundry-local-data" / "arc_easy.jsonl"
    arc.write_text("".join(json.dumps({**r, "gold": 9}) + "\n" for r in records(arc)))
    err = cli_error(["data", "import", raw, "--to", tmp_path / "mirror", "--force"], capsys)
    assert str(arc) in err and "IndexError" in err
    assert not (tmp_path / "mirror").exists()


def test_import_to_a_path_through_a_file(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("")
    err = cli_error(["data", "import", FIXTURES / "piqa" / "valid.jsonl", "--name", "piqa",
                     "--to", tmp_path / "file.txt" / "sub"], capsys)
    assert f"{tmp_path / 'file.txt'} is a file" in err
    assert (tmp_path / "file.txt").read_text() == ""


def test_train_tokenizer_refuses_names_that_would_not_load_it(tmp_path, capsys, monkeypatch):
    """Checked before training: `bytes` is the built-in tokenizer, an empty or path-like name is no
    train.tokenizer value, a file of that name in the working directory or a tokenizer found first
    would be loaded instead, and a folder outside the lookup roots is never searched."""
    monkeypatch.setattr(importers, "train_bpe", lambda *a: pytest.fail("trained before the name was checked"))
    mirror_dir = tmp_path / "mirror"
    monkeypatch.setenv("HARNESS_DATA", str(mirror_dir))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bpe.json").write_text("{}")
    train = ["data", "train-tokenizer", "--corpus", "bundled", "--vocab-size", "512", "--name"]
    for name, problem in [("bytes", "built-in byte tokenizer"), ("", "a tokenizer name is"), ("../up", "a tokenizer"),
                          ("bpe.json", "would be loaded by train.tokenizer=bpe.json")]:
        assert problem in cli_error([*train, name], capsys)
    assert "set HARNESS_DATA=" in cli_error([*train, "bpe", "--to", tmp_path / "elsewhere"], capsys)
    assert not mirror_dir.exists() and not (tmp_path / "elsewhere").exists()
    shadow = mirror_dir / "tokenizers" / "old" / "tokenizer.json"
    shadow.parent.mkdir(parents=True)
    shadow.write_text("{}")
    assert f"already exists as {shadow}" in cli_error([*train, "old"], capsys)
    assert [p.name for p in shadow.parent.iterdir()] == ["tokenizer.json"]


def test_train_tokenizer_name_loads_the_trained_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    from harness.cli import main
    assert main(["data", "train-tokenizer", "--corpus", "bundled", "--vocab-size", "512", "--name", "bpe"]) == 0
    assert tokenizer.get_tokenizer("bpe").path == tmp_path / "tokenizers" / "bpe" / "tokenizer.json.gz"


def test_a_tokenizer_retrained_under_its_name_gets_new_token_streams(tmp_path, monkeypatch):
    """train-tokenizer --force on another corpus keeps the name and vocabulary size but changes the
    ids: the cached streams of the old tokenizer must not be read back as if they were the new one's."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "mirror"))
    shouted = tmp_path / "shouted"
    shouted.mkdir()
    (shouted / "wiki.txt").write_text(corpus.BUNDLED_TEXT.read_text().upper())
    first_train_doc = min(corpus.heldout_texts("bundled")[0], key=corpus.document_digest)
    from harness.cli import main
    for tokenizer_corpus in ("bundled", str(shouted)):
        assert main(["data", "train-tokenizer", "--corpus", tokenizer_corpus, "--vocab-size", "512", "--name", "bpe",
                     "--force"]) == 0
        tok = tokenizer.get_tokenizer("bpe")
        train, _ = streams.prepare_streams("bundled", tok)
        ids = tok.encode(first_train_doc)
        assert np.asarray(train.tokens[:len(ids)]).tolist() == ids


@pytest.mark.parametrize("file, content", [("garbage.json", b"{garbage"), ("cut.json.gz", b"\x1f\x8b\x08")],
                         ids=["json", "gzip"])
def test_unloadable_tokenizer_file_is_one_error_line(tmp_path, capsys, monkeypatch, file, content):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    (tmp_path / file).write_bytes(content)
    err = cli_error(["train", "--preset", "tiny", "--model", "swat", "--device", "cpu", "--set", "train.tokens=4096",
                     "--set", f"train.tokenizer={tmp_path / file}", "--out", tmp_path / "t"], capsys)
    assert f"tokenizer {tmp_path / file} cannot be loaded" in err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "one.txt").write_text("a single document\n"), "has 1 distinct document(s) (1 in all): too few"),
    (lambda d: (d / "copies.jsonl").write_text('{"text": "a"}\n' * 3), "has 1 distinct document(s) (3 in all)"),
    (lambda d: None, "holds no corpus files"),
    (lambda d: (d / "x.parquet").write_bytes(b"not parquet at all"), "x.parquet: not a readable parquet file"),
    (lambda d: (d / "cut.jsonl.xz").write_bytes(lzma.compress(b'{"text": "a"}\n' * 99)[:40]),
     "cut.jsonl.xz: not a readable xz file"),
    (lambda d: (d / "x.jsonl.xz").write_bytes(bytes(range(256))), "x.jsonl.xz: not a readable xz file"),
    (lambda d: (d / "cut.txt.gz").write_bytes(gzip.compress(b"some text\n\n\n" * 99)[:30]),
     "cut.txt.gz: not a readable gzip file"),
    (lambda d: (d / "n.jsonl").write_text('{"text": "a"}\n{"text": 5}\n'),
     "n.jsonl:2: expected a JSON object with a 'text' field that is a string, got 'text': 5"),
], ids=["one-document", "copies-of-one-document", "empty-folder", "damaged-parquet", "truncated-xz", "not-xz",
        "truncated-gz", "text-not-string"])
def test_an_unusable_corpus_is_one_error_line_and_leaves_no_cache(tmp_path, capsys, monkeypatch, make, message):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    make(folder)
    err = cli_error(["train", "--preset", "tiny", "--model", "swat", "--device", "cpu", "--set", "train.tokens=4096",
                     "--set", f"train.corpus={folder}", "--out", tmp_path / "t"], capsys)
    assert message in err
    assert not (tmp_path / "t").exists()
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def test_a_split_shorter_than_a_sequence_is_named_with_both_splits_sizes(tmp_path, capsys, monkeypatch):
    """The corpus is split by whole documents: here its long document is held out, leaving 9 training
    tokens. The message blamed the whole corpus ('shorter than one sequence'); it names the split."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    small = "tiny doc"  # 8 bytes: 9 tokens with the end-of-document token
    big = next(text for text in (f"{i} " + "the cat sat on the mat " * 1000 for i in range(100))
               if corpus.document_digest(text) < corpus.document_digest(small))  # the smaller digest is held out
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "big.txt").write_text(big)
    (folder / "small.txt").write_text(small)
    err = cli_error(["train", "--preset", "tiny", "--model", "swat", "--device", "cpu", "--set", "train.tokens=4096",
                     "--set", f"train.corpus={folder}", "--out", tmp_path / "t"], capsys)
    assert err.strip() == (f"error: the training split of corpus '{folder}' is shorter than one sequence of 128 tokens "
                           f"(the corpus is split by whole documents: training 9 tokens in 1 document(s), held-out "
                           f"{len(big) + 1:,} tokens in 1 document(s)); give the corpus more documents or use a "
                           f"shorter train.seq_len")
    assert not (tmp_path / "t").exists()

# ---------------------------------------------------------------- verify lists every problem, wherever the mirror is

def _record_file_in_manifest(mirror_dir: Path, kind: str, name: str, entry: dict) -> None:
    importers.update_manifest(mirror_dir, lambda m: m.setdefault(kind, {}).__setitem__(name, entry))


def test_verify_lists_every_damaged_file_under_harness_data(mirror_dir, capsys, monkeypatch):
    """A truncated corpus, split and tokenizer under $HARNESS_DATA are each a problem line, after which
    verify fails; `data list` still prints its tables, and flags the corpus by its size."""
    _write_corpus(mirror_dir / "corpora" / "mini", [f"document {i}." for i in range(50)])
    importers.record_corpus("mini", mirror_dir, tokenizer=None)
    tok = mirror_dir / "tokenizers" / "tok" / "tokenizer.json.gz"
    tok.parent.mkdir(parents=True)
    tok.write_bytes(gzip.compress(b'{"model": {}}'))
    entry = {"file": "tokenizers/tok/tokenizer.json.gz", "vocab_size": 1, "sha256": mirror.sha256(b'{"model": {}}')}
    _record_file_in_manifest(mirror_dir, "tokenizers", "tok", entry)
    assert [p for p in mirror.verify() if "official" not in p] == []
    for path in (mirror_dir / "corpora" / "mini" / "part.jsonl.xz", mirror_dir / "piqa" / "validation.jsonl.gz", tok):
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    problems = [p for p in mirror.verify() if "official" not in p]
    assert len(problems) == 3, problems
    assert any(p.startswith("corpus mini:") and "part.jsonl.xz differs" in p for p in problems)
    assert any(p.startswith("piqa/validation:") and "not a complete gzip file" in p for p in problems)
    assert any(p.startswith("tokenizer tok:") and "not a complete gzip file" in p for p in problems)
    assert all("fetch, import or train it again" in p and "drop the .gz suffix" not in p for p in problems)
    err = cli_error(["data", "verify"], capsys)
    assert "problem(s) in the mirror" in err
    from harness.cli import main
    monkeypatch.setenv("COLUMNS", "300")  # table cells unfolded
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "tokenizers and pretraining corpora" in out
    assert "differs from its manifest" in next(line for line in out.splitlines() if "corpus mini" in line)


# ---------------------------------------------------------------- data is not replaced or cut silently

def _piqa_file(path: Path, n: int, goal: str = "g") -> Path:
    path.write_text("".join(json.dumps({**PIQA_ROW, "goal": f"{goal} {i}"}) + "\n" for i in range(n)))
    return path


def test_jsonl_text_with_unicode_line_separators_reads_whole(tmp_path):
    """U+2028, U+2029 and U+0085 stay raw inside JSON strings (json.dumps(ensure_ascii=False), as a
    corpus fetch writes): they are text, not line ends, in a corpus and in an imported split."""
    odd = "first\u2028second\u2029third\x85fourth"
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "part.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                               for t in [odd, "plain."]), encoding="utf-8")
    assert list(corpus.iter_documents(str(folder))) == [odd, "plain."]
    piqa = tmp_path / "piqa.jsonl"
    piqa.write_text(json.dumps({**PIQA_ROW, "goal": odd}, ensure_ascii=False) + "\n", encoding="utf-8")
    importers.import_path(piqa, tmp_path / "mirror", "piqa", force=True)
    stored = gzip.decompress((tmp_path / "mirror" / "piqa" / "validation.jsonl.gz").read_bytes()).decode("utf-8")
    assert json.loads(stored)["goal"] == odd


def test_import_refuses_partial_splits_and_replacing_without_force(tmp_path, capsys):
    mirror_dir = tmp_path / "mirror"
    full = _piqa_file(tmp_path / "full.jsonl", 1838)
    importers.import_path(full, mirror_dir, "piqa")
    stored = (mirror_dir / "piqa" / "validation.jsonl.gz").read_bytes()
    importers.import_path(full, mirror_dir, "piqa")  # the same content again replaces nothing
    err = cli_error(["data", "import", _piqa_file(tmp_path / "other.jsonl", 1838, "other"), "--name", "piqa",
                     "--to", mirror_dir], capsys)
    assert f"piqa validation already exists as {mirror_dir / 'piqa' / 'validation.jsonl.gz'}" in err
    assert "--force" in err
    err = cli_error(["data", "import", _piqa_file(tmp_path / "piqa5.jsonl", 5), "--name", "piqa", "--to", mirror_dir],
                    capsys)
    assert "5 examples, but piqa validation has 1838" in err and "--force" in err
    assert (mirror_dir / "piqa" / "validation.jsonl.gz").read_bytes() == stored
    from harness.cli import main
    assert main(["data", "import", str(tmp_path / "piqa5.jsonl"), "--name", "piqa", "--to", str(mirror_dir),
                 "--force"]) == 0
    assert mirror.count_lines(gzip.decompress((mirror_dir / "piqa" / "validation.jsonl.gz").read_bytes())) == 5


def test_import_refuses_a_copy_that_an_earlier_data_root_would_hide(tmp_path, capsys, monkeypatch):
    """Without HARNESS_DATA an import goes to the user cache, looked up after the repository's data/:
    a piqa imported there was stored, reported, and never read."""
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    err = cli_error(["data", "import", _piqa_file(tmp_path / "piqa.jsonl", 1838, "other"), "--name", "piqa"], capsys)
    assert f"piqa validation is read from {mirror.REPO_DATA / 'piqa' / 'validation.jsonl.gz'}" in err
    assert "would never be used" in err and not (tmp_path / "cache" / "data").exists()


def test_folder_import_refuses_a_truncated_raw_file(tmp_path, capsys):
    raw = tmp_path / "raw" / "wikitext-2"
    raw.mkdir(parents=True)
    (raw / "test.txt").write_text(corpus.split_wikitext((FIXTURES / "wikitext-2" / "test.txt").read_text())[0])
    (raw / "valid.txt").write_text((FIXTURES / "wikitext-2" / "valid.txt").read_text())
    err = cli_error(["data", "import", tmp_path / "raw", "--to", tmp_path / "mirror"], capsys)
    assert "1 examples, but wikitext_2_v1 test has 62" in err
    assert not (tmp_path / "mirror").exists()


def test_train_tokenizer_refuses_to_replace_a_stored_tokenizer_and_huge_vocabularies(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importers, "train_bpe", lambda *a: pytest.fail("trained before the checks"))
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    stored = tmp_path / "tokenizers" / "llama2" / "tokenizer.json.gz"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"the committed tokenizer")
    err = cli_error(["data", "train-tokenizer", "--corpus", "bundled", "--name", "llama2"], capsys)
    assert f"tokenizer llama2 already exists as {stored}" in err and "--force" in err
    assert stored.read_bytes() == b"the committed tokenizer"
    monkeypatch.undo()
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    for size in ("4294967296", "99999999999"):
        err = cli_error(["data", "train-tokenizer", "--corpus", "bundled", "--vocab-size", size, "--name", "big"],
                        capsys)
        assert "is over 1,048,576" in err and "reserves memory" in err
    assert not (tmp_path / "tokenizers" / "big").exists()


# ---------------------------------------------------------------- fetch: checked first, quick offline, no debris

@pytest.fixture
def offline_hub(monkeypatch):
    """The hub unreachable: the one reachability request fails, and the hub client must not be asked."""
    import urllib.error
    import urllib.request
    datasets = pytest.importorskip("datasets")
    asked = []

    def unreachable(*args, **kwargs):
        asked.append(args)
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub client was asked"))
    return asked


@pytest.mark.parametrize("argv, message, checked", [
    (["hellaswag"], "hub (https://huggingface.co) is not reachable", True),
    (["hellaswag", "nope"], "unknown name(s) nope", False),
    (["slimpajama", "--documents", "10"], "is not reachable", True),
    (["wikitext", "--documents", "5"], "--documents applies to hub corpora only", False),
    (["slimpajama"], "needs --documents N", False),
], ids=["offline", "unknown-name", "offline-corpus", "documents-for-a-set", "corpus-without-documents"])
def test_fetch_checks_names_first_and_fails_quickly_offline(tmp_path, capsys, monkeypatch, offline_hub, argv,
                                                            message, checked):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    err = cli_error(["data", "fetch", *argv, "--to", tmp_path / "dest"], capsys)
    assert message in err
    assert bool(offline_hub) == checked
    assert not (tmp_path / "dest").exists()


def test_a_failed_corpus_fetch_leaves_no_folder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="hub unreachable.*nothing was written"):
        corpus.fetch_corpus("slimpajama", 10, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- input that is not what it claims

def test_import_names_the_fields_a_record_has(tmp_path, capsys):
    path = tmp_path / "foo.jsonl"
    path.write_text('{"foo": 1}\n')
    err = cli_error(["data", "import", path, "--name", "piqa", "--to", tmp_path / "mirror"], capsys)
    assert "piqa records need fields ['goal', 'label', 'sol1', 'sol2'], got fields ['foo']" in err


@pytest.mark.parametrize("content, problem", [(bytes(range(128, 256)) * 8, "not UTF-8 text"),
                                              (b"text\x00\x01\x02 and more\n\n\n" * 9, "holds NUL bytes")],
                         ids=["not-utf8", "nul-bytes"])
def test_train_tokenizer_refuses_a_binary_corpus(tmp_path, capsys, monkeypatch, content, problem):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "mirror"))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "garbage.txt").write_bytes(content)
    err = cli_error(["data", "train-tokenizer", "--corpus", tmp_path / "corpus", "--vocab-size", "512",
                     "--name", "bpe"], capsys)
    assert f"{tmp_path / 'corpus' / 'garbage.txt'}: {problem}" in err
    assert not (tmp_path / "mirror").exists()


# ---------------------------------------------------------------- messages that name the real fix

def test_data_list_says_how_each_missing_item_is_made(tmp_path, capsys, monkeypatch):
    """Each missing tokenizer and corpus gets the command that makes it (train-tokenizer for a trained BPE,
    import of llama-tokenizer-js for llama2, fetch only for hub corpora), or where it comes from."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    from harness.cli import main
    assert main(["data", "list"]) == 0
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip()
            for line in capsys.readouterr().out.splitlines() if line.startswith(("│ tokenizer", "│ corpus"))}
    assert rows["tokenizer english-mix-bpe8k"] == ("harness data train-tokenizer --corpus english-mix --vocab-size "
                                                   "8192 --name english-mix-bpe8k")
    assert rows["tokenizer llama2"] == "harness data import PATH/llama-tokenizer-js"
    assert "harness data fetch slimpajama --documents N" in rows["corpus slimpajama"]
    english = rows["corpus english-mix"]
    assert "harness data fetch" not in english and str(mirror.REPO_DATA / "corpora" / "english-mix") in english
    assert "build.py" in english and "not looked in while HARNESS_DATA is set" in english


def test_data_list_shows_a_corpus_folder_no_manifest_records(tmp_path, capsys, monkeypatch):
    """A corpus put in corpora/NAME/ trains as train.corpus=NAME, so `data list` shows it too."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    _write_corpus(tmp_path / "corpora" / "mine", ["one document.", "another document."])
    from harness.cli import main
    assert main(["data", "list"]) == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.startswith("│ corpus")}
    assert rows["corpus mine"] == "ok"


@pytest.mark.parametrize("make, what", [(lambda p: None, "a folder that does not exist"),
                                        (lambda p: p.write_text(""), "a file, not a folder")],
                         ids=["missing", "file"])
def test_a_harness_data_that_is_no_folder_fails_verify_and_warns_in_list(tmp_path, capsys, monkeypatch, make, what):
    """verify has nothing to check (its `ok` would be a false pass); list still shows what is missing."""
    make(tmp_path / "typo")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "typo"))
    err = cli_error(["data", "verify"], capsys)
    assert f"HARNESS_DATA={tmp_path / 'typo'} is {what}: there is no mirror to verify" in err
    from harness.cli import main
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out.startswith(f"warning: HARNESS_DATA={tmp_path / 'typo'} is {what}")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert main(["data", "list"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_train_tokenizer_refuses_a_vocabulary_under_the_minimum_and_warns_below_the_size_asked(tmp_path, capsys,
                                                                                              monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "mirror"))
    (tmp_path / "tiny.txt").write_text("hello world\n\nfoo bar baz\n")
    err = cli_error(["data", "train-tokenizer", "--corpus", tmp_path / "tiny.txt", "--vocab-size", "4096",
                     "--name", "tiny"], capsys)
    assert "gave a vocabulary of only 259, under the minimum of 512" in err and "larger corpus" in err
    assert not (tmp_path / "mirror").exists()
    from harness.cli import main
    assert main(["data", "train-tokenizer", "--corpus", "bundled", "--vocab-size", "65536", "--name", "bpe"]) == 0
    out = capsys.readouterr().out
    reached = tokenizer.get_tokenizer("bpe").vocab_size
    assert 512 <= reached < 65536
    assert out.startswith(f"warning: the vocabulary reached {reached}, not the 65536 asked")
    assert f"model.vocab_size={reached}" in out


@pytest.mark.parametrize("argv", [["data", "train-tokenizer", "--vocab-size", "512", "--name", "tn"],
                                  ["train", "--preset", "tiny", "--model", "swat", "--device", "cpu",
                                   "--set", "train.corpus=english-mix"]], ids=["train-tokenizer", "train"])
def test_a_missing_corpus_names_where_it_comes_from_and_corpora_that_exist(tmp_path, capsys, monkeypatch, argv):
    """Not the very name that was missing, and no option of another command (train.corpus, --corpus)."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    _write_corpus(tmp_path / "corpora" / "mini", ["one document.", "another document."])
    err = cli_error([*argv, "--out", tmp_path / "t"] if argv[0] == "train" else argv, capsys)
    assert f"the repository commits it in {mirror.REPO_DATA / 'corpora' / 'english-mix'}" in err
    assert "use a corpus found here (bundled, mini) or a path" in err
    assert "train.corpus" not in err and "--corpus" not in err


def test_importing_an_empty_file_says_what_it_must_hold(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    err = cli_error(["data", "import", tmp_path / "empty.jsonl", "--name", "piqa", "--to", tmp_path / "mirror"], capsys)
    assert "empty.jsonl: no records; piqa validation is 1838 records in the schema of hub baber/piqa" in err
    assert '{"goal": "str", "sol1": "str", "sol2": "str", "label": "int"}' in err and "harness data fetch piqa" in err
    assert not (tmp_path / "mirror").exists()


def test_a_missing_tokenizer_says_the_command_that_makes_it(tmp_path, monkeypatch):
    """Every missing tokenizer was told to import llama-tokenizer-js, a trained BPE among them."""
    from harness.data.paths import DataError
    from harness.data.tokenizer import get_tokenizer
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"^tokenizer 'english-mix-bpe8k' not found \(looked for [^)]*\); make it "
                                        r"with `harness data train-tokenizer --corpus english-mix --vocab-size 8192"):
        get_tokenizer("english-mix-bpe8k")
    with pytest.raises(DataError, match=r"make it with `harness data import PATH/llama-tokenizer-js`"):
        get_tokenizer("llama2")
    with pytest.raises(DataError, match=r"\); pass train.tokenizer=bytes"):
        get_tokenizer("never-recorded")


def _write_parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("text, message", [
    (["a document", None], "t.parquet: row 1 (counting from 0): 'text' is null; drop the rows without text or fill"),
    ([5, 6], "t.parquet: row 0: the 'text' column holds int64, not strings (got 'text': 5); store the documents as"),
], ids=["null", "integer"])
def test_a_parquet_corpus_refuses_text_that_is_not_strings(tmp_path, capsys, monkeypatch, text, message):
    """str() of the column made a null the document "None" and a number the document "5"."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    _write_parquet(folder / "t.parquet", {"text": text})
    err = cli_error(["train", "--preset", "tiny", "--model", "swat", "--device", "cpu", "--set", "train.tokens=4096",
                     "--set", f"train.corpus={folder}", "--out", tmp_path / "t"], capsys)
    assert message in err
    assert not (tmp_path / "t").exists()


def test_a_parquet_corpus_of_strings_reads_with_its_sources(tmp_path):
    """A null source falls back to the file's, as in JSONL; categorical (dictionary) strings are strings."""
    import pyarrow as pa
    path = _write_parquet(tmp_path / "web.parquet", {"text": pa.array(["one", "two", "one"]).dictionary_encode(),
                                                     "source": ["wiki", None, "wiki"]})
    assert corpus.read_sourced_documents(path) == [("one", "wiki"), ("two", "web"), ("one", "wiki")]


@pytest.mark.parametrize("text, problem", [
    (["a b", None], "record 2: lambada_openai field 'text' must be str, got None"),
    ([5, 6], "record 1: lambada_openai field 'text' must be str, got 5"),
], ids=["null", "integer"])
def test_importing_parquet_refuses_text_that_is_not_strings(tmp_path, capsys, text, problem):
    """An integer text was converted to its digits ("5") like an integer label."""
    path = _write_parquet(tmp_path / "lambada.parquet", {"text": text})
    err = cli_error(["data", "import", path, "--name", "lambada_openai", "--to", tmp_path / "mirror", "--force"],
                    capsys)
    assert f"{path} {problem}" in err
    assert not (tmp_path / "mirror").exists()


def test_importing_parquet_keeps_strings_and_converts_an_int_label(tmp_path):
    """Only the answer field takes an int for the hub's string label."""
    path = _write_parquet(tmp_path / "wg.parquet", {"sentence": ["s _"], "option1": ["a"], "option2": ["b"],
                                                    "answer": [2]})
    importers.import_path(path, tmp_path / "mirror", "winogrande", force=True)
    stored = gzip.decompress((tmp_path / "mirror" / "winogrande" / "validation.jsonl.gz").read_bytes())
    assert json.loads(stored) == {"sentence": "s _", "option1": "a", "option2": "b", "answer": "2"}
