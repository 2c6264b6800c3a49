"""Tests of ``valley demo``: its setting is the study's regime 1, its output format, bad options, outputs."""

from __future__ import annotations

import os
import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("mnist1d")
pytest.importorskip("matplotlib")

from valley_cli import demo  # noqa: E402
from valley_cli.main import main  # noqa: E402
from valley_cli.study import protocol  # noqa: E402


def test_the_demo_is_a_reduced_version_of_the_studys_decisive_setting():
    specs = demo.demo_specs(demo.SEEDS)
    large = [s for s in specs if s["batch_size"] == demo.LARGE_BATCH]
    # the study's regime 1 at full batch: same model, data sizes, epochs, so the demo's runs are study runs
    (full,) = [
        s for s in protocol.full_config().settings if s.regime == 1 and s.batch_size == demo.LARGE_BATCH and s.dose
    ]
    assert {tuple(s["model"]) for s in specs} == {full.model} and {tuple(s["data"]) for s in specs} == {full.data}
    assert {s["steps"] for s in large} == {full.steps} and demo.LARGE_BATCH == full.data[0]  # the full batch
    seeds = {name: [s["seed"] for s in large if s["optimizer"] == name] for name in demo.OPTIMIZERS}
    assert seeds["ALTO"] == seeds["Lamb"] and len(seeds["ALTO"]) >= 5  # paired, at least 5
    small = [s for s in specs if s["batch_size"] == demo.SMALL_BATCH]
    assert small and {s["steps"] for s in small} == {demo.EPOCHS * (full.data[0] // demo.SMALL_BATCH)}  # fixed epochs


PAIRED = re.compile(
    r"^ALTO - Lamb at batch (\d+): [+-]\d+\.\d\d points, 95 % CI \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] "
    r"\(paired t, 5 seeds\): (ALTO better|Lamb better|not distinguishable)$"
)


def test_demo_output_format(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VALLEY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["demo", "--quick", "--jobs", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SMOKE TEST (--quick)")
    paired = [line for line in lines if PAIRED.match(line)]
    assert len(paired) == 1, lines
    assert any(line.startswith("large-batch gap: best at batch 50 minus best at batch 200 = ") for line in lines)
    reduced = [line for line in lines if "reduced version of `valley bench study`" in line]
    assert reduced and "docs/results.md" in reduced[0]
    assert len([line for line in lines if re.match(r"^  batch +\d+  (ALTO|Lamb) +test accuracy", line)]) == 4
    assert lines[-2] == f"plot: {out / 'demo_gap.png'}" and (out / "demo_gap.png").stat().st_size > 1000
    assert "ALTO - Lamb at batch" in (out / "demo.md").read_text()


@pytest.mark.parametrize(
    "option",
    [
        ["--seeds", "1"],
        ["--seeds", "x"],
        ["--jobs", "0"],
        ["--threads", "-1"],
        ["--out", "FILE"],
        ["--out", "FILE/sub"],
    ],
)
def test_bad_options_exit_2_with_one_line_before_training(option, monkeypatch, tmp_path, capsys):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    option = [part.replace("FILE", str(existing)) for part in option]

    def no_training(*args, **kwargs):
        raise AssertionError("trained despite a bad option")

    monkeypatch.setattr(demo, "train_all", no_training)
    assert main(["demo", *option]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("valley demo: "), captured.err
    assert option[0] in lines[0] and "Traceback" not in captured.err
    assert existing.read_text() == "keep me"


def test_an_interrupted_run_leaves_the_previous_outputs(monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "demo.md").write_text("previous report")
    (out / "demo_gap.png").write_bytes(b"previous plot")
    monkeypatch.setenv("VALLEY_CACHE", str(tmp_path / "cache"))
    real_plot = demo.plot_gap

    def interrupted_plot(*args):
        real_plot(*args)  # the new plot is written, then the run is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "plot_gap", interrupted_plot)
    with pytest.raises(KeyboardInterrupt):
        main(["demo", "--quick", "--jobs", "1", "--seeds", "2", "--out", str(out)])
    assert (out / "demo.md").read_text() == "previous report"
    assert (out / "demo_gap.png").read_bytes() == b"previous plot"
    assert sorted(os.listdir(tmp_path)) == ["cache", "out"]  # no staging folder left behind
