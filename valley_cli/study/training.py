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
import inspect
import math
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import valley_core as vc
from valley_cli.study.data import LM_VOCAB, ClassificationSplit
from valley_cli.study.protocol import ADAMW, E_PAIRS, LAMB, SGD

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


def optimizer_hyperparameters(
    name: str, batch_size: int, lr: float, overrides: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """The study's hyperparameters of one optimizer (``backends.torch`` keyword names), the learning rate given.

    ALTO: the paper's defaults for the batch size (``valley_core.defaults_for_batch_size``: E's ``alpha`` and
    ``e_beta`` = beta1, Lamb's ``betas`` = (beta2, beta3)). Lamb: the same moments, epsilons and weight decay
    without E (ALTO with ``alpha = 0``). AdamW: (0.9, 0.999), decoupled weight decay 1e-2 (torch's default).
    SGD: heavy-ball momentum 0.9, weight decay 1e-4. EAdamW / ESGD: their base's settings plus E at the paper's
    ``alpha`` and beta1 for the batch size. ``overrides`` replaces keys (the dose-response's ``alpha`` and
    ``e_beta``, the post-convergence experiment's ``weight_decay``).

    Raises:
        ValueError: for an unknown optimizer or an override the optimizer does not take.
    """
    from valley_core import defaults_for_batch_size

    paper = defaults_for_batch_size(batch_size)
    explore = {"alpha": paper["alpha"], "e_beta": paper["betas"][0]}
    lamb = {"lr": lr, "betas": tuple(paper["betas"][1:])}
    lamb.update({key: paper[key] for key in ("eps", "weight_decay", "trust_eps", "norm_eps")})
    adamw = {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
    sgd = {"lr": lr, "momentum": 0.9, "weight_decay": 1e-4}
    bases: Dict[str, Dict[str, Any]] = {LAMB: lamb, ADAMW: adamw, SGD: sgd}
    table = {**{e: {**bases[base], **explore} for e, base in E_PAIRS}, **bases}
    if name not in table:
        raise ValueError(f"optimizer={name!r} is not one of {', '.join(table)}")
    result = dict(table[name])
    for key, value in (overrides or {}).items():
        if key not in result:
            raise ValueError(f"override {key}={value!r} is not a hyperparameter of {name} ({', '.join(result)})")
        result[key] = value
    return result


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


def torch_class(name: str) -> Tuple[str, str]:
    """``(module, class)`` of optimizer ``name`` (a registry display name): ``backends.torch``'s class (the core's
    maths), else torch's built-in (AdamW and SGD; the E-optimizers are valley's)."""
    import backends.torch

    class_name = vc.info_for(name).class_name
    return ("backends.torch" if hasattr(backends.torch, class_name) else "torch.optim"), class_name


def make_optimizer(name: str, model: Any, hp: Dict[str, Any]) -> Any:
    """Builds optimizer ``name`` for ``model`` with the decay split of ``backends.torch.lamb_param_groups``.

    Weight decay (and, for ALTO and Lamb, the trust ratio) applies to weight matrices only; biases and norm
    parameters get neither.

    Raises:
        ImportError: if the optimizer's module or class is not available.
    """
    from backends.torch import lamb_param_groups

    module_name, class_name = torch_class(name)
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None:
        raise ImportError(f"{module_name}.{class_name} is not available")
    options = dict(hp)
    weight_decay = options.pop("weight_decay", 0.0)
    groups = lamb_param_groups(model, weight_decay=weight_decay)
    if "trust_ratio_mask" not in inspect.signature(vc.info_for(name).factory).parameters:
        groups = [{key: value for key, value in group.items() if key != "trust_ratio"} for group in groups]
    optimizer = cls(groups, **options)
    if module_name == "backends.torch":
        _build_fused_kernels(optimizer)
    return optimizer


#: Learning-rate schedules by name: ``warmup-cosine`` (the study's), ``cosine`` (no warmup), ``constant``.
SCHEDULES = ("warmup-cosine", "cosine", "constant")


def schedule_factor(name: str, k: int, steps: int) -> float:
    """The lr factor of step ``k`` (1-based) of ``steps`` under schedule ``name`` (see ``SCHEDULES``)."""
    if name == "warmup-cosine":
        return warmup_cosine_factor(k, steps, warmup_steps(steps))
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (k - 1) / max(1, steps)))
    if name == "constant":
        return 1.0
    raise ValueError(f"schedule={name!r} is not one of {', '.join(SCHEDULES)}")


def _scheduler(optimizer: Any, steps: int, schedule: str = "warmup-cosine") -> Any:
    import torch

    schedule_factor(schedule, 1, steps)  # refuses an unknown name before training
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule_factor(schedule, s + 1, steps))


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
    schedule: str = "warmup-cosine",
) -> Dict[str, Any]:
    """Trains a classifier with warmup + cosine (or ``schedule``) and evaluates it.

    Args:
        model_fn: builds the model; called after ``torch.manual_seed(seed)``.
        optimizer: a display name of ``valley_core.REGISTRY`` (one of ``protocol.E_PAIRS``).
        hp: the optimizer's hyperparameters (``valley_core`` names, ``lr`` included).
        data: the split.
        batch_size: examples per step.
        steps: optimizer steps.
        seed: seeds initialisation and batch order (the same for every optimizer: paired runs).
        clip: clip the global gradient norm to this value before every step (``None``: no clipping).
        curve_points: test-accuracy evaluations during training (0: none).
        on_step: called after every step (progress bars).
        schedule: a name of ``SCHEDULES``.

    Returns:
        A dict: ``steps`` (completed), ``initial_train_loss``, ``final_train_loss``, ``train_accuracy`` (both
        on the first 5000 training examples: the whole split when it is smaller), ``val_loss``,
        ``val_accuracy``, ``test_accuracy``, ``train_seconds`` (steps only),
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
    scheduler = _scheduler(opt, steps, schedule)
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
    final_loss, train_acc = evaluate(x_probe, y_probe)
    val_loss, val_acc = evaluate(x_val, y_val)
    _, test_acc = evaluate(x_test, y_test)
    diverged = loop.diverged or not math.isfinite(final_loss)
    return {
        "steps": len(loop.losses),
        "initial_train_loss": initial_loss,
        "final_train_loss": final_loss,
        "train_accuracy": train_acc,
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


def parameter_norm(model: Any) -> float:
    """The Euclidean norm of all of ``model``'s parameters together."""
    return float(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()) ** 0.5)


def post_convergence_metrics(
    losses: Sequence[float], norms: Sequence[float], converged_loss: float, excursion_loss: float
) -> Dict[str, Any]:
    """What happens after the full-batch loss first reaches ``converged_loss``.

    Args:
        losses: the full-batch training loss before each step (the loss the step's gradient is taken at).
        norms: the parameter norm before each step (same length).
        converged_loss: the loss that counts as ~0.
        excursion_loss: a later loss above this is an excursion.

    Returns:
        ``converged_step`` (1-based, ``None`` if never), ``steps_after``, ``excursion_fraction`` (steps after
        convergence whose loss exceeds ``excursion_loss``), ``max_loss_after``, ``final_loss``,
        ``norm_at_convergence``, ``max_norm_ratio`` and ``final_norm_ratio`` (norm over the norm at convergence).
    """
    first = next((i for i, value in enumerate(losses) if value <= converged_loss), None)
    out: Dict[str, Any] = {"converged_step": None if first is None else first + 1, "final_loss": float(losses[-1])}
    if first is None:
        return {
            **out,
            "steps_after": 0,
            "excursion_fraction": None,
            "max_loss_after": None,
            "norm_at_convergence": None,
            "max_norm_ratio": None,
            "final_norm_ratio": None,
        }
    after = np.asarray(losses[first:], dtype=np.float64)
    after = np.where(np.isfinite(after), after, np.inf)
    base = float(norms[first])
    return {
        **out,
        "steps_after": int(len(after) - 1),
        "excursion_fraction": float(np.mean(after[1:] > excursion_loss)) if len(after) > 1 else 0.0,
        "max_loss_after": float(after.max()),
        "norm_at_convergence": base,
        "max_norm_ratio": float(max(norms[first:]) / base),
        "final_norm_ratio": float(norms[-1] / base),
    }


def train_post_convergence(
    model_fn: Callable[[], Any],
    optimizer: str,
    hp: Dict[str, Any],
    data: ClassificationSplit,
    steps: int,
    seed: int,
    schedule: str,
    converged_loss: float,
    excursion_loss: float,
    stride: int = 10,
) -> Dict[str, Any]:
    """Full-batch training of a classifier that can fit its data, watched after the loss first reaches ~0.

    Records the full-batch loss and the parameter norm at every step (the loss a step's gradient is taken at,
    so nothing is evaluated twice) and summarises them with ``post_convergence_metrics``.

    Returns:
        The metrics, plus ``losses`` and ``norms`` every ``stride`` steps, ``test_accuracy`` at the end,
        ``initial_train_loss``, ``final_train_loss``, ``diverged`` and ``train_seconds``.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = model_fn()
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = make_optimizer(optimizer, model, hp)
    scheduler = _scheduler(opt, steps, schedule)
    losses: List[float] = []
    norms: List[float] = []
    started = time.perf_counter()
    diverged = False
    for _ in range(steps):
        norms.append(parameter_norm(model))
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_train), y_train)
        loss.backward()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            diverged = True
            break
        opt.step()
        scheduler.step()
    elapsed = time.perf_counter() - started
    with torch.no_grad():
        final = float(F.cross_entropy(model(x_train), y_train))
        test = float((model(torch.from_numpy(data.x_test)).argmax(1) == torch.from_numpy(data.y_test)).float().mean())
    return {
        **post_convergence_metrics(losses + [final], norms + [parameter_norm(model)], converged_loss, excursion_loss),
        "initial_train_loss": losses[0],
        "final_train_loss": final,
        "test_accuracy": test,
        "diverged": diverged or not math.isfinite(final),
        "train_seconds": elapsed,
        "losses": losses[::stride],
        "norms": norms[::stride],
        "stride": stride,
    }
