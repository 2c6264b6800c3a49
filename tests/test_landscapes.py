"""The toy landscapes of ``valley bench landscapes``: their maths, and a quick smoke run of the study."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from valley_cli import bench_landscapes as bench

FUNCTIONS = [
    (bench.goldstein_price, bench.goldstein_price_gradient, 2, 2.0),
    (bench.ackley, bench.ackley_gradient, 2, 4.0),
    (bench.sharp_flat, bench.sharp_flat_gradient, 1, 3.0),
]


@pytest.mark.parametrize("value, gradient, dim, half_width", FUNCTIONS)
def test_gradients_match_central_differences(value, gradient, dim, half_width):
    points = np.random.default_rng(0).uniform(-half_width, half_width, size=(50, dim))
    h = 1e-6
    numeric = np.stack([(value(points + h * e) - value(points - h * e)) / (2 * h) for e in np.eye(dim)], axis=-1)
    np.testing.assert_allclose(gradient(points), numeric, rtol=1e-6, atol=1e-5 * np.abs(numeric).max())


def test_known_minima():
    assert bench.goldstein_price(np.array([0.0, -1.0])) == pytest.approx(3.0)
    assert bench.goldstein_price(np.array([-0.6, -0.4])) == pytest.approx(30.0)
    assert bench.ackley(np.array([0.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(bench.ackley_gradient(np.zeros((1, 2))), np.zeros((1, 2)))
    one_d = {landscape.name: landscape for landscape in bench.landscapes(quick=True)}["sharp_flat"]
    sharp, flat = one_d.sharp_minimiser[0], one_d.global_minimiser[0]
    assert sharp == pytest.approx(-1.4985, abs=1e-3) and flat == pytest.approx(1.4171, abs=1e-3)
    assert bench.sharp_flat(np.array([flat])) < bench.sharp_flat(np.array([sharp]))  # the flat one is global
    assert abs(bench.sharp_flat_gradient(np.array([[sharp], [flat]]))).max() < 1e-3


def test_every_optimizer_sees_the_same_starts():
    landscape = bench.landscapes(quick=True)[0]
    first = bench.starts(landscape, np.random.default_rng(3))
    again = bench.starts(landscape, np.random.default_rng(3))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (landscape.grid**2, 2)
    low, high = landscape.bounds
    assert first.min() >= low and first.max() <= high


def test_quick_run_writes_the_table_plots_and_command(tmp_path):
    from valley_cli.main import main

    out = tmp_path / "landscapes"
    assert main(["bench", "landscapes", "--quick", "--out", str(out), "--seed", "1"]) == 0
    text = (out / "landscapes.md").read_text()
    assert f"valley bench landscapes --quick --out {out} --seed 1" in text
    assert "Quick mode" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    controls = [line for line in table if line.count("|") == 9]
    table = [line for line in table if line not in controls]
    assert controls[0].startswith("| landscape | A | B |")
    assert len(controls) == 2 + len(bench.landscapes(quick=True)) * len(bench.CONTROL_PAIRS)
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header == list(bench.TABLE_COLUMNS)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    titles = [landscape.title for landscape in bench.landscapes(quick=True)]
    assert [(row[0], row[1]) for row in rows] == [(t, o) for t in titles for o in bench.OPTIMIZER_SETTINGS]
    for row in rows:
        starts, steps = int(row[2]), int(row[3])
        assert steps == 150
        match = re.fullmatch(r"(\d+)/(\d+) \((\d+)%\)", row[5])
        assert match and int(match[2]) == starts and 0 <= int(match[1]) <= starts
        assert row[6] == "n/a" if row[0] != titles[2] else re.fullmatch(r"\d+/\d+ \(\d+%\)", row[6])
        float(row[7]), float(row[8])
    summary = json.loads((out / "landscapes.json").read_text())
    assert [list(r.values()) for r in summary["rows"]] == rows
    for landscape in bench.landscapes(quick=True):
        png = out / f"landscapes_{landscape.name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(landscapes_{landscape.name}.png)" in text


def test_controls_are_compared_start_by_start():
    landscape = bench.landscapes(quick=True)[2]
    points = bench.starts(landscape, np.random.default_rng(0))
    run = {
        name: bench.Result(landscape, name, bench.trajectories(landscape, bench.make_optimizer(name, 0.05), points))
        for name in ("ALTO(alpha=0)", "Lamb", "Adam")
    }
    # ALTO at alpha = 0 is Lamb: the same update, so no start differs and the test finds nothing
    np.testing.assert_allclose(run["ALTO(alpha=0)"].path, run["Lamb"].path, rtol=1e-12, atol=1e-12)
    assert bench.paired_reach(run["ALTO(alpha=0)"], run["Lamb"]) == (0, 0, 1.0)
    only_a, only_b, p = bench.paired_reach(run["Adam"], run["Lamb"])
    assert only_a == int(np.sum(run["Adam"].reached & ~run["Lamb"].reached)) and 0.0 < p <= 1.0
