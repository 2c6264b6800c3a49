"""The second edition's protocol: settings, arms, seeds, the learning-rate grid and how it is widened.

Everything a run depends on is in its *spec* (a plain dict); the run's cache key is a hash of the whole spec,
so a resumed study never reuses a run trained under other settings (model, data sizes, schedule, grid point,
hyperparameters, seed).

Tuning (per setting and optimizer): the learning rates are points of ONE geometric grid,
``lr(i) = GRID_ANCHOR * GRID_RATIO ** i`` (neighbour ratio 1.25), each point trained with every tuning seed.
It starts with ``START_POINTS`` points around a prior and is widened two points at a time until

1. the selected point (best mean validation metric over the tuning seeds; a collapsed run counts as the worst
   value, ties go to the smaller lr) is not at either edge of the grid, and
2. every tuning seed has a collapsed run above the selected lr (its collapse lr: the smallest such grid lr),

or until the grid holds ``MAX_POINTS`` points (then the report flags the setting as not bracketed). A run is
*collapsed* when it diverged (a non-finite loss) or its final training loss is at least
``COLLAPSE_LOSS_FRACTION`` of its initial training loss (it learned nothing or unlearned).

Tuning seeds (``TUNING_SEEDS``) and final seeds (``0 .. FINAL_SEEDS - 1``) are disjoint, so the selection is
never scored on the runs that are reported. A seed fixes the initial weights and the data order: runs of two
arms with the same seed are paired.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import valley_core as vc

#: Every learning rate of the study is ``GRID_ANCHOR * GRID_RATIO ** i`` for an integer ``i``.
GRID_ANCHOR = 1e-3
GRID_RATIO = 1.25
#: Points of a grid before any widening, and the most a grid may grow to.
START_POINTS = 5
MAX_POINTS = 30
#: Changes made to the protocol after results were seen (the report lists them above its protocol).
PROTOCOL_CHANGES = (
    "MAX_POINTS 18 -> 30 after the first complete run (2026-12-07): the EAdamW and AdamW grids of both "
    "'E over AdamW and SGD' settings reached 18 points before their collapse (batch 2000) or their optimum "
    "(batch 128, selected at the grid's top edge) was on them, against the rule that the selected lr is never at "
    "the edge. Only grids not bracketed at 18 points grew; every other setting's tuning and final runs are unchanged.",
)
#: A run is collapsed when its final training loss is at least this fraction of its initial training loss.
COLLAPSE_LOSS_FRACTION = 0.9
#: Seeds of the tuning runs (never final seeds) and the number of final seeds (seeds 0 .. n-1).
TUNING_SEEDS = (1000, 1001)
FINAL_SEEDS = 8
#: Dose-response: ALTO's alpha at beta1 = DOSE_BETA1, at ALTO's selected lr (alpha 0 is Lamb at that lr).
DOSE_ALPHAS = (0.0, -1.0, -2.0, -5.0, -10.0)
DOSE_BETA1 = 0.99
#: Placebo: Lamb at its selected lr times these factors.
PLACEBO_FACTORS = (0.9, 1.1)
#: Confidence of every interval, and the power of the minimum detectable effect.
CONFIDENCE = 0.95
POWER = 0.8
#: Bumped when a change of the training code changes what a spec trains (invalidates every cached run).
PROTOCOL_VERSION = 2


def _e_pair(e_optimizer: Callable[..., Any]) -> Tuple[str, str]:
    """An E-optimizer and the base it is at ``alpha = 0``, by the core registry's display names."""
    info = vc.info_for(e_optimizer)
    return info.display_name, vc.REGISTRY[str(info.base)].display_name


#: optimizer -> the base it adapts (E over a base); the pairs the study compares (the specs' optimizer names).
E_PAIRS = tuple(_e_pair(e) for e in (vc.alto, vc.eadamw, vc.esgd))
(ALTO, LAMB), (EADAMW, ADAMW), (ESGD, SGD) = E_PAIRS


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of the study: a task, a model, data sizes, a batch size and a step budget.

    Attributes:
        regime: 1 (generalisation gap), 2 (few steps at large batch) or 3 (language model).
        task: ``mnist1d`` or ``lm``.
        model: ``("cnn", channels)``, ``("mlp", *hidden)`` or ``("transformer", d_model, heads, layers,
            feed_forward, context)``.
        data: MNIST-1D ``(n_train, n_val, n_test)``; for the LM ``(eval_windows,)``.
        batch_size: examples (sequences for the LM) per step.
        steps: optimizer steps per run.
        priors: optimizer -> the lr the grid starts around.
        pairs: the (E optimizer, base) pairs compared here.
        dose: also run the dose-response and placebo arms.
    """

    regime: int
    task: str
    model: Tuple[Any, ...]
    data: Tuple[int, ...]
    batch_size: int
    steps: int
    priors: Tuple[Tuple[str, float], ...]
    pairs: Tuple[Tuple[str, str], ...] = E_PAIRS[:1]
    dose: bool = False

    @property
    def name(self) -> str:
        return f"regime {self.regime}: {self.task} batch {self.batch_size}, {self.steps} steps"

    @property
    def key(self) -> str:
        """``r1/mnist1d/b128/s4500`` (``.../AdamW-SGD`` for other bases): the setting's key in ``study.json``."""
        bases = "" if self.pairs == E_PAIRS[:1] else "/" + "-".join(base for _, base in self.pairs)
        return f"r{self.regime}/{self.task}/b{self.batch_size}/s{self.steps}{bases}"

    @property
    def optimizers(self) -> List[str]:
        return [name for pair in self.pairs for name in pair]

    def prior(self, optimizer: str) -> float:
        return dict(self.priors)[optimizer]


def grid_lr(index: int) -> float:
    """The learning rate of grid point ``index`` (rounded to 6 significant digits, so keys are stable)."""
    return float(f"{GRID_ANCHOR * GRID_RATIO**index:.6g}")


def grid_index(lr: float) -> int:
    """The grid point nearest to ``lr``."""
    return int(round(math.log(lr / GRID_ANCHOR) / math.log(GRID_RATIO)))


def start_indices(prior: float, points: int = START_POINTS) -> List[int]:
    """The first grid: ``points`` consecutive points centred on the one nearest ``prior``."""
    centre = grid_index(prior)
    return list(range(centre - points // 2, centre - points // 2 + points))


def spec(
    setting: Setting,
    optimizer: str,
    lr: float,
    seed: int,
    arm: str = "main",
    overrides: Optional[Dict[str, float]] = None,
) -> Dict[str, Any]:
    """The description of one run: everything that changes what is trained."""
    return {
        "protocol": PROTOCOL_VERSION,
        "kind": "train",
        "regime": setting.regime,
        "task": setting.task,
        "model": list(setting.model),
        "data": list(setting.data),
        "batch_size": setting.batch_size,
        "steps": setting.steps,
        "schedule": "warmup-cosine",
        "optimizer": optimizer,
        "overrides": dict(sorted((overrides or {}).items())),
        "lr": float(f"{lr:.6g}"),
        "seed": seed,
        "arm": arm,
    }


def run_key(spec_: Dict[str, Any]) -> str:
    """A run's identity and cache file name: a readable prefix and a hash of the WHOLE spec.

    The hash covers every field of the spec (model, data sizes, schedule, hyperparameter overrides, lr, seed,
    protocol version), so two specs that differ anywhere have different keys; the ``arm`` label is left out
    (the same run can serve two comparisons).
    """
    content = {k: v for k, v in spec_.items() if k != "arm"}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec_['task']}-b{spec_['batch_size']}-s{spec_['steps']}-{spec_['optimizer']}-{digest}"


def collapsed(record: Dict[str, Any]) -> bool:
    """Diverged, or the final training loss is at least ``COLLAPSE_LOSS_FRACTION`` of the initial one."""
    final = record["final_train_loss"]
    if record["diverged"] or not math.isfinite(final):
        return True
    return final >= COLLAPSE_LOSS_FRACTION * record["initial_train_loss"]


def higher_is_better(task: str) -> bool:
    """Accuracy (classification) is maximised, perplexity (LM) minimised."""
    return task != "lm"


def validation_metric(record: Dict[str, Any]) -> float:
    """What tuning selects on: validation accuracy, or validation perplexity for the LM."""
    return record["val_perplexity"] if record["task"] == "lm" else record["val_accuracy"]


def test_metric(record: Dict[str, Any]) -> float:
    """What is reported: test accuracy, or test perplexity for the LM."""
    return record["test_perplexity"] if record["task"] == "lm" else record["test_accuracy"]


@dataclasses.dataclass
class TuningState:
    """The grid of one optimizer in one setting, and what its tuning runs showed.

    Attributes:
        indices: grid points trained (sorted).
        scores: grid index -> mean validation metric over the tuning seeds (collapsed runs count as the worst).
        best: the selected grid index (``None`` until every point has all its runs).
        collapse: tuning seed -> its collapse lr (``None``: no collapse on the grid).
        bracketed: the selected point is interior and every seed's collapse was found.
        done: no more points to add.
    """

    indices: List[int]
    scores: Dict[int, float] = dataclasses.field(default_factory=dict)
    best: Optional[int] = None
    collapse: Dict[int, Optional[float]] = dataclasses.field(default_factory=dict)
    bracketed: bool = False
    done: bool = False

    @property
    def lrs(self) -> List[float]:
        return [grid_lr(i) for i in self.indices]


def score(records: Sequence[Dict[str, Any]], higher: bool) -> float:
    """Mean validation metric of a grid point's tuning runs (a collapsed run counts as the worst value)."""
    worst = -math.inf if higher else math.inf
    values = [
        worst if collapsed(r) or not math.isfinite(validation_metric(r)) else validation_metric(r) for r in records
    ]
    return sum(values) / len(values)


def advance(
    state: TuningState,
    runs: Dict[Tuple[int, int], Dict[str, Any]],
    seeds: Sequence[int],
    higher: bool,
    max_points: int = MAX_POINTS,
) -> List[int]:
    """Updates ``state`` from the tuning runs (``(grid index, seed) -> record``) and returns the points to add.

    The rules are the module's: widen at the edge holding the best point; then search upwards for each seed's
    collapse; stop at ``MAX_POINTS``. An empty list means tuning is finished (``state.done``).

    Raises:
        KeyError: if a run of a point of ``state.indices`` is missing.
    """
    state.indices = sorted(set(state.indices))
    state.scores = {i: score([runs[(i, s)] for s in seeds], higher) for i in state.indices}
    order = sorted(state.indices, key=lambda i: ((-state.scores[i] if higher else state.scores[i]), i))
    state.best = order[0]
    state.collapse = {}
    for seed in seeds:
        above = [i for i in state.indices if i > state.best and collapsed(runs[(i, seed)])]
        state.collapse[seed] = grid_lr(min(above)) if above else None
    low, high = state.indices[0], state.indices[-1]
    interior = low < state.best < high
    found = all(value is not None for value in state.collapse.values())
    state.bracketed = interior and found
    room = max_points - len(state.indices)
    if state.bracketed or room <= 0:
        state.done = True
        return []
    if state.best == low:
        add = [low - 1, low - 2]
    else:
        add = [high + 1, high + 2]  # the best is at the top edge, or a seed's collapse is not on the grid yet
    return add[:room]


@dataclasses.dataclass
class StudyConfig:
    """What the study runs (the defaults are the full study; ``quick_config()`` is the smoke test).

    Attributes:
        settings: the settings in the order they run.
        tuning_seeds: seeds of the tuning runs.
        final_seeds: number of final seeds (``0 .. final_seeds - 1``).
        post: the post-convergence experiment (``None``: not run).
        max_points: the most points a tuning grid may grow to.
        jobs: worker processes.
        threads: torch threads per worker.
        progress: show a progress bar.
        quick: a smoke test (labelled so in every output).
    """

    settings: Tuple[Setting, ...] = ()
    tuning_seeds: Tuple[int, ...] = TUNING_SEEDS
    final_seeds: int = FINAL_SEEDS
    post: Optional["PostConfig"] = None
    max_points: int = MAX_POINTS
    jobs: int = 2
    threads: int = 1
    progress: bool = True
    quick: bool = False

    @property
    def seeds(self) -> Tuple[int, ...]:
        return tuple(range(self.final_seeds))

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first inconsistent setting."""
        if not self.settings and self.post is None:
            raise ValueError("the study has no settings")
        if self.final_seeds < 2:
            raise ValueError(f"final_seeds={self.final_seeds} violates final_seeds >= 2 (paired intervals)")
        if not self.tuning_seeds or set(self.tuning_seeds) & set(self.seeds):
            raise ValueError(f"tuning_seeds={self.tuning_seeds} must be non-empty and disjoint from the final seeds")
        for setting in self.settings:
            if setting.task == "mnist1d" and setting.batch_size > setting.data[0]:
                raise ValueError(f"{setting.name}: batch size exceeds the {setting.data[0]} training examples")
            if setting.steps < 1:
                raise ValueError(f"{setting.name}: steps must be positive")
            if sum(setting.data[:3]) % 10 and setting.task == "mnist1d":
                raise ValueError(f"{setting.name}: n_train + n_val + n_test must be a multiple of 10")


@dataclasses.dataclass(frozen=True)
class PostConfig:
    """The post-convergence experiment: full-batch training past the first time the loss reaches ~0.

    Attributes:
        data: MNIST-1D ``(n_train, n_val, n_test)`` (the training split is fitted full batch).
        hidden: hidden widths of the MLP.
        lr: the base learning rate (constant, or the peak of the cosine schedule).
        steps: total steps per run.
        alphas, beta1s: the E settings (ALTO; alpha 0 is Lamb).
        schedules: ``constant`` and/or ``cosine`` (no warmup: the comparison is about the lr after convergence).
        weight_decays: Lamb-convention weight decay values.
        seeds: seeds per condition.
        converged_loss: the loss that counts as ~0 (training loss on the full split).
        excursion_loss: a step whose loss exceeds this after convergence is an excursion.
    """

    data: Tuple[int, int, int] = (1000, 500, 500)
    hidden: Tuple[int, ...] = (64, 64)
    lr: float = 1e-2
    steps: int = 1000
    alphas: Tuple[float, ...] = (0.0, -1.0, -5.0)
    beta1s: Tuple[float, ...] = (0.9, 0.99)
    schedules: Tuple[str, ...] = ("constant", "cosine")
    weight_decays: Tuple[float, ...] = (0.0, 1e-4, 1e-2)
    seeds: Tuple[int, ...] = (0, 1)
    converged_loss: float = 1e-3
    excursion_loss: float = 0.1


def post_specs(post: PostConfig) -> List[Dict[str, Any]]:
    """Every run of the post-convergence experiment (alpha 0 is run once per condition, as Lamb)."""
    specs = []
    for schedule in post.schedules:
        for weight_decay in post.weight_decays:
            for alpha in post.alphas:
                for beta1 in post.beta1s if alpha else post.beta1s[:1]:
                    for seed in post.seeds:
                        specs.append(
                            {
                                "protocol": PROTOCOL_VERSION,
                                "kind": "post",
                                "task": "post",
                                "model": ["mlp", *post.hidden],
                                "data": list(post.data),
                                "batch_size": post.data[0],
                                "steps": post.steps,
                                "schedule": schedule,
                                "optimizer": ALTO if alpha else LAMB,
                                "overrides": {"alpha": alpha, "e_beta": beta1} if alpha else {},
                                "weight_decay": weight_decay,
                                "lr": post.lr,
                                "seed": seed,
                                "converged_loss": post.converged_loss,
                                "excursion_loss": post.excursion_loss,
                                "arm": "post",
                            }
                        )
    return specs


# ------------------------------------------------------------------------------------------- the study's size

#: Regime 1: a 1-D CNN (16 channels) on 2000 MNIST-1D training examples, a fixed 300 epochs at every batch.
R1_DATA = (2000, 2000, 4000)
R1_MODEL = ("cnn", 16)
R1_EPOCHS = 300
R1_BATCHES = (2000, 128, 1000, 500)
#: Regime 2: the MLP 40-64-64-10 on 50k examples at batch 16384, few steps.
R2_DATA = (50_000, 5_000, 5_000)
R2_MODEL = ("mlp", 64, 64)
R2_BATCH = 16384
R2_STEPS = (150, 75, 300, 600)
#: Regime 3: the character transformer at 512 sequences of 16 characters per step.
R3_MODEL = ("transformer", 32, 2, 1, 64, 16)
R3_DATA = (256,)
R3_BATCH = 512
R3_STEPS = 300

#: Priors: the lr each grid starts around (from single runs measured while designing the study).
R1_PRIORS = ((ALTO, 0.05), (LAMB, 0.05), (EADAMW, 1e-2), (ADAMW, 1e-2), (ESGD, 0.3), (SGD, 0.3))
R2_PRIORS = ((ALTO, 0.05), (LAMB, 0.05))


def r1_priors(batch_size: int) -> Tuple[Tuple[str, float], ...]:
    """Regime 1's priors at ``batch_size``: ``R1_PRIORS`` (for the full batch) scaled by the square root of the
    batch-size ratio (a prior only: the grid is widened until the selection is bracketed)."""
    factor = (batch_size / R1_DATA[0]) ** 0.5
    return tuple((name, lr * factor) for name, lr in R1_PRIORS)


R3_PRIORS = ((ALTO, 0.02), (LAMB, 0.02))


def full_config() -> StudyConfig:
    """The full study, the decisive settings first (a partial run still answers the main question)."""
    r1 = {
        b: Setting(1, "mnist1d", R1_MODEL, R1_DATA, b, R1_EPOCHS * (R1_DATA[0] // b), r1_priors(b)[:2])
        for b in R1_BATCHES
    }
    full, small = max(R1_BATCHES), min(R1_BATCHES)
    r1[full] = dataclasses.replace(r1[full], dose=True)
    r2 = {s: Setting(2, "mnist1d", R2_MODEL, R2_DATA, R2_BATCH, s, R2_PRIORS) for s in R2_STEPS}
    r2[150] = dataclasses.replace(r2[150], dose=True)
    r3 = Setting(3, "lm", R3_MODEL, R3_DATA, R3_BATCH, R3_STEPS, R3_PRIORS, dose=True)
    pairs = E_PAIRS[1:]
    e_bases = [dataclasses.replace(r1[b], pairs=pairs, priors=r1_priors(b), dose=False) for b in (full, small)]
    order = [r1[full], r1[small], r2[150], r3, r1[1000], r1[500], r2[75], r2[300], r2[600], *e_bases]
    return StudyConfig(settings=tuple(order), post=PostConfig())


def quick_config() -> StudyConfig:
    """``--quick``: a smoke test of every code path at toy sizes (a couple of minutes); it supports no conclusion."""
    data = (500, 200, 300)
    priors = ((ALTO, 0.04), (LAMB, 0.04), (EADAMW, 3e-3), (ADAMW, 3e-3), (ESGD, 0.1), (SGD, 0.1))
    settings = (
        Setting(1, "mnist1d", ("cnn", 4), data, 500, 20, priors[:2], dose=True),
        Setting(1, "mnist1d", ("cnn", 4), data, 100, 100, priors[:2]),
        Setting(2, "mnist1d", ("mlp", 8), data, 500, 10, R2_PRIORS),
        Setting(3, "lm", ("transformer", 8, 2, 1, 16, 8), (16,), 16, 10, R3_PRIORS),
        Setting(1, "mnist1d", ("cnn", 4), data, 500, 20, priors, pairs=E_PAIRS[1:]),
    )
    post = PostConfig(data=(200, 100, 100), hidden=(8,), steps=60, seeds=(0,), alphas=(0.0, -5.0), beta1s=(0.99,))
    return StudyConfig(settings=settings, final_seeds=2, tuning_seeds=(1000,), post=post, max_points=7, quick=True)
