"""Every claim in the tests' tiny mode: the report's structure, and that each check can fail (a planted wrong
optimizer flips it)."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from proofs_check.cli import CLAIMS
from proofs_check.common import Context


def test_every_claim_has_a_complete_record(tiny_report):
    results, out = tiny_report
    assert list(results) == list(CLAIMS)
    for result in results.values():
        record = json.loads(json.dumps(result.to_json()))
        assert {"name", "statement", "tested", "controls", "regime", "statistics", "explanation", "verdict"} <= set(
            record
        )
        assert record["tested"] and record["controls"] and record["regime"] and record["explanation"]
        assert record["verdict"] == ("PASS" if all(c["passed"] for c in record["checks"]) else "FAIL")
        assert len(record["assumptions"]) >= 3 and record["runner_paths"]
        # every claim backs at least one check with a paired statistic, effect size included
        statistics = [c["statistic"] for c in record["checks"] if c["statistic"]] + record["statistics"]
        assert statistics, record["name"]
        for statistic in statistics:
            assert {"n", "mean_diff", "ci95", "sign_test_p"} <= set(statistic)
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
    def plant(name, hyper):
        if isinstance(hyper.get("lr"), float):
            hyper["lr"] = hyper["lr"] * factor
        return name, hyper

    return plant


def _constant_lr(name, hyper):
    if name == "alto_vanilla":
        hyper["lr"] = 0.1
    return name, hyper


#: (claim, planted wrong optimizer, {check prefix: the planted run's verdict}): every listed check must pass or
#: fail in the honest tiny run and flip when the optimizer is replaced; "*" stands for every check of the claim.
PLANTED = [
    ("stability_rule", _scale_alpha(3.0), {"*": False}),  # alpha pushed outside the rule
    (
        "convex_regret",
        _constant_lr,  # the lr schedule the theorem needs, broken
        {
            "logistic, alto_vanilla": False,
            "logistic_drifting, alto_vanilla": False,
            "least_squares, alto_vanilla": False,
            "logistic_adversarial, alto_vanilla": True,
        },
    ),
    ("nonconvex_stationarity", _scale_lr(1e-4), {"ALTO, theorem's eps1": False}),  # an optimizer that barely moves
    ("nonconvex_stationarity", _scale_lr(100.0), {"bounded iterates": False}),  # steps far too large
    (
        "hessian_link",
        _scale_lr(1e4),  # steps far outside the Taylor regime
        {"tanh_regression, alto: log-log": False, "rosenbrock_valley, eadam: log-log": False, "stochastic": False},
    ),
    (
        "flatness_and_speed",
        _scale_alpha(-1.0),  # the sign of alpha flipped
        {"escape from the sharp well": False, "steps to f - f_flat": True},
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
    flipped = 0
    for before, after in zip(honest.checks, planted.checks):
        for prefix, verdict in flips.items():
            if prefix == "*" or before.description.startswith(prefix):
                assert (before.passed, after.passed) == (not verdict, verdict), before.description
                flipped += 1
    assert flipped >= len(flips)
    if any(verdict is False for verdict in flips.values()):
        assert planted.verdict == "FAIL"


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
