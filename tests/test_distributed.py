"""Distributed training on CPU: `torchrun --nproc-per-node 2` with gloo, DDP and FSDP2, against the
single-process run of the same global batch (same losses and weights up to summation order)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from harness import distributed
from harness.config import load_config
from harness.train import CHECKPOINT_DIR, load_checkpoint, train
from harness.trainlog import LOG_FILE, read_log

# 4 steps of 8 sequences x 64 tokens; micro-batches of 2: one process accumulates 4, each of 2 ranks 2
OVERRIDES = ["train.tokens=2048", "train.batch_tokens=512", "train.seq_len=64", "train.micro_batch=2",
             "train.save_every=2", "train.warmup_tokens=512", "train.eval_tokens=2048"]
TOL = dict(rtol=1e-4, atol=1e-5)


def torchrun(out, parallel, nproc=2, model="swat"):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "harness", "train", "--model", model, "--preset", "tiny", "--device", "cpu", "--quiet",
           "--parallel", parallel, "--out", str(out)]
    for o in OVERRIDES:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


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
