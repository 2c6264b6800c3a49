"""Tests of ``valley bench study``: the MNIST-1D generator, paired statistics, the protocol, ``--quick`` end to end."""

from __future__ import annotations

import json
import math
import os
import random
import socket

import numpy as np
import pytest

from valley_cli.study import analysis, data, protocol, runner

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


# ------------------------------------------------------------------------------------------- statistics


def test_paired_difference_interval_and_minimum_detectable_effect_on_known_inputs():
    # d = (1, 2, 3, 4, 5): mean 3, sd sqrt(2.5); t_{0.975, 4} = 2.7764451051977987, t_{0.8, 4} = 0.9409645
    # (statistical tables): MDE = (t_{0.975} + t_{0.8}) sd / sqrt(n)
    result = analysis.paired_difference([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert result["mean"] == pytest.approx(3.0) and result["sd"] == pytest.approx(math.sqrt(2.5))
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert result["mde"] == pytest.approx((2.7764451051977987 + 0.9409645) * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    # pairing matters: a shared offset per seed cancels (an unpaired test would see a huge spread)
    base = [50.0, 70.0, 90.0]
    paired = analysis.paired_difference([b + 1.0 for b in base], base)
    assert paired["mean"] == pytest.approx(1.0) and paired["ci_low"] == pytest.approx(1.0)
    one = analysis.paired_difference([2.0], [1.0])
    assert one["ci_low"] == -math.inf and one["ci_high"] == math.inf and one["mde"] == math.inf
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        analysis.paired_difference([1.0, 2.0], [1.0])


def test_pooled_estimate_uses_seeds_as_blocks():
    # per-seed means over the two settings are all 2: the seed-to-seed spread inside a setting cancels
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    b = {0: 3.0, 1: 2.0, 2: 1.0, 3: 0.0, 9: 100.0}  # seed 9 is not in every setting: left out
    pooled = analysis.pooled([a, b])
    assert pooled["mean"] == pytest.approx(2.0) and pooled["n"] == 4 and pooled["settings"] == 2
    assert pooled["ci_low"] == pytest.approx(2.0) and pooled["ci_high"] == pytest.approx(2.0)
    # against a transcription: mean of per-seed means, t interval over the seeds
    c = {0: 0.5, 1: -1.0, 2: 2.0, 3: 0.0}
    means = [(a[s] + c[s]) / 2 for s in range(4)]
    m, sd = sum(means) / 4, float(np.std(means, ddof=1))
    got = analysis.pooled([a, c])
    assert got["mean"] == pytest.approx(m) and got["ci_high"] - m == pytest.approx(3.182446305284263 * sd / 2)
    assert analysis.pooled([{0: 1.0}]) is None


def test_verdict_follows_the_interval_and_the_metric_direction():
    row = {"a": "ALTO", "b": "Lamb", "ci_low": 0.1, "ci_high": 0.5}
    assert analysis.verdict(row, higher=True) == "ALTO better"
    assert analysis.verdict(row, higher=False) == "Lamb better"  # higher perplexity is worse
    assert analysis.verdict({**row, "ci_low": -0.1}, higher=True) == "not distinguishable"


# --------------------------------------------------------------------------------------------- protocol


def toy_runs(peak: int, collapse: dict, seeds=(1000, 1001)):
    """A toy landscape over grid indices: validation accuracy peaks at ``peak``, each seed collapses from its
    ``collapse`` index on (final loss = initial loss)."""

    def record(index: int, seed: int) -> dict:
        dead = index >= collapse[seed]
        return {
            "task": "mnist1d",
            "val_accuracy": 0.1 if dead else 0.9 - 0.01 * abs(index - peak) - 0.001 * (seed - 1000),
            "initial_train_loss": 2.3,
            "final_train_loss": 2.3 if dead else 0.1,
            "diverged": False,
        }

    return record


@pytest.mark.parametrize("prior_index", [12, 20, 26])
def test_tuning_brackets_the_optimum_and_finds_each_seeds_collapse(prior_index):
    record = toy_runs(peak=18, collapse={1000: 24, 1001: 23})
    state = protocol.TuningState(protocol.start_indices(protocol.grid_lr(prior_index)))
    assert len(state.indices) == protocol.START_POINTS
    rounds = 0
    while True:
        runs = {(i, s): record(i, s) for i in state.indices for s in (1000, 1001)}
        added = protocol.advance(state, runs, (1000, 1001), higher=True)
        state.indices = state.indices + added
        rounds += 1
        if not added:
            break
        assert rounds < 20
    assert state.done and state.bracketed
    assert state.best == 18 and state.indices[0] < state.best < state.indices[-1]  # never at the edge
    assert state.collapse == {1000: protocol.grid_lr(24), 1001: protocol.grid_lr(23)}
    assert state.indices == list(range(state.indices[0], state.indices[-1] + 1))  # no holes
    lrs = state.lrs
    assert all(b / a <= 1.25 * (1 + 1e-5) for a, b in zip(lrs, lrs[1:]))
    assert all(state.scores[i] == -math.inf for i in state.indices if i >= 23)  # a collapse counts as the worst


def test_tuning_stops_at_max_points_and_says_it_is_not_bracketed():
    record = toy_runs(peak=40, collapse={1000: 99, 1001: 99})
    state = protocol.TuningState(protocol.start_indices(protocol.grid_lr(10)))
    for _ in range(30):
        runs = {(i, s): record(i, s) for i in state.indices for s in (1000, 1001)}
        added = protocol.advance(state, runs, (1000, 1001), higher=True, max_points=9)
        state.indices = state.indices + added
        if not added:
            break
    assert len(state.indices) == 9 and state.done and not state.bracketed and state.best == state.indices[-1]


def test_collapse_rule():
    ok = {"diverged": False, "initial_train_loss": 2.3, "final_train_loss": 0.5}
    assert not protocol.collapsed(ok)
    assert protocol.collapsed({**ok, "final_train_loss": 0.9 * 2.3})
    assert protocol.collapsed({**ok, "diverged": True})
    assert protocol.collapsed({**ok, "final_train_loss": float("nan")})


def test_tuning_seeds_are_never_final_seeds():
    config = protocol.full_config()
    config.validate()
    assert not set(config.tuning_seeds) & set(config.seeds) and len(config.seeds) >= 8
    with pytest.raises(ValueError, match="disjoint"):
        protocol.StudyConfig(settings=config.settings, tuning_seeds=(0,)).validate()


def test_full_protocol_covers_the_three_regimes():
    config = protocol.full_config()
    r1 = [s for s in config.settings if s.regime == 1 and s.pairs == (("ALTO", "Lamb"),)]
    n_train = r1[0].data[0]
    assert min(s.batch_size for s in r1) == 128 and max(s.batch_size for s in r1) == n_train  # up to full batch
    for s in r1:  # fixed epochs (the last partial batch of an epoch is dropped)
        assert s.steps == protocol.R1_EPOCHS * (n_train // s.batch_size)
    r2 = [s for s in config.settings if s.regime == 2]
    assert {s.batch_size for s in r2} == {16384} and {s.data[0] for s in r2} == {50_000}
    assert sorted(s.steps for s in r2) == [75, 150, 300, 600]
    (r3,) = [s for s in config.settings if s.regime == 3]
    assert r3.task == "lm" and r3.batch_size >= 512
    assert {regime for regime in (s.regime for s in config.settings if s.dose)} == {1, 2, 3}
    e_bases = [s for s in config.settings if s.pairs != (("ALTO", "Lamb"),)]
    assert e_bases and all(s.regime == 1 and set(s.pairs) == {("EAdamW", "AdamW"), ("ESGD", "SGD")} for s in e_bases)
    post = config.post
    assert set(post.alphas) == {0.0, -1.0, -5.0} and set(post.beta1s) == {0.9, 0.99}
    assert set(post.schedules) == {"constant", "cosine"} and 0.0 in post.weight_decays and len(post.weight_decays) > 1


def test_final_arms_pair_the_seeds_and_hold_dose_and_placebo():
    pytest.importorskip("valley_core")
    setting = protocol.Setting(
        1, "mnist1d", ("cnn", 4), (2000, 100, 100), 2000, 10, (("ALTO", 0.05), ("Lamb", 0.05)), dose=True
    )
    arms = {arm["name"]: arm for arm in runner.final_arms(setting, {"ALTO": 0.04, "Lamb": 0.05}, (0, 1, 2))}
    for arm in arms.values():
        assert [s["seed"] for s in arm["specs"]] == [0, 1, 2]
    assert arms["Lamb at ALTO's lr"]["lr"] == 0.04 and arms["Lamb"]["lr"] == 0.05
    assert arms["Lamb lr x0.9"]["lr"] == pytest.approx(0.045) and arms["Lamb lr x1.1"]["lr"] == pytest.approx(0.055)
    assert {name for name, arm in arms.items() if arm["role"] == "dose"} == {
        f"ALTO alpha={a:g}" for a in (-1, -2, -5, -10)
    }
    assert arms["ALTO alpha=-2"]["overrides"] == {"alpha": -2.0}  # beta1 0.99 is the default at batch 2000
    # at batch 2000 the paper's defaults are alpha -5, beta1 0.99: that dose arm IS the main ALTO run (one key)
    key = protocol.run_key
    assert [key(s) for s in arms["ALTO alpha=-5"]["specs"]] == [key(s) for s in arms["ALTO"]["specs"]]


# ------------------------------------------------------------------------------------------- end to end


def tiny_config(**changes) -> protocol.StudyConfig:
    setting = protocol.Setting(
        1, "mnist1d", ("cnn", 2), (100, 100, 100), 100, 3, (("ALTO", 0.05), ("Lamb", 0.05)), dose=True
    )
    post = protocol.PostConfig(
        data=(100, 100, 100),
        hidden=(4,),
        steps=5,
        seeds=(0,),
        alphas=(0.0, -1.0),
        beta1s=(0.99,),
        schedules=("constant",),
        weight_decays=(0.0,),
    )
    base = dict(
        settings=(setting,), final_seeds=2, tuning_seeds=(1000,), post=post, max_points=5, jobs=1, progress=False
    )
    return protocol.StudyConfig(**{**base, **changes})


def test_toy_study_writes_the_report_and_study_json(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("mnist1d")
    pytest.importorskip("matplotlib")
    from valley_cli.study import report

    config = tiny_config()
    result = runner.run_study(config, str(tmp_path / "runs"), log=lambda line: None)
    assert result.complete and result.computed == len(result.records) and result.reused == 0
    paths = report.write_outputs(
        result, config, str(tmp_path / "out"), "valley bench study (toy)", None, str(tmp_path / "runs")
    )
    payload = json.loads(open(paths["json"]).read())
    for key in ("runs", "comparisons", "tuning", "selected", "collapse_lrs", "arms", "protocol", "post_convergence"):
        assert key in payload, key
    tuning = payload["tuning"]["r1/mnist1d/b100/s3"]["ALTO"]
    assert len(tuning["grid"]) >= 5 and tuning["selected_lr"] in tuning["grid"] and "1000" in tuning["collapse_lr"]
    assert all("train_accuracy" in run for run in payload["runs"] if run["kind"] == "train")
    main = [c for c in payload["comparisons"] if c["kind"] == "main" and c["a"] == "ALTO"][0]
    assert main["alto_minus_lamb"] == pytest.approx(main["a_mean"] - main["b_mean"])
    assert main["ci_low"] <= main["alto_minus_lamb"] <= main["ci_high"] and main["seeds"] == [0, 1]
    text = open(paths["markdown"]).read()
    assert text.splitlines()[2] == "## The answer"  # the answer comes first
    assert text.index("## The answer") < text.index("## The paper's numbers beside ours") < text.index("## Protocol")
    # a partial result (one seed left: infinite intervals) still renders, labelled INCOMPLETE
    partial = runner.StudyResult(
        {k: r for k, r in result.records.items() if r.get("seed") != 1},
        result.tuning,
        result.arms,
        result.settings,
        result.post,
        0,
        0,
        0.0,
        False,
        [],
    )
    paths = report.write_outputs(partial, config, str(tmp_path / "partial"), "toy", None, str(tmp_path / "runs"))
    text = open(paths["markdown"]).read()
    assert (
        "**INCOMPLETE: 0 of 1 settings finished" in text and "## Partial results (INCOMPLETE: not the answer)" in text
    )
    assert "## The answer" not in text
    assert json.loads(open(paths["json"]).read())["comparisons"][0]["ci_low"] is None
    assert oct(os.stat(paths["json"]).st_mode & 0o777) == oct(0o666 & ~current_umask())
    # resuming reads every run from the cache; a lost run file costs exactly that run
    os.remove(runner.RunCache(str(tmp_path / "runs")).path(main_key(result)))
    again = runner.run_study(config, str(tmp_path / "runs"), resume=True, log=lambda line: None)
    assert again.computed == 1 and again.reused == len(result.records) - 1


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main_key(result) -> str:
    return result.arms["r1/mnist1d/b100/s3"][0]["keys"][0]


def test_quick_outputs_say_they_are_a_smoke_test():
    config = protocol.quick_config()
    assert config.quick
    result = runner.StudyResult({}, {}, {}, list(config.settings), [], 0, 0, 0.0, True)
    from valley_cli.study import report

    assert report.answer_lines(result, config)[0].startswith("SMOKE TEST")
    assert "SMOKE TEST" in report.answer_lines(result, config)[0] and "no conclusion" in report.SMOKE


def test_an_interrupted_study_keeps_its_runs_and_logs_its_time(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("mnist1d")
    real = runner.train_run
    calls = []

    def interrupted_after_two(spec):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(runner, "train_run", interrupted_after_two)
    cache = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        runner.run_study(tiny_config(), str(cache), log=lambda line: None)
    assert len(runner.RunCache(str(cache)).keys()) == 2
    (logged,) = runner.invocations(str(cache))
    assert logged["computed"] == 2 and logged["complete"] is False and logged["end"] >= logged["start"]
