"""The command line as a new user meets it: a CPU training too large for the host refused up front,
the files a run writes and says it wrote, output that stays readable when piped, errors that name
what the user typed."""

from pathlib import Path

import pytest

from harness import cli, memory
from harness.config import load_config
from harness.model.backbone import count_params
from harness.model.build import build_model
from tests.test_robust import ONE_STEP, folders, one_error_line


def test_a_cpu_training_too_large_for_the_host_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """Linux's OOM killer ends a process that outgrows the host (exit 137, an empty runs/<run>/<model>
    left behind) before Python sees any error: the step's memory is estimated and refused up front."""
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2**20)  # 1 MiB available
    code = cli.main(["run", "--models", "swat", "--tasks", "smoke", "--device", "cpu", "--run", "b",
                     *folders(tmp_path)])
    one_error_line(capsys.readouterr().err, "needs about", "0.0 GiB is available", "lower train.micro_batch",
                   "in a study file, under the size's train:", "--preset tiny", "GPU")
    assert code == 2 and not any(tmp_path.iterdir())
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--runs", str(tmp_path / "runs")])
    one_error_line(capsys.readouterr().err, "needs about")
    assert code == 2 and not any(tmp_path.iterdir())


def test_the_training_memory_estimate_grows_with_the_micro_batch_and_fits_the_tiny_preset():
    """The estimate counts parameters (16 bytes each: weights, gradients, AdamW's moments) and each
    token's activations: a smaller micro-batch is the fix the refusal names, so it must lower it;
    the tiny preset (about 0.5 GB peak RSS measured, torch included) is far below a GiB."""
    small = load_config("small")
    params = count_params(build_model("swat", small.model, "meta"))
    full = memory.training_step_bytes(params, small)
    small.train.micro_batch = 4
    assert memory.training_step_bytes(params, small) < full / 4
    assert full > 16 * params
    tiny = load_config("tiny")
    assert memory.training_step_bytes(count_params(build_model("swat", tiny.model, "meta")), tiny) < 2**30


def test_the_small_preset_does_not_fit_a_24_gib_host(monkeypatch):
    """The reported machine: 24 GiB, of which ~23 available; `--preset small` (micro-batch 32 x 1024
    tokens) grew past it. It is refused; at micro-batch 4 (the same step, accumulated) it is not."""
    small = load_config("small")
    model = build_model("swat", small.model, "meta")
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 22 * 2**30)
    with pytest.raises(memory.OutOfMemory, match="micro_batch=32"):
        memory.check_training_memory(model, small, "cpu")
    small.train.micro_batch = 4
    memory.check_training_memory(model, small, "cpu")
    memory.check_training_memory(model, load_config("small"), "cuda")  # a GPU's memory is not the host's


def test_cpu_processes_of_one_torchrun_job_share_the_hosts_memory(monkeypatch):
    """Under torchrun on a CPU host every local process holds a whole step: four that fit one by one
    can still outgrow the host together."""
    tiny = load_config("tiny")
    model = build_model("swat", tiny.model, "meta")
    one = memory.training_step_bytes(count_params(model), tiny)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2 * one)
    memory.check_training_memory(model, tiny, "cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(memory.OutOfMemory, match="4 processes on this host"):
        memory.check_training_memory(model, tiny, "cpu")


def run_printing(tmp_path, monkeypatch, *extra: str) -> tuple[int, str]:
    """`harness run` of swat, one step, into tmp_path: its exit status and what it printed."""
    out = []
    monkeypatch.setattr(cli.console, "print", lambda *a, **k: out.append(" ".join(map(str, a))))
    code = cli.main(["run", "--models", "swat", "--tasks", "smoke", "--device", "cpu", *ONE_STEP, *folders(tmp_path),
                     *extra])
    monkeypatch.undo()
    return code, "\n".join(out)


def test_table_md_holds_the_printed_table_and_the_last_line_says_where_everything_went(tmp_path, monkeypatch):
    """table.md held the raw rows while the run printed the main table; the last line named only
    results/<run>/ (not the checkpoints and loss plots under runs/), and said `wrote` on a rerun
    that skipped everything and left rows.jsonl untouched."""
    code, printed = run_printing(tmp_path, monkeypatch)
    assert code == 0
    table = (tmp_path / "results" / "tiny" / "table.md").read_text()
    main = printed[printed.index("**Language modeling"):printed.index("Perplexity and loss")]
    assert main in table and "| Held-out loss↓ |" in main
    assert "**All rows**" in table and "| swat | tiny |" in table  # the raw rows stay, after the tables
    last = printed.splitlines()[-1]
    assert last.startswith(f"wrote {tmp_path / 'results' / 'tiny'}/rows.jsonl")
    assert f"{tmp_path / 'runs' / 'tiny'}/<model>/checkpoint" in last and "<model>/loss.png" in last
    assert (tmp_path / "runs" / "tiny" / "swat" / "loss.png").is_file()
    rows = (tmp_path / "results" / "tiny" / "rows.jsonl").stat().st_mtime_ns
    code, printed = run_printing(tmp_path, monkeypatch)
    assert code == 0 and (tmp_path / "results" / "tiny" / "rows.jsonl").stat().st_mtime_ns == rows
    assert printed.splitlines()[-1].startswith("nothing new to score (every task was done already; --force redoes it)")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_a_write_refused_where_its_temporary_file_cannot_be_made_names_the_users_path():
    """`harness tables --out /proc/x.md` said `/proc/.x.md.2w0pyt4o.tmp: no such file or directory`:
    the temporary file that the atomic write failed to make, no name the user gave."""
    from harness.files import atomic_write_text
    with pytest.raises(OSError) as refused:
        atomic_write_text(Path("/proc/x.md"), "| a |\n")
    assert refused.value.filename == "/proc/x.md"
    assert cli.path_problem(refused.value).startswith("/proc/x.md: ")


def subparser(parser, *path: str):
    """The argparse parser of `harness PATH...` (e.g. "bench", "models")."""
    for name in path:
        parser = next(a for a in parser._actions if a.dest.endswith("command")).choices[name]
    return parser


@pytest.mark.parametrize("command", [("train",), ("study",), ("bench", "models"), ("run",), ("eval",)])
def test_every_device_option_says_it_takes_cuda_n(command):
    """--device accepts cuda:N everywhere (device_arg); train, study and bench models said `cpu | cuda`."""
    device = next(a for a in subparser(cli.build_parser(), *command)._actions if a.dest == "device")
    assert device.help.startswith("cpu | cuda | cuda:N")


@pytest.mark.parametrize("argv, unknown, command", [("bench kernels --device cpu", "--device cpu", "bench kernels"),
                                                    ("train --model swat --bogus", "--bogus", "train"),
                                                    ("data list --x", "--x", "data list")])
def test_an_unknown_option_points_at_its_commands_help(argv, unknown, command, capsys):
    """argparse reports an option no parser knows from the top parser, so the error said `see
    harness --help`, whose page does not list the command's options."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv.split())
    assert stop.value.code == 2
    one_error_line(capsys.readouterr().err, f"unrecognized arguments: {unknown} (see `harness {command} --help`)")


def test_data_import_describes_its_path():
    path = next(a for a in subparser(cli.build_parser(), "data", "import")._actions if a.dest == "path")
    assert path.help and "folder" in path.help


def test_the_progress_bar_is_stopped_before_the_interrupted_line(tmp_path, monkeypatch):
    """A training stopped at a checkpoint printed `interrupted: ...`, then the bar, stopped after it,
    drew itself once more below the line."""
    from harness.evaluation import loop
    from harness.training.outcome import TrainingStopped
    events = []

    def stopped_run(*args, on_step, **kwargs):
        on_step({"model": "swat", "step": 1, "steps": 2, "tokens": 128, "seconds": 1.0, "loss": 5.0, "lr": 1e-3})
        raise TrainingStopped("stopped at step 1 of 2 as asked", "swat")
    close = cli.StepProgress.close
    monkeypatch.setattr(loop, "run_models", stopped_run)
    monkeypatch.setattr(cli.StepProgress, "close", lambda self: (events.append("bar stopped"), close(self)))
    monkeypatch.setattr(cli.err_console, "print", lambda text, **k: events.append(text.split(":")[0]))
    with pytest.raises(SystemExit):
        cli.main(["run", "--models", "swat", "--device", "cpu", *folders(tmp_path)])
    assert events.index("bar stopped") < events.index("interrupted")


def test_one_of_a_thing_is_singular(monkeypatch):
    """`1 steps done` after a one-step training."""
    printed = []
    monkeypatch.setattr(cli.console, "print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    bar = cli.StepProgress("train swat")
    bar({"step": 1, "steps": 1, "tokens": 128, "seconds": 1.0, "loss": 5.0, "lr": 1e-3})
    assert "train swat: 1 step done; scoring the held-out split" in printed


def test_harness_list_piped_is_whole_and_at_80_columns_drops_a_column_before_cutting(capsys, monkeypatch):
    """Piped, `harness list` cut every description to the console's width; at 80 columns a terminal
    got ~20 characters of each. Piped now: whole lines. At 80 columns: family left out, then cut."""
    from rich.console import Console

    from harness.registry import models
    monkeypatch.setattr(cli.console, "width", 80)
    assert cli.main(["list"]) == 0  # capsys: not a terminal
    out = capsys.readouterr().out
    for name, spec in models().items():
        assert any(f"│ {name} " in line and spec.description in line for line in out.splitlines()), name
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80 and "family" not in lines[2] and "fast path" in lines[2]
    swat = next(line for line in lines if line.startswith("│ swat "))
    assert len(swat.split("│")[-2].strip()) >= 30  # the description keeps 30 characters or more


def test_data_list_cells_are_never_wrapped(capsys, monkeypatch):
    """`harness data list` folded every cell into 5-line fragments at 80 columns or piped: each
    dataset's split is one line, piped whole, at a terminal cut to the width."""
    from rich.console import Console
    monkeypatch.setattr(cli.console, "width", 80)
    assert cli.main(["data", "list"]) == 0
    piped = capsys.readouterr().out.splitlines()
    assert any(line.startswith("│ piqa ") and "validation.jsonl" in line for line in piped), piped
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert cli.main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines if line[:1] in "│┃┏┡└") <= 80  # messages stay whole lines
    first = next(i for i, line in enumerate(lines) if line.startswith("│ piqa "))
    assert lines[first + 1].split("│")[1].strip() != ""  # the next line is the next dataset, not a fragment


def test_lm_evals_stderr_bootstrap_prints_nothing_once_quieted(capfd, monkeypatch):
    """`harness eval --tasks commonsense` showed `bootstrapping for stddev: perplexity` and its tqdm
    bar amid the harness's lines: lm-eval imports that tqdm inside the function, past quiet_lm_eval."""
    pytest.importorskip("lm_eval")
    import lm_eval.api.metrics as metrics

    from harness.evaluation.lm_eval_tasks import quiet_lm_eval
    monkeypatch.setattr(metrics, "bootstrap_stderr", metrics.bootstrap_stderr)  # restored after the test
    monkeypatch.setenv("DISABLE_MULTIPROC", "1")  # its one-process path prints the same, without a pool
    quiet_lm_eval()
    quiet_lm_eval()  # run by every evaluation: wrapped once
    assert metrics.bootstrap_stderr.__wrapped__.__module__ == "lm_eval.api.metrics"
    stderr = metrics.stderr_for_metric(metrics.perplexity, 1000)([0.5, 1.0, 2.0, 4.0])
    out = capfd.readouterr()
    assert stderr > 0 and out.out == "" and out.err == ""


def test_a_huge_perplexity_is_printed_in_e_notation_and_committed_tables_keep_their_decimals():
    """An untrained model's `1147066370.04 ± 8513897337.86` in the table `harness run` and `harness
    eval` print (and table.md); `harness tables`, which made the committed tables, is unchanged."""
    from harness.results.render import render
    from harness.results.store import Row
    from harness.results.tables import build, run_tables
    rows = [Row(run="r", model="swat", preset="tiny", task=task, metric=metric, value=value, stderr=stderr, n=20)
            for task, metric, value, stderr in [("lambada_openai", "perplexity", 1147066370.04, 8513897337.86),
                                                ("smoke", "ppl", 170.4, None), ("custom", "ppl", 2.5e7, 1.25e6)]]
    printed = run_tables(rows, {})
    assert "| 1.15e+09 ± 8.51e+09 |" in printed and "1147066370" not in printed and "| 170.40 |" in printed
    assert "| custom | ppl | 2.50e+07 ± 1.25e+06 |" in printed  # **Other results**, the rows as they are
    assert "1147066370.04 ± 8513897337.86" in render(build("main", rows), "md")
