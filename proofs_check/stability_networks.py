"""The stability rule on a network that fits its data, at constant lr after the loss has reached ~0.

The rule ``|alpha| < 1/(1 - beta1)`` comes from a small-step ODE argument. On a network that fits its training
data (``problems.RandomLabelMLP``: a tanh MLP on a fixed random labelling, full batch, squared loss, minima at
0), ESGD's step shrinks with the gradient at a minimum, so the argument's regime is reached; Adam's and Lamb's
steps are normalised (Lamb's has norm ``lr ||theta||`` per layer whatever the gradient), so they do not shrink
and the argument says nothing there. For ESGD, EAdam and ALTO across ``r = alpha (1 - beta1)`` inside the rule
(``r = 0`` is the control, the base optimizer), from the same starts, at one constant lr each:

- whether and when the loss first reaches ``LOW`` (~0);
- the fraction of the later steps where it is above ``LEAVE`` (it left the minimum), the largest excursion;
- the parameter-norm growth ``||theta_N|| / ||theta_reach||`` and, paired with the control on the same seed,
  ``log ||theta_N||``.

Scored (the rule's regime): ESGD. Measured and reported, not scored: EAdam and ALTO.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from proofs_check import problems, stats
from proofs_check.common import ALTO, EADAM, ESGD, Check, Context, figure, save_figure

LOW = 1e-3  # the loss has reached ~0 (the initial loss is about 0.5)
LEAVE = 1e-2  # after reaching LOW, a step with the loss above this has left the minimum
NORM_GROWTH = 2.0  # scored: E's final parameter norm below this many times the control's, in every seed
BETA1 = 0.99
#: optimizer -> (constant lr, the other betas, fixed hyperparameters, whether its step shrinks at a minimum)
OPTIMIZERS = {
    ESGD: (0.1, (0.9,), {}, True),
    EADAM: (1e-3, (0.9, 0.999), {}, False),
    ALTO: (1e-2, (0.9, 0.99), {"weight_decay": 0.0}, False),
}
NOT_SMALL_STEP = "normalised step (Adam/Lamb) does not shrink at a minimum: outside the rule's small-step argument"


def _run(ctx: Context, problem, name: str, r: float, seed: int, steps: int) -> Dict[str, Any]:
    lr, tail, fixed, _ = OPTIMIZERS[name]
    stepper = ctx.stepper(
        name,
        problem.init(ctx.rng(1, 50, seed)),
        lr=lr,
        alpha=r / (1.0 - BETA1),
        betas=(BETA1, *tail),
        allow_unstable=True,
        **fixed,
    )
    losses = np.empty(steps)
    norm0 = float(np.sqrt(sum(np.sum(p * p) for p in stepper.params)))
    reach_norm = np.nan
    with np.errstate(all="ignore"):
        for k in range(steps):
            loss, grads = problem.loss_and_grad(stepper.params)
            losses[k] = loss if np.isfinite(loss) else np.inf
            if np.isnan(reach_norm) and loss <= LOW:
                reach_norm = float(np.sqrt(sum(np.sum(p * p) for p in stepper.params)))
            if not np.isfinite(loss):
                losses[k:] = np.inf
                break
            stepper.step(grads)
        norm = float(np.sqrt(sum(np.sum(p * p) for p in stepper.params)))
    below = np.flatnonzero(losses <= LOW)
    reach = int(below[0]) if below.size else -1
    after = losses[reach:] if reach >= 0 else np.array([])
    return {
        "reach_step": reach,
        "leave_fraction": float(np.mean(after > LEAVE)) if reach >= 0 else float("nan"),
        "max_excursion": float(np.max(after)) if reach >= 0 else float("nan"),
        "norm_growth_since_reach": norm / reach_norm if reach >= 0 else float("nan"),
        "log_final_norm": float(np.log(norm)) if np.isfinite(norm) else float("inf"),
        "norm0": norm0,
        "final_loss": float(losses[-1]),
        "curve": losses,
    }


def run(ctx: Context) -> Dict[str, Any]:
    """Runs the network part; returns ``{"checks", "statistics", "evidence", "summary", "plot", "sweep"}``."""
    ratios = ctx.pick([-0.9, -0.05, 0.0, 0.5], [-0.9, -0.5, -0.05, 0.0, 0.5], tiny=[-0.9, 0.0])
    seeds = ctx.pick(3, 4, tiny=2)
    steps = ctx.pick(2000, 3000, tiny=1200)
    problem = ctx.problem("stability_networks", problems.RandomLabelMLP(ctx.rng(1, 49)))
    jobs = [(n, r, s) for n in OPTIMIZERS for r in ratios for s in range(seeds)]
    out = {}
    for name, r, seed in ctx.progress(jobs, total=len(jobs), desc="stability_rule (networks)"):
        out[(name, r, seed)] = _run(ctx, problem, name, r, seed, steps)
    checks: List[Check] = []
    statistics: List[Dict[str, Any]] = []
    evidence: Dict[str, Any] = {
        "problem": f"tanh MLP {problem.dim}-{problem.width}-{problem.classes} on {problem.n} random labels",
        "steps": steps,
        "seeds": seeds,
        "beta1": BETA1,
        "ratios": ratios,
        "low": LOW,
        "leave": LEAVE,
        "lr": {n: OPTIMIZERS[n][0] for n in OPTIMIZERS},
    }
    summary, short = [], []
    for name, (lr, _, _, shrinks) in OPTIMIZERS.items():
        per: Dict[str, Any] = {}
        for r in ratios:
            runs = [out[(name, r, s)] for s in range(seeds)]
            per[f"r={r:g}"] = {
                k: [v[k] for v in runs]
                for k in ("reach_step", "leave_fraction", "max_excursion", "norm_growth_since_reach", "final_loss")
            }
        evidence[name] = per
        inside = [r for r in ratios if r != 0.0 and abs(r) < 1.0]
        bad = []
        for r in inside:
            for s in range(seeds):
                v = out[(name, r, s)]
                if v["reach_step"] < 0 or v["leave_fraction"] > 0.0:
                    bad.append((r, s))
        for r in inside:
            statistic = stats.paired(
                [out[(name, r, s)]["log_final_norm"] for s in range(seeds)],
                [out[(name, 0.0, s)]["log_final_norm"] for s in range(seeds)],
                f"networks, {name}, r={r:g}: log final parameter norm, E - alpha=0",
            )
            leave = stats.paired(
                [np.nan_to_num(out[(name, r, s)]["leave_fraction"], nan=1.0) for s in range(seeds)],
                [np.nan_to_num(out[(name, 0.0, s)]["leave_fraction"], nan=1.0) for s in range(seeds)],
                f"networks, {name}, r={r:g}: fraction of steps off the minimum (never reached = 1), E - alpha=0",
            )
            statistics.append(leave)
            ratios_e = [
                out[(name, r, s)]["log_final_norm"] - out[(name, 0.0, s)]["log_final_norm"] for s in range(seeds)
            ]
            worst = float(np.max(np.nan_to_num(ratios_e, nan=np.inf)))
            checks.append(
                Check(
                    f"networks, {name} (lr {lr:g}), r = {r:g}: final parameter norm over alpha = 0's, worst of "
                    f"{seeds} seeds (log ratio)",
                    worst,
                    f"< log {NORM_GROWTH:g} = {np.log(NORM_GROWTH):.3f} in every seed",
                    bool(worst < np.log(NORM_GROWTH)),
                    statistic,
                    applies=shrinks,
                    not_applicable="" if shrinks else NOT_SMALL_STEP,
                )
            )
        control_bad = [s for s in range(seeds) if out[(name, 0.0, s)]["reach_step"] < 0]
        checks.append(
            Check(
                f"networks, {name} (lr {lr:g}): runs inside the rule (r in {inside}) that reach loss <= {LOW:g} and "
                f"never go back above {LEAVE:g}",
                f"{len(inside) * seeds - len(bad)}/{len(inside) * seeds}",
                "all",
                not bad,
                applies=shrinks and not control_bad,
                not_applicable="" if shrinks else NOT_SMALL_STEP,
            )
        )
        leaving = sorted({r for r, _ in bad})
        off = {r: _off_minimum([out[(name, r, s)] for s in range(seeds)]) for r in ratios}
        growth = {r: _median([out[(name, r, s)]["norm_growth_since_reach"] for s in range(seeds)]) for r in ratios}
        excursion = {r: _median([out[(name, r, s)]["max_excursion"] for s in range(seeds)]) for r in ratios}
        control_text = f"never reaches it in {len(control_bad)} seed(s)" if control_bad else "reaches it"
        per_r = ", ".join(f"{r:g}{' (control)' if r == 0 else ''}: {off[r]}" for r in ratios)
        short.append(
            f"{name} stays at ~0 loss at every r"
            if not leaving
            else f"{name}, fraction of steps off ~0 loss per r: {per_r}"
        )
        summary.append(
            f"{name}: fraction of steps off the minimum after reaching it (median over seeds) per r: {per_r}; "
            f"alpha = 0 control {control_text}; largest excursion (median): "
            + ", ".join(f"{r:g}: {excursion[r]:.3g}" for r in ratios)
            + "; parameter-norm growth since reaching ~0 (median): "
            + ", ".join(f"{r:g}: {growth[r]:.3g}" for r in ratios)
        )
    return {
        "checks": checks,
        "statistics": statistics,
        "evidence": evidence,
        "summary": "; ".join(summary),
        "short": ", ".join(short),
        "plot": _plot(ctx, out, ratios, seeds),
        "sweep": {"networks_r": ratios, "networks_optimizers": list(OPTIMIZERS)},
    }


def _plot(ctx: Context, out, ratios, seeds) -> str:
    plt = figure()
    fig, axes = plt.subplots(1, len(OPTIMIZERS), figsize=(4.4 * len(OPTIMIZERS), 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes, OPTIMIZERS):
        for i, r in enumerate(ratios):
            curve = np.minimum(out[(name, r, 0)]["curve"], 1e6)
            ax.semilogy(np.maximum(curve, 1e-20), color=colors[i % len(colors)], lw=1, label=f"r={r:g}")
        ax.axhline(LOW, color="k", linestyle=":", lw=1)
        ax.axhline(LEAVE, color="gray", linestyle="--", lw=1)
        ax.set_title(f"{name}, lr {OPTIMIZERS[name][0]:g}, beta1 {BETA1:g} (seed 0)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
    fig.suptitle("random-label MLP at constant lr: dotted ~0 (reached), dashed: left the minimum", fontsize=9)
    fig.tight_layout()
    return save_figure(ctx, fig, "stability_networks.png")


def _off_minimum(runs) -> str:
    """The median fraction of steps off the minimum, or "never reaches ~0" when no run reaches it."""
    fractions = [v["leave_fraction"] for v in runs if v["reach_step"] >= 0]
    if not fractions:
        return "never reaches ~0"
    text = f"{float(np.median(fractions)):.3g}"
    return text if len(fractions) == len(runs) else f"{text} ({len(runs) - len(fractions)} never reach ~0)"


def _median(values) -> float:
    """Median of the finite values (nan when none)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")
