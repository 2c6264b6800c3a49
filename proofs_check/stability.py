"""Claim 1, the stability rule ``|alpha| < 1/(1 - beta1)``.

Sweep ``(alpha, beta1)`` on quadratics ``f(theta) = 1/2 sum_i h_i theta_i^2`` (``h`` log-spaced in
``[1/kappa, 1]``, so ``L = 1`` and condition number ``kappa``) for ESGD, EAdam and ALTO, run with
``allow_unstable=True`` so that configurations outside the rule can be measured. ``alpha`` is swept in
units of the rule's bound: ``r = alpha (1 - beta1)``, the rule being ``|r| < 1``.

A run is *stable* when every loss is finite and the final loss is at most the initial one; *converged*
when the final loss is below ``1e-2`` times the initial one. The rule is *sufficient* if every
configuration inside it is stable, *conservative* where configurations outside it are stable too.
"""

from __future__ import annotations

import time
from typing import Dict, List

import numpy as np

from proofs_check.common import Check, ClaimResult, Context, figure, save_figure

NAME = "stability_rule"
TITLE = "Stability rule |alpha| < 1/(1 - beta1)"

#: The optimizers swept and their fixed hyperparameters (weight decay 0: the objective is the quadratic).
OPTIMIZERS = {
    "esgd": {"lr": 0.1, "betas_tail": (0.0,)},
    "eadam": {"lr": 0.01, "betas_tail": (0.9, 0.999), "eps": 1e-8},
    "alto": {"lr": 0.01, "betas_tail": (0.9, 0.99), "weight_decay": 0.0},
}


def _quadratic(kappa: float, dim: int) -> np.ndarray:
    return np.logspace(0.0, -np.log10(kappa), dim)


def _run(
    ctx: Context, name: str, alpha: float, beta1: float, curvature: np.ndarray, start: np.ndarray, steps: int
) -> Dict[str, float]:
    spec = dict(OPTIMIZERS[name])
    tail = spec.pop("betas_tail")
    stepper = ctx.stepper(name, [start], alpha=alpha, betas=(beta1, *tail), allow_unstable=True, **spec)
    theta = stepper.params[0]
    f0 = 0.5 * float(np.sum(curvature * theta * theta))
    finite = True
    with np.errstate(all="ignore"):
        for _ in range(steps):
            stepper.step([curvature * theta])
            theta = stepper.params[0]
            if not np.all(np.isfinite(theta)) or np.max(np.abs(theta)) > 1e50:
                finite = False
                break
        final = 0.5 * float(np.sum(curvature * theta * theta)) if finite else float("inf")
    return {"f0": f0, "final": final, "finite": finite}


def run(ctx: Context) -> ClaimResult:
    """Runs the sweep and returns the claim's record."""
    started = time.perf_counter()
    betas1 = ctx.pick([0.0, 0.5, 0.9, 0.99], [0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99])
    ratios = [-4.0, -2.0, -1.5, -1.1, -0.95, -0.7, -0.4, 0.0, 0.4, 0.7, 0.95, 1.1, 1.5, 2.0, 4.0]
    kappas = ctx.pick([1.0, 100.0], [1.0, 10.0, 100.0])
    steps = ctx.pick(300, 1000)
    dim = 10
    rng = ctx.rng(1)
    start = rng.standard_normal(dim)
    start /= np.linalg.norm(start)

    grid: Dict[str, Dict[str, List]] = {}
    jobs = [(n, k, b, r) for n in OPTIMIZERS for k in kappas for b in betas1 for r in ratios]
    outcomes = {}
    for name, kappa, beta1, ratio in ctx.progress(jobs, total=len(jobs), desc=NAME):
        alpha = ratio / (1.0 - beta1)
        outcomes[(name, kappa, beta1, ratio)] = _run(ctx, name, alpha, beta1, _quadratic(kappa, dim), start, steps)

    evidence: Dict[str, object] = {
        "steps": steps,
        "dim": dim,
        "kappas": kappas,
        "betas1": betas1,
        "ratios_alpha_times_1_minus_beta1": ratios,
    }
    checks: List[Check] = []
    inside_unstable_total = 0
    inside_total = 0
    for name in OPTIMIZERS:
        per = {}
        for kappa in kappas:
            inside = [outcomes[(name, kappa, b, r)] for b in betas1 for r in ratios if abs(r) < 1]
            outside = [outcomes[(name, kappa, b, r)] for b in betas1 for r in ratios if abs(r) >= 1]
            stable = lambda o: o["finite"] and o["final"] <= o["f0"]  # noqa: E731
            converged = lambda o: o["finite"] and o["final"] <= 1e-2 * o["f0"]  # noqa: E731
            unstable_inside = [
                (b, r) for b in betas1 for r in ratios if abs(r) < 1 and not stable(outcomes[(name, kappa, b, r)])
            ]
            per[f"kappa={kappa:g}"] = {
                "inside_stable_fraction": float(np.mean([stable(o) for o in inside])),
                "inside_converged_fraction": float(np.mean([converged(o) for o in inside])),
                "outside_stable_fraction": float(np.mean([stable(o) for o in outside])),
                "outside_converged_fraction": float(np.mean([converged(o) for o in outside])),
                "outside_stable_negative_alpha": float(
                    np.mean([stable(outcomes[(name, kappa, b, r)]) for b in betas1 for r in ratios if r <= -1])
                ),
                "outside_stable_positive_alpha": float(
                    np.mean([stable(outcomes[(name, kappa, b, r)]) for b in betas1 for r in ratios if r >= 1])
                ),
                "inside_unstable_configs_beta1_r": unstable_inside,
            }
            inside_unstable_total += len(unstable_inside)
            inside_total += len(inside)
            grid.setdefault(name, {})[kappa] = [
                [
                    (
                        2
                        if converged(outcomes[(name, kappa, b, r)])
                        else 1
                        if stable(outcomes[(name, kappa, b, r)])
                        else 0
                    )
                    for b in betas1
                ]
                for r in ratios
            ]
        evidence[name] = per
        fractions = [per[k]["inside_stable_fraction"] for k in per]
        checks.append(
            Check(
                f"{name}: fraction of configurations inside the rule that are stable (min over kappa)",
                min(fractions),
                "== 1 (the rule is sufficient)",
                min(fractions) == 1.0,
            )
        )
    evidence["inside_unstable_count"] = inside_unstable_total
    evidence["inside_count"] = inside_total

    plots = [_plot(ctx, grid, betas1, ratios, kappas)]
    failures = [
        f"{name} kappa={kappa:g} at (beta1, alpha (1 - beta1)) = {b_r}"
        for name in OPTIMIZERS
        for kappa in kappas
        for b_r in evidence[name][f"kappa={kappa:g}"]["inside_unstable_configs_beta1_r"]
    ]
    notes = [
        "Reading the map: rows are r = alpha (1 - beta1), the rule's boundary is r = -1 and r = +1 (dashed).",
        "Outside-rule configurations that are stable show where the rule is conservative; inside-rule "
        "configurations that are not stable would show where it fails.",
    ]
    if failures:
        notes.append("Measured: inside the rule but not stable: " + "; ".join(failures) + ".")
    assumptions = [
        "Quadratic objectives f = 1/2 sum h_i theta_i^2, dim 10, h log-spaced in [1/kappa, 1] (enforced by "
        "construction; L = 1).",
        "Small steps, as in the paper's ODE argument: ESGD lr = 0.1 = 0.1/L with beta2 = 0 (plain-SGD base); "
        "EAdam lr = 0.01 (betas (beta1, 0.9, 0.999), eps 1e-8); ALTO lr = 0.01 (betas (beta1, 0.9, 0.99), "
        "weight decay 0). Fixed before the sweep.",
        f"Same start for every run: a random unit vector (seed {ctx.seed}); {steps} steps.",
        "Configurations outside the rule are built with allow_unstable=True (the validator would reject them).",
        "Stable := all iterates finite and f(theta_N) <= f(theta_0); converged := f(theta_N) <= 1e-2 f(theta_0).",
    ]
    return ClaimResult(
        NAME,
        TITLE,
        "Remark (stability): the E adaptor is stable when |alpha| < 1/(1 - beta1) (from a simplified ODE argument).",
        assumptions,
        evidence,
        checks,
        plots,
        notes,
        ctx.take_paths(),
        time.perf_counter() - started,
    )


def _plot(ctx: Context, grid, betas1, ratios, kappas) -> str:
    plt = figure()
    from matplotlib.colors import ListedColormap

    names = list(grid)
    fig, axes = plt.subplots(len(names), len(kappas), figsize=(3.2 * len(kappas), 2.8 * len(names)), squeeze=False)
    cmap = ListedColormap(["#d62728", "#ffdd57", "#2ca02c"])
    for i, name in enumerate(names):
        for j, kappa in enumerate(kappas):
            ax = axes[i][j]
            ax.imshow(
                np.array(grid[name][kappa]),
                origin="lower",
                aspect="auto",
                cmap=cmap,
                vmin=0,
                vmax=2,
                extent=(-0.5, len(betas1) - 0.5, -0.5, len(ratios) - 0.5),
            )
            for bound in (-1.0, 1.0):
                position = np.interp(bound, ratios, np.arange(len(ratios)))
                ax.axhline(position, color="k", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(betas1)))
            ax.set_xticklabels([f"{b:g}" for b in betas1], fontsize=7)
            ax.set_yticks(range(len(ratios)))
            ax.set_yticklabels([f"{r:g}" for r in ratios], fontsize=6)
            ax.set_title(f"{name}, kappa={kappa:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel("alpha (1 - beta1)")
            if i == len(names) - 1:
                ax.set_xlabel("beta1")
    fig.suptitle(
        "green: converged, yellow: stable (loss not increased), red: unstable; dashed: |alpha| = 1/(1-beta1)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(ctx, fig, "stability_map.png")
