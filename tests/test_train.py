"""Training loop: bit-for-bit resume, atomic checkpoints, logs, errors, FLOP counting (CPU)."""

import contextlib
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.config import ConfigError, load_config
from harness.model.build import build_model
from harness.model.flops import flops_per_token, visited_keys
from harness.training import recipe
from harness.training import train as train_mod
from harness.training.checkpoint import (
    CHECKPOINT_DIR,
    TRAINER_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    read_meta,
    recover_checkpoint,
)
from harness.training.outcome import TrainingError
from harness.training.train import train
from harness.training.trainlog import LOG_FILE, PLOT_FILE, read_log

# 2048 tokens in 8 steps of 4 sequences x 64 tokens, 2 micro-batches of 2 (accumulation), checkpoint every 4
SHORT = ["train.tokens=2048", "train.batch_tokens=256", "train.seq_len=64", "train.micro_batch=2",
         "train.save_every=4", "train.warmup_tokens=512", "train.eval_tokens=1024"]


def short_cfg(*extra):
    return load_config("tiny", overrides=SHORT + list(extra))


def weights(run_dir):
    return load_file(str(run_dir / CHECKPOINT_DIR / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


class Interrupt(KeyboardInterrupt):
    pass


def interrupt_at(step):
    def on_step(info):
        if info["step"] == step:
            raise Interrupt
    return on_step


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted 2k-token run of swat (packed documents: the cu_seqlens path)."""
    run_dir = tmp_path_factory.mktemp("straight")
    result = train("swat", short_cfg(), run_dir, "cpu")
    return run_dir, result


def test_resume_is_bit_for_bit(straight, tmp_path):
    run_dir, result = straight
    with pytest.raises(Interrupt):  # 1k tokens, then the process "dies" right after the checkpoint
        train("swat", short_cfg(), tmp_path, "cpu", on_step=interrupt_at(4))
    meta = json.loads((tmp_path / CHECKPOINT_DIR / "meta.json").read_text())
    assert meta["step"] == 4 and meta["tokens"] == 1024
    resumed = train("swat", short_cfg(), tmp_path, "cpu")  # + 1k tokens
    assert_same_weights(run_dir, tmp_path)
    opt_a = torch.load(run_dir / CHECKPOINT_DIR / TRAINER_FILE, weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(tmp_path / CHECKPOINT_DIR / TRAINER_FILE, weights_only=True)["optimizer"]["state"]
    for name in opt_a:
        assert torch.equal(opt_a[name]["exp_avg_sq"], opt_b[name]["exp_avg_sq"]), name
    assert [r["loss"] for r in read_log(tmp_path / LOG_FILE)] == [r["loss"] for r in read_log(run_dir / LOG_FILE)]
    headers = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines() if '"step"' not in line]
    assert [h["start_step"] for h in headers] == [0, 4]  # each segment of the run says how it was started
    assert resumed.heldout_loss == result.heldout_loss


def test_log_plot_and_meta(straight):
    run_dir, result = straight
    records = read_log(run_dir / LOG_FILE)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert {"loss", "lr", "tokens_per_s", "grad_norm", "peak_mem_gib", "mfu"} <= records[0].keys()
    assert records[-1]["tokens"] == 2048 and records[-1]["loss"] < records[0]["loss"]
    header = json.loads((run_dir / LOG_FILE).read_text().splitlines()[0])
    assert header["start_step"] == 0 and header["command"] and header["device"] and header["date"]
    assert (run_dir / PLOT_FILE).stat().st_size > 1000
    meta = json.loads((run_dir / CHECKPOINT_DIR / "meta.json").read_text())
    assert meta["heldout_loss"] == result.heldout_loss and math.isfinite(result.heldout_loss)
    assert meta["flops_per_token"]["attention"] > 0 and meta["flops_per_token"]["partial"] == []
    modes = {f.name: f.stat().st_mode & 0o777 for f in (run_dir / CHECKPOINT_DIR).iterdir()}
    assert len(set(modes.values())) == 1, modes  # the weights are as readable as the rest (not 0600)
    model, cfg, name, _ = load_checkpoint(run_dir / CHECKPOINT_DIR)
    assert name == "swat" and cfg.train.tokens == 2048
    assert torch.equal(model.embed.weight, result.model.embed.weight)


def test_a_stop_request_checkpoints_and_resumes_bit_for_bit(straight, tmp_path):
    """should_stop (a study's time limit): the step in hand is checkpointed, then TrainingStopped."""
    run_dir, _ = straight
    steps = []

    def stop_at_three():
        steps.append(len(steps) + 1)
        return len(steps) == 3
    with pytest.raises(train_mod.TrainingStopped, match="stopped at step 3 of 8"):
        train("swat", short_cfg(), tmp_path, "cpu", should_stop=stop_at_three)
    assert json.loads((tmp_path / CHECKPOINT_DIR / "meta.json").read_text())["step"] == 3
    train("swat", short_cfg(), tmp_path, "cpu")
    assert_same_weights(run_dir, tmp_path)


def test_logging_every_few_steps_trains_the_same_weights(straight, tmp_path):
    """log_every=3 of 8 steps (checkpoint every 4): the log holds the first step, every third, the
    checkpoint's and the last; a stop request is heard at a logged step; the weights are the same."""
    run_dir, result = straight
    asked = []
    with pytest.raises(train_mod.TrainingStopped, match="stopped at step 3 of 8"):
        train("swat", short_cfg(), tmp_path, "cpu", should_stop=lambda: asked.append(1) or len(asked) == 2,
              log_every=3)
    resumed = train("swat", short_cfg(), tmp_path, "cpu", log_every=3)
    assert [r["step"] for r in read_log(tmp_path / LOG_FILE)] == [1, 3, 4, 6, 8]
    straight_losses = {r["step"]: r["loss"] for r in read_log(run_dir / LOG_FILE)}
    assert all(r["loss"] == straight_losses[r["step"]] for r in read_log(tmp_path / LOG_FILE))
    assert_same_weights(run_dir, tmp_path)
    assert resumed.heldout_loss == result.heldout_loss


def test_seeds_share_the_heldout_split_and_vary_the_data_order(straight):
    """train.seed varies initialisation and the order sequences are visited in, never which
    documents are held out: one fixed model scores the same held-out loss under either seed."""
    from harness.data.streams import prepare_streams
    from harness.data.tokenizer import get_tokenizer
    from harness.evaluation.loop import TaskContext
    from harness.registry import get_task
    model = straight[1].model
    losses = []
    for seed in (0, 1):
        cfg = short_cfg(f"train.seed={seed}")
        ctx = TaskContext(cfg, "r", "swat", "cpu")
        rows = get_task("smoke").run(model, get_tokenizer(cfg.train.tokenizer), ctx)
        losses.append([(r.metric, r.value, r.extra.get("corpus_source")) for r in rows])
    assert losses[0] == losses[1]
    train_stream, _ = prepare_streams("bundled", get_tokenizer("bytes"))
    first = [train_mod.batch_at(train_stream, 64, seed, 0, 4, "cpu")[0] for seed in (0, 1)]
    assert not torch.equal(*first)


def test_finished_run_is_reused(straight):
    """Reused as it is, and its loss plot drawn if a run stopped between its last checkpoint and the plot."""
    run_dir, result = straight
    (run_dir / "loss.png").unlink()
    again = train("swat", short_cfg(), run_dir, "cpu")
    assert again.reused and not result.reused
    assert again.seconds == 0.0 and again.heldout_loss == result.heldout_loss
    assert len(read_log(run_dir / LOG_FILE)) == 8 and (run_dir / "loss.png").is_file()


def test_a_checkpoint_is_read_only_with_the_tokenizer_it_was_trained_with(tmp_path):
    """A BPE retrained under its name (`harness data train-tokenizer --force`) gives other ids: a
    checkpoint trained with the old one was evaluated and resumed with the new one, silently."""
    from harness.data import corpus, importers
    path = tmp_path / "bpe.json"
    path.write_text(importers.train_bpe("bundled", 512)[0].to_str())
    cfg = short_cfg(f"train.tokenizer={path}", "model.vocab_size=512")
    run_dir = tmp_path / "run"
    train("swat", cfg, run_dir, "cpu")
    assert read_meta(run_dir / CHECKPOINT_DIR)["tokenizer_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    load_checkpoint(run_dir / CHECKPOINT_DIR)
    shouted = tmp_path / "shouted"
    shouted.mkdir()
    (shouted / "wiki.txt").write_text(corpus.BUNDLED_TEXT.read_text().upper())
    path.write_text(importers.train_bpe(str(shouted), 512)[0].to_str())
    retrained = f"{run_dir / CHECKPOINT_DIR} was trained with tokenizer {path} of sha256 .*, but {path} is now another"
    with pytest.raises(TrainingError, match=retrained):
        load_checkpoint(run_dir / CHECKPOINT_DIR)
    with pytest.raises(TrainingError, match=retrained):
        train("swat", cfg, run_dir, "cpu")


def test_interrupted_save_leaves_previous_checkpoint(straight, tmp_path, monkeypatch):
    """A save that dies half-written keeps the last checkpoint; the resumed run still matches."""
    real_save, calls = torch.save, []

    def dying_save(obj, file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:  # the second checkpoint (step 4): half a file, then the process is stopped
            file.write(b"\0" * 100)
            raise Interrupt
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Interrupt):
        train("swat", short_cfg("train.save_every=2"), tmp_path, "cpu")
    monkeypatch.setattr(torch, "save", real_save)
    assert json.loads((tmp_path / CHECKPOINT_DIR / "meta.json").read_text())["step"] == 2
    assert not list(tmp_path.glob(f".{CHECKPOINT_DIR}.tmp*"))  # the torn folder is removed, never renamed
    load_checkpoint(tmp_path / CHECKPOINT_DIR)
    train("swat", short_cfg("train.save_every=2"), tmp_path, "cpu")
    assert not list(tmp_path.glob(f".{CHECKPOINT_DIR}.*"))
    assert_same_weights(straight[0], tmp_path)


def test_half_finished_swap_is_repaired(tmp_path):
    old = tmp_path / f".{CHECKPOINT_DIR}.old123"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    (tmp_path / f".{CHECKPOINT_DIR}.tmp123").mkdir()
    recover_checkpoint(tmp_path)
    assert (tmp_path / CHECKPOINT_DIR / "meta.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_DIR]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss, calls = train_mod.lm_loss, []

    def loss_going_nan(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 2 * 5 else loss  # step 6 (2 micro-batches a step)

    monkeypatch.setattr(train_mod, "lm_loss", loss_going_nan)
    with pytest.raises(TrainingError, match=r"loss is nan at step 6.*last good checkpoint \(step 4\)") as err:
        train("swat", short_cfg(), tmp_path, "cpu")
    assert json.loads((tmp_path / CHECKPOINT_DIR / "meta.json").read_text())["step"] == 4
    assert [r["step"] for r in read_log(tmp_path / LOG_FILE)] == [1, 2, 3, 4, 5]
    # it said "lower train.lr ..., then resume", which the other train.lr then refuses
    assert "for inspection; lower train.lr or raise train.warmup_tokens and train again from scratch" in str(err.value)
    assert "--no-resume" in str(err.value) and "then resume" not in str(err.value)
    with pytest.raises(ConfigError, match="train.lr"):  # as the message says: not resumable
        train("swat", short_cfg("train.lr=0.0001"), tmp_path, "cpu")


def test_a_first_step_that_diverges_blames_the_initial_weights_not_the_learning_rate(tmp_path, monkeypatch):
    """No update has happened at step 1, so lowering train.lr (the advice for later steps) cannot help."""
    real_loss = train_mod.lm_loss
    monkeypatch.setattr(train_mod, "lm_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    with pytest.raises(TrainingError, match="loss is nan at step 1, before any update: .*initialisation") as err:
        train("swat", short_cfg(), tmp_path, "cpu")
    assert "lower train.lr" not in str(err.value)


def test_a_later_divergence_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    real_loss, calls = train_mod.lm_loss, []

    def nan_from_the_second_step(*a, **k):
        calls.append(1)
        return real_loss(*a, **k) * (float("nan") if len(calls) > 2 else 1.0)  # 2 micro-batches a step
    monkeypatch.setattr(train_mod, "lm_loss", nan_from_the_second_step)
    with pytest.raises(TrainingError, match="loss is nan at step 2; .*no checkpoint was written yet; lower train.lr"):
        train("swat", short_cfg(), tmp_path, "cpu")


@pytest.mark.parametrize("raised", [torch.OutOfMemoryError("CUDA out of memory"),
                                    RuntimeError("Triton Error [CUDA]: out of memory"),
                                    RuntimeError("CUDA error: out of memory")])
def test_out_of_memory_names_the_knobs(tmp_path, monkeypatch, raised):
    """Whichever layer ran out (torch's allocator, a Triton launch, a CUDA call)."""
    from harness.memory import OutOfMemory

    def oom(*args, **kwargs):
        raise raised

    monkeypatch.setattr(train_mod, "lm_loss", oom)
    with pytest.raises(OutOfMemory, match="micro_batch=2.*activation_checkpointing=true"):
        train("swat", short_cfg(), tmp_path, "cpu")


@pytest.mark.parametrize("override", ["train.lr=0.002", "train.tokens=4096", "train.tokens=1024",
                                      "train.eval_tokens=512"])
def test_resume_refuses_another_recipe(straight, override):
    """Another budget is another learning-rate schedule (a shorter one would also stop past its end),
    and a finished run's held-out loss was scored on its own eval_tokens."""
    with pytest.raises(ConfigError, match=f"{override.split('=')[0]}.*--no-resume"):
        train("swat", short_cfg(override), straight[0], "cpu")


def log_headers(run_dir):
    return [r for r in map(json.loads, (run_dir / LOG_FILE).read_text().splitlines()) if "step" not in r]


def test_no_resume_starts_over(tmp_path):
    """--no-resume discards the earlier run whole: its log kept its header line before, describing a
    run that is gone; its loss plot stays only until the new run draws its own."""
    cfg = short_cfg("train.tokens=512")
    train("transformer", cfg, tmp_path, "cpu")
    plot_there = []
    again = train("transformer", cfg, tmp_path, "cpu", resume=False,
                  on_step=lambda info: plot_there.append((tmp_path / PLOT_FILE).exists()))
    assert again.seconds > 0 and len(read_log(tmp_path / LOG_FILE)) == 2
    assert [h["start_step"] for h in log_headers(tmp_path)] == [0]
    assert plot_there == [False, False] and (tmp_path / PLOT_FILE).is_file()


def test_a_log_keeps_the_headers_of_the_segments_it_holds(tmp_path):
    """Resumed twice from the step-4 checkpoint (the second segment was cut before its next one): the
    second segment's steps are cut from the log, and so is its header, which described none."""
    with pytest.raises(Interrupt):
        train("swat", short_cfg(), tmp_path, "cpu", on_step=interrupt_at(6))
    with pytest.raises(Interrupt):
        train("swat", short_cfg(), tmp_path, "cpu", on_step=interrupt_at(5))
    train("swat", short_cfg(), tmp_path, "cpu")
    assert [h["start_step"] for h in log_headers(tmp_path)] == [0, 4]
    assert [r["step"] for r in read_log(tmp_path / LOG_FILE)] == list(range(1, 9))


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path):
    plain = train("transformer", short_cfg("train.tokens=512"), tmp_path / "plain", "cpu")
    ckpt = train("transformer", short_cfg("train.tokens=512", "train.activation_checkpointing=true"),
                 tmp_path / "ac", "cpu")
    assert plain.train_loss == ckpt.train_loss
    for (name, a), b in zip(plain.model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name


def test_global_batch_must_split_into_micro_batches(tmp_path):
    with pytest.raises(ConfigError, match="micro_batch=3 must divide"):
        train("swat", short_cfg("train.micro_batch=3"), tmp_path, "cpu")


@pytest.mark.parametrize("override, message", [
    ("train.corpus=/nonexistent/corpus.txt", "/nonexistent/corpus.txt"),
    ("train.seq_len=256", "exceeds model.max_seq_len=128"),
    ("train.fused_ce=true", "train.fused_ce needs a CUDA GPU"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, override, message):
    from harness.cli import main
    code = main(["train", "--model", "swat", "--preset", "tiny", "--device", "cpu", "--out", str(tmp_path),
                 "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and message in " ".join(err.split())
    assert err.strip().startswith("error:") and "Traceback" not in err


def test_speed_switches_are_on_where_they_apply(straight):
    """compile and fused_ce default to auto: off on a CPU (the run's meta says what ran), on a CUDA
    device for the models they apply to; on demands them, off refuses them; true/false read as
    on/off; none of them changes what a config trains (its hash)."""
    from harness.config import config_hash
    from harness.training.recipe import compile_applies, fused_cross_entropy
    run_dir, _ = straight
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["config"]["train"]["compile"] == "auto" and meta["applied"] == {"compile": False, "fused_ce": False}
    cfg = load_config("tiny")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device name: nothing runs on it here
    swat, gla = build_model("swat", cfg.model, "meta"), build_model("gla", cfg.model, "meta")
    assert compile_applies(swat, cuda, "auto") and not compile_applies(swat, cpu, "auto")
    assert not compile_applies(gla, cuda, "auto")  # fla's layers call their own kernels: left eager
    assert compile_applies(gla, cpu, "on") and not compile_applies(swat, cuda, "off")
    assert fused_cross_entropy(swat, cpu, "auto") is None and fused_cross_entropy(swat, cuda, "off") is None
    with pytest.raises(ConfigError, match="train.fused_ce needs a CUDA GPU"):
        fused_cross_entropy(swat, cpu, "on")
    switched = load_config("tiny", overrides=["train.compile=true", "train.fused_ce=false", "train.micro_batch=2"])
    assert (switched.train.compile, switched.train.fused_ce) == ("on", "off")
    assert config_hash(switched) == config_hash(cfg) != config_hash(load_config("tiny", overrides=["train.lr=1e-2"]))
    with pytest.raises(ConfigError, match="train.compile must be auto, on or off, got 'maybe'"):
        load_config("tiny", overrides=["train.compile=maybe"])


def test_weight_decay_skips_vectors_and_what_a_module_exempts():
    """AdamW decays the matrices only, bar those a module names in `no_weight_decay` (Mamba's A_log,
    a matrix of decay rates that mamba_ssm's own training leaves undecayed)."""
    cfg = load_config("tiny")
    model = build_model("mamba", cfg.model, "meta")
    decayed, undecayed = recipe.make_optimizer(model, cfg.train).param_groups
    decayed_ids, undecayed_ids = {id(p) for p in decayed["params"]}, {id(p) for p in undecayed["params"]}
    a_logs = [p for name, p in model.named_parameters() if name.endswith("A_log")]
    assert a_logs and all(p.dim() == 2 and id(p) in undecayed_ids for p in a_logs)
    assert decayed["weight_decay"] == cfg.train.weight_decay > 0 == undecayed["weight_decay"]
    assert all(p.dim() >= 2 for p in decayed["params"]) and decayed_ids.isdisjoint(undecayed_ids)
    assert len(decayed_ids | undecayed_ids) == len(list(model.parameters()))


def test_backbone_loss_in_forward_equals_the_logits_loss():
    """Backbone models return the loss from forward(targets=...) (where train.fused_ce plugs in);
    it is the cross-entropy of their logits, packed documents included."""
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    model = build_model("swat", cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    cu = torch.tensor([0, 5, 16, 32], dtype=torch.int32)
    logits = model(inputs.reshape(1, 32), cu_seqlens=cu)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.equal(train_mod.lm_loss(model, inputs, targets, cu), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fused_cross_entropy_matches_the_plain_loss():
    """fla's fused head + cross-entropy (train.fused_ce) vs logits + F.cross_entropy, bf16 autocast."""
    pytest.importorskip("fla")
    cfg = load_config("small").model
    torch.manual_seed(0)
    model = build_model("swat", cfg, "cuda")
    ids = torch.randint(0, cfg.vocab_size, (4, 257), device="cuda")
    results = []
    for fused in (False, True):
        model.fused_ce = recipe.fused_cross_entropy(model, torch.device("cuda")) if fused else None
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = recipe.lm_loss(model, ids[:, :-1], ids[:, 1:])
        loss.backward()
        results.append((loss.detach(), model.embed.weight.grad.clone(), model.blocks[0].mlp.down.weight.grad.clone()))
    (plain, *g_plain), (fused, *g_fused) = results
    print(f"\nfused-vs-plain cross-entropy: loss {plain.item():.5f} vs {fused.item():.5f}")
    assert abs(plain.item() - fused.item()) < 1e-2
    for a, b in zip(g_plain, g_fused):
        assert ((a - b).norm() / a.norm()).item() < 2e-2


def _tf32_state():
    matmul = torch.backends.cuda.matmul
    return matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32


def test_tf32_matmuls_is_scoped_and_restored():
    before = _tf32_state()
    with recipe.tf32_matmuls():
        assert _tf32_state() in ("tf32", True)
    assert _tf32_state() == before
    with pytest.raises(ValueError), recipe.tf32_matmuls():
        raise ValueError
    assert _tf32_state() == before
    torch.get_float32_matmul_precision()  # raises in recent torch when the legacy and new switches were mixed


def test_fused_head_loss_uses_tf32_for_half_precision_operands_only():
    """The fused loss's fp32 products may use TF32 where its operands are bf16 or fp16 (exact in
    TF32), never where they are fp32 (train.dtype=fp32: TF32 would round them)."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, target, weight):
            seen.append(_tf32_state())
            return (x.float() @ weight.float().T).sum()

    loss = recipe.FusedHeadLoss(Recorder())
    target = torch.zeros(3, dtype=torch.long)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        out = loss(torch.ones(3, 4, dtype=dtype), target, torch.ones(5, 4, dtype=dtype))
        assert out.item() == 60.0
    off = _tf32_state()
    assert seen[:2] == [seen[0]] * 2 and seen[0] in ("tf32", True) and seen[2] == off


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fused_head_loss_tf32_matches_fp32():
    """With bf16 operands (exact in TF32) the fused loss's TF32 products equal its fp32 ones up to
    summation order. The input gradient is a bf16 product either way, so it is identical. The head's
    weight gradient is summed in fp32 and then rounded to bf16, where a summation-order difference
    moves a few elements to a neighbouring bf16 value (7e-5 relative on an H100): far below the
    bf16 rounding of the gradient itself (2^-9 relative), which a real loss of precision would reach."""
    fla = pytest.importorskip("fla.modules")
    torch.manual_seed(0)
    x = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(32000, 1024, device="cuda") * 0.02).to(torch.bfloat16).requires_grad_()
    target = torch.randint(0, 32000, (4096,), device="cuda")
    grads = []
    for loss in (fla.FusedLinearCrossEntropyLoss(), recipe.FusedHeadLoss(fla.FusedLinearCrossEntropyLoss())):
        x.grad = w.grad = None
        loss(x, target, w).backward()
        grads.append((x.grad, w.grad.float()))
    (dx_fp32, dw_fp32), (dx_tf32, dw_tf32) = grads
    assert torch.equal(dx_fp32, dx_tf32)
    assert ((dw_fp32 - dw_tf32).norm() / dw_fp32.norm()).item() < 2.0**-10


# ---------------------------------------------------------------- FLOPs

def test_datasheet_peak_by_device_name():
    """The name torch reports picks the datasheet's dense bf16 peak: NVL and PCIe parts before the
    SXM ones whose names they contain; an unknown GPU or a CPU has none (no MFU against it)."""
    from harness.model.flops import datasheet_matmul_peak
    assert datasheet_matmul_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert datasheet_matmul_peak("NVIDIA H100 PCIe") == 756.5e12
    assert datasheet_matmul_peak("NVIDIA H100 NVL") == 835.5e12
    assert datasheet_matmul_peak("NVIDIA H200") == datasheet_matmul_peak("NVIDIA GH200 480GB") == 989.4e12
    assert datasheet_matmul_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert datasheet_matmul_peak("NVIDIA GeForce RTX 4090") is None
    assert datasheet_matmul_peak("cpu (x86_64, 2 cores)") is None


def test_mfu_against_the_measured_and_the_datasheet_peak():
    """MFU per GPU: model FLOPs per token x tokens/s over the peak and the ranks; none without a
    peak (a GPU missing from the datasheet table gets no datasheet MFU, not the measured one)."""
    from types import SimpleNamespace

    from harness.training.train import Meter
    job = SimpleNamespace(d=SimpleNamespace(device=torch.device("cpu"), world_size=2),
                          flops=SimpleNamespace(train=2e9), step_tokens=1024)
    meter = Meter(job, 700e12, 1000e12, start_step=0)
    assert meter.mfu(350_000) == pytest.approx(0.5)
    assert meter.utilisation(350_000, meter.datasheet) == pytest.approx(0.35)
    assert Meter(job, 700e12, None, start_step=0).utilisation(350_000, None) is None
    assert meter.mfu(None) is None


def test_train_prints_mfu_against_both_peaks(monkeypatch, tmp_path, capsys):
    from harness import cli
    from harness.training.outcome import TrainResult
    result = TrainResult(torch.nn.Linear(1, 1), 10, 5_242_880, 7.9, 7.5, 336_380_928, 30.0, tmp_path,
                         tokens_per_s=159_591, mfu=0.505, peak_mem_gib=20.0, mfu_datasheet=0.348)
    monkeypatch.setattr(cli, "train_until_asked", lambda *args: result)
    assert cli.main(["train", "--model", "swat", "--preset", "tiny", "--quiet", "--out", str(tmp_path / "r")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "159,591 tokens/s, MFU 50.5% (34.8% of the datasheet peak), peak memory 20.0 GiB" in out


def test_visited_keys():
    assert visited_keys(4, 2) == (1 + 2 + 2 + 2) / 4
    assert visited_keys(4, None) == visited_keys(4, 4) == visited_keys(4, 100) == 2.5


def test_transformer_flops_by_hand(tiny_cfg):
    m = tiny_cfg.model
    d, f, v, t = m.hidden_size, m.ffn_hidden, m.vocab_size, tiny_cfg.train.seq_len
    per_layer = 2 * d * d * 2 + 2 * d * 2 * d + 2 * d * 2 * f + 2 * f * d  # q, o; kv; gate_up; down
    count = flops_per_token(build_model("transformer", m), t)
    assert count.linear == m.num_layers * per_layer
    assert count.head == 2 * d * v
    assert count.attention == m.num_layers * 4 * m.num_heads * m.head_dim * (t + 1) / 2
    assert count.train == 3 * count.forward and not count.partial


def test_swat_counts_only_the_band(tiny_cfg):
    t = tiny_cfg.train.seq_len
    full = flops_per_token(build_model("transformer", tiny_cfg.model), t)
    swat = flops_per_token(build_model("swat", tiny_cfg.model), t)
    assert swat.linear == full.linear
    assert swat.attention / full.attention == pytest.approx(visited_keys(t, tiny_cfg.model.window) / ((t + 1) / 2))


def test_mamba_flops_count_scan_and_conv(tiny_cfg):
    model = build_model("mamba", tiny_cfg.model)
    count = flops_per_token(model, tiny_cfg.train.seq_len)
    mixers = [b.mixer for b in model.blocks]
    e, n, k = mixers[0].d_inner, mixers[0].n, mixers[0].k
    assert count.scan == len(mixers) * 9 * e * n
    assert count.conv == len(mixers) * 2 * e * k
    assert count.attention == 0 and not count.partial


def test_unknown_mixer_is_marked_partial(tiny_cfg):
    from harness.model.backbone import DecoderLM

    class Shift(torch.nn.Module):
        def __init__(self, cfg, i):
            super().__init__()
            self.proj = torch.nn.Linear(cfg.hidden_size, cfg.hidden_size)

        def forward(self, x, cu_seqlens=None):
            return self.proj(x)

    count = flops_per_token(DecoderLM(tiny_cfg.model, Shift), 16)
    assert count.partial == ["Shift"] and count.linear > 0


@pytest.mark.parametrize("logger, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_missing_logger_package_names_the_install_before_anything_is_written(tmp_path, monkeypatch, logger, module):
    """Refused before the run folder is made (it came after the log and its header were written)."""
    import sys
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were absent
    with pytest.raises(ConfigError, match=f"pip install {logger}"):
        train("swat", short_cfg("train.tokens=256"), tmp_path / "run", "cpu", loggers=(logger,))
    assert not (tmp_path / "run").exists()


def short_documents(folder, count=20, words=12):
    """A corpus of `count` documents of a few words: its held-out document is shorter than 64 tokens."""
    import random
    rng, vocabulary = random.Random(0), ["cat", "the", "mat", "on", "sat"]
    folder.mkdir()
    for i in range(count):
        (folder / f"d{i}.txt").write_text(" ".join(rng.choice(vocabulary) for _ in range(words)))
    return folder


@pytest.mark.parametrize("model", ["swat", "bigram"])
def test_a_heldout_split_shorter_than_a_sequence_is_refused_before_training(tmp_path, model):
    """It was refused only at the end, after all the steps, beside the run's log and checkpoints."""
    corpus = short_documents(tmp_path / "corpus")
    with pytest.raises(TrainingError, match="held-out split of corpus .* is shorter than one sequence of 64 tokens"):
        train(model, short_cfg(f"train.corpus={corpus}"), tmp_path / "runs" / "tiny" / "run", "cpu")
    assert not (tmp_path / "runs").exists()  # the folders the run's lock made are gone, parents too


@pytest.mark.parametrize("world", [2, 3])
def test_the_heldout_loss_scores_the_same_sequences_at_any_world_size(world):
    """The scored count was rounded down to a multiple of the ranks: 3 sequences in one process, 2 in
    two, so identical weights reported 4.8450 and 4.8584 (and a count under the ranks was refused).
    Every rank now runs as many forwards, the short ones on a repeat that counts for nothing."""
    from harness.data.streams import prepare_streams
    from harness.data.tokenizer import get_tokenizer
    from harness.training.heldout import heldout_score, scored_sequences
    _, held = prepare_streams("bundled", get_tokenizer("bytes"))
    assert scored_sequences(held, 64, 3 * 64) == 3 and scored_sequences(held, 64, 10) == 1
    torch.manual_seed(0)
    model = build_model("transformer", load_config("tiny").model)
    alone = heldout_score(model, held, 64, 3 * 64, 2, "cpu", contextlib.nullcontext)
    shares, forwards = [], []

    class Rank:  # one rank of `world`: its sums are kept, and the last rank's reduce adds them all
        def __init__(self, rank):
            self.rank, self.world_size = rank, world

        def sum(self, value):
            shares.append(value.clone())
            return sum(shares)
    model.register_forward_hook(lambda *args: forwards.append(1))
    for rank in range(world):
        forwards.clear()
        score = heldout_score(model, held, 64, 3 * 64, 1, "cpu", contextlib.nullcontext, Rank(rank))
        assert len(forwards) == 3 // world + (3 % world > 0)  # as many forwards on every rank
    assert (score.loss, score.tokens) == (pytest.approx(alone.loss, rel=1e-12), alone.tokens)


@pytest.mark.parametrize("tokens, note", [
    ("1500", "note: train.tokens=1500 is 1.46 batches of 1,024 tokens: training 1 step (1,024 tokens)"),
    ("100", "note: train.tokens=100 is 0.09 batches of 1,024 tokens: training 1 step (1,024 tokens)"),
    ("1024", None),
])
def test_a_budget_between_batches_is_said_before_training(tmp_path, capsys, tokens, note):
    """train.tokens that is no whole number of batches trains whole steps (TrainConfig.steps); it did
    so silently. The note comes first, and the summary's tokens are the ones it names."""
    from harness.cli import main
    assert main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(tmp_path), "--set",
                 f"train.tokens={tokens}", "--set", "train.eval_tokens=128"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == (note or "")
    assert "swat: 123,264 params, 1,024 tokens" in " ".join(out.split())


def test_an_eval_budget_beyond_the_held_out_split_is_said(tmp_path, capsys):
    """It was capped at the split's size without a word."""
    from harness.cli import main
    assert main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(tmp_path), "--set",
                 "train.tokens=1024", "--set", "train.eval_tokens=1000000"]) == 0
    err = capsys.readouterr().err
    assert "note: train.eval_tokens=1,000,000 is more than the held-out split of bundled holds: the held-out " \
           "loss scores all of it, 12,672 tokens" in " ".join(err.split())


def test_a_huge_budget_s_note_is_exact():
    """Its batches went through a float: 10^29 + 1 tokens read 97,656,249,999,999,991,633,936,384.00 batches
    (now refused: a config's integers stay below 2^63); just below 2^63 a float would say .00."""
    from harness.training.recipe import budget_note
    tcfg = load_config("tiny", overrides=["train.tokens=9223372036854775000"]).train
    assert budget_note(tcfg).startswith("note: train.tokens=9223372036854775000 is "
                                        "9,007,199,254,740,991.21 batches of 1,024 tokens")


def test_harness_run_says_a_budget_between_batches_too(tmp_path, capsys):
    """`harness run` trains the same budgets as `harness train`, so it says the same note first."""
    from harness.cli import main
    assert main(["run", "--models", "swat", "--tasks", "smoke", "--device", "cpu", "--results", str(tmp_path / "r"),
                 "--runs", str(tmp_path / "runs"), "--set", "train.tokens=1500", "--set", "train.eval_tokens=128"]) == 0
    note = "note: train.tokens=1500 is 1.46 batches of 1,024 tokens: training 1 step (1,024 tokens)"
    assert capsys.readouterr().err.splitlines()[0] == note


def test_a_counting_model_says_what_it_wrote_and_scaling_refuses_it(tmp_path, capsys):
    """A count model writes a checkpoint alone: the summary said "log and loss.png in ...", and
    `harness scaling` called its folder not a finished run."""
    from harness.cli import main
    argv = ["train", "--model", "bigram", "--device", "cpu", "--out", str(tmp_path / "bigram"),
            "--set", "train.tokens=1024", "--set", "train.eval_tokens=128"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "counts, 1,024 tokens" in out and "(fitted by counting: no training log or loss.png)" in out
    assert sorted(p.name for p in (tmp_path / "bigram").iterdir()) == [CHECKPOINT_DIR]
    assert main(argv) == 0  # a finished fit is reused, as a trained model is, and says so
    assert "bigram: already trained in" in capsys.readouterr().out
    assert main(["scaling", str(tmp_path / "bigram")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bigram, a model fitted by counting: it has no training curve" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_resume_is_bit_for_bit(tmp_path):
    """On one GPU (bf16 autocast, the fast SWAT kernels): 1k + resume + 1k tokens == 2k straight."""
    cfg = short_cfg("train.dtype=bf16")
    straight = train("swat", cfg, tmp_path / "straight", "cuda")
    with pytest.raises(Interrupt):
        train("swat", cfg, tmp_path / "resumed", "cuda", on_step=interrupt_at(4))
    train("swat", cfg, tmp_path / "resumed", "cuda")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    assert straight.mfu is not None and straight.peak_mem_gib > 0


# ---------------------------------------------------------------- damaged or unfitting checkpoints

@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """A run folder cut after its step-4 checkpoint (of 8)."""
    run_dir = tmp_path_factory.mktemp("cut")
    with pytest.raises(Interrupt):
        train("swat", short_cfg(), run_dir, "cpu", on_step=interrupt_at(5))
    return run_dir


def copied(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def rewrite(run_dir, name, change):
    """Change a checkpoint file (`change` edits its loaded content in place) and record its new
    sha256, as a checkpoint of another version of the code, or one damaged past its checksums, is."""
    ckpt = run_dir / CHECKPOINT_DIR
    if name == "meta.json":
        meta = json.loads((ckpt / name).read_text())
        change(meta)
        (ckpt / name).write_text(json.dumps(meta))
        return
    if name == WEIGHTS_FILE:
        from safetensors.torch import save_file
        state = load_file(str(ckpt / name))
        change(state)
        save_file(state, str(ckpt / name), metadata={"format": "pt"})
    else:
        state = torch.load(ckpt / name, weights_only=True)
        change(state)
        torch.save(state, ckpt / name)
    rewrite(run_dir, "meta.json", lambda meta: meta["sha256"].update({name: hashlib.sha256(
        (ckpt / name).read_bytes()).hexdigest()}))


def folder_state(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("norm.weight"), "(missing tensors norm.weight)"),
    (lambda w: w.update({"extra.weight": torch.zeros(3)}), "(unexpected tensors extra.weight)"),
    (lambda w: w.update({"norm.weight": torch.ones(7)}), "(other shapes: norm.weight [7], the model's [64])"),
])
def test_weights_that_do_not_fit_the_model_are_refused_when_resumed_and_loaded(cut, tmp_path, change, message):
    """A tensor missing from the checkpoint trained on, freshly initialised (a full-state load asks for
    no key); one of another shape stopped in a traceback."""
    run_dir = copied(cut, tmp_path)
    rewrite(run_dir, WEIGHTS_FILE, change)
    before = folder_state(run_dir)
    weights_file = run_dir / CHECKPOINT_DIR / WEIGHTS_FILE
    expected = f"{weights_file} does not fit the model its meta.json describes {message}: a checkpoint of an older"
    with pytest.raises(TrainingError) as err:
        train("swat", short_cfg(), run_dir, "cpu")
    assert expected in str(err.value) and "--no-resume" in str(err.value)
    with pytest.raises(TrainingError) as err:
        load_checkpoint(run_dir / CHECKPOINT_DIR)
    assert expected in str(err.value)
    assert folder_state(run_dir) == before


def test_an_optimizer_state_that_does_not_load_is_one_error(cut, tmp_path):
    run_dir = copied(cut, tmp_path)
    rewrite(run_dir, TRAINER_FILE, lambda t: t["optimizer"]["state"].pop("norm.weight"))
    with pytest.raises(TrainingError, match=f"{run_dir / CHECKPOINT_DIR} does not load into the model its "
                       "meta.json describes"):
        train("swat", short_cfg(), run_dir, "cpu")


def drop(key):
    return lambda d: d.pop(key)


def set_in(*path, value):
    def change(meta):
        for key in path[:-1]:
            meta = meta[key]
        meta[path[-1]] = value
    return change


DAMAGED_META = [  # (change to a finished checkpoint's meta.json, what the error says)
    (lambda m: m["config"].pop("preset"), "its config has no preset"),
    (set_in("config", "model", value="x"), "its config's model is not a mapping"),
    (set_in("config", "model", "bogus", value=1), "its config: unknown key model.bogus"),
    (set_in("config", "train", "batch_tokens", value=0), "its config: train.batch_tokens must be positive"),
    (set_in("sha256", value="abc"), "its sha256 is not a mapping of file names to checksums"),
    (set_in("plugin", value="x.py"), "its plugin is not a file name and sha256"),
    (set_in("step", value="8"), "its step is '8', not a whole number"),
    (drop("heldout_loss"), "it is finished but it has no heldout_loss"),
    (set_in("train_loss", value=float("nan")), "it is finished but its train_loss is nan, not a finite number"),
]


@pytest.mark.parametrize("change, problem", DAMAGED_META)
def test_a_damaged_meta_json_that_is_still_json_is_one_error_naming_it(straight, tmp_path, change, problem):
    """They gave KeyError, ValueError and AttributeError tracebacks, "unknown key model.bogus" as if a
    --set were wrong, or (no held-out loss) rc 0 with train loss nan written into meta.json."""
    run_dir = copied(straight[0], tmp_path)
    rewrite(run_dir, "meta.json", change)
    before = folder_state(run_dir)
    meta = run_dir / CHECKPOINT_DIR / "meta.json"
    with pytest.raises(TrainingError) as err:
        train("swat", short_cfg(), run_dir, "cpu")
    assert str(err.value).startswith(f"{meta} is damaged ({problem}") and "--no-resume" in str(err.value)
    with pytest.raises(TrainingError, match="is damaged"):
        load_checkpoint(run_dir / CHECKPOINT_DIR)
    assert folder_state(run_dir) == before
    assert not train("swat", short_cfg("train.tokens=256"), run_dir, "cpu", resume=False).reused  # the fix said


@pytest.mark.parametrize("change, problem", [
    (drop("step"), "it has no step"),
    (set_in("step", value=5), "its step 5 is not the step 4 of meta.json"),
    (set_in("position", value=-1), "its position is -1, not a whole number"),
    (drop("optimizer"), "it has no optimizer state"),
    (set_in("rng", value=[{"cpu": 1}]), "its RNG states are not one per rank"),
])
def test_a_damaged_trainer_state_is_one_error_naming_it(cut, tmp_path, change, problem):
    """A trainer.pt without "step" gave a TypeError in restore."""
    run_dir = copied(cut, tmp_path)
    rewrite(run_dir, TRAINER_FILE, change)
    with pytest.raises(TrainingError) as err:
        train("swat", short_cfg(), run_dir, "cpu")
    assert str(err.value).startswith(f"{run_dir / CHECKPOINT_DIR / TRAINER_FILE} is damaged ({problem})")


def test_a_damaged_meta_json_is_one_error_line_on_the_command_line(straight, tmp_path, capsys):
    from harness.cli import main
    run_dir = copied(straight[0], tmp_path)
    rewrite(run_dir, "meta.json", set_in("sha256", value="abc"))
    assert main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(run_dir),
                 *[a for o in SHORT for a in ("--set", o)]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "is damaged" in err and len(err.splitlines()) == 1


def test_a_quiet_resume_says_from_which_step(cut, tmp_path, capsys):
    """The README says a rerun resumes and says from which step: only the progress bar said it."""
    from harness.cli import main
    run_dir = copied(cut, tmp_path)
    assert main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(run_dir),
                 *[a for o in SHORT for a in ("--set", o)]]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "train swat: resumed from its checkpoint at step 4 of 8"


def test_a_meta_json_whose_config_another_commit_wrote_is_not_called_damaged(tmp_path, monkeypatch):
    """An option renamed or removed since a checkpoint was written makes its config unreadable here;
    the error names the commit that wrote it instead of calling the checkpoint damaged."""
    monkeypatch.setenv("HARNESS_COMMIT", "1111111")
    config = load_config("tiny").to_dict()
    config["model"]["an_option_since_removed"] = 1
    (tmp_path / "meta.json").write_text(json.dumps({"model": "swat", "config": config, "commit": "0000000"}))
    with pytest.raises(TrainingError, match=r"was written by commit 0000000, whose config this version does not "
                                            r"read \(its config: .*an_option_since_removed.*\); evaluate it with "
                                            r"that commit, or retrain it"):
        read_meta(tmp_path)
    monkeypatch.setenv("HARNESS_COMMIT", "0000000")  # this very commit wrote it: then it is damaged
    with pytest.raises(TrainingError, match=r"meta.json is damaged \(its config: .*an_option_since_removed"):
        read_meta(tmp_path)


def test_held_out_scoring_by_document_scores_an_attention_model_as_it_trained():
    """Training keeps packed documents apart for the attention models (cu_seqlens); the held-out
    score does not, unless by_document: then a document's tokens score as if scored from its start
    alone. A model that takes no boundaries scores the same either way."""
    from contextlib import nullcontext

    import numpy as np

    from harness.data.streams import TokenStream
    from harness.training.heldout import heldout_score
    torch.manual_seed(0)
    cfg = load_config("tiny").model
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, 65).astype(np.uint16)  # one sequence of 64: documents at 0 and 40
    two_docs = TokenStream(tokens, np.array([0, 40]))
    one_doc = TokenStream(tokens[40:], np.array([0]))
    cpu = torch.device("cpu")
    for name in ("transformer", "swat", "mamba"):
        model = build_model(name, cfg, "cpu")
        whole = heldout_score(model, two_docs, 64, 64, 1, cpu, nullcontext).loss
        apart = heldout_score(model, two_docs, 64, 64, 1, cpu, nullcontext, by_document=True).loss
        if not getattr(model, "supports_varlen", False):
            assert apart == whole
            continue
        first = heldout_score(model, TokenStream(tokens[:41], np.array([0])), 40, 40, 1, cpu, nullcontext).loss
        second = heldout_score(model, one_doc, 24, 24, 1, cpu, nullcontext).loss
        assert apart == pytest.approx((40 * first + 24 * second) / 64, rel=1e-5) and apart != whole


def test_a_checkpoint_rank_0_could_not_write_stops_every_rank(tmp_path, monkeypatch):
    """The other ranks waited at a barrier for a rank 0 gone with its error (a full disk) until the
    job's timeout; rank 0 now tells them, and each stops with a line saying so."""
    from types import SimpleNamespace

    from harness.training import checkpoint as ckpt_mod
    model = build_model("swat", load_config("tiny").model, "cpu")
    told = []

    def rank(main: bool, failed_on_rank_0: bool):
        return SimpleNamespace(is_main=main, device=torch.device("cpu"), gather_objects=lambda obj: [obj],
                               broadcast_object=lambda flag: told.append(flag) or (flag if main else failed_on_rank_0))
    with pytest.raises(TrainingError, match=r"^rank 0 could not write the checkpoint .* this rank stops with it"):
        ckpt_mod.save_checkpoint(tmp_path, model, None, {}, {"step": 1}, rank(False, True))
    monkeypatch.setattr(ckpt_mod, "_torch_save", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError, match="No space left"):
        ckpt_mod.save_checkpoint(tmp_path, model, None, {}, {"step": 1}, rank(True, True))
    assert told[-1] is True and not list(tmp_path.glob(".checkpoint*"))  # rank 0 sent its failure, left no folder
    monkeypatch.undo()
    saved = ckpt_mod.save_checkpoint(tmp_path, model, None, {}, {"step": 1}, rank(False, False))
    assert saved == tmp_path / CHECKPOINT_DIR


def test_a_second_training_into_a_folder_being_trained_is_one_error_line(tmp_path, capsys):
    """Two trainings into one folder both ran, leaving one's meta.json beside the other's log. The
    folder's lock (held here by another process, then killed as a training can be) refuses the second
    at once, naming the holder, and leaves the folder as it was; the holder's death frees the lock."""
    from harness.cli import main
    from harness.files import folder_lock
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOG_FILE).write_text("the other run's log\n")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from harness.files import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()",
                               str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["train", "--model", "swat", "--device", "cpu", "--out", str(run_dir), "--set",
                     "train.tokens=1024"]) == 2
        err = capsys.readouterr().err
        assert " ".join(err.split()) == (f"error: {run_dir} is being trained by another process (pid {holder.pid}); "
                                         f"wait for it, or train into another folder")
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in run_dir.iterdir()] == [LOG_FILE]
    assert (run_dir / LOG_FILE).read_text() == "the other run's log\n"
    with folder_lock(run_dir, wait=False):  # the killed holder's lock went with it
        pass


def test_a_warmup_longer_than_the_run_is_said(tmp_path, capsys):
    """The warm-up is cut to the run, so the learning rate peaks only at its last step and never decays;
    that was silent. One step trains at train.lr whatever the warm-up: nothing to say there."""
    from harness.cli import main
    from harness.training.recipe import lr_at
    assert main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(tmp_path), "--set",
                 "train.tokens=2048", "--set", "train.warmup_tokens=1000000", "--set", "train.eval_tokens=128"]) == 0
    assert " ".join(capsys.readouterr().err.split()) == (
        "note: train.warmup_tokens=1,000,000 is longer than the run (2,048 tokens): the learning rate rises over "
        "all 2 steps, reaching train.lr=0.003 only at the last, and never decays")
    assert [r["lr"] for r in read_log(tmp_path / LOG_FILE)] == [0.0015, 0.003]
    assert train_mod.warmup_note(short_cfg("train.warmup_tokens=2048").train) is None  # the whole run, as asked
    one_step = short_cfg("train.tokens=256", "train.warmup_tokens=1000000").train
    assert train_mod.warmup_note(one_step) is None and lr_at(0, one_step) == one_step.lr


def test_a_run_stopped_right_after_a_checkpoint_still_logs_that_step(tmp_path, monkeypatch):
    """A stop landing after the checkpoint swap and before the log line (a scheduler's SIGTERM while
    the old checkpoint is removed) resumed after step 4 with step 4 missing from the log for good."""
    real_save = train_mod.save_checkpoint

    def stopped_after_saving(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Interrupt
    monkeypatch.setattr(train_mod, "save_checkpoint", stopped_after_saving)
    with pytest.raises(Interrupt):
        train("swat", short_cfg(), tmp_path, "cpu")
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    assert read_meta(tmp_path / CHECKPOINT_DIR)["step"] == 4
    train("swat", short_cfg(), tmp_path, "cpu")
    assert [r["step"] for r in read_log(tmp_path / LOG_FILE)] == list(range(1, 9))


def test_an_optimizer_state_of_other_shapes_is_one_error_naming_it(cut, tmp_path):
    """Moments of another model's shapes (a trainer.pt of another run, past its checksums) loaded
    without a word and stopped the first optimizer step in a RuntimeError traceback."""
    run_dir = copied(cut, tmp_path)
    rewrite(run_dir, TRAINER_FILE, lambda t: t["optimizer"]["state"]["norm.weight"].update(exp_avg=torch.zeros(7)))
    before = folder_state(run_dir)
    with pytest.raises(TrainingError) as err:
        train("swat", short_cfg(), run_dir, "cpu")
    assert str(err.value).startswith(f"{run_dir / CHECKPOINT_DIR / TRAINER_FILE} does not fit the model its "
                                     "meta.json describes (optimizer state of other shapes: norm.weight exp_avg [7], "
                                     "the model's [64])")
    assert "--no-resume" in str(err.value)
    assert folder_state(run_dir) == before


def test_a_no_resume_cut_while_deleting_the_old_checkpoint_leaves_none_half_deleted(tmp_path, monkeypatch):
    """A --no-resume stopped after the old checkpoint's meta.json was deleted left its other files,
    which the next run refused as a damaged checkpoint."""
    cfg = short_cfg("train.tokens=512")
    train("transformer", cfg, tmp_path, "cpu")
    real_rmtree = shutil.rmtree

    def cut_after_the_first_file(path, *args, **kwargs):
        if (Path(path) / "meta.json").is_file():
            (Path(path) / "meta.json").unlink()
            raise Interrupt
        real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(shutil, "rmtree", cut_after_the_first_file)
    with pytest.raises(Interrupt):
        train("transformer", cfg, tmp_path, "cpu", resume=False)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert not train("transformer", cfg, tmp_path, "cpu").reused
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_DIR, LOG_FILE, PLOT_FILE])


def test_a_budget_note_s_batches_never_round_up_past_the_steps_trained():
    """32,767 tokens in batches of 1,024 read 32.00 batches, then training 31 steps."""
    from harness.training.recipe import budget_note
    tcfg = load_config("tiny", overrides=["train.tokens=32767"]).train
    assert budget_note(tcfg) == ("note: train.tokens=32767 is 31.99 batches of 1,024 tokens: training 31 steps "
                                 "(31,744 tokens)")


def raising_at(step: int, signums):
    """A step callback sending this process each of `signums` at `step`: the signal comes while
    training, at a step known in advance."""
    import signal

    def on_step(info):
        if info["step"] == step:
            for signum in signums:
                signal.raise_signal(signum)  # its Python handler has run when this returns
    return on_step


def signalled_at(monkeypatch, step: int, *signums):
    """`harness train`'s training, sending this process each of `signums` at `step` (`raising_at`).
    The modules that bind `train` when imported are imported first: imported under the patch (as
    `harness train` may import them), they would keep it for the tests after this one."""
    import harness.evaluation.sources  # noqa: F401
    real_train = train_mod.train
    monkeypatch.setattr(train_mod, "train",
                        lambda *args, **kwargs: real_train(*args, **{**kwargs, "on_step": raising_at(step, signums)}))


def train_argv(out, *extra):
    return ["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(out),
            *[arg for setting in SHORT for arg in ("--set", setting)], *extra]


@pytest.mark.parametrize("signals, status", [(("SIGTERM",), 143), (("SIGINT",), 130), (("SIGTERM", "SIGTERM"), 143)])
def test_a_signal_checkpoints_the_step_in_flight_then_exits_with_its_status(straight, tmp_path, monkeypatch, capsys,
                                                                             signals, status):
    """SIGTERM (a cluster's preemption) or a first Ctrl-C ended `harness train` at once: the next run
    resumed from the last periodic checkpoint (step 4 here), the steps since lost. Now the step in
    flight when the signal comes (5) is finished, the next one asks and checkpoints, and one line
    says where it stopped; the same command resumes bit for bit. A repeated SIGTERM (a scheduler's and
    torchrun's both) changes nothing. The signal handlers are given back."""
    import signal

    from harness.cli import main
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signalled_at(monkeypatch, 5, *(getattr(signal, name) for name in signals))
    with pytest.raises(SystemExit) as stopped:
        main(train_argv(tmp_path))
    assert stopped.value.code == status
    assert read_meta(tmp_path / CHECKPOINT_DIR)["step"] == 6
    assert capsys.readouterr().err.strip() == (f"interrupted: stopped at step 6 of 8 as asked; the checkpoint in "
                                               f"{tmp_path / CHECKPOINT_DIR} resumes there: run the same command again")
    assert {sig: signal.getsignal(sig) for sig in before} == before
    monkeypatch.undo()
    assert main(train_argv(tmp_path)) == 0
    assert_same_weights(straight[0], tmp_path)


def test_a_signal_after_training_s_last_question_is_delivered_once_its_final_checkpoint_is_written(
        tmp_path, monkeypatch, capsys):
    """Training asks nothing at its last step nor while it scores the held-out split; a signal then
    was dropped when the handlers were given back (the command finished with 0, the Ctrl-C ignored).
    It now stops the command as soon as training returns, the run whole."""
    import signal

    from harness.cli import main
    signalled_at(monkeypatch, 8, signal.SIGTERM)  # the last of 8 steps
    with pytest.raises(SystemExit) as stopped:
        main(train_argv(tmp_path))
    assert stopped.value.code == 143
    assert read_meta(tmp_path / CHECKPOINT_DIR)["heldout_loss"] is not None  # finished and scored
    assert capsys.readouterr().err.strip() == ("interrupted: stopped as asked, after its training had finished and "
                                               "was saved: run the same command again")


def test_the_stop_line_names_a_folder_whose_name_reads_as_markup(tmp_path, monkeypatch, capsys):
    """`run[/x]` in the path was taken for rich markup: a traceback instead of the stop, or another path."""
    import signal

    from harness.cli import main
    out = tmp_path / "run[/x]"
    signalled_at(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        main(train_argv(out))
    assert stopped.value.code == 143
    assert f"the checkpoint in {out / CHECKPOINT_DIR} resumes there" in capsys.readouterr().err


def test_a_stop_under_no_resume_says_to_resume_without_it(tmp_path, monkeypatch, capsys):
    """`--no-resume` again would discard the checkpoint just written."""
    import signal

    from harness.cli import main
    signalled_at(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(SystemExit):
        main(train_argv(tmp_path, "--no-resume"))
    assert capsys.readouterr().err.strip().endswith("resumes there: run the same command without --no-resume")


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch, capsys):
    """As before the first one checkpointed: the last periodic checkpoint (step 4) is what there is."""
    import signal

    from harness.cli import main
    signalled_at(monkeypatch, 5, signal.SIGINT, signal.SIGINT)
    assert main(train_argv(tmp_path)) == 130
    assert read_meta(tmp_path / CHECKPOINT_DIR)["step"] == 4
    assert capsys.readouterr().err.startswith("interrupted: the rows and checkpoints written so far are kept")


def test_a_signal_before_training_asks_stops_at_once(tmp_path, monkeypatch, capsys):
    """A model fitted by counting never asks whether to stop: a SIGTERM waiting for it would be lost
    for the whole fit. Before the first step there is nothing to checkpoint, so it stops the command
    as it did."""
    import signal

    from harness.cli import main

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("SIGTERM did not stop the fit")
    monkeypatch.setattr(train_mod, "fit_by_counting", terminated)
    assert main(["train", "--model", "bigram", "--device", "cpu", "--out", str(tmp_path / "bigram"),
                 "--set", "train.tokens=1024", "--set", "train.eval_tokens=128"]) == 130
    assert capsys.readouterr().err.startswith("interrupted: the rows and checkpoints written so far are kept")


def signalled_in(monkeypatch, model: str, step: int, *signums):
    """`harness run`'s training of `model` (not of the others), sending each of `signums` at `step`."""
    from harness.evaluation import sources
    real_train = sources.train

    def training(name, *args, **kwargs):
        stepping = {"on_step": raising_at(step, signums)} if name == model else {}
        return real_train(name, *args, **{**kwargs, **stepping})
    monkeypatch.setattr(sources, "train", training)


def run_argv(tmp_path, models, *extra):
    return ["run", "--models", models, "--tasks", "smoke", "--device", "cpu", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), *[arg for setting in SHORT for arg in ("--set", setting)], *extra]


@pytest.mark.parametrize("signum, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_harness_run_trains_checkpoints_the_step_in_flight(straight, tmp_path, monkeypatch, capsys,
                                                                          signum, status):
    """`harness run` (a cluster preempting it) lost the steps since the last periodic checkpoint (step 4),
    as `harness train` once did: now the step in flight (5) is finished, the next one checkpoints, one line
    names the model and where it stopped, and the rows of the model scored before it are kept. The same
    command resumes it bit for bit and reuses the other."""
    import signal

    from harness.cli import main
    from harness.results.store import read_rows
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signalled_in(monkeypatch, "swat", 5, getattr(signal, signum))
    with pytest.raises(SystemExit) as stopped:
        main(run_argv(tmp_path, "transformer,swat"))
    assert stopped.value.code == status
    ckpt = tmp_path / "runs" / "tiny" / "swat" / CHECKPOINT_DIR
    assert read_meta(ckpt)["step"] == 6
    assert capsys.readouterr().err.strip() == (f"interrupted: swat: stopped at step 6 of 8 as asked; the checkpoint "
                                               f"in {ckpt} resumes there: run the same command again")
    rows_file = tmp_path / "results" / "tiny" / "rows.jsonl"
    assert {(r.model, r.task) for r in read_rows(rows_file)} == {("transformer", "smoke")}
    assert {sig: signal.getsignal(sig) for sig in before} == before
    monkeypatch.undo()
    assert main(run_argv(tmp_path, "transformer,swat")) == 0
    assert_same_weights(straight[0], ckpt.parent)
    assert {(r.model, r.task) for r in read_rows(rows_file)} == {("transformer", "smoke"), ("swat", "smoke")}


def test_a_harness_run_stopped_under_force_says_to_resume_without_it(tmp_path, monkeypatch, capsys):
    """--force again would train the stopped model from scratch, and without --force the models after it
    would keep their earlier training: the line says both."""
    import signal

    from harness.cli import main
    signalled_in(monkeypatch, "swat", 2, signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        main(run_argv(tmp_path, "swat,transformer", "--force"))
    assert stopped.value.code == 143
    assert capsys.readouterr().err.strip().endswith(
        "resumes there: run the same command again without --force (it would train swat from scratch), then with "
        "--force and --models transformer")


def test_a_signal_after_harness_run_s_training_last_asked_stops_before_its_evaluation(tmp_path, monkeypatch, capsys):
    """The last step asks no more: a signal held back from then on must not wait for the tasks, which
    have no checkpoint to stop at. Training finishes (held-out loss and all), then the command stops."""
    import signal

    from harness.cli import main
    from harness.registry import get_task
    signalled_in(monkeypatch, "swat", 8, signal.SIGTERM)
    monkeypatch.setattr(get_task("smoke"), "run", lambda *args: pytest.fail("the held SIGTERM waited for the tasks"))
    with pytest.raises(SystemExit) as stopped:
        main(run_argv(tmp_path, "swat", "--force"))
    assert stopped.value.code == 143
    assert capsys.readouterr().err.strip() == ("interrupted: swat: stopped as asked, after its training had finished "
                                               "and was saved: run the same command again without --force (it would "
                                               "train swat from scratch)")
    meta = read_meta(tmp_path / "runs" / "tiny" / "swat" / CHECKPOINT_DIR)
    assert meta["step"] == 8 and meta["heldout_loss"] is not None
