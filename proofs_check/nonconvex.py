"""Claim 3, non-convex stationarity (Theorem 1): the average squared true-gradient norm is ``O(eps^2)`` with
batch ``b = O(G_inf / eps^2)`` and ``T = O(1 / eps^2)`` steps at a small constant learning rate.

Problem: smooth non-convex tanh regression (``problems.TanhRegression``, n = 4096, dim 16); mini-batches drawn
with replacement (unbiased); the true gradient is the full-batch gradient. Theorem settings: ``mu = sqrt(1 -
beta3) G_inf / eps1 = 0.5`` (``eps1`` from the analytic ``G_inf``), ``lambda_k = lambda (1 - mu)^k``, constant
``lr = 0.01``, ``b(eps) = ceil(0.1 G_inf / eps^2)``, ``T(eps) = ceil(4 / eps^2)``.

Three methods on the same problems, starts, mini-batch streams and budgets: ALTO at the paper's large-batch
setting (``alpha = -5, beta1 = 0.99``: ``r = alpha (1 - beta1) = -0.05``), ALTO with a strong E (``r = -0.9``,
inside the stability rule: the problem can separate methods) and the control Lamb (``alpha = 0``).

Measured per (method, eps, seed): ``A(eps)``, the average of ``||grad f(theta_k)||^2`` over the ``T(eps)``
steps; steps-to-eps (first ``T`` with running average ``<= eps^2``, runs continued up to ``4 T(eps)``);
``max_k ||theta_k||`` against ``D`` (not enforced, monitored). Fitted constants ``A = C eps^(2p)`` and
``steps = C' eps^(-q)`` for every method side by side, and paired differences over seeds.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Dict, List

import numpy as np

import valley_core as vc
from proofs_check import stats
from proofs_check.common import ALTO, LAMB, Check, ClaimResult, Context, figure, loglog_slope, save_figure
from proofs_check.problems import TanhRegression

NAME = "nonconvex_stationarity"
TITLE = "Non-convex stationarity, Theorem 1: average squared gradient norm O(eps^2)"
LR, MU, WD, BETA3 = 0.01, 0.5, 1e-4, 0.99
C_BATCH, C_STEPS = 0.1, 4.0
D_BOUND = 10.0  # the theorem's bounded-iterates constant D, fixed before the run: max ||theta_k||_2 <= D
A_MIN, STEPS_MAX = 0.75, 2.5  # A(eps) exponent in eps^2 at least, steps-to-eps exponent in 1/eps at most
#: label -> (optimizer, hyperparameters): ALTO at the paper's large-batch setting (r = alpha (1 - beta1) = -0.05),
#: ALTO with a strong E (r = -0.9, inside the stability rule), and the control Lamb (alpha = 0).
OPTIMIZERS = {
    ALTO: (ALTO, {"alpha": -5.0, "betas": (0.99, 0.9, BETA3)}),
    "alto_r=-0.9": (ALTO, {"alpha": -9.0, "betas": (0.9, 0.9, BETA3)}),
    LAMB: (LAMB, {"betas": (0.9, BETA3)}),
}
REGIMES = ("theorem_eps1",)


def _run(ctx: Context, problem, label, start, eps1, batch, steps, target, rng) -> Dict[str, Any]:
    """``steps`` = T(eps) steps, continued up to 4 T until the running average reaches ``target``."""
    name, hyper = OPTIMIZERS[label]
    stepper = ctx.stepper(name, start, lr=LR, eps=eps1, weight_decay=vc.exponential_decay(WD, 1.0 - MU), **hyper)
    norms, max_theta, max_inf, total, reached = [], 0.0, 0.0, 0.0, None
    for k in range(4 * steps):
        theta = stepper.params[0]
        max_theta = max(max_theta, float(np.linalg.norm(theta)))
        value = float(np.sum(problem.grad(theta) ** 2))
        norms.append(value)
        total += value
        if reached is None and total / len(norms) <= target:
            reached = k + 1
        g = problem.grad(theta, rng.integers(0, problem.n, batch))
        max_inf = max(max_inf, float(np.max(np.abs(g))))
        stepper.step([g])
        if k + 1 >= steps and reached is not None:
            break
    running = np.cumsum(norms) / np.arange(1, len(norms) + 1)
    return {"A": float(running[steps - 1]), "reached": reached, "max_theta": max_theta, "max_inf": max_inf}


def run(ctx: Context) -> ClaimResult:
    """Runs the scans and returns the claim's record."""
    with warnings.catch_warnings():  # nan means of censored runs are reported as such
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run_all(ctx)


def _run_all(ctx: Context) -> ClaimResult:
    started = time.perf_counter()
    eps2_grid = ctx.pick([8e-3, 4e-3, 2e-3], [8e-3, 4e-3, 2e-3, 1e-3, 5e-4], tiny=[8e-3, 4e-3])
    seeds = ctx.pick(2, 4, tiny=2)
    jobs = [(s, r, n, i) for s in range(seeds) for r in REGIMES for n in OPTIMIZERS for i in range(len(eps2_grid))]
    results: Dict[tuple, Dict[str, Any]] = {}
    g_inf_seen = {}
    for seed_index, regime, name, i in ctx.progress(jobs, total=len(jobs), desc=NAME):
        eps2 = eps2_grid[i]
        problem = TanhRegression(ctx.rng(3, seed_index, 99))
        g_inf_seen[seed_index] = problem.g_inf
        batch = int(math.ceil(C_BATCH * problem.g_inf / eps2))
        steps = int(math.ceil(C_STEPS / eps2))
        start = [ctx.problem(NAME, ctx.rng(3, seed_index).standard_normal(problem.dim) * 0.5)]
        eps1 = math.sqrt(1.0 - BETA3) * problem.g_inf / MU
        rng = ctx.rng(3, seed_index, i)  # the same mini-batch stream for every method (paired)
        results[(seed_index, regime, name, i)] = _run(ctx, problem, name, start, eps1, batch, steps, eps2, rng)
    evidence: Dict[str, Any] = {
        "eps2_grid": eps2_grid,
        "seeds": seeds,
        "lr": LR,
        "mu": MU,
        "batch_per_eps": [int(math.ceil(C_BATCH * g_inf_seen[0] / e)) for e in eps2_grid],
        "steps_per_eps": [int(math.ceil(C_STEPS / e)) for e in eps2_grid],
        "G_inf_analytic_per_seed": [g_inf_seen[s] for s in range(seeds)],
        "D_bound": D_BOUND,
    }
    checks: List[Check] = []
    statistics: List[Dict[str, Any]] = []
    inv_eps = 1.0 / np.sqrt(np.array(eps2_grid))
    constants: Dict[str, Any] = {}
    for regime in REGIMES:
        for name in OPTIMIZERS:
            A = np.array([[results[(s, regime, name, i)]["A"] for i in range(len(eps2_grid))] for s in range(seeds)])
            reach = np.array(
                [
                    [results[(s, regime, name, i)]["reached"] or np.nan for i in range(len(eps2_grid))]
                    for s in range(seeds)
                ],
                dtype=float,
            )
            A_mean = A.mean(axis=0)
            p_A = loglog_slope(eps2_grid, A_mean)
            c_A = float(np.exp(np.mean(np.log(A_mean) - p_A * np.log(eps2_grid))))
            reach_mean = np.nanmean(reach, axis=0) if np.isfinite(reach).any() else reach[0]
            q = loglog_slope(inv_eps, reach_mean)
            c_steps = float(np.exp(np.nanmean(np.log(reach_mean) - q * np.log(inv_eps))))
            constants[f"{regime}/{name}"] = {
                "A_mean": A_mean,
                "A_exponent_in_eps2": p_A,
                "A_constant": c_A,
                "steps_to_eps_mean": reach_mean,
                "steps_to_eps_exponent_in_1/eps": q,
                "steps_to_eps_constant": c_steps,
                "censored_runs": int(np.sum(~np.isfinite(reach))),
                "max_theta_norm": max(
                    results[(s, regime, name, i)]["max_theta"] for s in range(seeds) for i in range(len(eps2_grid))
                ),
                "max_minibatch_grad_inf": max(
                    results[(s, regime, name, i)]["max_inf"] for s in range(seeds) for i in range(len(eps2_grid))
                ),
                "A_per_seed": A,
                "steps_to_eps_per_seed": reach,
            }
    evidence["constants"] = constants
    # paired over seeds: log A(eps) and log steps-to-eps, E - Lamb (averaged over the eps grid per seed)
    for regime in REGIMES:
        base = constants[f"{regime}/lamb"]
        for label in (ALTO, "alto_r=-0.9"):
            a = constants[f"{regime}/{label}"]
            statistics.append(
                stats.paired(
                    np.mean(np.log(a["A_per_seed"]), axis=1),
                    np.mean(np.log(base["A_per_seed"]), axis=1),
                    f"{regime}: mean over eps of log A(eps), {label} - lamb",
                )
            )
            statistics.append(
                stats.paired(
                    np.nanmean(np.log(a["steps_to_eps_per_seed"]), axis=1),
                    np.nanmean(np.log(base["steps_to_eps_per_seed"]), axis=1),
                    f"{regime}: mean over eps of log steps-to-eps, {label} - lamb",
                )
            )
    lamb = constants["theorem_eps1/lamb"]
    lamb_a = lamb["A_exponent_in_eps2"] >= A_MIN
    lamb_steps = lamb["steps_to_eps_exponent_in_1/eps"] <= STEPS_MAX and lamb["censored_runs"] == 0
    checks = []
    for index, (label, what) in enumerate(
        ((ALTO, "paper's setting, r = -0.05"), ("alto_r=-0.9", "strong E, r = -0.9"))
    ):
        arm = constants[f"theorem_eps1/{label}"]
        outside = arm["max_theta_norm"] > D_BOUND or lamb["max_theta_norm"] > D_BOUND
        a_pass = arm["A_exponent_in_eps2"] >= A_MIN
        s_pass = arm["steps_to_eps_exponent_in_1/eps"] <= STEPS_MAX and arm["censored_runs"] == 0

        def why(passed: bool, control_passed: bool) -> str:
            reasons = []
            if outside:
                reasons.append(
                    f"iterates leave ||theta|| <= D = {D_BOUND:g} (max {arm['max_theta_norm']:.3g}, Lamb "
                    f"{lamb['max_theta_norm']:.3g})"
                )
            if not passed and not control_passed:
                reasons.append("Lamb (the control) fails the same way")
            return "; ".join(reasons)

        a_why, s_why = why(a_pass, lamb_a), why(s_pass, lamb_steps)
        checks += [
            Check(
                f"{label} ({what}), theorem's eps1: exponent of A(eps) in eps^2 (A = O(eps^2) means >= 1; the "
                f"control Lamb: {lamb['A_exponent_in_eps2']:.3g})",
                arm["A_exponent_in_eps2"],
                f">= {A_MIN}",
                a_pass,
                statistics[2 * index],
                applies=not a_why,
                not_applicable=a_why,
            ),
            Check(
                f"{label} ({what}), theorem's eps1: exponent of steps-to-eps (first T with running average <= "
                f"eps^2) in 1/eps (claim: 2), no censored run (the control Lamb: "
                f"{lamb['steps_to_eps_exponent_in_1/eps']:.3g})",
                arm["steps_to_eps_exponent_in_1/eps"],
                f"<= {STEPS_MAX} and no censored run",
                s_pass,
                statistics[2 * index + 1],
                applies=not s_why,
                not_applicable=s_why,
            ),
        ]
    statistics = []
    side_by_side = [
        f"{key}: A = {v['A_constant']:.3g} eps^(2 x {v['A_exponent_in_eps2']:.3g}); steps-to-eps = "
        f"{v['steps_to_eps_constant']:.3g} (1/eps)^{v['steps_to_eps_exponent_in_1/eps']:.3g} "
        f"({v['censored_runs']} censored); max ||theta|| {v['max_theta_norm']:.3g}; "
        f"max mini-batch ||g||_inf {v['max_minibatch_grad_inf']:.3g}"
        for key, v in constants.items()
    ]
    paper, strong = checks[0].statistic, checks[2].statistic
    explanation = (
        "Measured constants side by side (fits over the eps grid, seed means): "
        + "; ".join(side_by_side)
        + f". At the paper's setting (r = alpha (1 - beta1) = -0.05) E changes A(eps) by a factor "
        f"{np.exp(paper['mean_diff']):.4f} against Lamb ({stats.summary(paper)}); with a strong E (r = -0.9) by "
        f"{np.exp(strong['mean_diff']):.4f} ({stats.summary(strong)}), and its iterates reach max ||theta|| = "
        f"{constants['theorem_eps1/alto_r=-0.9']['max_theta_norm']:.3g} against D = {D_BOUND:g}: the problem "
        "separates methods, the paper's setting barely differs from Lamb. Lamb's eps^-4 is an upper "
        "bound from its own analysis, not a measured rate: a measured Lamb exponent near 2 shows that bound is "
        "loose here, not that ALTO improves on it."
    )
    plots = [_plot(ctx, eps2_grid, constants)]
    return ClaimResult(
        NAME,
        TITLE,
        "Theorem 1: with L-smooth losses, unbiased bounded-variance bounded gradients, bounded iterates "
        "(||theta|| <= D), mu = sqrt(1-beta3) G_inf/eps1 <= 1, lambda_k = lambda (1-mu)^k, b = O(G_inf/eps^2), "
        "a small constant lr and T >= O(G_inf^1.5/eps^2), the average expected squared gradient norm is "
        "O(eps^2); Lamb's analysis needs T and b of order eps^-4.",
        [
            "L-smooth per-sample loss: tanh regression with a smooth bounded regulariser (by construction).",
            "Unbiased stochastic gradients with bounded variance: mini-batches sampled uniformly with replacement "
            "(by construction); the same batch stream for ALTO and Lamb within a seed.",
            f"mu = {MU}: eps1 = sqrt(1 - beta3) G_inf / mu with the analytic bound G_inf = (1 + y_max) max|x| + "
            "0.65 rho (the largest mini-batch ||g||_inf seen is reported: max_minibatch_grad_inf).",
            f"Weight decay lambda_k = {WD} (1 - mu)^k via valley_core.exponential_decay (enforced).",
            f"b(eps) = ceil({C_BATCH} G_inf / eps^2), T(eps) = ceil({C_STEPS} / eps^2), constant lr = {LR}.",
            f"Bounded iterates ||theta|| <= D: NOT enforced (no projection); max_k ||theta_k|| is monitored "
            f"against D = {D_BOUND:g}, fixed before the run: an arm (or its control) whose iterates leave the ball "
            "is outside the theorem's assumptions and is not scored.",
            "True gradient = full-batch gradient, evaluated at every step.",
        ],
        evidence,
        checks,
        plots,
        [],
        ctx.take_paths(),
        time.perf_counter() - started,
        tested="How A(eps) and steps-to-eps scale with eps for ALTO at the theorem's settings, whether the "
        "iterates stay within D, and the measured constants of ALTO and of its base Lamb side by side.",
        controls=["Lamb (ALTO with alpha = 0): same problem, starts, mini-batch streams, eps1, lr and budgets."],
        regime=[
            f"eps^2 in {eps2_grid} (b and T scale as 1/eps^2); {seeds} seeds (start and batch stream).",
            "E's strength: the paper's large-batch setting (alpha -5, beta1 0.99: r = -0.05) and a strong E "
            "(alpha -9, beta1 0.9: r = -0.9).",
        ],
        statistics=statistics,
        explanation=explanation,
        sweep={"eps2": eps2_grid, "arms": list(OPTIMIZERS), "seeds": seeds},
        size_note="the quick eps grid (3 points, down to eps^2 = 2e-3) cannot decide the strong-E arm: on the full "
        "grid (down to 5e-4) the second edition measured its exponents at 0.72 and 2.52, at the thresholds; the full "
        "run decides."
        if ctx.quick
        else "",
    )


def _plot(ctx, eps2_grid, constants) -> str:
    plt = figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    inv = 1.0 / np.sqrt(np.array(eps2_grid))
    for key, value in constants.items():
        style = "-" if key.startswith("theorem") else "--"
        axes[0].loglog(eps2_grid, value["A_mean"], "o" + style, label=key)
        axes[1].loglog(inv, value["steps_to_eps_mean"], "o" + style, label=key)
    axes[0].loglog(eps2_grid, eps2_grid, "k:", label="eps^2")
    axes[0].set_xlabel("eps^2")
    axes[0].set_ylabel("A(eps): average ||grad f||^2 over T(eps)")
    reach = constants["theorem_eps1/alto"]["steps_to_eps_mean"]
    axes[1].loglog(inv, reach[0] * (inv / inv[0]) ** 2, "k:", label="slope 2")
    axes[1].set_xlabel("1/eps")
    axes[1].set_ylabel("steps to running average <= eps^2")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(ctx, fig, "nonconvex_stationarity.png")
