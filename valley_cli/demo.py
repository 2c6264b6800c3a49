"""``valley demo``: ALTO vs Lamb vs AdamW vs SGD at a large batch, the study's protocol at a small budget.

By default a small MLP (40-64-64-10, the study's) is trained on MNIST-1D (generated offline by the ``mnist1d`` package's
generator, 50k training signals, cached on disk after the first run) at batch 4096 for 300 steps (about 25
epochs), 3 seeds, with the protocol of ``valley bench study``: linear warmup over 10 % of the steps then cosine
decay for every optimizer, ALTO at the paper's defaults for the batch size
(``valley_core.defaults_for_batch_size``), Lamb = ALTO with ``alpha = 0``, weight decay and the trust ratio on
weight matrices only (``backends.torch.lamb_param_groups``). The learning rates are fixed (``DEMO_LRS``); the
study tunes them. ``--data digits`` runs scikit-learn's bundled digits instead (batch 1197 = the whole training
split, and 1024). The command prints a table (test accuracy mean ± std, final training loss, wall time) and
saves a plot and the table.

The optimizers come from ``backends.torch`` (ALTO, Lamb) and ``torch.optim`` (AdamW, SGD). Without torch the
demo runs on the NumPy reference backend (``backends.numpy``, the MLP's forward and backward pass written here
in NumPy; the trust ratio then applies to every tensor, biases included). The update maths lives only in
``valley_core``; this module trains models.

Exit codes: 0 done, 1 a run diverged, 2 bad arguments or output path (found before any training).

Example:
    $ valley demo                 # about a minute on two cores (after the first run generated the data)
    $ valley demo --data digits --backend numpy --quick --out /tmp/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from valley_cli.study import training
from valley_cli.study.data import (
    DIGITS_TEST as TEST_SIZE,
)
from valley_cli.study.data import (
    DIGITS_VALIDATION as VALIDATION_SIZE,
)
from valley_cli.study.data import (
    ClassificationSplit,
    load_digits_split,
    load_mnist1d,
)
from valley_cli.study.training import batch_indices, mean_std, training_loop, warmup_cosine_factor, warmup_steps

#: Where ``valley demo`` writes its plot and table unless ``--out`` says otherwise.
DEFAULT_OUT = "valley-out"
#: The optimizers the demo compares, in table order.
DEMO_OPTIMIZERS = ("ALTO", "Lamb", "AdamW", "SGD")
#: Data sets: name -> (default batch sizes, input width, hidden widths). Batch 0 = the whole training split.
DATASETS = {"mnist1d": ((4096,), 40, (64, 64)), "digits": ((0, 1024), 64, (128, 128))}
#: Fixed learning rates (the demo does not tune): data set -> optimizer -> lr. MNIST-1D: the learning rates
#: ``valley bench study`` selected at batch 4096, 300 steps (docs/results.md), so the demo's runs are the study's
#: final runs of seeds 0-2 at that setting.
DEMO_LRS = {
    "mnist1d": {"ALTO": 3e-2, "Lamb": 3e-2, "AdamW": 3e-2, "SGD": 1.0},
    "digits": {"ALTO": 1e-2, "Lamb": 1e-2, "AdamW": 1e-2, "SGD": 0.1},
}
#: Test-accuracy evaluations per run (evenly spaced) for the plot.
CURVE_POINTS = 60
#: Kept for callers of the digits demo: the hidden widths of its MLP.
MLP_HIDDEN = DATASETS["digits"][2]
DigitsSplit = ClassificationSplit

__all__ = [
    "DEMO_OPTIMIZERS",
    "TEST_SIZE",
    "VALIDATION_SIZE",
    "batch_indices",
    "load_digits_split",
    "load_mnist1d",
    "mean_std",
    "training_loop",
]


# ---------------------------------------------------------------------------------------------- backends


def torch_available() -> bool:
    """True if torch and ``backends.torch`` both import."""
    try:
        importlib.import_module("torch")
        importlib.import_module("backends.torch")
    except ImportError:
        return False
    return True


def resolve_backend(name: str) -> str:
    """``auto`` -> ``torch`` when torch and ``backends.torch`` import, else ``numpy``."""
    if name != "auto":
        return name
    return "torch" if torch_available() else "numpy"


def set_threads(threads: Optional[int]) -> int:
    """Sets torch's intra-op threads (if torch is there); returns the number used.

    Args:
        threads: wanted number, ``None`` for 1: these models are small, and on a busy machine a second
            thread mostly adds synchronisation (measured: up to 10x slower steps on two shared cores).
    """
    if threads is None:
        threads = 1
    try:
        import torch
    except ImportError:
        return threads
    torch.set_num_threads(threads)
    return threads


def optimizer_hyperparameters(
    name: str, batch_size: int, lr: Optional[float] = None, data: str = "mnist1d"
) -> Dict[str, Any]:
    """The demo's hyperparameters for one optimizer at one batch size (the study's, at ``DEMO_LRS``).

    Args:
        name: ``ALTO``, ``Lamb``, ``AdamW`` or ``SGD``.
        batch_size: the batch size (selects ALTO's exploring or exploiting defaults).
        lr: overrides the learning rate.
        data: ``mnist1d`` or ``digits`` (selects the default learning rate).

    Returns:
        Keyword arguments in ``valley_core``'s names (``lr``, ``alpha``, ``betas``, ``momentum`` ...).
    """
    if name not in DEMO_OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not one of {DEMO_OPTIMIZERS}")
    return training.optimizer_hyperparameters(name, batch_size, DEMO_LRS[data][name] if lr is None else lr)


#: optimizer name -> class name in ``backends.numpy``.
NUMPY_OPTIMIZERS = {"ALTO": "ALTO", "Lamb": "Lamb", "AdamW": "AdamW", "SGD": "SGD"}


def make_numpy_optimizer(name: str, params: Sequence[np.ndarray], hp: Dict[str, Any]):
    """Builds a ``backends.numpy`` optimizer (updates the arrays in place on ``step(grads)``)."""
    backend = importlib.import_module("backends.numpy")
    return getattr(backend, NUMPY_OPTIMIZERS[name])(list(params), **hp)


def warmup_cosine_table(value: float, steps: int) -> Callable[[Any], float]:
    """``k -> value * warmup_cosine_factor(k, steps, warmup)`` as a table lookup (for ``backends.numpy``).

    A lookup, not arithmetic on ``k``: cosine needs a math function, which ``valley_core`` schedules may not
    call on ``k``; the NumPy backend passes ``k`` as a 0-d array that ``int()`` accepts.
    """
    warmup = warmup_steps(steps)
    table = [value * warmup_cosine_factor(k, steps, warmup) for k in range(1, steps + 1)]

    def schedule(k: Any) -> float:
        return table[min(int(k), steps) - 1]

    return schedule


# ------------------------------------------------------------------------------------------------ models


class NumpyMLP:
    """A ReLU MLP with softmax cross-entropy, forward and backward written in NumPy (float32).

    Initialised as ``torch.nn.Linear`` is (uniform in ``±1/sqrt(fan_in)``), from a seeded generator.

    Args:
        sizes: layer widths, input first, classes last.
        seed: seeds the initialisation.
    """

    def __init__(self, sizes: Sequence[int], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params: List[np.ndarray] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.params.append(rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32))
            self.params.append(rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The network's output (no softmax)."""
        h = x
        layers = len(self.params) // 2
        for i in range(layers):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < layers - 1:
                h = np.maximum(h, 0.0)
        return h

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy."""
        return float(_cross_entropy(self.logits(x), y)[0])

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> Tuple[float, List[np.ndarray]]:
        """Mean cross-entropy and its gradient with respect to every parameter (backpropagation)."""
        layers = len(self.params) // 2
        activations = [x]
        h = x
        for i in range(layers):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < layers - 1:
                h = np.maximum(h, 0.0)
            activations.append(h)
        loss, d = _cross_entropy(h, y)
        grads: List[np.ndarray] = [np.empty(0)] * len(self.params)
        for i in reversed(range(layers)):
            a_in = activations[i]
            grads[2 * i] = (a_in.T @ d).astype(np.float32)
            grads[2 * i + 1] = d.sum(axis=0).astype(np.float32)
            if i > 0:
                d = (d @ self.params[2 * i].T) * (activations[i] > 0)
        return loss, grads

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of correctly classified examples."""
        return float((self.logits(x).argmax(axis=1) == y).mean())


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -log_probs[np.arange(n), y].mean()
    d = np.exp(log_probs)
    d[np.arange(n), y] -= 1.0
    return float(loss), (d / n).astype(np.float32)


def torch_mlp(sizes: Sequence[int]):
    """A ReLU MLP as a ``torch.nn.Sequential`` (initialise under ``torch.manual_seed`` for determinism)."""
    from valley_cli.study.models import mlp

    return mlp(sizes)


# -------------------------------------------------------------------------------------------------- runs


@dataclasses.dataclass
class RunResult:
    """What one training run produced.

    Attributes:
        optimizer: optimizer name.
        batch_size: examples per step.
        seed: the run's seed.
        hyperparameters: what the optimizer was built with.
        steps: number of optimizer steps taken.
        initial_train_loss: loss on the whole training split before the first step.
        final_train_loss: loss on the whole training split after the last step.
        val_accuracy: validation accuracy after the last step.
        test_accuracy: test accuracy after the last step.
        val_loss: validation loss after the last step.
        wall_time: seconds spent in forward, backward and optimizer steps (evaluation excluded).
        batch_losses: the minibatch loss at every step.
        curve: ``(step, training seconds so far, test accuracy)`` every ``eval_every`` steps.
        diverged: True if the loss became NaN or infinite (the run stops there).
    """

    optimizer: str
    batch_size: int
    seed: int
    hyperparameters: Dict[str, Any]
    steps: int
    initial_train_loss: float
    final_train_loss: float
    val_accuracy: float
    test_accuracy: float
    val_loss: float
    wall_time: float
    batch_losses: List[float]
    curve: List[Tuple[int, float, float]]
    diverged: bool = False


def train_torch_mlp(
    optimizer: str,
    hp: Dict[str, Any],
    data: ClassificationSplit,
    batch_size: int,
    steps: int,
    seed: int,
    hidden: Sequence[int],
    on_step: Optional[Callable[[], None]] = None,
) -> RunResult:
    """Trains the torch MLP with the study's loop (``valley_cli.study.training.train_classifier``)."""
    sizes = (data.x_train.shape[1], *hidden, int(data.y_train.max()) + 1)
    out = training.train_classifier(
        lambda: torch_mlp(sizes),
        optimizer,
        hp,
        data,
        batch_size,
        steps,
        seed,
        curve_points=min(steps, CURVE_POINTS),
        on_step=on_step,
    )
    return RunResult(
        optimizer,
        batch_size,
        seed,
        dict(hp),
        out["steps"],
        out["initial_train_loss"],
        out["final_train_loss"],
        out["val_accuracy"],
        out["test_accuracy"],
        out["val_loss"],
        out["train_seconds"],
        out["batch_losses"],
        [tuple(point) for point in out["curve"]],
        out["diverged"],
    )


def train_numpy_mlp(
    optimizer: str,
    hp: Dict[str, Any],
    data: ClassificationSplit,
    batch_size: int,
    steps: int,
    seed: int,
    hidden: Sequence[int] = MLP_HIDDEN,
    on_step: Optional[Callable[[], None]] = None,
) -> RunResult:
    """The NumPy twin of ``train_torch_mlp`` (``backends.numpy`` optimizers, the same warmup + cosine)."""
    n_features, n_classes = data.x_train.shape[1], int(data.y_train.max()) + 1
    model = NumpyMLP((n_features, *hidden, n_classes), seed)
    probe_x, probe_y = data.x_train[:5000], data.y_train[:5000]
    initial_loss = model.loss(probe_x, probe_y)
    built = dict(hp)
    built["lr"] = warmup_cosine_table(hp["lr"], steps)
    opt = make_numpy_optimizer(optimizer, model.params, built)

    def step(idx: np.ndarray) -> float:
        loss, grads = model.loss_and_grads(data.x_train[idx], data.y_train[idx])
        opt.step(grads)
        return loss

    def checkpoint(number: int) -> Optional[float]:
        return model.accuracy(data.x_test, data.y_test)

    with np.errstate(over="ignore", invalid="ignore"):
        loop = training_loop(batch_indices(len(data.y_train), batch_size, steps, seed), step, checkpoint, on_step)
        final_loss = model.loss(probe_x, probe_y)
        val_loss = model.loss(data.x_val, data.y_val)
    return RunResult(
        optimizer,
        batch_size,
        seed,
        dict(hp),
        len(loop.losses),
        initial_loss,
        final_loss,
        model.accuracy(data.x_val, data.y_val),
        model.accuracy(data.x_test, data.y_test),
        val_loss,
        loop.elapsed,
        loop.losses,
        loop.curve,
        loop.diverged or not math.isfinite(final_loss),
    )


# ------------------------------------------------------------------------------------------------- demo


@dataclasses.dataclass
class DemoConfig:
    """What ``valley demo`` runs.

    Attributes:
        data: ``mnist1d`` or ``digits``.
        backend: ``torch`` or ``numpy``.
        batch_sizes: batch sizes (``None``: the data set's defaults); ``0`` stands for the whole training split.
        seeds: the seeds.
        steps: optimizer steps per run.
        optimizers: optimizer names.
        out: output directory (plot and table).
        threads: torch threads (``None``: 1).
        progress: show a tqdm progress bar.
    """

    data: str = "mnist1d"
    backend: str = "torch"
    batch_sizes: Optional[Tuple[int, ...]] = None
    seeds: Tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    optimizers: Tuple[str, ...] = DEMO_OPTIMIZERS
    out: str = DEFAULT_OUT
    threads: Optional[int] = None
    progress: bool = True


#: Columns of the demo's table, in order.
DEMO_COLUMNS = ("batch", "optimizer", "lr", "test accuracy", "final train loss", "wall time / run (s)")


def load_data(name: str) -> ClassificationSplit:
    """The demo's data set: ``mnist1d`` (50k/5k/5k, generated offline, cached) or ``digits``."""
    if name == "mnist1d":
        return load_mnist1d()
    if name == "digits":
        return load_digits_split()
    raise ValueError(f"data={name!r} is not one of {tuple(DATASETS)}")


def run_demo(config: DemoConfig) -> Tuple[List[Dict[str, Any]], List[RunResult]]:
    """Runs the demo: every optimizer, batch size and seed.

    Returns:
        ``(rows, runs)``: one table row per (batch size, optimizer) with the keys of ``DEMO_COLUMNS`` plus
        numeric fields (``test_accuracy_mean``, ``test_accuracy_std``, ``final_train_loss_mean``,
        ``initial_train_loss_mean``, ``wall_time_mean``, ``diverged``), and every ``RunResult``.
    """
    from tqdm import tqdm

    data = load_data(config.data)
    n_train = len(data.y_train)
    batch_sizes = config.batch_sizes or DATASETS[config.data][0]
    hidden = DATASETS[config.data][2]
    if config.backend == "torch":
        set_threads(config.threads)
    runs: List[RunResult] = []
    rows: List[Dict[str, Any]] = []
    total = len(batch_sizes) * len(config.optimizers) * len(config.seeds) * config.steps
    with (
        _blas_threads(config.threads or 1),
        tqdm(
            total=total, desc="valley demo", unit="step", disable=not config.progress, file=sys.stderr, mininterval=0.5
        ) as bar,
    ):
        for requested in batch_sizes:
            batch_size = n_train if requested == 0 or requested >= n_train else requested
            for name in config.optimizers:
                hp = optimizer_hyperparameters(name, batch_size, data=config.data)
                group: List[RunResult] = []
                for seed in config.seeds:
                    bar.set_postfix_str(f"batch {batch_size} {name} seed {seed}")
                    train = train_torch_mlp if config.backend == "torch" else train_numpy_mlp
                    result = train(
                        name, hp, data, batch_size, config.steps, seed, hidden, on_step=lambda: bar.update(1)
                    )
                    bar.update(config.steps - result.steps)
                    group.append(result)
                runs.extend(group)
                rows.append(_row(group, name, batch_size, n_train, hp))
    return rows, runs


def _row(group: Sequence[RunResult], name: str, batch_size: int, n_train: int, hp: Dict[str, Any]) -> Dict[str, Any]:
    acc_mean, acc_std = mean_std([r.test_accuracy for r in group])
    loss_mean, loss_std = mean_std([r.final_train_loss for r in group])
    time_mean, _ = mean_std([r.wall_time for r in group])
    return {
        "batch": f"{batch_size} (full)" if batch_size == n_train else str(batch_size),
        "optimizer": name,
        "lr": f"{hp['lr']:g}",
        "test accuracy": f"{100 * acc_mean:.2f} ± {100 * acc_std:.2f} %",
        "final train loss": f"{loss_mean:.4f} ± {loss_std:.4f}",
        "wall time / run (s)": f"{time_mean:.2f}",
        "batch_size": batch_size,
        "test_accuracy_mean": acc_mean,
        "test_accuracy_std": acc_std,
        "final_train_loss_mean": loss_mean,
        "initial_train_loss_mean": mean_std([r.initial_train_loss for r in group])[0],
        "wall_time_mean": time_mean,
        "diverged": sum(r.diverged for r in group),
    }


def _blas_threads(threads: int):
    """Limits NumPy's BLAS threads (small matrices: extra threads only contend) if threadpoolctl is there."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def format_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) restricted to ``columns``."""
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def plot_demo(runs: Sequence[RunResult], path: str, title: str = "MNIST-1D MLP") -> str:
    """Saves training-loss and test-accuracy curves (mean over seeds, min-max band) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch_sizes = sorted({r.batch_size for r in runs}, reverse=True)
    optimizers = list(dict.fromkeys(r.optimizer for r in runs))
    fig, axes = plt.subplots(2, len(batch_sizes), figsize=(5.5 * len(batch_sizes), 7.5), squeeze=False)
    for column, batch_size in enumerate(batch_sizes):
        for name in optimizers:
            group = [r for r in runs if r.batch_size == batch_size and r.optimizer == name]
            length = min(len(r.batch_losses) for r in group)
            losses = np.array([r.batch_losses[:length] for r in group])
            steps = np.arange(1, length + 1)
            (line,) = axes[0, column].plot(steps, losses.mean(0), label=name)
            axes[0, column].fill_between(steps, losses.min(0), losses.max(0), alpha=0.2, color=line.get_color())
            length = min(len(r.curve) for r in group)
            if length:
                acc = np.array([[point[2] for point in r.curve[:length]] for r in group])
                curve_steps = [point[0] for point in group[0].curve[:length]]
                axes[1, column].plot(curve_steps, 100 * acc.mean(0), label=name, color=line.get_color())
        axes[0, column].set_yscale("log")
        axes[0, column].set_title(f"{title}, batch {batch_size}")
        axes[0, column].set_xlabel("step")
        axes[0, column].set_ylabel("training loss (minibatch)")
        axes[1, column].set_xlabel("step")
        axes[1, column].set_ylabel("test accuracy (%)")
        for ax in axes[:, column]:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``valley demo``."""
    parser.add_argument(
        "--data", choices=tuple(DATASETS), default="mnist1d", help="MNIST-1D at batch 4096 (default) or digits"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "numpy"),
        default="auto",
        help="torch (backends.torch + torch.optim) or numpy (backends.numpy); auto: torch if it imports, else numpy",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; --quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 300; --quick 15)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT}/)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """Turns parsed options into a ``DemoConfig``.

    Raises:
        ValueError: naming the first bad option (a count below 1, an output path that is not a folder).
    """
    steps = args.steps if args.steps is not None else (15 if args.quick else 300)
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 3)
    for option, value in (("--seeds", seeds), ("--steps", steps), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ValueError(f"{option}={value} must be a positive integer")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a folder")
    parent = os.path.dirname(os.path.abspath(args.out))
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise ValueError(f"--out {args.out}: cannot create or write under {probe}")
    return DemoConfig(
        data=args.data,
        backend=resolve_backend(args.backend),
        seeds=tuple(range(seeds)),
        steps=steps,
        out=args.out,
        threads=args.threads,
        progress=not args.no_progress,
    )


def write_outputs(out: str, files: Dict[str, Callable[[str], Any]]) -> List[str]:
    """Writes each output into a temporary folder next to ``out``, then moves them into ``out``.

    An interrupted run (or a failing writer) leaves the previous outputs in ``out`` untouched.

    Args:
        out: the output folder (created if missing).
        files: file name -> function writing that file at the path it is given.

    Returns:
        The final paths.
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
    """``valley demo``: trains, prints the table, saves the plot; 0, or 1 if a run diverged, 2 for bad input."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"valley demo: {error}", file=sys.stderr)
        return 2
    if args.backend == "auto" and config.backend == "numpy":
        print("torch or backends.torch is not available: running on the NumPy backend (backends.numpy)")
    if config.backend == "torch" and not torch_available():
        print("valley demo: --backend torch needs torch and backends.torch; try --backend numpy", file=sys.stderr)
        return 2
    if config.data == "mnist1d" and importlib.util.find_spec("mnist1d") is None:
        print("valley demo: --data mnist1d needs the mnist1d package (pip install 'valley[demo]')", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rows, runs = run_demo(config)
    total = time.perf_counter() - started
    table = format_table(rows, DEMO_COLUMNS)
    threads = f", torch threads: {set_threads(config.threads)}" if config.backend == "torch" else ""
    _, width, hidden = DATASETS[config.data]
    n_train = len(load_data(config.data).y_train)
    name = "MNIST-1D" if config.data == "mnist1d" else "digits"
    header = (
        f"{name} ({n_train} training examples), MLP {width}-{'-'.join(map(str, hidden))}-10, {config.steps} steps "
        f"per run (warmup {warmup_steps(config.steps)} steps, then cosine), seeds {list(config.seeds)}, backend "
        f"{config.backend}{threads}"
    )
    settings = "\n".join(
        f"  {row['optimizer']:6s} batch {row['batch_size']}: "
        f"{_format_hp(optimizer_hyperparameters(row['optimizer'], row['batch_size'], data=config.data))}"
        for row in rows
    )
    print(header)
    print(table)
    print("hyperparameters:\n" + settings)
    markdown = f"# valley demo\n\n{header}\n\n{table}\n\nhyperparameters:\n\n```\n{settings}\n```\n"

    def write_markdown(path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(markdown)

    plot_path, table_path = write_outputs(
        config.out, {"demo.png": lambda path: plot_demo(runs, path, f"{name} MLP"), "demo.md": write_markdown}
    )
    print(f"plot: {plot_path}\ntable: {table_path}\ntotal time {total:.1f} s")
    diverged = sum(row["diverged"] for row in rows)
    if diverged:
        print(f"valley demo: {diverged} run(s) diverged (NaN/Inf loss)", file=sys.stderr)
        return 1
    return 0


def _format_hp(hp: Dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in hp.items())
