"""Statistics of the study: paired differences, the pooled estimate, the minimum detectable effect, the gap.

Paired difference of arms A and B over the seeds both ran (same initial weights and data order per seed):
``d_i = metric(A, seed i) - metric(B, seed i)``; estimate ``mean(d)``, 95 % interval
``mean(d) ± t_{0.975, n-1} sd(d) / sqrt(n)``. Minimum detectable effect at 80 % power (two-sided 5 % test,
the normal-shift approximation of the paired t test): ``(t_{0.975, n-1} + t_{0.8, n-1}) sd(d) / sqrt(n)``.
Pooled estimate across settings with seeds as blocks: for each seed present in every setting, the mean of its
differences over the settings; then a t interval over those per-seed means (settings are fixed effects, the
seed-to-seed variation is the error). Accuracies are in percentage points; for the language model the metric
is test perplexity (a negative difference favours ALTO).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from valley_cli.study import protocol
from valley_cli.study.protocol import ALTO, LAMB


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = protocol.CONFIDENCE
) -> Dict[str, float]:
    """Mean of ``a - b`` over pairs with a Student-t interval and the minimum detectable effect.

    Returns:
        ``{"mean", "ci_low", "ci_high", "sd", "n", "mde"}``; with one pair the interval and the MDE are infinite.

    Raises:
        ValueError: if the lengths differ or there are no pairs.
    """
    from scipy import stats

    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired samples need equal, non-zero lengths (got {len(a)} and {len(b)})")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "ci_low": -math.inf, "ci_high": math.inf, "sd": 0.0, "n": n, "mde": math.inf}
    sd = float(d.std(ddof=1))
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    half = t * sd / math.sqrt(n)
    mde = (t + float(stats.t.ppf(protocol.POWER, n - 1))) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "n": n, "mde": mde}


def pooled(
    differences: Sequence[Dict[int, float]], confidence: float = protocol.CONFIDENCE
) -> Optional[Dict[str, float]]:
    """The pooled estimate over settings with seeds as blocks (see the module).

    Args:
        differences: one ``seed -> difference`` map per setting.

    Returns:
        ``paired_difference`` of the per-seed means against zero, plus ``settings``; ``None`` with fewer than
        two common seeds.
    """
    if not differences:
        return None
    seeds = sorted(set.intersection(*(set(d) for d in differences)))
    if len(seeds) < 2:
        return None
    means = [float(np.mean([d[s] for d in differences])) for s in seeds]
    return {**paired_difference(means, [0.0] * len(means), confidence), "settings": len(differences)}


def scale(task: str) -> float:
    """Reporting scale of the test metric: percent for accuracies, 1 for perplexities."""
    return 1.0 if task == "lm" else 100.0


def arm_values(records: Dict[str, Dict[str, Any]], arm: Dict[str, Any], task: str) -> Dict[int, float]:
    """seed -> scaled test metric of the arm's runs present (a diverged run's metric is kept as it is)."""
    out = {}
    for key in arm["keys"]:
        record = records.get(key)
        if record is not None:
            out[record["seed"]] = scale(task) * protocol.test_metric(record)
    return out


def verdict(row: Dict[str, Any], higher: bool) -> str:
    """``A better`` / ``B better`` / ``not distinguishable`` from the interval's sign (A, B: the row's arms)."""
    low, high = row["ci_low"], row["ci_high"]
    a_better, b_better = (low > 0, high < 0) if higher else (high < 0, low > 0)
    if a_better:
        return f"{row['a']} better"
    if b_better:
        return f"{row['b']} better"
    return "not distinguishable"


def compare(
    records: Dict[str, Dict[str, Any]], setting: protocol.Setting, a: Dict[str, Any], b: Dict[str, Any], kind: str
) -> Optional[Dict[str, Any]]:
    """Paired comparison of arm ``a`` minus arm ``b`` in ``setting`` (``None`` if no seed has both)."""
    va, vb = arm_values(records, a, setting.task), arm_values(records, b, setting.task)
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return None
    x, y = [va[s] for s in seeds], [vb[s] for s in seeds]
    stats = paired_difference(x, y)
    higher = protocol.higher_is_better(setting.task)
    row = {
        "setting": setting.key,
        "regime": setting.regime,
        "task": setting.task,
        "batch_size": setting.batch_size,
        "steps": setting.steps,
        "kind": kind,
        "a": a["name"],
        "b": b["name"],
        "a_lr": a["lr"],
        "b_lr": b["lr"],
        "metric": "test_perplexity" if setting.task == "lm" else "test_accuracy_percent",
        "seeds": seeds,
        "a_mean": float(np.mean(x)),
        "b_mean": float(np.mean(y)),
        "difference": stats["mean"],
        "ci_low": stats["ci_low"],
        "ci_high": stats["ci_high"],
        "sd": stats["sd"],
        "mde": stats["mde"],
        "a_wins": int(sum((p > q) if higher else (p < q) for p, q in zip(x, y))),
        "per_seed": {str(s): p - q for s, p, q in zip(seeds, x, y)},
    }
    if (a["optimizer"], b["optimizer"]) == (ALTO, LAMB):
        row["alto_minus_lamb"] = stats["mean"]
    row["verdict"] = verdict(row, higher)
    return row


def comparisons(
    records: Dict[str, Dict[str, Any]], setting: protocol.Setting, arms: List[Dict[str, Any]]
) -> List[Dict[str, Any]]:
    """Every comparison of a setting: E vs base at their own best lrs (``main``), at the E-optimizer's lr
    (``equal-lr``), each dose arm and each placebo arm against Lamb at its best lr."""
    by_name = {arm["name"]: arm for arm in arms}
    rows: List[Optional[Dict[str, Any]]] = []
    for explorer, base in setting.pairs:
        rows.append(compare(records, setting, by_name[explorer], by_name[base], "main"))
        rows.append(compare(records, setting, by_name[explorer], by_name[f"{base} at {explorer}'s lr"], "equal-lr"))
    for arm in arms:
        if arm["role"] in ("dose", "placebo"):
            rows.append(compare(records, setting, arm, by_name[LAMB], arm["role"]))
    if setting.dose and ALTO in by_name:
        lambs = [by_name[LAMB]] + [arm for arm in arms if arm["role"] == "placebo"]
        best = best_arm(records, setting, lambs)
        if best is not None:
            row = compare(records, setting, by_name[ALTO], best, f"re-tuned {LAMB}")
            rows.append(row)
    return [row for row in rows if row is not None]


def best_arm(
    records: Dict[str, Dict[str, Any]], setting: protocol.Setting, arms: List[Dict[str, Any]]
) -> Optional[Dict[str, Any]]:
    """The arm with the best mean VALIDATION metric (selection never looks at the test metric)."""
    higher = protocol.higher_is_better(setting.task)
    scored = []
    for arm in arms:
        values = [protocol.validation_metric(records[k]) for k in arm["keys"] if k in records]
        if values:
            scored.append((float(np.mean(values)), arm))
    if not scored:
        return None
    return (max if higher else min)(scored, key=lambda item: item[0])[1]


def main_difference(rows: Sequence[Dict[str, Any]], setting_key: str, a: str = ALTO) -> Optional[Dict[str, Any]]:
    """The ``main`` comparison of ``a`` in a setting (``None`` if absent)."""
    for row in rows:
        if row["setting"] == setting_key and row["kind"] == "main" and row["a"] == a:
            return row
    return None


def gap(
    records: Dict[str, Dict[str, Any]],
    small: protocol.Setting,
    large: protocol.Setting,
    arms: Dict[str, List[Dict[str, Any]]],
) -> Optional[Dict[str, Any]]:
    """The large-batch gap: the best small-batch main arm minus the best large-batch main arm (each chosen
    on validation accuracy), paired by seed, in test-accuracy points."""
    pick = []
    for setting in (small, large):
        mains = [arm for arm in arms.get(setting.key, []) if arm["role"] == "main"]
        best = best_arm(records, setting, mains)
        if best is None:
            return None
        pick.append(best)
    va, vb = arm_values(records, pick[0], small.task), arm_values(records, pick[1], large.task)
    seeds = sorted(set(va) & set(vb))
    if len(seeds) < 2:
        return None
    stats = paired_difference([va[s] for s in seeds], [vb[s] for s in seeds])
    return {
        "small_batch": small.batch_size,
        "large_batch": large.batch_size,
        "small_arm": pick[0]["name"],
        "large_arm": pick[1]["name"],
        "small_mean": float(np.mean([va[s] for s in seeds])),
        "large_mean": float(np.mean([vb[s] for s in seeds])),
        "gap": stats["mean"],
        "ci_low": stats["ci_low"],
        "ci_high": stats["ci_high"],
        "seeds": seeds,
    }


def post_summary(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per post-convergence condition (schedule, weight decay, alpha, beta1): means over seeds."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        o = r["overrides"]
        key = (r["schedule"], r["weight_decay"], o.get("alpha", 0.0), o.get("e_beta"))
        groups.setdefault(key, []).append(r)
    rows = []
    for (schedule, wd, alpha, beta1), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2], kv[0][3] or 0)
    ):
        converged = [r for r in runs if r["converged_step"] is not None]

        def mean(field: str) -> Optional[float]:
            values = [r[field] for r in converged if r[field] is not None]
            return float(np.mean(values)) if values else None

        rows.append(
            {
                "schedule": schedule,
                "weight_decay": wd,
                "alpha": alpha,
                "beta1": beta1,
                "runs": len(runs),
                "converged": len(converged),
                "converged_step": mean("converged_step"),
                "excursion_fraction": mean("excursion_fraction"),
                "max_loss_after": float(max(r["max_loss_after"] for r in converged)) if converged else None,
                "final_loss": float(np.mean([r["final_loss"] for r in runs])),
                "max_norm_ratio": mean("max_norm_ratio"),
                "final_norm_ratio": mean("final_norm_ratio"),
                "test_accuracy": float(np.mean([r["test_accuracy"] for r in runs])),
            }
        )
    return rows
