"""``valley bench generalization``: the large-batch generalization study, written to ``docs/results.md``.

The paper's headline claim is that ALTO beats Lamb (and SGD, Adam, AdamW) in large-batch training. This
study asks that question at a scale a CPU can run, on real data, and reports whatever it finds:

* digits (scikit-learn's bundled 8x8 images; the fixed split of ``valley demo``) with an MLP and a small CNN,
  batch sizes from 32 to the whole training split, a fixed budget of epochs;
* a character-level transformer language model on a fixed list of Python standard-library source files
  (present on every machine), at a large batch: ALTO vs Lamb vs AdamW perplexity;
* optimizers SGD (momentum 0.9), Adam, AdamW, Lamb, ALTO, EAdam (``alpha > 0``, small batches only) and
  Adam+CM when ``backends.torch.AdamCM`` exists;
* an equal tuning budget: every optimizer gets the same number of trials (a learning-rate grid; for ALTO
  a smaller learning-rate grid times two values of beta1, as the paper tunes only those), selected on
  validation accuracy (perplexity for the language model) with seed 0, then final numbers on test over
  all seeds (mean ± sample standard deviation);
* time-to-accuracy: optimizer steps and training seconds until the test accuracy first reaches a target,
  ALTO vs Lamb (the paper's "computation time saved" claim).

Every optimizer uses the same linear learning-rate decay to zero over its run. ALTO, Lamb, EAdam and Adam+CM
come from ``backends.torch`` (``backends.keras`` with ``--backend keras``); Adam, AdamW and SGD are the
frameworks' own builtins. No update maths is written here.

Example:
    $ valley bench generalization                      # the full study, writes docs/results.md
    $ valley bench generalization --quick --out /tmp/g # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from valley_cli import demo
from valley_cli.demo import DigitsSplit, RunResult, mean_std

#: The learning-rate ladder every grid is cut from (half-decade steps).
LR_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
#: The lowest learning rate of each optimizer's grid (an index into ``LR_LADDER``); a grid of ``n`` trials
#: takes ``n`` consecutive ladder entries from there. ALTO takes every other entry of Lamb's grid (the
#: same range, coarser), times two values of beta1. From batch size ``LARGE_GRID_FROM`` on, every grid
#: starts one ladder entry higher (larger batches take fewer, larger steps).
GRID_START = {"SGD": 4, "Adam": 1, "AdamW": 1, "EAdam": 1, "AdamCM": 1, "Lamb": 3, "ALTO": 3}
LARGE_GRID_FROM = 512
#: Study optimizers, in table order.
STUDY_OPTIMIZERS = ("SGD", "Adam", "AdamW", "Lamb", "ALTO", "EAdam", "AdamCM")
#: The language model's optimizers.
LM_OPTIMIZERS = ("ALTO", "Lamb", "AdamW")
#: Python standard-library files the language model reads, in this order (missing ones are skipped and
#: listed in the results).
LM_FILES = (
    "argparse.py",
    "ast.py",
    "calendar.py",
    "collections/__init__.py",
    "configparser.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "os.py",
    "pprint.py",
    "random.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "threading.py",
    "tokenize.py",
    "traceback.py",
)
#: Characters outside ASCII are mapped to this code point; the vocabulary is the 128 ASCII codes.
LM_VOCAB = 128
LM_UNKNOWN = ord("?")


# ------------------------------------------------------------------------------------------ configuration


@dataclasses.dataclass
class StudyConfig:
    """What the study runs. The defaults are the full study (about 30-45 minutes on two shared cores).

    Attributes:
        digits_models: ``mlp`` and/or ``cnn``.
        batch_sizes: digits batch sizes; 0 stands for the whole training split.
        epochs: epochs per digits run (the same for every batch size: large batches take fewer steps).
        optimizers: digits optimizers (EAdam runs only at batch sizes below 1024; AdamCM only if available).
        grid: trials per optimizer (even, >= 2): the equal tuning budget.
        seeds: number of seeds of the final runs (seed 0 is also the tuning seed).
        lm: run the language-model part.
        lm_steps: optimizer steps per language-model run.
        lm_batch: sequences per language-model step.
        lm_context: characters per sequence.
        lm_grid: trials per optimizer for the language model (even, >= 2).
        lm_seeds: seeds of the language model's final runs.
        lm_eval_windows: number of fixed windows evaluated in the validation and test texts.
        lm_size: ``(d_model, heads, layers, feed-forward width)``.
        backend: ``torch`` or ``keras`` for the digits part (the language model always uses torch).
        jobs: worker processes (default ``min(2, cpu_count)``), each with ``threads`` torch threads.
        threads: torch threads per process (``None``: 1).
        progress: show a tqdm progress bar.
    """

    digits_models: Tuple[str, ...] = ("mlp", "cnn")
    batch_sizes: Tuple[int, ...] = (32, 128, 512, 0)
    epochs: int = 30
    optimizers: Tuple[str, ...] = STUDY_OPTIMIZERS
    grid: int = 4
    seeds: int = 5
    lm: bool = True
    lm_steps: int = 150
    lm_batch: int = 128
    lm_context: int = 32
    lm_grid: int = 4
    lm_seeds: int = 5
    lm_eval_windows: int = 256
    lm_size: Tuple[int, int, int, int] = (64, 4, 2, 256)
    backend: str = "torch"
    jobs: int = dataclasses.field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))
    threads: Optional[int] = None
    progress: bool = True


def quick_config() -> StudyConfig:
    """A tiny configuration for smoke tests (seconds)."""
    return StudyConfig(
        digits_models=("mlp", "cnn"),
        batch_sizes=(128, 0),
        epochs=3,
        grid=2,
        seeds=2,
        lm_steps=6,
        lm_batch=8,
        lm_context=16,
        lm_grid=2,
        lm_seeds=2,
        lm_eval_windows=8,
        lm_size=(16, 2, 1, 32),
    )


# --------------------------------------------------------------------------------------------- the grids


def tuning_grid(name: str, batch_size: int, trials: int, shift: Optional[int] = None) -> List[Dict[str, Any]]:
    """The hyperparameter trials of one optimizer at one batch size (all get the same number).

    Args:
        name: optimizer name (a key of ``GRID_START``).
        batch_size: the batch size (ALTO and EAdam use the paper's defaults for it).
        trials: the budget: number of trials (even, >= 2).
        shift: ladder entries to move the grid up (``None``: 1 from batch ``LARGE_GRID_FROM`` on, else 0).

    Returns:
        ``trials`` keyword-argument dicts in ``valley_core``'s names.
    """
    from valley_core import defaults_for_batch_size

    if trials < 2 or trials % 2:
        raise ValueError(f"grid={trials} violates grid is an even number >= 2")
    if shift is None:
        shift = 1 if batch_size >= LARGE_GRID_FROM else 0
    start = GRID_START[name] + shift
    lrs = list(LR_LADDER[start : start + trials])
    paper = defaults_for_batch_size(batch_size)
    if name == "ALTO":
        beta1_values = (0.99, 0.9) if batch_size >= 1024 else (0.01, 0.5)
        grid = []
        for lr in lrs[1::2]:
            for beta1 in beta1_values:
                grid.append({**paper, "lr": lr, "betas": (beta1, *paper["betas"][1:])})
        return grid
    if name == "Lamb":
        return [
            {
                "lr": lr,
                "betas": paper["betas"][1:],
                "eps": paper["eps"],
                "weight_decay": paper["weight_decay"],
                "trust_eps": paper["trust_eps"],
                "norm_eps": paper["norm_eps"],
            }
            for lr in lrs
        ]
    if name == "SGD":
        return [{"lr": lr, "momentum": 0.9, "weight_decay": 1e-4} for lr in lrs]
    if name == "Adam":
        return [{"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0} for lr in lrs]
    if name == "AdamW":
        return [{"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4} for lr in lrs]
    if name == "EAdam":
        small = defaults_for_batch_size(min(batch_size, 256))  # EAdam: the paper's exploiting (small batch) E
        return [
            {
                "lr": lr,
                "alpha": small["alpha"],
                "betas": (small["betas"][0], 0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0.0,
            }
            for lr in lrs
        ]
    if name == "AdamCM":
        return [{"lr": lr} for lr in lrs]
    raise ValueError(f"optimizer={name!r} is not one of {STUDY_OPTIMIZERS}")


def lm_tuning_grid(name: str, trials: int) -> List[Dict[str, Any]]:
    """Language-model trials: the small-batch digits grids (which hold the paper's 1e-2 for ALTO) with ALTO's
    large-batch (exploring) defaults."""
    return tuning_grid(name, 4096, trials, shift=0)


# ------------------------------------------------------------------------------------------------ models


def torch_cnn():
    """A small CNN for 8x8 digits: two 3x3 convolutions (16, 32 channels), max-pool, a 64-unit layer."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def digits_model(kind: str) -> Tuple[Callable[[], Any], Optional[Tuple[int, ...]]]:
    """``(model factory, per-example input shape)`` for ``mlp`` or ``cnn``."""
    if kind == "mlp":
        return (lambda: demo.torch_mlp((64, *demo.MLP_HIDDEN, 10))), None
    if kind == "cnn":
        return torch_cnn, (1, 8, 8)
    raise ValueError(f"model={kind!r} is not 'mlp' or 'cnn'")


class CharTransformer:
    """Factory of a small causal transformer over ASCII characters (pre-norm, learned positions)."""

    @staticmethod
    def build(context: int, d_model: int, heads: int, layers: int, feed_forward: int):
        """Returns the ``torch.nn.Module``; call under ``torch.manual_seed`` for determinism."""
        import torch
        import torch.nn as nn

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Embedding(LM_VOCAB, d_model)
                self.position = nn.Parameter(torch.randn(context, d_model) * 0.02)
                layer = nn.TransformerEncoderLayer(
                    d_model, heads, feed_forward, dropout=0.0, batch_first=True, norm_first=True
                )
                self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(d_model)
                self.head = nn.Linear(d_model, LM_VOCAB)
                self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

            def forward(self, tokens):
                length = tokens.shape[1]
                h = self.embed(tokens) + self.position[:length]
                h = self.blocks(h, mask=self.mask[:length, :length], is_causal=True)
                return self.head(self.norm(h))

        return Model()


def load_stdlib_text(files: Sequence[str] = LM_FILES) -> Tuple[Dict[str, np.ndarray], List[Tuple[str, int]]]:
    """Reads the standard-library files and splits each one 90/5/5 (train/validation/test) by position.

    Every file is cut at 90% and 95% of its length; the pieces are concatenated in file order. The split is
    therefore fixed by the file list and the Python version (recorded in the results).

    Returns:
        ``({"train": codes, "val": codes, "test": codes}, [(file, characters), ...])`` with ``uint8``
        ASCII codes (other characters become ``?``).
    """
    import sysconfig

    root = sysconfig.get_paths()["stdlib"]
    pieces: Dict[str, List[np.ndarray]] = {"train": [], "val": [], "test": []}
    used: List[Tuple[str, int]] = []
    for name in files:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8).copy()
        codes[codes >= LM_VOCAB] = LM_UNKNOWN
        a, b = int(len(codes) * 0.90), int(len(codes) * 0.95)
        pieces["train"].append(codes[:a])
        pieces["val"].append(codes[a:b])
        pieces["test"].append(codes[b:])
        used.append((name, len(codes)))
    if not used:
        raise FileNotFoundError(f"none of the language-model files exist under {root}")
    return {key: np.concatenate(value) for key, value in pieces.items()}, used


def train_lm(
    optimizer: str,
    hp: Dict[str, Any],
    text: Dict[str, np.ndarray],
    config: StudyConfig,
    seed: int,
    on_step: Optional[Callable[[], None]] = None,
) -> RunResult:
    """Trains the character transformer; ``val_loss`` and ``test_accuracy`` hold the perplexities.

    ``RunResult`` fields: ``val_accuracy`` = validation perplexity, ``test_accuracy`` = test perplexity,
    ``val_loss`` = validation cross-entropy (nats/char), ``initial_train_loss`` / ``final_train_loss`` =
    cross-entropy on fixed windows of the training text before / after training, ``curve`` =
    ``(step, seconds, validation perplexity)`` at 10 points.
    """
    import torch
    import torch.nn.functional as F

    context = config.lm_context
    d_model, heads, layers, feed_forward = config.lm_size
    torch.manual_seed(seed)
    model = CharTransformer.build(context, d_model, heads, layers, feed_forward)
    train = torch.from_numpy(text["train"].astype(np.int64))

    def windows(codes: np.ndarray) -> "torch.Tensor":
        count = min(config.lm_eval_windows, (len(codes) - 1) // (context + 1))
        stride = (len(codes) - 1) // count
        starts = np.arange(count) * stride
        return torch.from_numpy(np.stack([codes[s : s + context + 1] for s in starts]).astype(np.int64))

    val_windows, test_windows = windows(text["val"]), windows(text["test"])
    train_windows = windows(text["train"])

    def loss_of(batch) -> "torch.Tensor":
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, LM_VOCAB), batch[:, 1:].reshape(-1))

    def evaluate(batch) -> float:
        with torch.no_grad():
            return float(loss_of(batch))

    initial = evaluate(train_windows)
    opt = demo.make_torch_optimizer(optimizer, model.parameters(), hp)
    steps = config.lm_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: demo.linear_decay_factor(s + 1, steps))
    rng = np.random.default_rng(seed + 104729)
    offsets = torch.arange(context + 1)
    checkpoints = set(np.linspace(1, steps, num=min(10, steps), dtype=int).tolist())
    batch_starts = (
        torch.from_numpy(rng.integers(0, len(train) - context - 1, size=config.lm_batch)) for _ in range(steps)
    )

    def step(starts) -> float:
        batch = train[starts[:, None] + offsets]
        opt.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        opt.step()
        scheduler.step()
        return loss.detach().item()

    def checkpoint(number: int) -> Optional[float]:
        return math.exp(min(evaluate(val_windows), 50.0)) if number in checkpoints else None

    loop = demo.training_loop(batch_starts, step, checkpoint, on_step)
    val_loss, test_loss, final_loss = evaluate(val_windows), evaluate(test_windows), evaluate(train_windows)

    def perplexity(x):
        return math.exp(min(x, 50.0)) if math.isfinite(x) else float("inf")

    return RunResult(
        optimizer,
        config.lm_batch,
        seed,
        dict(hp),
        len(loop.losses),
        initial,
        final_loss,
        perplexity(val_loss),
        perplexity(test_loss),
        val_loss,
        loop.elapsed,
        loop.losses,
        loop.curve,
        loop.diverged or not math.isfinite(val_loss),
    )


# ---------------------------------------------------------------------------------------- keras (digits)


def keras_available() -> Tuple[bool, str]:
    """``(True, "")`` if keras and ``backends.keras`` import, else ``(False, reason)``."""
    try:
        importlib.import_module("keras")
        importlib.import_module("backends.keras")
    except Exception as error:  # noqa: BLE001 - any import failure means: skip with a message
        return False, f"{type(error).__name__}: {error}"
    return True, ""


def _keras_optimizer(name: str, hp: Dict[str, Any], steps: int):
    import inspect

    import keras

    schedule = keras.optimizers.schedules.PolynomialDecay(hp["lr"], decay_steps=steps, end_learning_rate=0.0, power=1.0)
    if name in ("Adam", "AdamW"):
        kwargs = {"learning_rate": schedule, "beta_1": hp["betas"][0], "beta_2": hp["betas"][1], "epsilon": hp["eps"]}
        if name == "AdamW":
            kwargs["weight_decay"] = hp["weight_decay"]
        return getattr(keras.optimizers, name)(**kwargs)
    if name == "SGD":
        return keras.optimizers.SGD(
            learning_rate=schedule, momentum=hp["momentum"], weight_decay=hp["weight_decay"] or None
        )
    cls = getattr(importlib.import_module("backends.keras"), name)
    kwargs = {key: value for key, value in hp.items() if key != "lr"}
    parameters = inspect.signature(cls).parameters
    kwargs["learning_rate" if "learning_rate" in parameters else "lr"] = schedule
    return cls(**kwargs)


def train_keras_classifier(
    kind: str,
    optimizer: str,
    hp: Dict[str, Any],
    data: DigitsSplit,
    batch_size: int,
    steps: int,
    seed: int,
    eval_every: int = 0,
    on_step: Optional[Callable[[], None]] = None,
) -> RunResult:
    """The Keras twin of ``demo.train_torch_classifier`` (``backends.keras`` optimizers, Keras builtins)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    if kind == "mlp":
        model = keras.Sequential(
            [keras.Input((64,))] + [layers.Dense(w, activation="relu") for w in demo.MLP_HIDDEN] + [layers.Dense(10)]
        )
        shape: Tuple[int, ...] = (-1, 64)
    else:
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                layers.Conv2D(16, 3, padding="same", activation="relu"),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(64, activation="relu"),
                layers.Dense(10),
            ]
        )
        shape = (-1, 8, 8, 1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=_keras_optimizer(optimizer, hp, steps), loss=loss_fn)

    def x(array: np.ndarray) -> np.ndarray:
        return array.reshape(shape)

    def evaluate(features: np.ndarray, labels: np.ndarray) -> Tuple[float, float]:
        logits = np.asarray(model(x(features), training=False))
        return float(loss_fn(labels, logits)), float((logits.argmax(1) == labels).mean())

    initial, _ = evaluate(data.x_train, data.y_train)
    losses: List[float] = []
    curve: List[Tuple[int, float, float]] = []
    elapsed, diverged = 0.0, False
    for step, idx in enumerate(demo.batch_indices(len(data.y_train), batch_size, steps, seed), start=1):
        start = time.perf_counter()
        value = float(model.train_on_batch(x(data.x_train[idx]), data.y_train[idx]))
        elapsed += time.perf_counter() - start
        losses.append(value)
        if on_step:
            on_step()
        if not math.isfinite(value):
            diverged = True
            break
        if eval_every and step % eval_every == 0:
            curve.append((step, elapsed, evaluate(data.x_test, data.y_test)[1]))
    final, _ = evaluate(data.x_train, data.y_train)
    val_loss, val_acc = evaluate(data.x_val, data.y_val)
    _, test_acc = evaluate(data.x_test, data.y_test)
    return RunResult(
        optimizer,
        batch_size,
        seed,
        dict(hp),
        len(losses),
        initial,
        final,
        val_acc,
        test_acc,
        val_loss,
        elapsed,
        losses,
        curve,
        diverged or not math.isfinite(final),
    )


# ------------------------------------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class Task:
    """One training run of the study.

    Attributes:
        part: ``digits`` or ``lm``.
        model: ``mlp``, ``cnn`` or ``transformer``.
        batch_size: the batch size (sequences for the language model).
        optimizer: optimizer name.
        trial: index into the optimizer's tuning grid.
        seed: the run's seed.
    """

    part: str
    model: str
    batch_size: int
    optimizer: str
    trial: int
    seed: int

    @property
    def key(self) -> str:
        """A stable string identifying the run (used to resume)."""
        return f"{self.part}/{self.model}/{self.batch_size}/{self.optimizer}/{self.trial}/{self.seed}"


_WORKER: Dict[str, Any] = {}


def _worker_init(config: StudyConfig, threads: Optional[int]) -> None:
    demo.set_threads(threads)
    _WORKER["config"] = config
    _WORKER["digits"] = demo.load_digits_split()
    _WORKER["text"] = load_stdlib_text()[0] if config.lm else None


def _steps_for(config: StudyConfig, batch_size: int, n_train: int) -> Tuple[int, int]:
    per_epoch = max(1, n_train // batch_size)
    return config.epochs * per_epoch, per_epoch


def _run_task(task: Task, hp: Dict[str, Any], on_step: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    config: StudyConfig = _WORKER["config"]
    if task.part == "lm":
        result = train_lm(task.optimizer, hp, _WORKER["text"], config, task.seed, on_step)
    else:
        data: DigitsSplit = _WORKER["digits"]
        steps, per_epoch = _steps_for(config, task.batch_size, len(data.y_train))
        if config.backend == "keras":
            result = train_keras_classifier(
                task.model,
                task.optimizer,
                hp,
                data,
                task.batch_size,
                steps,
                task.seed,
                eval_every=per_epoch,
                on_step=on_step,
            )
        else:
            factory, reshape = digits_model(task.model)
            result = demo.train_torch_classifier(
                factory,
                task.optimizer,
                hp,
                data,
                task.batch_size,
                steps,
                task.seed,
                eval_every=per_epoch,
                reshape=reshape,
                on_step=on_step,
            )
    record = dataclasses.asdict(result)
    record["task"] = dataclasses.asdict(task)
    record["batch_losses"] = [float(f"{v:.5g}") for v in _thin(record["batch_losses"], 200)]
    record["curve"] = [
        (step, float(f"{seconds:.4g}"), float(f"{metric:.5g}")) for step, seconds, metric in record["curve"]
    ]
    return json.loads(json.dumps(record))  # the same form as a record read back from the cache


def _thin(values: List[float], keep: int) -> List[float]:
    if len(values) <= keep:
        return values
    index = np.linspace(0, len(values) - 1, keep).round().astype(int)
    return [values[i] for i in index]


class Runner:
    """Runs tasks in this process or in a pool of workers, caching finished runs by key.

    Args:
        config: the study configuration.
        cache_path: JSON file of finished runs (written after every run; reused with ``resume``).
        resume: load ``cache_path`` first and skip the runs it holds.
    """

    def __init__(self, config: StudyConfig, cache_path: Optional[str], resume: bool) -> None:
        self.config = config
        self.cache_path = cache_path
        self.records: Dict[str, Dict[str, Any]] = {}
        self.reused = self.computed = 0
        if resume and cache_path and os.path.exists(cache_path):
            with open(cache_path, encoding="utf-8") as handle:
                self.records = json.load(handle)
        threads = config.threads or 1
        self.pool = None
        if config.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(
                config.jobs,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_init,
                initargs=(config, threads or 1),
            )
        else:
            _worker_init(config, threads)

    def run(self, jobs: Sequence[Tuple[Task, Dict[str, Any]]], bar: Any) -> List[Dict[str, Any]]:
        """Runs ``jobs`` (task, hyperparameters); returns their records in order."""
        todo = [(task, hp) for task, hp in jobs if task.key not in self.records]
        bar.update(len(jobs) - len(todo))
        self.reused += len(jobs) - len(todo)
        self.computed += len(todo)
        if self.pool is None:
            for task, hp in todo:
                bar.set_postfix_str(task.key)
                self._store(task, _run_task(task, hp))
                bar.update(1)
        else:
            futures = {self.pool.submit(_run_task, task, hp): task for task, hp in todo}
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                self._store(futures[future], future.result())
                bar.set_postfix_str(futures[future].key)
                bar.update(1)
        return [self.records[task.key] for task, _ in jobs]

    def _store(self, task: Task, record: Dict[str, Any]) -> None:
        self.records[task.key] = record
        if self.cache_path:
            temporary = self.cache_path + ".tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(self.records, handle)
            os.replace(temporary, self.cache_path)

    def close(self) -> None:
        """Shuts the worker pool down."""
        if self.pool is not None:
            self.pool.shutdown()


# ------------------------------------------------------------------------------------------------- study


def available_optimizers(config: StudyConfig) -> Tuple[List[str], Dict[str, str]]:
    """The study's optimizers that can be built, and why the others are left out."""
    missing: Dict[str, str] = {}
    names: List[str] = []
    for name in config.optimizers:
        if config.backend == "keras":
            ok = name in ("Adam", "AdamW", "SGD") or hasattr(importlib.import_module("backends.keras"), name)
            module = "backends.keras"
        else:
            ok = demo.optimizer_available(name, "torch")
            module = demo.TORCH_OPTIMIZERS[name][0]
        if ok:
            names.append(name)
        else:
            missing[name] = f"{module}.{demo.TORCH_OPTIMIZERS[name][1]} is not available"
    return names, missing


def _select(records: Sequence[Dict[str, Any]], higher_is_better: bool) -> int:
    """Index of the best trial: validation metric first, then validation loss; diverged runs lose."""

    def score(record: Dict[str, Any]) -> Tuple[float, float]:
        metric = record["val_accuracy"]
        if record["diverged"] or not math.isfinite(metric):
            return (math.inf, math.inf)
        return (-metric if higher_is_better else metric, record["val_loss"])

    return min(range(len(records)), key=lambda i: score(records[i]))


def study_settings(config: StudyConfig, n_train: int) -> List[Tuple[str, int]]:
    """``(model, batch size)`` pairs of the digits part (batch size 0 -> the whole training split)."""
    sizes = sorted({n_train if b == 0 or b >= n_train else b for b in config.batch_sizes})
    return [(model, b) for model in config.digits_models for b in sizes]


def run_study(
    config: StudyConfig, cache_path: Optional[str] = None, resume: bool = False, log: Callable[[str], None] = print
) -> Dict[str, Any]:
    """Runs the whole study.

    Args:
        config: what to run.
        cache_path: JSON file of finished runs, written as the study goes.
        resume: skip the runs already in ``cache_path``.
        log: where progress messages go.

    Returns:
        A dict with ``digits`` (one entry per model, batch size and optimizer: the selected trial, its
        hyperparameters, every trial's validation accuracy and the final runs), ``lm`` (the same for the
        language model), ``matched`` and ``lm_matched`` (ALTO at Lamb's selected learning rate, a
        diagnostic outside the equal budget), ``lm_files``, ``missing`` (optimizers left out and why),
        ``keras_skipped``.
    """
    from tqdm import tqdm

    data = demo.load_digits_split()
    n_train = len(data.y_train)
    results: Dict[str, Any] = {
        "digits": [],
        "lm": [],
        "matched": [],
        "lm_matched": [],
        "lm_files": [],
        "missing": {},
        "keras_skipped": "",
        "n_train": n_train,
    }
    digits = True
    if config.backend == "keras":
        ok, reason = keras_available()
        if not ok:
            results["keras_skipped"] = f"--backend keras: backends.keras is not available ({reason})"
            log(f"skipping the digits part: {results['keras_skipped']}")
            digits = False
    names, missing = available_optimizers(config) if digits else ([], {})
    results["missing"] = missing
    for name, reason in missing.items():
        log(f"leaving {name} out: {reason}")
    settings = study_settings(config, n_train) if digits else []
    lm_names = [name for name in LM_OPTIMIZERS if demo.optimizer_available(name, "torch")] if config.lm else []
    if config.lm:
        results["lm_files"] = load_stdlib_text()[1]
    seeds = list(range(config.seeds))

    def digits_optimizers(batch_size: int) -> List[str]:
        return [n for n in names if n != "EAdam" or batch_size < 1024]

    total = sum(len(digits_optimizers(b)) * (config.grid + len(seeds) - 1) for _, b in settings)
    total += len(lm_names) * (config.lm_grid + config.lm_seeds - 1)
    matched = {"ALTO", "Lamb"} <= set(names)
    total += len(settings) * len(seeds) * matched + config.lm_seeds * ({"ALTO", "Lamb"} <= set(lm_names))
    runner = Runner(config, cache_path, resume)
    try:
        with tqdm(
            total=total,
            desc="valley bench generalization",
            unit="run",
            disable=not config.progress,
            file=sys.stderr,
            mininterval=1.0,
        ) as bar:
            for model, batch_size in settings:
                for name in digits_optimizers(batch_size):
                    grid = tuning_grid(name, batch_size, config.grid)
                    results["digits"].append(
                        _tune_and_test(
                            runner, bar, "digits", model, batch_size, name, grid, seeds, higher_is_better=True
                        )
                    )
                if matched:
                    results["matched"].append(
                        _alto_at_lamb_lr(
                            runner,
                            bar,
                            results["digits"],
                            "digits",
                            model,
                            batch_size,
                            tuning_grid("ALTO", batch_size, 2)[0],
                            seeds,
                        )
                    )
            for name in lm_names:
                grid = lm_tuning_grid(name, config.lm_grid)
                results["lm"].append(
                    _tune_and_test(
                        runner,
                        bar,
                        "lm",
                        "transformer",
                        config.lm_batch,
                        name,
                        grid,
                        list(range(config.lm_seeds)),
                        higher_is_better=False,
                    )
                )
            if {"ALTO", "Lamb"} <= set(lm_names):
                results["lm_matched"].append(
                    _alto_at_lamb_lr(
                        runner,
                        bar,
                        results["lm"],
                        "lm",
                        "transformer",
                        config.lm_batch,
                        lm_tuning_grid("ALTO", 2)[0],
                        list(range(config.lm_seeds)),
                    )
                )
    finally:
        runner.close()
    results["runs_reused"], results["runs_computed"] = runner.reused, runner.computed
    results["train_seconds"] = sum(record["wall_time"] for record in runner.records.values())
    return results


def _tune_and_test(
    runner: Runner,
    bar: Any,
    part: str,
    model: str,
    batch_size: int,
    name: str,
    grid: List[Dict[str, Any]],
    seeds: List[int],
    higher_is_better: bool,
) -> Dict[str, Any]:
    tuning = runner.run([(Task(part, model, batch_size, name, i, seeds[0]), hp) for i, hp in enumerate(grid)], bar)
    best = _select(tuning, higher_is_better)
    finals = [tuning[best]] + runner.run(
        [(Task(part, model, batch_size, name, best, seed), grid[best]) for seed in seeds[1:]], bar
    )
    return {
        "model": model,
        "batch_size": batch_size,
        "optimizer": name,
        "selected": best,
        "hyperparameters": grid[best],
        "grid": grid,
        "trial_val": [record["val_accuracy"] for record in tuning],
        "trial_diverged": [record["diverged"] for record in tuning],
        "finals": finals,
    }


#: ``Task.trial`` offset of the diagnostic runs of ALTO at Lamb's selected learning rate.
MATCHED_TRIAL = 100


def _alto_at_lamb_lr(
    runner: Runner,
    bar: Any,
    entries: List[Dict[str, Any]],
    part: str,
    model: str,
    batch_size: int,
    alto_defaults: Dict[str, Any],
    seeds: List[int],
) -> Dict[str, Any]:
    """A diagnostic outside the equal budget: ALTO with the paper's defaults for the batch size (beta1
    included) at the learning rate selected for Lamb, over the same seeds. It separates the E adaptor's
    effect from the coarser learning-rate grid ALTO gets under the equal budget."""
    lamb = next(
        e for e in entries if e["model"] == model and e["batch_size"] == batch_size and e["optimizer"] == "Lamb"
    )
    hp = {**alto_defaults, "lr": lamb["hyperparameters"]["lr"]}
    finals = runner.run(
        [(Task(part, model, batch_size, "ALTO", MATCHED_TRIAL + lamb["selected"], seed), hp) for seed in seeds], bar
    )
    return {
        "model": model,
        "batch_size": batch_size,
        "optimizer": "ALTO at Lamb's lr",
        "selected": 0,
        "hyperparameters": hp,
        "grid": [hp],
        "trial_val": [finals[0]["val_accuracy"]],
        "trial_diverged": [finals[0]["diverged"]],
        "finals": finals,
    }


def matched_table(results: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Lamb (tuned) vs ALTO (equal budget) vs ALTO at Lamb's selected lr, per setting (digits and LM)."""
    columns = ["model", "batch", "lr", "Lamb", "ALTO (equal budget)", "ALTO at Lamb's lr", "ALTO at Lamb's lr - Lamb"]
    rows = []
    for key, matched_key, scale, unit in (("digits", "matched", 100.0, "%"), ("lm", "lm_matched", 1.0, "ppl")):
        for entry in results.get(matched_key, []):

            def find(name: str) -> Dict[str, Any]:
                return summarize(
                    next(
                        e
                        for e in results[key]
                        if e["model"] == entry["model"]
                        and e["batch_size"] == entry["batch_size"]
                        and e["optimizer"] == name
                    )
                )

            lamb, alto, at = find("Lamb"), find("ALTO"), summarize(entry)
            rows.append(
                {
                    "model": entry["model"].upper(),
                    "batch": str(entry["batch_size"]),
                    "lr": str(entry["hyperparameters"]["lr"]),
                    "Lamb": f"{scale * lamb['test'][0]:.2f} ± {scale * lamb['test'][1]:.2f} {unit}",
                    "ALTO (equal budget)": f"{scale * alto['test'][0]:.2f} ± {scale * alto['test'][1]:.2f} {unit}",
                    "ALTO at Lamb's lr": f"{scale * at['test'][0]:.2f} ± {scale * at['test'][1]:.2f} {unit}",
                    "ALTO at Lamb's lr - Lamb": f"{scale * (at['test'][0] - lamb['test'][0]):+.2f} {unit}",
                    "part": key,
                    "gap": at["test"][0] - lamb["test"][0],
                    "spread": math.hypot(at["test"][1], lamb["test"][1]),
                }
            )
    return rows, columns


# ------------------------------------------------------------------------------------------------ report


def summarize(entry: Dict[str, Any]) -> Dict[str, Any]:
    """Mean ± std of an entry's final runs (test metric, validation metric, final training loss, time)."""
    finals = entry["finals"]
    ok = [r for r in finals if not r["diverged"]]
    test = mean_std([r["test_accuracy"] for r in ok]) if ok else (math.nan, math.nan)
    val = mean_std([r["val_accuracy"] for r in ok]) if ok else (math.nan, math.nan)
    loss = mean_std([r["final_train_loss"] for r in ok]) if ok else (math.nan, math.nan)
    return {
        "test": test,
        "val": val,
        "train_loss": loss,
        "initial_loss": mean_std([r["initial_train_loss"] for r in finals])[0],
        "time": mean_std([r["wall_time"] for r in finals])[0],
        "diverged": len(finals) - len(ok),
        "n": len(finals),
        "steps": finals[0]["steps"],
    }


def _hp_text(hp: Dict[str, Any], name: str) -> str:
    keys = ("lr", "betas") if name == "ALTO" else ("lr",)
    return ", ".join(f"{k}={tuple(hp[k]) if isinstance(hp[k], list) else hp[k]}" for k in keys if k in hp)


def digits_table(results: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Rows of the digits table (one per model, batch size and optimizer) and its columns."""
    n_train = results["n_train"]
    columns = [
        "model",
        "batch",
        "optimizer",
        "test accuracy (%)",
        "val accuracy (%)",
        "final train loss",
        "selected",
        "steps",
        "train s/run",
    ]
    rows = []
    for entry in results["digits"]:
        s = summarize(entry)
        b = entry["batch_size"]
        rows.append(
            {
                "model": entry["model"].upper(),
                "batch": f"{b} (full)" if b == n_train else str(b),
                "optimizer": entry["optimizer"],
                "test accuracy (%)": f"{100 * s['test'][0]:.2f} ± {100 * s['test'][1]:.2f}",
                "val accuracy (%)": f"{100 * s['val'][0]:.2f} ± {100 * s['val'][1]:.2f}",
                "final train loss": f"{s['train_loss'][0]:.4f}",
                "selected": _hp_text(entry["hyperparameters"], entry["optimizer"]),
                "steps": str(s["steps"]),
                "train s/run": f"{s['time']:.2f}",
                "summary": s,
                "entry": entry,
            }
        )
        if s["diverged"]:
            rows[-1]["test accuracy (%)"] += f" ({s['diverged']} diverged)"
    return rows, columns


def lm_table(results: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Rows of the language-model table and its columns."""
    columns = [
        "optimizer",
        "test perplexity",
        "val perplexity",
        "final train loss (nats/char)",
        "selected",
        "train s/run",
    ]
    rows = []
    for entry in results["lm"]:
        s = summarize(entry)
        rows.append(
            {
                "optimizer": entry["optimizer"],
                "test perplexity": f"{s['test'][0]:.3f} ± {s['test'][1]:.3f}",
                "val perplexity": f"{s['val'][0]:.3f} ± {s['val'][1]:.3f}",
                "final train loss (nats/char)": f"{s['train_loss'][0]:.4f}",
                "selected": _hp_text(entry["hyperparameters"], entry["optimizer"]),
                "train s/run": f"{s['time']:.1f}",
                "summary": s,
                "entry": entry,
            }
        )
    return rows, columns


def time_to_accuracy(results: Dict[str, Any], margin: float = 0.01) -> Tuple[List[Dict[str, Any]], List[str]]:
    """ALTO vs Lamb: steps and training seconds until the test accuracy first reaches a target.

    The target of each (model, batch size) is ``margin`` below the lower of ALTO's and Lamb's mean final
    test accuracies, rounded down to 0.5 %, so that both can reach it. Means are over the seeds that reach it.
    The last column gives the steps of the diagnostic runs (ALTO at Lamb's selected learning rate) to the
    same target.
    """
    columns = [
        "model",
        "batch",
        "target (%)",
        "ALTO steps",
        "Lamb steps",
        "ALTO s",
        "Lamb s",
        "time saved by ALTO",
        "ALTO at Lamb's lr steps",
    ]
    rows = []
    by_key = {(e["model"], e["batch_size"], e["optimizer"]): e for e in results["digits"]}
    by_key.update({(e["model"], e["batch_size"], "matched"): e for e in results.get("matched", [])})
    for model, batch_size in dict.fromkeys((e["model"], e["batch_size"]) for e in results["digits"]):
        alto, lamb = by_key.get((model, batch_size, "ALTO")), by_key.get((model, batch_size, "Lamb"))
        if not alto or not lamb:
            continue
        target = math.floor(200 * (min(summarize(alto)["test"][0], summarize(lamb)["test"][0]) - margin)) / 200
        row: Dict[str, Any] = {"model": model.upper(), "batch": str(batch_size), "target (%)": f"{100 * target:.1f}"}
        reached = {}
        row["ALTO at Lamb's lr steps"] = "-"
        candidates = [("ALTO", alto), ("Lamb", lamb)]
        if (model, batch_size, "matched") in by_key:
            candidates.append(("ALTO at Lamb's lr", by_key[(model, batch_size, "matched")]))
        for label, entry in candidates:
            hits = []
            for record in entry["finals"]:
                for step, seconds, accuracy in record["curve"]:
                    if accuracy >= target - 1e-9:
                        hits.append((step, seconds))
                        break
            n = len(entry["finals"])
            if hits:
                steps = mean_std([h[0] for h in hits])
                seconds = mean_std([h[1] for h in hits])
                row[f"{label} steps"] = f"{steps[0]:.0f} ± {steps[1]:.0f} ({len(hits)}/{n})"
                row[f"{label} s"] = f"{seconds[0]:.2f}"
                reached[label] = (steps[0], seconds[0], len(hits), n)
            else:
                row[f"{label} steps"] = f"not reached (0/{n})"
                row[f"{label} s"] = "-"
        if "ALTO" in reached and "Lamb" in reached:
            saved_steps = 1 - reached["ALTO"][0] / reached["Lamb"][0]
            saved_time = 1 - reached["ALTO"][1] / reached["Lamb"][1]
            row["time saved by ALTO"] = f"{100 * saved_steps:+.1f} % steps, {100 * saved_time:+.1f} % time"
            row["saved_steps"] = saved_steps
        else:
            row["time saved by ALTO"] = "-"
        rows.append(row)
    return rows, columns


def verdict(results: Dict[str, Any]) -> List[str]:
    """Plain-language ALTO-vs-Lamb (and vs the best other optimizer) statements, computed from the results."""
    lines = []
    by_key = {(e["model"], e["batch_size"], e["optimizer"]): summarize(e) for e in results["digits"]}
    settings = list(dict.fromkeys((e["model"], e["batch_size"]) for e in results["digits"]))
    wins = clear_wins = clear_losses = compared = best_count = 0
    large_wins = large_compared = 0
    for model, b in settings:
        alto, lamb = by_key.get((model, b, "ALTO")), by_key.get((model, b, "Lamb"))
        if not alto or not lamb:
            continue
        compared += 1
        gap = alto["test"][0] - lamb["test"][0]
        spread = math.hypot(alto["test"][1], lamb["test"][1])
        wins += gap > 0
        clear_wins += gap > spread
        clear_losses += -gap > spread
        if b >= 1024 or b == results["n_train"]:
            large_compared += 1
            large_wins += gap > 0
        best = max((v["test"][0], k[2]) for k, v in by_key.items() if k[:2] == (model, b))
        best_count += best[1] == "ALTO"
    if compared:
        lines.append(
            f"Digits: ALTO's mean test accuracy is higher than Lamb's in {wins} of {compared} settings "
            f"(model x batch size); by more than one combined standard deviation in {clear_wins}, and "
            f"lower by more than one in {clear_losses}. At the largest batch (the whole training split) "
            f"ALTO is ahead of Lamb in {large_wins} of {large_compared}. ALTO has the best mean test "
            f"accuracy of all optimizers in {best_count} of {compared} settings."
        )
        beats = clear_wins > compared / 2 and clear_losses == 0
        lines.append(
            "**ALTO beats Lamb on digits here.**"
            if beats
            else "**ALTO does not clearly beat Lamb on digits here**: the differences are mostly within the "
            "seed-to-seed spread, or go the other way."
        )
    rows, _ = matched_table(results)
    digit_rows = [row for row in rows if row["part"] == "digits"]
    if digit_rows:
        ahead = sum(row["gap"] > 0 for row in digit_rows)
        clear = sum(abs(row["gap"]) > row["spread"] for row in digit_rows)
        lines.append(
            f"Same learning rate (a diagnostic outside the equal budget): ALTO with the paper's defaults "
            f"at the lr selected for Lamb is ahead of Lamb in {ahead} of {len(digit_rows)} digits "
            f"settings; the difference exceeds one combined standard deviation in {clear}."
        )
    lm = {e["optimizer"]: summarize(e) for e in results["lm"]}
    if "ALTO" in lm and "Lamb" in lm:
        a, b = lm["ALTO"]["test"], lm["Lamb"]["test"]
        better = a[0] < b[0]
        clear = abs(a[0] - b[0]) > math.hypot(a[1], b[1])
        best_name = min(lm, key=lambda k: lm[k]["test"][0])
        lines.append(
            f"Language model: ALTO's test perplexity {a[0]:.3f} ± {a[1]:.3f} vs Lamb's {b[0]:.3f} ± "
            f"{b[1]:.3f}: ALTO is {'better' if better else 'not better'}"
            f"{' (by more than one combined standard deviation)' if clear else ' (within the spread)'};"
            f" the best of {', '.join(lm)} is {best_name}."
        )
        for entry in results.get("lm_matched", []):
            m = summarize(entry)["test"]
            lines.append(
                f"Language model at Lamb's learning rate ({entry['hyperparameters']['lr']}): ALTO (paper's "
                f"large-batch defaults) {m[0]:.3f} ± {m[1]:.3f} vs Lamb {b[0]:.3f} ± {b[1]:.3f}."
            )
    return lines


def plot_digits(results: Dict[str, Any], path: str) -> None:
    """Test accuracy vs batch size, one panel per model, one line per optimizer (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(e["model"] for e in results["digits"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for name in dict.fromkeys(e["optimizer"] for e in results["digits"]):
            entries = sorted(
                (e for e in results["digits"] if e["model"] == model and e["optimizer"] == name),
                key=lambda e: e["batch_size"],
            )
            if not entries:
                continue
            stats = [summarize(e)["test"] for e in entries]
            ax.errorbar(
                [e["batch_size"] for e in entries],
                [100 * s[0] for s in stats],
                yerr=[100 * s[1] for s in stats],
                marker="o",
                capsize=3,
                label=name,
                linewidth=2.2 if name in ("ALTO", "Lamb") else 1.0,
            )
        matched = sorted((e for e in results.get("matched", []) if e["model"] == model), key=lambda e: e["batch_size"])
        if matched:
            stats = [summarize(e)["test"] for e in matched]
            ax.errorbar(
                [e["batch_size"] for e in matched],
                [100 * s[0] for s in stats],
                yerr=[100 * s[1] for s in stats],
                marker="x",
                capsize=3,
                linestyle="--",
                color="black",
                label="ALTO at Lamb's lr (diagnostic)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"digits {model.upper()}: tuned on validation, mean ± std over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time_to_accuracy(results: Dict[str, Any], path: str) -> None:
    """Test accuracy vs training step, ALTO vs Lamb (and AdamW, SGD), at each model's largest batch (seed means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(e["model"] for e in results["digits"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        largest = max(e["batch_size"] for e in results["digits"] if e["model"] == model)
        for e in results["digits"] + results.get("matched", []):
            if (
                e["model"] != model
                or e["batch_size"] != largest
                or e["optimizer"] not in ("ALTO", "Lamb", "AdamW", "SGD", "ALTO at Lamb's lr")
            ):
                continue
            length = min(len(r["curve"]) for r in e["finals"])
            if not length:
                continue
            steps = [p[0] for p in e["finals"][0]["curve"][:length]]
            acc = np.mean([[p[2] for p in r["curve"][:length]] for r in e["finals"]], axis=0)
            style = {"color": "black", "linestyle": "--"} if e["optimizer"] == "ALTO at Lamb's lr" else {}
            ax.plot(
                steps,
                100 * acc,
                label=e["optimizer"],
                linewidth=2.2 if e["optimizer"] in ("ALTO", "Lamb") else 1.0,
                **style,
            )
        ax.set_xlabel("step")
        ax.set_ylabel("test accuracy (%), mean over seeds")
        ax.set_title(f"digits {model.upper()}, batch {largest}")
        ax.set_ylim(50, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lm(results: Dict[str, Any], path: str) -> None:
    """Training loss of the language model (selected trials, mean over seeds) and validation perplexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for entry in results["lm"] + results.get("lm_matched", []):
        length = min(len(r["batch_losses"]) for r in entry["finals"])
        losses = np.mean([r["batch_losses"][:length] for r in entry["finals"]], axis=0)
        steps = np.linspace(1, entry["finals"][0]["steps"], length)
        style = {"color": "black", "linestyle": "--"} if entry in results.get("lm_matched", []) else {}
        (line,) = axes[0].plot(steps, losses, label=entry["optimizer"], **style)
        length = min(len(r["curve"]) for r in entry["finals"])
        perplexity = np.mean([[p[2] for p in r["curve"][:length]] for r in entry["finals"]], axis=0)
        axes[1].plot(
            [p[0] for p in entry["finals"][0]["curve"][:length]],
            perplexity,
            marker="o",
            color=line.get_color(),
            linestyle=line.get_linestyle(),
            label=entry["optimizer"],
        )
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (nats/char)")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation perplexity")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("character-level transformer on Python standard-library source")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _versions() -> str:
    from importlib import metadata

    import valley_core

    parts = [f"python {platform.python_version()}", f"valley_core {valley_core.__version__}"]
    for distribution in ("numpy", "torch", "scikit-learn", "keras", "tensorflow-cpu", "tensorflow"):
        try:
            parts.append(f"{distribution} {metadata.version(distribution)}")
        except metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
            timeout=10,
        ).stdout.strip()
        if commit:
            parts.append(f"git {commit}")
    except Exception:  # noqa: BLE001
        pass
    return ", ".join(parts)


def render_markdown(
    results: Dict[str, Any], config: StudyConfig, command: str, elapsed: float, plots: Dict[str, str]
) -> str:
    """The text of ``results.md``: protocol, tables, verdict, plots, command, versions, date."""
    n_train = results["n_train"]
    digit_rows, digit_columns = digits_table(results)
    tta_rows, tta_columns = time_to_accuracy(results)
    lm_rows, lm_columns = lm_table(results)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Results: large-batch generalization",
        "",
        "<!-- Generated by `valley bench generalization`; do not edit by hand: rerun the command. -->",
        "",
        f"Generated {now} by `{command}` in {elapsed / 60:.1f} minutes"
        + (
            f" ({results['runs_computed']} runs trained now, {results['runs_reused']} reused from "
            f"`{plots['json']}`, written by an earlier invocation of the same configuration)."
            if results.get("runs_reused")
            else "."
        )
        + f" The {results.get('runs_reused', 0) + results.get('runs_computed', 0)} training runs took "
        f"{results.get('train_seconds', 0.0) / 60:.1f} minutes of training steps in total (evaluation "
        "excluded).",
        "",
        f"Versions: {_versions()}. Machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other work while this ran: wall times are indicative only), {config.jobs} worker "
        f"process(es).",
        "",
        "The toy-landscape study (Goldstein-Price, Ackley, sharp/flat 1-D) is in "
        "[results/landscapes.md](results/landscapes.md).",
        "",
        "## Verdict",
        "",
    ]
    out += [f"- {line}" for line in verdict(results)]
    tta_saved = [r["saved_steps"] for r in tta_rows if "saved_steps" in r]
    if tta_saved:
        out.append(
            f"- Time-to-accuracy: ALTO needs fewer steps than Lamb to reach the target in "
            f"{sum(s > 0 for s in tta_saved)} of {len(tta_saved)} settings where both reach it "
            f"(median saving {100 * float(np.median(tta_saved)):+.1f} % of the steps; the paper reports "
            f"29.68 % of computation time saved on its own tasks). See the table for ALTO at Lamb's "
            "learning rate."
        )
    if results["missing"]:
        out.append(
            "- Left out: "
            + "; ".join(f"{k} ({v})" for k, v in results["missing"].items())
            + (". Adam+CM was not included." if "AdamCM" in results["missing"] else ".")
        )
    if results["keras_skipped"]:
        out.append(f"- {results['keras_skipped']}: the digits part was skipped.")
    out += [
        "",
        "## Protocol",
        "",
        f"- Digits: scikit-learn's bundled 8x8 digits, a fixed stratified split of {n_train} training, "
        f"{demo.VALIDATION_SIZE} validation and {demo.TEST_SIZE} test images (`valley_cli.demo."
        f"load_digits_split`). Models: MLP 64-{'-'.join(map(str, demo.MLP_HIDDEN))}-10 (ReLU) and a CNN "
        "(conv 3x3x16, conv 3x3x32, max-pool 2, dense 64, dense 10). Backend: "
        f"{config.backend}.",
        f"- Budget: {config.epochs} epochs at every batch size (batches drawn from a seeded permutation each "
        "epoch, the last partial batch dropped), so a larger batch takes fewer steps. Every optimizer uses "
        "linear learning-rate decay to zero over the run.",
        f"- Equal tuning budget: {config.grid} trials per optimizer, setting and seed 0, selected on "
        f"validation accuracy (ties: validation loss); then {config.seeds} seeds (0-{config.seeds - 1}) of the "
        "selected trial, reported on test as mean ± sample standard deviation. Learning-rate grids (half-"
        f"decade steps; from batch {LARGE_GRID_FROM} on, every grid starts one step higher): "
        + "; ".join(
            f"{name} {list(LR_LADDER[GRID_START[name] : GRID_START[name] + config.grid])}"
            for name in STUDY_OPTIMIZERS
            if name != "ALTO"
        )
        + f". ALTO: lr {list(LR_LADDER[GRID_START['ALTO'] : GRID_START['ALTO'] + config.grid])[1::2]} (every "
        "other point of Lamb's grid: the same range) x beta1 in {0.99, 0.9} (batch >= 1024, alpha = -5) or "
        "{0.01, 0.5} (batch < 1024, alpha = 0.5); the other hyperparameters are the paper's defaults "
        "for the batch size (`valley_core.defaults_for_batch_size`).",
        "- Fixed hyperparameters: SGD momentum 0.9, weight decay 1e-4; Adam (0.9, 0.999), no weight decay; "
        "AdamW (0.9, 0.999), decoupled weight decay 1e-4; Lamb betas (0.9, 0.99), eps 1e-6, weight decay "
        "1e-4, trust_eps 1e-6, norm_eps 1e-10 (ALTO with alpha = 0); EAdam alpha 0.5, beta1 0.01 "
        "(the paper's small-batch E), Adam's moments, run at batch sizes below 1024 only; Adam+CM its "
        "defaults (Adam's moments, 5 critical momenta, priority decay 0.7).",
        "- Implementations: ALTO, Lamb, EAdam (and Adam+CM) from `backends.torch` (`backends.keras` with "
        "`--backend keras`), i.e. the `valley_core` definitions; SGD, Adam, AdamW are the framework's own.",
    ]
    if results["lm"]:
        files = results["lm_files"]
        d_model, heads, layers, ff = config.lm_size
        out.append(
            f"- Language model: a causal pre-norm transformer ({layers} layer(s), d_model {d_model}, {heads} "
            f"heads, feed-forward {ff}, learned positions, context {config.lm_context}) over ASCII "
            f"characters, on {len(files)} Python {platform.python_version()} standard-library files "
            f"({sum(n for _, n in files)} characters; each file split 90/5/5 % by position into "
            f"train/validation/test): {', '.join(name for name, _ in files)}. Batch {config.lm_batch} "
            f"sequences ({config.lm_batch * config.lm_context} characters) per step, {config.lm_steps} "
            f"steps, {config.lm_grid} trials per optimizer (ALTO: lr x beta1 in {{0.99, 0.9}}, alpha = "
            f"-5; the lr grids of the small digits batches), selected on validation perplexity, then "
            f"{config.lm_seeds} seeds; perplexity on "
            f"{config.lm_eval_windows} fixed windows of each split."
        )
    out += [
        "",
        "## Digits: test accuracy after tuning",
        "",
        f"![test accuracy vs batch size]({plots['digits']})",
        "",
        demo.format_table(digit_rows, digit_columns),
        "",
        "Validation accuracy of every trial (seed 0), in grid order:",
        "",
    ]
    for entry in results["digits"]:
        trials = ", ".join(
            f"{_hp_text(hp, entry['optimizer'])}: {'diverged' if div else f'{100 * v:.1f}'}"
            for hp, v, div in zip(entry["grid"], entry["trial_val"], entry["trial_diverged"])
        )
        out.append(f"- {entry['model'].upper()} batch {entry['batch_size']} {entry['optimizer']}: {trials}")
    out += [
        "",
        "## Time to accuracy: ALTO vs Lamb",
        "",
        "Steps and training seconds (evaluation excluded) until the test accuracy, measured once per epoch, "
        "first reaches the target; the target is 1 point below the lower of the two optimizers' mean final "
        "accuracies (rounded down to 0.5 %). Means over the seeds that reach it (count in brackets). A "
        "positive saving means ALTO got there first.",
        "",
        f"![time to accuracy]({plots['time']})",
        "",
        demo.format_table(tta_rows, tta_columns),
    ]
    out += [
        "",
        "## Limits",
        "",
        "- Scale: 1197 training images and models of about 26k (MLP) and 38k (CNN) parameters; a 119k-"
        "parameter language model trained for a few minutes. The paper's claims are about ImageNet- and "
        "GPT-2-sized runs; these numbers test the same question on a CPU, not the paper's experiments.",
        "- The tuning selects on one seed; a selected trial can be fragile on other seeds (large standard "
        "deviations in the tables).",
        "- Wall times come from a shared 2-core machine with two worker processes: use the step counts for "
        "comparisons, the seconds only as an indication.",
    ]
    matched_rows, matched_columns = matched_table(results)
    if matched_rows:
        out += [
            "",
            "## Diagnostic: ALTO at Lamb's learning rate",
            "",
            "Outside the equal budget: ALTO with the paper's defaults for the batch size (alpha, beta1 ...) "
            "at the learning rate selected for Lamb, same seeds. Under the equal budget ALTO's learning-rate "
            "grid is coarser than Lamb's (half the points, as it also tunes beta1), so this row separates "
            "the E adaptor's own effect from that. Test accuracy (digits) or test perplexity (LM), "
            "mean ± std.",
            "",
            demo.format_table(matched_rows, matched_columns),
        ]
    if results["lm"]:
        out += [
            "",
            "## Character-level language model (large batch)",
            "",
            f"![language model]({plots['lm']})",
            "",
            demo.format_table(lm_rows, lm_columns),
            "",
            "Validation perplexity of every trial (seed 0): "
            + "; ".join(
                f"{e['optimizer']} "
                + ", ".join(
                    f"{_hp_text(hp, e['optimizer'])}: {'diverged' if div else f'{v:.3f}'}"
                    for hp, v, div in zip(e["grid"], e["trial_val"], e["trial_diverged"])
                )
                for e in results["lm"]
            ),
        ]
    reproduce = " ".join(part for part in command.split() if part not in ("--resume", "--no-progress"))
    out += ["", "## Reproduce", "", "```", reproduce, "```", "", f"Raw per-run records: `{plots['json']}`.", ""]
    return "\n".join(out)


def write_report(results: Dict[str, Any], config: StudyConfig, out_dir: str, command: str, elapsed: float) -> str:
    """Writes ``results.md`` and its plots (under ``results/``) into ``out_dir``; returns the path."""
    figures = os.path.join(out_dir, "results")
    os.makedirs(figures, exist_ok=True)
    plots = {
        "digits": "results/generalization_digits.png",
        "time": "results/generalization_time_to_accuracy.png",
        "lm": "results/generalization_lm.png",
        "json": "results/generalization_runs.json",
    }
    if results["digits"]:
        plot_digits(results, os.path.join(out_dir, plots["digits"]))
        plot_time_to_accuracy(results, os.path.join(out_dir, plots["time"]))
    if results["lm"]:
        plot_lm(results, os.path.join(out_dir, plots["lm"]))
    path = os.path.join(out_dir, "results.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_markdown(results, config, command, elapsed, plots))
    return path


# -------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``valley bench generalization``."""
    defaults = StudyConfig()
    parser.add_argument("--quick", action="store_true", help="a tiny configuration for smoke tests (seconds)")
    parser.add_argument(
        "--backend",
        choices=("torch", "keras"),
        default="torch",
        help="framework of the digits part (the language model always uses torch)",
    )
    parser.add_argument("--out", default="docs", help="writes OUT/results.md and OUT/results/*.png (default docs)")
    parser.add_argument("--seeds", type=int, default=None, help=f"final seeds (default {defaults.seeds})")
    parser.add_argument("--epochs", type=int, default=None, help=f"digits epochs (default {defaults.epochs})")
    parser.add_argument("--grid", type=int, default=None, help=f"trials per optimizer, even (default {defaults.grid})")
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated digits batch sizes, 0 = whole training split (default 32,128,512,0)",
    )
    parser.add_argument("--models", default=None, help="comma-separated digits models (default mlp,cnn)")
    parser.add_argument(
        "--optimizers", default=None, help=f"comma-separated digits optimizers (default {','.join(STUDY_OPTIMIZERS)})"
    )
    parser.add_argument(
        "--lm-steps", type=int, default=None, help=f"language-model steps (default {defaults.lm_steps})"
    )
    parser.add_argument("--no-lm", action="store_true", help="skip the language model")
    parser.add_argument("--no-digits", action="store_true", help="skip the digits part")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default min(2, cores))")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default 1)")
    parser.add_argument(
        "--resume", action="store_true", help="reuse finished runs from OUT/results/generalization_runs.json"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """Turns parsed options into a ``StudyConfig`` (``--quick`` first, then explicit overrides)."""
    config = quick_config() if args.quick else StudyConfig()
    if args.seeds is not None:
        config.seeds = config.lm_seeds = args.seeds
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.grid is not None:
        config.grid = config.lm_grid = args.grid
    if args.batch_sizes:
        config.batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    if args.models:
        config.digits_models = tuple(args.models.split(","))
    if args.optimizers:
        config.optimizers = tuple(args.optimizers.split(","))
    if args.lm_steps is not None:
        config.lm_steps = args.lm_steps
    if args.no_lm:
        config.lm = False
    if args.no_digits:
        config.digits_models = ()
    config.backend = args.backend
    if args.jobs is not None:
        config.jobs = max(1, args.jobs)
    config.threads = args.threads
    config.progress = not args.no_progress
    for name in config.optimizers:
        if name not in STUDY_OPTIMIZERS:
            raise ValueError(f"optimizer={name!r} is not one of {STUDY_OPTIMIZERS}")
    return config


def _command_line(args: argparse.Namespace) -> str:
    argv = sys.argv[1:]
    if "generalization" in argv:
        return "valley bench " + " ".join(argv[argv.index("generalization") :])
    return "valley bench generalization"


def run(args: argparse.Namespace) -> int:
    """``valley bench generalization``: runs the study and writes ``OUT/results.md``; returns 0."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"valley bench generalization: {error}", file=sys.stderr)
        return 2
    try:
        importlib.import_module("torch")
    except ImportError:
        print("valley bench generalization needs torch (pip install 'valley-optim[torch]')", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    cache = os.path.join(args.out, "results", "generalization_runs.json")
    started = time.perf_counter()
    results = run_study(config, cache_path=cache, resume=args.resume)
    elapsed = time.perf_counter() - started
    path = write_report(results, config, args.out, _command_line(args), elapsed)
    rows, columns = digits_table(results)
    if rows:
        print(demo.format_table(rows, columns))
    rows, columns = lm_table(results)
    if rows:
        print(demo.format_table(rows, columns))
    for line in verdict(results):
        print(line)
    print(f"wrote {path} ({elapsed / 60:.1f} min)")
    return 0
