"""Claim 3, non-convex stationarity (Theorem 1): the average squared true-gradient norm is ``O(eps^2)``
with batch ``b = O(G_inf / eps^2)`` and ``T = O(1 / eps^2)`` steps at a small constant learning rate.

Problem: smooth non-convex tanh regression (``problems.TanhRegression``, n = 4096, dim 16); mini-batches
drawn with replacement (unbiased, variance bounded by the per-sample variance over ``b``); the true
gradient is the full-batch gradient. Theorem settings: ``mu = sqrt(1 - beta3) G_inf / eps1 = 0.5`` (so eps1
is set from the analytic ``G_inf``), ``lambda_k = lambda (1 - mu)^k`` (``valley_core.exponential_decay``),
constant ``lr = 0.01``, ``b(eps) = ceil(0.1 G_inf / eps^2)``, ``T(eps) = ceil(4 / eps^2)``.

Measured: (1) ``A(eps)``, the average of ``||grad f(theta_k)||^2`` over the ``T(eps)`` steps, against
``eps^2`` (slope >= 0.75 means ``O(eps^2)`` within tolerance); (2) the exponent of the running average in
``T`` at fixed ``b``; (3) the exponent in ``b`` of the average over the second half of runs of equal
length; (4) steps-to-eps (first ``T`` with running average ``<= eps^2``) for ALTO and Lamb, fitted against
``1/eps`` (the paper: ``eps^-2`` for ALTO against ``eps^-4`` in Lamb's analysis).
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List

import numpy as np

import valley_core as vc
from proofs_check.common import Check, ClaimResult, Context, figure, loglog_slope, save_figure
from proofs_check.problems import TanhRegression

NAME = "nonconvex_stationarity"
TITLE = "Non-convex stationarity, Theorem 1: average squared gradient norm O(eps^2)"
LR, MU, WD, BETA3 = 0.01, 0.5, 1e-4, 0.99
C_BATCH, C_STEPS = 0.1, 4.0
OPTIMIZERS = {"alto": {"alpha": -5.0, "betas": (0.99, 0.9, BETA3)}, "lamb": {"betas": (0.9, BETA3)}}


def _run(
    ctx: Context,
    problem: TanhRegression,
    name: str,
    batch: int,
    min_steps: int,
    cap: int,
    target: float,
    seed_index: int,
    stride: int = 1,
) -> Dict[str, Any]:
    rng = ctx.rng(3, seed_index, batch, list(OPTIMIZERS).index(name))
    start = ctx.rng(3, seed_index).standard_normal(problem.dim) * 0.5
    eps1 = math.sqrt(1.0 - BETA3) * problem.g_inf / MU
    stepper = ctx.stepper(
        name, [start], lr=LR, eps=eps1, weight_decay=vc.exponential_decay(WD, 1.0 - MU), **OPTIMIZERS[name]
    )
    norms: List[float] = []
    total, reached, max_inf = 0.0, None, 0.0
    for k in range(cap):
        theta = stepper.params[0]
        if k % stride == 0:
            value = float(np.sum(problem.grad(theta) ** 2))
            norms.append(value)
            total += value
            if reached is None and total / len(norms) <= target:
                reached = k + 1
        g = problem.grad(theta, rng.integers(0, problem.n, batch))
        max_inf = max(max_inf, float(np.max(np.abs(g))))
        stepper.step([g])
        if k + 1 >= min_steps and reached is not None:
            break
    norms_arr = np.array(norms)
    return {
        "norms": norms_arr,
        "running": np.cumsum(norms_arr) / np.arange(1, len(norms_arr) + 1),
        "stride": stride,
        "reached": reached,
        "max_grad_inf": max_inf,
        "steps": k + 1,
    }


def run(ctx: Context) -> ClaimResult:
    """Runs the scans and returns the claim's record."""
    started = time.perf_counter()
    eps2_grid = ctx.pick([4e-3, 2e-3, 1e-3], [4e-3, 2e-3, 1e-3, 5e-4, 2.5e-4])
    seeds = ctx.pick(1, 2)
    b_steps = ctx.pick(2000, 8000)
    evidence: Dict[str, Any] = {"eps2_grid": eps2_grid, "seeds": seeds, "lr": LR, "mu": MU}
    A = {name: np.zeros(len(eps2_grid)) for name in OPTIMIZERS}
    reach = {name: np.zeros(len(eps2_grid)) for name in OPTIMIZERS}
    censored = {name: 0 for name in OPTIMIZERS}
    tail = np.zeros(len(eps2_grid))
    running_min_eps = []
    batches = [int(math.ceil(C_BATCH * 1.0 / e)) for e in eps2_grid]
    jobs = [(s, n, i) for s in range(seeds) for n in OPTIMIZERS for i in range(len(eps2_grid))]
    jobs += [(s, "b-sweep", i) for s in range(seeds) for i in range(len(eps2_grid))]
    max_inf, g_inf = 0.0, None
    for seed_index, name, i in ctx.progress(jobs, total=len(jobs), desc=NAME):
        problem = TanhRegression(ctx.rng(3, seed_index, 99))
        g_inf = problem.g_inf
        eps2 = eps2_grid[i]
        batch = int(math.ceil(C_BATCH * problem.g_inf / eps2))
        batches[i] = batch
        if name == "b-sweep":
            result = _run(ctx, problem, "alto", batch, b_steps, b_steps, -1.0, seed_index)
            tail[i] += float(np.mean(result["norms"][b_steps // 2 :])) / seeds
            continue
        steps = int(math.ceil(C_STEPS / eps2))
        result = _run(ctx, problem, name, batch, steps, 4 * steps, eps2, seed_index)
        max_inf = max(max_inf, result["max_grad_inf"])
        A[name][i] += float(result["running"][steps - 1]) / seeds
        if result["reached"] is None:
            censored[name] += 1
            reach[name][i] += float("nan")
        else:
            reach[name][i] += result["reached"] / seeds
        if name == "alto" and i == len(eps2_grid) - 1:
            running_min_eps.append(result["running"][:steps])
    inv_eps = 1.0 / np.sqrt(np.array(eps2_grid))
    slope_A = loglog_slope(eps2_grid, A["alto"])
    running = np.mean(running_min_eps, axis=0)
    t_grid = np.unique(np.round(np.logspace(np.log10(50), np.log10(len(running)), 12)).astype(int))
    p_T = loglog_slope(t_grid, running[t_grid - 1])
    p_b = loglog_slope(batches, tail)
    exponents = {name: loglog_slope(inv_eps, reach[name]) for name in OPTIMIZERS}
    evidence.update(
        {
            "G_inf_analytic": g_inf,
            "max_minibatch_grad_inf_seen": max_inf,
            "eps1_from_mu": math.sqrt(1.0 - BETA3) * g_inf / MU,
            "batch_per_eps": batches,
            "steps_per_eps": [int(math.ceil(C_STEPS / e)) for e in eps2_grid],
            "A_alto": A["alto"],
            "A_lamb": A["lamb"],
            "slope_A_vs_eps2_alto": slope_A,
            "slope_A_vs_eps2_lamb": loglog_slope(eps2_grid, A["lamb"]),
            "T_grid_fixed_b": t_grid,
            "running_avg_fixed_b": running[t_grid - 1],
            "exponent_T": p_T,
            "b_sweep_steps": b_steps,
            "second_half_avg_per_b": tail,
            "exponent_b": p_b,
            "steps_to_eps_alto": reach["alto"],
            "steps_to_eps_lamb": reach["lamb"],
            "steps_to_eps_exponent_alto": exponents["alto"],
            "steps_to_eps_exponent_lamb": exponents["lamb"],
            "censored_runs": censored,
        }
    )
    checks = [
        Check(
            "ALTO: slope of log A(eps) against log eps^2 (A = O(eps^2) means slope >= 1)",
            slope_A,
            ">= 0.75",
            slope_A >= 0.75,
        ),
        Check(
            f"ALTO: exponent of the running average in T at fixed b = {batches[-1]}",
            p_T,
            "<= -0.1 (falls)",
            p_T <= -0.1,
        ),
        Check(
            f"ALTO: exponent in b of the second-half average over {b_steps} steps", p_b, "<= -0.1 (falls)", p_b <= -0.1
        ),
        Check(
            "ALTO: exponent of steps-to-eps in 1/eps (claim: 2)",
            exponents["alto"],
            "<= 2.5 and no censored run",
            exponents["alto"] <= 2.5 and censored["alto"] == 0,
        ),
        Check(
            "ALTO's steps-to-eps exponent no worse than Lamb's (claim: 2 against 4)",
            f"{exponents['alto']:.3g} vs {exponents['lamb']:.3g}",
            "alto <= lamb + 0.25",
            exponents["alto"] <= exponents["lamb"] + 0.25,
        ),
    ]
    plots = [_plot(ctx, eps2_grid, A, reach, t_grid, running, batches, tail)]
    assumptions = [
        "L-smooth per-sample loss: tanh regression with a smooth bounded regulariser (by construction).",
        "Unbiased stochastic gradients with bounded variance: mini-batches sampled uniformly with replacement "
        "from the n = 4096 samples (by construction).",
        f"Bounded gradients ||g||_inf <= G_inf: analytic bound G_inf = (1 + y_max) max|x| + 0.65 rho = {g_inf:.4g}; "
        f"largest mini-batch ||g||_inf seen: {max_inf:.4g}.",
        f"mu = sqrt(1 - beta3) G_inf / eps1 = {MU} <= 1: enforced by choosing eps1 = sqrt(1-beta3) G_inf / mu.",
        f"Weight decay lambda_k = {WD} (1 - mu)^k via valley_core.exponential_decay (enforced).",
        f"b(eps) = ceil({C_BATCH} G_inf / eps^2), T(eps) = ceil({C_STEPS} / eps^2), constant lr = {LR} "
        "(the constants were chosen from one pilot run of ALTO and Lamb at lr 0.01 and 0.003 before the "
        "checks were written; the thresholds were fixed before the first measured run).",
        "ALTO at the paper's large-batch setting alpha = -5, beta1 = 0.99, (beta2, beta3) = (0.9, 0.99); Lamb "
        "with the same lr, eps1, betas and weight-decay schedule.",
        "True gradient = full-batch gradient, evaluated at every step.",
    ]
    notes = [
        "Lamb's eps^-4 is an upper bound from its own analysis, not a measured rate: a measured Lamb exponent "
        "near 2 does not contradict it, it shows the bound is loose on this problem.",
        "The b-exponent is measured on the second half of equal-length runs, where the batch-independent "
        "transient has died out; the full-run average at a fixed T is dominated by that transient.",
    ]
    return ClaimResult(
        NAME,
        TITLE,
        "Theorem 1: with L-smooth losses, unbiased bounded-variance bounded gradients, "
        "mu = sqrt(1-beta3) G_inf/eps1 <= 1, lambda_k = lambda (1-mu)^k, b = O(G_inf/eps^2), a small "
        "constant lr and T >= O(G_inf^1.5/eps^2), the average expected squared gradient norm is "
        "O(eps^2); Lamb's analysis needs T and b of order eps^-4.",
        assumptions,
        evidence,
        checks,
        plots,
        notes,
        ctx.take_paths(),
        time.perf_counter() - started,
    )


def _plot(ctx, eps2_grid, A, reach, t_grid, running, batches, tail) -> str:
    plt = figure()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for name in OPTIMIZERS:
        axes[0].loglog(eps2_grid, A[name], "o-", label=name)
        axes[3].loglog(1.0 / np.sqrt(eps2_grid), reach[name], "o-", label=name)
    axes[0].loglog(eps2_grid, eps2_grid, "k:", label="eps^2")
    axes[0].set_xlabel("eps^2")
    axes[0].set_ylabel("A(eps): average ||grad f||^2 over T(eps)")
    axes[1].loglog(t_grid, running[t_grid - 1], "o-")
    axes[1].set_xlabel(f"T (b = {batches[-1]})")
    axes[1].set_ylabel("running average ||grad f||^2")
    axes[2].loglog(batches, tail, "o-")
    axes[2].set_xlabel("batch size b")
    axes[2].set_ylabel("second-half average ||grad f||^2")
    inv = 1.0 / np.sqrt(np.array(eps2_grid))
    axes[3].loglog(inv, reach["alto"][0] * (inv / inv[0]) ** 2, "k:", label="slope 2")
    axes[3].set_xlabel("1/eps")
    axes[3].set_ylabel("steps to running average <= eps^2")
    for ax in (axes[0], axes[3]):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(ctx, fig, "nonconvex_stationarity.png")
