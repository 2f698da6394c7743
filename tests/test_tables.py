"""Tables from stored rows: pivots, bold, averages, blanks, stderr, reference deltas, corrupt lines,
LaTeX that parses as a tabular, CSV, plots, and `harness tables` end to end.

Our rows are the hand-written fixtures in tests/fixtures/rows (not measurements); reference numbers
come only from the committed, verified files in results/paper, never from this file.
"""

import csv
import io
import json
import math
import multiprocessing
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.results.render import render, to_latex
from harness.results.store import (
    ResultsError,
    Row,
    dedupe_rows,
    load_run,
    read_reference,
    read_rows,
    replace_rows,
)
from harness.results.tables import (
    ACC_COLUMNS,
    AVERAGE_TASK,
    MAIN_COLUMNS,
    TABLES,
    WIKI_V1,
    build,
    collect,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "rows"
PAPER = ROOT / "results" / "paper"
SWAT_T1 = PAPER / "swat_2502.18845_table1.csv"


def fixture(*names, refs=(), warn=None):
    warnings = [] if warn is None else warn
    return collect([str(FIX / n) for n in names], [str(r) for r in refs], ROOT / "results", warn=warnings.append)


def md_rows(text: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for the body lines of a markdown table."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| *"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.setdefault(cells[0], cells[1:])  # a name in several size groups: the first (smallest)
    return out


def col(name: str) -> int:
    """Index of a main-table column among the cells after the model name, in a table of no
    wikitext_2_v1 rows (none of the fixtures has any): without the Wiki-2 v1 column."""
    header = ["Params", "Tokens"] + [c.title for c in MAIN_COLUMNS if c is not WIKI_V1] + ["Avg"]
    return header.index(name)


# ---------------------------------------------------------------- main table

def test_main_table_cells_bold_stderr_and_last_checkpoint():
    rows, refs, configs = fixture("fixture-340m")
    text = render(build("main", rows, refs, configs), "md")
    body = md_rows(text)
    swat, transformer, mamba = body["swat"], body["transformer"], body["mamba"]
    assert swat[col("Params")] == "341M" and swat[col("Tokens")] == "2B"
    # accuracies in percent with lm-eval's stderr; PIQA from the last checkpoint (2B tokens), not 1B
    assert swat[col("PIQA acc")] == "**65.00 ± 1.10**"
    assert swat[col("LMB. ppl↓")] == "**40.00 ± 2.00**"  # lowest perplexity is best
    assert transformer[col("Wiki. word ppl↓")] == "**29.00**" and swat[col("Wiki. word ppl↓")] == "30.00"
    assert transformer[col("Wino. acc")] == "**52.00**"  # highest accuracy is best
    assert mamba[col("Hella. acc_n")] == "36.00"
    # the complete average is the mean of the eight accuracies
    swat_avg = sum([33, 65, 38, 51, 57, 27, 37, 61]) / 8
    assert swat[col("Avg")] == f"**{swat_avg:.2f}**"
    assert "± is the standard error" in text


def test_missing_cell_is_blank_with_footnote_and_incomplete_average_is_marked():
    rows, refs, configs = fixture("fixture-340m")
    text = render(build("main", rows, refs, configs), "md")
    transformer = md_rows(text)["transformer"]
    assert transformer[col("BoolQ acc")] == ""  # never 0.00
    partial = sum([31, 63, 35, 52, 45, 24, 36]) / 7
    assert transformer[col("Avg")] == f"{partial:.2f}†"  # marked and not bold
    assert "Blank cell: no result stored" in text and "† average over the accuracy columns present" in text


def test_a_row_with_too_few_accuracies_gets_no_average():
    """LAMBADA's accuracy alone is not an average of the benchmarks: the Avg cell stays blank."""
    from harness.results.tables import ACC_COLUMNS, MIN_AVERAGED, _average
    cells = {c: Row(run="r", model="m", preset="p", task=c.task, metric=c.metric, value=0.5)
             for c in ACC_COLUMNS[:MIN_AVERAGED - 1]}
    assert _average(cells) == (None, MIN_AVERAGED - 1)
    one_more = ACC_COLUMNS[MIN_AVERAGED - 1]
    cells[one_more] = Row(run="r", model="m", preset="p", task=one_more.task, metric=one_more.metric, value=0.5)
    assert _average(cells) == (50.0, MIN_AVERAGED)


def test_reference_rows_and_deltas_come_from_the_reference_file():
    rows, refs, configs = fixture("fixture-340m", "fixture-abl", refs=[SWAT_T1])
    text = render(build("main", rows, refs, configs), "md")
    body = md_rows(text)
    published = {(r.extra["label"], r.preset, r.task, r.metric): r.value for r in read_reference(SWAT_T1)}

    def pct(label, task, metric):
        v = published[(label, "340m", task, metric)]
        return v * 100 if metric.startswith("acc") else v

    # default swat (balanced slopes) is compared with SWAT (-+); swat with slopes=negative with SWAT (-)
    delta = body["Δ vs SWAT (-+) [1]"]
    assert delta[col("PIQA acc")] == f"{65.0 - pct('SWAT (-+)', 'piqa', 'acc'):+.2f}"
    assert delta[col("Wiki. word ppl↓")] == f"{30.0 - pct('SWAT (-+)', 'wikitext', 'word_perplexity'):+.2f}"
    neg = body["Δ vs SWAT (-) [1]"]
    assert neg[col("BoolQ acc")] == f"{59.0 - pct('SWAT (-)', 'boolq', 'acc'):+.2f}"
    assert neg[col("Avg")] == ""  # our variant run has only some tasks: no average delta
    # no delta for the transformer's BoolQ, which we lack
    assert body["Δ vs Transformer++ [1]"][col("BoolQ acc")] == ""
    assert "swat (slopes=negative, window=128)" in body
    assert body["SWAT (-+) [1]"][col("Tokens")] == "15B"
    assert "[1] Fu et al. 2025" in text and "2502.18845" in text


def test_bold_is_per_source():
    rows, refs, configs = fixture("fixture-340m", refs=[SWAT_T1])
    body = md_rows(render(build("main", rows, refs, configs), "md"))
    # our best Wiki ppl and the paper's best are both bold: they come from different setups
    assert body["transformer"][col("Wiki. word ppl↓")].startswith("**")
    bold_refs = [k for k, v in body.items() if k.endswith("[1]") and not k.startswith("Δ")
                 and v[col("Wiki. word ppl↓")].startswith("**")]
    assert len(bold_refs) == 1


# ---------------------------------------------------------------- the reference files themselves

@pytest.mark.parametrize("path", sorted(PAPER.glob("*.csv")), ids=lambda p: p.name)
def test_reference_files_are_consistent_with_their_published_text(path):
    """Each value is its `published` text (accuracies / 100), and the published average is the mean
    of the published accuracies (rounding), except where the file notes the paper's own mismatch."""
    refs = read_reference(path, warn=pytest.fail)
    assert refs
    groups = {}
    for r in refs:
        assert r.extra["source"] and r.extra["table"] in TABLES and r.run.startswith("paper:")
        assert re.search(r"arXiv \d{4}\.\d{4,5}", r.extra["source"])
        text = r.extra["published"].rstrip("*")
        expected = float(text) / 100 if r.metric.startswith("acc") else float(text)
        assert math.isclose(r.value, expected, abs_tol=1e-9), r
        groups.setdefault((r.preset, r.extra["label"]), []).append(r)
    for key, rs in groups.items():
        accs = [r.value * 100 for r in rs if r.metric.startswith("acc") and r.task != AVERAGE_TASK]
        avg = [r for r in rs if r.task == AVERAGE_TASK]
        assert len(avg) == 1, key
        decimals = len(avg[0].extra["published"].rstrip("*").split(".")[1])
        consistent = abs(sum(accs) / len(accs) - avg[0].value * 100) <= 10 ** -decimals + 1e-9
        assert consistent != ("as printed" in (avg[0].extra.get("note") or "")), key


def test_read_reference_skips_corrupt_lines_with_file_and_line(tmp_path):
    lines = SWAT_T1.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    broken = re.sub(r",(0\.\d+),", ",thirty,", lines[3], count=1)  # line 4 is an accuracy
    assert broken != lines[3]
    bad.write_text("\n".join([lines[0], lines[1], broken, lines[2]]) + "\n")
    warnings = []
    assert len(read_reference(bad, warn=warnings.append)) == 2
    assert len(warnings) == 1 and f"{bad}:3" in warnings[0]
    with pytest.raises(ResultsError, match="lacks the column"):
        (tmp_path / "cols.csv").write_text("model,task\nswat,piqa\n")
        read_reference(tmp_path / "cols.csv")


# ---------------------------------------------------------------- the store: corrupt lines, duplicates

def test_corrupt_lines_duplicates_and_conflicts_are_reported():
    warnings = []
    record = load_run(FIX / "damaged", warn=warnings.append)
    assert len(record.rows) == 4  # two corrupt lines skipped
    rows_file = FIX / "damaged" / "rows.jsonl"
    assert any(f"{rows_file}:5" in w for w in warnings) and any(f"{rows_file}:6" in w for w in warnings)
    kept = dedupe_rows(record.rows, warn=warnings.append)
    assert sorted((r.task, r.value) for r in kept) == [("boolq", 0.62), ("piqa", 0.64)]
    assert any("2 identical rows" in w and "piqa" in w for w in warnings)
    assert any("conflicting rows" in w and "0.58" in w and "using 0.62" in w for w in warnings)


def test_a_missing_run_is_a_one_line_error(tmp_path):
    with pytest.raises(ResultsError, match="no run 'nope'"):
        load_run("nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="has no rows.jsonl"):
        load_run("empty", tmp_path)


# ---------------------------------------------------------------- ablation, length, speed

def test_ablation_table_shows_variant_settings_side_by_side():
    rows, refs, configs = fixture("fixture-340m", "fixture-abl", refs=[SWAT_T1])
    table = build("ablation", rows, refs, configs)
    body = md_rows(render(table, "md"))
    keys = table.header[2:8]
    neg = dict(zip(keys, body["swat (slopes=negative, window=128)"][1:7]))
    assert neg["slopes"] == "negative" and neg["window"] == "128" and neg["activation"] == "sigmoid"
    assert dict(zip(keys, body["swat"][1:7]))["slopes"] == "balanced"
    assert dict(zip(keys, body["SWAT (+) [1]"][1:7]))["slopes"] == "positive"
    assert "transformer" not in body and "mamba" not in body


def test_any_model_run_with_a_changed_config_is_a_variant_and_speed_rows_ignore_the_training_length():
    """Labels come from the run's config, whatever the model: a sliding_softmax run with another
    window is a variant beside its base run; a speed row is not labelled by a training length that
    its sweep does not use; without variants there is no ablation table."""
    from harness.config import load_config
    from harness.results.tables import variant_of
    base, narrow = load_config("small").to_dict(), load_config("small", overrides=["model.window=64"]).to_dict()
    short = load_config("small", overrides=["train.seq_len=512"]).to_dict()
    configs = {"base": base, "narrow": narrow, "short": short}
    rows = [Row(run, "sliding_softmax", "small", "piqa", "acc", v) for run, v in (("base", 0.5), ("narrow", 0.6))]
    assert [variant_of(r, configs) for r in rows] == ["", "window=64"]
    body = md_rows(render(build("ablation", rows, [], configs), "md"))
    assert set(body) - {"Model"} == {"sliding_softmax", "sliding_softmax (window=64)"}
    assert variant_of(Row("short", "transformer", "small", "length", "ppl", 9.0), configs) == "seq_len=512"
    speed = Row("short", "transformer", "small", "speed_train", "tokens_per_s", 1e5, extra={"seq_len": 2048})
    assert variant_of(speed, configs) == ""
    with pytest.raises(ResultsError, match="nothing for the ablation table"):
        build("ablation", rows[:1], [], configs)


def test_length_table_pivots_context_and_skips_position_buckets():
    rows, refs, configs = fixture("fixture-340m")
    table = build("length", rows, refs, configs)
    assert table.header == ["Model", "512", "1K", "4K"]
    body = md_rows(render(table, "md"))
    assert body["swat"] == ["20.00", "18.00", "**17.50**"]  # not the bucketed 16.0
    assert body["transformer"] == ["**19.00**", "**17.00**", "250.0"]


def test_speed_table_marks_oom_and_best_by_metric_direction():
    rows, refs, configs = fixture("fixture-340m")
    text = render(build("speed", rows, refs, configs), "md")
    groups = re.split(r"\n\| \*(?!\*)", text)
    tps = next(g for g in groups if g.startswith("speed_decode · tokens_per_s"))
    mem = next(g for g in groups if g.startswith("speed_decode · peak_mem_gb"))
    assert "| transformer b=1 | **950.0** | OOM |" in tps  # highest throughput is best
    assert "| swat b=1 | 900.0 | 880.0 |" in tps  # alone in its column (OOM beside it): not bold
    assert "| swat b=1 | **1.50** | 1.50 |" in mem  # lower memory is better
    assert "OOM: ran out of memory at that length (on fixture)." in text  # the rows' device, not always a GPU


# ---------------------------------------------------------------- formats

def check_tabular(fragment: str) -> int:
    """A LaTeX-free check that `fragment` is one well-formed tabular: balanced braces, no stray
    special characters, and every row with exactly as many cells as the column spec. Returns rows."""
    body = "\n".join(line for line in fragment.splitlines() if not line.lstrip().startswith("%"))
    m = re.fullmatch(r"\s*\\begin\{tabular\}\{([lrc|]+)\}(.*)\\end\{tabular\}\s*", body, re.S)
    assert m, "not a single tabular environment"
    ncols = len(m.group(1).replace("|", ""))
    inner = m.group(2)
    depth = 0
    for i, ch in enumerate(inner):
        if ch in "{}" and inner[i - 1] != "\\":
            depth += 1 if ch == "{" else -1
            assert depth >= 0, "unbalanced braces"
    assert depth == 0, "unbalanced braces"
    plain = re.sub(r"\$[^$]*\$", "", inner.replace(r"\$", ""))  # math spans may hold _ and ^
    for ch in "_%#^~":
        assert not re.search(rf"(?<!\\){re.escape(ch)}", plain), f"unescaped {ch}"
    rows = [r.strip() for r in re.split(r"\\\\", inner)]
    rows = [re.sub(r"^\s*(\\(top|mid|bottom)rule\s*)+", "", r).strip() for r in rows]
    count = 0
    for row in filter(None, rows):
        cells = re.split(r"(?<!\\)&", row)
        spans = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", row))
        assert len(cells) + spans == ncols, f"{len(cells) + spans} cells, {ncols} columns: {row[:80]}"
        count += 1
    return count


@pytest.mark.parametrize("kind", TABLES)
def test_latex_is_a_valid_tabular_fragment(kind):
    rows, refs, configs = fixture("fixture-340m", "fixture-abl", refs=sorted(PAPER.glob("*.csv")))
    table = build(kind, rows, refs, configs)
    latex = to_latex(table)
    assert check_tabular(latex) >= 3
    if kind == "main":
        assert r"\textbf{" in latex and r"$\pm$" in latex and r"acc\_n" in latex
    assert not set(latex) & {"§", "¶", "†", "‡", "±", "Δ", "·", "↓", "↑"}  # each mark as LaTeX writes it


def test_latex_checker_rejects_broken_fragments():
    good = "\\begin{tabular}{lr}\n\\toprule\na & b \\\\\n\\bottomrule\n\\end{tabular}\n"
    assert check_tabular(good) == 1
    for bad in (good.replace("a & b", "a & b & c"), good.replace("a &", "a_x &"), good.replace("b \\\\", "{b \\\\")):
        with pytest.raises(AssertionError):
            check_tabular(bad)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles_with_pdflatex(tmp_path):
    rows, refs, configs = fixture("fixture-340m", "fixture-abl", refs=[SWAT_T1])
    for kind in TABLES:
        (tmp_path / f"{kind}.tex").write_text(to_latex(build(kind, rows, refs, configs)))
    doc = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage[utf8]{inputenc}"
           "\\usepackage[landscape,margin=5mm]{geometry}\\begin{document}\\tiny\n"
           + "\n".join(f"\\input{{{k}.tex}}\\par" for k in TABLES) + "\n\\end{document}\n")
    (tmp_path / "doc.tex").write_text(doc)
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]


def test_csv_has_raw_numbers_and_stderr_columns():
    rows, refs, configs = fixture("fixture-340m")
    lines = list(csv.DictReader(io.StringIO(render(build("main", rows, refs, configs), "csv"))))
    swat = next(line for line in lines if line["Model"] == "swat")
    assert float(swat["PIQA acc"]) == pytest.approx(65.0) and float(swat["PIQA acc stderr"]) == pytest.approx(1.1)
    assert swat["group"] == "340m" and "**" not in swat["PIQA acc"]
    transformer = next(line for line in lines if line["Model"] == "transformer")
    assert transformer["BoolQ acc"] == ""
    assert {c.title for c in ACC_COLUMNS} <= set(lines[0])


# ---------------------------------------------------------------- plots and the command line

def test_plots_write_png_and_their_data(tmp_path):
    from harness.results.plots import write_plots
    rows, refs, configs = fixture("fixture-340m")
    written = {p.name for p in write_plots(rows, tmp_path, configs)}
    assert {"ppl_vs_length.png", "ppl_vs_length.csv", "acc_vs_tokens.png", "acc_vs_tokens.csv",
            "speed_decode_tokens_per_s.png", "speed_decode_peak_mem_gb.csv"} <= written
    assert (tmp_path / "ppl_vs_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = list(csv.DictReader((tmp_path / "acc_vs_tokens.csv").open()))
    assert [(p["series"], int(p["tokens_trained"]), float(p["accuracy_pct"])) for p in points] == [
        ("swat", 1_000_000_000, pytest.approx(60.0)), ("swat", 2_000_000_000, pytest.approx(65.0))]
    speed = list(csv.DictReader((tmp_path / "speed_decode_tokens_per_s.csv").open()))
    assert ("transformer b=1", "4096") not in {(p["series"], p["length"]) for p in speed}  # OOM not drawn


def test_cli_end_to_end(tmp_path, capsys):
    from harness.cli import main
    run = str(FIX / "fixture-340m")
    assert main(["tables", "--run", run, "--reference", "swat_2502.18845_table1",
                 "--results", str(tmp_path / "elsewhere")]) == 0  # no paper/ there: the harness's own
    out = capsys.readouterr().out
    assert out.startswith("**Language modeling") and "Δ vs SWAT (-+) [1]" in out
    tex = tmp_path / "main.tex"
    assert main(["tables", "--run", run, "--format", "latex", "--out", str(tex), "--plots", str(tmp_path / "p")]) == 0
    check_tabular(tex.read_text())
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["acc_vs_tokens.csv", "acc_vs_tokens.png"]
    assert main(["tables", "--run", run, "--table", "speed", "--format", "csv"]) == 0
    assert "OOM" in capsys.readouterr().out
    assert main(["tables", "--run", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_limited_evaluations_are_marked_and_empty_tables_say_what_they_need(tmp_path):
    lines = (FIX / "fixture-340m" / "rows.jsonl").read_text().splitlines()
    limited = [line.replace('"n": 1838}', '"n": 20, "limit": 20}') for line in lines
               if '"task": "piqa"' in line and '"model": "swat"' in line]
    assert len(limited) == 2
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "rows.jsonl").write_text("\n".join(limited) + "\n")
    rows, refs, configs = collect([str(tmp_path / "quick")], [], tmp_path, warn=pytest.fail)
    text = render(build("main", rows, refs, configs), "md")
    assert md_rows(text)["swat"][col("PIQA acc")] == "65.00 ± 1.10§"
    assert md_rows(text)["swat"][col("Avg")].endswith("§")  # an average over quick checks is one too
    assert "§ evaluated on the first 20 examples only" in text
    with pytest.raises(ResultsError, match=r"nothing for the length table .*piqa/acc.*harness run --tasks length"):
        build("length", rows, refs, configs)


def test_rows_record_the_commit_the_sender_names_over_a_copy_s_git(monkeypatch, tmp_path):
    """HARNESS_COMMIT (set by whoever sent a copy of the tree to a GPU machine) wins over the
    copy's git HEAD, which can be stale; without it, HEAD; outside a repository, the package version."""
    from harness.results.provenance import git_commit
    monkeypatch.setenv("HARNESS_COMMIT", "31c4ef0")
    assert git_commit() == "31c4ef0"
    monkeypatch.delenv("HARNESS_COMMIT")
    assert git_commit(tmp_path).startswith("swat-harness==")  # not a git repository: what is installed
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
                   check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "f.txt").write_text("y")
    assert git_commit(tmp_path) == head + "-dirty"


def _row(model: str, task: str, value: float) -> Row:
    return Row(run="run", model=model, preset="small", task=task, metric="loss", value=value)


def _write_tasks(path: Path, model: str, tasks: int) -> None:
    for t in range(tasks):
        replace_rows(path, [_row(model, f"t{t}", t)], lambda r, t=t: (r.model, r.task) == (model, f"t{t}"))


def test_two_jobs_writing_one_rows_file_at_once_keep_every_row(tmp_path):
    """Two processes (one `harness run` per GPU into one run folder) each replace rows 40 times."""
    path = tmp_path / "run" / "rows.jsonl"
    fork = multiprocessing.get_context("fork")
    jobs = [fork.Process(target=_write_tasks, args=(path, model, 40)) for model in ("swat", "mamba")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
        assert job.exitcode == 0
    rows = read_rows(path)
    expected = sorted((m, f"t{t}") for m in ("swat", "mamba") for t in range(40))
    assert sorted((r.model, r.task) for r in rows) == expected


def test_a_run_merges_its_rows_with_what_another_job_wrote_since_it_started(tmp_path):
    """run_tasks started with an empty view of the folder; another job's rows written meanwhile stay,
    and this job's earlier row of the same task is replaced, not duplicated."""
    import torch

    from harness.config import load_config
    from harness.evaluation.loop import TaskContext, run_tasks
    path = tmp_path / "run" / "rows.jsonl"
    replace_rows(path, [_row("hgrn2", "wikitext", 2.25), _row("swat", "fake", 0.0)], lambda r: False)
    ctx = TaskContext(cfg=load_config(preset="tiny"), run="run", model_name="swat", device="cpu")

    class FakeTask:
        name, data_parallel, builtin = "fake", True, False  # a plugin's task: its rows are checked
        row_task_names = ("fake",)

        def run(self, model, tokenizer, ctx):
            return [ctx.row("fake", "acc", 0.5)]

    rows = run_tasks(torch.nn.Linear(1, 1), None, ctx, [FakeTask()], [], path, log=lambda m: None)
    stored = sorted((r.model, r.task, r.value) for r in read_rows(path))
    assert stored == sorted((r.model, r.task, r.value) for r in rows) == [("hgrn2", "wikitext", 2.25),
                                                                          ("swat", "fake", 0.5)]


# ---------------------------------------------------------------- lines, inputs and outputs (synthetic rows)

def rows_run(folder: Path, rows: list[Row]) -> Path:
    """A run folder holding `rows`; returns it."""
    from harness.results.store import write_rows
    write_rows(folder / "rows.jsonl", rows)
    return folder


def acc(model, preset, task, value, metric="acc", **kw) -> Row:
    extra = kw.pop("extra", {})
    return Row(run=kw.pop("run", "r"), model=model, preset=preset, task=task, metric=metric, value=value,
               extra=extra, **kw)


def groups(table) -> dict[str, dict[str, list[str]]]:
    """Group label -> {line name -> cells as printed} of a rendered markdown table."""
    out, group = {}, None
    for line in render(table, "md").splitlines():
        if line.startswith("| *"):
            group = out.setdefault(line.strip("| *"), {})
        elif line.startswith("| ") and group is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            group[cells[0]] = cells[1:]
    return out


def test_each_learning_rate_of_a_model_gets_a_line_of_its_own():
    """A sweep's rows at two rates never share a line: held-out loss of one rate beside the
    benchmarks of another was a line no run made. One rate per model: no label, no footnote."""
    def smoke(lr, seed, loss):
        return acc("swat", "s", "smoke", loss, metric="loss", seed=seed, params=10, extra={"lr": lr})
    rows = [smoke(0.008, 0, 4.0), smoke(0.008, 1, 4.1), smoke(0.016, 0, 3.9), smoke(0.016, 1, 3.8),
            acc("swat", "s", "piqa", 0.6, seed=0, params=10, extra={"lr": 0.008}),
            acc("mamba", "s", "smoke", 4.5, metric="loss", seed=0, params=10, extra={"lr": 0.004})]
    table = build("main", rows)
    lines = groups(table)["s"]
    piqa = table.header.index("PIQA acc") - 1
    loss = table.header.index("Held-out loss↓") - 1
    assert list(lines) == ["mamba", "swat lr=0.008 seed=0", "swat lr=0.008 seed=1", "swat lr=0.016 seed=0",
                           "swat lr=0.016 seed=1"]
    assert lines["swat lr=0.008 seed=0"][loss] == "4.00" and lines["swat lr=0.008 seed=0"][piqa] == "60.00"
    assert lines["swat lr=0.016 seed=1"][loss] == "**3.80**" and lines["swat lr=0.016 seed=1"][piqa] == ""
    assert any("picks each model's learning rate" in n and "--report-only" in n for n in table.notes)
    one_rate = build("main", [r for r in rows if r.extra["lr"] != 0.016])
    assert "swat seed=0" in groups(one_rate)["s"]
    assert not any("learning rate" in n for n in one_rate.notes)


def test_plot_series_are_the_table_lines(tmp_path):
    """A series is one line of the tables: sizes, rates and seeds are never joined into one curve,
    nor are two sizes' evaluations drawn as checkpoints of one model."""
    from harness.results.plots import write_plots

    def ppl(model, preset, context, value, **extra):
        return acc(model, preset, "length", value, metric="ppl", params=10, extra={"context": context, **extra})
    rows = [ppl(m, p, c, v * c, **extra) for c in (512, 1024)
            for m, p, v, extra in (("bigram", "s", 3, {}), ("bigram", "m", 2, {}),
                                   ("swat", "s", 1, {"lr": 0.008}), ("swat", "s", 1.5, {"lr": 0.016}))]
    rows += [acc("swat", p, "piqa", v, tokens_trained=t, params=10) for p, v, t in (("s", 0.5, 10), ("m", 0.6, 40))]
    written = {p.name for p in write_plots(rows, tmp_path)}
    assert "acc_vs_tokens.png" not in written  # two sizes, one checkpoint each: no curve
    points = list(csv.DictReader((tmp_path / "ppl_vs_length.csv").open()))
    assert {p["series"] for p in points} == {"bigram preset=s", "bigram preset=m", "swat preset=s lr=0.008",
                                             "swat preset=s lr=0.016"}
    assert all(len([p for p in points if p["series"] == s]) == 2 for s in {p["series"] for p in points})
    assert "token perplexity" in points[0]


def test_reference_rows_show_the_average_their_paper_published():
    """TTT and SWAT (-) at 760M print averages that are not the mean of their cells; the table shows
    what the paper printed (and bolds by it), and recomputes only where a file has no average."""
    _, refs, _ = fixture(refs=[SWAT_T1])
    table = build("main", [], refs)
    avg = table.header.index("Avg") - 1
    at_760m = groups(table)["760m"]
    assert at_760m["TTT [1]"][avg] == "47.32¶"  # ¶: not the mean of its cells, which the table says
    assert at_760m["SWAT (-) [1]"][avg] == "**51.85**¶" and at_760m["Titans [1]"][avg] == "51.56"
    assert any("TTT at 760m (47.32; its cells: 49.37); SWAT (-) at 760m (51.85; its cells: 51.33)" in n
               for n in table.notes)
    assert sum("¶" in cell for line in at_760m.values() for cell in line) == 2  # rounding flags nothing else
    without = build("main", [], [r for r in refs if r.task != AVERAGE_TASK])
    assert groups(without)["760m"]["TTT [1]"][avg] == "49.37"
    assert any("as published" in n for n in table.notes) and not any("as published" in n for n in without.notes)


def test_a_difference_from_a_quick_check_keeps_its_limit_mark():
    """Our row's PIQA under --limit read 22.69§, but its Δ line gave the difference with no mark."""
    _, refs, _ = fixture(refs=[SWAT_T1])
    ours = [acc("transformer", "340m", "piqa", 0.70, extra={"limit": 100}), acc("transformer", "340m", "arc_easy", 0.5)]
    table = build("main", ours, refs)
    delta = next(cells for name, cells in groups(table)["340m"].items() if name.startswith("Δ vs Transformer++"))
    piqa, arc_e = (table.header.index(title) - 1 for title in ("PIQA acc", "ARC-e acc"))
    assert delta[piqa].endswith("§") and not delta[arc_e].endswith("§")


def test_a_paper_s_numbers_keep_the_decimals_it_printed():
    """GLA's table prints one decimal: its 31.0 read 31.00, a precision the paper does not claim."""
    _, refs, _ = fixture(refs=[PAPER / "gla_2312.06635_table2.csv"])
    table = build("main", [], refs)
    lmb, avg = table.header.index("LMB. acc") - 1, table.header.index("Avg") - 1
    row = groups(table)["340m"]["Transformer++ [1]"]
    assert row[lmb] == "**31.0**" and row[avg] == "41.2†"


def test_the_swat_paper_is_cited_by_its_title():
    title = "Sliding Window Attention Training for Efficient Large Language Models"
    assert all(title in r.extra["source"] for r in read_reference(SWAT_T1))
    assert "Efficient LLMs" not in SWAT_T1.read_text() + (PAPER / "README.md").read_text()


@pytest.mark.parametrize("field,value,why", [
    ("params", "big", "params 'big' is not a whole number"), ("stderr", "x", "stderr 'x' is not a number"),
    ("model", 5, "model 5 is not text"), ("preset", None, "preset is null"), ("task", None, "task is null"),
    ("metric", 3, "metric 3 is not text"), ("seed", "a", "seed 'a' is not a whole number"),
    ("preset", "absent", "no preset field"),
])
def test_a_row_field_of_the_wrong_type_is_skipped_with_a_warning(tmp_path, field, value, why):
    """Such a row used to end in a traceback (a sort, a format), vanish, or make a phantom line."""
    good = {"run": "r", "model": "swat", "preset": "s", "task": "piqa", "metric": "acc", "value": 0.5,
            "params": 10, "seed": 0, "stderr": 0.01}
    bad = {**good, "seed": 1, field: value}
    if value == "absent":
        del bad[field]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "rows.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    warnings = []
    rows, refs, configs = collect([str(tmp_path / "r")], [], tmp_path, warn=warnings.append)
    assert warnings == [f"warning: {tmp_path / 'r' / 'rows.jsonl'}:2: skipped a corrupt row ({why})"]
    assert list(groups(build("main", rows, refs, configs))["s"]) == ["swat"]


def test_output_paths_are_checked_before_anything_is_written_or_printed(tmp_path, capsys):
    from harness.cli import main
    run = str(rows_run(tmp_path / "r", [acc("swat", "s", "length", 9.0, metric="ppl", extra={"context": 512})]))
    plain = tmp_path / "plain"
    plain.write_text("x")
    for out in ([], ["--out", str(tmp_path / "t.md")]):
        assert main(["tables", "--run", run, "--table", "length", *out, "--plots", str(plain)]) == 2
        printed = capsys.readouterr()
        assert printed.out == "" and printed.err.startswith(f"error: --plots {plain}") and printed.err.count("\n") == 1
    assert not (tmp_path / "t.md").exists()


def test_out_on_a_folder_names_the_path_given(tmp_path, capsys):
    """Not the temporary file that the atomic write would have made beside it."""
    from harness.cli import main
    run = str(rows_run(tmp_path / "r", [acc("swat", "s", "piqa", 0.6)]))
    assert main(["tables", "--run", run, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path} is a folder") and ".tmp" not in err


@pytest.mark.parametrize("target", ["rows", "reference"])
def test_out_on_a_file_being_read_is_refused(tmp_path, capsys, target):
    from harness.cli import main
    run = rows_run(tmp_path / "r", [acc("swat", "340m", "piqa", 0.6)])
    reference = tmp_path / "ref.csv"
    shutil.copy(SWAT_T1, reference)
    victim = run / "rows.jsonl" if target == "rows" else reference
    before = victim.read_bytes()
    out = str(victim) if target == "reference" else str(tmp_path / "r" / ".." / "r" / "rows.jsonl")
    assert main(["tables", "--run", str(run), "--reference", str(reference), "--out", out]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {out} is a file this table is read from")
    assert victim.read_bytes() == before


def test_a_missing_results_folder_says_so(tmp_path, capsys):
    from harness.cli import main
    assert main(["tables", "--results", str(tmp_path / "nowhere")]) == 2
    assert f"the results folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_an_empty_table_names_the_nested_runs_that_would_fill_it(tmp_path, capsys):
    """Without --run only RESULTS/*/rows.jsonl is read; runs nested deeper are named for the table
    they fill (here a speed sweep in speed/<device>/<preset>, as `harness bench models` writes it)."""
    from harness.cli import main
    rows_run(tmp_path / "top", [acc("swat", "s", "piqa", 0.6)])
    speed = acc("swat", "s", "speed_train", 1e5, metric="tokens_per_s", run="s", extra={"seq_len": 2048})
    rows_run(tmp_path / "speed" / "gpu" / "s", [speed])
    rows_run(tmp_path / "other" / "deeper", [acc("mamba", "s", "piqa", 0.6)])
    assert main(["tables", "--results", str(tmp_path), "--table", "speed"]) == 2
    err = capsys.readouterr().err
    assert "nothing for the speed table" in err and err.rstrip().endswith("try --run speed/gpu/s")
    assert main(["tables", "--results", str(tmp_path), "--table", "speed", "--run", "speed/gpu/s"]) == 0


def test_a_run_or_reference_named_twice_is_read_once(tmp_path):
    run = rows_run(tmp_path / "r", [acc("swat", "s", "piqa", 0.6)])
    (tmp_path / "paper").mkdir()
    shutil.copy(SWAT_T1, tmp_path / "paper")
    warnings = []
    rows, refs, _ = collect([str(run), "r", str(run / "rows.jsonl")],
                            [str(tmp_path / "paper" / SWAT_T1.name), "all", SWAT_T1.stem],
                            tmp_path / ".." / tmp_path.name, warn=warnings.append)
    assert warnings == [] and len(rows) == 1 and len(refs) == len(read_reference(SWAT_T1))


def test_a_stamped_row_writer_stamps_flushes_and_echoes_rows(monkeypatch, capsys):
    """Each row is written at once (a cut device call keeps it) with how to measure it again; with
    echo, the unstamped row also goes to the console."""
    from harness.results.provenance import stamped_row_writer
    monkeypatch.setenv("HARNESS_COMMIT", "31c4ef0")
    out = io.StringIO()
    write = stamped_row_writer(out, "cpu", "python probe.py out.jsonl", echo=True)
    write({"T": 4096, "ms": 1.5})
    row = json.loads(out.getvalue())
    assert (row["T"], row["ms"], row["commit"], row["command"]) == (4096, 1.5, "31c4ef0", "python probe.py out.jsonl")
    assert "torch" in row["versions"] and row["device"]
    assert json.loads(capsys.readouterr().out) == {"T": 4096, "ms": 1.5}
    stamped_row_writer(out, "cpu")({"T": 1})
    assert capsys.readouterr().out == ""


def test_timing_and_provenance_extras_do_not_make_a_measurement_new():
    """Two rows of one measurement that differ in wall time or package versions conflict when their
    values differ; a learning rate or a length still makes another measurement."""
    def row(value, **extra):
        return acc("swat", "s", "piqa", value, extra={"lr": 0.008, **extra})
    warnings = []
    kept = dedupe_rows([row(0.5, eval_seconds=1.2, torch="2.1", world_size=1),
                        row(0.6, eval_seconds=3.4, torch="2.2", world_size=2)], warn=warnings.append)
    assert len(kept) == 1 and len(warnings) == 1 and "conflicting rows" in warnings[0]
    assert "eval_seconds" not in warnings[0]
    assert len(dedupe_rows([row(0.5), row(0.6, lr=0.016), row(0.7, context=512)], warn=pytest.fail)) == 3


def test_sizes_are_ordered_by_their_trained_models_not_the_n_gram_references():
    rows = [acc("swat", "s", "piqa", 0.5, params=1_700_000), acc("bigram", "s", "piqa", 0.5, params=1_300_000),
            acc("swat", "m", "piqa", 0.5, params=3_800_000), acc("bigram", "m", "piqa", 0.5, params=2_000_000),
            acc("bigram", "l", "piqa", 0.5, params=2_018_000), acc("unigram", "l", "piqa", 0.5, params=8_100)]
    assert list(groups(build("main", rows))) == ["s", "m", "l"]
    ngrams = [r for r in rows if r.model == "bigram"]
    assert list(groups(build("main", ngrams))) == ["s", "m", "l"]  # only n-grams: by their own counts


def test_passkey_depths_sort_as_numbers():
    rows = [acc("swat", "s", "passkey", 0.0, extra={"context": 512, "depth": d}) for d in (1.0, 0.5, 0.0, 0.75, 0.25)]
    lines = list(groups(build("retrieval", rows))["s · passkey acc · chance 0.0011%"])
    assert lines == [f"swat depth={d}" for d in ("0", "0.25", "0.5", "0.75", "1")]


def test_perplexities_say_per_word_or_per_token():
    """The main table's WikiText-2 perplexity is lm-eval's per word; the length table's and its plot's
    are per token of the model's tokenizer: numbers of another scale, which the labels must tell."""
    rows, refs, configs = fixture("fixture-340m")
    assert "Wiki. word ppl↓" in build("main", rows, refs, configs).header
    length = build("length", rows, refs, configs)
    assert list(groups(length)) == ["340m · token ppl"] and "Per-token perplexity" in length.notes[0]


@pytest.mark.parametrize("committed,args", [
    ("tiny-demo/main.md", ["--run", "tiny-demo"]),
    ("tiny-demo/length.md", ["--run", "tiny-demo", "--table", "length"]),
    ("comparison/seed0/main.md", ["--run", "results/comparison/seed0", "--reference", "all"]),
])
def test_committed_tables_are_what_their_documented_commands_print(capsys, monkeypatch, committed, args):
    """README.md and results/comparison/README.md give the commands; a table is regenerated with them."""
    from harness.cli import main
    monkeypatch.chdir(ROOT)
    assert main(["tables", *args]) == 0
    assert capsys.readouterr().out == (ROOT / "results" / committed).read_text()


def test_the_run_table_names_what_tells_a_sweeps_rows_apart():
    """results/<run>/table.md listed a passkey sweep as identical lines (no length, no depth), and a
    length row beside its one-bucket twin; a row with no value (out of memory) broke it."""
    from harness.results.tables import rows_table
    rows = [acc("swat", "tiny", "passkey", 0.0, n=5, extra={"context": c, "depth": d, "probe_seed": 1234})
            for c in (1024, 2048) for d in (0.0, 0.25)]
    rows += [acc("swat", "tiny", "length", 19.6, metric="ppl", extra={"context": 128, **bucket})
             for bucket in ({}, {"position_bucket": "0-128"})]
    rows += [acc("swat", "tiny", "speed_train", None, metric="tokens_per_s", extra={"seq_len": 128, "status": "oom"})]
    lines = rows_table(rows).splitlines()
    assert lines[0] == "| model | preset | params | task | metric | setting | value | n |"
    assert lines[2:] == ["| swat | tiny |  | passkey | acc | context=1024 depth=0 | 0.0000 | 5 |",
                         "| swat | tiny |  | passkey | acc | context=1024 depth=0.25 | 0.0000 | 5 |",
                         "| swat | tiny |  | passkey | acc | context=2048 depth=0 | 0.0000 | 5 |",
                         "| swat | tiny |  | passkey | acc | context=2048 depth=0.25 | 0.0000 | 5 |",
                         "| swat | tiny |  | length | ppl |  | 19.60 |  |",
                         "| swat | tiny |  | length | ppl | position_bucket=0-128 | 19.60 |  |",
                         "| swat | tiny |  | speed_train | tokens_per_s |  |  |  |"]
    assert "setting" not in rows_table([acc("swat", "tiny", "piqa", 0.5)])


def test_a_small_memory_shows_its_digits_not_a_bold_zero():
    """swat's decode state at the tiny preset (3e-5 GB) was printed as a bold 0.0000."""
    from harness.results.tables import rows_table
    rows = [acc(m, "tiny", "speed_decode", v, metric="state_gb", extra={"context": 128, "batch": 1})
            for m, v in (("swat", 2**-15), ("transformer", 0.0117))]
    assert groups(build("speed", rows))["speed_decode · state_gb · tiny"] == {
        "swat b=1": ["**0.000031**"], "transformer b=1": ["0.0117"]}
    assert "| 0.000031 |" in rows_table(rows)


def test_retrieval_groups_say_the_accuracy_of_a_guess_where_it_is_known():
    """MQAR's chance is one of the values the task draws from the run's tokenizer (a third of the byte
    tokenizer's 253 ordinary ids: 1/84); passkey's one of 90,000 keys; a run of unknown tokenizer: none."""
    rows = [acc("swat", "tiny", task, 0.1, run=run, extra={"context": 256, **detail})
            for task, detail in (("passkey", {"depth": 0.5}), ("mqar", {"num_kv": 4}))
            for run in ("r", "other")]
    table = build("retrieval", rows, [], {"r": {"preset": "tiny", "train": {"tokenizer": "bytes"}}})
    assert list(groups(table)) == ["tiny · passkey acc · chance 0.0011%", "tiny · mqar acc · chance 1.2%"]
    assert any(note.startswith("chance: the accuracy of a uniform guess") for note in table.notes)
    unknown = [acc("swat", "s", "mqar", 0.1, extra={"context": 256, "num_kv": 4})]
    assert list(groups(build("retrieval", unknown))) == ["s · mqar acc"]
    assert not any(note.startswith("chance") for note in build("retrieval", unknown).notes)


def test_plots_are_those_of_the_table_asked_for(tmp_path, capsys):
    """--table retrieval --plots wrote the length plots; a table without plots now says so."""
    from harness.cli import main
    run = str(FIX / "fixture-340m")
    assert main(["tables", "--run", run, "--table", "retrieval", "--plots", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r").exists()
    err = capsys.readouterr().err
    assert "plots: none: the retrieval table has no plots (the main, length, speed tables do)" in err
    assert main(["tables", "--run", run, "--table", "length", "--plots", str(tmp_path / "l")]) == 0
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["ppl_vs_length.csv", "ppl_vs_length.png"]


def test_the_main_table_speaks_of_accuracies_only_where_it_shows_some():
    smoke = [acc("swat", "s", "smoke", 3.0, metric="loss"), acc("swat", "s", "smoke", 20.0, metric="ppl")]
    note = build("main", smoke).notes[0]
    assert "Accuracies" not in note and "Avg" not in note and note.startswith("Perplexity and loss: lower is better.")
    assert build("main", smoke + [acc("swat", "s", "piqa", 0.6)]).notes[0].startswith("Accuracies in percent")


# ---------------------------------------------------------------- devices, broken numbers, --limit, CSV, inputs

def speed(model, device, value, **extra):
    return acc(model, "s", "speed_prefill", value, metric="tokens_per_s", device=device,
               extra={"seq_len": 1024, **extra})


def test_timings_of_two_devices_are_two_measurements_each_in_its_own_group():
    """Speed rows of an H100 and an H200 were one measurement in conflict: one device's numbers were
    dropped, or a group titled with both devices bolded one's numbers against the other's."""
    from harness.results.tables import peer_ratio_table
    rows = [speed("swat", "H100", 100.0), speed("mamba", "H100", 120.0), speed("swat", "H200", 300.0),
            speed("mamba", "H200", 240.0, date="2026-12-01")]
    kept = dedupe_rows(rows, warn=pytest.fail)
    assert len(kept) == 4
    table = groups(build("speed", kept))
    assert table == {"speed_prefill · tokens_per_s · s · H100": {"mamba": ["**120.0**"], "swat": ["100.0"]},
                     "speed_prefill · tokens_per_s · s · H200": {"mamba": ["240.0"], "swat": ["**300.0**"]}}
    ratios = groups(peer_ratio_table(kept, "mamba"))
    assert ratios["speed_prefill · s · H100"]["swat"] == ["0.83"] and ratios["speed_prefill · s · H200"]["swat"] == [
        "**1.25**"]
    one_device_twice = [speed("swat", "H100", 100.0), speed("swat", "H100", 110.0)]
    warnings = []
    assert [r.value for r in dedupe_rows(one_device_twice, warn=warnings.append)] == [110.0]
    assert len(warnings) == 1 and "conflicting rows" in warnings[0] and "on H100" in warnings[0]


def test_speed_plots_draw_each_device_apart(tmp_path):
    """One series joined an H100's and an H200's timings (the latest at each length won)."""
    from harness.results.plots import speed_curves
    rows = [speed("swat", "H100", 100.0), speed("swat", "H200", 300.0),
            speed("swat", "H100", 150.0, seq_len=2048), speed("swat", "H200", 310.0, seq_len=2048)]
    written = speed_curves(rows, tmp_path / "two")
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert pngs == ["speed_prefill_tokens_per_s_h100.png", "speed_prefill_tokens_per_s_h200.png"]
    h100 = (tmp_path / "two" / "speed_prefill_tokens_per_s_h100.csv").read_text()
    assert "100.0" in h100 and "150.0" in h100 and "300.0" not in h100 and "310.0" not in h100
    one = speed_curves([r for r in rows if r.device == "H100"], tmp_path / "one")
    assert sorted(p.name for p in one if p.suffix == ".png") == ["speed_prefill_tokens_per_s.png"]


def test_a_quality_row_rescored_on_another_device_is_the_same_measurement():
    warnings = []
    kept = dedupe_rows([acc("swat", "s", "piqa", 0.6, device="H100"), acc("swat", "s", "piqa", 0.61, device="H200")],
                       warn=warnings.append)
    assert len(kept) == 1 and len(warnings) == 1 and "conflicting rows" in warnings[0]


def test_the_store_s_speed_tasks_are_those_the_registry_times_per_device():
    """The store names them rather than importing every task module to read a rows file; the two must agree."""
    from harness.registry import tasks
    from harness.results.store import SPEED_TASKS
    assert {name for t in tasks().values() if t.per_device for name in t.row_task_names} == set(SPEED_TASKS)


@pytest.mark.parametrize("metric,field,value,why", [
    ("acc", "value", math.inf, "value inf is not finite"),
    ("perplexity", "value", -math.inf, "value -inf is not finite"),
    ("acc", "value", math.nan, "value nan is not finite"), ("acc", "stderr", math.inf, "stderr inf is not finite"),
    ("acc", "value", 1.7, "acc 1.7 is not a fraction in [0, 1]"),
    ("acc_norm", "value", -0.1, "acc_norm -0.1 is not a fraction in [0, 1]"),
])
def test_a_non_finite_number_or_an_accuracy_out_of_range_is_a_corrupt_row(tmp_path, metric, field, value, why):
    """An infinite accuracy was a bold 'inf', a NaN dropped out of the average unseen, 1.7 read as a bold 170.00."""
    good = {"run": "r", "model": "swat", "preset": "s", "task": "piqa", "metric": metric, "value": 0.5, "stderr": 0.01}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "rows.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "model": "gla",
                                                                                       field: value}) + "\n")
    warnings = []
    rows, _, _ = collect([str(tmp_path / "r")], [], tmp_path, warn=warnings.append)
    assert warnings == [f"warning: {tmp_path / 'r' / 'rows.jsonl'}:2: skipped a corrupt row ({why})"]
    assert [r.model for r in rows] == ["swat"]
    assert read_rows(tmp_path / "r" / "rows.jsonl", warn=lambda _: None)[0].value == 0.5
    big = {**good, "metric": "perplexity", "value": 1e9}  # a large perplexity is a number like any other
    (tmp_path / "r" / "rows.jsonl").write_text(json.dumps(big) + "\n")
    assert len(read_rows(tmp_path / "r" / "rows.jsonl", warn=pytest.fail)) == 1


def test_a_reference_file_s_infinite_number_is_a_corrupt_row(tmp_path):
    lines = SWAT_T1.read_text().splitlines()
    (tmp_path / "inf.csv").write_text("\n".join([lines[0], lines[1].replace(",31.52,", ",inf,", 1)]) + "\n")
    warnings = []
    assert read_reference(tmp_path / "inf.csv", warn=warnings.append) == []
    assert warnings == [f"warning: {tmp_path / 'inf.csv'}:2: skipped a corrupt reference row (value inf is not finite)"]


def test_an_infinite_or_nan_cell_is_never_bold():
    from harness.results.render import Cell
    from harness.results.tables import mark_best
    lines = [[Cell(v)] for v in (math.inf, 2.0, math.nan, 1.0, -math.inf)]
    mark_best(lines, 0, lower=False)
    assert [line[0].bold for line in lines] == [False, True, False, False, False]
    mark_best(lines, 0, lower=True)
    assert [line[0].bold for line in lines] == [False, True, False, True, False]


def test_limits_sort_as_numbers_and_bold_compares_like_with_like():
    """A piqa on 3 examples was bold over one on 300; the footnote listed 'first 2, 3, 300, 5'."""
    from harness.results.tables import limit_note
    assert "first 2, 3, 5, 300 examples" in limit_note({300, 5, 3, 2})

    def row(model, task, value, limit=None, metric="acc"):
        return acc(model, "s", task, value, metric=metric, extra={"limit": limit} if limit else {})
    rows = [row("transformer", "piqa", 0.55), row("gla", "piqa", 0.5), row("swat", "piqa", 0.9, 3),
            row("mamba", "piqa", 0.6, 300),
            row("swat", "hellaswag", 0.9, 3, "acc_norm"), row("mamba", "hellaswag", 0.4, 300, "acc_norm"),
            row("swat", "arc_easy", 0.3, 300), row("mamba", "arc_easy", 0.4, 300)]
    table = build("main", rows)
    lines = groups(table)["s"]
    piqa, hella, arc = (table.header.index(t) - 1 for t in ("PIQA acc", "Hella. acc_n", "ARC-e acc"))
    assert [lines[m][piqa] for m in ("transformer", "gla", "swat", "mamba")] == ["**55.00**", "50.00", "90.00§",
                                                                                "60.00§"]
    assert [lines[m][hella] for m in ("swat", "mamba")] == ["90.00§", "40.00§"]  # 3 vs 300 examples: no winner
    assert [lines[m][arc] for m in ("swat", "mamba")] == ["30.00§", "**40.00**§"]  # one limit: compared
    note = next(n for n in table.notes if n.startswith("§"))
    assert "first 3, 300 examples" in note and "Bold compares like with like" in note
    alike = build("main", [r for r in rows if r.task == "arc_easy"])
    assert not any("like with like" in n for n in alike.notes)  # nothing was set aside: nothing to explain
    every = [(c.task, c.metric) for c in ACC_COLUMNS]
    averages = groups(build("main", [row("swat", t, 0.9, 3, m) for t, m in every]
                            + [row("mamba", t, 0.5, None, m) for t, m in every]
                            + [row("gla", t, 0.4, None, m) for t, m in every]))["s"]
    assert [averages[m][-1] for m in ("swat", "mamba", "gla")] == ["90.00§", "**50.00**", "40.00"]


def test_csv_carries_plain_numbers():
    """Percentages came out as 28.999999999999996 and sizes as 340M."""
    rows = [acc("swat", "s", "piqa", 0.29, stderr=0.0123, params=340_000_000, tokens_trained=15_000_000_000),
            acc("swat", "s", "wikitext", 28.999999999999996, metric="word_perplexity", params=340_000_000,
                tokens_trained=15_000_000_000)]
    table = build("main", rows)
    line = next(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert line["Params"] == "340000000" and line["Tokens"] == "15000000000"
    assert line["PIQA acc"] == "29.0" and line["PIQA acc stderr"] == "1.23"
    assert line["Wiki. word ppl↓"] == "28.999999999999996"  # not a percentage: exactly as stored
    assert groups(table)["s"]["swat"][:2] == ["340M", "15B"]
    _, refs, _ = fixture(refs=[SWAT_T1])  # a difference: 21.05 - 41.08 read -20.029999999999998
    ours = [acc("transformer", "340m", "lambada_openai", 21.05, metric="perplexity")]
    delta = [ln for ln in render(build("main", ours, refs), "csv").splitlines() if ",Δ vs Transformer++" in ln][0]
    assert all(len(cell) < 12 for cell in delta.split(",")[4:] if cell), delta


def test_a_file_that_is_not_rows_is_refused_in_one_line(tmp_path, capsys):
    """README.md as --run printed a warning per line, then 'nothing for the main table'."""
    from harness.cli import main
    assert main(["tables", "--run", str(ROOT / "README.md")]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1
    assert printed.err.startswith(f"error: {ROOT / 'README.md'} is not a rows file: none of its lines is a result row")
    rows_run(tmp_path / "speed" / "gpu" / "s", [speed("swat", "H100", 1e5)])
    (tmp_path / "speed" / "junk" / "s").mkdir(parents=True)
    (tmp_path / "speed" / "junk" / "s" / "rows.jsonl").write_text("not rows\n")
    with pytest.raises(ResultsError, match="try --run speed/gpu/s"):  # the hint passes over what is not rows
        build("speed", [], results_dir=tmp_path)


def test_a_rows_line_that_is_not_an_object_is_named_by_its_json():
    from harness.results.store import row_problem
    assert row_problem(None) == "JSON null, not an object"
    assert row_problem([1, "a"]) == 'JSON [1, "a"], not an object'


def test_csv_carries_the_limit_a_value_was_scored_under():
    """CSV dropped the §: a score on the first 2 examples read like a full evaluation."""
    from harness.results.render import to_csv
    from harness.results.tables import main_table
    rows = [acc("swat", "s", "piqa", 0.6, run="full"), acc("swat", "s", "piqa", 0.7, run="quick", extra={"limit": 2}),
            acc("swat", "s", "arc_easy", 0.3, run="full")]
    lines = to_csv(main_table(rows)).splitlines()
    header = lines[0].split(",")
    assert "PIQA acc limit" in header and "ARC-e acc limit" not in header
    limit_of = {ln.split(",")[1]: ln.split(",")[header.index("PIQA acc limit")] for ln in lines[1:]}
    assert limit_of == {"swat [full]": "", "swat [quick]": "2"}


def test_sweep_tables_mark_a_limited_cell_as_the_main_table_does():
    """`--limit` cut the length rows (their `limit` key), yet the length and retrieval tables showed
    them as full evaluations: no §, no footnote, and bold over full ones."""
    def ppl(model, context, value, **extra):
        return acc(model, "s", "length", value, metric="ppl", extra={"context": context, **extra})
    rows = [ppl("swat", 128, 20.0, limit=2), ppl("swat", 256, 21.0, limit=2), ppl("mamba", 128, 30.0),
            ppl("mamba", 256, 19.0, limit=2), ppl("transformer", 128, 25.0)]
    table = build("length", rows)
    assert groups(table)["s · token ppl"] == {"mamba": ["30.00", "**19.00**§"], "swat": ["20.00§", "21.00§"],
                                              "transformer": ["**25.00**", ""]}
    note = next(n for n in table.notes if n.startswith("§"))
    assert "first 2 examples only (--limit)" in note and "Bold compares like with like" in note
    limit_of = {line["Model"]: line["128 limit"] for line in csv.DictReader(io.StringIO(render(table, "csv")))}
    assert limit_of == {"mamba": "", "swat": "2", "transformer": ""}
    passkey = [acc(m, "s", "passkey", 0.5, extra={"context": 256, "depth": 0.5, **extra})
               for m, extra in (("swat", {"limit": 3}), ("mamba", {}))]
    retrieval = build("retrieval", passkey)
    assert list(groups(retrieval).values()) == [{"mamba depth=0.5": ["50.0"], "swat depth=0.5": ["50.0§"]}]
    assert any(n.startswith("§ evaluated on the first 3 examples") for n in retrieval.notes)
    assert not any("§" in n for n in build("length", [r for r in rows if "limit" not in r.extra]).notes)


def test_wikitext_2_v1_has_a_column_of_its_own_that_the_papers_rows_leave_blank(tmp_path, capsys):
    """The offline mirror's WikiText is the tokenized v1 text: its rows were in no table (only under
    `harness run`'s Other results). Its word perplexity is not the paper's on the raw text, so it gets
    a column and a footnote of its own, not the paper's Wiki. column."""
    from harness.cli import main, show_tables
    v1 = [acc(m, "340m", "wikitext_2_v1", v, metric="word_perplexity", extra={"paper_metric": True})
          for m, v in (("swat", 41.5), ("transformer", 39.25))]
    run = rows_run(tmp_path / "v1", v1 + [acc("swat", "340m", "piqa", 0.6)])
    assert main(["tables", "--run", str(run), "--reference", str(SWAT_T1)]) == 0
    out = capsys.readouterr().out
    lines = md_rows(out)
    v1_col, wiki = lines["Model"].index("Wiki-2 v1 word ppl↓"), lines["Model"].index("Wiki. word ppl↓")
    assert lines["transformer"][v1_col] == "**39.25**" and lines["swat"][v1_col] == "41.50"
    assert lines["swat"][wiki] == ""
    papers = {name: cells for name, cells in lines.items() if name.endswith("[1]")}
    assert "Transformer++ [1]" in papers and all(cells[v1_col] == "" for cells in papers.values())
    assert all(cells[wiki] for name, cells in papers.items() if not name.startswith("Δ"))
    assert "Wiki-2 v1: word perplexity on WikiText-2 v1" in out and "not comparable with the paper's" in out
    assert "Wiki-2 v1" not in render(build("main", [acc("swat", "340m", "piqa", 0.6)]), "md")
    show_tables(v1, {})  # the end of `harness run`: in the table, and not again under Other results
    out = capsys.readouterr().out
    assert "| Wiki-2 v1 word ppl↓ |" in out and "Other results" not in out


def test_no_rows_at_all_says_so_and_what_the_main_table_needs():
    """It said `they hold: no rows` and asked for the commonsense tasks, though held-out loss alone makes a table."""
    from harness.results.tables import ResultsError
    with pytest.raises(ResultsError, match=r"^no rows to make the main table of; it needs any of the tasks smoke"):
        build("main", [])
    assert groups(build("main", [acc("swat", "s", "smoke", 4.1, metric="loss")]))


def test_the_ablation_table_leaves_the_retrieval_sweeps_to_their_own_table():
    """A passkey sweep (contexts x depths) filled one `passkey acc` cell with whichever of its points
    came last; the smoke columns, which the README puts after the settings, came last."""
    def passkey(variant, context, depth, value):
        return acc("swat", "tiny", "passkey", value, extra={"context": context, "depth": depth, **variant})
    rows = [row for variant in ({}, {"variant": "slopes=negative"})
            for row in [passkey(variant, 256, 0.0, 0.9), passkey(variant, 512, 1.0, 0.1),
                        acc("swat", "tiny", "smoke", 3.0, metric="loss", extra=variant),
                        acc("swat", "tiny", "piqa", 0.6, extra=variant)]]
    table = build("ablation", rows)
    assert table.header[8:] == ["smoke loss", "PIQA acc"]
    assert not any("passkey" in title for title in table.header)
    assert groups(build("retrieval", rows))["tiny · passkey acc · chance 0.0011%"]["swat depth=0"] == ["90.0", ""]


def test_bold_compares_values_as_printed():
    """Two peak memories that both read 58.85 were one bold, one not (58.8493 vs 58.8512 GB)."""
    rows = [acc(m, "s", "speed_train", v, metric="peak_mem_gb", extra={"seq_len": 2048})
            for m, v in (("sliding_softmax", 58.8493), ("transformer", 58.8512), ("swat", 58.87))]
    assert groups(build("speed", rows))["speed_train · peak_mem_gb · s"] == {
        "sliding_softmax": ["**58.85**"], "swat": ["58.87"], "transformer": ["**58.85**"]}
    tie = build("main", [acc(m, "s", "piqa", v) for m, v in (("swat", 0.60001), ("mamba", 0.59999))])
    piqa = tie.header.index("PIQA acc") - 1
    assert [cells[piqa] for cells in groups(tie)["s"].values()] == ["60.00", "60.00"]  # a tie of all: no winner


def test_sweep_bold_compares_the_lines_of_one_batch_depth_or_key_value_count():
    """Decode throughput at batch 64 was bold over every batch-1 line, which could never be; MQAR with
    4 pairs to recall over 64."""
    rows = [acc(m, "s", "speed_decode", v, metric="tokens_per_s", extra={"context": 1024, "batch": b})
            for m, b, v in (("swat", 1, 300.0), ("mamba", 1, 270.0), ("swat", 64, 12000.0), ("mamba", 64, 14000.0))]
    table = build("speed", rows)
    assert groups(table)["speed_decode · tokens_per_s · s"] == {
        "mamba b=1": ["270.0"], "mamba b=64": ["**14000**"], "swat b=1": ["**300.0**"], "swat b=64": ["12000"]}
    assert any(n.startswith("Bold compares the lines of one setting") for n in table.notes)
    mqar = [acc(m, "s", "mqar", v, extra={"context": 256, "num_kv": kv})
            for m, kv, v in (("swat", 4, 0.5), ("mamba", 4, 0.4), ("swat", 64, 0.1), ("mamba", 64, 0.2))]
    assert list(groups(build("retrieval", mqar)).values()) == [{
        "mamba kv=4": ["40.0"], "mamba kv=64": ["**20.0**"], "swat kv=4": ["**50.0**"], "swat kv=64": ["10.0"]}]
    assert not any(n.startswith("Bold compares the lines") for n in build("speed", rows[:2]).notes)


def test_a_small_retrieval_accuracy_shows_its_digits_not_a_zero():
    """MQAR recalled 1 of 4,096 values (0.024%, near the 0.037% of a guess), printed as 0.0: a zero."""
    rows = [acc(m, "s", "mqar", v, stderr=v, extra={"context": 256, "num_kv": 64})
            for m, v in (("swat", 0.000244140625), ("mamba", 0.0))]
    assert list(groups(build("retrieval", rows)).values()) == [{"mamba kv=64": ["0.0 ± 0.0"],
                                                                "swat kv=64": ["**0.024 ± 0.024**"]}]


def test_loss_curves_give_a_model_one_colour_and_a_run_one_line_style(tmp_path, monkeypatch):
    """Colours went by position: swat's seed-1 line took gla's colour, and its seed-0 line another.
    Where the runs outnumber the models (ablations of one model), the colours go by run."""
    from harness.results import plots
    drawn = {}

    def capture(fig, out_dir, name, header, lines):
        drawn.update({line.get_label(): (line.get_color(), line.get_linestyle()) for line in fig.axes[0].get_lines()})
        plots.pyplot().close(fig)
        return []
    monkeypatch.setattr(plots, "_write_plot", capture)
    records = [{"tokens": 1, "loss": 3.0}, {"tokens": 2, "loss": 2.0}]
    plots.loss_curves({("seed0", "swat"): records, ("seed0", "gla"): records, ("seed1", "swat"): records}, tmp_path)
    assert drawn["swat [seed0]"][0] == drawn["swat [seed1]"][0] != drawn["gla [seed0]"][0]
    assert drawn["swat [seed0]"][1] == drawn["gla [seed0]"][1] != drawn["swat [seed1]"][1]
    drawn.clear()  # ablation runs of one model: a colour per run
    plots.loss_curves({(run, "swat"): records for run in ("seed0", "abl-window-64", "abl-rope-false")}, tmp_path)
    assert len({colour for colour, _ in drawn.values()}) == 3


def test_a_length_plot_over_several_presets_has_a_panel_for_each(tmp_path, monkeypatch):
    """`harness tables --run scaling --table length --plots` drew the three sizes' 46 lines on one axis."""
    from harness.results import plots
    panels = []

    def capture(fig, out_dir, name, header, lines):
        panels.extend([line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
                      for ax in fig.axes)
        plots.pyplot().close(fig)
        return []
    monkeypatch.setattr(plots, "_write_plot", capture)
    rows = [acc(model, preset, "length", ppl, metric="ppl", params=params, extra={"context": context})
            for preset, params in (("s", 1000), ("m", 4000)) for model, ppl in (("swat", 30.0), ("mamba", 20.0))
            for context in (128, 256)]
    plots.ppl_vs_length(rows, tmp_path)
    assert [sorted(labels) for labels in panels] == [["mamba preset=s", "swat preset=s"],
                                                     ["mamba preset=m", "swat preset=m"]]
    panels.clear()
    plots.ppl_vs_length([r for r in rows if r.preset == "s"], tmp_path)
    assert len(panels) == 1
