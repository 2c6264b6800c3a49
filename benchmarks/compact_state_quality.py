"""Quality of ALTO with compact optimizer state against float32 state (issue 16; not a test).

Usage::

    .venv/bin/python benchmarks/compact_state_quality.py --seeds 5            # MNIST-1D and the character LM
    .venv/bin/python benchmarks/compact_state_quality.py --task mnist1d --seeds 5
    .venv/bin/python benchmarks/compact_state_quality.py --task digits --seeds 5   # a smoke check on sklearn digits

Uses the study harness ``valley_cli/study``. Runs the MNIST-1D study's largest setting (batch 16384, its
epoch budget, the study's selected learning rate 0.03 and the paper's defaults for the batch) and its
character LM at the larger batch (64 sequences, 500 steps, lr 0.03), with ALTO's ``state_dtype`` float32,
bfloat16 and int8, on paired seeds (the same initialisation and batches for every state dtype). Prints per seed
the test metric, then per compact format the paired difference to float32 with its 95 % t interval, against
the seed-to-seed standard deviation of float32 ALTO: the target is a mean difference within that spread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def t975(dof: int) -> float:
    """The two-sided 95 % Student t quantile (scipy, a dependency of the study's statistics)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


FORMATS = ("float32", "bfloat16", "int8")


def run_mnist1d(state_dtype: str, seed: int, lr: float) -> float:
    from valley_cli.study import data, models, training
    from valley_cli.study.grids import StudyConfig

    config = StudyConfig()
    split = data.load_mnist1d(config.n_train, config.n_val, config.n_test)
    batch = max(config.batch_sizes)
    steps = config.epochs[batch] * (len(split.x_train) // batch)
    hp = {**training.optimizer_hyperparameters("ALTO", batch, lr), "state_dtype": state_dtype}
    sizes = (40, *config.hidden, 10)
    result = training.train_classifier(lambda: models.mlp(sizes), "ALTO", hp, split, batch, steps, seed, curve_points=0)
    return float(result["test_accuracy"]) * 100.0


def run_lm(state_dtype: str, seed: int, lr: float) -> float:
    from valley_cli.study import data, models, training
    from valley_cli.study.grids import StudyConfig

    config = StudyConfig()
    size = config.lm_size
    batch = max(config.lm_batch_sizes)
    hp = {**training.optimizer_hyperparameters("ALTO", batch * size[4], lr), "state_dtype": state_dtype}
    text = data.load_stdlib_text()[0]
    result = training.train_lm(
        lambda: models.char_transformer(size),
        size[4],
        "ALTO",
        hp,
        text,
        batch,
        config.lm_steps,
        seed,
        eval_windows=config.lm_eval_windows,
        curve_points=0,
    )
    return float(result["test_perplexity"])


def run_digits(state_dtype: str, seed: int, lr: float) -> float:
    """A smoke check that needs no study harness: scikit-learn's digits, an MLP 64-128-10, ALTO (the paper's
    other defaults, weight decay on the weights only), batch 256, 300 steps; test accuracy on 397 held-out digits."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from backends.torch import ALTO, lamb_param_groups

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = torch.tensor(order[:1400]), torch.tensor(order[1400:])
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optimizer = ALTO(lamb_param_groups(model, weight_decay=1e-4), lr=lr, state_dtype=state_dtype)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (256,), generator=generator)]
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(x[test]).argmax(1) == y[test]).float().mean()) * 100.0


def summarise(task: str, metric: str, results: Dict[str, List[float]]) -> None:
    base = results["float32"]
    spread = statistics.stdev(base) if len(base) > 1 else float("nan")
    print(f"\n### {task}: {metric}, {len(base)} paired seeds\n")
    print("| state_dtype | per seed | mean ± sd | paired difference to float32 [95 % t interval] | within sd |")
    print("|---|---|---:|---:|---|")
    for state_dtype, values in results.items():
        row = ", ".join(f"{v:.3f}" for v in values)
        mean_sd = f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"
        if state_dtype == "float32":
            print(f"| {state_dtype} | {row} | {mean_sd} | - | sd {spread:.3f} |")
            continue
        diffs = [v - b for v, b in zip(values, base)]
        mean = statistics.mean(diffs)
        half = t975(len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0
        verdict = "yes" if abs(mean) <= spread else "NO"
        interval = f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"
        print(f"| {state_dtype} | {row} | {mean_sd} | {interval} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["mnist1d", "lm", "all", "digits"], default="all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.task != "digits":
        try:
            import valley_cli.study  # noqa: F401
        except ImportError:
            parser.error("needs the MNIST-1D study's harness, valley_cli/study (install the 'demo' extra)")
    import torch

    torch.set_num_threads(args.threads)
    tasks = [
        ("mnist1d", "test accuracy (%)", run_mnist1d, 0.03),
        ("lm", "test perplexity", run_lm, 0.03),
        ("digits", "test accuracy (%)", run_digits, 1e-2),
    ]
    for task, metric, runner, lr in tasks:
        if args.task != task and (args.task != "all" or task == "digits"):
            continue
        results: Dict[str, List[float]] = {f: [] for f in FORMATS}
        for seed in range(args.seeds):
            for state_dtype in FORMATS:
                start = time.perf_counter()
                results[state_dtype].append(runner(state_dtype, seed, lr))
                print(
                    f"  {task} seed {seed} {state_dtype}: {results[state_dtype][-1]:.3f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        summarise(task, metric, results)


if __name__ == "__main__":
    main()
