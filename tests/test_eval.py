"""Evaluation: the lm-eval adapter against direct computation, every eval task end to end on the
fixture files of tests/fixtures/eval (hub schemas, made-up content), `harness eval`, and the
synthetic probes (deterministic per seed; a perfect copier scores 1.0)."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lm_eval")

from harness.config import load_config  # noqa: E402
from harness.data import mirror  # noqa: E402
from harness.data.paths import DataError  # noqa: E402
from harness.data.tokenizer import ByteTokenizer
from harness.evaluation import lm_eval_adapter, lm_eval_tasks  # noqa: E402
from harness.evaluation.loop import TaskContext  # noqa: E402
from harness.hf.causal_lm import HFCausalLM  # noqa: E402
from harness.model.build import build_model  # noqa: E402
from harness.registry import get_task, load_plugins  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
TINY_RUN = ["--preset", "tiny", "--device", "cpu", "--set", "train.tokens=2048", "--set", "train.eval_tokens=256"]
FIXTURE_OF = {"wikitext_2_v1": "wikitext"}  # the v1 overlay reads the same fixture pages


def fixture_require(name):
    folder = FIXTURES / FIXTURE_OF.get(name, name)
    if not folder.is_dir():
        raise DataError(f"dataset {name} is not in the mirror (looked in {folder}); run `harness data fetch {name}`")
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))}


@pytest.fixture(autouse=True)
def fixture_data(monkeypatch):
    monkeypatch.setattr(mirror, "require", fixture_require)


@pytest.fixture(scope="module")
def tiny():
    load_plugins()
    cfg = load_config("tiny")
    torch.manual_seed(0)
    return cfg, build_model("swat", cfg.model).eval()


def small_ctx(cfg, train_length=32, limit=1):
    """A task context whose training length is short, so the length sweeps stay cheap on CPU."""
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_seq_len=train_length))
    return TaskContext(cfg, "test", "swat", "cpu", limit=limit)


def write_checkpoint(folder, model, cfg, **meta):
    """A checkpoint folder as `harness train` leaves it (weights + meta.json), without training."""
    from safetensors.torch import save_model
    folder.mkdir(parents=True)
    save_model(model, str(folder / "model.safetensors"))
    (folder / "meta.json").write_text(json.dumps({"model": "swat", "config": cfg.to_dict(), **meta}))
    return folder


def requests(*args):
    return [SimpleNamespace(args=a) for a in args]


@torch.no_grad()
def direct_logprob(model, context_ids, cont_ids):
    ids = torch.tensor([context_ids + cont_ids])
    logp = F.log_softmax(model(ids[:, :-1]).float(), dim=-1)[0]
    positions = torch.arange(len(context_ids) - 1, ids.shape[1] - 1)
    return float(logp[positions, ids[0, len(context_ids):]].sum())


def test_loglikelihood_equals_direct_computation(tiny):
    cfg, model = tiny
    tok = ByteTokenizer()
    pairs = [("The answer is", " a"), ("The answer is", " b"),  # one-token difference: shared forward
             ("Question: why?\nAnswer:", " because it rains"), ("", "hello"),
             ("x" * 20, " " + "y" * 150),  # a continuation longer than the training length stays whole
             ("hello wor", "ld"), ("hello worl", "x")]  # one input split two ways: it scored "x" after "hello wor"
    for batch_size in (1, 3):
        lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=tok, device="cpu", batch_size=batch_size, max_length=128)
        got = lm.loglikelihood(requests(*pairs), disable_tqdm=True)
        for (ctx, cont), (logprob, _) in zip(pairs, got):
            ctx_ids = tok.encode(ctx) if ctx else [tok.eos_id]
            ctx_ids = ctx_ids[-max(128 + 1 - len(tok.encode(cont)), 1):]
            assert logprob == pytest.approx(direct_logprob(model, ctx_ids, tok.encode(cont)), abs=1e-3)


def test_rolling_scores_reach_the_request_cache_a_chunk_at_a_time(tiny, monkeypatch):
    """Every document's total went to the request cache only once all were scored: a WikiText-2 run
    cut short resumed from nothing, though README says the cache resumes a cut task."""
    cfg, model = tiny
    monkeypatch.setattr(lm_eval_adapter, "ROLLING_CHUNK_WINDOWS", 3)
    docs = requests(*[(f"Document {i}. " * (4 + 3 * i),) for i in range(5)])
    lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=ByteTokenizer(), device="cpu", batch_size=2, max_length=32)
    handed, calls = [], []
    lm.set_cache_hook(SimpleNamespace(add_partial=lambda kind, args, total: handed.append((len(calls), total))))
    score = lm._loglikelihood_tokens
    monkeypatch.setattr(lm, "_loglikelihood_tokens", lambda *a, **k: calls.append(1) or score(*a, **k))
    totals = lm.loglikelihood_rolling(docs, disable_tqdm=True)
    assert len(calls) > 1 and [total for _, total in handed] == totals
    assert handed[0][0] < len(calls)  # the first documents' totals were handed over before the last chunk ran
    whole = lm_eval_adapter.HarnessLM(model=model, tokenizer=ByteTokenizer(), device="cpu", batch_size=2,
                                      max_length=32)
    monkeypatch.setattr(lm_eval_adapter, "ROLLING_CHUNK_WINDOWS", 10 ** 6)
    assert whole.loglikelihood_rolling(docs, disable_tqdm=True) == pytest.approx(totals, abs=1e-4)


def test_rolling_perplexity_is_independent_of_batch_size(tiny):
    cfg, model = tiny
    docs = requests(("A short document.",), ("A longer document " * 30,), ("Third one, medium length. " * 8,))
    totals = {}
    for batch_size, stride in ((1, None), (8, None), (2, 48), (8, 48)):
        lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=ByteTokenizer(), device="cpu", batch_size=batch_size,
                          max_length=64, stride=stride)
        totals[(batch_size, stride)] = lm.loglikelihood_rolling(docs, disable_tqdm=True)
    assert totals[(1, None)] == pytest.approx(totals[(8, None)], abs=1e-3)
    assert totals[(2, 48)] == pytest.approx(totals[(8, 48)], abs=1e-3)
    # a document shorter than the window is one forward after the eos prefix
    tok = ByteTokenizer()
    assert totals[(1, None)][0] == pytest.approx(direct_logprob(model, [tok.eos_id], tok.encode("A short document.")),
                                                 abs=1e-3)
    # every window scores distinct tokens: a stride changes the context, not the token count
    lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=tok, device="cpu", max_length=64, stride=48)
    ids = tok.encode(docs[1].args[0])
    assert sum(len(cont) for _, cont in lm.rolling_windows(ids)) == len(ids)


def test_generate_until_follows_the_greedy_decode_state(tiny):
    cfg, model = tiny
    tok = ByteTokenizer()
    lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=tok, device="cpu")
    prompt = "Once upon a time"
    greedy = tok.decode(model.generate(torch.tensor([tok.encode(prompt)]), max_new_tokens=12)[0].tolist())
    got = lm.generate_until(requests((prompt, {"until": [], "max_gen_toks": 12}),
                                     (prompt, {"until": [greedy[5:7]], "max_gen_toks": 12})), disable_tqdm=True)
    assert got[0] == greedy
    assert got[1] == greedy.split(greedy[5:7])[0]


def test_prompt_templates_compile_once_and_render_as_lm_eval_does(monkeypatch):
    from lm_eval import utils
    original = getattr(utils.apply_template, "original", utils.apply_template)  # lm-eval's, even if wrapped
    monkeypatch.setattr(utils, "apply_template", original)  # restored after the test
    doc = {"text": "He said hello to Sam", "gold": 1, "choices": ["a", "b"]}
    templates = ["{{text.split(' ')[:-1]|join(' ')}}", "{{' ' + text.split(' ')[-1]}}",
                 "{{choices[gold]}}", "{{text|regex_replace('hello', 'bye')}}"]
    expected = [original(t, doc) for t in templates]
    lm_eval_tasks.cache_prompt_templates()
    lm_eval_tasks.cache_prompt_templates()  # idempotent: wraps once
    assert utils.apply_template is not original and utils.apply_template.compiles_once
    assert [utils.apply_template(t, doc) for t in templates] == expected
    compiled = lm_eval_tasks._compiled_template(templates[0])
    assert lm_eval_tasks._compiled_template(templates[0]) is compiled


def test_adapter_is_registered_with_lm_eval(tiny, tmp_path):
    from lm_eval.api.registry import get_model
    cfg, model = tiny
    assert get_model("swat-harness") is lm_eval_adapter.HarnessLM
    ckpt = write_checkpoint(tmp_path / "checkpoint", model, cfg, params=1)
    lm = lm_eval_adapter.HarnessLM.create_from_arg_string(f"checkpoint={ckpt},batch_size=4,stride=64", {"device": "cpu"})
    assert (lm.batch_size, lm.max_length, lm.stride) == (4, cfg.model.max_seq_len, 64)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(lm.model(ids), model(ids), atol=1e-5)


def test_every_lm_eval_task_end_to_end(tiny):
    cfg, model = tiny
    lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=ByteTokenizer(), device="cpu")
    tasks = list(lm_eval_tasks.lm_eval_tasks())
    results = lm_eval_tasks.run_lm_eval(lm, tasks, limit=2, bootstrap_iters=50)
    rows = lm_eval_tasks.result_rows(results, small_ctx(cfg), limit=2, bootstrap_iters=50)
    for task in tasks:
        mine = {r.metric: r for r in rows if r.task == task}
        for metric in lm_eval_tasks.LM_EVAL_TASKS[task].paper_metrics:
            row = mine[metric]
            assert row.extra["paper_metric"] and row.extra["task_version"] is not None
            assert row.n == 2 and row.stderr is not None and np.isfinite(row.value)
    assert "sample_len" not in {r.metric for r in rows}
    # the committed groups (tasks/lm_eval/) resolve to the offline overlays
    manager = lm_eval_tasks.task_manager(lm_eval_tasks.render_overlays(lm_eval_tasks.mirrored_files()))
    assert {"commonsense", "perplexity"} <= set(manager.all_groups)
    assert set(manager.load(["perplexity"])["tasks"]) == {"wikitext", "lambada_openai"}


class Exploding(torch.nn.Module):
    """A model that must not run."""

    def forward(self, ids):
        raise AssertionError("the model ran although it should not have")


def test_a_finished_task_is_answered_from_the_request_cache(tiny, tmp_path):
    cfg, model = tiny
    ctx = small_ctx(cfg, train_length=128, limit=2)
    ctx.options = {"cache_dir": str(tmp_path), "bootstrap_iters": 20}
    first = lm_eval_tasks.lm_eval_task_rows("piqa", model, ByteTokenizer(), ctx)
    again = lm_eval_tasks.lm_eval_task_rows("piqa", Exploding(), ByteTokenizer(), ctx)  # every request is cached
    assert [(r.metric, r.value) for r in first] == [(r.metric, r.value) for r in again]


def test_a_cut_evaluation_keeps_the_answers_it_stored(tiny, tmp_path, monkeypatch):
    """lm-eval's request cache, batched (harness.evaluation.request_cache): an evaluation that fails
    part-way has committed what it scored (every COMMIT_EVERY_S, here 0), in lm-eval's own file
    format, and running it again scores only the rest, to the same results as one uncut run."""
    from sqlitedict import SqliteDict

    from harness.evaluation import request_cache
    monkeypatch.setattr(request_cache, "COMMIT_EVERY_S", 0.0)
    cfg, model = tiny
    forwards = []

    class Counted(torch.nn.Module):
        def __init__(self, fail_at=None):
            super().__init__()
            self.fail_at = fail_at

        def forward(self, ids):
            forwards.append(len(ids))
            if len(forwards) == self.fail_at:
                raise RuntimeError("cut here")
            return model(ids)

    def evaluate(net, cache):
        lm = lm_eval_adapter.HarnessLM(model=net, tokenizer=ByteTokenizer(), device="cpu", batch_size=2,
                                       max_length=128, progress=False)
        return lm_eval_tasks.run_lm_eval(lm, ["piqa"], limit=4, bootstrap_iters=0, cache=cache)["results"]["piqa"]

    whole = evaluate(Counted(), None)
    assert forwards == [2, 2, 2, 2]  # 4 questions x 2 answers, two per forward
    forwards.clear()
    with pytest.raises(RuntimeError, match="cut here"):
        evaluate(Counted(fail_at=3), tmp_path / "piqa")
    with SqliteDict(str(tmp_path / "piqa_rank0.db")) as stored:  # what lm-eval's CachingLM reads
        assert len(stored) == 4
    forwards.clear()
    assert evaluate(Counted(), tmp_path / "piqa") == whole and forwards == [2, 2]


def test_the_request_cache_of_a_sharded_folder_follows_its_weights(tmp_path):
    """Shards copied over a sharded hf: folder in place leave the folder's own size and time as they
    were: the request cache must still be another, or the new weights get the old weights' answers."""
    import os

    from harness.evaluation.sources import HFSource, request_cache
    folder = tmp_path / "hf-model"
    folder.mkdir()
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (folder / shard).write_bytes(b"old weights")
    source = HFSource("hf-model", f"hf:{folder}")
    before, folder_times = request_cache("r", source), folder.stat()
    assert request_cache("r", source) == before  # the same weights resume from their cache
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"new weights")
    os.utime(folder / "model-00002-of-00002.safetensors", ns=(1, 1))
    os.utime(folder, ns=(folder_times.st_atime_ns, folder_times.st_mtime_ns))
    assert request_cache("r", source) != before


def test_missing_data_fails_before_model_work(tiny, monkeypatch):
    def absent(name):
        raise DataError(f"dataset {name} is not in the mirror (looked in /nowhere/{name}); "
                        f"run `harness data fetch {name}`")
    monkeypatch.setattr(mirror, "require", absent)
    cfg, model = tiny
    lm = lm_eval_adapter.HarnessLM(model=Exploding(), tokenizer=ByteTokenizer(), device="cpu", max_length=32)
    with pytest.raises(DataError, match="piqa.*looked in /nowhere/piqa.*harness data fetch piqa"):
        lm_eval_tasks.run_lm_eval(lm, ["piqa"])
    with pytest.raises(DataError, match="wikitext"):
        get_task("length").run(Exploding(), ByteTokenizer(), small_ctx(cfg))


def test_harness_eval_cli_writes_rows_and_resumes(tiny, tmp_path, capsys, monkeypatch):
    from harness.cli import main
    cfg, model = tiny
    write_checkpoint(tmp_path / "runs" / "r" / "swat" / "checkpoint", model, cfg, params=123, tokens=456)
    argv = ["eval", "--run", "r", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--tasks", "boolq,mqar", "--limit", "2", "--device", "cpu", "--bootstrap-iters", "20"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "results" / "r" / "rows.jsonl").read_text().splitlines()]
    boolq = [r for r in rows if r["task"] == "boolq" and r["metric"] == "acc"]
    assert len(boolq) == 1 and boolq[0]["n"] == 2 and boolq[0]["limit"] == 2 and boolq[0]["params"] == 123
    assert {r["task"] for r in rows} == {"boolq", "mqar"} and all("eval_seconds" in r for r in rows)
    assert main(argv) == 0
    assert "all tasks done already" in capsys.readouterr().out
    before = (tmp_path / "results" / "r" / "rows.jsonl").read_text()
    monkeypatch.setattr(mirror, "require", lambda name: fixture_require("absent-" + name))
    assert main(argv + ["--force"]) == 2  # missing data: one error line, nothing rewritten
    assert "error:" in capsys.readouterr().err
    assert (tmp_path / "results" / "r" / "rows.jsonl").read_text() == before


def test_length_sweep_scores_the_same_tokens_at_every_length(tiny):
    cfg, model = tiny
    rows = get_task("length").run(model, ByteTokenizer(), small_ctx(cfg, train_length=32, limit=None))
    overall = [r for r in rows if r.metric == "ppl" and r.extra.get("position_bucket") is None]
    contexts = [r.extra["context"] for r in overall]
    assert contexts == sorted(contexts) and contexts[0] == 32 and len(contexts) >= 3
    assert len({r.n for r in overall}) == 1 and overall[0].extra["dataset"] == "wikitext"
    longest = max(contexts)
    buckets = [r for r in rows if r.metric == "loss" and r.extra["context"] == longest
               and r.extra.get("position_bucket") is not None]
    assert buckets[0].extra["position_bucket"] == "0-32"
    assert sum(r.n for r in buckets) == overall[0].n


@pytest.mark.parametrize("shared", [False, True])
def test_length_sweep_out_of_memory_stops_alone_and_fails_beside_others(tiny, monkeypatch, capsys, shared):
    """Alone on its device the sweep ends at the last length that fit; where other processes hold
    part of the GPU their share would decide that length, so the task fails instead (to run again)."""
    import tasks.length as length_task
    from harness import memory
    from harness.memory import OutOfMemory
    cfg, model = tiny
    real = length_task.window_losses

    def squeezed(model, batch, autocast):  # Triton's launcher raises a plain RuntimeError
        if batch.shape[1] > 65:
            raise RuntimeError("Triton Error [CUDA]: out of memory")
        return real(model, batch, autocast)
    monkeypatch.setattr(length_task, "window_losses", squeezed)
    monkeypatch.setattr(memory, "gpu_is_shared", lambda device: shared)
    ctx = small_ctx(cfg, train_length=32, limit=None)
    if shared:
        with pytest.raises(OutOfMemory, match="length: swat at 128 tokens ran out of memory on cpu"):
            get_task("length").run(model, ByteTokenizer(), ctx)
        return
    rows = get_task("length").run(model, ByteTokenizer(), ctx)
    assert sorted({r.extra["context"] for r in rows}) == [32, 64]
    assert "ran out of memory at 128 tokens on cpu; the sweep stops at 64" in capsys.readouterr().err


class CopyOracle(torch.nn.Module):
    """Predicts the token that followed the most recent earlier occurrence of the longest suffix
    (up to 8 tokens) of the sequence so far: a model that copies perfectly from its context."""

    def __init__(self, vocab_size, order=8):
        super().__init__()
        self.vocab_size, self.order = vocab_size, order

    def next_tokens(self, seq):
        seen, out = {}, []
        for t in range(len(seq)):
            guess = 0
            for k in range(min(self.order, t + 1), 0, -1):
                follow = seen.get(tuple(seq[t - k + 1:t + 1]))
                if follow is not None:
                    guess = follow
                    break
            out.append(guess)
            for k in range(1, min(self.order, t) + 1):  # n-grams that end at t - 1 are followed by seq[t]
                seen[tuple(seq[t - k:t])] = seq[t]
        return out

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.vocab_size)
        for b, seq in enumerate(ids.tolist()):
            logits[b, torch.arange(ids.shape[1]), self.next_tokens(seq)] = 1.0
        return logits

    def generate(self, ids, max_new_tokens, **_):
        seq = ids[0].tolist()
        for _ in range(max_new_tokens):
            seq.append(self.next_tokens(seq)[-1])
        return torch.tensor([seq[ids.shape[1]:]])


def test_probe_generators_are_deterministic_per_seed():
    from tasks import retrieval as r
    tok = ByteTokenizer()
    a, b = r.passkey_prompt(tok, 1024, 0.5, 0), r.passkey_prompt(tok, 1024, 0.5, 0)
    assert a == b and a != r.passkey_prompt(tok, 1024, 0.5, 1) and len(a.ids) <= 1024
    head, question = tok.encode(r.INSTRUCTION), tok.encode(r.QUESTION)
    first, last = r.passkey_prompt(tok, 1024, 0.0, 0), r.passkey_prompt(tok, 1024, 1.0, 0)
    needle = tok.encode(r.NEEDLE.format(key=first.key))
    assert first.ids[len(head):len(head) + len(needle)] == needle  # depth 0: right after the instructions
    needle = tok.encode(r.NEEDLE.format(key=last.key))
    assert last.ids[-len(question) - len(needle):-len(question)] == needle  # depth 1: right before the question
    x, y = r.mqar_example(tok, 256, 8, 3), r.mqar_example(tok, 256, 8, 3)
    assert all(np.array_equal(p, q) for p, q in zip(x, y))
    assert not np.array_equal(x[0], r.mqar_example(tok, 256, 8, 4)[0])
    seq, positions, values = x
    assert np.array_equal(seq[positions + 1], values) and len(seq) == 256


def test_a_perfect_copier_scores_100_percent(tiny):
    cfg, _ = tiny
    oracle, tok = CopyOracle(257), ByteTokenizer()
    ctx = small_ctx(cfg, train_length=32, limit=2)
    passkey = get_task("passkey").run(oracle, tok, ctx)
    mqar = get_task("mqar").run(oracle, tok, ctx)
    assert {r.extra["depth"] for r in passkey} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert {r.extra["num_kv"] for r in mqar} == {4, 8, 16, 32, 64}
    assert all(r.value == 1.0 for r in passkey + mqar)


class FakeHF(torch.nn.Module):
    """The transformers calling convention (logits, past_key_values) over a harness model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, use_cache=False, past_key_values=None):
        if past_key_values is not None:
            logits, state = self.model.step(input_ids[:, -1], past_key_values)
            logits = logits[:, None]
        elif use_cache:
            logits, state = self.model.prefill(input_ids)
        else:
            logits, state = self.model(input_ids), None
        return SimpleNamespace(logits=logits, past_key_values=state)


def test_hf_wrapper_keeps_the_model_contract(tiny):
    """Also in generation's options: the wrapper's generate was greedy whatever it was asked."""
    cfg, model = tiny
    wrapped = HFCausalLM(FakeHF(model))
    ids = torch.tensor([ByteTokenizer().encode("Hugging Face checkpoints decode through their cache")])
    assert torch.allclose(wrapped(ids), model(ids))
    assert torch.equal(wrapped.generate(ids, max_new_tokens=6), model.generate(ids, max_new_tokens=6))
    # sampling and eos as the backbone does them (the wrapper dropped temperature, top_k and eos_id)
    sampled = [m.generate(ids, 6, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
               for m in (wrapped, model)]
    assert torch.equal(*sampled)
    eos = int(model.generate(ids, max_new_tokens=1)[0, 0])
    assert wrapped.generate(ids, max_new_tokens=6, eos_id=eos).shape == (1, 1)


def test_llama_hf_without_transformers_names_the_extra(monkeypatch, capsys, tmp_path):
    from harness.cli import main
    monkeypatch.setitem(sys.modules, "transformers", None)  # not installed
    out = tmp_path / "run"
    assert main(["train", "--model", "llama_hf", "--preset", "tiny", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: llama_hf needs transformers: pip install 'swat-harness[hf]'"
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_eval_tasks_on_cuda_match_cpu(tiny):
    cfg, model = tiny
    tok = ByteTokenizer()
    pairs = requests(("The answer is", " a"), ("Question: why?\nAnswer:", " because it rains"))
    cpu = lm_eval_adapter.HarnessLM(model=model, tokenizer=tok, device="cpu").loglikelihood(pairs, disable_tqdm=True)
    gpu_model = build_model("swat", cfg.model, "cuda").eval()
    gpu_model.load_state_dict(model.state_dict())
    gpu = lm_eval_adapter.HarnessLM(model=gpu_model, tokenizer=tok, device="cuda", dtype="fp32").loglikelihood(pairs,
                                                                                                 disable_tqdm=True)
    assert [c[0] for c in cpu] == pytest.approx([g[0] for g in gpu], abs=1e-2)
    ctx = dataclasses.replace(small_ctx(cfg, limit=1), device="cuda")
    for task in ("length", "passkey", "mqar"):
        assert get_task(task).run(gpu_model, tok, ctx)


def test_bad_hugging_face_folders_and_twin_names_are_one_error_with_nothing_written(tiny, tmp_path, capsys):
    """hf: with no path, a folder without config.json or with a damaged one or truncated weights, two
    checkpoints whose folders share a name (their rows would mix under one model name), and a run name
    that is a path: one error line each, and no results folder (nor rows beside it)."""
    from harness.cli import main
    cfg, model = tiny
    for name in ("x", "y"):
        write_checkpoint(tmp_path / name / "same" / "checkpoint", model, cfg, params=1, tokens=1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_text("{garbage")
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "config.json").write_text("{}")
    from safetensors.torch import save_model
    save_model(model, str(tmp_path / "truncated" / "model.safetensors"))
    weights = (tmp_path / "truncated" / "model.safetensors").read_bytes()
    (tmp_path / "truncated" / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    base = ["eval", "--tasks", "smoke", "--limit", "1", "--device", "cpu", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs")]
    cases = [(["--models", "hf:"], "hf:: no such folder"),
             (["--models", f"hf:{tmp_path / 'empty'}"], "has no config.json"),
             (["--models", f"hf:{tmp_path / 'damaged'}"], "transformers cannot load it"),
             (["--models", f"hf:{tmp_path / 'truncated'}"], "truncated/model.safetensors is damaged"),
             (["--checkpoint", str(tmp_path / "x" / "same" / "checkpoint"), "--checkpoint",
               str(tmp_path / "y" / "same" / "checkpoint")], "would all be the model 'same'"),
             (["--run", "..", "--checkpoint", str(tmp_path / "x" / "same" / "checkpoint")], "--run must be"),
             (["--run", "a/b", "--checkpoint", str(tmp_path / "x" / "same" / "checkpoint")], "--run must be")]
    for args, message in cases:
        assert main(base + args) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert err.startswith("error:") and message in err
        assert not (tmp_path / "results").exists() and not (tmp_path / "rows.jsonl").exists()


def llama_folder(folder):
    """A tiny Llama checkpoint folder with a character-level tokenizer, as save_pretrained writes it."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"</s>": 0, **{chr(c): c - 31 for c in range(32, 127)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    cfg = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_hf_checkpoint_through_lm_eval_adapter(tmp_path, capfd):
    llama_folder(tmp_path)
    lm = lm_eval_adapter.HarnessLM(checkpoint=f"hf:{tmp_path}", device="cpu")
    assert "torch_dtype" not in capfd.readouterr().err  # loaded with transformers' current keyword, dtype=
    assert lm.max_length == 64 and lm.tok_encode("ab") == [66, 67]
    [(logprob, _)] = lm.loglikelihood(requests(("Hi there", " you")), disable_tqdm=True)
    assert logprob == pytest.approx(direct_logprob(lm.model, lm.tok_encode("Hi there"), lm.tok_encode(" you")),
                                    abs=1e-4)
    ids = torch.tensor([lm.tok_encode("Hi there")])
    with torch.no_grad():
        greedy = lm.model.hf.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:]
    assert torch.equal(lm.model.generate(ids, max_new_tokens=4)[0], greedy)


# ---------------------------------------------------------------- reruns: what counts as done

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """results/ and runs/ of `harness run --run base --models swat,transformer --tasks smoke` (tiny);
    tests work on copies (`copied_run`)."""
    from harness.cli import main
    root = tmp_path_factory.mktemp("trained")
    assert main(["run", "--run", "base", "--models", "swat,transformer", "--tasks", "smoke", *TINY_RUN,
                 "--results", str(root / "results"), "--runs", str(root / "runs")]) == 0
    return root


def copied_run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path, dirs_exist_ok=True)
    return ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]


def files_of(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows_of(rows_file):
    return [json.loads(line) for line in rows_file.read_text().splitlines()]


def test_run_refuses_another_config_even_with_every_task_done(trained_run, tmp_path, capsys):
    """A finished model's rows are not reused (nor run.json relabelled) under another config: the
    checkpoint's config, else the training record's (checkpoints are not committed), must match,
    and run.json's may change only while no other model's rows stay."""
    from harness.cli import main
    folders = copied_run(trained_run, tmp_path)
    base = ["run", "--run", "base", "--tasks", "smoke", *TINY_RUN, *folders]
    before = files_of(tmp_path / "results")
    others = "holds rows of transformer trained with another config (model.window 32, now 16)"
    cases = [(["--models", "swat", "--set", "model.window=16"], "swat trained with another config (model.window 32"),
             (["--models", "swat", "--set", "train.tokens=4096"], "(train.tokens 2048, now 4096)"),
             (["--models", "swat", "--set", "model.window=16", "--force"], others),
             (["--models", "swat", "--run-name", "a/b"], "--run must be a non-empty name")]
    for args, message in cases:
        assert main(base + args) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert err.startswith("error:") and message in err
        assert files_of(tmp_path / "results") == before
    shutil.rmtree(tmp_path / "runs")
    assert main(base + ["--models", "swat", "--set", "model.window=16"]) == 2
    assert "base/train/swat_meta.json holds swat trained with another config" in capsys.readouterr().err
    assert main(base + ["--models", "swat,transformer"]) == 0
    assert capsys.readouterr().out.count("all tasks done already") == 2


def test_an_interrupted_forced_retraining_is_redone(trained_run, tmp_path, capsys, monkeypatch):
    """--force drops the model's rows and training record before it retrains, so that a retraining
    cut short leaves nothing that a rerun would take for done."""
    from harness.cli import main
    from harness.evaluation import sources
    from harness.training.checkpoint import open_run_dir
    argv = ["run", "--run", "base", "--models", "transformer", "--tasks", "smoke", *TINY_RUN,
            *copied_run(trained_run, tmp_path)]
    real_train = sources.train

    def cut(name, cfg, run_dir, device, **options):  # starts afresh as --force does, then is interrupted
        open_run_dir(run_dir, resume=False)
        raise KeyboardInterrupt
    monkeypatch.setattr(sources, "train", cut)
    assert main(argv + ["--force"]) == 130
    assert {r["model"] for r in rows_of(tmp_path / "results" / "base" / "rows.jsonl")} == {"swat"}
    assert not (tmp_path / "results" / "base" / "train" / "transformer_meta.json").exists()
    monkeypatch.setattr(sources, "train", real_train)
    capsys.readouterr()
    assert main(argv) == 0
    assert "transformer: trained" in capsys.readouterr().out
    assert {r["model"] for r in rows_of(tmp_path / "results" / "base" / "rows.jsonl")} == {"swat", "transformer"}


def test_eval_reuses_rows_only_of_the_same_weights_and_limit(trained_run, tmp_path, capsys):
    """Two checkpoints in folders of one name evaluated one after the other into one results folder,
    and a full evaluation after a limited one: each is redone. Every row records the weights and the
    --limit (smoke, whose task code does not, too); full rows count as done for a limited command."""
    from harness.cli import main
    for model, folder in (("swat", "A"), ("transformer", "B")):
        shutil.copytree(trained_run / "runs" / "base" / model / "checkpoint",
                        tmp_path / folder / "lr0.01-seed1" / "checkpoint")
    rows_file = tmp_path / "results" / "eval" / "rows.jsonl"

    def evaluate(folder, *extra):
        assert main(["eval", "--checkpoint", str(tmp_path / folder / "lr0.01-seed1" / "checkpoint"), "--tasks",
                     "smoke", "--device", "cpu", "--results", str(tmp_path / "results"), *extra]) == 0
        return capsys.readouterr().out, rows_of(rows_file)
    _, swat = evaluate("A", "--limit", "1")
    assert {(r["limit"], r["n"]) for r in swat} == {(1, 128)}
    out, transformer = evaluate("B", "--limit", "1")
    assert "lr0.01-seed1: redoing smoke" in out and len(transformer) == len(swat)
    assert {r["weights"] for r in swat}.isdisjoint(r["weights"] for r in transformer)
    out, full = evaluate("B")
    assert "redoing smoke" in out and {("limit" in r, r["n"]) for r in full} == {(False, 256)}
    out, again = evaluate("B", "--limit", "1")
    assert "all tasks done already" in out and again == full


def test_eval_refuses_a_checkpoint_in_another_models_folder(trained_run, tmp_path, capsys):
    """runs/R/swat/checkpoint holding a transformer would write transformer's scores as swat's rows."""
    from harness.cli import main
    shutil.copytree(trained_run / "runs" / "base" / "transformer" / "checkpoint",
                    tmp_path / "runs" / "R" / "swat" / "checkpoint")
    for models in (["--models", "swat"], []):  # named, or every checkpoint of the run
        assert main(["eval", "--run", "R", *models, "--tasks", "smoke", "--device", "cpu", "--results",
                     str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert err.startswith("error:") and "holds a transformer checkpoint, but its folder names it swat" in err
        assert not (tmp_path / "results").exists()
    assert main(["run", "--run", "R", "--models", "swat", "--tasks", "smoke", *TINY_RUN, "--results",
                 str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]) == 2  # reused by a run: the same
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "holds a transformer checkpoint, but its folder names it swat" in err


def test_hf_models_score_smoke_on_the_corpus_given(tmp_path, capsys):
    """An hf: folder does not say what it was trained on: --corpus names the held-out corpus, which
    its rows state; it is checked before anything is written, and refused without an hf: model."""
    from harness.cli import main
    folder = llama_folder(tmp_path / "llama")
    base = ["eval", "--models", f"hf:{folder}", "--tasks", "smoke", "--limit", "1", "--device", "cpu",
            "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    assert main(base + ["--corpus", "bundled"]) == 0
    rows = rows_of(tmp_path / "results" / "eval" / "rows.jsonl")
    assert {(r["model"], r["corpus"], r["limit"]) for r in rows} == {("hf-llama", "bundled", 1)}
    capsys.readouterr()
    small = tmp_path / "small-corpus"  # another corpus, small enough to tokenize in a moment
    small.mkdir()
    words = "the window slides over every token of the text and sums what it sees".split()
    (small / "docs.jsonl").write_text("".join(json.dumps({"text": " ".join(words[(i + j) % len(words)]
                                                                             for j in range(300))}) + "\n"
                                              for i in range(200)))
    assert main(base + ["--corpus", str(small)]) == 0  # not done: its rows are of another corpus
    assert "hf-llama: redoing smoke" in capsys.readouterr().out
    assert {r["corpus"] for r in rows_of(tmp_path / "results" / "eval" / "rows.jsonl")} == {str(small)}
    without_hf = "--corpus sets the held-out corpus of hf: models"
    for args, message in ((["--corpus", str(tmp_path / "nowhere"), "--run", "other"], "nowhere"),
                          (["--models", "swat", "--corpus", "bundled", "--run", "other"], without_hf)):
        assert main(base + args) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert err.startswith("error:") and message in err
        assert not (tmp_path / "results" / "other").exists()


def test_a_task_whose_rows_carry_other_names_is_found_done_and_replaced():
    """speed writes rows named speed_train, speed_prefill and speed_decode: matched by its own name, a
    rerun found it never done, measured it again and appended its rows once more."""
    from types import SimpleNamespace

    from harness.config import load_config
    from harness.evaluation.loop import TaskContext, pending_tasks
    from harness.registry import get_task
    from harness.results.store import Row
    speed = get_task("speed")
    assert speed.row_task_names == ("speed_train", "speed_prefill", "speed_decode")
    source = SimpleNamespace(name="swat", checkpoint="runs/r/swat/checkpoint", weights_id=lambda: "w1", corpus=None)
    row = Row("r", "swat", "tiny", "speed_decode", "tokens_per_s", 5.0, device="cpu",
              extra={"weights": "w1", "length": 64})
    assert pending_tasks(source, [speed], [row], None, False, lambda m: None, "cpu") == []
    assert pending_tasks(source, [speed], [row], None, False, lambda m: None, "NVIDIA H200") == [speed]  # timings
    other = Row("r", "swat", "tiny", "speed_decode", "tokens_per_s", 5.0, extra={"weights": "w0", "length": 64})
    assert pending_tasks(source, [speed], [other], None, False, lambda m: None, "cpu") == [speed]
    ctx = TaskContext(load_config("tiny"), "r", "swat", "cpu", None, None, source.checkpoint, None, {})
    assert ctx.owns(row, "speed") and not ctx.owns(row, "smoke")


def test_length_rows_of_the_v1_text_are_redone_once_the_raw_text_is_mirrored(capsys):
    """length reads the raw WikiText-2 when it is mirrored, else the tokenized v1 copy: its rows of the
    v1 copy, kept as done after the raw text came, stood in tables beside other models' rows of the
    raw text (the same weights scored 26.3 and 26.7)."""
    from harness.evaluation.loop import pending_tasks
    from harness.results.store import Row
    length = get_task("length")
    source = SimpleNamespace(name="swat", checkpoint="runs/r/swat/checkpoint", weights_id=lambda: "w1", corpus=None)

    def row(dataset):
        return Row("r", "swat", "tiny", "length", "ppl", 26.3, extra={"weights": "w1", "dataset": dataset})
    assert mirror.require("wikitext")  # the fixtures hold the raw text
    assert pending_tasks(source, [length], [row("wikitext")], None, False, print) == []
    assert pending_tasks(source, [length], [row("wikitext_2_v1")], None, False, print) == [length]
    assert "redoing length" in capsys.readouterr().out


def test_a_retrained_checkpoint_is_not_scored_into_its_runs_folder_under_the_old_config(trained_run, tmp_path,
                                                                                         capsys):
    """run.json's config labels every row of a run: a checkpoint retrained by `harness train` at another
    config and evaluated with `eval --run` went in under the old config's labels."""
    from harness.cli import main
    folders = copied_run(trained_run, tmp_path)
    assert main(["train", "--model", "swat", "--out", str(tmp_path / "runs" / "base" / "swat"), "--no-resume",
                 "--quiet", *TINY_RUN, "--set", "train.tokens=4096"]) == 0
    capsys.readouterr()
    before = files_of(tmp_path / "results")
    assert main(["eval", "--run", "base", "--tasks", "smoke", "--device", "cpu", *folders]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "run.json records the config its rows were made at" in err and "(train.tokens 2048, now 4096)" in err
    assert "--run NEW_NAME" in err and files_of(tmp_path / "results") == before


def test_an_eval_folder_records_its_checkpoints_config_and_refuses_another(trained_run, tmp_path, capsys):
    """A folder `harness eval` made recorded no config, so a checkpoint at another config (window 16)
    was scored into it and its rows shown under one model line with the first checkpoint's; two
    checkpoints at different configs in one eval are refused alike."""
    from harness.cli import main
    folders = copied_run(trained_run, tmp_path)
    base = str(tmp_path / "runs" / "base" / "swat" / "checkpoint")
    other = tmp_path / "runs" / "w16" / "swat"
    assert main(["train", "--model", "swat", "--out", str(other), "--quiet", *TINY_RUN, "--set", "model.window=16"]) == 0
    assert main(["eval", "--run", "ev", "--checkpoint", base, "--tasks", "smoke", "--device", "cpu", *folders]) == 0
    assert json.loads((tmp_path / "results" / "ev" / "run.json").read_text())["config"]["model"]["window"] != 16
    capsys.readouterr()
    before = files_of(tmp_path / "results")
    assert main(["eval", "--run", "ev", "--checkpoint", str(other / "checkpoint"), "--tasks", "smoke", "--device",
                 "cpu", *folders]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "run.json records the config its rows were made at" in err and "model.window" in err
    longer = tmp_path / "runs" / "t4k" / "transformer"
    assert main(["train", "--model", "transformer", "--out", str(longer), "--quiet", *TINY_RUN,
                 "--set", "train.tokens=4096"]) == 0
    capsys.readouterr()
    before = files_of(tmp_path / "results")
    assert main(["eval", "--run", "both", "--checkpoint", base, "--checkpoint", str(longer / "checkpoint"),
                 "--tasks", "smoke", "--device", "cpu", *folders]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "trained with different configs" in err and "--run NAME" in err
    assert files_of(tmp_path / "results") == before


def test_a_forced_retraining_says_which_rows_it_drops_and_a_limit_never_scores_more_than_a_full_run(
        trained_run, tmp_path, capsys):
    from harness.cli import main
    folders = copied_run(trained_run, tmp_path)
    assert main(["run", "--run", "base", "--models", "swat", "--tasks", "smoke", "--force", *TINY_RUN, *folders]) == 0
    assert "swat: dropped its rows of smoke: they describe the weights being retrained" in capsys.readouterr().out
    limited = tmp_path / "limited"
    assert main(["eval", "--checkpoint", str(tmp_path / "runs" / "base" / "swat" / "checkpoint"), "--tasks", "smoke",
                 "--limit", "5", "--device", "cpu", "--results", str(limited)]) == 0
    assert {r["n"] for r in rows_of(limited / "eval" / "rows.jsonl")} == {256}  # 5 x 128 tokens, capped at eval_tokens


# ---------------------------------------------------------------- --limit: recorded only where it cut

def test_rows_carry_a_limit_only_where_it_cut_the_task(tiny):
    """A task says on its rows whether --limit cut it (`ctx.limit_if_cut`); stamp_rows keeps what it
    says, drops a None, and stamps the limit on a row that says nothing (a plugin's task), so that a
    task that may have been cut never passes for a complete one."""
    from harness.evaluation.loop import stamp_rows
    cfg, _ = tiny
    for limit, expected in ((3, ["none", 3, 3]), (None, ["none", "none", "none"])):
        ctx = small_ctx(cfg, limit=limit)
        rows = [ctx.row("smoke", "loss", 1.0, limit=ctx.limit_if_cut(available)) for available in (2, 5)]
        rows.append(ctx.row("smoke", "loss", 1.0))  # says nothing
        stamp_rows(rows, ctx, get_task("smoke"), 0.0)
        assert [r.extra.get("limit", "none") for r in rows] == expected
    ctx = small_ctx(cfg, limit=3)
    assert [(ctx.take(n), ctx.limit_if_cut(n)) for n in (2, 3, 5)] == [(2, None), (3, None), (3, 3)]


class Uniform(torch.nn.Module):
    """Equal logits for every byte: a model that costs nothing to run."""

    def forward(self, ids):
        return torch.zeros(*ids.shape, 257)


@pytest.mark.parametrize("name", ["smoke", "length", "passkey", "mqar", "piqa"])
def test_each_task_records_the_limit_only_where_it_scored_fewer_examples_than_it_has(tiny, name):
    """--limit 100000 on tasks far smaller than that (held-out sequences, windows, samples per cell,
    lm-eval's documents) stamped `limit: 100000` into every row: tables marked them § and a complete
    run redid them. Each task now records the limit only where it cut (length: at training length 8
    the fixture's test stream holds 3 windows of the longest length, 128)."""
    cfg, _ = tiny
    for limit, recorded in ((100_000, None), (1, 1)):
        ctx = small_ctx(cfg, train_length=8 if name == "length" else 32, limit=limit)
        rows = get_task(name).run(Uniform(), ByteTokenizer(), ctx)
        assert rows and {r.extra.get("limit") for r in rows} == {recorded}


def test_a_limit_that_covers_the_task_leaves_complete_rows_that_any_run_reuses(tiny, tmp_path, capsys):
    """`harness eval --limit 100000` on tasks that have fewer examples writes complete rows, which a
    run without --limit reuses; a limit that cut them is recorded, and such rows are redone for a
    run that would not cut."""
    from harness.cli import main
    cfg, model = tiny
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_tokens=256))  # 2 held-out sequences
    write_checkpoint(tmp_path / "runs" / "r" / "swat" / "checkpoint", model, cfg, params=1, tokens=1)
    argv = ["eval", "--run", "r", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--tasks", "smoke,piqa", "--device", "cpu", "--bootstrap-iters", "20"]

    def evaluate(*extra):
        assert main(argv + list(extra)) == 0
        return capsys.readouterr().out, rows_of(tmp_path / "results" / "r" / "rows.jsonl")
    _, rows = evaluate("--limit", "100000")
    assert {r["task"] for r in rows} == {"smoke", "piqa"} and not any("limit" in r for r in rows)
    out, again = evaluate()
    assert "all tasks done already" in out and again == rows
    _, cut = evaluate("--limit", "1", "--force")
    assert {(r["task"], r["limit"]) for r in cut} == {("smoke", 1), ("piqa", 1)}
    out, _ = evaluate("--limit", "100000")
    assert "redoing smoke, piqa" in out


def test_the_adapter_defaults_to_the_harness_device_and_refuses_cuda_where_there_is_none(tiny, monkeypatch):
    """lm-eval hands its --device to the model: `cuda` on a machine without CUDA failed deep in the
    model's build with a traceback; no device at all runs where the harness's commands do."""
    from harness.config import ConfigError
    cfg, model = tiny
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^cuda asked for, but no CUDA GPU is visible here; use --device cpu$"):
        lm_eval_adapter.HarnessLM(model=model, tokenizer=ByteTokenizer(), device="cuda")
    lm = lm_eval_adapter.HarnessLM(model=model, tokenizer=ByteTokenizer())
    assert lm._device == torch.device("cpu")


def test_harness_lm_eval_runs_without_cuda_and_says_a_harness_error_in_one_line(tiny, tmp_path, monkeypatch,
                                                                             capsys):
    """The README's `harness-lm-eval` command on a machine without CUDA: lm-eval's default device
    (cuda:0) was used, a traceback; `--device cuda` there, or a harness error, is one `error:` line
    (after lm-eval's own log lines)."""
    from harness.lm_eval_cli import lm_eval_cli
    cfg, model = tiny
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt = write_checkpoint(tmp_path / "checkpoint", model, cfg, params=1)
    command = ["harness-lm-eval", "--model", "swat-harness", "--tasks", "piqa", "--limit", "1"]
    monkeypatch.setattr(sys, "argv", [*command, "--model_args", f"checkpoint={ckpt}"])
    lm_eval_cli()
    assert "|piqa" in capsys.readouterr().out
    # a device in --model_args is the user's, beside the one lm-eval hands the model (not two values)
    monkeypatch.setattr(sys, "argv", [*command, "--model_args", f"checkpoint={ckpt},device=cpu,batch_size=2"])
    lm_eval_cli()
    assert "|piqa" in capsys.readouterr().out
    for args, message in ((["--model_args", f"checkpoint={ckpt}", "--device", "cuda"],
                           "error: cuda asked for, but no CUDA GPU is visible here; use --device cpu"),
                          (["--model_args", f"checkpoint={tmp_path / 'none'}"],
                           f"error: {tmp_path / 'none'} is not a checkpoint folder")):
        monkeypatch.setattr(sys, "argv", [*command, *args])
        with pytest.raises(SystemExit) as exit_:
            lm_eval_cli()
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith(message)


def test_model_args_win_over_the_settings_lm_eval_hands_the_model_too(tiny, tmp_path):
    """lm-eval passes its --device and --batch_size beside --model_args: a device or batch size spelled
    in --model_args is the user's choice, not a TypeError for two values of one argument."""
    cfg, model = tiny
    ckpt = write_checkpoint(tmp_path / "checkpoint", model, cfg, params=1)
    lm = lm_eval_adapter.HarnessLM.create_from_arg_string(f"checkpoint={ckpt},device=cpu,batch_size=3",
                                                          {"device": "cuda:0", "batch_size": 64})
    assert (str(lm.device), lm.batch_size) == ("cpu", 3)
    lm = lm_eval_adapter.HarnessLM.create_from_arg_obj({"checkpoint": str(ckpt), "device": "cpu"}, {"device": "cuda:0"})
    assert str(lm.device) == "cpu"


def test_a_corrupt_stored_row_says_its_task_may_count_as_done(tiny, tmp_path, capsys):
    """A damaged line of rows.jsonl was skipped with a warning, and its task still counted as done by
    its other rows, with no word of the way out."""
    from harness.cli import main
    cfg, model = tiny
    ckpt = write_checkpoint(tmp_path / "checkpoint", model, cfg, params=1)
    argv = ["eval", "--checkpoint", str(ckpt), "--tasks", "smoke", "--device", "cpu", "--results", str(tmp_path / "r"),
            "--run", "e"]
    assert main(argv) == 0
    rows = tmp_path / "r" / "e" / "rows.jsonl"
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join([lines[0][:20]] + lines[1:]) + "\n")
    capsys.readouterr()
    assert main(argv) == 0
    said = "".join(capsys.readouterr())
    assert f"{rows}:1: skipped a corrupt row" in said and "restore the line, or pass --force to score it again" in said


class PrefixedBytes(ByteTokenizer):
    """Bytes after one marker token per encode, as SentencePiece's dummy prefix: a filler tokenized
    alone takes a token more than each filler of a run."""

    def encode(self, text: str) -> list[int]:
        return [0] + super().encode(text)


def test_passkey_prompts_fall_short_of_their_length_by_less_than_one_filler():
    """Rows report the nominal length: a prompt sized by a filler tokenized alone fell fillers short."""
    from tasks import retrieval as r
    tok = PrefixedBytes()
    for depth in r.PASSKEY_DEPTHS:
        prompt = r.passkey_prompt(tok, 16384, depth, 0)
        assert 16384 - len(r.FILLER) < len(prompt.ids) <= 16384


def test_length_grid_holds_the_training_length_and_16x_it():
    """The position buckets split at the training length, also where it is no power of two."""
    from tasks.length import bucket_edges, eval_lengths
    assert eval_lengths(1024) == [512, 1024, 2048, 4096, 8192, 16384]  # the study's grid, as before
    assert eval_lengths(128) == [128, 256, 512, 1024, 2048]
    lengths = eval_lengths(768)
    assert lengths[0] == 768 and lengths[-1] == 16 * 768
    assert (768, 1536) in bucket_edges(lengths, 3072)


def test_a_length_sweep_out_of_memory_at_its_first_length_says_no_length_fits(tiny, monkeypatch, capsys):
    import tasks.length as length_task
    from harness import memory
    cfg, model = tiny

    def squeezed(model, batch, autocast):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(length_task, "window_losses", squeezed)
    monkeypatch.setattr(memory, "gpu_is_shared", lambda device: False)
    assert get_task("length").run(model, ByteTokenizer(), small_ctx(cfg, train_length=32, limit=None)) == []
    assert "ran out of memory at 32 tokens on cpu; no length fits" in capsys.readouterr().err
