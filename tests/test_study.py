"""Tests of ``valley bench study``: the MNIST-1D generator, paired statistics, the protocol, ``--quick`` end to end."""

from __future__ import annotations

import json
import math
import random
import socket

import numpy as np
import pytest

from valley_cli.study import analysis, data, grids

# ---------------------------------------------------------------------------------------------- the data


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist1d_generator_is_deterministic_and_offline(offline):
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate())
    x1, y1 = data.generate_mnist1d(200)
    x2, y2 = data.generate_mnist1d(200)
    assert x1.shape == (200, 40) and x1.dtype == np.float32 and y1.dtype == np.int64
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.bincount(y1).tolist() == [20] * 10  # equal classes
    assert abs(float(x1.mean())) < 1e-4 and abs(float(x1.std()) - 1) < 1e-3  # the generator standardises
    x3, _ = data.generate_mnist1d(200, seed=7)
    assert not np.array_equal(x1, x3)
    # the caller's random streams are untouched
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    with pytest.raises(ValueError, match="multiple of 10"):
        data.generate_mnist1d(15)


def test_mnist1d_split_is_cached_on_disk(offline, tmp_path, monkeypatch):
    pytest.importorskip("mnist1d")
    first = data.load_mnist1d(300, 50, 50, cache=str(tmp_path))
    assert [len(a) for a in first] == [300, 300, 50, 50, 50, 50]
    assert len(list(tmp_path.glob("mnist1d-400-42-*.npz"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated despite the cache")

    monkeypatch.setattr(data, "generate_mnist1d", no_generation)
    second = data.load_mnist1d(300, 50, 50, cache=str(tmp_path))
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_stdlib_text_split():
    text, used = data.load_stdlib_text()
    assert len(used) >= 20 and set(text) == {"train", "val", "test"}
    assert len(text["train"]) > 10 * len(text["val"]) and int(text["train"].max()) < data.LM_VOCAB


# ------------------------------------------------------------------------------------------- statistics


def test_paired_difference_on_known_inputs():
    # d = (1, 2, 3, 4, 5): mean 3, sd sqrt(2.5); t_{0.975, 4} = 2.7764451051977987 (statistical tables)
    result = analysis.paired_difference([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert result["mean"] == pytest.approx(3.0)
    assert result["sd"] == pytest.approx(math.sqrt(2.5))
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    # pairing matters: a shared offset per seed cancels (an unpaired test would see a huge spread)
    base = [50.0, 70.0, 90.0]
    paired = analysis.paired_difference([b + 1.0 for b in base], base)
    assert paired["mean"] == pytest.approx(1.0) and paired["ci_low"] == pytest.approx(1.0)
    one = analysis.paired_difference([2.0], [1.0])
    assert one["mean"] == 1.0 and one["ci_low"] == -math.inf and one["ci_high"] == math.inf
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        analysis.paired_difference([1.0, 2.0], [1.0])


def test_verdict_follows_the_interval_and_the_metric_direction():
    row = {"task": "mnist1d", "ci_low": 0.1, "ci_high": 0.5}
    assert analysis.verdict_word(row) == "ALTO better"
    assert analysis.verdict_word({**row, "task": "lm"}) == "Lamb better"  # higher perplexity is worse
    assert analysis.verdict_word({**row, "ci_low": -0.1}) == "no significant difference"


def test_time_to_target_first_crossing():
    curve = [[10, 1.0, 0.5], [20, 2.0, 0.8], [30, 3.0, 0.9]]
    assert analysis.first_reaching(curve, 0.8, higher=True) == (20, 2.0)
    assert analysis.first_reaching(curve, 0.95, higher=True) is None
    assert analysis.first_reaching([[5, 0.5, 9.0], [10, 1.0, 7.0]], 8.0, higher=False) == (10, 1.0)


# --------------------------------------------------------------------------------------------- protocol


def test_warmup_then_cosine():
    from valley_cli.study.training import warmup_cosine_factor, warmup_steps

    steps = 100
    warmup = warmup_steps(steps)
    factors = [warmup_cosine_factor(k, steps, warmup) for k in range(1, steps + 1)]
    assert warmup == 10 and factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[10] == 1.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and 0 < factors[-1] < 1e-3


def test_full_protocol_shape():
    config = grids.StudyConfig()
    config.validate()
    plan = grids.groups(config)
    largest = [g for g in plan if g.task == "mnist1d" and g.batch_size == 16384]
    assert sorted(g.steps for g in largest) == [75, 150, 300]  # the step-budget axis around the epoch budget
    assert config.steps_for(16384) >= 300 and {g.batch_size for g in plan if g.task == "mnist1d"} == {
        128,
        1024,
        4096,
        16384,
    }
    for group in plan:
        assert len(group.grid) >= 5 and all(
            b / a == pytest.approx(10**0.5, rel=0.06) for a, b in zip(group.grid, group.grid[1:])
        )
        assert group.tuning_seeds == (0, 1)
        tuned = {(s["optimizer"], s["lr"]) for s in grids.tuning_specs(group)}
        assert {lr for name, lr in tuned if name == "ALTO"} == {lr for name, lr in tuned if name == "Lamb"}
    assert [g.clip_arm for g in plan].count(True) == 1 and largest[0].clip_arm
    assert all(len(g.seeds) >= 5 for g in plan if g.task == "mnist1d" and g.batch_size >= 4096)
    assert [g.batch_size for g in plan if g.task == "lm"] == [32, 64] and config.lm_steps >= 500


def test_selection_uses_the_mean_over_tuning_seeds_and_treats_divergence_as_worst():
    group = grids.Group("mnist1d", 64, 10, (0.1, 0.3), (0, 1), (0, 1, 2))
    records = {}
    values = {
        ("ALTO", 0.1): (0.80, 0.80),
        ("ALTO", 0.3): (0.95, 0.60),
        ("Lamb", 0.1): (0.7, 0.7),
        ("Lamb", 0.3): (0.9, 0.9),
    }
    for (name, lr), accs in values.items():
        for seed, acc in zip((0, 1), accs):
            spec = grids.spec(group, name, lr, seed)
            records[grids.run_key(spec)] = {**spec, "val_accuracy": acc, "diverged": False}
    assert grids.select(group, records) == {"ALTO": 0.1, "Lamb": 0.3}
    records[grids.run_key(grids.spec(group, "Lamb", 0.3, 1))]["diverged"] = True
    assert grids.select(group, records)["Lamb"] == 0.1


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("backends.torch")
    pytest.importorskip("mnist1d")
    from valley_cli.main import main

    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))  # also seen by the spawned workers
    out = tmp_path / "study"
    assert main(["bench", "study", "--quick", "--out", str(out), "--no-progress", "--jobs", "2"]) == 0
    payload = json.loads((out / "study.json").read_text())
    config = grids.quick_config()
    assert payload["complete"] and payload["runs_computed"] == len(payload["runs"]) > 0
    for run in payload["runs"]:
        for key in ("task", "optimizer", "batch_size", "seed", "lr", "steps", "steps_completed", "curve"):
            assert key in run, key
        assert ("test_perplexity" if run["task"] == "lm" else "test_accuracy") in run
        assert not run["diverged"] and run["final_train_loss"] < run["initial_train_loss"], run["key"]
    assert {r["batch_size"] for r in payload["runs"] if r["task"] == "mnist1d"} == set(config.batch_sizes)
    assert {r["optimizer"] for r in payload["runs"]} == {"ALTO", "Lamb", "AdamW", "SGD"}
    comparisons = payload["comparisons"]
    keys = {(c["task"], c["batch_size"], c["steps"], c["arm"]) for c in comparisons}
    assert ("mnist1d", 4096, 20, "clip") in keys and ("mnist1d", 4096, 10, "main") in keys
    assert {(t, b) for t, b, _, _ in keys} == {("mnist1d", 512), ("mnist1d", 4096), ("lm", 4), ("lm", 8)}
    for c in comparisons:
        assert c["ci_low"] <= c["alto_minus_lamb"] <= c["ci_high"] and c["seeds"] == [0, 1]
        assert c["alto_minus_lamb"] == pytest.approx(c["alto_mean"] - c["lamb_mean"])
    report = (out / "study.md").read_text()
    for heading in ("## Verdict", "## The paper's numbers beside ours", "## Time to target", "## Protocol"):
        assert heading in report
    assert (out / "study_scaling.png").stat().st_size > 1000 and (out / "study_curves.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
    # --resume reuses every cached run; a lost run file costs exactly that run
    lost = sorted((out / "runs").glob("mnist1d-b4096-s20-SGD-*.json"))[-1]
    lost.unlink()
    assert main(["bench", "study", "--quick", "--out", str(out), "--no-progress", "--resume"]) == 0
    again = json.loads((out / "study.json").read_text())
    assert again["runs_computed"] == 1 and again["runs_reused"] == len(payload["runs"]) - 1
    assert again["comparisons"] == comparisons


def test_bad_study_arguments_exit_2(tmp_path, capsys):
    from valley_cli.main import main

    existing = tmp_path / "file"
    existing.write_text("x")
    assert main(["bench", "study", "--quick", "--out", str(existing)]) == 2
    assert main(["bench", "study", "--quick", "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("valley bench study: ") for line in err)
