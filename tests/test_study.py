"""Studies (harness study): the tiny study end to end through the CLI, resuming, learning-rate
choice, budgets, bad study files, the worker pool, and the report's tables and fits (CPU)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.results.store import Row, read_rows
from harness.study.report import (
    Results,
    exponent_error_note,
    flops_left_out,
    gaps_table,
    paired_table,
    scaling_points,
    scaling_table,
    t_critical,
    training_curve,
)
from harness.study.spec import choose_lrs, interpolated_optimum, load_study, plan, power_law, run_label, units

TINY = Path(__file__).resolve().parent / "fixtures" / "study" / "tiny.yaml"


def study_cli(tmp_path, *args, study=TINY):
    return cli.main(["study", str(study), "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
                     "--device", "cpu", *args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny study run once, in this process."""
    tmp = tmp_path_factory.mktemp("study")
    assert study_cli(tmp) == 0
    return tmp


def test_tiny_study_end_to_end(finished):
    out = finished / "results" / "tiny-study"
    rows = read_rows(out / "rows.jsonl")
    study = load_study(TINY)
    plan(study, lambda m: None)
    # sweep: 2 models x 2 lrs at size a (the final stage at a is the sweep's best run, not a new one);
    # final at b: 2 models x 2 seeds at each model's extrapolated (here: size a's best) lr
    runs = {(r.model, r.preset, r.extra["lr"], r.seed) for r in rows if r.task == "smoke"}
    assert len(runs) == 2 * 2 + 2 * 2
    lrs = json.loads((out / "lr_choice.json").read_text())
    for model in ("swat", "transformer"):
        swept = {r.extra["lr"]: r.value for r in rows if (r.model, r.preset, r.task, r.metric) == (model, "a", "smoke", "loss")
                 and "corpus_source" not in r.extra}
        assert lrs[model]["a"]["lr"] == min(swept, key=swept.get) and lrs[model]["a"]["how"] == "swept"
        assert lrs[model]["b"] == {"lr": lrs[model]["a"]["lr"], "how": "extrapolated", "edge": False}
        assert {r.seed for r in rows if (r.model, r.preset) == (model, "b")} == {0, 1}
    for r in rows:  # every row states its budget
        assert r.extra["tokens_per_param"] == 0.4 and r.extra["epochs"] > 0 and r.extra["non_embedding_params"] > 0
        assert r.tokens_trained == study.budgets[r.preset]["tokens"]
    main = (out / "main.md").read_text()
    assert "(n=2)" in main and "| swat |" in main and "| transformer |" in main
    sweep = (out / "lr_sweep.md").read_text()
    assert "lr 0.003" in sweep and "lr 0.01" in sweep
    for name in ("lr_sweep.png", "lr_sweep.csv", "paired.md", "gaps.md", "scaling.md", "loss_vs_params.png",
                 "loss_vs_compute.png", "training_curves.png", "status.md", "run.json"):
        assert (out / name).is_file(), name
    assert "swat | transformer | 2 |" in (out / "paired.md").read_text()
    info = json.loads((out / "run.json").read_text())
    assert info["study"]["name"] == "tiny-study" and info["budgets"]["b"]["tokens"] > info["budgets"]["a"]["tokens"]


def test_rerun_skips_finished_runs(finished, capsys, monkeypatch):
    from harness.evaluation import sources
    monkeypatch.setattr(sources, "train", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert study_cli(finished) == 0
    assert "study tiny-study: all 8 runs already done; tables and plots in" in capsys.readouterr().out


def test_seeds_differ_only_in_initialisation_and_order(finished):
    rows = read_rows(finished / "results" / "tiny-study" / "rows.jsonl")
    losses = {r.seed: r.value for r in rows if (r.model, r.preset, r.task, r.metric) == ("swat", "b", "smoke", "loss")}
    n = {r.seed: r.n for r in rows if (r.model, r.preset, r.task, r.metric) == ("swat", "b", "smoke", "loss")}
    assert losses[0] != losses[1] and n[0] == n[1]  # other weights, the same held-out tokens


def test_budget_beyond_max_epochs_is_refused(tmp_path, capsys):
    data = yaml.safe_load(TINY.read_text())
    data["tokens_per_param"] = 1000
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    assert study_cli(tmp_path, study=path) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "above max_epochs=4" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "tiny-study").exists()


@pytest.mark.parametrize("change, message", [
    ({"models": ["swat", "swatt"]}, "unknown model 'swatt'"),
    ({"sweep": {"sizes": ["z"], "lrs": [1e-3], "tasks": ["smoke"]}}, "sweep.sizes names `z`"),
    ({"sweep.lrs": [-1]}, "sweep.lrs[0] must be a positive number, got -1"),
    ({"sweep.extend_edges": -1}, "sweep.extend_edges must be an integer >= 0"),
    ({"sweep.window": 3}, "sweep.window must be 0 (the whole grid) or 2 to 2"),
    ({"colour": "blue"}, "unknown key `colour`"),
    ({"sizes": {"a": {"model": {"hidden_size": -4}}, "b": {}}}, "model.hidden_size must be positive"),
    ({"focus": ["mamba"]}, "focus names `mamba`"),
    # a value of the wrong type or range: one line naming the field, not a traceback
    ({"final.seeds": {"b": "x"}}, "final.seeds.b must be a non-empty list, e.g. [0, 1, 2], got 'x'"),
    ({"final.seeds": {"b": 5}}, "final.seeds.b must be a non-empty list"),
    ({"final.seeds": {"b": ["x"]}}, "final.seeds.b[0] must be a non-negative integer"),
    ({"final.seeds": {"b": [-1]}}, "final.seeds.b[0] must be a non-negative integer (a seed), got -1"),
    ({"final.seeds": {"b": [0.5]}}, "final.seeds.b[0] must be a non-negative integer"),
    ({"final.seeds": {"b": [True]}}, "final.seeds.b[0] must be a non-negative integer"),
    ({"final.seeds": {"b": [0, 0]}}, "final.seeds.b names 0 twice"),
    ({"final.seeds": {"c": [0]}}, "final.seeds names `c`, not one of final.sizes (a, b) or `default`"),
    ({"final.seeds": [0, 1]}, "final.seeds must be a mapping"),
    ({"sweep.seed": "x"}, "sweep.seed must be a non-negative integer"),
    ({"sweep.seed": -1}, "sweep.seed must be a non-negative integer"),
    ({"sweep.seed": True}, "sweep.seed must be a non-negative integer"),
    ({"sweep.extend_edges": 1.5}, "sweep.extend_edges must be an integer >= 0"),
    ({"sweep.window": "x"}, "sweep.window must be 0 (the whole grid)"),
    ({"warmup_fraction": "x"}, "warmup_fraction must be a fraction of the budget in [0, 1)"),
    ({"warmup_fraction": 1}, "warmup_fraction must be a fraction of the budget in [0, 1)"),
    ({"warmup_fraction": -0.1}, "warmup_fraction must be a fraction of the budget in [0, 1)"),
    ({"max_epochs": "abc"}, "max_epochs must be a positive number, got 'abc'"),
    ({"max_epochs": 0}, "max_epochs must be a positive number"),
    ({"max_epochs": float("inf")}, "max_epochs must be a positive number"),
    ({"reference_model": 5}, "reference_model must be a non-empty name"),
    ({"tokens_per_param": float("nan")}, "tokens_per_param must be a positive number, got nan"),
    ({"tokens_per_param": float("inf")}, "tokens_per_param must be a positive number, got inf"),
    ({"tokens_per_param": 0}, "tokens_per_param must be a positive number"),
    ({"tokens_per_param": True}, "tokens_per_param must be a positive number"),
    ({"sweep.lrs": [float("nan")]}, "sweep.lrs[0] must be a positive number, got nan"),
    ({"sweep.lrs": [1e-2, float("inf")]}, "sweep.lrs[1] must be a positive number, got inf"),
    ({"sweep.lrs": [1e-3, "1e-3"]}, "sweep.lrs names 0.001 twice"),
    # a string where a list is expected is refused, not read letter by letter
    ({"sweep.sizes": "ab"}, "sweep.sizes must be a non-empty list, e.g. [s, m], got 'ab'"),
    ({"sweep.lrs": "12"}, "sweep.lrs must be a non-empty list"),
    ({"sweep.tasks": "smoke"}, "sweep.tasks must be a non-empty list, e.g. [smoke], got 'smoke'"),
    ({"final.sizes": "ab"}, "final.sizes must be a non-empty list"),
    ({"final.tasks": "smoke"}, "final.tasks must be a non-empty list"),
    ({"final.seeds": {"b": "01"}}, "final.seeds.b must be a non-empty list"),
    ({"models": "swat"}, "models must be a non-empty list, e.g. [swat, transformer], got 'swat'"),
    ({"models": ["swat", "swat"]}, "models names 'swat' twice"),
    ({"references": "unigram"}, "references must be a non-empty list, e.g. [unigram, bigram], got 'unigram'"),
    ({"focus": "swat"}, "focus must be a non-empty list, e.g. [swat], got 'swat'"),
    ({"references": ["swat"]}, "`swat` is in both models and references"),
    ({"focus": []}, "focus must be a non-empty list"),
    # names are folders
    ({"name": ""}, "name must be a non-empty name without / or \\, got ''"),
    ({"name": "a/b"}, "name must be a non-empty name without /"),
    ({"name": ".."}, "name must be a non-empty name without /"),
    ({"name": 5}, "name must be a non-empty name without /"),
    ({"preset": ["tiny"]}, "preset must be a non-empty name"),
    ({"sizes": {"a/b": {}}}, "each name under sizes must be a non-empty name"),
    ({"sizes": {"a": [1]}}, "sizes.a must be a mapping"),
    ({"model": [1]}, "model must be a mapping"),
    ({"sweep.seeds": 0}, "unknown key `sweep.seeds`; did you mean `sweep.seed`?; known:"),
    # a typo'd top-level key gets the hint nested keys get; an unknown model names the file it is in
    ({"tokens_per_parm": 20}, "unknown key `tokens_per_parm`; did you mean `tokens_per_param`?"),
    ({"models": ["swta"], "focus": ["swta"]}, "bad.yaml: unknown model"),
    # what the study sets for every run, given in the base config or a size, would be overridden unseen
    ({"train.tokens": 100}, "train.tokens is set by the study for every run: remove it and give tokens_per_param"),
    ({"train.seed": 3}, "train.seed is set by the study for every run: remove it and give sweep.seed and final.seeds"),
    ({"sizes": {"a": {"train": {"lr": 0.1}}, "b": {}}}, "sizes.a.train.lr is set by the study for every run"),
    ({"sizes": {"a": {}, "b": {"train": {"warmup_tokens": 0}}}}, "sizes.b.train.warmup_tokens is set by the study"),
    # roles: a trained model is no reference, a count-based one sets no budget; sizes smallest first
    ({"models": ["swat"], "focus": ["swat"], "references": ["transformer"]},
     "references names `transformer`, which is trained, not fitted by counting"),
    ({"reference_model": "unigram"}, "reference_model `unigram` has no non-embedding parameters"),
    ({"sizes": {"a": {"model": {"hidden_size": 32}}, "b": {"model": {"hidden_size": 16}}}},
     "sizes must be listed smallest first: `b`"),
])
def test_bad_study_file_is_one_line(tmp_path, capsys, change, message):
    """Refused before any work: one line naming the field, nothing written. A dotted key in change
    replaces a key of a section (`sweep.seed`), a plain one a whole top-level key."""
    data = yaml.safe_load(TINY.read_text())
    for key, value in change.items():
        *section, last = key.split(".")
        (data[section[0]] if section else data)[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert study_cli(tmp_path, study=path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def sweep_row(model, size, lr, loss, seed=0):
    return Row("s", model, size, "smoke", "loss", loss, seed=seed, extra={"lr": lr})


def copy_losing_rows(finished, tmp_path, lost) -> Path:
    """The finished tiny study copied to tmp_path without the rows for which lost(row) is true; its rows file."""
    shutil.copytree(finished / "results", tmp_path / "results")
    shutil.copytree(finished / "runs", tmp_path / "runs")
    path = tmp_path / "results" / "tiny-study" / "rows.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if not lost(r)))
    return path


def test_stage_sizes_are_read_smallest_first_however_listed(finished, tmp_path):
    """final.sizes listed largest first: the gaps' change is still the largest size's gap minus the
    smallest's, and the loss at the largest size is the largest size's (not the last one listed)."""
    copy_losing_rows(finished, tmp_path, lambda r: False)
    path = changed_tiny(tmp_path, "final: {sizes: [a, b]", "final: {sizes: [b, a]")
    assert load_study(path).final_sizes == ["a", "b"]
    assert study_cli(tmp_path, "--report-only", study=path) == 0
    out = tmp_path / "results" / "tiny-study"
    assert (out / "gaps.md").read_text() == (finished / "results" / "tiny-study" / "gaps.md").read_text()
    assert (out / "scaling.md").read_text() == (finished / "results" / "tiny-study" / "scaling.md").read_text()


def test_scaling_names_the_size_of_a_loss_not_at_the_largest(finished, tmp_path):
    """A model not yet scored at the largest size: its loss at its largest size says which size that is,
    where it would otherwise read as a loss at the largest size beside the others'."""
    copy_losing_rows(finished, tmp_path, lambda r: (r["model"], r["preset"]) == ("transformer", "b"))
    assert study_cli(tmp_path, "--report-only") == 0
    lines = (tmp_path / "results" / "tiny-study" / "scaling.md").read_text().splitlines()
    assert next(ln for ln in lines if ln.startswith("| transformer |")).endswith(" (at a) |")
    assert not next(ln for ln in lines if ln.startswith("| swat |")).endswith(" (at a) |")


def test_training_curves_draw_a_size_whose_seeds_leave_out_the_sweeps(finished, tmp_path):
    """Final seeds 1 at b, with no run of the sweep's seed 0 there: b's curves are its seed-1 runs'."""
    copy_losing_rows(finished, tmp_path, lambda r: r["preset"] == "b" and r["seed"] == 0)
    for log in (tmp_path / "results" / "tiny-study" / "train" / "b").glob("*-seed0_*"):
        log.unlink()
    path = changed_tiny(tmp_path, "seeds: {b: [0, 1]}", "seeds: {b: [1]}")
    assert study_cli(tmp_path, "--report-only", study=path) == 0
    curves = (tmp_path / "results" / "tiny-study" / "training_curves.csv").read_text().splitlines()
    assert {line.split(",")[:2][1] for line in curves if line.startswith("b,")} == {"swat", "transformer"}


def test_start_new_for_zero_starts_no_training(finished, tmp_path):
    """--start-new-for 0 runs what has a checkpoint (here: a trained run whose rows were lost) and
    starts no training (a run without one)."""
    path = copy_losing_rows(finished, tmp_path, lambda r: r["preset"] == "a" and r.get("lr") == 3e-3)
    shutil.rmtree(tmp_path / "runs" / "tiny-study" / "a" / "transformer" / "lr0.003-seed0" / "checkpoint")
    assert study_cli(tmp_path, "--start-new-for", "0") == 0
    rows = read_rows(path)
    back = {(r.model, r.extra["lr"]) for r in rows if r.preset == "a" and r.task == "smoke"}
    assert ("swat", 3e-3) in back and ("transformer", 3e-3) not in back
    assert not (tmp_path / "runs" / "tiny-study" / "a" / "transformer" / "lr0.003-seed0" / "checkpoint").exists()


@pytest.mark.parametrize("slow", [False, True])
def test_a_last_call_starts_no_training_the_past_runs_say_cannot_finish(finished, tmp_path, capsys, slow):
    """With --start-new-for and --time-limit, a fresh training starts only if the kept summaries of its
    size's finished runs (tokens over tokens/s) and its tasks' past seconds fit the time left; a run
    with a checkpoint always goes on."""
    path = copy_losing_rows(finished, tmp_path, lambda r: r["preset"] == "a" and r.get("lr") == 3e-3)
    shutil.rmtree(tmp_path / "runs" / "tiny-study" / "a" / "transformer" / "lr0.003-seed0" / "checkpoint")
    if slow:  # as if the size's runs had trained at 1 token/s
        for kept in (tmp_path / "results" / "tiny-study" / "train" / "a").glob("*_meta.json"):
            kept.write_text(json.dumps({**json.loads(kept.read_text()), "tokens_per_s": 1.0}))
    capsys.readouterr()
    assert study_cli(tmp_path, "--start-new-for", "600", "--time-limit", "600") == 0
    out = capsys.readouterr().out
    back = {(r.model, r.extra["lr"]) for r in read_rows(path) if r.preset == "a" and r.task == "smoke"}
    assert ("swat", 3e-3) in back  # its checkpoint was there
    assert (("transformer", 3e-3) in back) is not slow
    assert ("not starting a/transformer/lr0.003-seed0: the study's runs of its size took about" in out) is slow


@pytest.mark.parametrize("flag, started_sizes", [((), "ab"), (("--largest-first",), "ba"), (("--sizes", "a"), "a"),
                                                 (("--sizes", "b", "--largest-first"), "b")])
def test_largest_first_starts_the_largest_size(finished, tmp_path, capsys, flag, started_sizes):
    """With runs left at both sizes, the default order is size by size from the smallest,
    --largest-first starts the largest size's first, and --sizes runs only the sizes it names."""
    swept = {r.extra["lr"]: r.value for r in read_rows(finished / "results" / "tiny-study" / "rows.jsonl")
             if (r.model, r.preset, r.metric) == ("transformer", "a", "loss") and "corpus_source" not in r.extra}
    worse = max(swept, key=swept.get)  # rerun, it leaves the best rate, hence b's, as it was
    lrs = json.loads((finished / "results" / "tiny-study" / "lr_choice.json").read_text())
    copy_losing_rows(finished, tmp_path, lambda r: r["seed"] == 0 and (r["model"], r["preset"], r["lr"]) in (
        ("transformer", "a", worse), ("swat", "b", lrs["swat"]["b"]["lr"])))
    capsys.readouterr()
    assert study_cli(tmp_path, *flag) == 0
    started = [ln.split()[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("run ")]
    assert "".join(key.split("/")[0] for key in started) == started_sizes


def test_sizes_the_study_lacks_are_one_line(tmp_path, capsys):
    assert study_cli(tmp_path, "--sizes", "a,z") == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --sizes names z; the study's sizes are a, b", err
    assert not (tmp_path / "results").exists()


def test_lr_choice_takes_the_best_and_extrapolates_the_power_law():
    study = load_study(TINY)
    study.sweep_sizes, study.final_sizes = ["a", "b"], ["a", "b", "c"]
    study.sizes["c"] = study.sizes["b"]
    study.final_seeds = {"a": [0], "b": [0], "c": [0]}
    study.budgets = {"a": {"budget_params": 1e6}, "b": {"budget_params": 4e6}, "c": {"budget_params": 16e6}}
    study.lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    # symmetric in log lr around each best, so that the interpolated optima are the grid's best
    rows = [sweep_row("swat", "a", lr, loss) for lr, loss in zip(study.lrs, (3.0, 2.9, 2.8, 2.9))]
    rows += [sweep_row("swat", "b", lr, loss) for lr, loss in zip(study.lrs, (2.6, 2.5, 2.6, 2.7))]
    rows += [sweep_row("transformer", "a", lr, loss) for lr, loss in zip(study.lrs, (3.0, 2.9, 2.8, 2.7))]
    choice = choose_lrs(rows, study)
    assert choice["swat"]["a"]["lr"] == choice["swat"]["a"]["optimum"] == 4e-3
    assert choice["swat"]["b"]["lr"] == choice["swat"]["b"]["optimum"] == 2e-3
    # 4e-3 at 1M, 2e-3 at 4M: lr ~ N^-0.5, so 1e-3 at 16M
    assert choice["swat"]["c"] == {"lr": 1e-3, "how": "extrapolated", "edge": False}
    assert choice["transformer"]["a"]["edge"] and "b" not in choice["transformer"]  # b not swept yet
    defined, waiting = units(study, rows)
    assert waiting == 1  # transformer's final run at c waits for b's sweep (at b it is one of the sweep's runs)
    assert all(u.lr is not None for u in defined)


def test_interpolated_optimum_is_the_vertex_in_log_lr_and_the_best_at_an_edge():
    def bowl(lr, at=3e-3):
        return 3.0 + (math.log(lr) - math.log(at)) ** 2
    grid = [1e-3, 2e-3, 4e-3, 8e-3]
    assert math.isclose(interpolated_optimum({lr: bowl(lr) for lr in grid}), 3e-3)
    # nearly tied neighbours put it between them, where the grid's best would sit a factor 2 away
    assert 5.5e-3 < interpolated_optimum({4e-3: 4.00, 8e-3: 3.90, 1.6e-2: 3.901, 3.2e-2: 4.2}) < 1.2e-2
    assert interpolated_optimum({1e-3: 3.0, 2e-3: 3.5}) == 1e-3
    assert interpolated_optimum({1e-3: 3.5, 2e-3: 3.0}) == 2e-3
    assert interpolated_optimum({1e-3: 3.0, 2e-3: 3.0, 4e-3: 3.0}) == 1e-3


def test_power_law_fit_and_paired_t():
    fit = power_law([1e6, 4e6, 16e6], [3.0 * (1e6) ** -0.05, 3.0 * (4e6) ** -0.05, 3.0 * (16e6) ** -0.05])
    assert math.isclose(fit["b"], -0.05, rel_tol=1e-9) and fit["b_se"] < 1e-9 and math.isclose(fit["A"], 3.0)
    assert power_law([1e6, 4e6], [3.0, 2.9])["b_se"] is None
    assert t_critical(2) == 4.303 and t_critical(11) == 2.201  # 1.96 from 11 on called differences too easily
    assert t_critical(31) == pytest.approx(2.0395, abs=1e-4) and t_critical(50) == pytest.approx(2.0086, abs=1e-4)
    assert t_critical(10 ** 6) == pytest.approx(1.96, abs=1e-4)

    class Res:  # three seeds where swat is better by 0.1 +- 0.01: resolved
        study = load_study(TINY)
        study.final_sizes, study.final_seeds = ["b"], {"b": [0, 1, 2]}

        @staticmethod
        def values(model, size, task, metric, source=None):
            return {0: 2.0, 1: 2.1, 2: 2.05} if model == "transformer" else {0: 1.9, 1: 2.01, 2: 1.94}
    text = "\n".join(str(c.text) for _, lines in paired_table(Res()).groups for line in lines for c in line)
    assert "swat better" in text


def test_gaps_follow_each_focus_model_across_sizes_over_the_seeds_both_have():
    class Res:  # swat 0.3 behind at a (one seed), 0.1 +- 0.02 behind at b (seeds 0, 1; transformer has 2 too)
        study = load_study(TINY)
        study.final_sizes, study.focus = ["a", "b"], ["swat"]
        losses = {("swat", "a"): {0: 3.3}, ("transformer", "a"): {0: 3.0},
                  ("swat", "b"): {0: 2.1, 1: 2.12}, ("transformer", "b"): {0: 2.0, 1: 2.0, 2: 1.9}}

        def models(self):
            return ["swat", "transformer"]

        def values(self, model, size, task, metric, source=None):
            return self.losses[(model, size)]
    (title, lines), = gaps_table(Res()).groups
    assert title == "swat − other" and len(lines) == 1
    other, at_a, at_b, change = lines[0]
    assert other.text == "transformer" and math.isclose(at_a.value, 0.3) and at_a.stderr is None
    assert math.isclose(at_b.value, 0.11) and math.isclose(at_b.stderr, 0.02 / math.sqrt(2)) and at_b.suffix == " (n=2)"
    assert math.isclose(change.value, -0.19)  # the gap shrinks from a to b


def test_training_curve_keeps_the_resumed_segment(tmp_path):
    """A run cut at step 3 and resumed from its checkpoint at step 2 logs step 3 twice: the curve
    keeps the second, which the run went on from."""
    import gzip
    records = [{"run": "swat-a", "start_step": 0}, {"step": 1, "tokens": 10, "loss": 5.0},
               {"step": 2, "tokens": 20, "loss": 4.0}, {"step": 3, "tokens": 30, "loss": 3.9},
               {"run": "swat-a", "start_step": 2}, {"step": 3, "tokens": 30, "loss": 3.8},
               {"step": 4, "tokens": 40, "loss": 3.5}]
    path = tmp_path / "swat-lr0.01-seed0_train_log.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in records).encode()))
    assert training_curve(path) == {1: (10, 5.0), 2: (20, 4.0), 3: (30, 3.8), 4: (40, 3.5)}


def test_the_scaling_study_matches_every_model_to_the_reference_at_every_size():
    """Within 2% of the reference Transformer's parameters at each of the committed study's sizes
    (built on the meta device: no weights), as the scaling README states."""
    from harness.model.build import matched_config, params_of
    from harness.registry import MissingExtraError
    study = load_study(Path(__file__).resolve().parent.parent / "results" / "scaling" / "study.yaml")
    checked = set()
    for size in study.sizes:
        cfg = study.config(size, 0).model
        reference = params_of(study.reference_model, cfg)
        for model in study.models:
            try:
                count = params_of(model, matched_config(model, cfg))
            except MissingExtraError:  # the fla models without flash-linear-attention installed
                continue
            assert abs(count - reference) / reference < 0.02, (size, model, count, reference)
            checked.add(model)
    assert {"swat", "transformer", "mamba", "mamba2"} <= checked


def test_worker_pool_runs_units_in_processes(tmp_path, monkeypatch):
    """Two workers; the final stage's extra task (from a plugin the workers load too) runs on each
    model's best sweep run once the sweep has chosen it, and on no other. The study file edited
    once the pool has read it (a researcher preparing the next call) changes none of this call's runs."""
    from harness.config import load_yaml
    from harness.study import spec
    data = load_yaml(TINY.read_text())  # as the study reads it: 3e-3 is a number
    # sizes named against the alphabet (z before b): the workers must read them in the file's order
    data["sizes"] = {"z": data["sizes"]["a"], "b": data["sizes"]["b"]}
    data["sweep"]["sizes"] = ["z"]
    data["final"] = {"sizes": ["z"], "tasks": ["smoke", "probe"]}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    real_load = spec.load_study

    def load_then_edit(*args):
        study = real_load(*args)
        path.write_text(yaml.safe_dump({**data, "tokens_per_param": 0.8}, sort_keys=False))
        return study
    monkeypatch.setattr(spec, "load_study", load_then_edit)
    assert study_cli(tmp_path, "--jobs", "2", "--plugin", str(TINY.parent / "probe_task.py"), study=path) == 0
    rows = read_rows(tmp_path / "results" / "tiny-study" / "rows.jsonl")
    assert {r.extra["tokens_per_param"] for r in rows} == {0.4}
    assert json.loads((tmp_path / "results" / "tiny-study" / "run.json").read_text())["study"] == data
    assert {(r.model, r.extra["lr"]) for r in rows if r.task == "smoke"} == {
        (m, lr) for m in ("swat", "transformer") for lr in (3e-3, 1e-2)}
    best = json.loads((tmp_path / "results" / "tiny-study" / "lr_choice.json").read_text())
    assert {(r.model, r.extra["lr"]) for r in rows if r.task == "probe"} == {
        (m, best[m]["z"]["lr"]) for m in ("swat", "transformer")}
    logs = sorted(p.name for p in (tmp_path / "runs" / "tiny-study" / "logs").iterdir())
    assert logs == sorted(f"z_{m}_lr{lr}-seed0.log" for m in ("swat", "transformer") for lr in ("0.003", "0.01"))


def test_time_limit_stops_before_starting(tmp_path, capsys):
    assert study_cli(tmp_path, "--time-limit", "0") == 0
    out = capsys.readouterr().out
    assert "0 runs done" in out and not (tmp_path / "runs" / "tiny-study" / "a").exists()
    assert "4 not reached (--time-limit)" in out  # the sweep's four; the final runs wait for its rates


def test_workers_past_the_deadline_get_one_sigterm_then_a_sigkill(tmp_path, monkeypatch):
    """A worker that has finished its unit and is shutting down has the default SIGTERM action
    again: a second SIGTERM would kill it and its run would read as failed."""
    import subprocess
    import sys
    import time

    from harness.study import runner
    count = tmp_path / "count"
    child = ("import signal, sys, time\n"
             "n = []\n"
             "signal.signal(signal.SIGTERM, lambda *_: n.append(1))\n"
             "print('ready', flush=True)\n"
             "deadline = time.time() + 5\n"
             "while time.time() < deadline:\n"
             "    time.sleep(0.05)\n"
             f"    open({str(count)!r}, 'w').write(str(len(n)))\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    signalled = {}
    for _ in range(5):
        runner.stop_workers({"a/m/lr1-seed0": proc}, signalled)
        time.sleep(0.1)
    time.sleep(0.3)
    assert count.read_text() == "1" and proc.poll() is None
    monkeypatch.setattr(runner, "KILL_GRACE_S", 0)
    runner.stop_workers({"a/m/lr1-seed0": proc}, signalled)
    assert proc.wait(timeout=10) == -9
    assert runner.worker_status(proc.returncode, signalled=True) == "stopped"
    assert runner.worker_status(-9, signalled=False) == "failed"  # e.g. the kernel's OOM killer
    assert runner.worker_status(runner.STOPPED_EXIT, signalled=False) == "stopped"
    assert runner.worker_status(1, signalled=True) == "failed"
    # signalled before its own handler was set: the CLI ends it as an interrupt, which is a stop
    assert runner.worker_status(runner.INTERRUPTED_EXIT, signalled=True) == "stopped"
    assert runner.worker_status(runner.INTERRUPTED_EXIT, signalled=False) == "failed"


def test_a_workers_end_is_explained_by_what_it_wrote_in_this_start(tmp_path):
    """A unit's log gathers all its starts: an earlier start's last line is not this one's reason,
    and a worker killed (after the stop signal, or unasked) is said to be killed, whatever it printed last."""
    from harness.study import runner
    log = tmp_path / "m_swat_lr1-seed0.log"
    log.write_text("note: an earlier start's warning\nm/swat: stopped at step 9 of 20 as asked\n")
    since = log.stat().st_size
    assert runner.end_reason(1, False, str(log), since) == "(no output)"
    with open(log, "a") as f:
        f.write("note: a warning of this start\nerror: this start's own failure, one whole line\n\n")
    assert runner.end_reason(1, False, str(log), since) == "error: this start's own failure, one whole line"
    # killed unasked it wrote no reason (the kernel's OOM killer ends a process so): its last line is not one
    assert runner.end_reason(-9, False, str(log), since).startswith("killed (SIGKILL), most likely by the kernel "
                                                                    "for want of host memory; run fewer side by side")
    assert runner.end_reason(-9, True, str(log), since).startswith(f"killed {runner.KILL_GRACE_S} s after the stop")


def test_console_messages_stay_one_line_in_a_log_file():
    """A worker's log is read back a line at a time (end_reason): rich must not wrap a long message."""
    message = "m/swat: stopped at step 766 of 858 as asked; the checkpoint in " + "/x" * 60 + " resumes there"
    for console in (cli.console, cli.err_console):
        with console.capture() as captured:
            console.print(message, highlight=False)
        assert captured.get() == message + "\n"


def test_a_stop_asked_during_the_tasks_ends_the_run_after_the_task_in_flight(tmp_path, monkeypatch):
    """The time limit reached a worker in its evaluation tasks: it ran every task left (the last
    a long-context sweep) until it was killed, and a device call overran its limit waiting."""
    from harness.study import runner
    from harness.training.outcome import TrainingStopped
    data = yaml.safe_load(TINY.read_text())
    data["sweep"]["tasks"] = ["smoke", "mqar"]
    path = tmp_path / "two-tasks.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    plan(study, lambda m: None)
    unit = units(study, [])[0][0]
    ran = []
    monkeypatch.setattr(runner, "run_tasks", lambda model, tok, ctx, tasks, existing, *a: ran.extend(tasks) or existing)
    with pytest.raises(TrainingStopped, match="stopped before mqar"):
        runner.run_unit(study, unit, tmp_path / "results", tmp_path / "runs", "cpu", lambda m: None,
                        should_stop=lambda: bool(ran))  # asked once the first task has run
    assert [t.name for t in ran] == ["smoke"]


def test_a_worker_squeezed_out_of_memory_runs_again_with_fewer_beside_it(tmp_path, monkeypatch):
    """A worker squeezed out of GPU memory by other processes (exit 75) hands its unit back, and no
    more run side by side than were running beside it; one squeezed at every start fails in the end."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from harness.memory import SQUEEZED_EXIT
    from harness.study import runner
    tries = tmp_path / "tries"
    tries.mkdir()
    # each worker: a 'squeezed' unit is squeezed at its first start, an 'always' one at every start,
    # every other start takes 1 s
    child = ("import pathlib, sys, time\n"
             "key, tries = sys.argv[1], pathlib.Path(sys.argv[2])\n"
             "mark = tries / key.replace('/', '_')\n"
             "first = not mark.exists()\n"
             "mark.touch()\n"
             f"sys.exit({SQUEEZED_EXIT}) if (first and 'squeezed' in key) or 'always' in key else time.sleep(1)\n")
    real_popen = subprocess.Popen
    monkeypatch.setattr(runner.subprocess, "Popen", lambda cmd, **kw: real_popen(
        [sys.executable, "-c", child, cmd[cmd.index("--unit") + 1], str(tries)], **kw))
    study = SimpleNamespace(path=tmp_path / "study.yaml", name="t", data={})

    def pool(keys, jobs):
        queue, lines = list(keys), []

        def next_unit(running):
            return SimpleNamespace(key=queue.pop(0)) if queue else None
        statuses = list(runner._pool(study, next_unit, tmp_path, tmp_path / "runs", "cpu", jobs, None,
                                     lines.append, requeue=queue.append))
        return statuses, lines

    statuses, lines = pool(["a/squeezed/lr1-seed0", "a/m/lr1-seed0", "a/m/lr2-seed0", "a/m/lr3-seed0"], jobs=3)
    assert sorted(statuses) == ["done"] * 4 + ["squeezed"]
    at = next(i for i, line in enumerate(lines) if "queued again" in line)
    assert lines[at] == "squeezed out of GPU memory a/squeezed/lr1-seed0 beside 2 other run(s) of this study: " \
                        "queued again; at most 2 side by side from now on"
    assert [line for line in lines[:at] if line.startswith("start")][-1].endswith("(3 running)")
    later = [int(line.split("(")[1].split()[0]) for line in lines[at:] if line.startswith("start")]
    assert later and max(later) <= 2 and "start a/squeezed/lr1-seed0 " in " ".join(lines[at:])
    statuses, lines = pool(["b/always/lr1-seed0"], jobs=3)
    assert statuses == ["squeezed"] * (runner.SQUEEZED_TRIES - 1) + ["failed"]
    assert lines[-1].startswith("failed b/always/lr1-seed0")
    assert sum(line.startswith("start b/always") for line in lines) == runner.SQUEEZED_TRIES


def test_an_interrupted_pool_stops_its_workers_before_it_goes(tmp_path, monkeypatch):
    """Interrupted while its workers run, the pool SIGTERMs each and waits for it to checkpoint and
    exit: none trains on alone, beside the rerun the interruption message asks for."""
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from harness.study import runner
    child = ("import signal, sys, time\n"
             f"signal.signal(signal.SIGTERM, lambda *_: sys.exit({runner.STOPPED_EXIT}))\n"
             "time.sleep(60)\n")
    workers, waits, real_popen, real_sleep = [], [], subprocess.Popen, time.sleep

    def popen(cmd, **kw):
        workers.append(real_popen([sys.executable, "-c", child], **kw))
        return workers[-1]

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 3:  # the pool's third wait for a worker to end: Ctrl-C
            raise KeyboardInterrupt
        real_sleep(seconds)
    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    monkeypatch.setattr(runner.time, "sleep", sleep)
    queue, lines = ["a/m/lr1-seed0", "a/m/lr2-seed0", "a/m/lr3-seed0"], []
    with pytest.raises(KeyboardInterrupt):
        list(runner._pool(SimpleNamespace(path=tmp_path / "study.yaml", name="t", data={}),
                          lambda running: SimpleNamespace(key=queue.pop(0)) if queue else None,
                          tmp_path, tmp_path / "runs", "cpu", 2, None, lines.append))
    assert len(workers) == 2 and [w.poll() for w in workers] == [runner.STOPPED_EXIT] * 2
    assert lines[-1] == "stopping 2 run(s): each checkpoints first (interrupt again to kill them now)"


def test_long_context_tables_average_depths_within_a_seed_then_seeds():
    """Passkey: a seed's accuracy at a length is the mean over the key's depths; the cell is the
    mean +- std of those over the size's seeds; only the model's chosen learning rate counts."""
    from harness.study.report import LONG_CONTEXT, Results, long_context_table
    study = load_study(TINY)
    study.final_sizes, study.final_seeds = ["b"], {"b": [0, 1]}
    rows = [sweep_row("swat", "a", 3e-3, 3.0), sweep_row("swat", "a", 1e-2, 3.5)]  # a's sweep: 3e-3 is best
    study.sweep_sizes, study.budgets = ["a"], {"a": {"budget_params": 1e6}, "b": {"budget_params": 4e6}}

    def passkey(seed, depth, value, lr=3e-3):
        return Row("s", "swat", "b", "passkey", "acc", value, seed=seed,
                   extra={"lr": lr, "context": 1024, "depth": depth})
    rows += [passkey(0, 0.0, 1.0), passkey(0, 1.0, 0.0), passkey(1, 0.0, 1.0), passkey(1, 1.0, 1.0),
             passkey(0, 0.0, 0.0, lr=1e-2)]  # another learning rate: not the final run
    spec = next(s for s in LONG_CONTEXT if s[0] == "passkey")[1:]
    table = long_context_table(Results(study, rows), *spec)
    (label, lines), = table.groups
    cell = lines[0][1]
    assert label == "b" and table.header == ["Model", "1K"] and lines[0][0].text == "swat"
    assert math.isclose(cell.value, 75.0) and math.isclose(cell.stderr, math.sqrt(2) * 25) and "n=2" in cell.suffix


def test_sweep_goes_past_the_grid_edge_where_the_best_lies_there():
    study = load_study(TINY)
    study.sweep_sizes, study.final_sizes, study.final_seeds = ["a"], ["a"], {"a": [0]}
    study.budgets = {"a": {"budget_params": 1e6, "tokens": 2e7, "epochs": 0.5}}
    study.lrs, study.extend_edges = [1e-3, 2e-3, 4e-3], 2
    rows = [sweep_row("swat", "a", lr, loss) for lr, loss in zip(study.lrs, (3.0, 2.9, 2.8))]
    rows += [sweep_row("transformer", "a", lr, loss) for lr, loss in zip(study.lrs, (3.0, 2.8, 2.9))]
    keys = {u.key for u in units(study, rows)[0]}
    assert "a/swat/lr0.008-seed0" in keys and "a/transformer/lr0.008-seed0" not in keys
    choice = choose_lrs(rows, study)
    assert "a" not in choice.get("swat", {})  # waits for the step past the edge
    assert choice["transformer"]["a"] == {"lr": 2e-3, "how": "swept", "edge": False, "loss": 2.8, "optimum": 2.24e-3}
    rows.append(sweep_row("swat", "a", 8e-3, 2.7))  # better again: one more step, the last allowed
    assert "a/swat/lr0.016-seed0" in {u.key for u in units(study, rows)[0]}
    rows.append(sweep_row("swat", "a", 1.6e-2, 2.6))
    assert choose_lrs(rows, study)["swat"]["a"] == {"lr": 1.6e-2, "how": "swept", "edge": True, "loss": 2.6,
                                                    "optimum": 1.6e-2}  # an edge: the best itself
    assert "a/swat/lr0.032-seed0" not in {u.key for u in units(study, rows)[0]}
    from harness.study.report import Results, lr_sweep_table
    table = lr_sweep_table(Results(study, rows))
    assert table.header[1:-2] == ["lr 0.001", "lr 0.002", "lr 0.004", "lr 0.008", "lr 0.016"]
    assert any("past the study's grid" in note for note in table.notes)
    study.extend_edges = 0  # without extension the same rows choose the grid's edge
    assert choose_lrs(rows, study)["swat"]["a"] == {"lr": 4e-3, "how": "swept", "edge": True, "loss": 2.8,
                                                    "optimum": 4e-3}


def test_the_sweep_chooses_with_a_run_s_first_score_when_it_was_trained_again():
    """A sweep run trained again after its checkpoint was lost scores a held-out loss off its first by
    the noise of another device; its first (the FIRST_SCORE row) still chooses, so that the rates of the
    sizes after it, chosen and trained with it, stay the study's."""
    from harness.study.spec import FIRST_SCORE
    study = load_study(TINY)
    study.sweep_sizes, study.final_sizes, study.final_seeds = ["a"], ["a"], {"a": [0]}
    study.budgets = {"a": {"budget_params": 1e6, "tokens": 2e7, "epochs": 0.5}}
    study.lrs, study.extend_edges = [1e-3, 2e-3, 4e-3], 0
    rows = [sweep_row("swat", "a", lr, loss) for lr, loss in zip(study.lrs, (3.0, 2.80, 2.81))]
    first = sweep_row("swat", "a", 2e-3, 2.80)
    rows[1] = sweep_row("swat", "a", 2e-3, 2.82)  # trained again: now above 4e-3's
    assert choose_lrs(rows, study)["swat"]["a"]["lr"] == 4e-3
    rows.append(Row(first.run, first.model, first.preset, FIRST_SCORE, first.metric, first.value, seed=first.seed,
                    extra=first.extra))
    assert choose_lrs(rows, study)["swat"]["a"] == {"lr": 2e-3, "how": "swept", "edge": False, "loss": 2.80,
                                                    "optimum": choose_lrs(rows, study)["swat"]["a"]["optimum"]}


def test_a_window_sweeps_the_next_size_around_the_previous_best():
    """sweep.window: size b sweeps 4 rates around a's best (two below it, one above), waits until
    a's sweep has chosen, and steps on along the grid where its best lies at the window's edge."""
    study = load_study(TINY)
    study.sweep_sizes, study.final_sizes, study.final_seeds = ["a", "b"], ["b"], {"b": [0]}
    study.budgets = {s: {"budget_params": n, "tokens": 2e7, "epochs": 0.5} for s, n in (("a", 1e6), ("b", 4e6))}
    study.lrs, study.window, study.models = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2], 4, ["swat"]
    rows = [sweep_row("swat", "a", lr, loss) for lr, loss in zip(study.lrs[:5], (3.4, 3.3, 3.2, 3.1, 3.0))]
    keys, waiting = units(study, rows)
    assert not any(u.startswith("b/") for u in {u.key for u in keys}) and waiting == 4  # b's window (its final: one)
    rows.append(sweep_row("swat", "a", 3.2e-2, 3.05))  # a's best: 1.6e-2
    b_units = {u.key for u in units(study, rows)[0] if u.size == "b"}
    assert b_units == {f"b/swat/lr{lr:g}-seed0" for lr in (4e-3, 8e-3, 1.6e-2, 3.2e-2)}
    rows += [sweep_row("swat", "b", lr, loss) for lr, loss in ((4e-3, 2.5), (8e-3, 2.6), (1.6e-2, 2.7), (3.2e-2, 2.8))]
    assert "b/swat/lr0.002-seed0" in {u.key for u in units(study, rows)[0]}  # best at the window's low edge
    assert "b" not in choose_lrs(rows, study).get("swat", {})
    rows.append(sweep_row("swat", "b", 2e-3, 2.55))
    assert choose_lrs(rows, study)["swat"]["b"] == {"lr": 4e-3, "how": "swept", "edge": False, "loss": 2.5,
                                                    "optimum": 3.56e-3}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def changed_tiny(tmp_path, change: str, to: str) -> Path:
    path = tmp_path / "changed.yaml"
    path.write_text(TINY.read_text().replace(change, to))
    return path


@pytest.mark.parametrize("change, to, message", [
    ("tokens_per_param: 0.4", "tokens_per_param: 0.8", "with tokens_per_param 0.4, where the study now gives 0.8"),
    ("hidden_size: 16", "hidden_size: 24", "with budget_params 4144, where the study now gives 6984"),
    ("warmup_fraction: 0.1", "warmup_fraction: 0.2", "_meta.json records a/swat/lr0.003-seed0 trained with another"),
])
def test_a_changed_study_file_is_refused_before_anything_is_written(finished, tmp_path, capsys, change, to, message):
    """Rows (and kept configs) of the study as it was are not reused, nor reported, under its new budget."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    before = {p: p.read_bytes() for p in path.parent.rglob("*") if p.is_file()}
    study = changed_tiny(tmp_path, change, to)
    for flags in ((), ("--report-only",)):
        capsys.readouterr()
        assert study_cli(tmp_path, *flags, study=study) == 2
        err = one_error_line(capsys)
        assert message in err and "changed since; for a new study give it a new `name:`" in err, err
    assert {p: p.read_bytes() for p in path.parent.rglob("*") if p.is_file()} == before


def test_a_checkpoint_of_another_config_names_what_works_for_a_study(finished, tmp_path, capsys):
    """Rows gone, checkpoints kept: not `--run NEW_NAME`, which `harness study` lacks, nor `--force`, which
    keeps a changed study's refusal (the runs it keeps would mix two versions of the file)."""
    copy_losing_rows(finished, tmp_path, lambda r: True)
    shutil.rmtree(tmp_path / "results" / "tiny-study" / "train")
    capsys.readouterr()
    assert study_cli(tmp_path, study=changed_tiny(tmp_path, "warmup_fraction: 0.1", "warmup_fraction: 0.2")) == 2
    err = one_error_line(capsys)
    assert "runs/tiny-study/a/swat/lr0.003-seed0 holds swat trained with another config" in err
    assert "new `name:`" in err and "--run" not in err and "--force" not in err


def test_a_diverged_sweep_point_is_recorded_and_ruled_out(tmp_path, capsys, monkeypatch):
    """lr 1e6: a NaN gradient, recorded as diverged (the study goes on, a rerun skips it); lr 100: a
    held-out loss in the thousands, whose perplexity is beyond a float: no value (the loss row has it),
    not an OverflowError."""
    from harness.evaluation import sources
    from harness.study import runner
    data = yaml.safe_load(TINY.read_text())
    data.update(models=["swat"], focus=["swat"], final={"sizes": ["a"], "tasks": ["smoke"]})
    data["sweep"]["lrs"] = [3e-3, 100.0, 1e6]
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(data))
    assert study_cli(tmp_path, study=path) == 0
    assert "2 runs done, 1 diverged" in capsys.readouterr().out
    out = tmp_path / "results" / "tiny-study"
    rows = read_rows(out / "rows.jsonl")
    (diverged,) = [r for r in rows if r.metric == "diverged"]
    assert diverged.extra["lr"] == 1e6 and diverged.value is None and "is nan at step" in diverged.extra["diverged"]
    assert diverged.checkpoint is None  # no trained checkpoint was scored
    assert [r.value for r in rows if (r.metric, r.extra["lr"]) == ("ppl", 100.0)] == [None]
    assert json.loads((out / "lr_choice.json").read_text())["swat"]["a"]["lr"] == 3e-3
    assert "| diverged |" in (out / "lr_sweep.md").read_text()
    assert "`a/swat/lr1e+06-seed0`: gradient norm is nan" in (out / "status.md").read_text()
    monkeypatch.setattr(sources, "train", lambda *a, **k: pytest.fail("trained a finished run again"))
    assert study_cli(tmp_path, study=path) == 0
    assert "all 3 runs already done" in capsys.readouterr().out
    assert runner.worker_status(runner.DIVERGED_EXIT, signalled=False) == "diverged"  # a worker's, under --jobs


def test_diverged_rates_are_ruled_out_of_the_choice():
    from harness.study.report import sweep_progress
    study = load_study(TINY)
    study.lrs, study.final_sizes, study.final_seeds = [1e-3, 2e-3, 4e-3], ["a"], {"a": [0]}
    study.budgets = {"a": {"budget_params": 1e6}}

    def diverged(model, lr):
        return Row("s", model, "a", "smoke", "diverged", None, seed=0, extra={"lr": lr, "diverged": "loss is nan"})
    rows = [sweep_row("swat", "a", 1e-3, 3.0), sweep_row("swat", "a", 2e-3, 2.9), diverged("swat", 4e-3)]
    rows += [diverged("transformer", lr) for lr in study.lrs]
    choice = choose_lrs(rows, study)
    assert choice["swat"]["a"] == {"lr": 2e-3, "how": "swept", "edge": False, "loss": 2.9, "optimum": 2e-3}
    assert "transformer" not in choice  # nothing converged: no rate to choose
    assert sweep_progress(study.lrs, {lr: math.inf for lr in study.lrs}) == "all diverged"


def test_report_only_without_rows_writes_nothing(tmp_path, capsys):
    assert study_cli(tmp_path, "--report-only") == 2
    assert "no rows in" in one_error_line(capsys) and not (tmp_path / "results").exists()


def test_sizes_whose_sweep_is_left_out_wait_and_say_so(tmp_path, capsys):
    """--sizes b on a fresh study: b's learning rate comes from a's sweep, which --sizes leaves out."""
    assert study_cli(tmp_path, "--sizes", "b") == 2
    err = one_error_line(capsys)
    assert err == "error: the runs of --sizes b wait for the learning-rate sweep at a, which --sizes leaves out: " \
                  "run --sizes a first, or add a to --sizes", err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
    study = load_study(TINY)
    plan(study, lambda m: None)
    assert units(study, [], only_sizes={"b"}) == ([], 4)  # 2 models x 2 seeds at b; a's runs are not counted


def test_a_corrupt_rows_line_stops_the_study(finished, tmp_path, capsys):
    """A row cut mid-line: the study cannot tell which results it lost (another row of the same task
    would count the lost one's run as done), so it stops, naming the line, and changes nothing."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    text = path.read_text()
    path.write_text(text[:-40])
    lines = len(path.read_text().splitlines())
    for flags in ((), ("--report-only",)):
        capsys.readouterr()
        assert study_cli(tmp_path, *flags) == 2
        err = one_error_line(capsys)
        assert f"rows.jsonl:{lines}: a corrupt row" in err and "restore the file from a copy" in err, err
    assert path.read_text() == text[:-40]


def test_a_report_removes_the_files_of_its_own_that_no_longer_apply(finished, tmp_path, capsys):
    """One seed left at b: paired.md (a t test over two seeds) goes, not only stops being rewritten;
    the files the report does not write (kept by hand or by other code) stay."""
    copy_losing_rows(finished, tmp_path, lambda r: False)
    out = tmp_path / "results" / "tiny-study"
    assert (out / "paired.md").is_file() and (out / "paired.csv").is_file()
    kept = ["README.md", "REPORT.md", "study.yaml", "device.sh", "init_rms.md", "init_rms.py", "notes.csv"]
    for name in kept:
        (out / name).write_text("by hand\n")
    assert study_cli(tmp_path, "--report-only", study=changed_tiny(tmp_path, "{b: [0, 1]}", "{b: [0]}")) == 0
    assert not (out / "paired.md").exists() and not (out / "paired.csv").exists()
    for name in kept + ["main.md", "main.csv", "rows.jsonl", "run.json", "lr_choice.json", "status.md", "train"]:
        assert (out / name).exists(), name


def test_pending_tasks_asks_for_what_the_tasks_other_runs_measured():
    """A run's task is done once its rows hold every metric (per corpus source) its other runs at the
    size hold, or say it diverged; the first run of a task needs only a row; a sweep over lengths that
    stopped early (out of memory) is done as it is."""
    from harness.study.spec import Unit, pending_tasks

    def row(seed, metric, lr=1e-2, **extra):
        return Row("s", "swat", "b", "smoke", metric, 1.0, seed=seed, extra={"lr": lr, "train_flops": seed, **extra})
    rows = [row(0, "loss"), row(0, "ppl"), row(0, "loss", corpus_source="web"), row(1, "ppl"),
            row(2, "loss"), row(2, "ppl"), row(3, "diverged", diverged="loss is nan")]
    pending = pending_tasks(rows)
    assert [s for s in range(5) if pending(Unit("swat", "b", 1e-2, s, ("smoke",)))] == [1, 2, 4]
    assert pending(Unit("swat", "b", 1e-2, 0, ("smoke", "piqa"))) == ["piqa"]
    assert pending_tasks(rows[3:4])(Unit("swat", "b", 1e-2, 1, ("smoke",))) == []  # the task's first run
    lengths = [Row("s", "swat", "b", "length", "ppl", 9.0, seed=seed, extra={"lr": 1e-2, "context": context})
               for seed, contexts in ((0, (1024, 2048)), (1, (1024,))) for context in contexts]
    assert pending_tasks(lengths)(Unit("swat", "b", 1e-2, 1, ("length",))) == []


def test_a_run_that_lost_a_row_is_scored_again_and_the_table_says_over_how_many_seeds(finished, tmp_path, capsys,
                                                                                       monkeypatch):
    """b/swat seed 1 without its held-out `loss` row: main.md marks b's mean (n=1) of the 2 seeds the
    study defines there, status.md lists the run, and the study scores it again from its checkpoint."""
    from harness.evaluation import sources
    path = copy_losing_rows(finished, tmp_path, lambda r: (r["model"], r["preset"], r["seed"], r["metric"]) == (
        "swat", "b", 1, "loss"))
    out = path.parent
    assert study_cli(tmp_path, "--report-only") == 0
    swat_b = [ln for ln in (out / "main.md").read_text().splitlines() if ln.startswith("| swat |")][1]
    assert swat_b.endswith("(n=1) |"), swat_b
    assert "-seed1`: smoke" in (out / "status.md").read_text()
    monkeypatch.setattr(sources, "train", lambda *a, **k: pytest.fail("retrained a trained run"))
    capsys.readouterr()
    assert study_cli(tmp_path) == 0
    assert "1 run done (7 were done already);" in capsys.readouterr().out
    rows = read_rows(path)
    assert {r.seed for r in rows if (r.model, r.preset, r.metric) == ("swat", "b", "loss")} == {0, 1}
    assert "Still to run" not in (out / "status.md").read_text()


def test_a_sweep_without_smoke_is_refused_at_load(tmp_path, capsys):
    """The learning rate is chosen by smoke's held-out loss: a sweep without it would wait for ever."""
    path = changed_tiny(tmp_path, "seed: 0, tasks: [smoke]", "seed: 0, tasks: [wikitext_2_v1]")
    assert study_cli(tmp_path, study=path) == 2
    assert one_error_line(capsys).endswith(
        "sweep.tasks must include smoke (the learning rate is chosen by its held-out loss)")
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
    path = changed_tiny(tmp_path, "seeds: {b: [0, 1]}, tasks: [smoke]", "seeds: {b: [0, 1]}, tasks: [mqar]")
    assert study_cli(tmp_path, study=path) == 2  # the final stage's tables would be empty
    assert one_error_line(capsys).endswith("final.tasks must include smoke (the main table, the power-law fits and "
                                           "the gaps are its held-out loss)")


def test_an_interrupted_study_writes_its_status_and_still_says_so(finished, tmp_path, capsys, monkeypatch):
    """Ctrl-C after one of two runs: status.md lists the one left (not what the last finished study
    wrote), and the command ends as interrupted."""
    from harness.study import runner
    path = copy_losing_rows(finished, tmp_path, lambda r: (r["preset"], r["seed"]) == ("b", 1))
    real, calls = runner.run_unit, []

    def run_unit(*args, **kwargs):
        calls.append(args[1].key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(runner, "run_unit", run_unit)
    assert study_cli(tmp_path) == 130
    assert capsys.readouterr().err.startswith("interrupted: the rows and checkpoints written so far are kept")
    status = (path.parent / "status.md").read_text()
    assert f"`{calls[1]}`: smoke" in status and calls[0] not in status, status


def test_final_runs_at_a_swept_size_wait_once():
    """Fresh: the sweep's 4 runs at a, and b's 4 final runs waiting; a's final runs are the sweep's best."""
    from harness.study.report import Results, status_text
    study = load_study(TINY)
    plan(study, lambda m: None)
    defined, waiting = units(study, [])
    assert (len(defined), waiting) == (4, 4)
    assert "| all | | | 4 |" in status_text(Results(study, []))


@pytest.mark.parametrize("damage", ["lost", "garbled"])
def test_a_damaged_checkpoint_names_the_fix_of_the_study(finished, tmp_path, capsys, damage):
    """Not `harness run ... --force` or `harness train ... --no-resume`, which `harness study` lacks:
    delete the run's folder and run the study again."""
    lr = json.loads((finished / "results" / "tiny-study" / "lr_choice.json").read_text())["swat"]["b"]["lr"]
    copy_losing_rows(finished, tmp_path, lambda r: (r["model"], r["preset"], r["seed"]) == ("swat", "b", 1))
    run_dir = tmp_path / "runs" / "tiny-study" / "b" / "swat" / f"lr{lr:g}-seed1"
    meta = run_dir / "checkpoint" / "meta.json"
    meta.unlink() if damage == "lost" else meta.write_text("{garbled")
    capsys.readouterr()
    assert study_cli(tmp_path) == 2
    err = one_error_line(capsys)
    assert err.endswith(f"; delete {run_dir} and run the study again") and "--force" not in err, err


@pytest.mark.parametrize("flag, names", [("--models", ""), ("--sizes", ","), ("--models", " , ")])
def test_an_empty_models_or_sizes_runs_nothing(tmp_path, capsys, flag, names):
    with pytest.raises(SystemExit) as exit_:  # argparse's own check
        study_cli(tmp_path, flag, names)
    assert exit_.value.code == 2
    assert f"argument {flag}: names nothing" in one_error_line(capsys)
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_the_summary_counts_the_runs_start_new_for_held_back(finished, tmp_path, capsys):
    copy_losing_rows(finished, tmp_path, lambda r: (r["model"], r["preset"], r["seed"]) == ("swat", "b", 1))
    lrs = json.loads((finished / "results" / "tiny-study" / "lr_choice.json").read_text())
    shutil.rmtree(tmp_path / "runs" / "tiny-study" / "b" / "swat" / f"lr{lrs['swat']['b']['lr']:g}-seed1")
    capsys.readouterr()
    assert study_cli(tmp_path, "--start-new-for", "0") == 0
    assert "study tiny-study: 0 runs done (7 were done already), 1 not started (--start-new-for), run the same " \
           "command again to go on;" in capsys.readouterr().out


def test_the_best_model_is_bold_even_where_every_model_is_under_the_bigram(finished, tmp_path):
    """‡ (not better than the bigram) kept a cell out of the bold, so a column of ‡ cells had no best model."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    bigram = [json.dumps({**json.loads(ln), "model": "bigram", "value": 0.5, "lr": None})
              for ln in path.read_text().splitlines() if '"swat"' in ln and '"smoke"' in ln]
    path.write_text(path.read_text() + "\n".join(bigram) + "\n")
    study = tmp_path / "with_bigram.yaml"
    study.write_text(TINY.read_text() + "references: [bigram]\n")
    assert study_cli(tmp_path, "--report-only", study=study) == 0
    lines = [ln for ln in (path.parent / "main.md").read_text().splitlines() if ln.startswith(("| swat |",
                                                                                                "| transformer |"))]
    losses = [ln.split("|")[5].strip() for ln in lines]
    assert all("‡" in cell for cell in losses) and sum(cell.startswith("**") for cell in losses) == 2  # one per size


def test_the_document_scoring_script_scores_each_attention_checkpoint_both_ways(finished, tmp_path):
    """results/scaling/document_scoring.py as device.sh runs it: by its path, with the repository root on
    PYTHONPATH, over a study's runs folder; one table row per finished checkpoint, its across-documents loss
    the study's row, within − across in the last column. A training cut short (no held-out loss yet) holds
    weights no row was scored on: it is left out."""
    import os
    import subprocess
    import sys

    from harness.training.checkpoint import META_FILE
    root = Path(__file__).resolve().parents[1]
    runs = tmp_path / "tiny-study"
    shutil.copytree(finished / "runs" / "tiny-study", runs)
    checkpoints = sorted(runs.glob("*/*/*/checkpoint"))
    meta = json.loads((checkpoints[0] / META_FILE).read_text())
    (checkpoints[0] / META_FILE).write_text(json.dumps({**meta, "step": 1, "heldout_loss": None}))
    done = subprocess.run([sys.executable, str(root / "results" / "scaling" / "document_scoring.py"), str(runs)],
                          capture_output=True, text=True, cwd=finished, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    table = [line.split("|")[1:-1] for line in done.stdout.splitlines()[2:]]
    assert table and sorted(cells[0].strip() for cells in table) == [
        str(c.parent.relative_to(runs)) for c in checkpoints[1:]]
    first = [cells[0].strip().split("/")[1] for cells in table[:2]]
    assert sorted(first) == ["swat", "transformer"]  # one of each model before any model's second
    rows = read_rows(finished / "results" / "tiny-study" / "rows.jsonl")
    for run, across, within, difference in table:
        size, model, _ = run.strip().split("/")
        assert any(float(across) == pytest.approx(r.value, abs=1e-4) for r in rows if (r.model, r.preset, r.task) == (
            model, size, "smoke") and r.metric == "loss" and "corpus_source" not in r.extra)
        assert float(difference) == pytest.approx(float(within) - float(across), abs=2e-4)


def test_a_small_mean_keeps_two_significant_digits():
    """scaling's MQAR printed 0.024% as 0.00: thirty such cells read as exact zeros."""
    from harness.results.render import Table, render
    from harness.study.report import _mean_cell
    cells = [_mean_cell({0: 0.00024, 1: 0.00024}, 2, 2, 100.0), _mean_cell({0: 0.5}, 1, 2, 100.0),
             _mean_cell({0: 0.0}, 1, 2, 100.0)]
    table = Table("t", ["a", "b", "c"], ["a", "b", "c"], [("s", [cells])])
    assert render(table, "md").splitlines()[-1] == "| 0.024 ± 0.000 (n=2) | 50.00 | 0.00 |"


def test_a_blank_in_the_last_models_line_is_noted(finished, tmp_path):
    """The note on blank cells looked at every line of a size but its last (taken for the chance line,
    which a study without benchmarks has not): transformer's missing WikiText-2 went unexplained."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    wiki = [{**r, "task": "wikitext_2_v1", "metric": "word_perplexity", "value": 99.0} for r in rows
            if (r["model"], r["task"], r["metric"]) == ("swat", "smoke", "loss")
            and "corpus_source" not in r]
    path.write_text(path.read_text() + "".join(json.dumps(r) + "\n" for r in wiki))
    assert study_cli(tmp_path, "--report-only") == 0
    main = (path.parent / "main.md").read_text()
    transformer_b = [ln for ln in main.splitlines() if ln.startswith("| transformer |")][-1]
    assert transformer_b.split("|")[6].strip() == ""
    assert "Blank: not measured yet" in main


def test_training_curves_csv_holds_each_curves_end_also_of_a_short_run(finished):
    """The CSV kept every 10th point, so size a's 3-step runs, drawn in the plot, had no line in it."""
    out = finished / "results" / "tiny-study"
    curves = [line.split(",") for line in (out / "training_curves.csv").read_text().splitlines()[1:]]
    tokens = json.loads((out / "run.json").read_text())["budgets"]["a"]["tokens"]
    assert {(size, model) for size, model, *_ in curves} == {(s, m) for s in "ab" for m in ("swat", "transformer")}
    assert {int(float(t)) for size, _, t, _ in curves if size == "a"} == {tokens}


def test_a_run_whose_weights_are_not_those_of_its_rows_is_scored_anew(finished, tmp_path, capsys):
    """A run trained again after its checkpoint was lost (on another GPU, say) scored only its tasks
    left, beside rows of the weights it replaced: two models' rows under one run. Its new rows replace
    the old also where these carry a FLOP count the code has corrected since (it counts no core of a
    model its rows were written without)."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]

    def held_out(r):
        return ((r["model"], r["preset"], r["seed"], r["task"], r["metric"]) == ("swat", "b", 1, "smoke", "loss")
                and "corpus_source" not in r)
    true = next(r["value"] for r in rows if held_out(r))
    def older_count(r):
        return {**r, "train_flops": 1.0} if (r["model"], r["preset"], r["seed"]) == ("swat", "b", 1) else r
    path.write_text("".join(json.dumps(older_count({**r, "value": true + 0.5} if held_out(r) else r)) + "\n"
                            for r in rows))
    study = changed_tiny(tmp_path, "seeds: {b: [0, 1]}, tasks: [smoke]", "seeds: {b: [0, 1]}, tasks: [smoke, mqar]")
    capsys.readouterr()
    assert study_cli(tmp_path, "--models", "swat", "--sizes", "b", study=study) == 0
    assert "b/swat/lr0.01-seed1: its weights are not those its rows were scored on" in capsys.readouterr().out
    rescored = [r for r in read_rows(path) if (r.model, r.preset, r.seed, r.task, r.metric) == ("swat", "b", 1, "smoke",
                                                                                                "loss")]
    assert [r.value for r in rescored if "corpus_source" not in r.extra] == [pytest.approx(true, rel=1e-9)]
    first = [r for r in read_rows(path) if (r.model, r.preset, r.seed, r.task) == ("swat", "b", 1, "first_heldout")]
    assert [(r.metric, r.value) for r in first] == [("loss", true + 0.5)]  # the score the sweep chose with
    assert {r.seed for r in read_rows(path) if (r.model, r.preset, r.task) == ("swat", "b", "mqar")} == {0, 1}


def test_every_row_of_a_trained_run_names_the_weights_it_was_scored_on(finished):
    """Rows carry their checkpoint's digest (as `harness run`'s do), so that two trainings' rows
    under one run are told apart by more than their held-out loss."""
    from harness.training.checkpoint import WEIGHTS_FILE, read_meta, weights_digest
    rows = read_rows(finished / "results" / "tiny-study" / "rows.jsonl")
    trained = [r for r in rows if r.extra.get("lr") is not None]
    assert trained and all(r.extra.get("weights") for r in trained)
    for r in trained:
        ckpt = Path(r.checkpoint)
        assert r.extra["weights"] == weights_digest(read_meta(ckpt), ckpt / WEIGHTS_FILE)


def test_a_run_whose_rows_name_other_weights_is_scored_anew_though_its_held_out_loss_agrees(finished, tmp_path,
                                                                                              capsys):
    """Rows of other weights with a held-out loss within 1e-9 of the run's (so the held-out check
    passes) are told by their digest: the run scores all its tasks again, on its own weights."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]

    def ours(r):
        return (r["model"], r["preset"], r["seed"]) == ("swat", "b", 1)
    path.write_text("".join(json.dumps({**r, "weights": "0" * 16} if ours(r) else r) + "\n" for r in rows))
    study = changed_tiny(tmp_path, "seeds: {b: [0, 1]}, tasks: [smoke]", "seeds: {b: [0, 1]}, tasks: [smoke, mqar]")
    capsys.readouterr()
    assert study_cli(tmp_path, "--models", "swat", "--sizes", "b", study=study) == 0
    assert ("b/swat/lr0.01-seed1: its weights (" in (out := capsys.readouterr().out)
            and ") are not those some of its rows were scored on (0000000000000000" in out)
    unit_rows = [r for r in read_rows(path) if (r.model, r.preset, r.seed) == ("swat", "b", 1)]
    assert {r.task for r in unit_rows} >= {"smoke", "mqar"}
    assert "0" * 16 not in {r.extra["weights"] for r in unit_rows if r.task != "first_heldout"}


def test_status_names_a_run_whose_rows_were_scored_on_two_sets_of_weights(finished, tmp_path):
    """Rows files of two machines merged can put two trainings' rows under one run; status.md says
    which run and how to score it again. Its first score's row, kept from a training since replaced,
    does not count."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ours = [i for i, r in enumerate(rows) if (r["model"], r["preset"], r["seed"]) == ("swat", "b", 1)]
    assert len(ours) > 1
    rows[ours[-1]] = {**rows[ours[-1]], "weights": "f" * 16}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert study_cli(tmp_path, "--report-only") == 0
    status = (path.parent / "status.md").read_text()
    assert "Rows scored on more than one set of weights" in status
    assert [ln for ln in status.splitlines() if ln.startswith("- `b/swat/lr0.01-seed1`: weights ")]
    assert "b/transformer" not in status.split("more than one set of weights")[1]


def test_a_run_trained_again_and_stopped_between_its_tasks_keeps_no_row_of_its_old_weights(finished, tmp_path):
    """A run trained again (its checkpoint lost) with a task left scores all its tasks anew; stopped
    after its held-out loss, it was resumed with that loss now matching its weights, so it scored only
    the tasks without rows and kept the old weights' rows of the others: two trainings' rows under one
    run."""
    from harness.study import runner
    from harness.study.spec import units
    from harness.training.outcome import TrainingStopped
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ours = [r for r in rows if (r["model"], r["preset"], r["seed"], r["task"]) == ("swat", "b", 1, "smoke")]
    true = next(r["value"] for r in ours if r["metric"] == "loss" and "corpus_source" not in r)
    old = [{**r, "value": r["value"] + 0.5} if r["metric"] == "loss" and "corpus_source" not in r else r
           for r in ours] + [{**ours[0], "task": "mqar", "metric": "accuracy", "value": 0.777}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r not in ours) +
                    "".join(json.dumps(r) + "\n" for r in old))
    study = load_study(changed_tiny(tmp_path, "seeds: {b: [0, 1]}, tasks: [smoke]",
                                    "seeds: {b: [0, 1]}, tasks: [smoke, mqar, passkey]"))  # passkey: left
    plan(study, lambda m: None)
    unit = next(u for u in units(study, read_rows(path))[0] if u.key == "b/swat/lr0.01-seed1")
    with pytest.raises(TrainingStopped, match="stopped before mqar"):
        runner.run_unit(study, unit, tmp_path / "results", tmp_path / "runs", "cpu", lambda m: None,
                        should_stop=lambda: True)

    def unit_rows():
        return [r for r in read_rows(path) if (r.model, r.preset, r.seed) == ("swat", "b", 1)]
    assert not [r for r in unit_rows() if r.task == "mqar"]  # the old weights' row is gone
    assert [r.value for r in unit_rows() if r.task == "smoke" and r.metric == "loss"
            and "corpus_source" not in r.extra] == [pytest.approx(true, rel=1e-9)]
    assert [r.value for r in unit_rows() if r.task == "first_heldout"] == [true + 0.5]
    assert runner.run_unit(study, unit, tmp_path / "results", tmp_path / "runs", "cpu", lambda m: None) == "done"
    assert [r for r in unit_rows() if r.task == "mqar"] and all(r.value != 0.777 for r in unit_rows())


def test_the_exponents_error_says_its_degrees_of_freedom_and_what_interval_it_gives():
    """Three sizes leave one degree of freedom: the ± alone reads as a 95% interval of about two
    errors where it is 12.7, so the note says so; four sizes leave two (4.30 errors)."""
    three = {"swat": {"params": power_law([1e6, 4e6, 16e6], [3.0, 2.5, 2.2]), "flops": None}}
    note = exponent_error_note(three)
    assert "± 12.71 standard errors at 1 degree of freedom" in note and "does not tell two exponents apart" in note
    four = {"swat": {"params": power_law([1e6, 4e6, 16e6, 64e6], [3.0, 2.5, 2.2, 1.9]), "flops": None}}
    note = exponent_error_note(four)
    assert "± 4.30 standard errors at 2 degrees of freedom" in note and "single residual" not in note
    assert "95%" not in exponent_error_note({"swat": {"params": power_law([1e6, 4e6], [3.0, 2.5]), "flops": None}})


def test_the_paired_notes_count_the_tests_the_pairs_left_out_and_the_seed_that_chose_the_rates():
    """Seed 0 at a swept size is the run its learning rate won on (biased low); a pair sharing one seed
    cannot be tested and is said to be left out; the tests are counted, none corrected for the others."""
    class Res:
        study = load_study(TINY)
        study.models = ["swat", "transformer", "mamba"]
        study.sweep_sizes, study.final_sizes, study.final_seeds = ["a", "b"], ["a", "b"], {"a": [0], "b": [0, 1, 2]}
        losses = {"transformer": {0: 2.0, 1: 2.1, 2: 2.05}, "swat": {0: 1.9, 1: 2.01, 2: 1.94}, "mamba": {0: 1.8}}

        def values(self, model, size, task, metric, source=None):
            return self.losses[model]
    table = paired_table(Res())
    assert [len(lines) for _, lines in table.groups] == [1]  # b only: a has one seed
    notes = " ".join(table.notes)
    assert "1 of them, none corrected" in notes and "Left out: 1 pair(s)" in notes
    assert "Seed 0 at b is the sweep's run at the learning rate it chose" in notes


def finished_results(finished, rename: dict | None = None) -> Results:
    """The tiny study's Results from its rows, with models renamed (old: new) in the rows and the study."""
    rename = rename or {}
    study = load_study(TINY)
    plan(study, lambda m: None)
    study.models = [rename.get(m, m) for m in study.models]
    rows = read_rows(finished / "results" / "tiny-study" / "rows.jsonl")
    for r in rows:
        r.model = rename.get(r.model, r.model)
    return Results(study, rows)


def test_compute_is_counted_at_report_time_not_read_from_the_rows(finished):
    """The loss-vs-compute points are the current count of each model as the study builds it at the size
    (harness.model.flops on the model built from the study's config) times the run's tokens trained, one
    count for every row of a (model, size), whatever `train_flops` the rows hold."""
    from harness.model.build import build_model
    from harness.model.flops import flops_per_token
    res = finished_results(finished)
    for r in res.rows:
        r.extra["train_flops"] = 1.0  # what an older training might have counted
    points = scaling_points(res, "flops")
    for model in ("swat", "transformer"):
        for (x, _), size in zip(points[model], ("a", "b")):
            cfg = res.study.config(size, 0)
            tokens = next(r.tokens_trained for r in res.rows if (r.model, r.preset, r.metric) == (model, size, "loss"))
            assert x == flops_per_token(build_model(model, cfg.model), cfg.train.seq_len).train * tokens > 1e6


def test_the_flops_note_names_the_models_whose_count_leaves_a_core_out(finished):
    """scaling.md's FLOPs note says compute is counted at report time, and names exactly the models whose
    count is partial: llama_hf (here the swat rows under its name), whose Hugging Face attention the count
    cannot see into."""
    pytest.importorskip("transformers")
    scaling = (finished / "results" / "tiny-study" / "scaling.md").read_text()
    assert "FLOPs: training FLOPs per token as harness/model/flops.py counts each model at report time, times " \
           "the tokens trained (the rows' train_flops keep what the training counted at its commit)." in scaling
    res = finished_results(finished, {"swat": "llama_hf"})
    assert flops_left_out(res, ["llama_hf", "transformer"]) == ["llama_hf"]
    assert "the count leaves out part of llama_hf (`partial`, or" in " ".join(scaling_table(res)[0].notes)


def test_a_model_whose_extra_is_missing_keeps_its_rows_count_and_is_named(finished, monkeypatch):
    """Where the report cannot build a model (an extra it needs, such as fla, is not installed), its compute
    is the rows' own `train_flops` and the FLOPs note names it, instead of the report failing."""
    from harness.registry import MissingExtraError
    from harness.study import report

    def build(name, cfg, device="cpu"):
        if name == "transformer":
            raise MissingExtraError("transformer needs a package: pip install it")
        return build_model(name, cfg, device)
    build_model = report.build_model
    monkeypatch.setattr(report, "build_model", build)
    res = finished_results(finished)
    for r in res.rows:
        r.extra["train_flops"] = 7.0 if r.model == "transformer" else r.extra.get("train_flops")
    assert [x for x, _ in scaling_points(res, "flops")["transformer"]] == [7.0, 7.0]
    assert flops_left_out(res, ["swat", "transformer"]) == ["transformer"]
    assert "part of transformer (`partial`, or not built here" in " ".join(scaling_table(res)[0].notes)


def rows_per_run(path: Path) -> dict[tuple, int]:
    """How many rows each run (model, size, lr, seed) holds in the rows file."""
    counts: dict[tuple, int] = {}
    for r in read_rows(path):
        key = (r.model, r.preset, r.extra.get("lr"), r.seed)
        counts[key] = counts.get(key, 0) + 1
    return counts


def record_trainings(monkeypatch, cut: tuple[str, int] | None = None) -> list[tuple[str, str, bool]]:
    """(model, run, whether it had a checkpoint then) of each training started in this process; `cut`
    (size, step): Ctrl-C at that step of a training at that size (the first there: the command ends)."""
    from harness.evaluation import sources
    real, started = sources.train, []

    def train(name, cfg, run_dir, *args, on_step=None, **kwargs):
        size = run_dir.parent.parent.name
        started.append((name, f"{size}/{run_dir.name}", (run_dir / "checkpoint").exists()))

        def step(info):
            if cut == (size, info["step"]):
                raise KeyboardInterrupt
            if on_step is not None:
                on_step(info)
        return real(name, cfg, run_dir, *args, on_step=step, **kwargs)
    monkeypatch.setattr(sources, "train", train)
    return started


def test_force_trains_the_chosen_models_runs_again_and_replaces_their_rows(finished, tmp_path, capsys, monkeypatch):
    """A finished study, swat's code changed: --force --models swat trains each of swat's four runs once, from
    scratch, and its rows (its kept first score too) are replaced, not added to; transformer's are untouched."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    before = rows_per_run(path)
    transformer = [ln for ln in path.read_text().splitlines() if json.loads(ln)["model"] == "transformer"]
    smoke = next(r for r in map(json.loads, path.read_text().splitlines())
                 if (r["model"], r["task"], r["metric"]) == ("swat", "smoke", "loss") and "corpus_source" not in r)
    with path.open("a") as f:  # as a run trained again after its checkpoint was lost keeps it
        f.write(json.dumps({**smoke, "task": "first_heldout", "value": smoke["value"] + 0.5}) + "\n")
    started = record_trainings(monkeypatch)
    capsys.readouterr()
    assert study_cli(tmp_path, "--force", "--models", "swat") == 0
    out = capsys.readouterr().out
    assert "--force: discarded 9 rows and 4 run folders" in out and "study tiny-study: 4 runs done;" in out
    assert sorted(started) == sorted((m, f"{size}/{run_label(lr, seed)}", False) for m, size, lr, seed in before
                                     if m == "swat")  # each of swat's runs once, none resumed
    assert rows_per_run(path) == before
    assert [ln for ln in path.read_text().splitlines() if json.loads(ln)["model"] == "transformer"] == transformer
    assert not [r for r in read_rows(path) if r.task == "first_heldout"]


def test_force_with_jobs_trains_again_in_the_workers(finished, tmp_path):
    """The workers train the chosen runs again (new checkpoints) and score them in place of their rows."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    before = rows_per_run(path)
    metas = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "tiny-study").rglob("meta.json")}
    assert study_cli(tmp_path, "--force", "--models", "transformer", "--sizes", "a", "--jobs", "2") == 0
    assert rows_per_run(path) == before
    assert {(r.model, r.preset, r.extra["lr"]) for r in read_rows(path) if "--unit" in r.command} == {
        ("transformer", "a", 3e-3), ("transformer", "a", 1e-2)}  # scored by the workers, the other rows kept
    written = {p.relative_to(tmp_path / "runs" / "tiny-study").parts[:3] for p, t in metas.items()
               if p.stat().st_mtime_ns != t}
    assert written == {("a", "transformer", "lr0.003-seed0"), ("a", "transformer", "lr0.01-seed0")}


def test_force_with_report_only_is_one_line(tmp_path, capsys):
    assert study_cli(tmp_path, "--force", "--report-only") == 2
    assert "--force trains runs again and --report-only trains none: drop one of them" in one_error_line(capsys)
    assert not (tmp_path / "results").exists()


def test_an_interrupted_force_goes_on_without_it(finished, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the third of swat's four runs (at size b, past its first checkpoint): the same command without
    --force resumes that training from its new checkpoint and trains the run not reached (its old rows are
    gone), trains none of the runs already trained again, and leaves swat's rows as complete as before."""
    path = copy_losing_rows(finished, tmp_path, lambda r: False)
    before = rows_per_run(path)
    started = record_trainings(monkeypatch, cut=("b", 6))
    assert study_cli(tmp_path, "--force", "--models", "swat") == 130
    cut_run = started[-1][1]
    assert [s for _, s, _ in started][:2] == ["a/lr0.003-seed0", "a/lr0.01-seed0"] and cut_run.startswith("b/")
    monkeypatch.undo()
    started = record_trainings(monkeypatch)
    assert study_cli(tmp_path, "--models", "swat") == 0
    rest = [f"b/{run_label(lr, seed)}" for m, size, lr, seed in before if (m, size) == ("swat", "b")]
    assert sorted(started) == sorted(("swat", run, run == cut_run) for run in rest)
    assert rows_per_run(path) == before
