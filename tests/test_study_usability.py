"""`harness study` as a researcher meets it on a CPU: side-by-side runs that cannot fit the host
together, and the one-line errors of bad inputs."""

import errno
import os
from pathlib import Path

import pytest
import yaml

from harness import cli, memory
from harness.model.build import checked_model
from harness.study.spec import load_study

TINY = Path(__file__).resolve().parent / "fixtures" / "study" / "tiny.yaml"


def study_cli(tmp_path, *args, study=TINY):
    return cli.main(["study", str(study), "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
                     "--device", "cpu", *args])


def largest_step() -> int:
    """The tiny study's largest training step estimate (size b, the larger of its models)."""
    study = load_study(TINY)
    cfg = study.config("b", 0)
    return max(memory.model_step_bytes(checked_model(m, cfg.model, "cpu"), cfg) for m in study.models)


@pytest.mark.parametrize("room, fix", [(1.5, "; use --jobs 1"), (2.5, "; use --jobs 2"),
                                       (0.5, f"; even one does not fit: {memory.FIXES}")])
def test_jobs_that_cannot_fit_together_are_refused(tmp_path, capsys, monkeypatch, room, fix):
    """Each of --jobs 3's workers would fit alone (its own check passes); together they would not:
    refused by the pool before any worker starts, in one line naming --jobs and the estimate."""
    monkeypatch.setattr(memory, "available_host_bytes", lambda: int(room * largest_step()))
    assert study_cli(tmp_path, "--jobs", "3") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --jobs would train 3 runs side by side on the CPU, the largest (swat at size b) "
                          "needing about") and err.endswith(fix), err
    assert len(err.splitlines()) == 1 and "GiB" in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_count_based_references_hold_no_training_step_for_jobs_to_fit(tmp_path, monkeypatch):
    """An n-gram counts its batches: no weights, gradients or activations, so a study of n-grams alone
    runs side by side however little memory the estimate of a trained model would want."""
    from harness.study.runner import check_jobs_fit
    data = yaml.safe_load(TINY.read_text())
    data.update(models=["unigram", "bigram"], focus=["bigram"])
    study = tmp_path / "ngrams.yaml"
    study.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 1)
    check_jobs_fit(load_study(study), 2, "cpu")
    with pytest.raises(memory.OutOfMemory, match="^--jobs would train 2 runs side by side"):
        check_jobs_fit(load_study(TINY), 2, "cpu")


def test_jobs_that_fit_together_run_and_progress_shows_news_only(tmp_path, monkeypatch, capsys):
    """The pool asks for a unit at every free slot; the progress line came with each ask, twice in a
    row unchanged ("0/4 runs done" as each of the first two runs started)."""
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2 * largest_step())
    assert study_cli(tmp_path, "--jobs", "2", "--sizes", "a") == 0
    shown = [ln for ln in capsys.readouterr().out.splitlines() if ln.endswith(" runs done")]
    assert shown[0] == "study tiny-study: 0/4 runs done" and len(shown) == len(set(shown)), shown


def test_runs_folder_that_cannot_be_made_leaves_no_results(tmp_path, capsys, monkeypatch):
    """A read-only --runs was found at the first training, after the study had written its record and
    report (run.json, lr_choice.json, status.md) into --results."""
    runs, mkdir = tmp_path / "ro" / "runs", os.mkdir

    def read_only_runs(path, *args, **kwargs):
        if Path(path) == runs:  # on a read-only disk (as root, chmod would not do)
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "mkdir", read_only_runs)
    assert cli.main(["study", str(TINY), "--results", str(tmp_path / "results"), "--runs", str(runs),
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'ro'}: read-only file system; give another path with --runs", err
    assert not (tmp_path / "results").exists()


def test_a_bad_size_override_names_its_size(tmp_path, capsys):
    """Every size's overrides hold the same keys: `model.hidden_size must be a number` said not which."""
    data = yaml.safe_load(TINY.read_text())
    data["sizes"]["b"]["model"]["hidden_size"] = "big"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert study_cli(tmp_path, study=path) == 2
    assert capsys.readouterr().err.strip() == f"error: study file {path}: size b: model.hidden_size must be a " \
                                              f"number, got 'big'"


def test_the_last_line_names_what_happened_and_how_to_go_on():
    """Counts of none were listed ("0 stopped (resumable), 0 failed, 0 waiting ...") and a study cut by
    --time-limit did not say that the same command goes on."""
    counts = dict.fromkeys(("done", "diverged", "failed", "stopped", "waiting", "squeezed", "not_started",
                            "unreached", "already"), 0)
    counts.update(runs=9, done=1, already=3, stopped=2, unreached=3)
    assert cli.study_summary(counts) == ("1 run done (3 were done already), 2 stopped (resumable), 3 not reached "
                                         "(--time-limit), run the same command again to go on")
    counts.update(stopped=0, unreached=0, done=6, failed=1)
    assert cli.study_summary(counts) == "6 runs done (3 were done already), 1 failed"


@pytest.mark.parametrize("force, advice", [((), "run the same command again to go on"),
                                           (("--force",), "run the same command without --force to go on")])
def test_an_interrupted_study_says_how_to_go_on(tmp_path, capsys, monkeypatch, force, advice):
    """After Ctrl-C, "the same command again" with --force would discard the runs trained again so far."""
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_study", interrupted)
    assert study_cli(tmp_path, *force) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: ") and advice in err, err
