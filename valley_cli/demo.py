"""``valley demo``: the study's decisive comparison, reduced: ALTO vs Lamb where large batches are hard.

The setting is regime 1 of ``valley bench study`` (docs/results.md): a small 1-D CNN (16 channels) on 2000
MNIST-1D training examples (generated offline by the ``mnist1d`` package, cached on disk), a fixed budget of
300 epochs, ALTO at the paper's defaults for the batch size and Lamb (ALTO with ``alpha = 0``), both from
``backends.torch`` (the maths of ``valley_core``), warmup then cosine. The demo trains

- ALTO and Lamb at the full batch (2000 examples, 300 steps) with 5 paired seeds (a seed fixes the initial
  weights and the data order), and prints the paired ALTO - Lamb difference with its 95 % t interval;
- both at batch 128 (4500 steps) with 1 seed, for the generalisation-gap picture (``OUT/demo_gap.png``:
  test and training accuracy against the batch size).

It is a reduced version of the study (5 seeds instead of 8, two batch sizes instead of four, learning rates
fixed instead of tuned, no dose-response or placebo arms) and says so; the full numbers are in
docs/results.md. 12 runs, about 110 s of CPU time: about a minute on two free cores after the data set is
generated.

Exit codes: 0 done, 1 a run diverged, 2 bad options, an unusable output folder or a missing dependency (one
line on stderr, before any training; nothing written).

Example:
    $ valley demo
    $ valley demo --seeds 8 --out /tmp/demo
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from valley_cli.study.cli import UsageError, integer_option
from valley_cli.study.protocol import ALTO, LAMB

#: Where ``valley demo`` writes its plot and summary unless ``--out`` says otherwise.
DEFAULT_OUT = "valley-out"
#: The demo's setting: the study's regime 1 (data sizes, model, epochs).
DATA = (2000, 2000, 4000)
MODEL = ("cnn", 16)
EPOCHS = 300
LARGE_BATCH = 2000
SMALL_BATCH = 128
#: Seeds: paired seeds of the decisive comparison (large batch) and of the small batch (the gap picture).
SEEDS = 5
SMALL_SEEDS = 1
#: Learning rates per batch size and optimizer: the study's selected learning rates at regime 1, batch 2000 and
#: batch 128 (docs/results/study.json, ``selected``), so the demo's runs are the study's final runs of those seeds.
DEMO_LRS = {LARGE_BATCH: {ALTO: 0.0444089, LAMB: 0.0555112}, SMALL_BATCH: {ALTO: 0.00931323, LAMB: 0.0116415}}
#: ``--quick``: toy sizes for tests (seconds); the output says it supports no conclusion.
QUICK_DATA, QUICK_MODEL, QUICK_EPOCHS, QUICK_LARGE, QUICK_SMALL = (200, 100, 100), ("cnn", 4), 3, 200, 50
OPTIMIZERS = (ALTO, LAMB)
REDUCED = (
    "This is a reduced version of `valley bench study` (regime 1: {seeds} paired seeds instead of 8, batch {small} "
    "and {large} of four batch sizes, learning rates fixed instead of tuned, no dose-response or placebo arms); "
    "the full numbers are in docs/results.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``valley demo`` (numbers are parsed in ``run`` so that a bad one is one line)."""
    parser.add_argument("--seeds", default=str(SEEDS), help=f"paired seeds at the large batch (default {SEEDS}, >= 2)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT}/)")
    parser.add_argument("--jobs", default=None, help="worker processes (default min(2, cores))")
    parser.add_argument("--threads", default="1", help="torch threads per worker (default 1)")
    parser.add_argument("--quick", action="store_true", help="toy sizes for smoke tests (seconds; no conclusion)")
    parser.add_argument("--no-progress", action="store_true", help="accepted for compatibility (no progress bar)")


def check_out(out: str) -> None:
    """``out`` is a folder, or can be created under a writable folder."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a folder")
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise UsageError(f"--out {out}: cannot create or write under {probe}")


def demo_specs(seeds: int, quick: bool = False) -> List[Dict[str, Any]]:
    """The demo's runs: ALTO and Lamb at the large batch with ``seeds`` seeds and at the small batch with
    ``SMALL_SEEDS`` (study specs: ``valley_cli.study.runner.train_run`` trains them)."""
    from valley_cli.study import protocol

    data, model, epochs = (QUICK_DATA, QUICK_MODEL, QUICK_EPOCHS) if quick else (DATA, MODEL, EPOCHS)
    large, small = (QUICK_LARGE, QUICK_SMALL) if quick else (LARGE_BATCH, SMALL_BATCH)
    specs = []
    for batch, count in ((large, seeds), (small, min(SMALL_SEEDS, seeds))):
        lrs = DEMO_LRS[LARGE_BATCH if batch == large else SMALL_BATCH]
        setting = protocol.Setting(1, "mnist1d", model, data, batch, epochs * (data[0] // batch), tuple(lrs.items()))
        specs += [protocol.spec(setting, name, lrs[name], seed, "demo") for name in OPTIMIZERS for seed in range(count)]
    return specs


def train_all(specs: Sequence[Dict[str, Any]], jobs: int, threads: int) -> List[Dict[str, Any]]:
    """Trains ``specs`` in ``jobs`` worker processes (in this process for ``jobs=1``), in spec order."""
    from valley_cli.study import runner

    if jobs <= 1:
        return [runner._train_here((spec, threads)) for spec in specs]
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=runner._init_worker, initargs=(threads,)) as pool:
        return pool.map(runner.train_run, specs, chunksize=1)


def summarise(records: Sequence[Dict[str, Any]], large: int) -> Dict[str, Any]:
    """Means per (batch, optimizer) and the paired ALTO - Lamb difference at the large batch (test accuracy
    in points, 95 % t interval over the seeds)."""
    from valley_cli.study import analysis

    table: Dict[Tuple[int, str], Dict[str, Any]] = {}
    for r in records:
        row = table.setdefault((r["batch_size"], r["optimizer"]), {"test": {}, "train": {}, "diverged": 0})
        row["test"][r["seed"]] = 100 * r["test_accuracy"]
        row["train"][r["seed"]] = 100 * r["train_accuracy"]
        row["diverged"] += int(r["diverged"])
    alto, lamb = table[(large, ALTO)]["test"], table[(large, LAMB)]["test"]
    seeds = sorted(set(alto) & set(lamb))
    paired = analysis.paired_difference([alto[s] for s in seeds], [lamb[s] for s in seeds])
    return {"table": table, "paired": paired, "seeds": seeds}


def report_lines(summary: Dict[str, Any], large: int, small: int, quick: bool, seconds: float) -> List[str]:
    """The demo's printed report (the test suite checks its format)."""
    p = summary["paired"]
    verdict = "ALTO better" if p["ci_low"] > 0 else "Lamb better" if p["ci_high"] < 0 else "not distinguishable"
    lines = []
    if quick:
        lines.append("SMOKE TEST (--quick): toy sizes; these numbers support no conclusion.")
    lines.append(
        f"ALTO vs Lamb on MNIST-1D, 1-D CNN, {EPOCHS if not quick else QUICK_EPOCHS} epochs at every batch size "
        f"(regime 1 of the study), {len(summary['seeds'])} paired seeds at batch {large}:"
    )
    for (batch, name), row in sorted(summary["table"].items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        test = list(row["test"].values())
        lines.append(
            f"  batch {batch:5d}  {name:4s}  test accuracy {np.mean(test):6.2f} %  "
            + (f"(sd {np.std(test, ddof=1):.2f}, {len(test)} seeds)" if len(test) > 1 else "(1 seed)        ")
            + f"  training accuracy {np.mean(list(row['train'].values())):6.2f} %"
        )
    lines.append(
        f"ALTO - Lamb at batch {large}: {p['mean']:+.2f} points, 95 % CI [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] "
        f"(paired t, {p['n']} seeds): {verdict}"
    )
    best_small = max(np.mean(list(summary["table"][(small, n)]["test"].values())) for n in OPTIMIZERS)
    best_large = max(np.mean(list(summary["table"][(large, n)]["test"].values())) for n in OPTIMIZERS)
    lines.append(
        f"large-batch gap: best at batch {small} minus best at batch {large} = {best_small - best_large:+.2f} points"
    )
    lines.append(REDUCED.format(seeds=len(summary["seeds"]), small=small, large=large))
    lines.append(f"trained {sum(len(r['test']) for r in summary['table'].values())} runs in {seconds:.0f} s")
    return lines


def plot_gap(summary: Dict[str, Any], path: str, title: str) -> str:
    """Test and training accuracy against the batch size, ALTO and Lamb (the generalisation-gap picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, colour in zip(OPTIMIZERS, ("C0", "C1")):
        rows = sorted((b, row) for (b, n), row in summary["table"].items() if n == name)
        xs = [b for b, _ in rows]
        ax.plot(xs, [np.mean(list(r["test"].values())) for _, r in rows], "o-", color=colour, label=f"{name} test")
        ax.plot(
            xs,
            [np.mean(list(r["train"].values())) for _, r in rows],
            "s--",
            color=colour,
            alpha=0.5,
            label=f"{name} train",
        )
    ax.set(xscale="log", xlabel="batch size (fixed epochs)", ylabel="accuracy %", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(out: str, files: Dict[str, Callable[[str], Any]]) -> List[str]:
    """Writes each output into a temporary folder next to ``out``, then moves them into ``out``.

    An interrupted run (or a failing writer) leaves the previous outputs in ``out`` untouched.
    """
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".valley-demo-", dir=parent)
    try:
        for name, write in files.items():
            write(os.path.join(staging, name))
        os.makedirs(out, exist_ok=True)
        paths = []
        for name in files:
            final = os.path.join(out, name)
            os.replace(os.path.join(staging, name), final)
            paths.append(final)
        return paths
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """``valley demo`` (see the module's exit codes)."""
    try:
        seeds = integer_option("--seeds", args.seeds, 2)
        jobs = integer_option("--jobs", args.jobs) or max(1, min(2, os.cpu_count() or 1))
        threads = integer_option("--threads", args.threads) or 1
        check_out(args.out)
        for module in ("torch", "backends.torch", "mnist1d", "matplotlib", "scipy"):
            importlib.import_module(module)
    except UsageError as error:
        print(f"valley demo: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(
            f"valley demo needs the torch and demo extras (pip install 'valley[torch,demo]'): {error}", file=sys.stderr
        )
        return 2
    from valley_cli.study import data

    assert seeds is not None
    specs = demo_specs(seeds, args.quick)
    data.load_mnist1d(*specs[0]["data"])  # set-up: generate (or read) the data once, before the workers start
    started = time.perf_counter()
    records = train_all(specs, jobs, threads)
    seconds = time.perf_counter() - started
    large, small = specs[0]["batch_size"], specs[-1]["batch_size"]
    summary = summarise(records, large)
    lines = report_lines(summary, large, small, args.quick, seconds)
    text = "\n".join(lines)
    paths = write_outputs(
        args.out,
        {
            "demo_gap.png": lambda path: plot_gap(summary, path, "MNIST-1D CNN, fixed epochs: the large-batch gap"),
            "demo.md": lambda path: _write_text(path, "# valley demo\n\n```\n" + text + "\n```\n"),
        },
    )
    print(text)
    print(f"plot: {paths[0]}\nsummary: {paths[1]}")
    diverged = sum(row["diverged"] for row in summary["table"].values())
    if diverged:
        print(f"valley demo: {diverged} run(s) diverged (NaN/Inf loss)", file=sys.stderr)
        return 1
    return 0


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
