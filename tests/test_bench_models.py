"""`harness bench models`: sweep mechanics on CPU at tiny sizes (timings themselves are not tested)."""

import json
import subprocess
import sys

import pytest
import torch

from harness.bench import models as bm
from harness.config import load_config

LENGTHS = {"train": [32, 64], "prefill": [32], "decode": [16, 48]}


def test_sweep_points_and_rows():
    cfg = load_config("tiny")
    points = bm.sweep_model("swat", cfg, bm.SWEEPS, LENGTHS, torch.device("cpu"), 128, (1, 2),
                            new_tokens=2)
    assert [(p.sweep, p.length, p.batch) for p in points] == [
        ("train", 32, 4), ("train", 64, 2), ("prefill", 32, 1),
        ("decode", 16, 1), ("decode", 16, 2), ("decode", 48, 1), ("decode", 48, 2)]
    assert all(p.status == "ok" and p.metrics for p in points)
    decode = [p for p in points if p.sweep == "decode"]
    # swat's ring buffer: the state does not grow with the context
    assert decode[0].metrics["state_gb"] == decode[2].metrics["state_gb"] > 0
    rows = bm.points_to_rows(points, lambda model, task, metric, value, **extra: (task, metric, value, extra))
    assert ("speed_train", "tokens_per_s") in {(t, m) for t, m, _, _ in rows}
    assert all(e["status"] == "ok" for *_, e in rows)
    assert {e.get("batch_tokens") for t, _, _, e in rows if t == "speed_train"} == {128}


def test_full_attention_cache_grows_with_context():
    cfg = load_config("tiny")
    points = bm.sweep_model("transformer", cfg, ["decode"], {"decode": [16, 48]}, torch.device("cpu"), 128, (1,),
                            new_tokens=1)
    assert points[1].metrics["state_gb"] == pytest.approx(3 * points[0].metrics["state_gb"])


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
    rows = bm.points_to_rows(points, lambda model, task, metric, value, **extra: (metric, value, extra["status"]))
    assert rows[-1] == ("tokens_per_s", None, "oom")


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
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "already measured" in again.stdout
    bad = subprocess.run(cmd + ["--sweeps", "train,warp"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown sweep 'warp'" in bad.stderr
