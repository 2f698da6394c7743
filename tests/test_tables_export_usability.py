"""`harness tables`, `harness export` and `harness eval` as a researcher meets them on a CPU: what each
one printed or drew where it went wrong."""

from __future__ import annotations

from pathlib import Path

from harness.results.store import Row, write_rows


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
