"""Statistics of the study: paired ALTO - Lamb differences with confidence intervals, summaries, time to target.

Paired difference: for the seeds both optimizers ran (same initial weights and data order per seed),
``d_i = metric(ALTO, seed i) - metric(Lamb, seed i)``; the estimate is ``mean(d)`` and the 95 % interval
``mean(d) ± t_{0.975, n-1} * sd(d) / sqrt(n)`` (Student t over the paired seeds). Accuracies are in percentage
points; for the language model the metric is test perplexity (negative favours ALTO).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from valley_cli.study import grids
from valley_cli.study.grids import Group


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """Mean of ``a - b`` over pairs with a Student-t confidence interval.

    Args:
        a: values of the first optimizer, one per seed.
        b: values of the second optimizer for the same seeds, in the same order.
        confidence: the interval's coverage.

    Returns:
        ``{"mean", "ci_low", "ci_high", "sd", "n"}``; with one pair the interval is ``(-inf, inf)``.

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
        return {"mean": mean, "ci_low": -math.inf, "ci_high": math.inf, "sd": 0.0, "n": n}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "n": n}


def final_records(
    records: Sequence[Dict[str, Any]], group: Group, optimizer: str, lr: float, arm: str = "main"
) -> List[Dict[str, Any]]:
    """The final runs of ``optimizer`` in ``group`` at ``lr`` (one per final seed present), in seed order."""
    clip = grids.CLIP_NORM if arm == "clip" else None
    wanted = {grids.run_key(grids.spec(group, optimizer, lr, seed, clip)) for seed in group.seeds}
    return sorted((r for r in records if r["key"] in wanted), key=lambda r: r["seed"])


def scale(task: str) -> float:
    """Reporting scale of the test metric: percent for accuracies, 1 for perplexities."""
    return 1.0 if task == "lm" else 100.0


def compare(
    records: Sequence[Dict[str, Any]], group: Group, selected: Dict[str, float], arm: str = "main"
) -> Optional[Dict[str, Any]]:
    """The paired ALTO - Lamb comparison of ``group`` (``None`` if a side has no final runs)."""
    alto = {r["seed"]: r for r in final_records(records, group, "ALTO", selected["ALTO"], arm)}
    lamb = {r["seed"]: r for r in final_records(records, group, "Lamb", selected["Lamb"], arm)}
    seeds = sorted(set(alto) & set(lamb))
    if not seeds:
        return None
    k = scale(group.task)
    a = [k * grids.test_metric(alto[s]) for s in seeds]
    b = [k * grids.test_metric(lamb[s]) for s in seeds]
    stats = paired_difference(a, b)
    return {
        "task": group.task,
        "batch_size": group.batch_size,
        "steps": group.steps,
        "arm": arm,
        "metric": "test_perplexity" if group.task == "lm" else "test_accuracy_percent",
        "seeds": seeds,
        "alto_lr": selected["ALTO"],
        "lamb_lr": selected["Lamb"],
        "alto_mean": float(np.mean(a)),
        "lamb_mean": float(np.mean(b)),
        "alto_minus_lamb": stats["mean"],
        "ci_low": stats["ci_low"],
        "ci_high": stats["ci_high"],
        "alto_wins": int(sum(x > y for x, y in zip(a, b)) if group.task != "lm" else sum(x < y for x, y in zip(a, b))),
        "diverged": int(sum(alto[s]["diverged"] for s in seeds) + sum(lamb[s]["diverged"] for s in seeds)),
    }


def verdict_word(comparison: Dict[str, Any]) -> str:
    """``ALTO better`` / ``Lamb better`` / ``no significant difference`` from the interval's sign."""
    low, high = comparison["ci_low"], comparison["ci_high"]
    alto_higher = low > 0
    lamb_higher = high < 0
    if comparison["task"] == "lm":
        alto_higher, lamb_higher = lamb_higher, alto_higher  # lower perplexity is better
    if alto_higher:
        return "ALTO better"
    if lamb_higher:
        return "Lamb better"
    return "no significant difference"


def first_reaching(curve: Sequence[Sequence[float]], target: float, higher: bool) -> Optional[Tuple[int, float]]:
    """``(step, seconds)`` of the first curve point at or beyond ``target`` (``None`` if never)."""
    for step, seconds, value in curve:
        if (value >= target) if higher else (value <= target):
            return int(step), float(seconds)
    return None


def time_to_target(
    records: Sequence[Dict[str, Any]], group: Group, selected: Dict[str, float], margin: float = 0.01
) -> Optional[Dict[str, Any]]:
    """Steps and training seconds until ALTO and Lamb first reach a common target on the test metric.

    The target is the worse of the two optimizers' mean final test metrics, loosened by ``margin`` (1 point of
    accuracy; 1 % of the perplexity), so both can reach it. Means over the seeds that reach it.
    """
    higher = grids.higher_is_better(group.task)
    runs = {name: final_records(records, group, name, selected[name]) for name in grids.COMPARED}
    if not all(runs.values()):
        return None
    finals = {name: float(np.mean([grids.test_metric(r) for r in group_runs])) for name, group_runs in runs.items()}
    target = min(finals.values()) - margin if higher else max(finals.values()) * (1 + margin)
    row: Dict[str, Any] = {"task": group.task, "batch_size": group.batch_size, "steps": group.steps, "target": target}
    for name, group_runs in runs.items():
        hits = [first_reaching(r["curve"], target, higher) for r in group_runs]
        reached = [h for h in hits if h is not None]
        row[f"{name}_reached"] = f"{len(reached)}/{len(hits)}"
        row[f"{name}_steps"] = float(np.mean([h[0] for h in reached])) if reached else None
        row[f"{name}_seconds"] = float(np.mean([h[1] for h in reached])) if reached else None
    return row


def summary(
    records: Sequence[Dict[str, Any]], group: Group, selected: Dict[str, float], arm: str = "main"
) -> List[Dict[str, Any]]:
    """Per optimizer of ``group``: selected lr, seeds, test metric mean ± std, seconds per run, diverged runs."""
    rows = []
    names = list(grids.COMPARED) + ([name for name, _ in group.references] if arm == "main" else [])
    k = scale(group.task)
    for name in names:
        runs = final_records(records, group, name, selected[name], arm)
        if not runs:
            continue
        values = [k * grids.test_metric(r) for r in runs]
        rows.append(
            {
                "optimizer": name + (" + clip 1.0" if arm == "clip" else ""),
                "lr": selected[name],
                "seeds": len(runs),
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "seconds": float(np.mean([r["train_seconds"] for r in runs])),
                "diverged": int(sum(r["diverged"] for r in runs)),
            }
        )
    return rows


def tuning_table(records: Sequence[Dict[str, Any]], group: Group) -> Dict[str, List[Optional[float]]]:
    """optimizer -> mean validation metric per grid point (``None`` where a run is missing or diverged)."""
    by_key = {r["key"]: r for r in records}
    table: Dict[str, List[Optional[float]]] = {}
    k = scale(group.task)
    for name in grids.COMPARED:
        row: List[Optional[float]] = []
        for lr in group.grid:
            values: List[float] = []
            for seed in group.tuning_seeds:
                record = by_key.get(grids.run_key(grids.spec(group, name, lr, seed)))
                if record is None or record["diverged"]:
                    values = []
                    break
                values.append(k * grids.validation_metric(record))
            row.append(float(np.mean(values)) if values else None)
        table[name] = row
    return table
