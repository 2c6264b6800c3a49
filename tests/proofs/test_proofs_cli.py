"""``valley proofs`` / ``python -m proofs_check``: reports, exit codes, and unusable outputs found before any work."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

import proofs_check.cli as cli
from proofs_check import hessian_link
from proofs_check.common import Context, save_figure


@pytest.fixture
def tiny_cli(monkeypatch):
    """The CLI with the tests' tiny sizes (the same code path, smaller problems)."""
    monkeypatch.setattr(cli, "Context", functools.partial(Context, tiny=True))


@pytest.fixture
def no_claim_may_run(monkeypatch):
    def forbidden(ctx):
        raise AssertionError("a claim ran before the output paths were checked")

    monkeypatch.setattr(hessian_link, "run", forbidden)


def test_cli_writes_reports_and_exit_code(tmp_path, tiny_cli):
    out = tmp_path / "report"
    docs = tmp_path / "docs" / "proofs.md"
    docs.parent.mkdir()
    code = cli.main(["--quick", "--claims", "hessian_link", "--out", str(out), "--docs-md", str(docs), "--no-progress"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "PASS" and [c["name"] for c in report["claims"]] == ["hessian_link"]
    assert report["meta"]["command"].startswith("python -m proofs_check --quick --backend numpy")
    assert "![hessian_link](../report/hessian_link.png)" in docs.read_text()
    text = (out / "report.md").read_text()
    for heading in ("**What the paper claims.**", "**What was tested.**", "**Controls.**", "**Regime swept.**"):
        assert heading in text
    assert "| check | measured | threshold | pass | scored | paired statistic against the control |" in text
    assert "**Verdict: PASS.**" in text and "**Why:** " in text and "## Changes since the first edition" in text
    assert sorted(os.listdir(out)) == ["hessian_link.png", "report.json", "report.md"]  # no staging left


def test_a_failing_claim_gives_exit_code_1(tmp_path, tiny_cli, monkeypatch):
    def planted(name, hyper):  # a wrong optimizer: steps far too large for the Taylor identity
        return name, {**hyper, "lr": hyper["lr"] * 300.0}

    monkeypatch.setattr(cli, "Context", functools.partial(Context, tiny=True, plant=planted))
    assert cli.main(["--quick", "--claims", "hessian_link", "--out", str(tmp_path / "s"), "--no-progress"]) == 1


def test_not_testable_gives_exit_code_0(tmp_path, tiny_cli, monkeypatch):
    """Only FAIL exits 1: a claim whose assumptions do not hold is reported, not failed."""
    from proofs_check import nonconvex

    monkeypatch.setattr(
        cli, "Context", functools.partial(Context, tiny=True, plant_problem=lambda claim, start: start * 100.0)
    )
    assert nonconvex.NAME == "nonconvex_stationarity"
    code = cli.main(["--quick", "--claims", "nonconvex_stationarity", "--out", str(tmp_path), "--no-progress"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["claims"][0]["verdict"] == "NOT TESTABLE HERE - ASSUMPTIONS NOT MET"
    assert report["verdict"] == "NOT TESTABLE HERE - ASSUMPTIONS NOT MET" and code == 0


@pytest.mark.parametrize("content", ["[1, 2]", "not json", '{"claims": 3}', '{"claims": [1]}'])
def test_an_out_folder_with_a_foreign_report_json_exits_2_before_any_claim(content, tmp_path, capsys, no_claim_may_run):
    """Regression (issue 26.13): a report.json that is not an object ([1, 2]) crashed in _previous_files after
    every claim had run, and the new report was thrown away; now exit 2 up front, the user's file untouched."""
    (tmp_path / "report.json").write_text(content)
    code = cli.main(["--quick", "--claims", "hessian_link", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "report.json is not a proofs_check report" in error
    assert (tmp_path / "report.json").read_text() == content
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_valley_proofs_subcommand(tmp_path, tiny_cli):
    from valley_cli.main import main as valley_main

    assert valley_main(["proofs", "--quick", "--claims", "hessian_link", "--out", str(tmp_path), "--no-progress"]) == 0


@pytest.mark.parametrize(
    "arguments",
    [
        ["--out", "/proc/proofs_check_test"],
        ["--out", "{file}/under_a_file"],
        ["--out", "{file}"],
        ["--out", "{tmp}/ok", "--docs-md", "/proc/proofs_check_test.md"],
        ["--out", "{tmp}/ok", "--docs-md", "{file}/page.md"],
        ["--out", "{tmp}/ok", "--docs-md", "{tmp}"],
    ],
    ids=["proc", "under-file", "is-file", "docs-proc", "docs-under-file", "docs-is-dir"],
)
def test_unusable_outputs_exit_2_before_any_claim_runs(arguments, tmp_path, capsys, no_claim_may_run):
    """Regression (issue 13.12): these ended in a traceback with exit code 1 after every claim had run."""
    regular = tmp_path / "a_file"
    regular.write_text("x")
    arguments = [a.format(file=regular, tmp=tmp_path) for a in arguments]
    code = cli.main(["--quick", "--claims", "hessian_link", "--no-progress", *arguments])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "error:" in error and ("--out" in error or "--docs-md" in error)
    assert not (tmp_path / "ok" / "report.json").exists()
    assert not [p for p in tmp_path.rglob(".proofs-staging-*")]


def test_unusable_output_through_the_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "valley_cli", "proofs", "--quick", "--out", "/proc/x", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip()] and "valley proofs: error: --out" in result.stderr
    )


def test_an_interrupted_run_leaves_the_previous_report_intact(tmp_path, tiny_cli, monkeypatch):
    """Regression (issue 13.12): an interrupted run left a new plot next to an older report."""
    out = tmp_path / "report"
    docs = tmp_path / "proofs.md"
    assert (
        cli.main(["--quick", "--claims", "hessian_link", "--out", str(out), "--docs-md", str(docs), "--no-progress"])
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    page = docs.read_text()

    def interrupted(ctx):
        plt = __import__("proofs_check.common", fromlist=["figure"]).figure()
        save_figure(ctx, plt.figure(), "hessian_link.png")
        save_figure(ctx, plt.figure(), "a_new_plot.png")
        raise KeyboardInterrupt

    monkeypatch.setattr(hessian_link, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--quick", "--claims", "hessian_link", "--out", str(out), "--docs-md", str(docs), "--no-progress"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert docs.read_text() == page
    assert not list(tmp_path.rglob(".proofs-staging-*"))


def test_a_new_report_removes_the_plots_of_the_old_one(tmp_path, tiny_cli):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old_plot.png").write_bytes(b"old")
    (out / "unrelated.txt").write_text("kept")
    (out / "report.json").write_text(json.dumps({"claims": [{"plots": ["old_plot.png"]}]}))
    assert cli.main(["--quick", "--claims", "hessian_link", "--out", str(out), "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == ["hessian_link.png", "report.json", "report.md", "unrelated.txt"]


def test_a_killed_run_removes_its_staging(tmp_path):
    """SIGTERM during the claims: the staged files go, the (absent) previous report is not replaced."""
    import signal
    import time

    out, docs = tmp_path / "report", tmp_path / "page.md"
    process = subprocess.Popen(
        [sys.executable, "-m", "proofs_check", "--out", str(out), "--docs-md", str(docs), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not list(tmp_path.rglob(".proofs-staging-*")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(tmp_path.rglob(".proofs-staging-*")), "the run never staged its outputs"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert not list(tmp_path.rglob(".proofs-staging-*")) and not docs.exists()
    assert not (out / "report.json").exists()


def test_a_negative_seed_is_an_argument_error(capsys, no_claim_may_run):
    """Regression: a negative --seed ran until NumPy refused it inside the first claim (a traceback)."""
    with pytest.raises(SystemExit) as raised:
        cli.main(["--quick", "--claims", "hessian_link", "--seed", "-1", "--no-progress"])
    assert raised.value.code == 2 and "seed >= 0" in capsys.readouterr().err
