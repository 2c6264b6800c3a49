"""Every claim in the tests' tiny mode: the report's structure, and that each check can fail (a planted wrong
optimizer flips it)."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from proofs_check.cli import CLAIMS
from proofs_check.common import FAIL, NOT_TESTABLE, PASS, VERDICTS, Check, Context, verdict_of


def test_every_claim_has_a_complete_record(tiny_report):
    results, out = tiny_report
    assert list(results) == list(CLAIMS)
    for result in results.values():
        record = json.loads(json.dumps(result.to_json()))
        keys = {"name", "statement", "tested", "controls", "regime", "statistics", "explanation", "verdict", "reason"}
        assert keys | {"sweep", "paired_statistics"} <= set(record)
        assert record["tested"] and record["controls"] and record["regime"] and record["explanation"]
        assert record["verdict"] in VERDICTS and record["verdict"] == verdict_of(result.checks)
        assert record["reason"] and "\n" not in record["reason"]
        assert record["sweep"] and all(isinstance(v, (list, int, float, str)) for v in record["sweep"].values())
        assert len(record["assumptions"]) >= 3 and record["runner_paths"]
        # every claim backs at least one check with a paired statistic against its control, effect size included
        statistics = record["paired_statistics"]
        assert statistics and any(c["statistic"] for c in record["checks"]), record["name"]
        for statistic in statistics:
            assert {"n", "mean_diff", "ci95", "sign_test_p"} <= set(statistic)
            assert " - " in statistic["label"], statistic["label"]  # a difference: treatment - control
            if statistic["n"]:
                assert "cohens_dz" in statistic and len(statistic["ci95"]) == 2
        for plot in record["plots"]:
            assert (out / plot).stat().st_size > 1000


def _e_optimizer(name):
    return name in ("alto", "alto_vanilla", "eadam", "esgd", "eadamw")


def _scale_alpha(factor):
    def plant(name, hyper):
        if _e_optimizer(name) and "alpha" in hyper and isinstance(hyper["alpha"], float):
            hyper["alpha"] = hyper["alpha"] * factor
        return name, hyper

    return plant


def _scale_lr(factor):
    """Scales the lr of the E-optimizers only (their controls stay honest)."""

    def plant(name, hyper):
        if _e_optimizer(name) and isinstance(hyper.get("lr"), float):
            hyper["lr"] = hyper["lr"] * factor
        return name, hyper

    return plant


def _constant_lr(name, hyper):
    if name == "alto_vanilla":
        hyper["lr"] = 0.1
    return name, hyper


#: (claim, planted wrong optimizer, {check prefix: the planted run's verdict}): every listed check must pass or
#: fail in the honest tiny run and flip when the optimizer is replaced.
PLANTED = [
    (
        "stability_rule",
        _scale_alpha(3.0),  # alpha pushed outside the rule
        {
            "esgd: fraction": False,
            "eadam: fraction": False,
            "alto: fraction": False,
            "networks, esgd (lr 0.1): runs": False,
        },
    ),
    (
        "convex_regret",
        _constant_lr,  # the lr schedule the theorem needs, broken
        {
            "logistic, alto_vanilla": False,
            "logistic_drifting, alto_vanilla": False,
            "least_squares, alto_vanilla": False,
        },
    ),
    ("nonconvex_stationarity", _scale_lr(1e-4), {"alto (paper's setting": False, "alto_r=-0.9": False}),  # barely moves
    (
        "hessian_link",
        _scale_lr(1e4),  # steps far outside the Taylor regime
        {"tanh_regression, alto: log-log": False, "rosenbrock_valley, eadam: log-log": False, "stochastic": False},
    ),
    (
        "flatness_and_speed",
        _scale_alpha(-1.0),  # the sign of alpha flipped
        {"escape from the sharp well": False, "speed sweep": True},
    ),
    ("flatness_and_speed", _scale_lr(10.0), {"r = -0.9 keeps flat-well starts": False}),
    ("valley_travel", _scale_alpha(0.0), {"rosenbrock, sgd_vs_esgd": False, "rosenbrock, adam_vs_eadam": False}),
]


@pytest.mark.parametrize("claim, plant, flips", PLANTED, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(PLANTED)])
def test_a_planted_wrong_optimizer_flips_the_checks(claim, plant, flips, tiny_report, tmp_path):
    honest = tiny_report[0][claim]
    ctx = Context("numpy", True, 0, str(tmp_path), plant=plant, tiny=True)
    planted = importlib.import_module(CLAIMS[claim]).run(ctx)
    assert len(planted.checks) == len(honest.checks)
    flipped, scored_failures = 0, 0
    for before, after in zip(honest.checks, planted.checks):
        for prefix, verdict in flips.items():
            if before.description.startswith(prefix):
                assert (before.passed, after.passed) == (not verdict, verdict), before.description
                flipped += 1
                scored_failures += after.applies and not verdict
    assert flipped >= len(flips)
    if scored_failures:  # a contradicted check inside the claim's regime makes the claim FAIL
        assert planted.verdict == FAIL


def test_controls_are_run_on_the_same_problems(tiny_report):
    results = tiny_report[0]
    stability = results["stability_rule"].evidence
    assert 0.0 in stability["ratios_alpha_times_1_minus_beta1"]
    regret = results["convex_regret"].evidence
    assert {"logistic/control:alpha=0", "logistic_drifting/control:constant_alpha(alpha=-5,beta1=0.99)"} <= set(regret)
    for key in ("logistic/alto_vanilla(alpha0=0.5,beta1=0.01)", "least_squares/control:alpha=0"):
        assert 0.0 <= regret[key]["steps_monotonicity_holds_fraction"] <= 1.0
        assert regret[key]["max_theta_norm"] <= regret["radius_D"] + 1e-12
    constants = results["nonconvex_stationarity"].evidence["constants"]
    assert {"theorem_eps1/alto", "theorem_eps1/alto_r=-0.9", "theorem_eps1/lamb"} == set(constants)
    stochastic = results["hessian_link"].evidence["stochastic"]
    assert set(stochastic) >= {"alto", "lamb"}
    cos = stochastic["alto"]["median_cosine_per_batch_seed_mean"]
    assert cos[0] < cos[-1]  # the link sharpens with the batch
    flat = results["flatness_and_speed"].evidence
    assert "r=0" in flat["escape_fraction_map"]["noise=0"] and set(flat["mlp"]) >= {"ALTO vs Lamb", "EAdam vs Adam"}
    travel = results["valley_travel"].evidence
    assert {"descending/lamb_vs_alto", "cardioid/sgd_vs_esgd"} <= set(travel)


def test_matched_loss_difference():
    from proofs_check.flatness import matched_difference

    loss = np.array([1.0, 0.5, 0.2, 0.1])
    # b is a at twice the eigenvalue: log difference -log 2 wherever the loss ranges overlap
    assert matched_difference(loss, loss * 3, loss, loss * 6) == pytest.approx(-np.log(2))
    assert np.isnan(matched_difference(loss, loss, loss * 100, loss))  # no overlap


def test_paired_statistics():
    from proofs_check import stats

    statistic = stats.paired([2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert statistic["positive"] == 6 and statistic["sign_test_p"] == pytest.approx(2 / 64)
    assert statistic["ci95"][0] > 0 and stats.above(statistic) and not stats.below(statistic)
    assert statistic["mean_diff"] == pytest.approx(2.25)
    assert stats.paired([1.0, np.nan], [0.0, 0.0])["n"] == 1


def test_torch_backend_reproduces_numpy_evidence(tmp_path):
    """The report doubles as a cross-backend test: the same claim through backends.torch gives the same numbers."""
    pytest.importorskip("torch")
    from proofs_check import hessian_link

    numpy_result = hessian_link.run(Context("numpy", True, 0, str(tmp_path / "n"), tiny=True))
    torch_result = hessian_link.run(Context("torch", True, 0, str(tmp_path / "t"), tiny=True))
    assert all("torch" in p for p in torch_result.runner_paths)
    for key, value in numpy_result.evidence.items():
        if isinstance(value, dict) and key != "stochastic":
            for field, numbers in value.items():
                np.testing.assert_allclose(torch_result.evidence[key][field], numbers, rtol=1e-8, atol=1e-12)
    for name in ("alto", "lamb"):
        np.testing.assert_allclose(
            torch_result.evidence["stochastic"][name]["per_seed"],
            numpy_result.evidence["stochastic"][name]["per_seed"],
            rtol=1e-7,
            atol=1e-10,
        )


def test_the_verdict_rule():
    def check(passed, applies=True):
        return Check("c", 1.0, "t", passed, applies=applies, not_applicable="" if applies else "outside")

    assert verdict_of([check(True), check(True)]) == PASS
    assert verdict_of([check(True), check(False)]) == FAIL
    # a failure outside the claim's assumptions is measured, not scored
    assert verdict_of([check(True), check(False, applies=False)]) == PASS
    assert verdict_of([check(False, applies=False), check(True, applies=False)]) == NOT_TESTABLE
    assert verdict_of([]) == NOT_TESTABLE


def test_paired_intervals_t_below_10_and_bca_from_10():
    from scipy.stats import t

    from proofs_check import stats

    d = np.array([1.0, 2.0, 3.0, 4.5])
    statistic = stats.paired(d + 10.0, np.full(4, 10.0))
    half = t.ppf(0.975, 3) * np.std(d, ddof=1) / 2.0  # Student's t interval written out
    assert statistic["interval"] == "t"
    np.testing.assert_allclose(statistic["ci95"], [d.mean() - half, d.mean() + half], rtol=1e-12)
    many = np.random.default_rng(3).normal(1.0, 1.0, 30)
    statistic = stats.paired(many, np.zeros(30))
    assert statistic["interval"] == "BCa bootstrap" and statistic["ci95"][0] < many.mean() < statistic["ci95"][1]


def test_a_planted_problem_outside_the_assumptions_gives_the_third_verdict(tmp_path):
    """Non-convex stationarity from starts 100x further out: the iterates leave the theorem's ||theta|| <= D, so
    the claim is not testable there (not FAIL), whatever the exponents say."""
    from proofs_check import nonconvex

    result = nonconvex.run(Context("numpy", True, 0, str(tmp_path), tiny=True, plant_problem=lambda c, s: s * 100.0))
    assert result.verdict == NOT_TESTABLE
    assert all(not c.applies and "||theta|| <= D" in c.not_applicable for c in result.checks)
    assert result.reason.startswith("no check is in the claim's regime")
