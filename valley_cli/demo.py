"""``valley demo``: ALTO vs Lamb vs AdamW vs SGD at a large batch on scikit-learn's digits.

A small MLP is trained on a fixed, deterministic train/validation/test split of the bundled digits data
(no download) at large batch sizes (the whole training split, and 1024), with several seeds. ALTO uses the
paper's large-batch defaults (``valley_core.defaults_for_batch_size``). The command prints a table (test
accuracy mean ± std, final training loss, wall time) and saves a plot.

The optimizers come from ``backends.torch`` (ALTO, Lamb) and ``torch.optim`` (AdamW, SGD). Without torch,
the demo runs on the NumPy reference backend (``backends.numpy``), with the MLP's forward and backward pass
written here in NumPy. The update maths lives only in ``valley_core``; this module trains models.

The data helpers and the training loop are shared with ``valley bench generalization``.

Example:
    $ valley demo                 # about a minute on two cores
    $ valley demo --quick --backend numpy --out /tmp/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

#: Where ``valley demo`` writes its plot and table unless ``--out`` says otherwise.
DEFAULT_OUT = "valley-out"
#: The optimizers the demo compares, in table order.
DEMO_OPTIMIZERS = ("ALTO", "Lamb", "AdamW", "SGD")
#: Size of the validation and of the test split of digits (the rest, 1197 images, is the training split).
VALIDATION_SIZE = 300
TEST_SIZE = 300
#: Hidden layer widths of the demo's MLP.
MLP_HIDDEN = (128, 128)


# --------------------------------------------------------------------------------------------------- data


class DigitsSplit(NamedTuple):
    """The digits data, split once and for all (pixels scaled to [0, 1], float32; labels int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split() -> DigitsSplit:
    """Loads scikit-learn's bundled digits (1797 8x8 images) and splits it deterministically.

    The split is stratified and seeded with a constant, so it is the same on every machine and every call:
    300 test images, 300 validation images, 1197 training images.

    Returns:
        A ``DigitsSplit``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=TEST_SIZE, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=VALIDATION_SIZE, random_state=0, stratify=y_rest
    )
    return DigitsSplit(x_train, y_train, x_val, y_val, x_test, y_test)


def batch_indices(n: int, batch_size: int, steps: int, seed: int):
    """Yields ``steps`` index arrays: epochs of a seeded permutation, the last partial batch dropped.

    Args:
        n: number of training examples.
        batch_size: examples per step (``>= n`` means the whole training split every step).
        steps: how many batches to yield.
        seed: seeds the shuffling.
    """
    if batch_size >= n:
        everything = np.arange(n)
        for _ in range(steps):
            yield everything
        return
    rng = np.random.default_rng(seed + 7919)
    per_epoch = n // batch_size
    produced = 0
    while produced < steps:
        order = rng.permutation(n)
        for b in range(per_epoch):
            if produced >= steps:
                return
            yield order[b * batch_size : (b + 1) * batch_size]
            produced += 1


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


def optimizer_hyperparameters(name: str, batch_size: int, lr: Optional[float] = None) -> Dict[str, Any]:
    """The demo's hyperparameters for one optimizer at one batch size.

    ALTO uses the paper's defaults for the batch size (``valley_core.defaults_for_batch_size``) with the
    paper's large-batch learning rate 1e-2; Lamb uses the same moments, epsilons, weight decay and learning
    rate (it is ALTO with ``alpha = 0``). AdamW uses torch's default moments with the same learning rate and
    weight decay; SGD uses heavy-ball momentum 0.9 and learning rate 0.1.

    Args:
        name: ``ALTO``, ``Lamb``, ``AdamW`` or ``SGD``.
        batch_size: the batch size (selects ALTO's exploring or exploiting defaults).
        lr: overrides the learning rate.

    Returns:
        Keyword arguments in ``valley_core``'s names (``lr``, ``alpha``, ``betas``, ``momentum`` ...).
    """
    from valley_core import defaults_for_batch_size

    if name == "ALTO":
        hp = {"lr": 1e-2, **defaults_for_batch_size(batch_size)}
    elif name == "Lamb":
        paper = defaults_for_batch_size(batch_size)
        hp = {
            "lr": 1e-2,
            "betas": paper["betas"][1:],
            "eps": paper["eps"],
            "weight_decay": paper["weight_decay"],
            "trust_eps": paper["trust_eps"],
            "norm_eps": paper["norm_eps"],
        }
    elif name == "AdamW":
        hp = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4}
    elif name == "SGD":
        hp = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    else:
        raise ValueError(f"optimizer={name!r} is not one of {DEMO_OPTIMIZERS}")
    if lr is not None:
        hp["lr"] = lr
    return hp


#: optimizer name -> (module, class) for the torch path. AdamW, Adam and SGD are torch's own builtins.
TORCH_OPTIMIZERS = {
    "ALTO": ("backends.torch", "ALTO"),
    "Lamb": ("backends.torch", "Lamb"),
    "EAdam": ("backends.torch", "EAdam"),
    "AdamCM": ("backends.torch", "AdamCM"),
    "AdamW": ("torch.optim", "AdamW"),
    "Adam": ("torch.optim", "Adam"),
    "SGD": ("torch.optim", "SGD"),
}

#: optimizer name -> class name in ``backends.numpy``.
NUMPY_OPTIMIZERS = {"ALTO": "ALTO", "Lamb": "Lamb", "EAdam": "EAdam", "AdamW": "AdamW", "Adam": "Adam", "SGD": "SGD"}


def make_torch_optimizer(name: str, params: Sequence[Any], hp: Dict[str, Any]):
    """Builds a torch optimizer from ``valley_core``-style hyperparameters.

    Raises:
        ImportError: if the optimizer's module (e.g. ``backends.torch``) or class is not available.
    """
    module_name, class_name = TORCH_OPTIMIZERS[name]
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImportError(f"{module_name}.{class_name} is not available")
    hp = dict(hp)
    if module_name == "torch.optim" and class_name == "SGD":
        return cls(
            list(params), lr=hp["lr"], momentum=hp.get("momentum", 0.0), weight_decay=hp.get("weight_decay", 0.0)
        )
    optimizer = cls(list(params), **hp)
    if module_name == "backends.torch":
        # The default path ("auto": fused CPU kernels generated from the optimizer's plan, proven equal to the core
        # by tests/torch). Their one-off build (about a second, then cached on disk) happens here, outside the timed
        # training.
        from backends.kernels.cpu import KernelUnavailable
        from backends.kernels.plan import Plan
        from backends.torch import fused

        for group in optimizer.param_groups:
            plan = optimizer.plan_for(group)
            try:
                if isinstance(plan, Plan):
                    fused.library(plan)
            except KernelUnavailable:
                pass  # "auto" warns and uses another path
    return optimizer


def make_numpy_optimizer(name: str, params: Sequence[np.ndarray], hp: Dict[str, Any]):
    """Builds a ``backends.numpy`` optimizer (updates the arrays in place on ``step(grads)``)."""
    backend = importlib.import_module("backends.numpy")
    return getattr(backend, NUMPY_OPTIMIZERS[name])(list(params), **hp)


def optimizer_available(name: str, backend: str) -> bool:
    """True if optimizer ``name`` can be built on ``backend`` (``torch`` or ``numpy``)."""
    try:
        if backend == "torch":
            module_name, class_name = TORCH_OPTIMIZERS[name]
            return hasattr(importlib.import_module(module_name), class_name)
        return name in NUMPY_OPTIMIZERS and hasattr(importlib.import_module("backends.numpy"), NUMPY_OPTIMIZERS[name])
    except (ImportError, KeyError):
        return False


def linear_decay_factor(k: Any, steps: int) -> Any:
    """``1 - (k - 1) / steps``: the learning-rate factor of step ``k`` (1-based) of a run of ``steps`` steps.

    Linear decay to zero, the schedule of the Lamb paper without its warm-up, is applied to every optimizer
    alike (plain arithmetic, so it is also a valid ``valley_core`` schedule).
    """
    return 1 - (k - 1) / steps


def linear_decay(value: float, steps: int) -> Callable[[Any], Any]:
    """``k -> value * linear_decay_factor(k, steps)``, a ``valley_core`` learning-rate schedule."""

    def schedule(k: Any) -> Any:
        return value * linear_decay_factor(k, steps)

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
    import torch

    layers: List[Any] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


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


class LoopOutcome(NamedTuple):
    """What a training loop records: per-step losses, ``(step, seconds, metric)`` points, time, divergence."""

    losses: List[float]
    curve: List[Tuple[int, float, float]]
    elapsed: float
    diverged: bool


def training_loop(
    batches: Iterable[Any],
    step: Callable[[Any], float],
    checkpoint: Optional[Callable[[int], Optional[float]]] = None,
    on_step: Optional[Callable[[], None]] = None,
) -> LoopOutcome:
    """Runs ``step(batch)`` (one optimizer step, returning the loss) over ``batches``, timing only the steps.

    Stops at the first non-finite loss (``diverged``). After step ``k`` (1-based) ``checkpoint(k)`` may return a
    metric, recorded with the training time so far; evaluations are not timed.
    """
    losses: List[float] = []
    curve: List[Tuple[int, float, float]] = []
    elapsed = 0.0
    for number, batch in enumerate(batches, start=1):
        start = time.perf_counter()
        value = float(step(batch))
        elapsed += time.perf_counter() - start
        losses.append(value)
        if on_step:
            on_step()
        if not math.isfinite(value):
            return LoopOutcome(losses, curve, elapsed, True)
        metric = checkpoint(number) if checkpoint else None
        if metric is not None:
            curve.append((number, elapsed, metric))
    return LoopOutcome(losses, curve, elapsed, False)


def train_torch_classifier(
    model_fn: Callable[[], Any],
    optimizer: str,
    hp: Dict[str, Any],
    data: DigitsSplit,
    batch_size: int,
    steps: int,
    seed: int,
    eval_every: int = 0,
    reshape: Optional[Tuple[int, ...]] = None,
    lr_decay: bool = True,
    on_step: Optional[Callable[[], None]] = None,
) -> RunResult:
    """Trains a torch classifier on ``data`` and evaluates it.

    Args:
        model_fn: builds the model; called after ``torch.manual_seed(seed)``.
        optimizer: a key of ``TORCH_OPTIMIZERS``.
        hp: the optimizer's hyperparameters (``valley_core`` names).
        data: the split.
        batch_size: examples per step.
        steps: optimizer steps.
        seed: seeds initialisation and batch order.
        eval_every: record test accuracy every this many steps (0: never during training).
        reshape: input shape per example (e.g. ``(1, 8, 8)`` for a CNN), ``None`` to keep vectors.
        lr_decay: decay the learning rate linearly to zero over the run (``linear_decay_factor``).
        on_step: called after every step (progress bars).

    Returns:
        A ``RunResult``.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = model_fn()
    shape = (-1, *reshape) if reshape else None

    def tensor(x: np.ndarray):
        t = torch.from_numpy(x)
        return t.reshape(shape) if shape else t

    x_train, y_train = tensor(data.x_train), torch.from_numpy(data.y_train)
    x_val, y_val = tensor(data.x_val), torch.from_numpy(data.y_val)
    x_test, y_test = tensor(data.x_test), torch.from_numpy(data.y_test)

    def evaluate(x, y) -> Tuple[float, float]:
        with torch.no_grad():
            logits = model(x)
            return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())

    initial_loss, _ = evaluate(x_train, y_train)
    opt = make_torch_optimizer(optimizer, model.parameters(), hp)
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_decay_factor(s + 1, steps)) if lr_decay else None
    )

    def step(idx: np.ndarray) -> float:
        index = torch.from_numpy(idx)
        xb, yb = (x_train, y_train) if len(idx) == len(y_train) else (x_train[index], y_train[index])
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        return loss.detach().item()

    def checkpoint(number: int) -> Optional[float]:
        return evaluate(x_test, y_test)[1] if eval_every and number % eval_every == 0 else None

    loop = training_loop(batch_indices(len(y_train), batch_size, steps, seed), step, checkpoint, on_step)
    final_loss, _ = evaluate(x_train, y_train)
    val_loss, val_acc = evaluate(x_val, y_val)
    _, test_acc = evaluate(x_test, y_test)
    return RunResult(
        optimizer,
        batch_size,
        seed,
        dict(hp),
        len(loop.losses),
        initial_loss,
        final_loss,
        val_acc,
        test_acc,
        val_loss,
        loop.elapsed,
        loop.losses,
        loop.curve,
        loop.diverged or not math.isfinite(final_loss),
    )


def train_numpy_mlp(
    optimizer: str,
    hp: Dict[str, Any],
    data: DigitsSplit,
    batch_size: int,
    steps: int,
    seed: int,
    eval_every: int = 0,
    hidden: Sequence[int] = MLP_HIDDEN,
    lr_decay: bool = True,
    on_step: Optional[Callable[[], None]] = None,
) -> RunResult:
    """The NumPy twin of ``train_torch_classifier`` for the MLP (``backends.numpy`` optimizers)."""
    n_features, n_classes = data.x_train.shape[1], int(data.y_train.max()) + 1
    model = NumpyMLP((n_features, *hidden, n_classes), seed)
    initial_loss = model.loss(data.x_train, data.y_train)
    built = dict(hp)
    if lr_decay:
        built["lr"] = linear_decay(hp["lr"], steps)
    opt = make_numpy_optimizer(optimizer, model.params, built)

    def step(idx: np.ndarray) -> float:
        loss, grads = model.loss_and_grads(data.x_train[idx], data.y_train[idx])
        opt.step(grads)
        return loss

    def checkpoint(number: int) -> Optional[float]:
        return model.accuracy(data.x_test, data.y_test) if eval_every and number % eval_every == 0 else None

    with np.errstate(over="ignore", invalid="ignore"):
        loop = training_loop(batch_indices(len(data.y_train), batch_size, steps, seed), step, checkpoint, on_step)
        final_loss = model.loss(data.x_train, data.y_train)
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


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


# ------------------------------------------------------------------------------------------------- demo


@dataclasses.dataclass
class DemoConfig:
    """What ``valley demo`` runs.

    Attributes:
        backend: ``torch`` or ``numpy``.
        batch_sizes: batch sizes; ``0`` stands for the whole training split.
        seeds: the seeds.
        steps: optimizer steps per run.
        optimizers: optimizer names.
        out: output directory (plot and table).
        threads: torch threads (``None``: 1).
        progress: show a tqdm progress bar.
    """

    backend: str = "torch"
    batch_sizes: Tuple[int, ...] = (0, 1024)
    seeds: Tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    optimizers: Tuple[str, ...] = DEMO_OPTIMIZERS
    out: str = DEFAULT_OUT
    threads: Optional[int] = None
    progress: bool = True


#: Columns of the demo's table, in order.
DEMO_COLUMNS = ("batch", "optimizer", "test accuracy", "final train loss", "wall time / run (s)")


def run_demo(config: DemoConfig) -> Tuple[List[Dict[str, Any]], List[RunResult]]:
    """Runs the demo: every optimizer, batch size and seed.

    Args:
        config: what to run.

    Returns:
        ``(rows, runs)``: one table row per (batch size, optimizer) with the keys of ``DEMO_COLUMNS`` plus
        numeric fields (``test_accuracy_mean``, ``test_accuracy_std``, ``final_train_loss_mean``,
        ``initial_train_loss_mean``, ``wall_time_mean``, ``diverged``), and every ``RunResult``.
    """
    data = load_digits_split()
    n_train = len(data.y_train)
    sizes = (data.x_train.shape[1], *MLP_HIDDEN, 10)
    if config.backend == "torch":
        set_threads(config.threads)
    with _blas_threads(config.threads or 1):
        return _run_demo(config, data, n_train, sizes)


def _blas_threads(threads: int):
    """Limits NumPy's BLAS threads (small matrices: extra threads only contend) if threadpoolctl is there."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def _run_demo(
    config: DemoConfig, data: DigitsSplit, n_train: int, sizes: Tuple[int, ...]
) -> Tuple[List[Dict[str, Any]], List[RunResult]]:
    from tqdm import tqdm

    runs: List[RunResult] = []
    rows: List[Dict[str, Any]] = []
    total = len(config.batch_sizes) * len(config.optimizers) * len(config.seeds) * config.steps
    with tqdm(
        total=total, desc="valley demo", unit="step", disable=not config.progress, file=sys.stderr, mininterval=0.5
    ) as bar:
        for requested in config.batch_sizes:
            batch_size = n_train if requested == 0 or requested >= n_train else requested
            for name in config.optimizers:
                hp = optimizer_hyperparameters(name, batch_size)
                group: List[RunResult] = []
                for seed in config.seeds:
                    bar.set_postfix_str(f"batch {batch_size} {name} seed {seed}")
                    if config.backend == "torch":
                        result = train_torch_classifier(
                            lambda: torch_mlp(sizes),
                            name,
                            hp,
                            data,
                            batch_size,
                            config.steps,
                            seed,
                            eval_every=1,
                            on_step=lambda: bar.update(1),
                        )
                    else:
                        result = train_numpy_mlp(
                            name, hp, data, batch_size, config.steps, seed, eval_every=1, on_step=lambda: bar.update(1)
                        )
                    bar.update(config.steps - result.steps)
                    group.append(result)
                runs.extend(group)
                acc_mean, acc_std = mean_std([r.test_accuracy for r in group])
                loss_mean, loss_std = mean_std([r.final_train_loss for r in group])
                time_mean, _ = mean_std([r.wall_time for r in group])
                label = f"{batch_size} (full)" if batch_size == n_train else str(batch_size)
                rows.append(
                    {
                        "batch": label,
                        "optimizer": name,
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
                )
    return rows, runs


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


def plot_demo(runs: Sequence[RunResult], path: str) -> str:
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
        axes[0, column].set_title(f"digits MLP, batch {batch_size}")
        axes[0, column].set_xlabel("step")
        axes[0, column].set_ylabel("training loss (minibatch)")
        axes[1, column].set_xlabel("step")
        axes[1, column].set_ylabel("test accuracy (%)")
        axes[1, column].set_ylim(50, 100)
        for ax in axes[:, column]:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``valley demo``."""
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "numpy"),
        default="auto",
        help="torch (backends.torch + torch.optim) or numpy (backends.numpy); auto: torch if it imports, else numpy",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 300)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT}/)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """Turns parsed options into a ``DemoConfig``."""
    steps = args.steps if args.steps is not None else (15 if args.quick else 300)
    seeds = args.seeds if not args.quick or args.seeds != 3 else 2
    if seeds < 1 or steps < 1:
        raise ValueError(f"--seeds={seeds} and --steps={steps} must be positive")
    return DemoConfig(
        backend=resolve_backend(args.backend),
        seeds=tuple(range(seeds)),
        steps=steps,
        out=args.out,
        threads=args.threads,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    """``valley demo``: trains, prints the table, saves the plot; returns 0 (1 if a run diverged)."""
    config = config_from_args(args)
    if args.backend == "auto" and config.backend == "numpy":
        print("torch or backends.torch is not available: running on the NumPy backend (backends.numpy)")
    if config.backend == "torch" and not torch_available():
        print("valley demo: --backend torch needs torch and backends.torch; try --backend numpy", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rows, runs = run_demo(config)
    total = time.perf_counter() - started
    table = format_table(rows, DEMO_COLUMNS)
    threads = f", torch threads: {set_threads(config.threads)}" if config.backend == "torch" else ""
    header = (
        f"digits ({len(load_digits_split().y_train)} training images), MLP 64-"
        f"{'-'.join(map(str, MLP_HIDDEN))}-10, {config.steps} steps per run, seeds "
        f"{list(config.seeds)}, backend {config.backend}{threads}"
    )
    settings = "\n".join(
        f"  {row['optimizer']:6s} batch {row['batch_size']}: "
        f"{_format_hp(optimizer_hyperparameters(row['optimizer'], row['batch_size']))}"
        for row in rows
    )
    print(header)
    print(table)
    print("hyperparameters:\n" + settings)
    os.makedirs(config.out, exist_ok=True)
    plot_path = plot_demo(runs, os.path.join(config.out, "demo.png"))
    with open(os.path.join(config.out, "demo.md"), "w", encoding="utf-8") as handle:
        handle.write(f"# valley demo\n\n{header}\n\n{table}\n\nhyperparameters:\n\n```\n{settings}\n```\n")
    print(f"plot: {plot_path}\ntable: {os.path.join(config.out, 'demo.md')}\ntotal time {total:.1f} s")
    diverged = sum(row["diverged"] for row in rows)
    if diverged:
        print(f"warning: {diverged} run(s) diverged (NaN/Inf loss)")
    return 0


def _format_hp(hp: Dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in hp.items())
