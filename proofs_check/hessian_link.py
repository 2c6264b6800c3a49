"""Claim 4, the Hessian link: ``g_k - g_{k-1} ~ H_k (theta_k - theta_{k-1})``.

Along real optimizer trajectories (ALTO and EAdam, full-batch gradients) on two smooth non-quadratic
problems (tanh regression, the Rosenbrock valley), compare the gradient difference the E adaptor uses with
the exact Hessian-vector product ``H(theta_k) (theta_k - theta_{k-1})`` (analytic, ``problems``). Steps are
shrunk by shrinking the learning rate. Taylor's theorem predicts the relative error to fall linearly with
the step (``||g_k - g_{k-1} - H_k d|| = O(||d||^2)``) and the cosine to tend to 1.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np

from proofs_check import problems
from proofs_check.common import Check, ClaimResult, Context, figure, loglog_slope, save_figure

NAME = "hessian_link"
TITLE = "Hessian link: g_k - g_{k-1} ~ H_k (theta_k - theta_{k-1})"
OPTIMIZERS = {
    "alto": {"alpha": -1.0, "betas": (0.9, 0.9, 0.99), "weight_decay": 0.0},
    "eadam": {"alpha": -1.0, "betas": (0.9, 0.9, 0.999)},
}


def _problems(ctx: Context) -> Dict[str, Dict[str, Any]]:
    tanh = problems.TanhRegression(ctx.rng(4, 1), n=1024, dim=16)
    return {
        "tanh_regression": {"grad": tanh.grad, "hvp": tanh.hvp, "start": ctx.rng(4, 2).standard_normal(16)},
        "rosenbrock_valley": {
            "grad": problems.rosenbrock_valley_grad,
            "hvp": problems.rosenbrock_valley_hvp,
            "start": np.array([-1.2, 0.5]),
        },
    }


def _trajectory(ctx: Context, name: str, spec: Dict[str, Any], lr: float, steps: int) -> Dict[str, np.ndarray]:
    grad: Callable = spec["grad"]
    stepper = ctx.stepper(name, [spec["start"]], lr=lr, **OPTIMIZERS[name])
    cos, rel, size = [], [], []
    previous_theta, previous_grad = None, None
    for _ in range(steps):
        theta = np.array(stepper.params[0], copy=True)
        g = grad(theta)
        if previous_theta is not None:
            d = theta - previous_theta
            dg = g - previous_grad
            hv = spec["hvp"](theta, d)
            norm = np.linalg.norm(hv) * np.linalg.norm(dg)
            if norm > 0:
                cos.append(float(dg @ hv / norm))
                rel.append(float(np.linalg.norm(dg - hv) / np.linalg.norm(hv)))
                size.append(float(np.linalg.norm(d)))
        previous_theta, previous_grad = theta, g
        stepper.step([g])
    return {"cos": np.array(cos), "rel": np.array(rel), "step": np.array(size)}


def run(ctx: Context) -> ClaimResult:
    """Runs the trajectories and returns the claim's record."""
    started = time.perf_counter()
    lrs = ctx.pick([1e-1, 1e-2, 1e-3, 1e-4], [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4])
    steps = ctx.pick(60, 200)
    specs = _problems(ctx)
    jobs = [(p, n, lr) for p in specs for n in OPTIMIZERS for lr in lrs]
    table: Dict[tuple, Dict[str, float]] = {}
    for problem, name, lr in ctx.progress(jobs, total=len(jobs), desc=NAME):
        t = _trajectory(ctx, name, specs[problem], lr, steps)
        table[(problem, name, lr)] = {
            "median_cos": float(np.median(t["cos"])),
            "min_cos": float(np.min(t["cos"])),
            "median_rel": float(np.median(t["rel"])),
            "median_step": float(np.median(t["step"])),
        }
    evidence: Dict[str, Any] = {"lrs": lrs, "steps": steps}
    checks: List[Check] = []
    for problem in specs:
        for name in OPTIMIZERS:
            rows = [table[(problem, name, lr)] for lr in lrs]
            slope = loglog_slope([r["median_step"] for r in rows], [r["median_rel"] for r in rows])
            evidence[f"{problem}/{name}"] = {k: [r[k] for r in rows] for k in rows[0]} | {"slope_rel_vs_step": slope}
            smallest = rows[-1]
            checks.append(
                Check(
                    f"{problem}, {name}: median cosine at the smallest step ({smallest['median_step']:.2g})",
                    smallest["median_cos"],
                    ">= 0.99",
                    smallest["median_cos"] >= 0.99,
                )
            )
            checks.append(
                Check(
                    f"{problem}, {name}: log-log slope of the relative error against the step size (Taylor: 1)",
                    slope,
                    "in [0.7, 1.3]",
                    0.7 <= slope <= 1.3,
                )
            )
    plots = [_plot(ctx, specs, lrs, table)]
    assumptions = [
        "Smooth non-quadratic problems (tanh regression n = 1024, dim 16; Rosenbrock valley 10 (y - x^2)^2), "
        "full-batch (deterministic) gradients, so g_k - g_{k-1} has no sampling noise (by construction).",
        "Exact Hessian-vector products from analytic Hessians (problems.TanhRegression.hvp, "
        "problems.rosenbrock_valley_hvp; checked against finite differences in the tests).",
        "H_k is taken at theta_k (the paper's H_k); step sizes are shrunk through the learning rate "
        f"({lrs}), {steps} steps each; medians over the steps of a run.",
        "ALTO alpha = -1, betas (0.9, 0.9, 0.99), weight decay 0; EAdam alpha = -1, betas (0.9, 0.9, 0.999).",
        "Thresholds fixed in advance: median cosine >= 0.99 at the smallest steps; relative-error slope in "
        "[0.7, 1.3] (Taylor predicts 1).",
    ]
    return ClaimResult(
        NAME,
        TITLE,
        "Why E works: g_k - g_{k-1} ~ H_k (theta_k - theta_{k-1}), a Hessian-vector product for "
        "free, so alpha a_k adds curvature information without computing the Hessian.",
        assumptions,
        evidence,
        checks,
        plots,
        [],
        ctx.take_paths(),
        time.perf_counter() - started,
    )


def _plot(ctx, specs, lrs, table) -> str:
    plt = figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for problem in specs:
        for name in OPTIMIZERS:
            rows = [table[(problem, name, lr)] for lr in lrs]
            steps = [r["median_step"] for r in rows]
            axes[0].loglog(steps, [r["median_rel"] for r in rows], "o-", label=f"{problem}, {name}")
            axes[1].semilogx(steps, [1.0 - r["median_cos"] for r in rows], "o-", label=f"{problem}, {name}")
    axes[0].set_xlabel("median ||theta_k - theta_{k-1}||")
    axes[0].set_ylabel("median relative error ||dg - H d|| / ||H d||")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("median ||theta_k - theta_{k-1}||")
    axes[1].set_ylabel("1 - median cosine(dg, H d)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(ctx, fig, "hessian_link.png")
