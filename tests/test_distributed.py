"""Distributed training and evaluation on CPU: `torchrun --nproc-per-node 2` with gloo. Training with
DDP and FSDP2 against the single-process run of the same global batch (same losses and weights up
to summation order); data-parallel evaluation against one process (the same rows)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.config import ConfigError, load_config
from harness.training import distributed, scaling
from harness.training.checkpoint import CHECKPOINT_DIR, load_checkpoint
from harness.training.train import train
from harness.training.trainlog import LOG_FILE, read_log

EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"  # hub-schema files in the mirror's layout

# 4 steps of 8 sequences x 64 tokens; micro-batches of 2: one process accumulates 4, each of 2 ranks 2
OVERRIDES = ["train.tokens=2048", "train.batch_tokens=512", "train.seq_len=64", "train.micro_batch=2",
             "train.save_every=2", "train.warmup_tokens=512", "train.eval_tokens=2048"]
TOL = dict(rtol=1e-4, atol=1e-5)


def harness(argv, nproc=None, **env):
    """`python -m harness ARGV`, under `torchrun --nproc-per-node NPROC` when nproc is given."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc else []
    proc = subprocess.run([sys.executable, *launcher, "-m", "harness", *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def torchrun(out, parallel, nproc=2, model="swat"):
    argv = ["train", "--model", model, "--preset", "tiny", "--device", "cpu", "--quiet", "--parallel", parallel,
            "--out", str(out)]
    for o in OVERRIDES:
        argv += ["--set", o]
    return harness(argv, nproc)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    train("swat", load_config("tiny", overrides=OVERRIDES), run_dir, "cpu")
    return run_dir


def assert_runs_match(a, b):
    la, lb = read_log(a / LOG_FILE), read_log(b / LOG_FILE)
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5), ra["step"]
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4), ra["step"]
    wa = load_file(str(a / CHECKPOINT_DIR / "model.safetensors"))
    wb = load_file(str(b / CHECKPOINT_DIR / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], **TOL), key
    ma = json.loads((a / CHECKPOINT_DIR / "meta.json").read_text())
    mb = json.loads((b / CHECKPOINT_DIR / "meta.json").read_text())
    assert ma["heldout_loss"] == pytest.approx(mb["heldout_loss"], rel=1e-5)
    return mb


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(single, tmp_path, parallel):
    proc = torchrun(tmp_path, parallel)
    meta = assert_runs_match(single, tmp_path)
    assert meta["world_size"] == 2 and meta["parallel"] == parallel
    assert proc.stdout.count("held-out loss") == 1  # rank 0 alone reports
    load_checkpoint(tmp_path / CHECKPOINT_DIR)  # full weights: readable by one process
    text, (base, run) = scaling.write([single, tmp_path], tmp_path / "scaling")
    assert base["scaling_efficiency"] == 1.0 and base["max_loss_diff"] == 0.0
    assert run["world_size"] == 2 and run["parallel"] == parallel and run["first_step_over"] is None
    assert run["max_loss_diff"] < 1e-4 and run["scaling_efficiency"] > 0 and run["steps"] == 4
    assert (tmp_path / "scaling" / "scaling.png").is_file() and f"| {tmp_path.name} | 2 | {parallel} |" in text


def test_scaling_refuses_runs_of_different_recipes(single):
    base = scaling.read_run(single)
    other = dataclasses.replace(base, name="other", config={**base.config,
                                                            "train": {**base.config["train"], "seed": 7}})
    with pytest.raises(ConfigError, match="differ in train.seed"):
        scaling.compare([base, other])
    faster = dataclasses.replace(base, config={**base.config, "train": {**base.config["train"], "compile": True}})
    assert scaling.compare([base, faster])[1]["max_loss_diff"] == 0.0  # speed settings may differ


def test_fsdp_at_world_size_one_resumes_unsharded(single, tmp_path):
    """`--parallel fsdp` without torchrun (a one-process group, the same code path), interrupted
    after its step-2 checkpoint and finished by the plain path: the full-state checkpoint carries over."""
    cfg = load_config("tiny", overrides=OVERRIDES)

    def stop(info):
        if info["step"] == 2:
            raise KeyboardInterrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            train("swat", cfg, tmp_path, "cpu", on_step=stop, parallel="fsdp")
    finally:
        distributed.teardown()
    assert json.loads((tmp_path / CHECKPOINT_DIR / "meta.json").read_text())["parallel"] == "fsdp"
    train("swat", cfg, tmp_path, "cpu")
    assert_runs_match(single, tmp_path)


def test_data_parallel_evaluation_equals_one_process(single, tmp_path):
    """lm-eval tasks split over 2 ranks (3 arc_easy documents: uneven, so lm-eval pads a rank) and a
    task that rank 0 runs alone (mqar): the rows equal the single process's, and rank 0 alone reports."""
    pytest.importorskip("lm_eval")
    argv = ["eval", "--checkpoint", str(single / CHECKPOINT_DIR), "--tasks", "arc_easy,wikitext,mqar",
            "--limit", "5", "--device", "cpu", "--bootstrap-iters", "50", "--run-name", "dp"]  # (torchrun reads --run)
    harness(argv + ["--results", str(tmp_path / "one")], HARNESS_DATA=str(EVAL_FIXTURES))
    proc = harness(argv + ["--results", str(tmp_path / "two")], nproc=2, HARNESS_DATA=str(EVAL_FIXTURES))
    assert proc.stdout.count("wrote ") == 1

    assert_same_rows(tmp_path / "one" / "dp", tmp_path / "two" / "dp", {"arc_easy", "wikitext", "mqar"}, rel=1e-6)


def test_harness_run_under_torchrun_trains_with_ddp_and_evaluates_data_parallel(tmp_path):
    """`torchrun -m harness run`: both ranks train (DDP) and evaluate; rank 0 writes what one process
    writes, up to the summation order of the all-reduced gradients."""
    pytest.importorskip("lm_eval")
    argv = ["run", "--models", "swat", "--tasks", "smoke,arc_easy,mqar", "--preset", "tiny", "--limit", "5",
            "--device", "cpu", "--run-name", "r"] + [a for o in OVERRIDES for a in ("--set", o)]
    for name, nproc in (("one", None), ("two", 2)):
        proc = harness(argv + ["--results", str(tmp_path / name), "--runs", str(tmp_path / f"runs-{name}")], nproc,
                       HARNESS_DATA=str(EVAL_FIXTURES))
    assert proc.stdout.count("wrote ") == 1
    assert json.loads((tmp_path / "runs-two" / "r" / "swat" / CHECKPOINT_DIR / "meta.json").read_text())["world_size"] == 2
    assert_same_rows(tmp_path / "one" / "r", tmp_path / "two" / "r", {"smoke", "arc_easy", "mqar"}, rel=1e-4)


def test_harness_study_under_torchrun_trains_each_run_on_every_rank(tmp_path):
    """`torchrun -m harness study`: the runs go one after another, each trained by both ranks
    (DDP); rank 0 writes the rows one process writes, up to the all-reduce's summation order."""
    import yaml
    study = yaml.safe_load((Path(__file__).parent / "fixtures" / "study" / "tiny.yaml").read_text())
    study.update(models=["swat"], sweep={"sizes": ["a"], "lrs": [3e-3], "tasks": ["smoke"]},
                 final={"sizes": ["a"], "tasks": ["smoke"]})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    for name, nproc in (("one", None), ("two", 2)):
        proc = harness(["study", str(path), "--device", "cpu", "--results", str(tmp_path / name),
                        "--runs", str(tmp_path / f"runs-{name}")], nproc)
    assert proc.stdout.count("study tiny-study: 1 runs done") == 1
    meta = tmp_path / "runs-two" / "tiny-study" / "a" / "swat" / "lr0.003-seed0" / CHECKPOINT_DIR / "meta.json"
    assert json.loads(meta.read_text())["world_size"] == 2
    assert_same_rows(tmp_path / "one" / "tiny-study", tmp_path / "two" / "tiny-study", {"smoke"}, rel=1e-4)


def assert_same_rows(one_dir, two_dir, tasks, rel):
    """The rows of a one-process run and a 2-rank run match, row for row."""
    measured = {"value", "stderr", "eval_seconds", "world_size", "date", "command", "checkpoint"}

    def rows(folder):  # keyed by everything that names the row (task, metric, probe cell, ...)
        out = {}
        for line in (folder / "rows.jsonl").read_text().splitlines():
            r = json.loads(line)
            out[json.dumps({k: v for k, v in r.items() if k not in measured}, sort_keys=True)] = r
        return out
    one, two = rows(one_dir), rows(two_dir)
    assert one.keys() == two.keys() and {r["task"] for r in one.values()} == tasks
    assert len(one) == len((one_dir / "rows.jsonl").read_text().splitlines())
    for key, r in one.items():
        assert two[key]["value"] == pytest.approx(r["value"], rel=rel, abs=1e-6), key
        assert (two[key]["stderr"] is None) == (r["stderr"] is None), key
        assert r["stderr"] is None or two[key]["stderr"] == pytest.approx(r["stderr"], rel=rel, abs=1e-6), key
        rank0_alone = r["task"] in ("smoke", "mqar")  # not data-parallel: rank 0 runs them by itself
        assert two[key].get("world_size") == (None if rank0_alone else 2) and "world_size" not in r
