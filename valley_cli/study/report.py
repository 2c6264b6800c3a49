"""The study's outputs: ``study.json``, the Markdown report (the answer first) and its plots.

The report's first section is the answer (where ALTO is better, worse or not distinguishable from Lamb, each
with its interval), then the paper's numbers beside ours, then the protocol (fixed before the final runs) and
the details. A ``--quick`` report is labelled a smoke test; a partial one INCOMPLETE, with the resume command.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from valley_cli.study import analysis, protocol, runner
from valley_cli.study.protocol import ALTO, EADAMW, ESGD, LAMB, Setting, StudyConfig
from valley_cli.study.runner import StudyResult, write_atomic

#: The paper's large-batch numbers quoted beside ours (Zhao et al., "Exploring Landscapes for Better Minima
#: along Valleys", NeurIPS 2025, arXiv:2510.27153), as quoted in this project's issues.
PAPER_ROWS = (
    ("CIFAR-10 (paper)", "16384", "ALTO 88.83 % vs Lamb 83.56 % test accuracy", "+5.27 points"),
    ("large-batch tasks (paper, abstract)", "1K-32K", "average test-accuracy gain of ALTO over Lamb", "+2.5 %"),
    ("computation time (paper)", "large", "time saved by ALTO to reach the same accuracy", "29.68 %"),
)
SMOKE = "SMOKE TEST (--quick): toy sizes that exercise every code path; these numbers support no conclusion."
RESUME = "valley bench study --out docs/results --report docs/results.md --cache docs/results/runs --resume"


def versions() -> str:
    """Python, NumPy, torch, mnist1d and valley versions (those that import)."""
    import importlib.metadata as metadata

    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for name in ("torch", "mnist1d", "valley"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return _finite(value)


def all_comparisons(result: StudyResult) -> List[Dict[str, Any]]:
    """Every paired comparison of every finished setting."""
    rows = []
    for setting in result.settings:
        if setting.key in result.arms:
            rows += analysis.comparisons(result.records, setting, result.arms[setting.key])
    return rows


def _setting(result: StudyResult, key: str) -> Optional[Setting]:
    return next((s for s in result.settings if s.key == key), None)


def regime1_gap(result: StudyResult) -> Optional[Dict[str, Any]]:
    """The large-batch gap of regime 1 (smallest vs largest batch, the ALTO/Lamb settings)."""
    r1 = [s for s in result.settings if s.regime == 1 and s.pairs == protocol.E_PAIRS[:1] and s.key in result.arms]
    if len(r1) < 2:
        return None
    small, large = min(r1, key=lambda s: s.batch_size), max(r1, key=lambda s: s.batch_size)
    return analysis.gap(result.records, small, large, result.arms)


def pooled_alto(rows: Sequence[Dict[str, Any]], regimes=(1, 2)) -> Optional[Dict[str, Any]]:
    """ALTO - Lamb pooled over the classification settings of ``regimes`` (main comparisons), seeds as blocks."""
    chosen = [r for r in rows if r["kind"] == "main" and r["a"] == ALTO and r["regime"] in regimes]
    pooled = analysis.pooled([{int(k): v for k, v in r["per_seed"].items()} for r in chosen])
    return None if pooled is None else {**pooled, "settings_pooled": [r["setting"] for r in chosen]}


def train_accuracy(result: StudyResult) -> Dict[str, Dict[str, Any]]:
    """Per finished setting and main arm: the lowest and mean training accuracy of the final runs."""
    out: Dict[str, Dict[str, Any]] = {}
    for setting in result.settings:
        for arm in result.arms.get(setting.key, []):
            present = [result.records[k].get("train_accuracy") for k in arm["keys"] if k in result.records]
            values = [float(v) for v in present if v is not None]
            if arm["role"] == "main" and values:
                out.setdefault(setting.key, {})[arm["name"]] = {"min": min(values), "mean": float(np.mean(values))}
    return out


def post_records(result: StudyResult) -> List[Dict[str, Any]]:
    return [result.records[k] for k in result.post if k in result.records]


def study_json(result: StudyResult, config: StudyConfig, command: str, cache: str) -> Dict[str, Any]:
    """The content of ``study.json``."""
    rows = all_comparisons(result)
    calls = runner.invocations(cache)
    runs = [
        {k: v for k, v in record.items() if k not in ("batch_losses", "losses", "norms")}
        for _, record in sorted(result.records.items())
    ]
    return _clean(
        {
            "smoke_test": config.quick,
            "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": versions(),
            "complete": result.complete,
            "wall_seconds_all_invocations": sum(c["end"] - c["start"] for c in calls),
            "invocations_logged": len(calls),
            "run_wall_seconds_sum": sum(r.get("wall_seconds", 0.0) for r in result.records.values()),
            "runs_computed": result.computed,
            "runs_reused": result.reused,
            "protocol": protocol_fields(config),
            "tuning": result.tuning,
            "selected": {k: {n: v["selected_lr"] for n, v in t.items()} for k, t in result.tuning.items()},
            "collapse_lrs": {k: {n: v["collapse_lr"] for n, v in t.items()} for k, t in result.tuning.items()},
            "arms": result.arms,
            "train_accuracy": train_accuracy(result),
            "gap": regime1_gap(result),
            "pooled_alto_minus_lamb": pooled_alto(rows),
            "comparisons": rows,
            "post_convergence": analysis.post_summary(post_records(result)),
            "runs": runs,
        }
    )


def protocol_fields(config: StudyConfig) -> Dict[str, Any]:
    """The protocol and every threshold, as fixed before the final runs."""
    return {
        "grid": f"lr(i) = {protocol.GRID_ANCHOR:g} * {protocol.GRID_RATIO:g}**i",
        "grid_ratio": protocol.GRID_RATIO,
        "start_points": protocol.START_POINTS,
        "max_points": config.max_points,
        "collapse": f"diverged, or final training loss >= {protocol.COLLAPSE_LOSS_FRACTION:g} x initial",
        "selection": "best mean validation metric over the tuning seeds; collapsed runs count as the worst; "
        "ties to the smaller lr; never at the grid's edge (widened until it is not, or max_points)",
        "tuning_seeds": list(config.tuning_seeds),
        "final_seeds": list(config.seeds),
        "dose_alphas": list(protocol.DOSE_ALPHAS),
        "dose_beta1": protocol.DOSE_BETA1,
        "placebo_factors": list(protocol.PLACEBO_FACTORS),
        "confidence": protocol.CONFIDENCE,
        "power": protocol.POWER,
        "changes_after_results": list(protocol.PROTOCOL_CHANGES),
        "settings": [
            {
                "key": s.key,
                "regime": s.regime,
                "task": s.task,
                "model": list(s.model),
                "data": list(s.data),
                "batch_size": s.batch_size,
                "steps": s.steps,
                "priors": dict(s.priors),
                "pairs": [list(p) for p in s.pairs],
                "dose": s.dose,
            }
            for s in config.settings
        ],
        "post": None if config.post is None else dict(config.post.__dict__),
    }


# ---------------------------------------------------------------------------------------------- formatting


def _pts(row: Dict[str, Any], key: str = "difference") -> str:
    unit = " perplexity" if row["task"] == "lm" else " pts"
    low, high = row["ci_low"], row["ci_high"]
    interval = "" if low is None or not math.isfinite(low) else f" [{low:+.2f}, {high:+.2f}]"
    return f"{row[key]:+.2f}{unit}{interval}"


def _where(row: Dict[str, Any]) -> str:
    regime = {1: "fixed epochs", 2: "few steps", 3: "char LM"}[row["regime"]]
    return f"{regime}, batch {row['batch_size']}, {row['steps']} steps"


def answer_lines(result: StudyResult, config: StudyConfig) -> List[str]:
    """The answer in a few lines (printed by the command and the report's first section)."""
    rows = all_comparisons(result)
    mains = [r for r in rows if r["kind"] == "main" and r["a"] == ALTO]
    lines = []
    if config.quick:
        lines.append(SMOKE)
    if not result.complete:
        lines.append(
            f"INCOMPLETE: {len(result.finished)} of {len(result.settings)} settings finished; not the answer. "
            f"Resume with `{RESUME}`."
        )
    for word in ("ALTO better", "Lamb better", "not distinguishable"):
        chosen = [r for r in mains if r["verdict"] == word]
        if chosen:
            label = {
                "ALTO better": "ALTO better than Lamb",
                "Lamb better": "ALTO worse than Lamb",
                "not distinguishable": "not distinguishable from Lamb",
            }[word]
            items = "; ".join(f"{_where(r)}: {_pts(r)} (MDE {r['mde']:.2f}, {len(r['seeds'])} seeds)" for r in chosen)
            lines.append(f"{label} (ALTO - Lamb, each at its own best lr, paired 95 % CI): {items}.")
    for r in rows:
        if r["kind"] == "main" and r["a"] in (EADAMW, ESGD):
            lines.append(f"E over {r['b']} ({_where(r)}): {r['a']} - {r['b']} = {_pts(r)}: {r['verdict']}.")
    pooled = pooled_alto(rows)
    if pooled:
        lines.append(
            f"Pooled over {pooled['settings']} MNIST-1D settings (seeds as blocks): "
            f"ALTO - Lamb = {pooled['mean']:+.2f} pts "
            f"[{pooled['ci_low']:+.2f}, {pooled['ci_high']:+.2f}]."
        )
    gap = regime1_gap(result)
    if gap:
        lines.append(
            f"Large-batch gap (regime 1): batch {gap['small_batch']} minus batch {gap['large_batch']} = "
            f"{gap['gap']:+.2f} pts [{gap['ci_low']:+.2f}, {gap['ci_high']:+.2f}] test accuracy."
        )
    for r in rows:
        if r["kind"] == "re-tuned Lamb":
            lines.append(
                f"{_where(r)}: placebo check: {placebo_reading(r, analysis.main_difference(rows, r['setting']))}"
            )
    return lines


def placebo_reading(retuned: Dict[str, Any], main: Optional[Dict[str, Any]]) -> str:
    """What the placebo says: ALTO minus the best of Lamb at its lr x0.9 / x1 / x1.1 (chosen on validation),
    and whether an ALTO gain over Lamb survives re-tuning Lamb's lr (if not, it is an effective-lr shift)."""
    text = f"ALTO minus the best re-tuned Lamb ({retuned['b']}) = {_pts(retuned)}"
    if main is None or main["verdict"] != "ALTO better":
        return text + "."
    if retuned["verdict"] == "ALTO better":
        return text + ": the gain survives re-tuning Lamb's lr."
    return text + ": re-tuning Lamb's lr recovers the gain, so it is an effective-lr shift, not better minima."


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _g(value: Optional[float], fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def render_markdown(
    result: StudyResult, config: StudyConfig, payload: Dict[str, Any], plots: Dict[str, str], md_dir: str
) -> str:
    """The Markdown report."""
    rows = all_comparisons(result)  # payload's copy has infinite intervals (one seed) as None
    lines = ["# Where ALTO helps and where it hurts: the large-batch study, second edition", ""]
    if config.quick:
        lines += [f"**{SMOKE}**", ""]
    if not result.complete:
        lines += [
            f"**INCOMPLETE: {len(result.finished)} of {len(result.settings)} settings finished. The lines below are "
            f"partial results, not the answer.** Resume (the cache keeps every finished run): `{RESUME}`",
            "",
        ]
    lines += ["## The answer" if result.complete else "## Partial results (INCOMPLETE: not the answer)", ""]
    answer = [line for line in answer_lines(result, config) if line != SMOKE and not line.startswith("INCOMPLETE")]
    if not answer:
        done = " (the post-convergence experiment has: see below)" if result.post else ""
        answer = [f"No comparison has finished yet{done}."]
    lines += [f"- {line}" for line in answer]
    lines += ["", "## The paper's numbers beside ours", ""]
    table_rows = [list(r) for r in PAPER_ROWS]
    for r in rows:
        if r["kind"] == "main" and r["a"] == ALTO:
            unit = "test perplexity" if r["task"] == "lm" else "% test accuracy"
            table_rows.append(
                [
                    f"ours: {_where(r)}",
                    r["batch_size"],
                    f"ALTO {r['a_mean']:.2f} vs Lamb {r['b_mean']:.2f} {unit} ({len(r['seeds'])} seeds)",
                    _pts(r),
                ]
            )
    lines += [_table(table_rows, ["task", "batch", "result", "ALTO - Lamb [95 % CI]"]), ""]
    lines += [
        "The tasks differ (the paper: CIFAR, ImageNet, GPT-2 on GPUs; here: MNIST-1D and a character LM on a CPU): "
        "the rows answer the same question, not the same experiment. Paper numbers are quoted, not reproduced.",
        "",
    ]
    lines += ["## Protocol (fixed before the final runs)", ""]
    p = payload["protocol"]
    lines += [f"- **Changed after results were seen:** {change}" for change in p.get("changes_after_results", [])]
    lines += [
        f"- Learning rates: one geometric grid {p['grid']} (neighbour ratio {p['grid_ratio']}), "
        f"{p['start_points']} points around a prior, widened two points at a time until the selected lr is "
        "interior and every tuning seed's collapse "
        f"is on the grid (at most {p['max_points']} points).",
        f"- Selection: {p['selection']}. Collapse: {p['collapse']}; the collapse lr per tuning seed is the smallest "
        "collapsed grid lr above the selected one.",
        f"- Seeds: tuning {p['tuning_seeds']}, final {p['final_seeds']} (disjoint). "
        "A seed fixes the initial weights and "
        "the data order, so arms are paired by seed.",
        "- Every optimizer is compared at its own selected lr (`main`) and at the E-optimizer's lr (`equal-lr`). "
        f"Dose-response: ALTO alpha in {p['dose_alphas']} at beta1 {p['dose_beta1']} at ALTO's lr "
        "(alpha 0 is Lamb at that lr). "
        f"Placebo: Lamb at its lr x {p['placebo_factors']}.",
        f"- Statistics: paired t intervals ({p['confidence']:.0%}), minimum detectable effect (MDE) at "
        f"{p['power']:.0%} power, "
        "pooled estimate over settings with seeds as blocks (per-seed mean over settings, then a t interval).",
        "- Schedule: linear warmup over 10 % of the steps, then cosine decay, for every optimizer. ALTO at the paper's "
        "defaults for the batch size (alpha 0.5, beta1 0.01 below 1024 examples per step; -5, 0.99 from 1024); weight "
        "decay and the trust ratio on weight matrices only.",
        "",
        _table(
            [
                [
                    s["key"],
                    s["model"],
                    s["data"],
                    s["batch_size"],
                    s["steps"],
                    ", ".join("/".join(x) for x in s["pairs"]),
                    "yes" if s["dose"] else "",
                ]
                for s in p["settings"]
            ],
            ["setting", "model", "data", "batch", "steps", "pairs", "dose/placebo"],
        ),
        "",
    ]
    for name, path in plots.items():
        lines += [f"![{name}]({os.path.relpath(path, md_dir)})", ""]
    lines += ["## Details per setting", ""]
    for setting in result.settings:
        if setting.key not in result.arms:
            continue
        lines += [
            f"### {setting.name}" + ("" if setting.pairs == protocol.E_PAIRS[:1] else " (E over AdamW and SGD)"),
            "",
        ]
        tuning = result.tuning[setting.key]
        scale = analysis.scale(setting.task)
        lines += [
            _table(
                [
                    [
                        n,
                        " ".join(f"{lr:.3g}" for lr in t["grid"]),
                        f"{t['selected_lr']:.3g}",
                        "yes" if t["bracketed"] else "NO",
                        ", ".join(_g(v) for v in t["collapse_lr"].values()),
                        " ".join(_g(None if not math.isfinite(x) else scale * x, "{:.1f}") for x in t["scores"]),
                    ]
                    for n, t in tuning.items()
                ],
                [
                    "optimizer",
                    "grid (lr)",
                    "selected",
                    "bracketed",
                    "collapse lr per tuning seed",
                    "validation metric per lr",
                ],
            ),
            "",
        ]
        arm_rows = []
        for arm in result.arms[setting.key]:
            runs = [result.records[k] for k in arm["keys"] if k in result.records]
            if not runs:
                continue
            test = [scale * protocol.test_metric(r) for r in runs]
            train = [float(r["train_accuracy"]) for r in runs if r.get("train_accuracy") is not None]
            arm_rows.append(
                [
                    arm["name"],
                    arm["role"],
                    f"{arm['lr']:.3g}",
                    len(runs),
                    f"{np.mean(test):.2f} ± {np.std(test, ddof=1) if len(test) > 1 else 0:.2f}",
                    f"{100 * min(train):.1f}" if train else "-",
                    sum(protocol.collapsed(r) for r in runs),
                ]
            )
        lines += [
            _table(arm_rows, ["arm", "role", "lr", "seeds", "test metric mean ± sd", "min train acc %", "collapsed"]),
            "",
        ]
        crows = [
            [
                r["kind"],
                f"{r['a']} - {r['b']}",
                _pts(r),
                f"{r['mde']:.2f}" if math.isfinite(r["mde"]) else "-",
                f"{r['a_wins']}/{len(r['seeds'])}",
                r["verdict"],
            ]
            for r in rows
            if r["setting"] == setting.key
        ]
        lines += [_table(crows, ["comparison", "arms", "difference [95 % CI]", "MDE (80 %)", "A wins", "verdict"]), ""]
    post = payload["post_convergence"]
    if post:
        pc = config.post
        lines += ["## Post-convergence behaviour (ALTO after the loss reaches ~0)", ""]
        if pc is not None:
            lines += [
                f"Full-batch training of an MLP {pc.hidden} on {pc.data[0]} MNIST-1D examples, lr {pc.lr:g}, "
                f"{pc.steps} steps, {len(pc.seeds)} seeds per condition. Converged = full-batch loss <= "
                f"{pc.converged_loss:g}; after that, an excursion is a step whose loss exceeds "
                f"{pc.excursion_loss:g}. Norm ratio = parameter norm over its value "
                "at convergence. Lamb = alpha 0. Weight decay in the Lamb convention (inside the trust ratio).",
                "",
            ]
        lines += [
            _table(
                [
                    [
                        r["schedule"],
                        f"{r['weight_decay']:g}",
                        f"{r['alpha']:g}",
                        _g(r["beta1"]),
                        f"{r['converged']}/{r['runs']}",
                        _g(r["converged_step"], "{:.0f}"),
                        _g(r["excursion_fraction"], "{:.2f}"),
                        _g(r["max_loss_after"], "{:.3g}"),
                        _g(r["max_norm_ratio"], "{:.2f}"),
                        _g(r["final_norm_ratio"], "{:.2f}"),
                        f"{100 * r['test_accuracy']:.1f}",
                    ]
                    for r in post
                ],
                [
                    "schedule",
                    "weight decay",
                    "alpha",
                    "beta1",
                    "converged",
                    "step",
                    "excursion fraction",
                    "max loss after",
                    "max norm ratio",
                    "final norm ratio",
                    "test acc %",
                ],
            ),
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "```",
        payload["command"],
        "```",
        "",
        f"Versions: {payload['versions']}. Machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other work: seconds are indicative). Wall time of the {payload['invocations_logged']} "
        f"invocation(s) logged in the cache's invocations.jsonl (an interrupted invocation is not logged): "
        f"{payload['wall_seconds_all_invocations'] / 60:.1f} min. The runs' own wall times sum to "
        f"{payload['run_wall_seconds_sum'] / 60:.1f} min (one process each; `--jobs` runs several at once).",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gap(result: StudyResult, path: str) -> Optional[str]:
    """The generalisation-gap picture: regime 1's test and training accuracy vs batch, ALTO - Lamb beside."""
    r1 = sorted(
        (s for s in result.settings if s.regime == 1 and s.pairs == protocol.E_PAIRS[:1] and s.key in result.arms),
        key=lambda s: s.batch_size,
    )
    if not r1:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, colour in ((ALTO, "C0"), (LAMB, "C1")):
        xs, test, train = [], [], []
        for s in r1:
            arm = next(a for a in result.arms[s.key] if a["name"] == name)
            runs = [result.records[k] for k in arm["keys"] if k in result.records]
            if runs:
                xs.append(s.batch_size)
                test.append(100 * np.mean([r["test_accuracy"] for r in runs]))
                train.append(100 * np.mean([r["train_accuracy"] for r in runs]))
        left.plot(xs, test, "o-", color=colour, label=f"{name} test")
        left.plot(xs, train, "s--", color=colour, alpha=0.5, label=f"{name} train")
    left.set(
        xscale="log", xlabel="batch size (fixed epochs)", ylabel="accuracy %", title="MNIST-1D CNN: the large-batch gap"
    )
    left.legend(fontsize=8)
    diffs = [analysis.main_difference(all_comparisons(result), s.key) for s in r1]
    pts = [(s.batch_size, d) for s, d in zip(r1, diffs) if d]
    if pts:
        x = [p[0] for p in pts]
        y = [p[1]["difference"] for p in pts]
        err = [[p[1]["difference"] - p[1]["ci_low"] for p in pts], [p[1]["ci_high"] - p[1]["difference"] for p in pts]]
        right.errorbar(x, y, yerr=err, fmt="o", capsize=4)
    right.axhline(0, color="grey", lw=0.8)
    right.set(
        xscale="log",
        xlabel="batch size",
        ylabel="ALTO - Lamb, test accuracy points",
        title="paired difference, 95 % CI",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_post(result: StudyResult, path: str) -> Optional[str]:
    """Loss and parameter norm of seed 0 at constant lr, Lamb vs ALTO, per weight decay."""
    runs = [r for r in post_records(result) if r["seed"] == 0 and r["schedule"] == "constant"]
    if not runs:
        return None
    plt = _pyplot()
    decays = sorted({r["weight_decay"] for r in runs})
    fig, axes = plt.subplots(2, len(decays), figsize=(4 * len(decays), 6), squeeze=False)
    for column, wd in enumerate(decays):
        for r in runs:
            if r["weight_decay"] != wd:
                continue
            o = r["overrides"]
            label = LAMB if not o else f"{ALTO} a={o['alpha']:g} b1={o['e_beta']:g}"
            steps = np.arange(len(r["losses"])) * r["stride"]
            axes[0][column].plot(steps, r["losses"], lw=0.8, label=label)
            axes[1][column].plot(steps, r["norms"], lw=0.8, label=label)
        axes[0][column].set(yscale="log", title=f"constant lr, weight decay {wd:g}", ylabel="full-batch loss")
        axes[1][column].set(xlabel="step", ylabel="parameter norm")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(
    result: StudyResult, config: StudyConfig, out: str, command: str, report_path: Optional[str], cache: str
) -> Dict[str, str]:
    """Writes ``study.json``, the plots and the report (each atomically, under unique temporary names)."""
    os.makedirs(out, exist_ok=True)
    payload = study_json(result, config, command, cache)
    json_path = write_json(payload, os.path.join(out, "study.json"))
    md_path = report_path or os.path.join(out, "study.md")
    plots = {}
    for name, draw in (("generalisation gap", plot_gap), ("post-convergence", plot_post)):
        target = os.path.join(out, "study_" + name.split()[0].split("-")[0] + ".png")
        temporary = target + f".{os.getpid()}.png"
        try:
            if draw(result, temporary):
                os.replace(temporary, target)
                plots[name] = target
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    write_atomic(md_path, render_markdown(result, config, payload, plots, os.path.dirname(os.path.abspath(md_path))))
    return {"json": json_path, "markdown": md_path, **plots}


def write_json(payload: Dict[str, Any], path: str) -> str:
    """Writes ``payload`` to ``path`` atomically (a uniquely named temporary file, then a rename)."""
    return write_atomic(path, json.dumps(payload, indent=1))
