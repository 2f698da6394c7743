"""`harness tables`, `harness export` and `harness eval` as a researcher meets them on a CPU: what each
one printed or drew where it went wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.results.store import Row, write_rows

ONE_STEP = ["train.tokens=128", "train.batch_tokens=128", "train.seq_len=64", "train.micro_batch=2",
            "train.warmup_tokens=0", "train.eval_tokens=64"]


def rows_run(folder: Path, rows: list[Row]) -> Path:
    write_rows(folder / "rows.jsonl", rows)
    return folder


def length_row(model: str, preset: str, context: int, seed: int = 0) -> Row:
    return Row(run="r", model=model, preset=preset, task="length", metric="ppl", value=10.0 + seed,
               seed=seed, extra={"context": context})


def test_an_unwritable_plots_folder_is_refused_before_the_table_is_printed_or_written(tmp_path, capsys):
    """`harness tables --out t.md --plots /sys/pp` wrote t.md (or printed the table), then stopped at the
    plots with `error: /sys: not allowed to write or read it here`."""
    from harness.cli import main
    run = str(rows_run(tmp_path / "r", [length_row("swat", "s", 512)]))
    for out in ([], ["--out", str(tmp_path / "t.md")]):
        assert main(["tables", "--run", run, "--table", "length", *out, "--plots", "/proc/harness-plots"]) == 2
        printed = capsys.readouterr()
        assert printed.out == ""
        assert printed.err == ("error: --plots /proc/harness-plots cannot be written: no file can be made in /proc "
                               "(no such file or directory); give another path\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_the_legends_of_a_length_plot_of_several_sizes_overlap_no_other_panel(tmp_path, monkeypatch):
    """`harness tables --run scaling --table length --plots DIR`: the m panel's legend of 41 series ran down
    over the l panel's title and legend, and each panel's long title ran under its legend."""
    from harness.results import plots
    overlaps = []

    def check(fig, out_dir, name, header, lines):
        """Each legend against the other panels (their titles, labels and legends included), its own
        axes and title, and the figure's title."""
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend().get_window_extent(renderer)
            others = [other.get_tightbbox(renderer) for other in fig.axes if other is not ax]
            own = [ax.get_window_extent(renderer), ax.title.get_window_extent(renderer)]
            title = [fig._suptitle.get_window_extent(renderer)] if fig._suptitle else []
            overlaps.extend((ax.get_title(), i) for i, box in enumerate(others + own + title) if legend.overlaps(box))
        plots.pyplot().close(fig)
        return []
    monkeypatch.setattr(plots, "_write_plot", check)
    models = [f"model_{k}" for k in range(14)]
    rows = [length_row(model, preset, context, seed) for preset, seeds in (("s", 1), ("m", 3), ("l", 1))
            for model in models for seed in range(seeds) for context in (512, 1024)]
    plots.ppl_vs_length(rows, tmp_path)
    assert overlaps == []


def test_the_table_a_run_prints_has_no_notes_on_the_columns_it_left_out():
    """The first run's table (`harness run --tasks smoke`, `harness eval --tasks piqa --limit 5`) ended with
    `Blank cell: no result stored for it` under a table with no blank cell, and explained an Avg column it
    did not have; a model that lacks a cell still gets the note."""
    from harness.results.tables import run_tables

    def row(model: str, task: str, metric: str, value: float) -> Row:
        return Row(run="r", model=model, preset="tiny", task=task, metric=metric, value=value, n=5)
    smoke = [row("swat", "smoke", "loss", 3.26), row("swat", "smoke", "ppl", 26.1)]
    printed = run_tables(smoke + [row("swat", "piqa", "acc", 0.4)], {})
    assert "| 3.26 | 26.10 | 40.00 |" in printed
    assert "Blank cell" not in printed and "Avg" not in printed
    printed = run_tables(smoke + [row("mamba", "smoke", "loss", 2.72), row("swat", "piqa", "acc", 0.4)], {})
    assert "| mamba |" in printed and "Blank cell: no result stored for it" in printed


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """swat trained one step by `harness train` into a run's model folder (<runs>/t/swat)."""
    from harness.cli import main
    run = tmp_path_factory.mktemp("runs") / "t" / "swat"
    assert main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--out", str(run),
                 *[a for o in ONE_STEP for a in ("--set", o)]]) == 0
    return run


def test_a_file_given_for_a_folder_is_named_once(tmp_path, capsys):
    """`harness export --out FILE` said `argument --out: FILE is a file, and FILE needs a folder there`:
    the same path twice. A folder under the file names both, once each; `harness run` shares the check."""
    from harness.cli import main
    file = tmp_path / "f"
    file.write_text("")
    for command, option, path, said in (
            (["export", "--checkpoint", "x"], "--out", file, f"{file} is a file, where a folder is needed"),
            (["export", "--checkpoint", "x"], "--out", file / "sub", f"{file / 'sub'} cannot be a folder: {file} "
                                                                       f"is a file"),
            (["run", "--models", "swat"], "--results", file, f"{file} is a file, where a folder is needed")):
        with pytest.raises(SystemExit) as stop:
            main([*command, option, str(path)])
        assert stop.value.code == 2
        assert capsys.readouterr().err == (f"error: argument {option}: {said}; give another path (see `harness "
                                           f"{command[0]} --help`)\n")


def test_a_run_folder_given_for_its_checkpoint_names_the_checkpoint_folder(trained, tmp_path, capsys):
    """`harness eval --checkpoint runs/t/swat` and `harness export --checkpoint runs/t/swat` said only that
    it is not a checkpoint folder; the checkpoint folder inside it is the one they meant."""
    from harness.cli import main
    from harness.training.checkpoint import load_checkpoint
    meant = f"error: {trained} is not a checkpoint folder (no meta.json); did you mean {trained / 'checkpoint'}?\n"
    assert main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err == meant
    assert main(["eval", "--checkpoint", str(trained), "--tasks", "smoke", "--device", "cpu",
                 "--results", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err == meant
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(trained)
    assert f"error: {err.value}\n" == meant
    assert main(["export", "--checkpoint", str(trained.parent), "--out", str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err == (f"error: {trained.parent} is not a checkpoint folder (no meta.json); pass "
                                       f"the folder that `harness train` wrote (<runs>/<run>/<model>/checkpoint)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_shard_size_of_no_unit_or_none_above_zero_is_refused_for_what_it_lacks(trained, tmp_path, capsys):
    """`harness export --max-shard-size 0` said it `must be a whole number with a unit`: 0 is one."""
    from harness.cli import main
    examples = "e.g. 2GB, 500MB, 100KB or 1GiB"
    for size, said in (("0", f"must be above zero, {examples}"), ("0MB", f"must be above zero, {examples}"),
                       ("-1GB", f"must be above zero, {examples}"),
                       ("500", "has no unit; add one, e.g. 500MB (units: KB, MB, GB, KiB, MiB, GiB)"),
                       ("2TB", "has an unknown unit 'TB'; use KB, MB, GB, KiB, MiB or GiB"),
                       ("0.5GB", f"must be a whole number with a unit, {examples}")):
        assert main(["export", "--checkpoint", str(trained / "checkpoint"), "--out", str(tmp_path / "hf"),
                     f"--max-shard-size={size}"]) == 2
        assert capsys.readouterr().err == f"error: --max-shard-size {size!r} {said}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_exporting_and_evaluating_a_folder_draw_no_bar_and_leave_the_bars_as_they_were(trained, tmp_path, capfd):
    """`harness eval --models hf:FOLDER` drew transformers' `Loading weights` bar between its own lines,
    and `harness export` turned transformers' bars off for the rest of the process."""
    from transformers.utils import logging as hf_logging

    from harness.cli import main
    hf = tmp_path / "hf"
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as in a fresh process
    try:
        assert main(["export", "--checkpoint", str(trained / "checkpoint"), "--out", str(hf)]) == 0
        assert hf_logging.is_progress_bar_enabled()
        capfd.readouterr()
        assert main(["eval", "--models", f"hf:{hf}", "--tasks", "smoke", "--device", "cpu",
                     "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]) == 0
        printed = capfd.readouterr()
        assert "hf-hf: smoke done" in printed.out
        assert "Loading weights" not in printed.out + printed.err and "it/s" not in printed.err
        assert hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
