"""Training one run: schedules, optimizers with the authors' parameter groups, the classifier and LM loops.

Every optimizer gets the same schedule: linear warmup over the first ``warmup`` steps, then cosine decay,

    factor(k) = k / warmup                                          for k <= warmup,
    factor(k) = (1 + cos(pi * (k - warmup - 1) / (steps - warmup))) / 2   otherwise  (k = 1 .. steps),

applied to the base learning rate with ``torch.optim.lr_scheduler.LambdaLR``. ALTO and Lamb (from
``backends.torch``, i.e. ``valley_core``'s maths) get ``backends.torch.lamb_param_groups``: weight decay and
the trust ratio on weight matrices only, none on biases and norms (the authors' code); AdamW and SGD get the
same decay split. The clipping arm clips the global gradient norm to 1.0 before every step
(``torch.nn.utils.clip_grad_norm_``), as the authors' training scripts do. No update maths is written here.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from valley_cli.study.data import LM_VOCAB, ClassificationSplit

#: optimizer name -> (module, class). ALTO and Lamb are valley's; AdamW and SGD are torch's builtins.
TORCH_OPTIMIZERS = {
    "ALTO": ("backends.torch", "ALTO"),
    "Lamb": ("backends.torch", "Lamb"),
    "EAdam": ("backends.torch", "EAdam"),
    "AdamW": ("torch.optim", "AdamW"),
    "Adam": ("torch.optim", "Adam"),
    "SGD": ("torch.optim", "SGD"),
}
#: Optimizers that take the trust ratio (and so the authors' parameter groups).
TRUST_RATIO_OPTIMIZERS = ("ALTO", "Lamb")
#: Fraction of the steps spent warming up (at least one step).
WARMUP_FRACTION = 0.1
#: Test-metric evaluations recorded per run (evenly spaced; the last one is the final step).
CURVE_POINTS = 30


def warmup_steps(steps: int, fraction: float = WARMUP_FRACTION) -> int:
    """Warmup length of a run of ``steps`` steps: ``max(1, round(fraction * steps))``."""
    return max(1, int(round(fraction * steps)))


def warmup_cosine_factor(k: int, steps: int, warmup: int) -> float:
    """The learning-rate factor of step ``k`` (1-based) of ``steps``: linear warmup, then cosine decay."""
    if k <= warmup:
        return k / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (k - warmup - 1) / max(1, steps - warmup)))


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """Yields ``steps`` index arrays: epochs of a seeded permutation, the last partial batch dropped.

    The order depends only on ``seed`` (and ``n``, ``batch_size``), so runs of different optimizers with the
    same seed see the same batches in the same order (paired runs).

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


class LoopOutcome(NamedTuple):
    """What ``training_loop`` measured."""

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

    Stops at the first non-finite loss (``diverged``). After step ``k`` (1-based) ``checkpoint(k)`` may return
    a metric, recorded with the training time so far; evaluations are not timed.
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


def optimizer_hyperparameters(name: str, batch_size: int, lr: float) -> Dict[str, Any]:
    """The study's hyperparameters of one optimizer (``valley_core`` names), the learning rate given.

    ALTO: the paper's defaults for the batch size (``valley_core.defaults_for_batch_size``). Lamb: the same
    moments, epsilons and weight decay with ``alpha = 0`` (Lamb is ALTO without E). AdamW: (0.9, 0.999),
    decoupled weight decay 1e-2 (torch's default). SGD: heavy-ball momentum 0.9, weight decay 1e-4.

    Raises:
        ValueError: for an unknown optimizer.
    """
    from valley_core import defaults_for_batch_size

    paper = defaults_for_batch_size(batch_size)
    if name == "ALTO":
        return {**paper, "lr": lr}
    if name == "Lamb":
        keys = ("eps", "weight_decay", "trust_eps", "norm_eps")
        return {"lr": lr, "betas": paper["betas"][1:], **{key: paper[key] for key in keys}}
    if name == "AdamW":
        return {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
    if name == "SGD":
        return {"lr": lr, "momentum": 0.9, "weight_decay": 1e-4}
    raise ValueError(f"optimizer={name!r} is not one of ALTO, Lamb, AdamW, SGD")


def _build_fused_kernels(optimizer: Any) -> None:
    """Builds the fused CPU kernels of each parameter group's plan (about a second once, then cached on disk)
    here, outside the timed steps. Any failure only moves the build (or the fallback path) into the first step."""
    try:
        from backends.kernels.plan import Plan
        from backends.torch import fused

        for group in optimizer.param_groups:
            plan = optimizer.plan_for(group)
            if isinstance(plan, Plan):
                fused.library(plan)
    except Exception:  # noqa: BLE001 - "auto" then warns and uses another path; the run goes on
        pass


def make_optimizer(name: str, model: Any, hp: Dict[str, Any]) -> Any:
    """Builds optimizer ``name`` for ``model`` with the decay split of ``backends.torch.lamb_param_groups``.

    Weight decay (and, for ALTO and Lamb, the trust ratio) applies to weight matrices only; biases and norm
    parameters get neither.

    Raises:
        ImportError: if the optimizer's module or class is not available.
    """
    from backends.torch import lamb_param_groups

    module_name, class_name = TORCH_OPTIMIZERS[name]
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None:
        raise ImportError(f"{module_name}.{class_name} is not available")
    options = dict(hp)
    weight_decay = options.pop("weight_decay", 0.0)
    groups = lamb_param_groups(model, weight_decay=weight_decay)
    if name not in TRUST_RATIO_OPTIMIZERS:
        groups = [{key: value for key, value in group.items() if key != "trust_ratio"} for group in groups]
    optimizer = cls(groups, **options)
    if module_name == "backends.torch":
        _build_fused_kernels(optimizer)
    return optimizer


def _scheduler(optimizer: Any, steps: int) -> Any:
    import torch

    warmup = warmup_steps(steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s + 1, steps, warmup))


def curve_checkpoints(steps: int, points: int = CURVE_POINTS) -> set:
    """Steps (1-based) after which the test metric is recorded: ``points`` evenly spaced, the last included."""
    return set(np.linspace(steps / points, steps, num=min(points, steps)).round().astype(int).tolist())


def train_classifier(
    model_fn: Callable[[], Any],
    optimizer: str,
    hp: Dict[str, Any],
    data: ClassificationSplit,
    batch_size: int,
    steps: int,
    seed: int,
    clip: Optional[float] = None,
    curve_points: int = CURVE_POINTS,
    on_step: Optional[Callable[[], None]] = None,
) -> Dict[str, Any]:
    """Trains a classifier with warmup + cosine and evaluates it.

    Args:
        model_fn: builds the model; called after ``torch.manual_seed(seed)``.
        optimizer: a key of ``TORCH_OPTIMIZERS``.
        hp: the optimizer's hyperparameters (``valley_core`` names, ``lr`` included).
        data: the split.
        batch_size: examples per step.
        steps: optimizer steps.
        seed: seeds initialisation and batch order (the same for every optimizer: paired runs).
        clip: clip the global gradient norm to this value before every step (``None``: no clipping).
        curve_points: test-accuracy evaluations during training (0: none).
        on_step: called after every step (progress bars).

    Returns:
        A dict: ``steps`` (completed), ``initial_train_loss``, ``final_train_loss`` (on the first 5000
        training examples), ``val_loss``, ``val_accuracy``, ``test_accuracy``, ``train_seconds`` (steps only),
        ``curve`` (``[step, seconds, test accuracy]``), ``batch_losses``, ``diverged``, ``clipped_steps``
        (steps whose global gradient norm exceeded ``clip``).
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = model_fn()
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_val, y_val = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    x_probe, y_probe = x_train[:5000], y_train[:5000]

    def evaluate(x, y) -> Tuple[float, float]:
        with torch.no_grad():
            logits = model(x)
            return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())

    initial_loss, _ = evaluate(x_probe, y_probe)
    opt = make_optimizer(optimizer, model, hp)
    scheduler = _scheduler(opt, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    checkpoints = curve_checkpoints(steps, curve_points) if curve_points else set()
    clipped = [0]

    def step(idx: np.ndarray) -> float:
        if len(idx) == len(y_train):
            xb, yb = x_train, y_train
        else:
            index = torch.from_numpy(idx)
            xb, yb = x_train[index], y_train[index]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if clip is not None:
            clipped[0] += int(float(torch.nn.utils.clip_grad_norm_(params, clip)) > clip)
        opt.step()
        scheduler.step()
        return loss.detach().item()

    def checkpoint(number: int) -> Optional[float]:
        return evaluate(x_test, y_test)[1] if number in checkpoints else None

    loop = training_loop(batch_indices(len(y_train), batch_size, steps, seed), step, checkpoint, on_step)
    final_loss, _ = evaluate(x_probe, y_probe)
    val_loss, val_acc = evaluate(x_val, y_val)
    _, test_acc = evaluate(x_test, y_test)
    diverged = loop.diverged or not math.isfinite(final_loss)
    return {
        "steps": len(loop.losses),
        "initial_train_loss": initial_loss,
        "final_train_loss": final_loss,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "train_seconds": loop.elapsed,
        "curve": [list(point) for point in loop.curve],
        "batch_losses": loop.losses,
        "diverged": diverged,
        "clipped_steps": clipped[0],
    }


def perplexity(cross_entropy: float) -> float:
    """``exp(cross_entropy)`` (capped at ``exp(50)``; ``inf`` for a non-finite loss)."""
    return math.exp(min(cross_entropy, 50.0)) if math.isfinite(cross_entropy) else float("inf")


def text_windows(codes: np.ndarray, count: int, length: int) -> np.ndarray:
    """``count`` evenly spaced windows of ``length`` codes (fewer if the text is short), int64."""
    count = max(1, min(count, (len(codes) - 1) // length))
    stride = (len(codes) - 1) // count
    return np.stack([codes[s : s + length] for s in np.arange(count) * stride]).astype(np.int64)


def train_lm(
    model_fn: Callable[[], Any],
    context: int,
    optimizer: str,
    hp: Dict[str, Any],
    text: Dict[str, np.ndarray],
    batch_size: int,
    steps: int,
    seed: int,
    clip: Optional[float] = None,
    eval_windows: int = 256,
    curve_points: int = CURVE_POINTS,
    on_step: Optional[Callable[[], None]] = None,
) -> Dict[str, Any]:
    """Trains the character-level LM (next-character cross-entropy) with warmup + cosine.

    Batches are ``batch_size`` windows of ``context + 1`` characters at seeded random offsets of the training
    text (the same offsets for every optimizer with the same seed). Perplexities are measured on
    ``eval_windows`` fixed windows of the validation and test texts.

    Returns:
        A dict like ``train_classifier``'s with ``val_perplexity`` and ``test_perplexity`` instead of the
        accuracies; ``curve`` holds ``[step, seconds, test perplexity]``.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = model_fn()
    train = torch.from_numpy(text["train"].astype(np.int64))
    windows = {key: torch.from_numpy(text_windows(text[key], eval_windows, context + 1)) for key in text}

    def loss_of(batch) -> Any:
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, LM_VOCAB), batch[:, 1:].reshape(-1))

    def evaluate(batch) -> float:
        with torch.no_grad():
            return float(loss_of(batch))

    initial = evaluate(windows["train"])
    opt = make_optimizer(optimizer, model, hp)
    scheduler = _scheduler(opt, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = np.random.default_rng(seed + 104729)
    offsets = torch.arange(context + 1)
    checkpoints = curve_checkpoints(steps, curve_points) if curve_points else set()
    clipped = [0]
    batch_starts = (torch.from_numpy(rng.integers(0, len(train) - context - 1, size=batch_size)) for _ in range(steps))

    def step(starts) -> float:
        batch = train[starts[:, None] + offsets]
        opt.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        if clip is not None:
            clipped[0] += int(float(torch.nn.utils.clip_grad_norm_(params, clip)) > clip)
        opt.step()
        scheduler.step()
        return loss.detach().item()

    def checkpoint(number: int) -> Optional[float]:
        return perplexity(evaluate(windows["test"])) if number in checkpoints else None

    loop = training_loop(batch_starts, step, checkpoint, on_step)
    val_loss, test_loss, final_loss = evaluate(windows["val"]), evaluate(windows["test"]), evaluate(windows["train"])
    return {
        "steps": len(loop.losses),
        "initial_train_loss": initial,
        "final_train_loss": final_loss,
        "val_loss": val_loss,
        "val_perplexity": perplexity(val_loss),
        "test_perplexity": perplexity(test_loss),
        "train_seconds": loop.elapsed,
        "curve": [list(point) for point in loop.curve],
        "batch_losses": loop.losses,
        "diverged": loop.diverged or not math.isfinite(val_loss),
        "clipped_steps": clipped[0],
    }


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
