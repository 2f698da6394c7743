"""Distributed training and evaluation on CPU: `torchrun --nproc-per-node 2` with gloo. Training with
DDP and FSDP2 against the single-process run of the same global batch (same losses and weights up
to summation order); data-parallel evaluation against one process (the same rows)."""

import dataclasses
import json
import os
import shutil
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
    saving = dataclasses.replace(base, config={**base.config, "train": {**base.config["train"], "save_every": 1}})
    assert scaling.compare([base, saving])[1]["max_loss_diff"] == 0.0  # when checkpoints are written is not timed


def test_scaling_reports_steps_trained_modes_and_names_that_tell_runs_apart(single, tmp_path):
    """"steps" is the steps trained (it counted the logged ones: 3 of 4 when logged every 3rd step);
    FSDP2 at world size 1 is sharded (it showed "-" like a plain process); runs in folders of one
    name are told apart by their parents (dupA/swat and dupB/swat were both "swat")."""
    for copy in ("dupA", "dupB"):
        shutil.copytree(single, tmp_path / copy / "swat")
    # as --log-every 3 with one checkpoint, at the end, logs it (steps 1, 3 and 4), and its header says so
    records = [json.loads(line) for line in (single / LOG_FILE).read_text().splitlines()]
    as_every_third = [{**r, "log_every": 3, "save_every": 4} if "step" not in r else r
                      for r in records if r.get("step") != 2]
    (tmp_path / "dupB" / "swat" / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in as_every_third))
    assert len(read_log(tmp_path / "dupB" / "swat" / LOG_FILE)) == 3
    text, records = scaling.write([single, tmp_path / "dupA" / "swat", tmp_path / "dupB" / "swat"], None)
    assert [r["run"] for r in records] == [single.name, "dupA/swat", "dupB/swat"]
    assert [r["steps"] for r in records] == [4, 4, 4] and records[0]["parallel"] == "-"
    assert [r["steps_compared"] for r in records] == [4, 4, 3] and text.splitlines()[4].endswith("| never | 3 |")
    sharded = dataclasses.replace(scaling.read_run(single), parallel="fsdp")
    assert scaling.compare([sharded])[0]["parallel"] == "fsdp"
    assert scaling.run_names([tmp_path / "a" / "swat", tmp_path / "b" / "swat", tmp_path / "c"]) == ["a/swat", "b/swat",
                                                                                                  "c"]
    with pytest.raises(ConfigError, match="given twice"):
        scaling.run_names([single, single / ".." / single.name])


def test_scaling_refuses_a_run_resumed_at_another_world_size(single, tmp_path):
    """Started on 2 ranks, resumed on 1: it was shown as a 1-GPU run with its last part's speed."""
    shutil.copytree(single, tmp_path / "run")
    log = tmp_path / "run" / LOG_FILE
    lines = log.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    lines[0] = json.dumps({**header, "world_size": 2}) + "\n"
    lines.insert(3, json.dumps({**header, "start_step": 2}) + "\n")
    log.write_text("".join(lines))
    with pytest.raises(ConfigError, match="trained at world sizes 2, 1 in turn"):
        scaling.read_run(tmp_path / "run")


def test_scaling_baseline_is_the_run_on_the_fewest_gpus_whatever_the_order(single, tmp_path):
    """A 2-GPU run given first was the baseline, and every efficiency assumed it ran on one GPU (the
    2-GPU baseline 50%, the one-GPU run 57%); now the run on the fewest GPUs is, per GPU against its
    per GPU, the rows stay in the order given and a line names the baseline the table does not show."""
    one = dataclasses.replace(scaling.read_run(single), name="one", tokens_per_s=400.0, device="NVIDIA H100")
    ddp = dataclasses.replace(one, name="ddp", world_size=2, tokens_per_s=700.0, losses=[x + 0.01 for x in one.losses])
    four = dataclasses.replace(one, name="four", world_size=4, tokens_per_s=1200.0)
    records = scaling.compare([ddp, one, four])
    assert [r["run"] for r in records] == ["ddp", "one", "four"] and {r["baseline"] for r in records} == {"one"}
    assert [r["scaling_efficiency"] for r in records] == pytest.approx([0.875, 1.0, 0.75])
    assert records[1]["max_loss_diff"] == 0.0 and records[0]["max_loss_diff"] == pytest.approx(0.01)
    assert "against it): one for swat (1 GPU).\n" in scaling.markdown(records)
    no_single = scaling.compare([four, ddp])  # no one-GPU run: per GPU against the 2-GPU run's
    assert [r["scaling_efficiency"] for r in no_single] == pytest.approx([300 / 350, 1.0])
    assert "against it): ddp for swat (2 GPUs).\n" in scaling.markdown(no_single)
    assert "Baseline" not in scaling.markdown(scaling.compare([one, ddp, four]))  # one-GPU run first: as before
    assert scaling.plot([ddp, one], tmp_path / "scaling.png").is_file()


def test_scaling_refuses_a_cut_log(single, tmp_path, capsys):
    """A log cut short (half the file, or its last line torn) was compared over the steps it kept as
    if they were the whole run, in a normal-looking table; now it is one error line, no traceback."""
    from harness import cli
    shutil.copytree(single, tmp_path / "run")
    log = tmp_path / "run" / LOG_FILE
    lines = (single / LOG_FILE).read_text().splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if '"step": 3,' in line)
    for cut, ends in (("".join(lines[:third]) + lines[third][:40], "ends at step 2"),  # mid-file, mid-line
                      ("".join(lines)[:-10], "ends at step 3"), (lines[0], "has no step records")):
        log.write_text(cut)
        with pytest.raises(ConfigError, match=f"{LOG_FILE} {ends} but its run's checkpoint is at step 4: the log "
                                              f"was cut"):
            scaling.read_run(tmp_path / "run")
    assert cli.main(["scaling", str(single), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line[:7] for line in err.splitlines()] == ["error: "]


def test_scaling_refuses_a_log_with_lost_lines(single, tmp_path, capsys):
    """A log whose middle lines were garbled (left out by read_log) was compared over the steps it
    kept, and "never" read as if the whole run agreed; now it is one error line, and so is a deleted
    line (the headers record the cadence the run logged at)."""
    from harness import cli
    shutil.copytree(single, tmp_path / "run")
    log = tmp_path / "run" / LOG_FILE
    lines = (single / LOG_FILE).read_text().splitlines(keepends=True)
    second = next(i for i, line in enumerate(lines) if '"step": 2,' in line)
    damaged = (lines[second][:30] + "\n", lines[second].replace('"loss": ', '"loss": "x", "was": '))
    for line in damaged:  # garbled, or its loss not a number
        log.write_text("".join(lines[:second] + [line] + lines[second + 1:]))
        with pytest.raises(ConfigError, match=f"{LOG_FILE} has 1 damaged line\\(s\\)"):
            scaling.read_run(tmp_path / "run")
    log.write_text("".join(lines[:second] + lines[second + 1:]))
    with pytest.raises(ConfigError, match=f"{LOG_FILE} lacks 1 of the steps its run logged \\(the first: step 2\\)"):
        scaling.read_run(tmp_path / "run")
    assert cli.main(["scaling", str(single), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line[:7] for line in err.splitlines()] == ["error: "]


def test_an_error_under_torchrun_is_one_line_from_rank_0(tmp_path):
    """Every rank fails alike; each printed the same error line (and the interruption line)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                           "harness", "train", "--model", "swat", "--device", "cpu", "--out", str(tmp_path / "run"),
                           "--set", "train.micro_batch=3"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: train.micro_batch=3 must divide the 4 sequences each of 2 rank(s) takes per step; "
                      "choose one of 1, 2, 4"]
    assert not (tmp_path / "run").exists()


RANK0_WORKS_LONG = """
import time
from harness.training import distributed
d = distributed.setup("cpu", timeout_s=1)  # a collective's timeout far shorter than rank 0's work
if d.is_main:
    time.sleep(3)  # tokenizing a corpus on first use, writing a checkpoint
d.barrier()
print("rank", d.rank, d.broadcast_object("ready" if d.is_main else None), flush=True)
"""


def test_other_ranks_wait_for_rank_0_past_the_collective_timeout(tmp_path):
    """While rank 0 alone works on the host (tokenizing a large corpus, writing a checkpoint), the
    others wait at a barrier longer than the job's collective timeout (NCCL's 10 minutes), instead
    of stopping there with a traceback."""
    script = tmp_path / "rank0_works_long.py"
    script.write_text(RANK0_WORKS_LONG)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(proc.stdout.split("\n")[:2]) == ["rank 0 ready", "rank 1 ready"]


def test_other_ranks_print_no_error_or_interruption_line(monkeypatch, capsys):
    """What a rank other than 0 prints for a bad value, a bad argument or a stop (torchrun sets RANK
    before any process group exists): nothing, with the exit status rank 0 gives."""
    from harness import cli
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert cli.main(["train", "--model", "swat", "--set", "train.lr=abc"]) == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--model", "swat", "--limit", "3"])
    assert exit_.value.code == 2
    monkeypatch.setattr(cli, "cmd_train", lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["train", "--model", "swat"]) == 130
    assert capsys.readouterr() == ("", "")


def test_fsdp_at_world_size_one_resumes_unsharded(single, tmp_path, capsys):
    """`--parallel fsdp` without torchrun (a one-process group, the same code path), interrupted
    after its step-2 checkpoint and finished by the plain path: the full-state checkpoint carries over.
    It used to train unsharded without a word; a note says so and how to shard."""
    cfg = load_config("tiny", overrides=OVERRIDES)

    def stop(info):
        if info["step"] == 2:
            raise KeyboardInterrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            train("swat", cfg, tmp_path, "cpu", on_step=stop, parallel="fsdp")
    finally:
        distributed.teardown()
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [distributed.ONE_SHARD_NOTE] and "torchrun --nproc-per-node N" in notes[0]
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
    meta = json.loads((tmp_path / "runs-two" / "r" / "swat" / CHECKPOINT_DIR / "meta.json").read_text())
    assert meta["world_size"] == 2
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
    assert proc.stdout.count("study tiny-study: 1 run done;") == 1
    meta = tmp_path / "runs-two" / "tiny-study" / "a" / "swat" / "lr0.003-seed0" / CHECKPOINT_DIR / "meta.json"
    assert json.loads(meta.read_text())["world_size"] == 2
    assert_same_rows(tmp_path / "one" / "tiny-study", tmp_path / "two" / "tiny-study", {"smoke"}, rel=1e-4)


def assert_same_rows(one_dir, two_dir, tasks, rel):
    """The rows of a one-process run and a 2-rank run match, row for row."""
    measured = {"value", "stderr", "eval_seconds", "world_size", "date", "command", "checkpoint", "weights"}

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


def test_scaling_refuses_runs_that_ran_each_rank_otherwise(single):
    """A one-process baseline with activation checkpointing and micro-batches of 1 gave a 2-process run
    92.6% where a matched one gave 31%; the sequences per forward, the execution switches and the
    device must now match (a micro-batch capped at a rank's share counts as the share), naming both values.
    compile and fused_ce compare as they resolved: two `auto` runs could have run otherwise."""
    base = dataclasses.replace(scaling.read_run(single), device="cpu")
    assert base.applied == {"compile": False, "fused_ce": False}  # auto resolves to off on a CPU
    assert base.config["train"]["micro_batch"] == 2  # of 8 sequences: 2 per forward on 1 rank or 2

    def varied(train=None, **changes):
        return dataclasses.replace(base, name="other", config={**base.config, "train": {**base.config["train"],
                                                                                      **(train or {})}}, **changes)
    for other, says in ((varied({"activation_checkpointing": True}), "train.activation_checkpointing False vs True"),
                        (varied({"compile": "on"}, applied={**base.applied, "compile": True}),
                         "train.compile 'off' vs 'on'"),
                        (varied(applied={**base.applied, "fused_ce": True}), "train.fused_ce 'off' vs 'on'"),
                        (varied(device="NVIDIA H100"), "device 'cpu' vs 'NVIDIA H100'")):
        with pytest.raises(ConfigError, match=f"ran each rank's step otherwise: {says}, which changes the speed"):
            scaling.compare([base, other])
    whole = varied({"micro_batch": 8})  # 8 per forward on one process, 4 on each of two
    with pytest.raises(ConfigError, match="train.micro_batch 8 vs 4 sequences per forward on each rank.*"
                                          "train both with --set train.micro_batch=4"):
        scaling.compare([whole, dataclasses.replace(whole, world_size=2)])
    on = {"compile": True, "fused_ce": True}
    for one, two in ((base, varied(world_size=2)),  # 2 and 2 per forward; 4 and 4; a log that names no device
                     (varied({"micro_batch": 4}), varied({"micro_batch": 8}, world_size=2)),
                     (base, varied(device=None, world_size=2)),
                     # `auto` as it resolved: on here is `on` there; runs that predate the record, as written
                     (varied({"compile": "auto"}, applied=on), varied({"compile": "on"}, applied=on, world_size=2)),
                     (varied({"compile": "on"}, applied=None), varied({"compile": "on"}, applied=None, world_size=2))):
        assert scaling.compare([one, two])[1]["scaling_efficiency"] == pytest.approx(0.5)


def test_scaling_reads_the_device_and_refuses_a_run_resumed_on_another(single, tmp_path):
    shutil.copytree(single, tmp_path / "run")
    log = tmp_path / "run" / LOG_FILE
    lines = log.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    assert scaling.read_run(tmp_path / "run").device == header["device"]
    lines[0] = json.dumps({**header, "device": "cpu"}) + "\n"
    lines.insert(3, json.dumps({**header, "device": "NVIDIA H100 80GB HBM3", "start_step": 2}) + "\n")
    log.write_text("".join(lines))
    with pytest.raises(ConfigError, match="trained on cpu, NVIDIA H100 80GB HBM3 in turn \\(resumed on another\\)"):
        scaling.read_run(tmp_path / "run")


def test_scaling_marks_an_efficiency_above_100_percent(single):
    """111.7% was printed as if a 2-process run scaled better than linearly; it says the baseline was slow."""
    one = dataclasses.replace(scaling.read_run(single), name="one", tokens_per_s=100.0)
    two = dataclasses.replace(one, name="two", world_size=2, tokens_per_s=223.4)
    text = scaling.markdown(scaling.compare([one, two]))
    assert "| 100.0% |" in text and f"| 111.7% {scaling.OVER} |" in text
    assert f"\n{scaling.OVER} Above 100%: the baseline ran slower per process" in text
    assert scaling.OVER not in scaling.markdown(scaling.compare([one, dataclasses.replace(two, tokens_per_s=180.0)]))


def test_a_run_logged_every_few_steps_and_resumed_is_whole_and_a_lost_step_of_it_is_not(tmp_path):
    """8 steps logged every 3rd, checkpointed every 4th, stopped at step 3 and resumed: its log (steps
    1, 3, 4, 6, 8) is what its headers' cadence says, so it compares; without step 6 it is refused."""
    from harness.training.outcome import TrainingStopped
    cfg = load_config("tiny", overrides=OVERRIDES + ["train.tokens=4096", "train.save_every=4"])
    asked = []
    with pytest.raises(TrainingStopped):
        train("swat", cfg, tmp_path, "cpu", should_stop=lambda: asked.append(1) or len(asked) == 2, log_every=3)
    train("swat", cfg, tmp_path, "cpu", log_every=3)
    assert [r["step"] for r in read_log(tmp_path / LOG_FILE)] == [1, 3, 4, 6, 8]
    assert scaling.read_run(tmp_path).trained_steps == 8
    lines = (tmp_path / LOG_FILE).read_text().splitlines(keepends=True)
    (tmp_path / LOG_FILE).write_text("".join(line for line in lines if '"step": 6,' not in line))
    with pytest.raises(ConfigError, match=r"lacks 1 of the steps its run logged \(the first: step 6\)"):
        scaling.read_run(tmp_path)


def test_scaling_says_runs_on_a_cpu_are_processes_not_gpus(single, tmp_path):
    """Runs on a CPU were shown as "1 GPU" and "2 GPUs" with a tokens/s and a 219.7% efficiency, as if
    a speed result; now the records name the device and a line says that only their losses tell."""
    one = scaling.read_run(single)
    assert one.device.startswith("cpu")
    two = dataclasses.replace(one, name="two", world_size=2)
    records = scaling.compare([two, one])
    assert [r["device"] for r in records] == [one.device] * 2
    text = scaling.markdown(records)
    assert f"On CPU (two, {one.name}): the processes share one machine's cores" in text and "no speed result" in text
    assert f"{one.name} for swat (1 CPU process)." in text
    assert text.startswith("| run | processes | parallel | tokens/s | scaling efficiency | MFU per process | "
                           "peak memory per process") and "GPU" not in text
    on_gpus = [dataclasses.replace(r, device="NVIDIA H100 80GB HBM3") for r in (one, two)]
    assert "CPU" not in scaling.markdown(scaling.compare(on_gpus))
    other_model_on_gpus = [dataclasses.replace(r, model="transformer", name=f"gpu-{r.name}") for r in on_gpus]
    mixed = scaling.markdown(scaling.compare([*other_model_on_gpus, one]))
    assert mixed.startswith("| run | GPUs |") and f'On CPU ({one.name}): "GPUs" counts processes' in mixed


def test_scaling_refuses_a_meta_json_whose_speed_or_world_size_is_not_a_number(single, tmp_path, capsys):
    """A meta.json with tokens_per_s "fast" or world_size 0 ended in a TypeError or ZeroDivisionError
    traceback; now each is one error line naming the file and the field."""
    from harness import cli
    from harness.training.outcome import CheckpointDamaged
    shutil.copytree(single, tmp_path / "run")
    meta_file = tmp_path / "run" / CHECKPOINT_DIR / "meta.json"
    meta = json.loads(meta_file.read_text())
    for key, value, says in (("tokens_per_s", "fast", "its tokens_per_s holds 'fast', not a finite number"),
                             ("world_size", 0, "its world_size is 0, not a positive whole number"),
                             ("peak_mem_gib_per_rank", [1.0, "a"], "its peak_mem_gib_per_rank holds 'a'"),
                             ("parallel", "tp", "its parallel is 'tp', not ddp or fsdp")):
        meta_file.write_text(json.dumps({**meta, key: value}))
        with pytest.raises(CheckpointDamaged, match=f"meta.json is damaged \\({says}"):
            scaling.read_run(tmp_path / "run")
    assert cli.main(["scaling", str(single), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line[:7] for line in err.splitlines()] == ["error: "]


def test_scaling_refuses_a_log_with_a_loss_not_finite_absent_or_a_step_twice(single, tmp_path):
    """A step whose loss read NaN was compared as "never" parting from the baseline (NaN > 1e-3 is
    false), one without a loss was a KeyError traceback, a step logged twice was compared twice."""
    shutil.copytree(single, tmp_path / "run")
    log = tmp_path / "run" / LOG_FILE
    lines = (single / LOG_FILE).read_text().splitlines(keepends=True)
    second = next(i for i, line in enumerate(lines) if '"step": 2,' in line)
    record = json.loads(lines[second])
    without_loss = {k: v for k, v in record.items() if k != "loss"}
    for line in ({**record, "loss": float("nan")}, {**record, "loss": float("inf")}, without_loss):
        log.write_text("".join(lines[:second] + [json.dumps(line) + "\n"] + lines[second + 1:]))
        with pytest.raises(ConfigError, match=f"{LOG_FILE} has 1 damaged line\\(s\\)"):
            scaling.read_run(tmp_path / "run")
    log.write_text("".join(lines + [lines[second]]))
    with pytest.raises(ConfigError, match="a step logged twice"):
        scaling.read_run(tmp_path / "run")


def test_scaling_writes_no_table_where_its_plot_fails(single, tmp_path, capsys):
    """scaling.md and scaling.json were written before the plot, so a plot that failed (here a folder
    where scaling.png goes) left a new table beside no plot; now none of the three is written."""
    from harness import cli
    (tmp_path / "out" / "scaling.png").mkdir(parents=True)
    assert cli.main(["scaling", str(single), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scaling.png"]


def test_scaling_under_torchrun_reports_from_rank_0_alone(single, tmp_path, monkeypatch, capsys):
    """`torchrun -m harness scaling` printed the table and wrote the files once per rank."""
    from harness import cli
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert cli.main(["scaling", str(single), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr() == ("", "") and not (tmp_path / "out").exists()
