"""Claim 2, convex regret (Theorem 2): ``R(T) = O(sqrt(T))`` for ALTO (vanilla) with the theorem's schedules,
against its controls.

Online logistic regression (i.i.d.; drifting: the labelling vector rotates twice over the run; adversarial: each
label is chosen after seeing ``theta_t`` to make it wrong, ``y_t = -sign(x_t . theta_t)``) and online least
squares in dimension 10: at step ``t`` the learner holds ``theta_t``, pays ``f_t(theta_t)``, receives
``grad f_t(theta_t)``, takes one ALTO-vanilla step and is projected back onto ``||theta|| <= D``. Regret
``R(T) = sum_t f_t(theta_t) - min_{||theta|| <= D} sum_t f_t(theta)``, the comparator found for every ``T`` of a
log-spaced grid by an exact-Hessian trust-region solver on the KKT conditions of the ball constraint.

Settings, all on the same streams, seeds and budgets: the theorem's two (``alpha_k = alpha0/sqrt(k)`` with
``alpha0 = 0.5, beta1 = 0.01`` and ``alpha0 = -5, beta1 = 0.99``); the controls ``alpha = 0`` (Lamb-vanilla,
E off), constant ``alpha = -5`` (is the theorem's ``alpha/sqrt(k)`` needed?) and constant ``lr`` (the negative
control: it breaks ``lr_k = lr/sqrt(k)``, the check must reject it). Checks (thresholds fixed before any
run): the log-log slope of the seed-averaged ``R(T)`` (where positive) over ``T >= max(100, T_max/100)`` is at
most ``0.5 + 0.1`` and ``R(T)/T`` at ``T_max`` is below its value at the window's start (the bound is an upper
bound: a negative regret satisfies it). Paired statistics over seeds give E's effect on the regret.
The fraction of steps where the theorem's monotonicity assumption holds is measured and reported.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np
from scipy.optimize import minimize

import valley_core as vc
from proofs_check import problems, stats
from proofs_check.common import ALTO_VANILLA, Check, ClaimResult, Context, figure, fmt, loglog_slope, save_figure

NAME = "convex_regret"
TITLE = "Convex regret, Theorem 2: R(T) = O(sqrt(T))"
SLOPE_TOLERANCE = 0.1
DIM = 10
RADIUS = 3.0

PROBLEMS = {
    "logistic": (problems.logistic_stream, problems.logistic_losses, problems.logistic_grad, problems.logistic_hess),
    "logistic_drifting": (
        problems.logistic_drifting_stream,
        problems.logistic_losses,
        problems.logistic_grad,
        problems.logistic_hess,
    ),
    # x_t as in the i.i.d. stream; the label is chosen by an adaptive adversary after seeing theta_t
    "logistic_adversarial": (
        problems.logistic_stream,
        problems.logistic_losses,
        problems.logistic_grad,
        problems.logistic_hess,
    ),
    "least_squares": (
        problems.least_squares_stream,
        problems.least_squares_losses,
        problems.least_squares_grad,
        problems.least_squares_hess,
    ),
}

#: name -> (alpha_0, beta1, constant lr?, constant alpha?) ; lr_0 = 0.1, lambda_0 = 1e-4, beta2 = 0.9, beta3 = 0.99.
SETTINGS = {
    "alto_vanilla(alpha0=0.5,beta1=0.01)": (0.5, 0.01, False, False),
    "alto_vanilla(alpha0=-5,beta1=0.99)": (-5.0, 0.99, False, False),
    "alto_vanilla(alpha0=-9,beta1=0.9)": (-9.0, 0.9, False, False),
    "control:alpha=0": (0.0, 0.01, False, False),
    "control:constant_alpha(alpha=-5,beta1=0.99)": (-5.0, 0.99, False, True),
    "negative_control:constant_lr(alpha0=0.5,beta1=0.01)": (0.5, 0.01, True, False),
}
IID = ("logistic", "least_squares")  # the streams on which constant lr is a negative control
THEOREM = (
    "alto_vanilla(alpha0=0.5,beta1=0.01)",
    "alto_vanilla(alpha0=-5,beta1=0.99)",
    "alto_vanilla(alpha0=-9,beta1=0.9)",  # the strong-E arm: r = alpha0 (1 - beta1) = -0.9
)
#: a stream is in the theorem's regime when its monotonicity assumption holds (every coordinate) on at least
#: this fraction of the steps (third edition; set after the second edition measured about 2 % everywhere).
MONOTONE_MIN = 0.5
LR0, WD0, BETA2, BETA3 = 0.1, 1e-4, 0.9, 0.99


def best_in_hindsight(
    total_loss: Callable, grad: Callable, hess: Callable, radius: float, start: np.ndarray
) -> np.ndarray:
    """``argmin_{||theta|| <= radius} F(theta)`` for a smooth convex ``F`` (KKT: bisection on ``mu``)."""

    def solve(mu: float, x0: np.ndarray) -> np.ndarray:
        result = minimize(
            lambda t: total_loss(t) + 0.5 * mu * t @ t,
            x0,
            jac=lambda t: grad(t) + mu * t,
            hess=lambda t: hess(t) + mu * np.eye(len(t)),
            method="trust-exact",
            options={"gtol": 1e-10, "maxiter": 500},
        )
        return result.x

    theta = solve(0.0, start)
    if np.linalg.norm(theta) <= radius:
        return theta
    low, high = 0.0, 1.0
    while np.linalg.norm(solve(high, theta)) > radius:
        high *= 4.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        candidate = solve(mid, theta)
        if np.linalg.norm(candidate) > radius:
            low = mid
        else:
            high = mid
            theta = candidate
        if high - low < 1e-12 * max(1.0, high):
            break
    return solve(high, theta)


def _online_run(ctx: Context, problem: str, setting: str, seed_index: int, steps: int) -> Dict[str, Any]:
    stream, losses, grad, _ = PROBLEMS[problem]
    alpha0, beta1, constant_lr, constant_alpha = SETTINGS[setting]
    rng = ctx.rng(2, seed_index, list(PROBLEMS).index(problem))
    x, y = stream(rng, steps, DIM)
    start = rng.standard_normal(DIM)
    start /= np.linalg.norm(start)
    stepper = ctx.stepper(
        ALTO_VANILLA,
        [start],
        lr=LR0 if constant_lr else vc.inverse_sqrt(LR0),
        alpha=alpha0 if constant_alpha else vc.inverse_sqrt(alpha0),
        weight_decay=vc.inverse_sqrt(WD0),
        betas=(beta1, BETA2, BETA3),
    )
    paid = np.empty(steps)
    max_grad_inf = 0.0
    max_norm = 0.0
    projected = 0
    violations = 0
    checked = 0
    steps_with_violation = 0
    previous = None
    for t in range(steps):
        theta = stepper.params[0]
        if problem == "logistic_adversarial":  # the label that makes theta_t wrong: y_t = -sign(x_t . theta_t)
            y[t] = -1.0 if float(x[t] @ theta) > 0 else 1.0
        paid[t] = problems_loss(losses, theta, x[t], y[t])
        g = grad(theta, x[t : t + 1], y[t : t + 1])
        max_grad_inf = max(max_grad_inf, float(np.max(np.abs(g))))
        stepper.step([g])
        theta = stepper.params[0]
        norm = float(np.linalg.norm(theta))
        if norm > RADIUS:
            projected += 1
            stepper.set_params([theta * (RADIUS / norm)])
        max_norm = max(max_norm, float(np.linalg.norm(stepper.params[0])))
        second = stepper.second_moments()
        if second is not None:
            k = t + 1
            # The Adam-type monotonicity assumption: sqrt(v_k)/lr_k >= sqrt(v_{k-1})/lr_{k-1}, coordinate-wise.
            lr_k = LR0 if constant_lr else LR0 / np.sqrt(k)
            scaled = np.sqrt(second[0]) / lr_k
            if previous is not None:
                bad = scaled < previous * (1.0 - 1e-12)
                violations += int(bad.sum())
                checked += bad.size
                steps_with_violation += int(bad.any())
            previous = scaled
    return {
        "x": x,
        "y": y,
        "paid": paid,
        "max_grad_inf": max_grad_inf,
        "max_norm": max_norm,
        "final_norm": float(np.linalg.norm(stepper.params[0])),
        "final_cosine_with_start": float(
            stepper.params[0] @ start / (np.linalg.norm(stepper.params[0]) * np.linalg.norm(start) + 1e-300)
        ),
        "projection_active_fraction": projected / steps,
        "monotonicity_violation_fraction": violations / checked if checked else None,
        "steps_with_violation_fraction": steps_with_violation / (steps - 1) if checked else None,
    }


def problems_loss(losses: Callable, theta: np.ndarray, x: np.ndarray, y: float) -> float:
    return float(losses(theta, x[None, :], np.array([y]))[0])


def _regret_curve(problem: str, run: Dict[str, Any], grid: np.ndarray) -> np.ndarray:
    _, losses, grad, hess = PROBLEMS[problem]
    cumulative = np.cumsum(run["paid"])
    regrets = []
    comparator = np.zeros(DIM)
    for T in grid:
        x, y = run["x"][:T], run["y"][:T]
        comparator = best_in_hindsight(
            lambda t: float(np.sum(losses(t, x, y))),
            lambda t: grad(t, x, y),
            lambda t: hess(t, x, y),
            RADIUS,
            comparator,
        )
        regrets.append(cumulative[T - 1] - float(np.sum(losses(comparator, x, y))))
    return np.array(regrets)


def run(ctx: Context) -> ClaimResult:
    """Runs every setting on every problem and returns the claim's record."""
    started = time.perf_counter()
    steps = ctx.pick(1000, 4000, tiny=600)
    seeds = ctx.pick(3, 5, tiny=2)
    grid = np.unique(np.round(np.logspace(np.log10(30), np.log10(steps), ctx.pick(6, 14))).astype(int))
    fit_from = max(100.0, steps / 100.0)
    jobs = [(p, s, i) for p in PROBLEMS for s in SETTINGS for i in range(seeds)]
    curves: Dict[tuple, List[np.ndarray]] = {}
    tracking: Dict[tuple, List[Dict[str, Any]]] = {}
    for problem, setting, seed_index in ctx.progress(jobs, total=len(jobs), desc=NAME):
        result = _online_run(ctx, problem, setting, seed_index, steps)
        curves.setdefault((problem, setting), []).append(_regret_curve(problem, result, grid))
        tracking.setdefault((problem, setting), []).append(
            {k: v for k, v in result.items() if k not in ("x", "y", "paid")}
        )

    evidence: Dict[str, Any] = {
        "T_grid": grid,
        "steps": steps,
        "seeds": seeds,
        "dim": DIM,
        "radius_D": RADIUS,
        "beta2^2/beta3": BETA2**2 / BETA3,
        "fit_from_T": fit_from,
    }
    checks: List[Check] = []
    statistics: List[Dict[str, Any]] = []
    fit = grid >= fit_from
    slopes: Dict[tuple, float] = {}
    negative: List[Check] = []
    theorem: List[tuple] = []
    for problem in PROBLEMS:
        for setting in SETTINGS:
            mean = np.mean(curves[(problem, setting)], axis=0)
            slope = loglog_slope(grid[fit], mean[fit])
            slopes[(problem, setting)] = slope
            per_seed = [loglog_slope(grid[fit], c[fit]) for c in curves[(problem, setting)]]
            ratio = mean / grid
            # the theorem is an upper bound: the average regret must fall over the window (negative regret, a
            # learner beating the best fixed point, satisfies it); the slope is fitted where R(T) > 0
            decreasing = bool(ratio[-1] < ratio[fit][0])
            track = tracking[(problem, setting)]
            monotone = [t["monotonicity_violation_fraction"] for t in track]
            entry = {
                "regret_mean": mean,
                "regret_at_T_max_per_seed": [c[-1] for c in curves[(problem, setting)]],
                "regret_over_T": ratio,
                "slope": slope,
                "slope_per_seed": per_seed,
                "R_over_T_falls_over_window": decreasing,
                "R_over_T_first_last": [ratio[0], ratio[-1]],
                "max_grad_inf": max(t["max_grad_inf"] for t in track),
                "max_theta_norm": max(t["max_norm"] for t in track),
                "projection_active_fraction": float(np.mean([t["projection_active_fraction"] for t in track])),
                "final_theta_norm_mean": float(np.mean([t["final_norm"] for t in track])),
                "final_cosine_with_start_mean": float(np.mean([t["final_cosine_with_start"] for t in track])),
                "monotonicity_violation_fraction": (None if monotone[0] is None else float(np.mean(monotone))),
                "steps_monotonicity_holds_fraction": (
                    None
                    if monotone[0] is None
                    else 1.0 - float(np.mean([t["steps_with_violation_fraction"] for t in track]))
                ),
            }
            evidence[f"{problem}/{setting}"] = entry
            passes = slope <= 0.5 + SLOPE_TOLERANCE and decreasing
            if setting.startswith("negative_control") and problem in IID:
                negative.append(
                    Check(
                        f"{problem}, negative control (constant lr): the check must reject it "
                        "(slope > 0.6 or R/T not falling)",
                        f"slope {fmt(slope)}, R/T falls {decreasing}",
                        "check fails",
                        not passes,
                    )
                )
            elif setting in THEOREM:
                theorem.append((problem, setting, slope, per_seed, ratio, passes, entry))
        for problem_, setting, slope, per_seed, ratio, passes, entry in [t for t in theorem if t[0] == problem]:
            control = evidence[f"{problem}/control:alpha=0"]
            control_passes = bool(control["slope"] <= 0.5 + SLOPE_TOLERANCE and control["R_over_T_falls_over_window"])
            holds = entry["steps_monotonicity_holds_fraction"]
            why = []
            if holds is not None and holds < MONOTONE_MIN:
                why.append(f"monotonicity holds on {100 * holds:.0f} % of steps (< {100 * MONOTONE_MIN:.0f} %)")
            if not passes and not control_passes:
                why.append("the alpha = 0 control fails the same way")
            checks.append(
                Check(
                    f"{problem}, {setting}: log-log slope of the seed-mean R(T) > 0 for T >= {fit_from:g}; "
                    "R(T)/T at T_max below its value at the window's start",
                    f"slope {fmt(slope)}, R/T {fmt(ratio[fit][0])} -> {fmt(ratio[-1])}",
                    f"slope <= {0.5 + SLOPE_TOLERANCE} and R/T falls",
                    passes,
                    stats.paired(
                        per_seed,
                        control["slope_per_seed"],
                        f"{problem}, {setting}: per-seed regret slope, E - alpha=0",
                    ),
                    applies=not why,
                    not_applicable="; ".join(why),
                )
            )
        # E's effect on the regret, paired over seeds (same stream, start and budget)
        control = evidence[f"{problem}/control:alpha=0"]["regret_at_T_max_per_seed"]
        for setting in THEOREM[:2] + ("control:constant_alpha(alpha=-5,beta1=0.99)",):
            statistics.append(
                stats.paired(
                    evidence[f"{problem}/{setting}"]["regret_at_T_max_per_seed"],
                    control,
                    f"{problem}: R(T_max), {setting} - alpha=0",
                )
            )
        statistics.append(
            stats.paired(
                evidence[f"{problem}/control:constant_alpha(alpha=-5,beta1=0.99)"]["regret_at_T_max_per_seed"],
                evidence[f"{problem}/alto_vanilla(alpha0=-5,beta1=0.99)"]["regret_at_T_max_per_seed"],
                f"{problem}: R(T_max), constant alpha=-5 - alpha=-5/sqrt(k)",
            )
        )
    scored = any(c.applies for c in checks)
    for check in negative:  # the instrument's own test: scored only when some theorem check is
        check.applies = scored
        check.not_applicable = "" if scored else "tests the instrument; no theorem setting is in the regime"
    checks += negative
    evidence["paired_regret_differences"] = statistics
    holds = [
        evidence[f"{p}/{s}"]["steps_monotonicity_holds_fraction"]
        for p in PROBLEMS
        for s in THEOREM
        if evidence[f"{p}/{s}"]["steps_monotonicity_holds_fraction"] is not None
    ]

    def verdict_of(problem: str, setting: str) -> bool:
        entry = evidence[f"{problem}/{setting}"]
        return bool(slopes[(problem, setting)] <= 0.5 + SLOPE_TOLERANCE and entry["R_over_T_falls_over_window"])

    per_stream = []
    for problem in PROBLEMS:
        passing = [s for s in SETTINGS if not s.startswith("negative") and verdict_of(problem, s)]
        failing = [s for s in SETTINGS if not s.startswith("negative") and not verdict_of(problem, s)]
        per_stream.append(
            f"{problem}: "
            + (f"within the bound: {', '.join(passing)}" if passing else "no setting within the bound")
            + (f"; NOT within it: {', '.join(failing)}" if failing else "")
        )
    control_rejected = all(c.passed for c in checks if "negative control" in c.description)
    explanation = (
        "Per stream, which settings keep R(T) within the sqrt(T) bound (slope <= 0.6 and R/T falling): "
        + "; ".join(per_stream)
        + ". "
        + (
            "The check rejects the constant-lr control on the i.i.d. streams, so it can fail. "
            if control_rejected
            else "The check does NOT reject the constant-lr control on every i.i.d. stream. "
        )
        + (
            "The alpha = 0 and constant-alpha controls get the same verdict as the theorem's settings on every "
            "stream, so the rate (or its failure) comes from the Lamb part and the lr schedule, not from E; E's "
            "effect is the paired difference listed below. "
            if all(len({verdict_of(p, s) for s in SETTINGS if not s.startswith("negative")}) == 1 for p in PROBLEMS)
            else "The controls do not all get the theorem settings' verdict (see the evidence). "
        )
        + (
            f"The monotonicity assumption of the proof holds on only {_percent_range(holds)} of the steps "
            "(all coordinates at once) of the theorem's runs. "
            if holds
            else ""
        )
    )
    adversarial = evidence["logistic_adversarial/alto_vanilla(alpha0=0.5,beta1=0.01)"]
    if not verdict_of("logistic_adversarial", "alto_vanilla(alpha0=0.5,beta1=0.01)"):
        explanation += (
            "On the adversarial stream the regret grows with slope "
            f"{slopes[('logistic_adversarial', 'alto_vanilla(alpha0=0.5,beta1=0.01)')]:.2f}: measured, ||theta_T|| "
            f"ends at {adversarial['final_theta_norm_mean']:.2g} (seed mean) with cosine "
            f"{adversarial['final_cosine_with_start_mean']:.2f} to the start. The trust ratio scales every step by "
            "phi = ||theta|| + norm_eps, so theta shrinks towards 0 while keeping much of its direction, the "
            "adversary's labels stay close to those of a fixed direction, and a fixed comparator fits them. "
            "A positive lower bound on phi (which LAMB's analysis assumes) is not among the assumptions enforced "
            "here: valley's phi is bounded below only by norm_eps (1e-10 by default). "
        )
    collapsed = evidence["logistic_adversarial/negative_control:constant_lr(alpha0=0.5,beta1=0.01)"]
    explanation += (
        "On the drifting stream the regret turns negative (the learner tracks the drift better than any fixed "
        "point); there, and on the adversarial stream (where constant lr ends at ||theta_T|| = "
        f"{collapsed['final_theta_norm_mean']:.2g} and its regret stays flat), constant lr is not a negative "
        "control."
    )
    plots = [_plot(ctx, grid, curves)]
    assumptions = [
        f"Convex per-sample losses: logistic and squared loss (by construction), dimension {DIM}.",
        "Bounded gradients: ||x_t|| = 1 and |theta| <= D keep ||grad f_t|| bounded (logistic <= 1; squares "
        "<= D + max|y|); the largest ||g||_inf seen is reported (max_grad_inf).",
        f"Bounded domain ||theta|| <= D = {RADIUS}: enforced by projecting onto the ball after every step "
        "(max_theta_norm; projection_active_fraction is the fraction of steps where the projection acted).",
        f"beta2^2/beta3 < 1: beta2 = {BETA2}, beta3 = {BETA3}, ratio {BETA2**2 / BETA3:.4f} (by construction).",
        f"Schedules lr_k = {LR0}/sqrt(k), alpha_k = alpha0/sqrt(k), lambda_k = {WD0}/sqrt(k) via "
        "valley_core.inverse_sqrt; the vanilla form (Algorithm 1, no bias correction) that the theorem is "
        "proved for; the trust ratio is on (eps defaults).",
        "Monotonicity (Adam-type proofs: sqrt(v_k)/lr_k >= sqrt(v_{k-1})/lr_{k-1} per coordinate): NOT "
        "enforced (the optimizer is not modified); measured along every run from the optimizer's own v: the "
        "fraction of steps where it holds for every coordinate, and the fraction of violating "
        "(step, coordinate) pairs.",
        "Comparator: best fixed point in hindsight for every T of the grid (exact-Hessian trust-region solver "
        "with the ball constraint handled by KKT bisection).",
    ]
    return ClaimResult(
        NAME,
        TITLE,
        "Theorem 2 (any sequence of convex losses): for convex losses with bounded gradients on a bounded set, with "
        "lr_k = lr/sqrt(k), alpha_k <= alpha/sqrt(k), lambda_k <= lambda/sqrt(k), "
        "beta2^2/beta3 < 1 and a monotonicity assumption, ALTO's regret is O(sqrt(T)) "
        "(so R(T)/T -> 0).",
        assumptions,
        evidence,
        checks,
        plots,
        [
            "The fit window starts at T >= max(100, T_max/100): R(T)/T rises between T = 30 and 50 on least "
            "squares while the iterate travels from its start (the whole curve is in the evidence).",
            "Disclosure: the first full run of this edition required R(T)/T to decrease at every grid point. On "
            "the drifting stream the regret turns negative after about one turn (the learner tracks the drift "
            "better than any fixed point), which satisfies the theorem's upper bound but not that criterion; "
            "the criterion was replaced by its upper-bound form (R/T at T_max below its value at the window's "
            "start, slope fitted where R > 0) before the reported run. The adversarial stream was added then.",
        ],
        ctx.take_paths(),
        time.perf_counter() - started,
        tested="The growth exponent of the regret R(T) of ALTO-vanilla with the theorem's schedules on i.i.d. and "
        "drifting convex streams, the same check on its controls, and E's paired effect on the regret.",
        controls=[
            "alpha = 0 (ALTO-vanilla without E: Lamb-vanilla), same streams, starts, seeds and schedules.",
            "constant alpha = -5 (beta1 = 0.99) instead of alpha0/sqrt(k): is the theorem's alpha decay needed?",
            "negative control: constant lr = 0.1 (breaks lr/sqrt(k) only); the check must reject it.",
        ],
        regime=[
            f"Streams: {', '.join(PROBLEMS)} (drifting: the labelling vector rotates twice over the run; "
            "adversarial: y_t = -sign(x_t . theta_t), chosen after seeing the learner's point).",
            f"T up to {steps}, {seeds} seeds (stream, start), fit over T >= {fit_from:g}.",
            "alpha0 in {0.5 (beta1 0.01, small-batch setting), -5 (beta1 0.99, large-batch setting), -9 (beta1 "
            "0.9: r = -0.9, the strong-E arm)}.",
        ],
        sweep={"stream": list(PROBLEMS), "setting": list(SETTINGS), "T_max": steps, "seeds": seeds},
        summary=_summary(checks),
        statistics=statistics,
        explanation=explanation,
    )


def _summary(checks: List[Check]) -> str:
    """Where the regret bound holds, and whether the theorem's assumptions held there."""
    theorem = [c for c in checks if "negative control" not in c.description]
    within = sum(c.passed for c in theorem)
    outside = [c for c in theorem if not c.applies]
    return (
        f"R(T) within the sqrt(T) bound for {within}/{len(theorem)} (stream, setting) pairs; "
        f"{len(outside)}/{len(theorem)} are outside the theorem's assumptions."
    )


def _percent_range(values: List[float]) -> str:
    low, high = 100 * min(values), 100 * max(values)
    return f"{low:.0f} %" if round(low) == round(high) else f"{low:.0f}-{high:.0f} %"


def _plot(ctx: Context, grid: np.ndarray, curves: Dict[tuple, List[np.ndarray]]) -> str:
    plt = figure()
    fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(5 * len(PROBLEMS), 3.8))
    for ax, problem in zip(axes, PROBLEMS):
        for setting in SETTINGS:
            mean = np.mean(curves[(problem, setting)], axis=0)
            style = "--" if setting.startswith("negative") else "-"
            ax.loglog(grid, np.maximum(mean, 1e-12), style, marker="o", markersize=3, label=setting)
        reference = np.sqrt(grid / grid[-1]) * np.mean(curves[(problem, list(SETTINGS)[0])], axis=0)[-1]
        ax.loglog(grid, reference, ":", color="gray", label="slope 1/2")
        ax.loglog(grid, grid / grid[-1] * reference[-1], ":", color="black", label="slope 1")
        ax.set_title(f"online {problem.replace('_', ' ')}")
        ax.set_xlabel("T")
        ax.set_ylabel("regret R(T)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(ctx, fig, "convex_regret.png")
