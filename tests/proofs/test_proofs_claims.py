"""Every claim in its quick form (numpy, seed 0): assertions on the evidence numbers, not only the verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from proofs_check.cli import CLAIMS, main


def _claim(quick_report, name):
    return quick_report[0][name]


def test_every_claim_has_a_complete_record(quick_report):
    results, out = quick_report
    assert list(results) == list(CLAIMS)
    for result in results.values():
        record = result.to_json()
        assert {"name", "statement", "assumptions", "evidence", "verdict"} <= set(record)
        assert record["verdict"] in ("PASS", "FAIL")
        assert record["verdict"] == ("PASS" if all(c["passed"] for c in record["checks"]) else "FAIL")
        assert len(record["assumptions"]) >= 3 and record["runner_paths"]
        for plot in record["plots"]:
            assert (out / plot).stat().st_size > 1000
        json.dumps(record)


def test_stability_rule(quick_report):
    result = _claim(quick_report, "stability_rule")
    ev = result.evidence
    for name in ("esgd", "eadam", "alto"):
        # the rule is not vacuous: some configurations outside it are unstable on the well-conditioned quadratic
        assert ev[name]["kappa=1"]["outside_stable_fraction"] < 1.0
        # and it is conservative for alpha > 0: every alpha (1 - beta1) >= 1 we tried stayed stable
        assert ev[name]["kappa=1"]["outside_stable_positive_alpha"] == 1.0
    assert ev["esgd"]["kappa=1"]["inside_stable_fraction"] == 1.0
    assert ev["alto"]["kappa=100"]["inside_stable_fraction"] == 1.0
    # measured failure of sufficiency: EAdam at beta1 = 0.99, alpha (1 - beta1) = -0.95 on kappa = 100
    assert ev["eadam"]["kappa=100"]["inside_unstable_configs_beta1_r"] == [(0.99, -0.95)]
    assert ev["inside_unstable_count"] == 1 and result.verdict == "FAIL"


def test_convex_regret_and_negative_control(quick_report):
    result = _claim(quick_report, "convex_regret")
    ev = result.evidence
    assert ev["beta2^2/beta3"] < 1
    for problem in ("logistic", "least_squares"):
        for setting in ("alto_vanilla(alpha0=0.5,beta1=0.01)", "alto_vanilla(alpha0=-5,beta1=0.99)"):
            entry = ev[f"{problem}/{setting}"]
            assert entry["slope"] <= 0.6
            assert entry["R_over_T_decreasing"]
            assert entry["max_theta_norm"] <= ev["radius_D"] + 1e-12
            assert 0.0 <= entry["monotonicity_violation_fraction"] <= 1.0
        control = ev[f"{problem}/negative_control:constant_lr(alpha0=0.5,beta1=0.01)"]
        good = ev[f"{problem}/alto_vanilla(alpha0=0.5,beta1=0.01)"]
        # separation: the control's regret grows clearly faster and ends far higher
        assert control["slope"] > good["slope"] + 0.3
        assert control["regret_mean"][-1] > 3 * good["regret_mean"][-1]
    assert result.verdict == "PASS"


def test_nonconvex_stationarity(quick_report):
    result = _claim(quick_report, "nonconvex_stationarity")
    ev = result.evidence
    assert ev["max_minibatch_grad_inf_seen"] <= ev["G_inf_analytic"]
    assert ev["slope_A_vs_eps2_alto"] >= 0.75
    assert np.all(np.asarray(ev["A_alto"]) <= np.asarray(ev["eps2_grid"]))
    assert ev["exponent_T"] < -0.5
    assert ev["exponent_b"] < -0.1
    assert 1.5 <= ev["steps_to_eps_exponent_alto"] <= 2.5
    assert abs(ev["steps_to_eps_exponent_alto"] - ev["steps_to_eps_exponent_lamb"]) < 0.5
    assert ev["censored_runs"] == {"alto": 0, "lamb": 0}
    assert result.verdict == "PASS"


def test_hessian_link(quick_report):
    result = _claim(quick_report, "hessian_link")
    ev = result.evidence
    for key in ("tanh_regression/alto", "tanh_regression/eadam", "rosenbrock_valley/alto", "rosenbrock_valley/eadam"):
        assert 0.7 <= ev[key]["slope_rel_vs_step"] <= 1.3
        assert ev[key]["median_cos"][-1] > 0.9999
        assert ev[key]["median_rel"][-1] < 1e-3
        assert ev[key]["median_rel"][-1] < ev[key]["median_rel"][0]
    assert result.verdict == "PASS"


def test_flatness_and_speed(quick_report):
    result = _claim(quick_report, "flatness_and_speed")
    ev = result.evidence
    for key in ("1d/esgd", "1d/eadam", "2d/esgd", "2d/eadam"):
        rates = [ev[key][f"alpha={a:g}"]["flat_rate"] for a in (-5, 0, 5)]
        # measured: with deterministic gradients the sign of alpha does not change which basin a start ends in
        assert max(rates) - min(rates) <= 0.02
        assert all(0.4 < r < 0.8 for r in rates)
        for a in (-5, 0, 5):
            assert ev[key][f"alpha={a:g}"]["diverged"] == 0.0
            assert ev[key][f"alpha={a:g}"]["reached_fraction"] >= 0.9
    mlp = ev["mlp"]
    for setting in mlp.values():
        assert all(0 < e < 100 for e in setting["top_eig"])
        assert min(setting["test_accuracy"]) > 0.9
    assert mlp["alto(alpha=-5,beta1=0.99)"]["mean_top_eig"] < mlp["lamb"]["mean_top_eig"]
    assert result.verdict == "FAIL"


def test_valley_travel(quick_report):
    result = _claim(quick_report, "valley_travel")
    ev = result.evidence
    for key in ("rosenbrock/sgd_vs_esgd", "rosenbrock/adam_vs_eadam", "cardioid/sgd_vs_esgd", "cardioid/adam_vs_eadam"):
        assert ev[key]["base_reached_fraction"] == 1.0 and ev[key]["E_reached_fraction"] == 1.0
        assert ev[key]["E_median_net_travel"] > ev[key]["base_median_net_travel"]
        assert ev[key]["E_median_path_along_floor"] >= ev[key]["E_median_net_travel"]
    assert (
        ev["rosenbrock/adam_vs_eadam"]["E_median_net_travel"]
        > 5 * ev["rosenbrock/adam_vs_eadam"]["base_median_net_travel"]
    )
    assert result.verdict == "PASS"


def test_cli_writes_reports_and_exit_code(tmp_path):
    out = tmp_path / "report"
    docs = tmp_path / "docs" / "proofs.md"
    docs.parent.mkdir()
    code = main(["--quick", "--claims", "hessian_link", "--out", str(out), "--docs-md", str(docs), "--no-progress"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "PASS" and [c["name"] for c in report["claims"]] == ["hessian_link"]
    assert report["meta"]["command"].startswith("python -m proofs_check --quick --backend numpy")
    assert "![hessian_link](../report/hessian_link.png)" in docs.read_text()
    assert "| check | measured | threshold | pass |" in (out / "report.md").read_text()
    # a failing claim gives exit code 1
    assert main(["--quick", "--claims", "stability_rule", "--out", str(tmp_path / "s"), "--no-progress"]) == 1


def test_valley_proofs_subcommand(tmp_path):
    from valley_cli.main import main as valley_main

    assert valley_main(["proofs", "--quick", "--claims", "hessian_link", "--out", str(tmp_path), "--no-progress"]) == 0


def test_torch_backend_reproduces_numpy_evidence(tmp_path):
    """The report doubles as a cross-backend test: the same claim through backends.torch gives the same numbers."""
    pytest.importorskip("torch")
    from proofs_check import hessian_link
    from proofs_check.common import Context

    numpy_result = hessian_link.run(Context("numpy", True, 0, str(tmp_path / "n")))
    torch_result = hessian_link.run(Context("torch", True, 0, str(tmp_path / "t")))
    assert all("torch" in p for p in torch_result.runner_paths)
    for key, value in numpy_result.evidence.items():
        if isinstance(value, dict):
            for field, numbers in value.items():
                np.testing.assert_allclose(torch_result.evidence[key][field], numbers, rtol=1e-8, atol=1e-12)
