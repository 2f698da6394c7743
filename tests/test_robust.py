"""Bad input never trains silently wrong or prints a traceback; a plugin written from the README's
contract just works (issue 22). Everything goes through the command line as a user types it:
`harness.cli.main([...])` in this process, or a subprocess where the exit status and stderr of the
real program are the point."""

import argparse
import contextlib
import errno
import json
import random
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import fields, replace
from pathlib import Path

import pytest

from harness import cli
from harness.config import ConfigError, ModelConfig, TrainConfig, load_config
from harness.data import mirror  # noqa: E402
from harness.data.paths import DataError
from harness.evaluation import lm_eval_adapter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ONE_STEP = ["--set", "train.tokens=1024", "--set", "train.eval_tokens=128"]  # one step, one held-out sequence


def one_error_line(err: str, *needles: str) -> None:
    """stderr is exactly one `error:` line holding every needle, and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def harness(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def folders(tmp_path: Path) -> list[str]:
    return ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]


def mirror_with(*present: str):
    """A stand-in for the data mirror that holds only `present` (fixture files in the hub schema)."""
    def require(name):
        folder = EVAL_FIXTURES / {"wikitext_2_v1": "wikitext"}.get(name, name)
        if name not in present or not folder.is_dir():
            raise DataError(f"dataset {name} is not in the mirror (looked in /nowhere/{name}); "
                            f"run `harness data fetch {name}`")
        return {p.stem: p for p in sorted(folder.glob("*.jsonl"))}
    return require


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The README's first command, shortened to one step: `harness run --models swat --tasks smoke`."""
    tmp = tmp_path_factory.mktemp("smoke-run")
    capture = pytest.MonkeyPatch()
    out = []
    capture.setattr(cli.console, "print", lambda *a, **k: out.append(" ".join(map(str, a))))
    try:
        code = cli.main(["run", "--models", "swat", "--tasks", "smoke", "--device", "cpu", *ONE_STEP, *folders(tmp)])
    finally:
        capture.undo()
    assert code == 0
    return tmp, "\n".join(out)


# ---------------------------------------------------------------- config values: signs and ranges

@pytest.mark.parametrize("override, message", [
    ("train.grad_clip=-1", "train.grad_clip must be positive"),
    ("train.grad_clip=0", "train.grad_clip must be positive"),
    ("train.min_lr_ratio=-1", "train.min_lr_ratio must be between 0 and 1"),
    ("train.min_lr_ratio=1.5", "train.min_lr_ratio must be between 0 and 1"),
    ("train.weight_decay=-1", "train.weight_decay must be >= 0"),
    ("train.betas=[0.9, 1.0]", "train.betas must be two numbers in [0, 1)"),
    ("train.betas=[0.9]", "train.betas must be two numbers in [0, 1)"),
    ("train.betas=0.9", "train.betas must be a list"),
    ("train.lr=nan", "train.lr must be a finite number"),
    ("train.lr=.inf", "train.lr must be a finite number"),
    ("train.seed=-1", "train.seed must be between 0"),
    ("train.corpus=", "train.corpus is empty"),
    ("model.sigmoid_bias=nan", "model.sigmoid_bias must be a finite number"),
    ("model.init_std=0", "model.init_std must be positive"),
    ("model.norm_eps=-1e-6", "model.norm_eps must be positive"),
    ("model.rope_theta=0", "model.rope_theta must be positive"),
    ("model.window=0", "model.window must be positive"),
    ("model.expand=0.001", "leaves no inner size"),
    ("model.mlp_hidden=abc", "model.mlp_hidden must be a number"),
    ("model.num_kv_heads=1.5", "model.num_kv_heads must be an integer"),
    ("model.rope=null", "model.rope needs a value"),
    ("model.extra=5", "model.extra must be a mapping"),
    ("train.lr=1" + "0" * 400, "train.lr is out of range"),
])
def test_every_config_value_is_checked_before_training(tmp_path, capsys, override, message):
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--out", str(tmp_path / "run"),
                     "--set", override])
    one_error_line(capsys.readouterr().err, message)
    assert code == 2 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    ("{window: 5}", "model.extra.window is read by no model here; it is a model field: --set model.window="),
    ("{full_evry: 1}", "model.extra.full_evry is read by no model here; the harness's models read their"),
])
def test_a_model_extra_key_that_no_model_reads_is_refused(tmp_path, capsys, monkeypatch, extra, message):
    """With only the harness's models loaded nothing reads such a key: the run went ahead without it.
    (The registry is narrowed to them here: other tests leave plugin models registered.)"""
    from harness import registry
    from harness.config import load_config
    from harness.model.build import check_extra
    builtin = {name: spec for name, spec in registry.models().items() if spec.builtin}
    monkeypatch.setattr(registry._REG, "models", builtin)
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--out", str(tmp_path / "run"),
                     "--set", f"model.extra={extra}"])
    one_error_line(capsys.readouterr().err, message)
    assert code == 2 and not (tmp_path / "run").exists()
    cfg = load_config("tiny")
    cfg.model.extra = {"gla": {"num_heads": 2}}  # a harness model's options, under its name
    check_extra(cfg.model)
    monkeypatch.setattr(registry._REG, "models", {**builtin, "mine": replace(builtin["swat"], builtin=False)})
    cfg.model.extra = {"full_evry": 1}  # a plugin's builder may read any key
    check_extra(cfg.model)


def test_a_yaml_file_of_wrong_types_is_one_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  slopes: 5\ntrain:\n  corpus: [a, b]\n")
    assert cli.main(["train", "--model", "swat", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "model.slopes must be")


@pytest.mark.parametrize("content, message", [
    (b"model: [1, 2\n", "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1"),
    (b"\xff\xfe\x00", "is not UTF-8 text (byte 0)"),
])
@pytest.mark.parametrize("command", ["train", "study"])
def test_a_config_or_study_file_that_is_no_yaml_is_one_line(tmp_path, capsys, content, message, command):
    """PyYAML's message spans several lines of context, and bytes that are not UTF-8 were a traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    args = (["train", "--model", "swat", "--config", str(bad), "--out", str(tmp_path / "run")] if command == "train"
            else ["study", str(bad), "--results", str(tmp_path / "run")])
    assert cli.main(args) == 2
    one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "run").exists()


def test_damaged_rows_logs_and_kernel_tables_are_warnings_or_one_line(smoke_run, tmp_path, capsys):
    """A row whose value is not a number and bytes that are not UTF-8 are skipped with a warning (as a
    torn line is); a step record of a training log whose loss is not a number is dropped; a damaged
    line of a kernel table is one error line naming it."""
    from harness.bench.kernels import read_csv
    from harness.training.trainlog import read_log
    run = tmp_path / "results" / "r"
    run.mkdir(parents=True)
    good = (smoke_run[0] / "results" / "tiny" / "rows.jsonl").read_text().splitlines()[0]
    (run / "rows.jsonl").write_bytes(good.encode() + b"\n" + good.replace('"value": ', '"value": "abc", "x": ')
                                     .encode() + b"\n\xff\xfe\n")
    assert cli.main(["tables", "--run", str(run)]) == 0
    out = capsys.readouterr()
    assert "value 'abc' is not a number" in out.out + out.err and "rows.jsonl:3: skipped" in out.out + out.err
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": "abc"}\n')
    assert read_log(log) == [{"step": 1, "loss": 2.5}]
    table = tmp_path / "kernels.csv"
    table.write_text("mode,head_dim,seq_len,window,batch,heads,peer,activation,ms,tflops,status\n"
                     "fwd,64,x,128,32,16,swat,sigmoid,0.3,100,ok\n")
    with pytest.raises(Exception, match="kernels.csv: line 2 is damaged"):
        read_csv(table)


# ---------------------------------------------------------------- command-line arguments

@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "argument --limit: must be a positive integer, got '0'"),
    (["--limit", "-5"], "argument --limit: must be a positive integer, got '-5'"),
    (["--device", "tpu"], "'tpu' is not a device the harness runs on; use cpu, cuda or cuda:N"),
    (["--models", ""], "argument --models: names nothing"),
    (["--tasks", ","], "argument --tasks: names nothing"),
])
def test_bad_arguments_are_one_line_before_any_work(tmp_path, args, message):
    out = harness("run", "--models", "swat", *args, *folders(tmp_path))
    assert out.returncode == 2
    one_error_line(out.stderr, message, "harness run --help")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("run", ["..", "a/b"])
def test_a_train_run_name_that_is_no_folder_name_is_refused(tmp_path, capsys, run):
    """`--run ../x` trained into a folder beside runs/, as eval's and run's names once wrote beside results/."""
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--run", run, "--runs", str(tmp_path / "runs")])
    one_error_line(capsys.readouterr().err, "--run must be a non-empty name without / or")
    assert code == 2 and not tmp_path.joinpath("runs").exists()


STUDY = ["study", str(Path(__file__).parent / "fixtures" / "study" / "tiny.yaml")]
BENCH_MODELS = ["bench", "models", "--models", "swat", "--device", "cpu"]


@pytest.mark.parametrize("command, args, message", [
    # --jobs 0 ran the study in-process as if 1, a negative time limit stopped every run unstarted,
    # an unknown device was a traceback
    (STUDY, ["--jobs", "0"], "argument --jobs: must be a positive integer, got '0' (see `harness study --help`)"),
    (STUDY, ["--time-limit", "-5"],
     "argument --time-limit: must be a number of seconds >= 0, got '-5' (see `harness study --help`)"),
    (STUDY, ["--time-limit", "nan"],
     "argument --time-limit: must be a number of seconds >= 0, got 'nan' (see `harness study --help`)"),
    (STUDY, ["--device", "tpu"], "argument --device: 'tpu' is not a device the harness runs on"),
    # --hidden 0 wrote a table of zero-head shapes with no timings
    (["bench", "kernels"], ["--hidden", "0"], "argument --hidden: must be a positive integer, got '0'"),
    (["bench", "kernels"], ["--tokens", "0"], "argument --tokens: must be a positive integer, got '0'"),
    (["bench", "kernels"], ["--hidden", "1000"], "--hidden 1000 is not a multiple of head size 64"),
    # a negative length was a traceback from inside the first model's sweep; a misspelt sweep was ignored
    (BENCH_MODELS, ["--lengths", "train=-5"], "--lengths train takes positive integers, got '-5'"),
    (BENCH_MODELS, ["--lengths", "trian=2048"], "--lengths 'trian=2048' must look like train=2048,4096"),
    (BENCH_MODELS, ["--decode-batches", "0"], "--decode-batches takes positive integers, got '0'"),
    (BENCH_MODELS, ["--decode-batches", "x"], "--decode-batches takes comma-separated integers, got 'x'"),
    # an empty list of sweeps or modes exited 0, saying it wrote files it had not
    (BENCH_MODELS, ["--sweeps", ","], "argument --sweeps: names nothing"),
    (["bench", "kernels"], ["--modes", ","], "argument --modes: names nothing"),
    (["bench", "kernels"], ["--peers", ""], "argument --peers: names nothing"),
])
def test_study_and_bench_arguments_out_of_range_are_one_line_before_any_file(tmp_path, capsys, command, args,
                                                                             message):
    out = tmp_path / "out"
    folders = ["--results", str(out), "--runs", str(tmp_path / "runs")] if command[0] == "study" else ["--out", str(out)]
    try:
        code = cli.main([*command, *folders, *args])
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    assert code == 2 and not out.exists()
    one_error_line(capsys.readouterr().err, message)


@pytest.mark.parametrize("command", [
    ["train", "--model", "swat", "--device", "cpu", "--out", "{file}/run"],
    ["run", "--models", "swat", "--device", "cpu", "--results", "{file}/results", "--runs", "{runs}"],
    ["tables", "--run", "{results}", "--out", "{folder}"],
    ["export", "--checkpoint", "{checkpoint}", "--out", "{file}/hf"],
])
def test_a_path_that_runs_into_a_file_or_a_folder_is_one_line(tmp_path, capsys, command, smoke_run):
    """--out or --results through a file (refused before any training), a file to write that is a
    folder: the path and the fix, not a traceback."""
    (tmp_path / "file").write_text("in the way")
    (tmp_path / "folder" / "table.md").mkdir(parents=True)  # where `tables --out` would write a file
    paths = {"file": tmp_path / "file", "folder": tmp_path / "folder" / "table.md",
             "results": smoke_run[0] / "results" / "tiny",
             "checkpoint": smoke_run[0] / "runs" / "tiny" / "swat" / "checkpoint", "runs": tmp_path / "runs"}
    try:
        code = cli.main([part.format(**paths) for part in command])
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    assert code == 2
    one_error_line(capsys.readouterr().err, "give another path")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("out, message", [
    ("/proc/harness-run", "/proc/harness-run: "),  # a folder the system will not make (no such file, as root)
    ("{tmp}/" + "a" * 300, "file name too long; give another path"),  # refused as an argument
])
def test_an_output_folder_the_system_refuses_is_one_line_naming_the_fix(tmp_path, capsys, out, message):
    """Any OSError about the path, not only the four kinds PATH_ERRORS words: /proc/x was
    "error: [Errno 2] No such file or directory: '/proc/x'", a name too long a traceback."""
    if out.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    try:
        code = cli.main(["train", "--model", "bigram", "--device", "cpu", "--out", out.format(tmp=tmp_path), *ONE_STEP])
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    assert code == 2
    one_error_line(capsys.readouterr().err, message, "give another path")
    assert list(tmp_path.iterdir()) == []


def test_a_path_error_of_any_kind_names_the_path_and_the_fix(tmp_path):
    import errno
    existing = tmp_path / "x"  # (a file yet to be made is named by its folder: see below)
    existing.write_text("")
    assert cli.path_problem(OSError(errno.EROFS, "Read-only file system", str(existing))) == \
        f"{existing}: read-only file system; give another path"
    assert cli.path_problem(PermissionError(errno.EACCES, "Permission denied", str(existing))) == \
        f"{existing}: not allowed to write or read it here; give another path"


def test_a_file_in_the_way_of_a_folder_is_named_itself(tmp_path):
    """--runs rf, where rf/tiny is a file, named rf/tiny/swat, a path that does not exist."""
    import errno
    (tmp_path / "tiny").write_text("x")
    err = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "tiny" / "swat"))
    assert cli.path_problem(err) == f"{tmp_path / 'tiny'}: a file stands where this path needs a folder; give " \
                                    f"another path"


def test_every_option_of_every_command_says_what_it_is():
    """--runs of `harness train` and `eval`, and others, had no help text."""
    def bare_options(name: str, parser) -> list:
        found = [(name, a.option_strings) for a in parser._actions if a.option_strings and not a.help]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sub_parser in action.choices.items():
                    found += bare_options(f"{name} {sub}".strip(), sub_parser)
        return found
    assert bare_options("", cli.build_parser()) == []


def test_sigterm_ends_a_command_as_ctrl_c_does(monkeypatch, capsys):
    """A scheduler's or `kill`'s SIGTERM: the interruption line and exit 130 (it ended the process
    silently, with no cleanup), and the previous SIGTERM action back afterwards."""
    import os
    import signal
    import time

    def stopped_midway(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the command")
    monkeypatch.setattr(cli, "cmd_list", stopped_midway)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["list"]) == 130
    assert "interrupted: the rows and checkpoints written so far are kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


def test_eval_limit_zero_and_cuda_without_a_gpu_are_one_line(capsys):
    import torch
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "--tasks", "piqa", "--limit", "0"])
    assert exit_.value.code == 2
    one_error_line(capsys.readouterr().err, "argument --limit: must be a positive integer")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cli.main(["train", "--model", "swat", "--device", "cuda"])
        one_error_line(capsys.readouterr().err, "cuda asked for, but no CUDA GPU is visible here; use --device cpu")


# ---------------------------------------------------------------- checkpoints carry checksums

def damaged_copy(smoke_run, tmp_path, file: str, damage) -> Path:
    ckpt = tmp_path / "swat" / "checkpoint"
    shutil.copytree(smoke_run[0] / "runs" / "tiny" / "swat" / "checkpoint", ckpt)
    path = ckpt / file
    path.write_bytes(damage(path.read_bytes()))
    return ckpt


def flip_a_bit(data: bytes) -> bytes:
    i = len(data) - 100  # inside the last tensor
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", flip_a_bit],
                         ids=["truncated", "empty", "bit-flipped"])
def test_a_damaged_checkpoint_is_one_error_naming_file_and_fix(smoke_run, tmp_path, capsys, damage):
    meta = json.loads((smoke_run[0] / "runs" / "tiny" / "swat" / "checkpoint" / "meta.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "trainer.pt"}
    ckpt = damaged_copy(smoke_run, tmp_path, "model.safetensors", damage)
    code = cli.main(["eval", "--checkpoint", str(ckpt), "--tasks", "smoke", "--results", str(tmp_path / "r")])
    one_error_line(capsys.readouterr().err, f"{ckpt / 'model.safetensors'} is damaged", "--force", "--no-resume")
    assert code == 2 and not (tmp_path / "r").exists()


def edit_meta(change):
    def damage(data: bytes) -> bytes:
        return json.dumps(change(json.loads(data))).encode()
    return damage


@pytest.mark.parametrize("damage, message", [
    (edit_meta(lambda meta: [1, 2]), "has no model name and config"),
    (edit_meta(lambda meta: {k: v for k, v in meta.items() if k != "config"}), "has no model name and config"),
    (lambda b: b"\xff\xfe\x00", "meta.json is damaged"),
    # weights of another shape than the config says (sha256 left out, as in a checkpoint written before them)
    (edit_meta(lambda meta: {**{k: v for k, v in meta.items() if k != "sha256"},
                             "config": {**meta["config"], "model": {**meta["config"]["model"], "hidden_size": 128}}}),
     "does not fit the model its meta.json describes"),
])
@pytest.mark.parametrize("command", ["eval", "export", "train"])
def test_a_damaged_meta_json_is_one_error_for_every_command(smoke_run, tmp_path, capsys, damage, message, command):
    ckpt = damaged_copy(smoke_run, tmp_path, "meta.json", damage)
    args = {"eval": ["--checkpoint", str(ckpt), "--tasks", "smoke", "--results", str(tmp_path / "r")],
            "export": ["--checkpoint", str(ckpt), "--out", str(tmp_path / "r")],
            "train": ["--model", "swat", "--device", "cpu", "--out", str(ckpt.parent), *ONE_STEP]}
    code = cli.main([command, *args[command]])
    if command == "train" and "fit" in message:  # resuming checks the config before the weights
        one_error_line(capsys.readouterr().err, "was trained with another model config")
    else:
        one_error_line(capsys.readouterr().err, message, "--force")
    assert code == 2 and not (tmp_path / "r").exists()


def test_resuming_from_a_damaged_trainer_state_is_one_error(smoke_run, tmp_path, capsys):
    ckpt = damaged_copy(smoke_run, tmp_path, "trainer.pt", flip_a_bit)
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--out", str(ckpt.parent), *ONE_STEP])
    one_error_line(capsys.readouterr().err, f"{ckpt / 'trainer.pt'} is damaged", "--no-resume")
    assert code == 2


@pytest.mark.parametrize("lost, message", [("trainer.pt", "{ckpt}/trainer.pt is missing"),
                                           ("meta.json", "{ckpt} has no meta.json")])
def test_resuming_a_checkpoint_that_lost_a_file_is_one_error(smoke_run, tmp_path, capsys, lost, message):
    """Either restarted from step 0 (silently, without meta.json), overwriting the weights."""
    ckpt = damaged_copy(smoke_run, tmp_path, "meta.json", lambda b: b)
    (ckpt / lost).unlink()
    weights = (ckpt / "model.safetensors").read_bytes()
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--out", str(ckpt.parent), *ONE_STEP])
    one_error_line(capsys.readouterr().err, message.format(ckpt=ckpt), "--no-resume")
    assert code == 2 and (ckpt / "model.safetensors").read_bytes() == weights


def test_checkpoints_without_checksums_still_load_and_truncation_still_shows(smoke_run, tmp_path, capsys):
    ckpt = damaged_copy(smoke_run, tmp_path, "meta.json", lambda b: json.dumps(
        {k: v for k, v in json.loads(b).items() if k != "sha256"}).encode())  # as written before checksums
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--tasks", "smoke", "--limit", "1",
                     "--results", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    trainer = ckpt / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[:1000])
    assert cli.main(["train", "--model", "swat", "--device", "cpu", "--out", str(ckpt.parent), *ONE_STEP]) == 2
    one_error_line(capsys.readouterr().err, f"{trainer} is damaged", "--no-resume")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--tasks", "smoke", "--results", str(tmp_path / "r2")]) == 2
    one_error_line(capsys.readouterr().err, f"{weights} is damaged", "--force")


# ---------------------------------------------------------------- plugins

def write_plugin(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def test_a_plugin_may_not_replace_a_built_in_unless_it_says_so(tmp_path, capsys):
    taken = write_plugin(tmp_path / "taken.py", """
        import torch.nn as nn
        from harness import register_model
        @register_model("swat")
        def build(cfg):
            return nn.Linear(1, 1)
    """)
    assert cli.main(["list", "--plugin", str(taken)]) == 2
    one_error_line(capsys.readouterr().err, "model 'swat' is already registered (by baselines.swat)",
                   "override=True")
    task = write_plugin(tmp_path / "task.py", """
        from harness.registry import register_task
        @register_task("smoke")
        def run(model, tokenizer, ctx):
            return []
    """)
    assert cli.main(["list", "--plugin", str(task)]) == 2
    one_error_line(capsys.readouterr().err, "task 'smoke' is already registered", "register_task('smoke'")
    from harness.registry import get_model, get_task
    assert get_model("swat").build.__module__ == "baselines.swat" and get_task("smoke").run.__module__ == "tasks.smoke"
    for name, override in (("first", ""), ("second", ", override=True")):  # a plugin that means it
        write_plugin(tmp_path / f"{name}.py", f"""
            import torch.nn as nn
            from harness import register_model
            @register_model("replaced_by_plugin", description="{name}"{override})
            def build(cfg):
                return nn.Linear(1, 1)
        """)
        assert cli.main(["list", "--plugin", str(tmp_path / f"{name}.py"), "--model", "replaced_by_plugin"]) == 0
    assert get_model("replaced_by_plugin").description == "second"


PLAIN_PLUGIN = """
    import torch.nn as nn
    from harness import register_model


    class Bigram(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
            self.out = nn.Linear(cfg.hidden_size, cfg.vocab_size)

        def forward(self, input_ids):
            return self.out(self.embed(input_ids))


    @register_model("lookup")
    def build(cfg):
        return Bigram(cfg)
"""


def test_a_plain_module_plugin_trains_and_runs_every_task(tmp_path, capsys, monkeypatch):
    """The README's contract and nothing more: a builder returning a module input_ids -> logits."""
    monkeypatch.setattr(mirror, "require", mirror_with("piqa", "wikitext_2_v1"))
    plugin = write_plugin(tmp_path / "lookup.py", PLAIN_PLUGIN)
    tasks = "smoke,piqa,wikitext_2_v1,length,passkey,mqar,speed"
    assert cli.main(["run", "--plugin", str(plugin), "--models", "lookup", "--tasks", tasks, "--limit", "1",
                     "--device", "cpu", *ONE_STEP, *folders(tmp_path)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in (tmp_path / "results" / "tiny" / "rows.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"smoke", "piqa", "wikitext_2_v1", "length", "passkey", "mqar", "speed_train"}
    assert "lookup: decode and prefill not measured: the model has no prefill()/step()" in out
    # the end of the run: each table its rows fill (WikiText-2 v1 has a column of the main table), and
    # nothing left over that no table has a column for
    titles = ("**Language modeling", "**Per-token perplexity vs evaluation length**", "**Retrieval accuracy",
              "**Speed and memory")
    assert [out.index(t) for t in titles] == sorted(out.index(t) for t in titles)
    assert "Wiki-2 v1 word ppl↓" in out and "**Other results**" not in out
    assert "| lookup depth=0.5 |" in out and "| lookup kv=4 |" in out
    assert "Traceback" not in err
    from harness.registry import get_model
    assert get_model("lookup").family == "custom"
    assert cli.main(["list", "--plugin", str(plugin), "--model", "lookup"]) == 0
    assert "params (tiny):  33,153" in capsys.readouterr().out
    from harness.data.tokenizer import ByteTokenizer
    from harness.model.build import build_model
    lm = lm_eval_adapter.HarnessLM(model=build_model("lookup", load_config("tiny").model), tokenizer=ByteTokenizer(),
                      device="cpu", max_length=64)
    with pytest.raises(ConfigError, match=r"^Bigram has no prefill\(\)/step\(\) \(a decode state\)[^\n]*$"):
        lm.generate_until([type("Request", (), {"args": ("Q:", {"until": ["\n"]})})()])


# ---------------------------------------------------------------- task groups and missing data

def test_a_group_runs_what_has_data_and_warns_once(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(mirror, "require", mirror_with("piqa", "wikitext_2_v1"))  # as the plugin test's
    monkeypatch.chdir(tmp_path)  # outside a git checkout, as an installed package runs
    argv = ["run", "--models", "swat", "--tasks", "commonsense", "--limit", "2", "--device", "cpu", *ONE_STEP,
            *folders(tmp_path)]
    assert cli.main(argv) == 0
    out, err = capfd.readouterr()
    warnings = [line for line in (out + err).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped lambada_openai, hellaswag, winogrande" in warnings[0]
    assert "harness data fetch lambada_openai hellaswag winogrande" in warnings[0]
    rows = [json.loads(line) for line in (tmp_path / "results" / "tiny" / "rows.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"piqa"}
    # lm-eval's bars and its `git describe` stay quiet; the rows still name what produced them
    assert "fatal:" not in out + err and "it/s]" not in out + err
    assert rows[0]["commit"]
    # the end of the run: the paper's main table with the column measured, not a dump of rows
    assert "| Model | Params | Tokens | PIQA acc |" in out


@pytest.mark.parametrize("tasks, extra, message", [
    ("hellaswag", [], "dataset hellaswag is not in the mirror"),  # named: its data must be there
    ("hellaswag,social_iqa", ["--skip-missing"], "no task left to run: the data of hellaswag, social_iqa"),
    ("commonsense", [], "no task left to run"),
])
def test_missing_data_with_nothing_left_is_an_error_and_writes_nothing(tmp_path, capsys, monkeypatch, tasks,
                                                                       extra, message):
    monkeypatch.setattr(mirror, "require", mirror_with())
    assert cli.main(["run", "--models", "swat", "--tasks", tasks, *extra, *folders(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, message, "harness data fetch")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, message", [
    (["--models", "gla"], "gla runs only on a CUDA GPU"),
    (["--models", "swat", "--set", "train.fused_ce=true"], "train.fused_ce needs a CUDA GPU"),
    (["--models", "swat", "--set", "model.vocab_size=100"], "set model.vocab_size=257"),
    (["--models", "swat", "--set", "train.micro_batch=3"], "train.micro_batch=3 must divide"),
    (["--models", "swat,swatt"], "Did you mean 'swat'"),
])
def test_a_run_that_fails_its_checks_leaves_nothing_behind(tmp_path, capsys, args, message):
    assert cli.main(["run", *args, "--device", "cpu", *folders(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- what a run shows

def test_the_first_command_ends_with_the_main_table_and_tables_shows_it(smoke_run, capsys):
    folder, out = smoke_run
    assert "| Model | Params | Tokens | Held-out loss↓ | Held-out ppl↓ |" in out
    assert "┃ model ┃" not in out  # the old raw dump of rows
    assert cli.main(["tables", "--run", "tiny", "--results", str(folder / "results")]) == 0
    body = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| swat |")]
    assert len(body) == 1 and body[0].split(" | ")[3:5] != ["", ""]


def test_the_training_bar_shows_the_mean_rate_and_a_resumption_says_so(smoke_run, tmp_path, capsys):
    bar = cli.StepProgress("train m")
    for step, seconds, last_rate in ((3, 1.0, 1024.0), (4, 1.5, 2048.0)):  # a resumed run's 1st and 2nd step
        bar({"step": step, "steps": 4, "start_step": 2, "tokens": step * 1024, "seconds": seconds, "loss": 2.0,
             "lr": 1e-3, "tokens_per_s": last_rate})
    out = capsys.readouterr().out
    assert "train m: resumed from its checkpoint at step 2 of 4" in out
    assert "1,365 tok/s" in out  # 2 steps x 1024 tokens in 1.5 s, not the last step's 2,048
    assert out.rstrip().endswith("train m: 4 steps done; scoring the held-out split")  # not a silent wait
    assert "resumed" not in smoke_run[1]  # a fresh run says nothing of the kind
    from harness.training.train import train
    two_steps = [*ONE_STEP, "--set", "train.tokens=2048", "--set", "train.save_every=1"]

    def cut_after_the_first_step(info):
        if info["step"] == 1:
            raise KeyboardInterrupt
    cfg = load_config("tiny", overrides=two_steps[1::2])
    with pytest.raises(KeyboardInterrupt):
        train("swat", cfg, tmp_path / "swat", "cpu", on_step=cut_after_the_first_step)
    capsys.readouterr()
    assert cli.main(["train", "--model", "swat", "--device", "cpu", "--out", str(tmp_path / "swat"), *two_steps]) == 0
    assert "train swat: resumed from its checkpoint at step 1 of 2" in capsys.readouterr().out


def test_harness_list_fits_80_columns_with_a_count_for_every_model(capsys, monkeypatch):
    import baselines.fla_common as common
    from harness.registry import get_model, models
    monkeypatch.setattr(cli.console, "width", 80)
    monkeypatch.setattr(type(cli.console), "is_terminal", property(lambda self: True))  # piped: full width
    real = common.importlib.import_module
    monkeypatch.setattr(common.importlib, "import_module",  # fla not installed: its models cannot be built
                        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name.startswith("fla")
                        else real(name, *a, **k))
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    header = next(ln for ln in out.splitlines() if "params" in ln)
    params = [cell.strip() for cell in header.split("┃")].index("params")  # family left out at 80 columns
    for name, spec in models().items():
        line = next(ln for ln in out.splitlines() if ln.startswith(f"│ {name} "))
        # a count on every model's line (a count-based model's size is known once it is fitted)
        count = line.split("│")[params].strip()
        assert re.fullmatch(r"≈?[0-9,]+" if spec.family != "n-gram" else "counts", count), line
        if spec.extra == "fla":
            assert "≈123,264" in line
    assert "≈: its extra is not installed here" in out
    assert cli.main(["list", "--model", "swat"]) == 0
    assert "description:    " + get_model("swat").description in capsys.readouterr().out


# ---------------------------------------------------------------- fuzz: random values over every key

NASTY = ["-1", "0", "1", "2", "-0.5", "0.5", "1e-30", "1e30", "1" + "0" * 40, "9" * 400, "nan", ".inf", "-.inf",
         "abc", "", "null", "true", "[]", "[1, 2]", "[0.9, 0.95]", "{a: 1}", "{", "1.5", "3e2", "64", "balanced"]


def test_fuzzed_overrides_give_a_config_or_one_error_line():
    """200 random `--set` values over every key: a valid config, or a ConfigError of one line
    naming the key; nothing else escapes (a traceback in the CLI)."""
    keys = [f"model.{f.name}" for f in fields(ModelConfig)] + [f"train.{f.name}" for f in fields(TrainConfig)]
    rng = random.Random(22)
    outcomes = set()
    for _ in range(200):
        picked = rng.sample(keys, rng.randint(1, 3))
        overrides = [f"{key}={rng.choice(NASTY)}" for key in picked]
        try:
            load_config("tiny", None, overrides)
            outcomes.add("valid")
        except ConfigError as err:
            assert "\n" not in str(err) and any(key in str(err) for key in picked), (overrides, err)
            outcomes.add("error")
    assert outcomes == {"valid", "error"}


@pytest.mark.parametrize("model, overrides, message", [
    ("swat", ["train.grad_clip=1e-30", "train.min_lr_ratio=0", "train.weight_decay=0", "train.betas=[0, 0.5]",
              "model.sigmoid_bias=-30", "model.window=1000000", "model.rope_theta=1e30", "model.norm_eps=1e-30"],
     None),
    ("mamba", ["train.lr=1e30", "train.warmup_tokens=0"], "held-out loss is nan after step 1; lower train.lr"),
    ("swat", ["model.vocab_size=100000000000"], "out of memory"),  # valid, but no machine holds it
])
def test_fuzzed_edge_values_train_or_stop_in_one_line(tmp_path, capsys, model, overrides, message):
    """Values at the edges of their ranges train; one that diverges stops in one line, not with a
    checkpoint of NaN weights."""
    code = cli.main(["train", "--model", model, "--device", "cpu", "--out", str(tmp_path / "m"), *ONE_STEP,
                     *(a for o in overrides for a in ("--set", o))])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0 and "error" not in err, err
    else:
        one_error_line(err, message)
        assert code == 2


def test_out_of_memory_beside_other_processes_says_to_run_again(monkeypatch):
    """harness.memory: which errors mean out of memory, and a message that tells a job squeezed by
    other processes on the GPU from one too large for it."""
    import torch

    from harness import memory
    assert memory.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert memory.is_out_of_memory(RuntimeError("Triton Error [CUDA]: out of memory"))
    assert memory.is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                 "can't allocate memory: you tried to allocate 1 bytes"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch")) and not memory.is_out_of_memory(
        ValueError("out of memory"))
    assert memory.held_by_others_gib("cpu") == 0.0 and not memory.gpu_is_shared("cpu")
    alone = memory.out_of_memory("passkey: swat at 32768 tokens", "cpu")
    assert str(alone) == f"passkey: swat at 32768 tokens ran out of memory on cpu; {memory.FIXES}"
    assert not alone.squeezed
    monkeypatch.setattr(memory, "held_by_others_gib", lambda device: 40.25)
    squeezed = memory.out_of_memory("training", "cuda:0", "lower train.micro_batch")
    assert str(squeezed) == ("training ran out of memory on cuda:0 while other processes held 40.2 GiB of it; "
                             "run it again when they finish (or lower train.micro_batch)")
    assert squeezed.squeezed


# ---------------------------------------------------------------- a counted model's trainer state

@pytest.fixture(scope="module")
def counted_run(tmp_path_factory):
    """A bigram fitted on two steps (2,048 tokens): a checkpoint that a larger train.tokens resumes."""
    out = tmp_path_factory.mktemp("counted") / "bigram"
    assert cli.main(["train", "--model", "bigram", "--device", "cpu", "--quiet", "--out", str(out),
                     "--set", "train.tokens=2048", "--set", "train.eval_tokens=128"]) == 0
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda t: {}, "it has no step"),
    (lambda t: [1, 2], "it holds list, not the trainer state"),
    (lambda t: {k: v for k, v in t.items() if k != "position"}, "it has no position"),
    (lambda t: {**t, "step": -1}, "its step is -1, not a whole number"),
    (lambda t: {**t, "step": 1.5}, "its step is 1.5, not a whole number"),
    (lambda t: {**t, "step": 500}, "its step 500 is not the step 2 of meta.json"),
    (lambda t: {**t, "position": 7}, "its position 7 is not step 2 times 8 sequences"),
], ids=["empty", "not-a-dict", "no-position", "negative-step", "float-step", "step-beyond", "wrong-position"])
def test_resuming_a_counted_model_from_a_damaged_trainer_state_is_one_error(counted_run, tmp_path, capsys, damage,
                                                                            message):
    """A trainer.pt that loads but holds no valid step and position (its checksum recorded with it, as a
    buggy writer would leave it): a KeyError or TypeError traceback, or a fit counted on from a wrong
    place; now one line, as for a neural model's, and the checkpoint left as it was."""
    import hashlib

    import torch
    run = tmp_path / "bigram"
    shutil.copytree(counted_run, run)
    ckpt = run / "checkpoint"
    torch.save(damage(torch.load(ckpt / "trainer.pt", weights_only=True)), ckpt / "trainer.pt")
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["sha256"]["trainer.pt"] = hashlib.sha256((ckpt / "trainer.pt").read_bytes()).hexdigest()
    (ckpt / "meta.json").write_text(json.dumps(meta))
    weights = (ckpt / "model.safetensors").read_bytes()
    code = cli.main(["train", "--model", "bigram", "--device", "cpu", "--quiet", "--out", str(run),
                     "--set", "train.tokens=4096", "--set", "train.eval_tokens=128"])
    one_error_line(capsys.readouterr().err, f"{ckpt / 'trainer.pt'} is damaged ({message})", "--no-resume")
    assert code == 2 and (ckpt / "model.safetensors").read_bytes() == weights


# ---------------------------------------------------------------- integers beyond what torch holds

@pytest.mark.parametrize("override, message", [
    ("train.tokens=1e29", "train.tokens must be a whole number below 2^63 written in digits, got 1e+29"),
    ("train.tokens=9007199254740993.0", "train.tokens must be a whole number below 2^63 written in digits"),
    ("train.tokens=-1e29", "train.tokens must be a whole number below 2^63 written in digits"),
    ("train.tokens=1" + "0" * 29, "train.tokens must be below 2^63 (torch's integers are int64)"),
    ("train.eval_tokens=9223372036854775808", "train.eval_tokens must be below 2^63"),
    ("train.warmup_tokens=9223372036854775808", "train.warmup_tokens must be below 2^63"),
    ("model.d_inner=9223372036854775808", "model.d_inner must be below 2^63"),
    ("model.state_size=1e19", "model.state_size must be a whole number below 2^63 written in digits"),
    ("model.num_layers=1152921504606846976", "model.num_layers must be at most 10,000"),
    ("model.num_layers=10001", "model.num_layers must be at most 10,000"),
    ("train.tokens=2020-13-45", "train.tokens: cannot parse '2020-13-45' (month must be in 1..12)"),
    ("train.tokens=" + "9" * 5000, "train.tokens: cannot parse"),
])
def test_integers_out_of_range_are_one_error_naming_the_limit(override, message):
    """A float for an integer is taken only where it is exact (1e29 became 99999999999999991433150857216
    and trained for ever), an integer only below 2^63 (a torch traceback, or a build of 2^60 layers that
    never ended); a value PyYAML cannot build was a ValueError traceback."""
    with pytest.raises(ConfigError) as err:
        load_config("tiny", None, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_integers_in_range_stay_exact():
    assert load_config("tiny", None, ["train.tokens=1e6"]).train.tokens == 10 ** 6
    assert load_config("tiny", None, ["train.tokens=9007199254740993"]).train.tokens == 2 ** 53 + 1
    assert load_config("tiny", None, ["train.tokens=9223372036854775807"]).train.tokens == 2 ** 63 - 1
    assert load_config("tiny", None, ["model.num_layers=10000"]).model.num_layers == 10_000


@pytest.mark.parametrize("model, override, message", [
    ("swat", f"model.hidden_size={2 ** 58}", ("model swat cannot be built at this config: Storage size calculation "
                                              f"overflowed with sizes=[257, {2 ** 58}] (a tensor's bytes must stay "
                                              "below 2^63); change the model.* sizes")),
    ("swat", f"model.vocab_size={2 ** 60}", "(a tensor's bytes must stay below 2^63)"),
    ("mamba", f"model.d_inner={2 ** 58}", "model mamba cannot be built at this config"),
])
def test_sizes_whose_tensors_torch_cannot_hold_are_one_line(tmp_path, capsys, model, override, message):
    """Sizes below 2^63 whose product in bytes is not (257 x 2^58 floats) stopped in torch's traceback."""
    code = cli.main(["train", "--model", model, "--device", "cpu", "--out", str(tmp_path / "run"), "--set", override])
    one_error_line(capsys.readouterr().err, message)
    assert code == 2 and not (tmp_path / "run").exists()


def test_a_bigram_vocabulary_beyond_its_int64_pair_keys_is_refused():
    from harness.model.build import build_model
    cfg = load_config("tiny").model
    cfg.vocab_size = 3_037_000_500  # (V - 1) * V + (V - 1) is past 2^63
    with pytest.raises(ConfigError, match="^model bigram cannot be built at this config: the bigram keys a pair as "
                                          "u \\* V \\+ w in int64, so model.vocab_size must be at most 3,037,000,499"):
        build_model("bigram", cfg, "meta")


# ---------------------------------------------------------------- a switch a model cannot honour

def test_llama_hf_refuses_rope_off_rather_than_ignoring_it(tmp_path, capsys):
    """LlamaForCausalLM always rotates q and k: model.rope=false trained it with RoPE, silently."""
    code = cli.main(["train", "--model", "llama_hf", "--device", "cpu", "--out", str(tmp_path / "run"), *ONE_STEP,
                     "--set", "model.rope=false"])
    one_error_line(capsys.readouterr().err, "llama_hf always applies RoPE", "model.rope=true", "--model transformer")
    assert code == 2 and not (tmp_path / "run").exists()


def no_space_left(tensors, path, *args, **kwargs):
    """safetensors' save_file on a full disk: part of the file written, then its error (errno in the text)."""
    from safetensors import SafetensorError
    Path(path).write_bytes(b"\0" * 100)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


class FullDisk:
    """A file open for writing on a full disk: every write is refused with ENOSPC."""

    def __init__(self, path, mode="r", *args, **kwargs):
        Path(path).write_bytes(b"")

    def write(self, data):
        import errno
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("full", ["weights", "trainer state"])
def test_a_full_disk_while_training_is_one_line_and_leaves_no_half_written_checkpoint(tmp_path, capsys, monkeypatch,
                                                                                        full):
    """torch.save's "unexpected pos" RuntimeError and safetensors' SafetensorError were tracebacks, and
    the half-written .checkpoint.tmpPID/ stayed in the run folder, holding the space."""
    import safetensors.torch

    from harness.training import checkpoint
    if full == "weights":
        monkeypatch.setattr(safetensors.torch, "save_file", no_space_left)
    else:  # the real torch.save, into a file the disk refuses
        monkeypatch.setattr(checkpoint, "open", FullDisk, raising=False)
    run = tmp_path / "run"
    assert cli.main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(run), *ONE_STEP]) == 2
    one_error_line(capsys.readouterr().err, f"{run}: no space left on its disk; free space there or give another "
                                            f"folder")
    assert sorted(p.name for p in run.iterdir()) == ["train_log.jsonl"]


def test_a_full_disk_while_exporting_is_one_line_naming_out(smoke_run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    import transformers.modeling_utils
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", no_space_left)
    ckpt = next((smoke_run[0] / "runs").glob("*/swat/checkpoint"))
    out = tmp_path / "hf"
    assert cli.main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, f"{out}: no space left on its disk; free space there or give another folder")
    assert list(tmp_path.iterdir()) == []


def test_no_space_left_names_the_folder_or_says_the_disk():
    import errno
    assert cli.path_problem(OSError(errno.ENOSPC, "No space left on device", "/mnt/runs/x")) == \
        "/mnt/runs/x: no space left on its disk; free space there or give another folder"
    assert cli.path_problem(OSError(errno.ENOSPC, "No space left on device")) == \
        "no space left on the disk written to; free space there or give another folder"


def test_llama_hf_unties_its_head_as_the_transformer_does():
    """tie_word_embeddings was hard-coded: model.tie_embeddings=false trained a tied llama_hf beside an
    untied transformer, two models of different parameter counts under one config."""
    pytest.importorskip("transformers")
    from harness.config import load_config
    from harness.model.build import build_model
    cfg = load_config("tiny", overrides=["model.tie_embeddings=false"]).model
    llama, transformer = build_model("llama_hf", cfg, "cpu"), build_model("transformer", cfg, "cpu")
    assert sum(p.numel() for p in llama.parameters()) == sum(p.numel() for p in transformer.parameters())
    tied = build_model("llama_hf", load_config("tiny").model, "cpu")
    assert sum(p.numel() for p in tied.parameters()) < sum(p.numel() for p in llama.parameters())


# ---------------------------------------------------------------- a damaged checkpoint's fix, by its structure

def test_a_study_gives_a_damaged_checkpoint_its_own_fix_by_the_error_class_not_its_text(tmp_path):
    """damage_fix replaced the fix's text in any TrainingError that held it. It now gives a
    CheckpointDamaged the study's fix on the same problem, and passes any other error as it is."""
    from harness.study.runner import damage_fix
    from harness.training.checkpoint import read_meta
    from harness.training.outcome import DAMAGED_FIX, CheckpointDamaged, TrainingError
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "meta.json").write_text("{garbled")
    with pytest.raises(CheckpointDamaged) as plain:
        read_meta(run_dir / "checkpoint")
    assert str(plain.value) == f"{plain.value.problem}; {DAMAGED_FIX}"
    with pytest.raises(CheckpointDamaged) as study:
        with damage_fix(run_dir):
            read_meta(run_dir / "checkpoint")
    assert study.value.problem == plain.value.problem
    assert str(study.value) == f"{plain.value.problem}; delete {run_dir} and run the study again"
    other = TrainingError(f"not a checkpoint's damage, whatever it says; {DAMAGED_FIX}")
    with pytest.raises(TrainingError) as passed:
        with damage_fix(run_dir):
            raise other
    assert passed.value is other


def test_a_config_another_commit_wrote_keeps_its_way_on_under_the_study_fix(tmp_path, monkeypatch):
    """The way to use the checkpoint as it is (the commit that wrote it) is offered before the study's fix;
    damage elsewhere in a meta.json that another commit wrote is called damaged, as before."""
    from harness.study.runner import damage_fix
    from harness.training.checkpoint import read_meta
    from harness.training.outcome import CheckpointDamaged
    monkeypatch.setenv("HARNESS_COMMIT", "1111111")
    config = load_config("tiny").to_dict()
    config["model"]["an_option_since_removed"] = 1
    meta = tmp_path / "checkpoint" / "meta.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"model": "swat", "config": config, "commit": "0000000"}))
    with pytest.raises(CheckpointDamaged) as err:
        with damage_fix(tmp_path):
            read_meta(meta.parent)
    assert re.fullmatch(rf"{re.escape(str(meta))} was written by commit 0000000, whose config this version does "
                        rf"not read \(its config: .*an_option_since_removed.*\); evaluate it with that commit, or "
                        rf"delete {re.escape(str(tmp_path))} and run the study again", str(err.value)), str(err.value)
    meta.write_text(json.dumps({"model": "swat", "config": load_config("tiny").to_dict(), "commit": "0000000",
                                "sha256": []}))
    with pytest.raises(CheckpointDamaged, match=r"meta.json is damaged \(its sha256 is not a mapping"):
        read_meta(meta.parent)


def test_a_damaged_checkpoint_error_reaches_every_rank_whole():
    """_resume broadcasts rank 0's error (pickled): the other ranks raise a CheckpointDamaged too, with
    its parts, so that `harness study` gives it its fix on every rank."""
    import pickle

    from harness.training.outcome import CheckpointDamaged
    sent = CheckpointDamaged("x is damaged (y)", "delete z", keep="evaluate it with that commit")
    got = pickle.loads(pickle.dumps(sent))
    assert type(got) is CheckpointDamaged and (got.problem, got.retrain, got.keep) == (sent.problem, sent.retrain,
                                                                                      sent.keep)
    assert str(got) == str(sent) == "x is damaged (y); evaluate it with that commit, or delete z"


# ---------------------------------------------------------------- a matched model at a config its reference refuses

def test_a_matched_model_whose_reference_cannot_be_built_names_itself_and_the_reference(tmp_path, capsys):
    """mamba's size is solved against the transformer's count: at a config the transformer cannot be
    built at, the error named only the transformer, a model the user had not asked for."""
    from harness.model.build import matched_config
    expected = ("model mamba is matched in parameters to the reference model transformer: model transformer "
                "cannot be built at this config: Storage size calculation overflowed with sizes="
                f"[257, {2 ** 58}] (a tensor's bytes must stay below 2^63); change the model.* sizes")
    with pytest.raises(ConfigError) as err:
        matched_config("mamba", replace(load_config("tiny").model, hidden_size=2 ** 58))
    assert str(err.value) == expected
    code = cli.main(["train", "--model", "mamba", "--device", "cpu", "--out", str(tmp_path / "run"),
                     "--set", f"model.hidden_size={2 ** 58}"])
    one_error_line(capsys.readouterr().err, expected)
    assert code == 2 and not (tmp_path / "run").exists()


def test_a_read_only_results_folder_is_named_with_the_option_that_chose_it(smoke_run, tmp_path, capsys, monkeypatch):
    """A results folder on a read-only file system (a read-only bind mount; as root, chmod would not
    do): the error named the atomic writer's temp file, results/tiny/.run.json.p63i3r_w.tmp, and
    "give another path" without saying with what."""
    import errno

    from harness import files
    shutil.copytree(smoke_run[0], tmp_path, dirs_exist_ok=True)
    results = tmp_path / "results"
    make_temp = files.tempfile.mkstemp

    def read_only_below_results(dir, prefix, suffix):
        if Path(dir).is_relative_to(results):
            raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / f"{prefix}p63i3r_w{suffix}"))
        return make_temp(dir=dir, prefix=prefix, suffix=suffix)
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only_below_results)
    code = cli.main(["eval", "--run", "tiny", "--tasks", "smoke", "--force", "--device", "cpu", *folders(tmp_path)])
    one_error_line(capsys.readouterr().err,
                   f"error: {results / 'tiny'}: read-only file system; give another path with --results")
    assert code == 2


def test_a_refused_write_names_the_folder_and_the_option_of_the_path(tmp_path):
    """The folder of a file that a refused write was to make (the file, often a temp file, does not
    exist); a file the user named (tables --out) is found by its folder; without the command's
    arguments (an argparse type's check) the fix names no option."""
    import errno
    args = argparse.Namespace(results="results", runs="runs", out=str(tmp_path / "ro" / "table.md"))
    temp = tmp_path / "ro" / ".table.md.x1y2.tmp"
    assert cli.path_problem(PermissionError(errno.EACCES, "Permission denied", str(temp)), args) == \
        f"{tmp_path / 'ro'}: not allowed to write or read it here; give another path with --out"
    assert cli.path_problem(OSError(errno.EROFS, "Read-only file system", "runs/tiny/swat"), args) == \
        "runs/tiny: read-only file system; give another path with --runs"
    assert cli.path_problem(OSError(errno.EROFS, "Read-only file system", "runs"), args) == \
        ".: read-only file system; give another path with --results or --runs"
    assert cli.path_problem(OSError(errno.EROFS, "Read-only file system", str(temp))) == \
        f"{tmp_path / 'ro'}: read-only file system; give another path"


@pytest.mark.parametrize("command", [["run", "--models", "swat"], ["train", "--model", "swat"], ["eval"]])
@pytest.mark.parametrize("run", ["", " "])
def test_an_empty_run_name_is_refused_not_taken_for_the_default(tmp_path, capsys, command, run):
    """`--run ""` ran under the preset's name (eval's: `eval`), while `--run .` was refused."""
    paths = folders(tmp_path)[2:] if command[0] == "train" else folders(tmp_path)  # train has no --results
    code = cli.main([*command, "--run", run, "--device", "cpu", *paths])
    one_error_line(capsys.readouterr().err, f"--run must be a non-empty name without / or \\, got {run!r}")
    assert code == 2 and list(tmp_path.iterdir()) == []


def half_written_then(failure):
    """A Figure.savefig whose write stops partway with `failure`."""
    def savefig(fig, target, **kwargs):
        with contextlib.ExitStack() as stack:
            out = target if hasattr(target, "write") else stack.enter_context(open(target, "wb"))
            out.write(b"\x89PNG\r\n")
        raise failure
    return savefig


def failing(failure):
    def fail(*args, **kwargs):
        raise failure
    return fail


@pytest.mark.parametrize("where, failure, status", [
    ("savefig", KeyboardInterrupt(), 130),  # interrupted while drawing
    ("fsync", OSError(errno.ENOSPC, "No space left on device"), 2),  # the disk refusing it at last
    ("replace", KeyboardInterrupt(), 130),  # interrupted between the written PNG and its rename
])
def test_a_plot_that_fails_to_be_written_leaves_no_temporary_file_and_names_its_folder(tmp_path, capsys, monkeypatch,
                                                                                       where, failure, status):
    """`.loss.png.tmp.png` stayed in the run folder, and a full disk said "no space left on the disk
    written to" without naming the file (a write names none; a rename names the temporary file). The
    plot alone is written here: a finished run that lost its loss.png draws it again."""
    import os

    import matplotlib.figure
    run = tmp_path / "run"
    argv = ["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(run), *ONE_STEP]
    assert cli.main(argv) == 0
    (run / "loss.png").unlink()
    capsys.readouterr()
    if where == "savefig":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written_then(failure))
    else:
        monkeypatch.setattr(os, where, failing(failure))
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    if status == 2:
        one_error_line(err, f"{run / 'loss.png'}: no space left on its disk; free space there or give another folder "
                            "with --out")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "train_log.jsonl"]


def test_export_without_transformers_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    """README's setup installs no `hf` extra: export then names it before any work, not a traceback."""
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers"
                        else find_spec(name, *a))
    code = cli.main(["export", "--checkpoint", str(tmp_path / "checkpoint"), "--out", str(tmp_path / "hf")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "harness export needs transformers: pip install 'swat-harness[hf]'")
    assert not (tmp_path / "hf").exists()


def test_a_sigterm_while_harness_run_scores_a_model_it_trained_stops_at_once(tmp_path, capsys, monkeypatch):
    """Training holds SIGTERM back to checkpoint before stopping (it asked at step 1 of 2 here); the
    tasks after it have no checkpoint to stop at, so there it ends the command at once, as before."""
    import signal

    from harness.registry import get_task
    from harness.training.checkpoint import CHECKPOINT_DIR, read_meta

    def terminated(*args):
        signal.raise_signal(signal.SIGTERM)  # its Python handler has run when this returns
        pytest.fail("SIGTERM did not stop the task")
    monkeypatch.setattr(get_task("smoke"), "run", terminated)
    code = cli.main(["run", "--models", "swat", "--tasks", "smoke", "--device", "cpu", "--set", "train.tokens=2048",
                     "--set", "train.eval_tokens=128", *folders(tmp_path)])
    assert code == 130
    assert capsys.readouterr().err.startswith("interrupted: the rows and checkpoints written so far are kept")
    assert read_meta(tmp_path / "runs" / "tiny" / "swat" / CHECKPOINT_DIR)["step"] == 2
    assert not (tmp_path / "results" / "tiny" / "rows.jsonl").exists()


def test_a_refused_atomic_write_names_the_file_meant_not_its_temporary_copy(tmp_path, monkeypatch):
    """A folder where the file goes failed at the rename, named by the temporary file; a full disk at
    the last flush named no file: both now name the file, and no temporary file stays."""
    import os

    from harness.files import atomic_write_bytes
    (tmp_path / "scaling.png").mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        atomic_write_bytes(tmp_path / "scaling.png", b"png")
    assert refused.value.filename == str(tmp_path / "scaling.png")
    monkeypatch.setattr(os, "fsync", failing(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as full:
        atomic_write_bytes(tmp_path / "table.md", b"| a |")
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(tmp_path / "table.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scaling.png"]
