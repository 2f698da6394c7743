"""`harness export` (issue 25): a checkpoint becomes a Hugging Face folder that transformers loads in a
process where the harness cannot be imported, with the harness model's logits (sequences longer than
the window included), its greedy decoding through the ring buffer, its tokenizer ids, sharded
weights, a model card with the checkpoint's rows, and the same lm-eval scores as `harness eval`.
Every bad input is one `error:` line that leaves nothing at --out."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from harness import cli  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.data.tokenizer import ByteTokenizer, get_tokenizer  # noqa: E402
from harness.evaluation import lm_eval_adapter, lm_eval_tasks  # noqa: E402
from harness.hf.export import export_refusal  # noqa: E402
from harness.model.build import build_model  # noqa: E402
from harness.registry import load_plugins, models  # noqa: E402
from harness.training.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"
EXPORTABLE = ("swat", "swat_official", "swat_logw", "swat_onorm", "sliding_softmax", "transformer")
FLA_MODELS = ("gla", "retnet", "hgrn2", "deltanet", "gated_deltanet")
HAS_FLA = importlib.util.find_spec("fla") is not None
ONE_STEP = ["train.tokens=128", "train.batch_tokens=128", "train.seq_len=64", "train.micro_batch=2",
            "train.warmup_tokens=0", "train.eval_tokens=64"]
TEXTS = ["Hello, world!", "  two leading spaces\nand a newline\n", "naïve café — 日本語 🎉", "", "x" * 300]
# the special tokens' strings as text: the byte tokenizer and Llama-2's encode them as any text, english-mix-bpe8k
# finds its <|endoftext|> (an added token of its tokenizer.json)
SPECIAL_TEXTS = ["a<|endoftext|>b", "<|endoftext|>", "x </s> y</s>", "<s><unk> <pad>", " <|endoftext|></s>"]
TOL = dict(atol=1e-5, rtol=1e-5)  # fp32 rounding: the same arithmetic, summed in another order

# Loads every exported folder with transformers alone: an import of the harness's packages fails
# (they are importable in this venv, so a finder refuses them), and sys.modules is checked after.
LOADER = textwrap.dedent("""
    import importlib.abc, sys
    OURS = ("harness", "baselines", "tasks")

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in OURS:
                raise ImportError(f"the exported code imported {name}")

    sys.meta_path.insert(0, Refuse())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    job = torch.load(sys.argv[1])
    out = {}
    for name, folder in job["folders"].items():
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        vocab = model.config.vocab_size
        with torch.no_grad():
            gen = model.generate(job["prompt"] % vocab, max_new_tokens=20, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
            out[name] = {"class": type(model).__module__, "logits": model(job["batch"] % vocab).logits,
                         "tokens": gen.sequences, "step_logits": torch.cat(gen.logits),
                         "padded": model.generate(job["padded"] % vocab, attention_mask=job["mask"],
                                                  max_new_tokens=20, do_sample=False),
                         "ids": [tok(t)["input_ids"] for t in job["texts"]], "eos": tok.eos_token_id,
                         "special_ids": [tok(t)["input_ids"] for t in job["special_texts"]],
                         "bos": tok.bos_token_id}
    out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in OURS)
    torch.save(out, sys.argv[2])
""")


def clean_env(tmp: Path) -> dict:
    """An environment without the repository on PYTHONPATH (packages installed elsewhere stay) and
    with the hub offline; transformers' module cache in tmp."""
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    return {"PATH": os.environ["PATH"], "HOME": str(tmp), "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}


def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def write_checkpoint(folder: Path, name: str, *overrides: str) -> Path:
    """A checkpoint folder as `harness train` leaves it (weights + meta.json), without training."""
    from safetensors.torch import save_model
    cfg = load_config("tiny", overrides=list(overrides))
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    save_model(build_model(name, cfg.model), str(folder / "model.safetensors"))
    (folder / "meta.json").write_text(json.dumps({"model": name, "config": cfg.to_dict(), "tokens": None}))
    return folder


def export(*args: str) -> int:
    return cli.main(["export", *args])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on one thread: on a shared 2-core machine two threads spin on every small matmul
    (a 64 x 192 decode step's linear layers take milliseconds instead of microseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each exportable model trained one step by `harness train` (runs/t/<model>) and exported, swat
    also in shards of at most 100KB, and a transformer on the Llama-2 tokenizer (untrained)."""
    root = tmp_path_factory.mktemp("export")
    folders = {}
    for name in EXPORTABLE:
        run = root / "runs" / "t" / name
        assert cli.main(["train", "--model", name, "--device", "cpu", "--quiet", "--out", str(run),
                         *[a for o in ONE_STEP for a in ("--set", o)]]) == 0
        assert export("--checkpoint", str(run / "checkpoint"), "--out", str(root / "hf" / name)) == 0
        folders[name] = (run / "checkpoint", root / "hf" / name)
    assert export("--checkpoint", str(folders["swat"][0]), "--out", str(root / "hf" / "sharded"),
                  "--max-shard-size", "100KB") == 0
    folders["sharded"] = (folders["swat"][0], root / "hf" / "sharded")
    llama = write_checkpoint(root / "llama2" / "checkpoint", "transformer", "train.tokenizer=llama2",
                             "model.vocab_size=32000")
    assert export("--checkpoint", str(llama), "--out", str(root / "hf" / "llama2")) == 0
    folders["llama2"] = (llama, root / "hf" / "llama2")
    return root, folders


@pytest.fixture(scope="module")
def loaded(exported):
    """What transformers computes from every exported folder, in a clean process; and the inputs."""
    root, folders = exported
    torch.manual_seed(1)
    batch = torch.randint(0, 256, (2, 100))  # 100 tokens: past the window (32) and the training length
    prompt, short = batch[:1, :45], batch[1, :38]
    padded = torch.cat([torch.full((1, 7), 256), short[None]], dim=1)  # left-padded to the prompt's length
    job = {"folders": {name: str(folder) for name, (_, folder) in folders.items()}, "batch": batch,
           "prompt": prompt, "padded": torch.cat([prompt, padded]), "texts": TEXTS, "special_texts": SPECIAL_TEXTS,
           "mask": torch.cat([torch.ones(1, 45, dtype=torch.long), (padded != 256).long()])}
    torch.save(job, root / "job.pt")
    (root / "loader.py").write_text(LOADER)
    proc = subprocess.run([sys.executable, str(root / "loader.py"), str(root / "job.pt"), str(root / "out.pt")],
                          cwd=root, env=clean_env(root), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job, torch.load(root / "out.pt")


@pytest.mark.parametrize("name", EXPORTABLE)
def test_the_exported_model_computes_what_the_harness_model_does(exported, loaded, name):
    _, folders = exported
    job, out = loaded
    assert out["imported"] == []
    got = out[name]
    assert got["class"].startswith("transformers_modules.") and got["class"].endswith(".modeling_swat_harness")
    model, cfg, _, _ = load_checkpoint(folders[name][0])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], model(job["batch"]), **TOL)
        # greedy decoding: the same tokens, and every step's logits, through the decode state (both
        # stop at the end-of-document id; transformers pads a finished row of a batch with it)
        prompt, eos = job["prompt"], got["eos"]
        new = got["tokens"][0, prompt.shape[1]:]
        assert torch.equal(new, model.generate(prompt, max_new_tokens=20, eos_id=eos)[0])
        logits, state = model.prefill(prompt)
        steps = [logits[:, -1]]
        for token in new[:-1]:
            step, state = model.step(token.view(1), state)
            steps.append(step)
        torch.testing.assert_close(got["step_logits"], torch.cat(steps), **TOL)
        # a left-padded batch: each row decodes as it does alone
        for row, alone in zip(got["padded"][:, prompt.shape[1]:], (prompt, job["padded"][1:, 7:])):
            mine = model.generate(alone, max_new_tokens=20, eos_id=eos)[0]
            assert torch.equal(row[:len(mine)], mine) and bool((row[len(mine):] == eos).all())
    config = json.loads((folders[name][1] / "config.json").read_text())
    assert config["harness_model"] == name and config["model_type"] == "swat_harness"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_swat_harness.SwatHarnessForCausalLM"
    assert config["window"] == (None if name == "transformer" else cfg.model.window)


def test_the_tokenizer_gives_the_harness_ids(loaded):
    _, out = loaded
    byte, llama = ByteTokenizer(), get_tokenizer("llama2")
    assert out["swat"]["ids"] == [byte.encode(t) for t in TEXTS]
    assert (out["swat"]["eos"], out["swat"]["bos"]) == (byte.eos_id, None)
    assert out["llama2"]["ids"] == [llama.encode(t) for t in TEXTS]  # no BOS: the harness never adds one
    assert (out["llama2"]["eos"], out["llama2"]["bos"]) == (llama.eos_id, None)


def test_text_holding_a_special_tokens_string_gets_the_harness_ids(loaded):
    """The exported byte tokenizer turned a literal "<|endoftext|>" in text into the end-of-text id
    (256), where the harness reads 13 bytes; Llama-2's turned "</s>" into id 2. Both still end text
    with their end-of-text id."""
    _, out = loaded
    for name, tok in (("swat", ByteTokenizer()), ("llama2", get_tokenizer("llama2"))):
        assert out[name]["special_ids"] == [tok.encode(t) for t in SPECIAL_TEXTS], name
        assert out[name]["eos"] == tok.eos_id


@pytest.mark.parametrize("name", ["bytes", "english-mix-bpe8k", "llama2"])
def test_each_shipped_tokenizer_exports_with_the_harness_ids(tmp_path, capsys, name):
    """AutoTokenizer on the exported files gives the harness tokenizer's ids, special-token strings
    in text included, and says nothing."""
    from transformers import AutoTokenizer

    from harness.hf.export import write_tokenizer
    write_tokenizer(name, tmp_path, print)
    tok, exported = get_tokenizer(name), AutoTokenizer.from_pretrained(str(tmp_path))
    assert [exported(t)["input_ids"] for t in TEXTS + SPECIAL_TEXTS] == [tok.encode(t) for t in TEXTS + SPECIAL_TEXTS]
    assert (exported.eos_token_id, exported.bos_token_id) == (tok.eos_id, None)
    assert capsys.readouterr().out == ""


def test_a_tokenizer_that_cannot_match_is_one_warning(tmp_path, capsys):
    """A tokenizer.json that finds one special token in text (<unk>, an added token) and not its
    end-of-text one (</s>, in the vocabulary only): transformers finds all special tokens or none, so
    the exported tokenizer differs on one of them, and the export says which."""
    spec = json.loads(get_tokenizer("llama2")._tok.to_str())
    spec["added_tokens"] = [{"id": 0, "content": "<unk>", "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoint", "transformer", f"train.tokenizer={path}",
                            "model.vocab_size=32000")
    assert export("--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "<unk>" in warnings[0] and "other ids than the harness's" in warnings[0], warnings


def test_the_model_card_leaves_out_rows_of_other_weights_at_the_checkpoint_path(tmp_path, capsys, monkeypatch):
    """A checkpoint retrained with --no-resume keeps its path: the card listed the rows scored on the
    weights it replaced (their loss, their tokens) under the new weights' facts. Rows written before
    rows named their weights still count by path, as in `harness eval`'s reuse of rows."""
    from harness.results.store import read_rows
    monkeypatch.chdir(tmp_path)
    train = ["train", "--model", "swat", "--device", "cpu", "--quiet", "--run", "rt",
             *[a for o in ONE_STEP for a in ("--set", o)]]
    assert cli.main(train) == 0
    assert cli.main(["eval", "--run", "rt", "--tasks", "smoke", "--device", "cpu"]) == 0
    rows_file = tmp_path / "results" / "rt" / "rows.jsonl"
    old = [json.loads(line) for line in rows_file.read_text().splitlines()]
    old_loss = next(row["value"] for row in old if row["metric"] == "loss")
    assert cli.main([*train, "--set", "train.tokens=256", "--no-resume"]) == 0
    ckpt = tmp_path / "runs" / "rt" / "swat" / "checkpoint"
    capsys.readouterr()

    def card(*rows: str) -> tuple[str, list[str]]:
        assert export("--checkpoint", str(ckpt), "--out", str(tmp_path / "hf"), "--force", *rows) == 0
        said = capsys.readouterr().out.splitlines()
        return (tmp_path / "hf" / "README.md").read_text(), [line for line in said if line.startswith("warning:")]

    for rows in ([], ["--rows", str(rows_file)]):  # found beside the run, or given
        text, warnings = card(*rows)
        assert "| smoke |" not in text and "No evaluation rows of this checkpoint" in text
        assert len(warnings) == 1 and "left 2 evaluation rows out" in warnings[0] and "other weights" in warnings[0]
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "weights"}) + "\n" for row in old))
    text, warnings = card("--rows", str(legacy))
    assert f"| smoke | loss | {old_loss:.4f} |" in text and warnings == []
    # the new weights scored (into a run of their own: results/rt's run.json records the old config)
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--run", "rt2", "--tasks", "smoke", "--device", "cpu"]) == 0
    new_rows = tmp_path / "results" / "rt2" / "rows.jsonl"
    new_loss = next(row.value for row in read_rows(new_rows) if row.metric == "loss")
    capsys.readouterr()
    text, warnings = card("--rows", str(new_rows))
    assert new_loss != old_loss and f"| smoke | loss | {new_loss:.4f} |" in text and warnings == []


def test_weights_above_the_shard_size_are_sharded_and_load_the_same(exported, loaded):
    _, folders = exported
    _, out = loaded
    folder = folders["sharded"][1]
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size <= 200_000 for p in shards)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert not (folder / "model.safetensors").exists()
    assert torch.equal(out["sharded"]["logits"], out["swat"]["logits"])


def test_the_model_card_says_what_was_trained_how(exported):
    _, folders = exported
    ckpt, folder = folders["swat_logw"]
    card = (folder / "README.md").read_text()
    meta = json.loads((ckpt / "meta.json").read_text())
    for fact in ("# swat_logw (tiny)", "`bundled`", f"| tokens trained | {meta['tokens']:,} |",
                 f"| swat-harness commit | `{meta['commit']}` |", "| sigmoid bias | -3.46574 |",
                 "| slopes per head | -0.5, -0.25, 0.5, 0.25 |", f"| held-out loss | {meta['heldout_loss']:.4f} |",
                 "No evaluation rows of this checkpoint"):
        assert fact in card, fact
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "configuration_swat_harness.py", "generation_config.json", "model.safetensors",
        "modeling_swat_harness.py", "tokenizer.json", "tokenizer_config.json"]
    assert "import harness" not in (folder / "modeling_swat_harness.py").read_text()


def test_lm_eval_scores_the_export_as_harness_eval_scores_the_checkpoint(exported, tmp_path, monkeypatch):
    """`lm_eval --model hf` on the exported folder (a clean process) and `harness eval` on the
    checkpoint: the same accuracy on arc_easy's fixture documents and the same log-likelihood of
    every choice. Then the rows of that evaluation appear in the exported model card."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate", reason="lm-eval's hf model needs accelerate: pip install 'swat-harness[hf]'")
    root, folders = exported
    ckpt, folder = folders["swat"]
    monkeypatch.setenv("HARNESS_DATA", str(EVAL_FIXTURES))
    overlays = lm_eval_tasks.render_overlays(lm_eval_tasks.mirrored_files())
    lm_eval = subprocess.Popen(
        [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
         f"pretrained={folder},trust_remote_code=True", "--tasks", "arc_easy", "--include_path", str(overlays),
         "--limit", "3", "--device", "cpu", "--log_samples", "--output_path", str(tmp_path / "lm_eval")],
        cwd=tmp_path, env=clean_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        assert cli.main(["eval", "--checkpoint", str(ckpt), "--tasks", "arc_easy", "--limit", "3", "--device", "cpu",
                         "--run", "t", "--results", str(root / "results"), "--bootstrap-iters", "0"]) == 0
        lm = lm_eval_adapter.HarnessLM(checkpoint=str(ckpt), device="cpu", progress=False)
        harness_run = lm_eval_tasks.run_lm_eval(lm, ["arc_easy"], limit=3, bootstrap_iters=0)
        output, _ = lm_eval.communicate(timeout=300)
    finally:
        lm_eval.kill()
    assert lm_eval.returncode == 0, output[-3000:]
    rows = [json.loads(line) for line in (root / "results" / "t" / "rows.jsonl").read_text().splitlines()]
    acc = next(r["value"] for r in rows if r["task"] == "arc_easy" and r["metric"] == "acc")
    [results_file] = (tmp_path / "lm_eval").rglob("results_*.json")
    assert json.loads(results_file.read_text())["results"]["arc_easy"]["acc,none"] == acc
    [samples_file] = (tmp_path / "lm_eval").rglob("samples_arc_easy_*.jsonl")
    hf = {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in map(json.loads, samples_file.open())}
    ours = {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in harness_run["samples"]["arc_easy"]}
    assert hf.keys() == ours.keys() == {0, 1, 2}
    for doc in ours:
        assert hf[doc] == pytest.approx(ours[doc], abs=1e-5)
    # the card finds the rows of this checkpoint in results/<run>/rows.jsonl (run t: runs/t/swat)
    monkeypatch.chdir(root)
    assert export("--checkpoint", str(ckpt), "--out", str(tmp_path / "with-rows")) == 0
    card = (tmp_path / "with-rows" / "README.md").read_text()
    assert f"| arc_easy | acc | {acc:.4f} |" in card and "results/t/rows.jsonl" in card


def test_the_attention_mamba_and_fla_models_export_and_say_so():
    """Whether a model exports follows from its layers, not its name: the built-in ones that do are
    the attention models, mamba and, where fla is installed, the fla-backed ones."""
    load_plugins()
    cfg = load_config("tiny").model
    with torch.device("meta"):
        exporting = {name for name in models() if export_refusal(build_model(name, cfg, "meta")) is None}
    assert exporting == set(EXPORTABLE) | {"mamba"} | (set(FLA_MODELS) if HAS_FLA else set())


@pytest.mark.parametrize("name, message", [
    ("mamba2", "mamba2 has no Hugging Face export: the Hugging Face Mamba classes derive the inner width"),
    ("unigram", "unigram has no Hugging Face export: it is a count-based reference model"),
    ("gru", "gru has no Hugging Face export: it is not a registered model here"),
])
def test_a_model_that_does_not_export_is_one_error(tmp_path, capsys, name, message):
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"model": name, "config": load_config("tiny").to_dict()}))
    assert export("--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")) == 2
    one_error_line(capsys.readouterr().err, message, "only models on the shared backbone whose layers are the "
                   "harness's attention mixers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_plugin_on_the_attention_layers_exports(tmp_path):
    """A plugin's model built of the harness's attention mixers exports like a built-in one."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text("from harness import register_model\nfrom harness.backbone import DecoderLM\n"
                      "from harness.model.attention import SlidingAttention\n\n"
                      "@register_model('narrow_sliding', family='attention')\n"
                      "def build(cfg):\n    return DecoderLM(cfg, lambda cfg, i: SlidingAttention(cfg))\n")
    run = tmp_path / "run"
    assert cli.main(["train", "--plugin", str(plugin), "--model", "narrow_sliding", "--device", "cpu", "--quiet",
                     "--out", str(run), *[a for o in ONE_STEP for a in ("--set", o)]]) == 0
    assert export("--plugin", str(plugin), "--checkpoint", str(run / "checkpoint"), "--out", str(tmp_path / "hf")) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["attention_core"] == "sliding"


def test_bad_inputs_are_one_error_and_leave_nothing_at_out(exported, tmp_path, capsys, monkeypatch):
    _, folders = exported
    ckpt = str(folders["transformer"][0])
    out = tmp_path / "hf"
    assert export("--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)) == 2
    one_error_line(capsys.readouterr().err, "nowhere is not a checkpoint folder (no meta.json)")
    assert export("--checkpoint", ckpt, "--out", str(out), "--max-shard-size", "2 gigs") == 2
    one_error_line(capsys.readouterr().err, "--max-shard-size '2 gigs' must be a whole number with a unit")
    assert export("--checkpoint", ckpt, "--out", str(out), "--rows", str(tmp_path / "rows.jsonl")) == 2
    one_error_line(capsys.readouterr().err, "rows file", "rows.jsonl not found")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # past the login check, to the network
    assert export("--checkpoint", ckpt, "--out", str(out), "--push-to-hub", "someone/tiny-transformer") == 2
    one_error_line(capsys.readouterr().err, "cannot push to the Hugging Face hub repo someone/tiny-transformer",
                   "export without --push-to-hub")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export("--checkpoint", ckpt, "--out", str(out)) == 2
    one_error_line(capsys.readouterr().err, "exists and is not empty; pass --force to replace it")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    for left in (f".hf.tmp{dead}", f".hf.old{dead}"):  # an export killed outright left them: a model each
        (tmp_path / left).mkdir()
        (tmp_path / left / "model.safetensors").write_bytes(b"weights")
    assert export("--checkpoint", ckpt, "--out", str(out), "--force") == 0
    assert (out / "config.json").is_file() and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary folder left beside it



def test_an_out_that_is_or_holds_the_checkpoint_is_refused_before_force_deletes_it(tmp_path, capsys, monkeypatch):
    """--force replaces the folder at --out: on the checkpoint itself, or on its run folder (training
    log and loss curve beside it), it deleted what it exported. `--out .` was a ValueError. An export
    inside the checkpoint went with it at training's next save."""
    run = tmp_path / "run"
    ckpt = write_checkpoint(run / "checkpoint", "transformer")
    (run / "train_log.jsonl").write_text("{}\n")
    before = sorted(p.name for p in ckpt.iterdir())
    assert export("--checkpoint", str(ckpt), "--out", str(ckpt), "--force") == 2
    one_error_line(capsys.readouterr().err, f"--out {ckpt} is the checkpoint", "give another --out")
    assert export("--checkpoint", str(ckpt), "--out", str(run), "--force") == 2
    one_error_line(capsys.readouterr().err, f"--out {run} holds the checkpoint {ckpt}")
    assert export("--checkpoint", str(ckpt), "--out", str(ckpt / "hf")) == 2  # training's next save replaces it
    one_error_line(capsys.readouterr().err, f"--out {ckpt / 'hf'} is inside the checkpoint {ckpt}")
    monkeypatch.chdir(run)
    assert export("--checkpoint", "checkpoint", "--out", ".", "--force") == 2
    one_error_line(capsys.readouterr().err, "--out . holds the checkpoint checkpoint")
    assert sorted(p.name for p in ckpt.iterdir()) == before and (run / "train_log.jsonl").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "train_log.jsonl"]


def test_out_dot_exports_into_the_working_folder_with_weights_readable_like_its_other_files(tmp_path, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoint", "transformer")
    here = tmp_path / "hf"
    here.mkdir()
    monkeypatch.chdir(here)
    assert export("--checkpoint", str(ckpt), "--out", ".") == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in here.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~current_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]  # no temporary folder beside it


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_rows_that_are_not_a_rows_file_are_one_error(tmp_path, capsys):
    """A --rows file none of whose lines is a row (a CSV here) was read with a warning per line, and
    the model card said no evaluation was found."""
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoint", "transformer")
    table = tmp_path / "table.csv"
    table.write_text("task,metric,value\npiqa,acc,0.6\n")
    out = tmp_path / "hf"
    assert export("--checkpoint", str(ckpt), "--out", str(out), "--rows", str(table)) == 2
    one_error_line(capsys.readouterr().err, f"--rows {table} is not a rows file: none of its lines is a result row",
                   "pass a rows.jsonl that `harness run` or `harness eval` wrote")
    assert not out.exists()


def test_the_harness_evaluates_its_own_export_without_running_the_folders_code(exported, tmp_path, monkeypatch):
    """`--models hf:<exported folder>` loads with this installation's copy of the modelling code (no
    trust_remote_code, no question on a terminal) and computes what the checkpoint computes."""
    import builtins

    from harness.evaluation.sources import load_hf
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("asked whether to run the folder's code"))
    _, folders = exported
    ckpt, folder = folders["swat"]
    hf_model, tokenizer, _ = load_hf(str(folder), "cpu")
    model = load_checkpoint(ckpt, "cpu")[0]
    ids = torch.tensor([tokenizer.encode("The meaning of the window")])
    with torch.no_grad():
        assert torch.allclose(hf_model(ids), model(ids), atol=1e-5)


def test_an_exported_folder_is_scored_on_its_runs_heldout_data_beside_its_checkpoint(exported, tmp_path):
    """`harness eval --models hf:<export>` scored smoke on TrainConfig's default corpus, windows and
    token count, not the training run's: another number under the same label. The export records the
    run's held-out settings, and the folder's smoke is the checkpoint's. Its rows were preset "hf" with
    no tokens trained, in a table group of their own; the export records both, so they stand beside
    the checkpoint's."""
    from harness.results.store import read_rows
    ckpt, folder = exported[1]["swat"]
    dirs = ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--device", "cpu"]
    assert cli.main(["eval", "--models", f"hf:{folder}", "--checkpoint", str(ckpt), "--tasks", "smoke", *dirs]) == 0
    loss = {r.model: r for r in read_rows(tmp_path / "results" / "eval" / "rows.jsonl") if r.metric == "loss"}
    hf, own = loss.pop("hf-swat"), loss.popitem()[1]
    assert (hf.extra["corpus"], hf.n) == (own.extra["corpus"], own.n)
    assert hf.value == pytest.approx(own.value, abs=1e-4)
    assert (hf.preset, hf.tokens_trained) == (own.preset, own.tokens_trained) and own.tokens_trained > 0


@pytest.mark.parametrize("key, record", [("harness_heldout", {"corpus": "bundled", "windows": 3}),
                                         ("harness_trained", {"preset": "tiny", "tokens": "66K"})])
def test_a_hand_edited_export_record_is_one_error_before_any_row(exported, tmp_path, capsys, key, record):
    """An export's config.json edited by hand (an unknown held-out key, tokens as text) ended in a
    TypeError from TrainConfig after the model had loaded; now the check names the key and the fix."""
    import shutil
    folder = tmp_path / "edited"
    shutil.copytree(exported[1]["swat"][1], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: record}))
    dirs = ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--device", "cpu"]
    assert cli.main(["eval", "--models", f"hf:{folder}", "--tasks", "smoke", *dirs]) == 2
    one_error_line(capsys.readouterr().err, f"{folder / 'config.json'}: {key} ",
                   "is not what `harness export` writes", f"export the checkpoint again, or delete {key}")
    assert not (tmp_path / "results").exists()


def test_an_out_that_cannot_be_written_is_named_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """An --out under /proc or on a read-only disk was reported as the temporary sibling the export writes
    (`/proc/.hfx.tmp2399: no such file or directory`), a path the user never gave, after the loading."""
    import errno

    from harness.hf import export as export_module
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoint", "transformer")
    monkeypatch.setattr(export_module, "get_tokenizer", lambda name: pytest.fail("loaded before --out was checked"))
    assert export("--checkpoint", str(ckpt), "--out", "/proc/hfx") == 2
    one_error_line(capsys.readouterr().err, "--out /proc/hfx cannot be written: no folder can be made in /proc "
                                            "(no such file or directory); give another --out")
    mkdir = Path.mkdir

    def read_only(path, *args, **kwargs):
        if path.name.startswith(".hf.tmp"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return mkdir(path, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "ro" / "hf"
    assert export("--checkpoint", str(ckpt), "--out", str(out)) == 2
    one_error_line(capsys.readouterr().err, f"--out {out} cannot be written: no folder can be made in {out.parent} "
                                            f"(read-only file system)")
    assert list(out.parent.iterdir()) == []


def test_a_checkpoint_of_an_unfinished_run_exports_with_a_warning_and_says_so_in_its_card(tmp_path, capsys):
    """A checkpoint saved at step 3 of 64 exported without a word, its card showing `| steps | 3 |`."""
    steps = load_config("tiny").train.steps
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoint", "transformer")
    meta = json.loads((ckpt / "meta.json").read_text())

    def exported_at(step: int, **result) -> tuple[list[str], str]:
        (ckpt / "meta.json").write_text(json.dumps({**meta, "step": step, **result}))
        out = tmp_path / f"hf-{step}"
        assert export("--checkpoint", str(ckpt), "--out", str(out)) == 0
        captured = capsys.readouterr()
        warnings = [line for line in (captured.out + captured.err).splitlines() if line.startswith("warning:")]
        return warnings, (out / "README.md").read_text()
    warnings, card = exported_at(3)
    assert warnings == [f"warning: {ckpt} is at step 3 of the {steps} its run was planned for (training stopped "
                        f"before its end), and the model card says so; run the same `harness train` again to finish "
                        f"it, then export"]
    assert f"| steps | 3 of the {steps} planned (training stopped before its end) |" in card
    warnings, card = exported_at(steps, train_loss=5.0, heldout_loss=5.0)
    assert warnings == [] and f"| steps | {steps} |" in card


def test_a_cache_passed_as_past_key_values_continues_the_sequence(exported):
    """transformers' own models still take the cache as `past_key_values`; the exported model let it
    fall into its ignored keyword arguments and scored the new token as a sequence's first."""
    from harness.hf.modeling_swat_harness import SwatHarnessForCausalLM
    for name in ("swat", "transformer"):  # a ring buffer, a growing KV cache
        model = SwatHarnessForCausalLM.from_pretrained(str(exported[1][name][1])).eval()
        ids = torch.randint(0, 256, (1, 50), generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), pytest.warns(FutureWarning, match="past_key_values"):
            whole = model(ids).logits[:, -1]
            continued = model(ids[:, -1:], past_key_values=model(ids[:, :-1]).cache).logits[:, -1]
        torch.testing.assert_close(continued, whole, **TOL)


def test_a_static_cache_is_refused_by_a_message_that_names_it(exported):
    """generate(cache_implementation="static") hands the model a 4-D mask, refused as a malformed mask."""
    from harness.hf.modeling_swat_harness import SwatHarnessForCausalLM
    model = SwatHarnessForCausalLM.from_pretrained(str(exported[1]["swat"][1])).eval()
    with pytest.raises(ValueError, match="a static cache, which this model has no use for .* leave "
                                         "cache_implementation unset"):
        model.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=2, cache_implementation="static",
                       do_sample=False)


def test_a_shard_size_in_binary_units_shards_by_it(exported, tmp_path):
    """--max-shard-size 100KiB (the form the error line suggests) passed the check, then stopped in a
    traceback from huggingface_hub, which reads KB, MB, GB and TB only, after the model had loaded."""
    out = tmp_path / "hf"
    assert export("--checkpoint", str(exported[1]["swat"][0]), "--out", str(out), "--max-shard-size", "100KiB") == 0
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size <= 100 * 1024 + 1024 for p in shards)  # + the header


PLUGIN_HEADER = ("import torch.nn as nn\nfrom dataclasses import replace\n\nfrom harness import register_model\n"
                 "from harness.backbone import DecoderLM\nfrom harness.model.attention import SwatAttention\n\n")
UNEXPORTABLE = [  # (model, its builder's body, the error): each exported as another model, or a traceback
    # a window that grows with depth exported with the first layer's window for all: other logits
    ("swat_growing", "    return DecoderLM(cfg, lambda cfg, i: SwatAttention(replace(cfg, window=32 * (i + 1))))\n",
     "swat_growing has no Hugging Face export: its layers differ in mixer.window (layer 0: 32, layer 1: 64), and "
     "the exported config holds one value for all layers"),
    # a bias on the output head exported without it: other logits
    ("swat_head_bias", "    model = DecoderLM(cfg, lambda cfg, i: SwatAttention(cfg))\n"
                       "    model.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=True)\n    return model\n",
     "swat_head_bias has no Hugging Face export: its weights head.bias have no place in the exported model"),
    # blocks whose MLP is an nn.Identity: a traceback ('Identity' object has no attribute 'down')
    ("swat_identity_mlp", "    model = DecoderLM(cfg, lambda cfg, i: SwatAttention(cfg))\n"
                          "    for block in model.blocks:\n        block.mlp = nn.Identity()\n    return model\n",
     "swat_identity_mlp has no Hugging Face export: its blocks.0.mlp is of class Identity, which the exported "
     "model has no counterpart for"),
]


@pytest.mark.parametrize("name, body, message", UNEXPORTABLE, ids=[u[0] for u in UNEXPORTABLE])
def test_a_model_the_export_cannot_write_as_it_is_is_refused(tmp_path, capsys, name, body, message):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"{PLUGIN_HEADER}@register_model({name!r}, family='attention')\ndef build(cfg):\n{body}")
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"model": name, "config": load_config("tiny").to_dict()}))
    assert export("--plugin", str(plugin), "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")) == 2
    one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------- fla-backed models: fla's own model classes

needs_fla = pytest.mark.skipif(not HAS_FLA, reason="needs fla: pip install 'swat-harness[fla]'")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")


@pytest.fixture(scope="module")
def fla_exported(tmp_path_factory):
    """Each fla-backed model at the tiny preset (untrained: fla's layers build on a CPU, but run on CUDA
    only) and its export."""
    root = tmp_path_factory.mktemp("fla-export")
    folders = {}
    for name in FLA_MODELS:
        ckpt = write_checkpoint(root / name / "checkpoint", name)
        assert export("--checkpoint", str(ckpt), "--out", str(root / "hf" / name)) == 0
        folders[name] = (ckpt, root / "hf" / name)
    return folders


def loaded_fla(folder: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True).eval()


@needs_fla
@pytest.mark.parametrize("name", FLA_MODELS)
def test_an_fla_model_exports_as_flas_own_class_with_every_weight_and_setting(fla_exported, name):
    """transformers loads fla's own model class (through modeling_fla.py) on the CPU: every weight it holds
    is the harness tensor it comes from, exactly (none left at its init), and every fla layer has the
    harness layer's settings, read back from config.json."""
    import fla.models

    from harness.hf.fla_export import exported_settings, weight_sources
    from harness.hf.mapping import layer_settings
    from harness.training.checkpoint import load_checkpoint
    ckpt, folder = fla_exported[name]
    harness = load_checkpoint(ckpt, "cpu", to_run=False)[0]
    hf = loaded_fla(folder)
    config = json.loads((folder / "config.json").read_text())
    lm_class = getattr(fla.models, config["architectures"][0])
    assert type(hf) is lm_class and config["harness_model"] == name
    assert config["auto_map"] == {"AutoConfig": f"modeling_fla.{type(hf.config).__name__}",
                                  "AutoModelForCausalLM": f"modeling_fla.{lm_class.__name__}"}
    ours, theirs = harness.state_dict(), hf.state_dict()
    sources = weight_sources(harness)  # HGRN2's shared lower bounds: once per layer
    assert set(theirs) == {fla_name for fla_name, _ in sources}
    for fla_name, (source, half) in sources:
        expected = ours[source] if half is None else ours[source].chunk(2, dim=0)[half]
        assert torch.equal(theirs[fla_name], expected), fla_name
    assert set(ours) == {source for _, (source, _) in sources}
    for block, fla_block in zip(harness.blocks, hf.model.layers, strict=True):
        assert layer_settings(fla_block.attn) == exported_settings(block.mixer)
        assert fla_block.mlp.intermediate_size == block.mlp.down.in_features and fla_block.mlp.hidden_act == "swish"
    assert hf.config.norm_eps == harness.norm.eps and hf.config.tie_word_embeddings == (harness.head is None)
    card = (folder / "README.md").read_text()
    assert f"`{lm_class.__name__}`" in card and "pip install flash-linear-attention" in card


FLA_LOADER = textwrap.dedent("""
    import importlib.abc, sys
    refused = tuple(sys.argv[2].split(","))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in refused:
                raise ImportError(f"No module named {name!r}")

    sys.meta_path.insert(0, Refuse())
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
    except ImportError as err:
        print("error:", err)
    else:
        print("loaded:", type(model).__module__)
    print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in ("harness", "baselines")))
""")


@needs_fla
def test_an_fla_export_loads_without_the_harness_and_names_fla_where_it_is_missing(fla_exported, tmp_path):
    (tmp_path / "loader.py").write_text(FLA_LOADER)

    def load(refused: str) -> str:
        proc = subprocess.run([sys.executable, str(tmp_path / "loader.py"), str(fla_exported["gla"][1]), refused],
                              cwd=tmp_path, env=clean_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout
    assert "loaded: fla.models.gla.modeling_gla\nimported: []" in load("harness,baselines,tasks")
    missing = load("harness,baselines,tasks,fla")
    assert "error: this model is flash-linear-attention's (fla) and needs it installed: pip install " \
           "flash-linear-attention (or pip install 'swat-harness[fla]')" in missing


FLA_PLUGIN = ("from baselines.fla_common import FlaMixer, fla_model\nfrom harness import register_model\n\n"
              "class LoudMixer(FlaMixer):\n    def forward(self, x, cu_seqlens=None):\n"
              "        return 2 * super().forward(x, cu_seqlens)\n\n"
              "@register_model('loud_gla', family='recurrent')\ndef build(cfg):\n"
              "    return fla_model(cfg, 'gla', 'GatedLinearAttention', {}, lambda layer, i: LoudMixer('gla', layer, "
              "cfg.init_std))\n\n"
              "@register_model('hybrid_gla', family='recurrent')\ndef hybrid(cfg):\n"
              "    from harness.model.attention import SwatAttention\n"
              "    model = fla_model(cfg, 'gla', 'GatedLinearAttention', {})\n"
              "    model.blocks[1].mixer = SwatAttention(cfg)\n    return model\n")


@needs_fla
@pytest.mark.parametrize("name, overrides, message", [
    # fla's HGRN2 holds its lower bounds as wide as the hidden size; the harness's are the forget gates' 128
    ("hgrn2", ["model.hidden_size=192"], "hgrn2 has no Hugging Face export: its forget gates are 128 wide"),
    # GLAConfig has no gate_low_rank_dim: fla's GLA layer would take its default 16
    ("gla", ["model.extra={gla: {gate_low_rank_dim: 8}}"], "gla has no Hugging Face export: its option "
     "gate_low_rank_dim is 8, which fla's GLAConfig has no field for (its layers take 16); it exports with "
     "gate_low_rank_dim at that default (leave it out of model.extra's gla options)"),
    ("gated_deltanet", ["model.extra={gated_deltanet: {conv_bias: true}}"],
     "its option conv_bias is True, which fla's GatedDeltaNetConfig has no field for (its layers take False)"),
    # a plugin's subclass of the fla baselines' mixer computes what it changes
    ("loud_gla", [], "loud_gla has no Hugging Face export: its mixer LoudMixer subclasses the fla baselines' "
                     "FlaMixer, and the export writes fla's own blocks"),
    # fla layers and an attention layer in one model: fla's model class has fla blocks only
    ("hybrid_gla", [], "hybrid_gla has no Hugging Face export: its layers mix fla layers with SwatAttention"),
])
def test_an_fla_model_that_flas_class_cannot_hold_is_one_error(tmp_path, capsys, name, overrides, message):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(FLA_PLUGIN)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    cfg = load_config("tiny", overrides=overrides)
    (ckpt / "meta.json").write_text(json.dumps({"model": name, "config": cfg.to_dict()}))
    assert export("--plugin", str(plugin), "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")) == 2
    one_error_line(capsys.readouterr().err, message, "or fla's layers as the fla baselines build them export")
    assert not (tmp_path / "hf").exists()


@gpu
@needs_fla
@pytest.mark.parametrize("name", FLA_MODELS)
def test_an_fla_export_computes_what_the_harness_model_does_on_a_gpu(fla_exported, name):
    """On CUDA in fp32 the loaded export gives the harness model's logits (sequences past fla's 64-token
    recurrent switch) and its greedy tokens through fla's cache."""
    ckpt, folder = fla_exported[name]
    model = load_checkpoint(ckpt, "cuda")[0].eval()
    hf = loaded_fla(folder).cuda()
    ids = torch.randint(0, 256, (2, 100), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=1e-4)
        prompt = ids[:1, :40]
        new = hf.generate(prompt, max_new_tokens=8, do_sample=False)[0, prompt.shape[1]:]
        # both stop at the end-of-text token (an untrained model may pick it)
        assert torch.equal(new, model.generate(prompt, max_new_tokens=8, eos_id=hf.config.eos_token_id)[0])


# ---------------------------------------------------------------- mamba: transformers' own MambaForCausalLM

# the tiny preset, whose d_inner the harness solves for the budget, and another width with an untied head
MAMBA_SIZES = {"tiny": [], "hidden96-untied": ["model.hidden_size=96", "model.tie_embeddings=false"]}


@pytest.fixture(scope="module")
def mamba_exported(tmp_path_factory):
    """The mamba baseline at each of MAMBA_SIZES, written as a checkpoint (untrained) and exported."""
    root = tmp_path_factory.mktemp("mamba-export")
    folders = {}
    for size, overrides in MAMBA_SIZES.items():
        ckpt = write_checkpoint(root / size / "checkpoint", "mamba", *overrides)
        assert export("--checkpoint", str(ckpt), "--out", str(root / "hf" / size)) == 0
        folders[size] = (ckpt, root / "hf" / size)
    return folders


# Loads each mamba folder with plain AutoModelForCausalLM in a process where neither the harness nor fla is
# imported (fla registers its own model_type mamba with transformers' Auto classes when imported)
MAMBA_LOADER = textwrap.dedent("""
    import sys
    import torch
    from transformers import AutoModelForCausalLM
    job = torch.load(sys.argv[1])
    out = {}
    for size, folder in job["folders"].items():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        ids = job["ids"] % model.config.vocab_size
        with torch.no_grad():
            out[size] = {"class": f"{type(model).__module__}.{type(model).__name__}", "state": model.state_dict(),
                         "ids": ids, "logits": model(ids).logits,
                         "tokens": model.generate(ids[:1, :16], max_new_tokens=8, do_sample=False)[0, 16:],
                         "tied": model.lm_head.weight is model.backbone.embeddings.weight,
                         "eos": model.config.eos_token_id,
                         "widths": [layer.mixer.in_proj.out_features // 2 for layer in model.backbone.layers]}
    out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("harness", "baselines", "tasks", "fla"))
    torch.save(out, sys.argv[2])
""")


@pytest.fixture(scope="module")
def mamba_loaded(mamba_exported, tmp_path_factory):
    """What plain transformers computes from each mamba folder, in a clean process: the weights it holds,
    the logits of 2 x 40 tokens and the greedy tokens after the first 16 of them."""
    root = tmp_path_factory.mktemp("mamba-load")
    ids = torch.randint(0, 2**31 - 1, (2, 40), generator=torch.Generator().manual_seed(0))
    torch.save({"folders": {size: str(folder) for size, (_, folder) in mamba_exported.items()}, "ids": ids},
               root / "job.pt")
    (root / "loader.py").write_text(MAMBA_LOADER)
    proc = subprocess.run([sys.executable, str(root / "loader.py"), str(root / "job.pt"), str(root / "out.pt")],
                          cwd=root, env=clean_env(root), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(root / "out.pt")


@pytest.mark.parametrize("size", MAMBA_SIZES)
def test_a_mamba_model_exports_as_transformers_own_class_and_computes_what_the_harness_model_does(
        mamba_exported, mamba_loaded, size):
    """Plain AutoModelForCausalLM (no remote code, no harness) loads transformers' MambaForCausalLM at the
    harness's inner width (one that no whole expand x hidden_size gives), with every weight the harness tensor
    it comes from, and on the CPU in fp32 gives the harness model's logits and greedy tokens (both stop at
    end-of-text)."""
    from harness.hf.mamba_export import weight_sources
    ckpt, folder = mamba_exported[size]
    model, cfg = load_checkpoint(ckpt, "cpu")[:2]
    hf = mamba_loaded[size]
    mixer, hidden = model.eval().blocks[0].mixer, model.embed.embedding_dim
    assert hf["class"] == "transformers.models.mamba.modeling_mamba.MambaForCausalLM" and mamba_loaded["imported"] == []
    assert hf["widths"] == [mixer.d_inner] * len(model.blocks) and mixer.d_inner % hidden != 0
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mamba" and "auto_map" not in config and not list(folder.glob("*.py"))
    meta = json.loads((ckpt / "meta.json").read_text())
    trained = {"preset": cfg.preset, "tokens": meta["tokens"]}
    assert (config["harness_model"], config["harness_trained"]) == ("mamba", trained)
    ours, theirs = model.state_dict(), hf["state"]
    sources = weight_sources(model)
    assert set(theirs) == {hf_name for hf_name, _ in sources} and set(ours) == {name for _, (name, _) in sources}
    for hf_name, (name, _) in sources:
        assert torch.equal(theirs[hf_name], ours[name]), hf_name
    assert hf["tied"] == (model.head is None)
    eos = get_tokenizer(cfg.train.tokenizer).eos_id
    assert hf["eos"] == eos
    with torch.no_grad():
        torch.testing.assert_close(hf["logits"], model(hf["ids"]), **TOL)
        prompt = hf["ids"][:1, :16]
        assert torch.equal(hf["tokens"], model.generate(prompt, max_new_tokens=8, eos_id=eos)[0])
    card = (folder / "README.md").read_text()
    assert "`MambaForCausalLM`" in card and "| MLP (SwiGLU) hidden size | none |" in card
    assert f"inner width {mixer.d_inner}," in card


def test_the_export_says_how_to_load_the_folder_with_the_class_that_holds_it(tmp_path, capsys):
    """The closing line and the card's snippet name the class that loads the folder: transformers' own
    MambaForCausalLM for mamba, no remote code (the Auto classes would give fla's Mamba where fla is
    imported); the Auto class with trust_remote_code for an attention model's own code. The card's layers
    are the harness's (mamba: 2 blocks each)."""
    for name, call in (("mamba", "MambaForCausalLM.from_pretrained('{}')"),
                       ("swat", "AutoModelForCausalLM.from_pretrained('{}', trust_remote_code=True)")):
        ckpt = write_checkpoint(tmp_path / name / "checkpoint", name)
        out = tmp_path / name / "hf"
        assert export("--checkpoint", str(ckpt), "--out", str(out)) == 0
        assert capsys.readouterr().out.strip().endswith(f"wrote {out}: load it with {call.format(out)}")
        card = (out / "README.md").read_text()
        assert f"model = {call.format(out)}" in card and "| layers | 2 |" in card

@needs_fla
def test_harness_eval_loads_a_mamba_export_as_transformers_class_where_fla_is_imported(mamba_exported):
    """fla registers its own Mamba for model type mamba with the Auto classes when imported (as `harness eval
    hf:` imports it, for its GLA, RetNet, ...), and reads the exported config by other names: its norm eps
    at 1e-5, the harness's 1e-6. The harness's own loader gives transformers' class all the same, and the
    harness model's logits."""
    import fla  # noqa: F401
    import transformers

    from harness.evaluation.sources import load_hf
    ckpt, folder = mamba_exported["tiny"]
    model = load_checkpoint(ckpt, "cpu")[0].eval()
    loaded = load_hf(str(folder), "cpu")[0]
    assert type(loaded.hf) is transformers.MambaForCausalLM
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.hf(ids).logits, model(ids), **TOL)


MAMBA_PLUGIN = ("import torch.nn as nn\nfrom dataclasses import replace\n\nfrom baselines.mamba import MambaMixer\n"
                "from harness import register_model\nfrom harness.backbone import DecoderLM\n\n"
                "class LoudMamba(MambaMixer):\n    def forward(self, hidden, cu_seqlens=None):\n"
                "        return 2 * super().forward(hidden, cu_seqlens)\n\n"
                "@register_model('loud_mamba')\ndef loud(cfg):\n"
                "    return DecoderLM(cfg, lambda cfg, i: LoudMamba(cfg), mlp=False)\n\n"
                "@register_model('mamba_mlp')\ndef with_mlp(cfg):\n"
                "    return DecoderLM(cfg, lambda cfg, i: MambaMixer(cfg))\n\n"
                "@register_model('mamba_widening')\ndef widening(cfg):\n"
                "    return DecoderLM(cfg, lambda cfg, i: MambaMixer(replace(cfg, d_inner=96 + 32 * i)), mlp=False)\n\n"
                "@register_model('mamba_in_bias')\ndef in_bias(cfg):\n"
                "    model = DecoderLM(cfg, lambda cfg, i: MambaMixer(cfg), mlp=False)\n"
                "    for block in model.blocks:\n"
                "        block.mixer.in_proj = nn.Linear(cfg.hidden_size, 2 * block.mixer.d_inner, bias=True)\n"
                "    return model\n")


@pytest.mark.parametrize("name, message", [
    # a plugin's subclass of the harness's mixer computes what it changes
    ("loud_mamba", "loud_mamba has no Hugging Face export: its mixer LoudMamba subclasses the harness's MambaMixer, "
                   "and the export writes transformers' MambaMixer"),
    # transformers' Mamba blocks are norm, mixer, residual: the MLP would be left out
    ("mamba_mlp", "mamba_mlp has no Hugging Face export: its blocks have a SwiGLU MLP, and transformers' Mamba "
                  "blocks have none"),
    # MambaConfig holds one inner width for all layers (the message names one of the settings it sizes)
    ("mamba_widening", "mamba_widening has no Hugging Face export: its layers differ in mixer."),
    # MambaConfig's use_bias gives in_proj and out_proj a bias together
    ("mamba_in_bias", "mamba_in_bias has no Hugging Face export: transformers' Mamba holds "
                      "backbone.layers.0.mixer.out_proj.bias"),
])
def test_a_mamba_model_that_transformers_class_cannot_hold_is_one_error(tmp_path, capsys, name, message):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(MAMBA_PLUGIN)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"model": name, "config": load_config("tiny").to_dict()}))
    assert export("--plugin", str(plugin), "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")) == 2
    one_error_line(capsys.readouterr().err, message, "the mamba baseline's Mamba-1 mixers (baselines.mamba)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "plugin.py"]


def test_a_transformers_that_derives_the_inner_width_again_is_one_error(tmp_path, capsys, monkeypatch):
    """The inner width reaches transformers' Mamba only as config.json's intermediate_size, which MambaConfig
    keeps after deriving its own from expand: where a version derived it last, the export would load at
    another width, so it reads its config back first and refuses."""
    from transformers import MambaConfig
    keep = MambaConfig.__post_init__

    def derive_last(self, **kwargs):
        keep(self, **kwargs)
        self.intermediate_size = int(self.expand * self.hidden_size)
    monkeypatch.setattr(MambaConfig, "__post_init__", derive_last)
    ckpt = write_checkpoint(tmp_path / "checkpoint", "mamba")
    width = build_model("mamba", load_config("tiny").model, "meta").blocks[0].mixer.d_inner
    assert export("--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")) == 2
    one_error_line(capsys.readouterr().err, f"mamba has no Hugging Face export: its layer 0's intermediate_size is "
                   f"{width}, where transformers' MambaForCausalLM builds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
