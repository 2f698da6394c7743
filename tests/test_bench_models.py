"""`harness bench models`: sweep mechanics on CPU at tiny sizes (timings themselves are not tested)."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from harness.bench import models as bm
from harness.config import ConfigError, load_config
from harness.model.attention import FULL_CACHE_MIN_GROWTH
from harness.model.build import build_model

LENGTHS = {"train": [32, 64], "prefill": [32], "decode": [16, 48]}
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")


def test_sweep_points_and_rows():
    cfg = load_config("tiny")
    points = bm.sweep_model("swat", cfg, bm.SWEEPS, LENGTHS, torch.device("cpu"), 128, (1, 2))
    assert [(p.sweep, p.length, p.batch) for p in points] == [
        ("train", 32, 4), ("train", 64, 2), ("prefill", 32, 1),
        ("decode", 16, 1), ("decode", 16, 2), ("decode", 48, 1), ("decode", 48, 2)]
    assert all(p.status == "ok" and p.metrics for p in points)
    decode = [p for p in points if p.sweep == "decode"]
    # swat's ring buffer: the state does not grow with the context
    assert decode[0].metrics["state_gb"] == decode[2].metrics["state_gb"] > 0
    # on the CPU decode runs eagerly, and the rows say so
    assert all(p.notes["cuda_graph"] == 0 and "replicated" in p.notes["decode_state"] for p in decode)
    rows = bm.points_to_rows(points, lambda model, task, metric, value, **extra: (task, metric, value, extra))
    assert ("speed_train", "tokens_per_s") in {(t, m) for t, m, _, _ in rows}
    assert all(e["cuda_graph"] == 0 for t, *_, e in rows if t == "speed_decode")
    assert all(e["status"] == "ok" for *_, e in rows)
    assert {e.get("batch_tokens") for t, _, _, e in rows if t == "speed_train"} == {128}
    assert {(e["activation_checkpointing"], e["compile"], e["fused_ce"]) for t, *_, e in rows
            if t == "speed_train"} == {(0, 0, 0)}


def test_train_sweep_with_activation_checkpointing_recomputes_and_says_so(monkeypatch):
    """train.activation_checkpointing applies to the train sweep as in `harness train`; prefill and
    decode still run through the wrapped layers."""
    import harness.training.recipe
    calls = []
    wrap = harness.training.recipe.apply_activation_checkpointing
    monkeypatch.setattr(harness.training.recipe, "apply_activation_checkpointing", lambda m: (calls.append(m), wrap(m)))
    cfg = load_config("tiny", overrides=["train.activation_checkpointing=true"])
    points = bm.sweep_model("swat", cfg, ["train", "prefill", "decode"], {"train": [32], "prefill": [32], "decode": [16]},
                            torch.device("cpu"), 64, (1,))
    assert len(calls) == 1
    assert [(p.sweep, p.status) for p in points] == [("train", "ok"), ("prefill", "ok"), ("decode", "ok")]
    assert points[0].notes == {"activation_checkpointing": 1, "compile": 0, "fused_ce": 0}  # auto: off on a CPU


def test_train_points_apply_the_training_options_and_can_be_profiled(monkeypatch):
    """train.compile=on compiles the layers as `harness train` does (the rows say so); --profile keeps
    each training step's top operators."""
    import harness.training.recipe
    compiled = []
    monkeypatch.setattr(harness.training.recipe, "_compile", compiled.append)
    cfg = load_config("tiny", overrides=["train.compile=on"])
    points = bm.sweep_model("swat", cfg, ["train", "prefill"], {"train": [32], "prefill": [32]}, torch.device("cpu"),
                            64, (1,), profile=True)
    assert len(compiled) == 1 and points[0].notes == {"activation_checkpointing": 0, "compile": 1, "fused_ce": 0}
    assert "aten::mm" in points[0].profile and "Self CPU" in points[0].profile
    assert points[1].sweep == "prefill" and points[1].profile is None


def test_packed_documents_start_with_every_sequence_and_every_documents_tokens():
    cu = bm.packed_documents(2, 10, 4, "cpu")
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 4, 8, 10, 14, 18, 20]
    assert bm.packed_documents(2, 10, 16, "cpu").tolist() == [0, 10, 20]
    assert bm.packed_documents(2, 10, None, "cpu") is None


def test_the_train_step_packs_documents_as_training_does_and_the_rows_say_so(monkeypatch):
    """With documents, the training step's loss gets their boundaries (the attention keeps them apart,
    as in `harness train`, whose batches pack the corpus's documents); the rows record the document
    length and whether the model kept the documents apart (a plain module attends across them)."""
    import harness.training.recipe
    seen = []
    real = harness.training.recipe.lm_loss

    def recording_loss(model, inputs, targets, cu_seqlens=None):
        seen.append(None if cu_seqlens is None else cu_seqlens.tolist())
        return real(model, inputs, targets, cu_seqlens)
    monkeypatch.setattr(bm, "lm_loss", recording_loss)
    cfg = load_config("tiny")
    points = bm.sweep_model("swat", cfg, ["train"], {"train": [32]}, torch.device("cpu"), 64, (1,),
                            warmup_ms=1, rep_ms=1, documents=12)
    assert seen and all(cu == [0, 12, 24, 32, 44, 56, 64] for cu in seen)
    assert points[0].notes == {"activation_checkpointing": 0, "compile": 0, "fused_ce": 0, "document_tokens": 12,
                               "documents_apart": 1}
    seen.clear()
    bm.sweep_model("swat", cfg, ["train"], {"train": [32]}, torch.device("cpu"), 64, (1,), warmup_ms=1, rep_ms=1)
    assert seen and set(map(str, seen)) == {"None"}


def test_a_bench_with_packed_documents_is_another_measurement(tmp_path, monkeypatch):
    """Packed documents change what the step computes: a bench with --documents (or another length of
    them) measures again, under its own config_id, and run.json says the length; one without keeps
    the config_id benches had before the option."""
    calls = []
    monkeypatch.setattr(bm, "train_point", fake_train_point(calls))
    cfg = load_config("tiny")
    assert bm.config_id(cfg) == bm.config_id(cfg, None) != bm.config_id(cfg, 1024) != bm.config_id(cfg, 512)

    def bench(documents):
        logged = []
        rows = bm.run_bench(["swat"], cfg, ["train"], {"train": [32]}, torch.device("cpu"), tmp_path / "speed", 64,
                            (1,), log=logged.append, documents=documents)
        return rows, any("already measured" in m for m in logged)

    rows, skipped = bench(16)
    assert calls == [32] and not skipped and {r.extra["document_tokens"] for r in rows} == {16}
    assert json.loads((tmp_path / "speed" / "run.json").read_text())["document_tokens"] == 16
    assert bench(16)[1] and calls == [32]
    rows, skipped = bench(8)
    assert calls == [32, 32] and not skipped and {r.extra["document_tokens"] for r in rows} == {8}
    rows, skipped = bench(None)
    assert calls == [32, 32, 32] and "document_tokens" not in rows[0].extra
    assert json.loads((tmp_path / "speed" / "run.json").read_text())["document_tokens"] is None


def test_full_attention_cache_grows_with_context():
    cfg = load_config("tiny")
    points = bm.sweep_model("transformer", cfg, ["decode"], {"decode": [16, 48]}, torch.device("cpu"), 128, (1, 4))
    # the memory held: the cache's capacity, grown by the first step after the prompt
    slot = cfg.model.num_layers * 2 * cfg.model.kv_heads * cfg.model.head_dim * 4  # fp32 k and v, all layers
    held = [FULL_CACHE_MIN_GROWTH * slot] * 2  # both contexts within the cache's minimum growth
    assert [p.metrics["state_gb"] * 2**30 for p in points] == [held[0], 4 * held[0], held[1], 4 * held[1]]


@pytest.mark.parametrize("name", ["transformer", "swat"])
def test_replicated_state_copies_the_sequence_into_every_row(name):
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    model = build_model(name, cfg).eval()
    with torch.no_grad():
        _, state = model.prefill(torch.randint(0, cfg.vocab_size, (1, 10)))
    batch = bm.replicate_state(state, 3)
    assert len(batch) == len(state) and batch[0]["pos"] == 10
    assert batch[0]["k"].shape == (3, *state[0]["k"].shape[1:])
    for layer, one in zip(batch, state):
        for key in ("k", "v"):
            assert all(torch.equal(layer[key][b], one[key][0]) for b in range(3))
    batch[0]["k"][0] += 1  # rows are copies: decode writes caches in place
    assert torch.equal(batch[0]["k"][1], state[0]["k"][0])
    assert bm.state_bytes(batch) == 3 * bm.state_bytes(state)
    # a replicated state decodes like a batch prefilled with the same prompt
    ids = torch.randint(0, cfg.vocab_size, (1, 10))
    token = torch.randint(0, cfg.vocab_size, (3,))
    with torch.no_grad():
        _, one = model.prefill(ids)
        _, full = model.prefill(ids.expand(3, -1))
        a, _ = model.step(token, bm.replicate_state(one, 3))
        b, _ = model.step(token, full)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_replicated_fla_cache():
    cache_utils = pytest.importorskip("fla.models.cache_utils")
    cache = cache_utils.FLACache()
    cache.update(recurrent_state=torch.randn(1, 2, 4, 4), conv_state=(torch.randn(1, 8, 3),), layer_idx=0)
    held = bm.state_bytes([cache])
    assert held == (32 + 24) * 4
    [batch] = bm.replicate_state([cache], 5)
    assert batch[0]["recurrent_state"].shape == (5, 2, 4, 4) and batch[0]["conv_state"][0].shape == (5, 8, 3)
    assert bm.state_bytes([batch]) == 5 * held


def test_every_timed_decode_step_of_a_hugging_face_cache_sees_the_same_context(monkeypatch):
    """llama_hf's DynamicCache grew by a token per timed step: its decode at context 1K was timed at
    1K and more (hundreds of repeats under do_bench), against the other models' fixed context."""
    import contextlib
    model = build_model("llama_hf", load_config("tiny").model, torch.device("cpu")).eval()
    contexts = []
    step = model.step
    monkeypatch.setattr(model, "step", lambda token, state: (contexts.append(state.get_seq_length()),
                                                             step(token, state))[1])
    metrics, _ = bm.decode_point(model, 257, 16, 2, torch.device("cpu"), contextlib.nullcontext, rep_ms=1)
    assert len(contexts) > 3 and set(contexts[1:]) == {17}  # the first: the step after the 16-token prompt
    assert metrics["state_gb"] * 2**30 == bm.state_bytes(model.prefill(torch.zeros(2, 17, dtype=torch.long))[1])


def test_a_recurrent_cache_is_not_rolled_back_between_timed_steps():
    cache_utils = pytest.importorskip("fla.models.cache_utils")
    cache = cache_utils.FLACache()
    cache.update(recurrent_state=torch.randn(1, 2, 4, 4), layer_idx=0)

    class Recurrent:
        def step(self, token, state):  # fla's layers rewrite their state in place and count the token
            state.update(recurrent_state=torch.randn(1, 2, 4, 4), layer_idx=0)

    import contextlib
    rewind = bm.context_rewinder(Recurrent(), torch.zeros(1), cache, contextlib.nullcontext)
    rewind()  # cropping a recurrent state raises NotImplementedError
    assert cache.get_seq_length() == 2


def test_decode_timing_falls_back_to_eager_when_capture_fails(monkeypatch):
    calls = []

    def fake_median_ms(fn, cuda, warmup_ms=25, rep_ms=100, grad_to_none=None, cuda_graph=False):
        calls.append(cuda_graph)
        if cuda_graph:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return 2.0

    monkeypatch.setattr(bm, "median_ms", fake_median_ms)
    assert bm.time_decode_step(lambda: None, True, 10) == (2.0, False)
    assert calls == [True, False]
    assert bm.time_decode_step(lambda: None, False, 10) == (2.0, False)  # the CPU: eager, no capture tried
    assert calls == [True, False, False]
    monkeypatch.setattr(bm, "median_ms", lambda fn, cuda, *a, cuda_graph=False, **k: 1.0)
    assert bm.time_decode_step(lambda: None, True, 10) == (1.0, True)


def test_out_of_memory_is_recorded_and_longer_lengths_are_skipped(monkeypatch):
    calls = []

    def fake_train_point(model, vocab, length, *args):
        calls.append(length)
        if length >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"tokens_per_s": 1.0, "batch": 1}

    monkeypatch.setattr(bm, "train_point", fake_train_point)
    points = bm.sweep_model("swat", load_config("tiny"), ["train"], {"train": [32, 64, 128]}, torch.device("cpu"),
                            128, (1,))
    assert [p.status for p in points] == ["ok", "oom", "oom"]
    assert calls == [32, 64]
    rows = bm.points_to_rows(points, lambda model, task, metric, value, **extra:
                             (metric, value, extra["status"], extra["activation_checkpointing"]))
    assert rows[-1] == ("tokens_per_s", None, "oom", 0)


def test_a_refused_sweep_is_logged_and_the_other_sweeps_still_run(monkeypatch):
    from harness.registry import KernelRefusedError

    def refused_train_point(*args):
        raise KernelRefusedError("backward kernel refused here; pip install the fix")

    monkeypatch.setattr(bm, "train_point", refused_train_point)
    logged = []
    points = bm.sweep_model("swat", load_config("tiny"), ["train", "prefill"], {"train": [32, 64], "prefill": [32]},
                            torch.device("cpu"), 128, (1,), log=logged.append)
    assert [(p.sweep, p.status) for p in points] == [("prefill", "ok")]
    assert logged == ["swat: train sweep not measured: backward kernel refused here; pip install the fix"]


def test_cli_writes_rows_table_and_plots_then_skips(tmp_path):
    cmd = [sys.executable, "-m", "harness", "bench", "models", "--preset", "tiny", "--models", "swat",
           "--lengths", "train=32", "--lengths", "prefill=32", "--lengths", "decode=16", "--decode-batches", "1",
           "--train-tokens", "64", "--out", str(tmp_path / "speed")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "speed" / "rows.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"speed_train", "speed_prefill", "speed_decode"}
    assert all(r["command"] and r["device"] and r["torch"] for r in rows)
    assert "Speed and memory" in (tmp_path / "speed" / "table.md").read_text()
    assert (tmp_path / "speed" / "speed_train_tokens_per_s.png").is_file()
    first = (tmp_path / "speed" / "run.json").read_text()
    speed = tmp_path / "speed"
    for made in [*speed.glob("*.png"), *speed.glob("*.csv"), speed / "table.md"]:
        made.unlink()  # as if the first run was cut after its rows were saved
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "already measured" in again.stdout
    assert (tmp_path / "speed" / "run.json").read_text() == first  # a command that measured nothing is not recorded
    assert (speed / "table.md").is_file() and (speed / "speed_train_tokens_per_s.png").is_file()
    other_cmd = cmd[:-2] + ["--models", "transformer", "--sweeps", "prefill", "--out", str(tmp_path / "speed")]
    other = subprocess.run(other_cmd, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    info = json.loads((tmp_path / "speed" / "run.json").read_text())  # the first command is kept too
    assert info["models"] == ["swat", "transformer"] and info["sweeps"] == ["train", "prefill", "decode"]
    assert [e["command"].split("--models ")[1].split()[0] for e in info["earlier"]] == ["swat"]
    assert "--models transformer" in info["command"]
    bad = subprocess.run(cmd + ["--sweeps", "train,warp"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown sweep 'warp'" in bad.stderr


def test_cli_measures_hugging_face_llama_beside_the_models_as_a_ratio(tmp_path):
    """llama_hf (transformers' Llama at the Transformer's shape) runs every sweep, its KV cache
    replicated for decode; --peer writes each model's tokens/s over the peer's, the peer at 1."""
    pytest.importorskip("transformers")
    cmd = [sys.executable, "-m", "harness", "bench", "models", "--preset", "tiny", "--models", "swat,llama_hf",
           "--lengths", "train=32", "--lengths", "prefill=32", "--lengths", "decode=16", "--decode-batches", "1,2",
           "--train-tokens", "64", "--out", str(tmp_path / "speed"), "--peer", "llama_hf"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "speed" / "rows.jsonl").read_text().splitlines()]
    assert {(r["model"], r["task"]) for r in rows if r["status"] == "ok"} == {
        (m, t) for m in ("swat", "llama_hf") for t in ("speed_train", "speed_prefill", "speed_decode")}
    ratio = (tmp_path / "speed" / "ratio.md").read_text()
    assert "Throughput relative to llama_hf" in ratio and "speed_decode" in ratio
    assert all("1.00" in line for line in ratio.splitlines() if line.startswith("| llama_hf"))
    assert "Throughput relative to llama_hf" in out.stdout
    bad = subprocess.run(cmd[:-1] + ["mamba"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error: --peer mamba is not one of --models" in bad.stderr


def test_cli_puts_sweeps_with_activation_checkpointing_in_a_folder_of_their_own(tmp_path):
    """Rows with recomputation have the same keys as those without: they must not replace them."""
    cmd = [sys.executable, "-m", "harness", "bench", "models", "--preset", "tiny", "--models", "swat", "--sweeps",
           "train", "--lengths", "train=32", "--train-tokens", "64", "--results", str(tmp_path),
           "--set", "train.activation_checkpointing=true"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (folder,) = (tmp_path / "speed").glob("*/tiny-activation-checkpointing")
    assert {json.loads(line)["activation_checkpointing"] for line in (folder / "rows.jsonl").open()} == {1}


@gpu
@pytest.mark.parametrize("name", ["swat", "transformer", "sliding_softmax"])
def test_gpu_attention_decode_step_replays_from_a_cuda_graph(name):
    """The attention models' step is capturable (no host sync): a replayed step gives the eager
    step's logits from the same replicated state, and decode_point records cuda_graph 1."""
    cfg = dataclasses.replace(load_config("small").model, num_layers=2, vocab_size=512)
    model = build_model(name, cfg, "cuda").eval()
    ids = torch.randint(0, 512, (1, 300), device="cuda")  # past the small preset's window: the ring wraps
    token = torch.randint(0, 512, (4,), device="cuda")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def step():
        with autocast():
            return model.step(token, state)[0]

    with torch.no_grad():
        with autocast():
            _, state = model.prefill(ids)
            _, state = model.step(ids[:, -1], state)
        state = bm.replicate_state(state, 4)
        eager = step()
        side = torch.cuda.Stream()  # warm-up before capture on a side stream, as torch.cuda.graph wants
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            replayed = step()
        graph.replay()
        torch.cuda.synchronize()
    torch.testing.assert_close(replayed, eager)
    metrics, notes = bm.decode_point(model, 512, 1024, 4, torch.device("cuda"), autocast, rep_ms=20)
    assert notes["cuda_graph"] == 1 and metrics["tokens_per_s"] > 0


def test_speed_task_of_harness_run_writes_the_three_sweeps(tmp_path):
    """`harness run --tasks speed` runs the same sweeps on the run's model (short lengths on a CPU)."""
    cmd = [sys.executable, "-m", "harness", "run", "--models", "swat", "--tasks", "speed", "--preset", "tiny",
           "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "results" / "tiny" / "rows.jsonl").read_text().splitlines()]
    speed = [r for r in rows if r["task"].startswith("speed_")]
    assert {r["task"] for r in speed} == {"speed_train", "speed_prefill", "speed_decode"}
    assert all(r["model"] == "swat" and r["value"] > 0 for r in speed if r["metric"] == "tokens_per_s")


# ---------------------------------------------------------------- what is measured, and what is skipped

def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def fake_train_point(calls: list):
    """train_point without the timing: records each length it is asked for."""
    def point(model, vocab, length, tokens, *args):
        calls.append(length)
        return {"tokens_per_s": 1.0, "batch": bm.train_batch(length, tokens)}
    return point


def test_a_model_fitted_by_counting_has_no_points_and_says_why():
    """`harness run --models bigram --tasks speed` was `optimizer got an empty parameter list`."""
    logged = []
    assert bm.sweep_model("bigram", load_config("tiny"), bm.SWEEPS, LENGTHS, torch.device("cpu"), 128, (1,),
                          log=logged.append) == []
    assert logged == ["bigram: not benchmarked: it is fitted by counting (n-gram counts, no trainable parameters), "
                      "so it has no training step or network to time"]


def test_bench_skips_count_models_and_measures_a_model_named_twice_once(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bm, "train_point", fake_train_point(calls))
    logged = []
    rows = bm.run_bench(["swat", "bigram", "swat"], load_config("tiny"), ["train"], {"train": [32]},
                        torch.device("cpu"), tmp_path / "speed", 64, (1,), log=logged.append)
    assert calls == [32] and {(r.model, r.metric) for r in rows} == {("swat", "tokens_per_s")}
    assert [m for m in logged if m.startswith("bigram")] == [bm.counted_note("bigram")]
    assert json.loads((tmp_path / "speed" / "run.json").read_text())["models"] == ["swat"]
    from harness import cli
    out = tmp_path / "counted"
    assert cli.main(["bench", "models", "--preset", "tiny", "--device", "cpu", "--models", "bigram,unigram",
                     "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, "bigram, unigram: fitted by counting", "bench neural models")
    assert not out.exists()


def test_stored_rows_count_as_measured_only_under_the_same_config_and_points(tmp_path, monkeypatch):
    """A bench under `--set model.window=8`, or at new lengths, was skipped as `already measured`."""
    calls = []
    monkeypatch.setattr(bm, "train_point", fake_train_point(calls))
    out = tmp_path / "speed"

    def bench(lengths, *overrides, tokens=64, force=False):
        logged = []
        rows = bm.run_bench(["swat"], load_config("tiny", overrides=list(overrides)), ["train"], {"train": lengths},
                            torch.device("cpu"), out, tokens, (1,), force=force, log=logged.append)
        return rows, any("already measured" in m for m in logged)

    rows, skipped = bench([32])
    assert calls == [32] and not skipped
    assert bench([32]) == (rows, True) and calls == [32]
    rows, skipped = bench([32], "model.window=8")
    assert calls == [32, 32] and not skipped and len({r.extra["config_id"] for r in rows}) == 1  # replaced
    window_8 = rows[0].extra["config_id"]
    rows, skipped = bench([32, 64], "model.window=8")
    assert calls == [32, 32, 32, 64] and not skipped
    assert sorted(r.extra["seq_len"] for r in rows) == [32, 64] and {r.extra["config_id"] for r in rows} == {window_8}
    assert bench([64], "model.window=8")[1] and calls == [32, 32, 32, 64]
    with pytest.raises(ConfigError, match="measured at another batch size"):  # a table would compare the two
        bench([64], "model.window=8", tokens=128)
    rows, skipped = bench([32, 64], "model.window=8", tokens=128, force=True)
    assert sorted((r.extra["seq_len"], r.extra["batch_tokens"]) for r in rows) == [(32, 128), (64, 128)]


# ---------------------------------------------------------------- `harness bench kernels` (here, for want of a file)

def test_bench_kernels_off_a_gpu_is_one_error_unless_the_interpreter_is_asked_for(tmp_path, monkeypatch, capsys):
    """Without a GPU it ran the whole GPU sweep on the CPU (SDPA up to 80 s a point, SWAT never timed)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the bench runs")
    import harness.ops.swat.triton_common as triton_common
    from harness import cli
    monkeypatch.setattr(triton_common, "interpreting", lambda: False)
    assert cli.main(["bench", "kernels", "--out", str(tmp_path / "kernels")]) == 2
    one_error_line(capsys.readouterr().err, "on a CUDA GPU, and none is visible here", "TRITON_INTERPRET=1")
    assert not (tmp_path / "kernels").exists()


def test_a_cut_kernel_bench_renders_and_a_folder_missing_a_file_says_which(tmp_path, capsys):
    """An interrupted run left kernels.csv without run.json, and --render-only said both were missing."""
    from harness import cli
    from harness.bench.kernels import BenchSpec, run_kernel_bench
    spec = BenchSpec(head_dims=[64], lengths=[32], windows=[16, "T"], tokens=32, hidden=64, peers=("sdpa",),
                     modes=("fwd",), decode_contexts=())

    def cut(step, total, label):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_kernel_bench(spec, tmp_path, log=lambda m: None, progress=cut)
    (folder,) = tmp_path.iterdir()
    assert cli.main(["bench", "kernels", "--render-only", str(folder)]) == 0
    assert (folder / "kernels.md").is_file()
    (folder / "run.json").unlink()
    assert cli.main(["bench", "kernels", "--render-only", str(folder)]) == 2
    one_error_line(capsys.readouterr().err, f"{folder} has no run.json (its kernels.csv is there)")


def test_a_bench_under_another_config_may_not_relabel_other_models_rows(tmp_path, monkeypatch):
    """run.json and table.md give a folder's rows one config: benching swat alone at hidden 32 into a
    folder of swat and transformer at 64 relabelled the transformer's rows without a word."""
    from harness.config import ConfigError
    monkeypatch.setattr(bm, "train_point", fake_train_point([]))
    out = tmp_path / "speed"

    def bench(names, *overrides):
        logged = []
        bm.run_bench(names, load_config("tiny", overrides=list(overrides)), ["train"], {"train": [32]},
                     torch.device("cpu"), out, 64, (1,), log=logged.append)
        return logged
    bench(["swat", "transformer"])
    stored = (out / "rows.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"holds rows of transformer \(train\) measured under another config"):
        bench(["swat"], "model.window=16")
    assert (out / "rows.jsonl").read_text() == stored
    assert "swat: replacing its rows measured under another config" in bench(["swat", "transformer"], "model.window=16")


def test_a_bench_under_another_config_may_not_relabel_the_sweeps_it_does_not_run(tmp_path, monkeypatch):
    """Benching swat's prefill at window 16 into a folder of its training rows at window 32 kept the
    training rows and labelled them, in run.json and the table, with the new config."""
    from harness.config import ConfigError
    monkeypatch.setattr(bm, "train_point", fake_train_point([]))
    monkeypatch.setattr(bm, "prefill_point", lambda *args: {"latency_ms": 1.0, "tokens_per_s": 1.0})
    out = tmp_path / "speed"

    def bench(sweeps, *overrides):
        logged = []
        bm.run_bench(["swat"], load_config("tiny", overrides=list(overrides)), sweeps,
                     {"train": [32], "prefill": [32]}, torch.device("cpu"), out, 64, (1,), log=logged.append)
        return logged
    bench(["train"])
    stored = (out / "rows.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"holds rows of swat \(train\) measured under another config"):
        bench(["prefill"], "model.window=16")
    assert (out / "rows.jsonl").read_text() == stored
    assert "swat: replacing its rows measured under another config" in bench(["train", "prefill"], "model.window=16")
    assert {r["config_id"] for r in map(json.loads, (out / "rows.jsonl").read_text().splitlines())} == {
        bm.config_id(load_config("tiny", overrides=["model.window=16"]))}


def test_a_folder_compares_training_speed_at_one_batch_size_and_records_only_what_its_rows_hold(tmp_path,
                                                                                                 monkeypatch):
    """Benching swat alone at --train-tokens 4096 into a folder of swat and llama_hf at 512 put both
    in one bolded column, and run.json said 4096 for all, and the CPU default lengths of unrun sweeps."""
    from harness.config import ConfigError
    monkeypatch.setattr(bm, "train_point", fake_train_point([]))
    monkeypatch.setattr(bm, "prefill_point", lambda *args: {"latency_ms": 1.0, "tokens_per_s": 1.0})
    out = tmp_path / "speed"

    def bench(names, tokens, sweeps=("train",), force=False):
        bm.run_bench(names, load_config("tiny"), list(sweeps), {"train": [32], "prefill": [16]},
                     torch.device("cpu"), out, tokens, (1,), force=force, log=lambda m: None)
        return json.loads((out / "run.json").read_text())

    assert bench(["swat", "transformer"], 64)["lengths"] == {"train": [32]}
    stored = (out / "rows.jsonl").read_text()
    for force in (False, True):  # with --force, transformer's rows at 64 tokens would still be there
        with pytest.raises(ConfigError, match=r"swat, transformer measured at another batch size \(e.g. swat at "
                                              r"length 32: 64 tokens per batch, here 128\).*--force with --models"):
            bench(["swat"], 128, force=force)
        assert (out / "rows.jsonl").read_text() == stored
    record = bench(["swat", "transformer"], 128, force=True)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {(r["model"], r["batch_tokens"]) for r in rows} == {("swat", 128), ("transformer", 128)}
    assert record["train_tokens"] == 128
    record = bench(["swat"], 64, sweeps=["prefill"])  # no training measured: its tokens are not this bench's
    assert record["lengths"] == {"train": [32], "prefill": [16]} and record["train_tokens"] == 128
    assert "decode_batches" not in record


def test_a_damaged_or_empty_kernels_csv_is_one_error_and_a_plot_without_rows_goes(tmp_path, capsys):
    """A kernels.csv line cut inside its ms was drawn as measured and kept unmeasured by a rerun; an
    empty file rendered no tables beside the old kernels.png; a csv path to --render-only said the
    csv was missing; --head-dims 12 was told to use 64 and/or 128 though 16 and 32 run."""
    from harness import cli
    from harness.bench.kernels import BenchSpec, read_csv, run_kernel_bench, to_csv
    from harness.config import ConfigError
    spec = BenchSpec(head_dims=[64], lengths=[32], windows=["T"], tokens=32, hidden=64, peers=("sdpa",),
                     modes=("fwd",), decode_contexts=())
    folder = run_kernel_bench(spec, tmp_path, log=lambda m: None)
    csv_path = folder / "kernels.csv"
    header, line = csv_path.read_text().splitlines()
    csv_path.write_text(f"{header}\n{line[:line.index(',sdpa,softmax,') + len(',sdpa,softmax,') + 2]}\n")
    assert cli.main(["bench", "kernels", "--render-only", str(folder)]) == 2
    one_error_line(capsys.readouterr().err, f"{csv_path}: line 2 is damaged", "delete that line")
    with pytest.raises(ConfigError, match="line 2 is damaged"):
        run_kernel_bench(spec, tmp_path, log=lambda m: None)
    csv_path.write_text(header + "\n")
    assert cli.main(["bench", "kernels", "--render-only", str(folder)]) == 2
    one_error_line(capsys.readouterr().err, f"{csv_path} holds no measured shape; delete it")
    csv_path.unlink()
    (row,) = read_csv(run_kernel_bench(spec, tmp_path, log=lambda m: None) / "kernels.csv")
    assert row["status"] == "ok" and row["ms"] > 0 and (folder / "kernels.png").is_file()
    csv_path.write_text(to_csv([{**row, "ms": None, "tflops": None, "status": "needs a CUDA GPU"}]))
    assert cli.main(["bench", "kernels", "--render-only", str(folder)]) == 0
    assert not (folder / "kernels.png").exists()
    assert cli.main(["bench", "kernels", "--render-only", str(csv_path)]) == 2
    one_error_line(capsys.readouterr().err, f"{csv_path} is a file; pass its folder ({folder})")
    assert cli.main(["bench", "kernels", "--head-dims", "12", "--out", str(tmp_path / "twelve")]) == 2
    one_error_line(capsys.readouterr().err, "head dims [12] not supported by the SWAT kernel; use any of "
                   "16, 32, 64, 128")


def test_a_length_or_batch_named_twice_is_measured_once(tmp_path, monkeypatch):
    """`--lengths train=64,64` timed 64 twice and stored two rows per metric at one point (the table showed
    the first)."""
    from harness import cli
    calls = []
    monkeypatch.setattr(bm, "train_point", fake_train_point(calls))
    monkeypatch.setattr(bm, "decode_point", lambda *args: ({"tokens_per_s": 1.0}, {}))
    out = tmp_path / "speed"
    assert cli.main(["bench", "models", "--preset", "tiny", "--device", "cpu", "--models", "swat", "--sweeps",
                     "train,decode", "--lengths", "train=32,32", "--lengths", "decode=16", "--decode-batches", "2,2",
                     "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert calls == [32] and [(r["task"], r.get("batch")) for r in rows] == [("speed_train", None),
                                                                              ("speed_decode", 2)]


def test_profile_asked_of_a_folder_measured_without_it_measures_again(tmp_path, monkeypatch):
    """`--profile` on a folder measured without it said `already measured` and wrote no profile."""
    calls = []

    def point(model, vocab, length, tokens, device, autocast, warmup_ms, rep_ms, profile, documents):
        calls.append(length)
        return {"tokens_per_s": 1.0, "batch": bm.train_batch(length, tokens), **({"profile": "ops"} if profile else {})}
    monkeypatch.setattr(bm, "train_point", point)
    out = tmp_path / "speed"

    def bench(profile):
        bm.run_bench(["swat"], load_config("tiny"), ["train"], {"train": [32]}, torch.device("cpu"), out, 64, (1,),
                     log=lambda m: None, profile=profile)
    bench(False)
    bench(True)
    assert calls == [32, 32] and "ops" in (out / "profiles" / "swat-train-32.md").read_text()
    bench(True)
    assert calls == [32, 32]


def test_a_refused_bench_says_nothing_about_replacing_rows(tmp_path, monkeypatch):
    """A bench under another config and another --train-tokens printed `swat: replacing its rows measured
    under another config` above its error, though it replaced nothing."""
    monkeypatch.setattr(bm, "train_point", fake_train_point([]))
    out = tmp_path / "speed"
    logged = []

    def bench(tokens, *overrides, force=False):
        bm.run_bench(["swat"], load_config("tiny", overrides=list(overrides)), ["train"], {"train": [32]},
                     torch.device("cpu"), out, tokens, (1,), force=force, log=logged.append)
    bench(64)
    logged.clear()
    with pytest.raises(ConfigError, match="measured at another batch size"):
        bench(128, "model.window=16")
    assert logged == []
    bench(128, "model.window=16", force=True)
    assert logged[:2] == ["swat: replacing its rows measured under another config",
                          "swat: replacing training rows measured at another number of tokens per batch"]


def test_an_interrupted_bench_records_only_the_models_and_lengths_its_rows_hold(tmp_path, monkeypatch):
    """run.json was written before the sweeps: a bench cut in its second model recorded both models, and
    lengths no row held."""
    monkeypatch.setattr(bm, "train_point", fake_train_point([]))
    out = tmp_path / "speed"

    def cut_at_transformer(point):
        if point.model == "transformer":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bm.run_bench(["swat", "transformer"], load_config("tiny"), ["train"], {"train": [32]}, torch.device("cpu"),
                     out, 64, (1,), log=lambda m: None, on_point=cut_at_transformer)
    with pytest.raises(KeyboardInterrupt):
        bm.run_bench(["transformer"], load_config("tiny"), ["train"], {"train": [16, 32]}, torch.device("cpu"),
                     out, 64, (1,), log=lambda m: None, on_point=cut_at_transformer)
    record = json.loads((out / "run.json").read_text())
    assert record["models"] == ["swat"] and record["lengths"] == {"train": [32]}


def test_a_sweep_the_library_refused_is_not_recorded_as_run(tmp_path, monkeypatch):
    from harness.registry import KernelRefusedError

    def refused_train_point(*args):
        raise KernelRefusedError("backward kernel refused here")
    monkeypatch.setattr(bm, "train_point", refused_train_point)
    monkeypatch.setattr(bm, "prefill_point", lambda *args: {"latency_ms": 1.0, "tokens_per_s": 1.0})
    bm.run_bench(["swat"], load_config("tiny"), ["train", "prefill"], {"train": [32], "prefill": [16]},
                 torch.device("cpu"), tmp_path, 64, (1,), log=lambda m: None)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["sweeps"] == ["prefill"] and record["lengths"] == {"prefill": [16]} and "train_tokens" not in record


def test_an_output_folder_that_cannot_be_made_stops_the_bench_before_its_sweeps(tmp_path, monkeypatch, capsys):
    """run.json is written once a model's rows are: `--out /proc/x` measured a whole model, then failed."""
    from harness import cli
    calls = []
    monkeypatch.setattr(bm, "train_point", fake_train_point(calls))
    assert cli.main(["bench", "models", "--preset", "tiny", "--device", "cpu", "--models", "swat", "--sweeps", "train",
                     "--lengths", "train=32", "--out", "/proc/harness-bench-test"]) == 2
    one_error_line(capsys.readouterr().err, "/proc/harness-bench-test", "give another path")
    assert calls == []


def test_kernel_tuning_refuses_an_unknown_sweep_and_a_machine_without_a_gpu(tmp_path, monkeypatch, capsys):
    """`python -m harness.bench.tune --sweeps tile` ran nothing and printed an empty list; without a GPU it
    stopped in a traceback, after truncating --out."""
    from harness.bench import tune
    out = tmp_path / "tune.jsonl"
    unknown = "--sweeps takes comma-separated tiles, decode, sigmoid, spread, order, got 'tile'"
    for argv, needle in [(["--sweeps", "tile"], unknown),
                         ([], "on a CUDA GPU, and none is visible here")]:
        if not argv and torch.cuda.is_available():
            continue
        monkeypatch.setattr(sys, "argv", ["tune.py", "--out", str(out), *argv])
        with pytest.raises(SystemExit) as stop:
            tune.main()
        assert stop.value.code == 2
        one_error_line(capsys.readouterr().err, needle)
        assert not out.exists()
