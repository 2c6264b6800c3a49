"""The study's protocol: which runs exist, their learning-rate grids and seeds, and how one is chosen.

A *group* is one setting (task, batch size, step budget). In each group ALTO and Lamb are tuned on the SAME
half-decade learning-rate grid, each grid point trained with every tuning seed, and the point with the best
mean validation metric is selected (accuracy; perplexity for the language model). The references (AdamW,
SGD with momentum) are tuned on a smaller grid with the first tuning seed. Then every optimizer runs at its
selected learning rate with all the final seeds; the tuning seeds are among them (their runs are reused: a
run is identified by its settings, not by its role). A seed fixes the initial weights and the data order, so
the runs of different optimizers with the same seed are paired. At the largest batch one more arm, ALTO and
Lamb with the authors' global-norm clipping at 1.0, runs at the learning rates selected without clipping.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

#: ALTO and Lamb share one grid per setting; these are the optimizers the study compares.
COMPARED = ("ALTO", "Lamb")
#: The half-decade learning-rate grid of ALTO and Lamb at batch >= ``LARGE_BATCH`` (5 points).
LARGE_BATCH_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
#: The same grid one half-decade lower, for the small-batch arms.
SMALL_BATCH_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
LARGE_BATCH = 4096
#: Reference optimizers' grids (tuned on one seed).
REFERENCE_GRIDS = {"AdamW": (3e-3, 1e-2, 3e-2), "SGD": (0.1, 0.3, 1.0)}
#: The language model's grids.
LM_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
LM_REFERENCE_GRIDS = {"AdamW": (1e-3, 3e-3, 1e-2)}
#: Global gradient-norm bound of the clipping arm (the authors' scripts).
CLIP_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class Group:
    """One setting of the study.

    Attributes:
        task: ``mnist1d`` or ``lm``.
        batch_size: examples (sequences for the LM) per step.
        steps: optimizer steps per run.
        grid: ALTO's and Lamb's learning rates.
        tuning_seeds: seeds every grid point is trained with.
        seeds: final seeds (a superset of ``tuning_seeds``).
        references: reference optimizer -> its learning-rate grid (tuned on ``tuning_seeds[0]``).
        clip_arm: also run ALTO and Lamb with global-norm clipping at ``CLIP_NORM``.
        label: what the setting is for (``epoch budget``, ``step budget``).
    """

    task: str
    batch_size: int
    steps: int
    grid: Tuple[float, ...]
    tuning_seeds: Tuple[int, ...]
    seeds: Tuple[int, ...]
    references: Tuple[Tuple[str, Tuple[float, ...]], ...] = ()
    clip_arm: bool = False
    label: str = "epoch budget"

    @property
    def name(self) -> str:
        return f"{self.task} batch {self.batch_size}, {self.steps} steps"


def run_key(spec: Dict[str, Any]) -> str:
    """A run's identity (file name of its cached record): every setting that changes the run."""
    clip = f"-clip{spec['clip']:g}" if spec.get("clip") else ""
    return (
        f"{spec['task']}-b{spec['batch_size']}-s{spec['steps']}-{spec['optimizer']}-lr{spec['lr']:g}{clip}"
        f"-seed{spec['seed']}"
    )


def spec(group: Group, optimizer: str, lr: float, seed: int, clip: Optional[float] = None) -> Dict[str, Any]:
    """The description of one run of ``group`` (what a worker needs to train it)."""
    return {
        "task": group.task,
        "batch_size": group.batch_size,
        "steps": group.steps,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        "clip": clip,
        "arm": "clip" if clip else "main",
    }


def tuning_specs(group: Group) -> List[Dict[str, Any]]:
    """The tuning runs of ``group``: ALTO and Lamb on the shared grid x tuning seeds; references on one seed."""
    specs = [spec(group, name, lr, seed) for name in COMPARED for lr in group.grid for seed in group.tuning_seeds]
    specs += [spec(group, name, lr, group.tuning_seeds[0]) for name, grid in group.references for lr in grid]
    return specs


def final_specs(group: Group, selected: Dict[str, float]) -> List[Dict[str, Any]]:
    """The final runs of ``group`` at the selected learning rates (optimizer -> lr), the clipping arm included."""
    names = list(COMPARED) + [name for name, _ in group.references]
    specs = [spec(group, name, selected[name], seed) for name in names for seed in group.seeds]
    if group.clip_arm:
        specs += [spec(group, name, selected[name], seed, CLIP_NORM) for name in COMPARED for seed in group.seeds]
    return specs


def final_run_count(group: Group) -> int:
    """How many final runs ``group`` has (known before the selection)."""
    return len(group.seeds) * (len(COMPARED) + len(group.references) + (len(COMPARED) if group.clip_arm else 0))


def new_final_run_count(group: Group) -> int:
    """How many final runs ``group`` trains beyond its tuning runs (the tuning seeds' runs are reused)."""
    extra = len([seed for seed in group.seeds if seed not in group.tuning_seeds])
    references = len([seed for seed in group.seeds if seed != group.tuning_seeds[0]])
    clip = len(COMPARED) * len(group.seeds) if group.clip_arm else 0
    return len(COMPARED) * extra + len(group.references) * references + clip


def higher_is_better(task: str) -> bool:
    """Accuracy (classification) is maximised, perplexity (LM) minimised."""
    return task != "lm"


def validation_metric(record: Dict[str, Any]) -> float:
    """The metric the tuning selects on: validation accuracy, or validation perplexity for the LM."""
    return record["val_perplexity"] if record["task"] == "lm" else record["val_accuracy"]


def test_metric(record: Dict[str, Any]) -> float:
    """The reported metric: test accuracy, or test perplexity for the LM."""
    return record["test_perplexity"] if record["task"] == "lm" else record["test_accuracy"]


def select(group: Group, records: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    """Selects each optimizer's learning rate from its tuning runs (mean validation metric over seeds).

    A diverged run counts as the worst possible value; ties go to the smaller learning rate.

    Args:
        group: the setting.
        records: run key -> record, holding at least the tuning runs of ``group``.

    Returns:
        optimizer -> selected learning rate.
    """
    better = higher_is_better(group.task)
    worst = float("-inf") if better else float("inf")
    chosen: Dict[str, float] = {}
    grids = [(name, group.grid, group.tuning_seeds) for name in COMPARED]
    grids += [(name, grid, group.tuning_seeds[:1]) for name, grid in group.references]
    for name, grid, seeds in grids:
        scores = []
        for lr in grid:
            values = []
            for seed in seeds:
                record = records[run_key(spec(group, name, lr, seed))]
                value = validation_metric(record)
                values.append(worst if record["diverged"] or value != value else value)
            scores.append(sum(values) / len(values))
        pick = (
            max(range(len(grid)), key=lambda i: (scores[i], -i))
            if better
            else min(range(len(grid)), key=lambda i: (scores[i], i))
        )
        chosen[name] = grid[pick]
    return chosen


@dataclasses.dataclass
class StudyConfig:
    """What the study runs. The defaults are the full study; ``quick_config()`` is the smoke-test size.

    Attributes:
        batch_sizes: MNIST-1D batch sizes.
        epochs: batch size -> epochs per run (steps = epochs x (training examples // batch size), the last
            partial batch of each epoch dropped).
        step_budgets: extra step budgets at the largest batch size (the step-budget axis; the epoch budget's
            step count is the axis' other point).
        n_train, n_val, n_test: MNIST-1D split sizes.
        hidden: hidden widths of the MLP.
        large_batch_grid, small_batch_grid: ALTO's and Lamb's learning rates from / below batch 4096.
        reference_grids: grids of the reference optimizers (used from batch ``references_from`` on).
        references_from: smallest batch size with reference optimizers.
        tuning_seeds: seeds of the tuning runs.
        seeds: final seeds at batch >= 4096 (``0 .. seeds-1``).
        small_seeds: final seeds below batch 4096.
        lm_batch_sizes: the language model's batch sizes (sequences per step).
        lm_steps: steps per language-model run.
        lm_seeds: the language model's final seeds.
        lm_grid, lm_reference_grids: the language model's grids.
        lm_size: ``(d_model, heads, layers, feed-forward width, context)``.
        lm_eval_windows: fixed windows of the validation and test texts the perplexity is measured on.
        jobs: worker processes.
        threads: torch threads per worker.
        progress: show a progress bar.
    """

    batch_sizes: Tuple[int, ...] = (128, 1024, 4096, 16384)
    epochs: Dict[int, int] = dataclasses.field(default_factory=lambda: {128: 1, 1024: 6, 4096: 25, 16384: 100})
    step_budgets: Tuple[int, ...] = (75, 150)
    n_train: int = 50_000
    n_val: int = 5_000
    n_test: int = 5_000
    hidden: Tuple[int, ...] = (64, 64)
    large_batch_grid: Tuple[float, ...] = LARGE_BATCH_GRID
    small_batch_grid: Tuple[float, ...] = SMALL_BATCH_GRID
    reference_grids: Dict[str, Tuple[float, ...]] = dataclasses.field(default_factory=lambda: dict(REFERENCE_GRIDS))
    references_from: int = 128
    tuning_seeds: Tuple[int, ...] = (0, 1)
    seeds: int = 5
    small_seeds: int = 5
    lm_batch_sizes: Tuple[int, ...] = (32, 64)
    lm_steps: int = 500
    lm_seeds: int = 3
    lm_grid: Tuple[float, ...] = LM_GRID
    lm_reference_grids: Dict[str, Tuple[float, ...]] = dataclasses.field(
        default_factory=lambda: dict(LM_REFERENCE_GRIDS)
    )
    lm_size: Tuple[int, int, int, int, int] = (32, 2, 1, 64, 32)
    lm_eval_windows: int = 256
    jobs: int = 2
    threads: int = 1
    progress: bool = True

    def steps_for(self, batch_size: int) -> int:
        """Steps of the epoch budget at ``batch_size``."""
        return self.epochs[batch_size] * max(1, self.n_train // batch_size)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first inconsistent setting."""
        if not self.batch_sizes and not self.lm_batch_sizes:
            raise ValueError("the study has no batch sizes (neither MNIST-1D nor LM)")
        for batch_size in self.batch_sizes:
            if batch_size not in self.epochs or self.epochs[batch_size] < 1:
                raise ValueError(f"batch size {batch_size} has no positive epoch budget in epochs={self.epochs}")
            if batch_size > self.n_train:
                raise ValueError(f"batch size {batch_size} exceeds the {self.n_train} training examples")
        if len(self.tuning_seeds) < 1 or self.seeds < len(self.tuning_seeds):
            raise ValueError(f"seeds={self.seeds} violates seeds >= len(tuning_seeds)={len(self.tuning_seeds)}")
        if min(self.small_seeds, self.lm_seeds) < len(self.tuning_seeds):
            raise ValueError("small_seeds and lm_seeds must cover the tuning seeds")
        if any(b < 1 for b in self.step_budgets) or self.lm_steps < 1:
            raise ValueError("step budgets must be positive")
        if (self.n_train + self.n_val + self.n_test) % 10:
            raise ValueError("n_train + n_val + n_test must be a multiple of 10 (the generator makes equal classes)")


def quick_config() -> StudyConfig:
    """The ``--quick`` study: two batch sizes, two seeds, a small data set and few epochs (about a minute)."""
    return StudyConfig(
        batch_sizes=(512, 4096),
        epochs={512: 2, 4096: 10},
        step_budgets=(10,),
        n_train=10_000,
        n_val=1_000,
        n_test=1_000,
        hidden=(32, 32),
        large_batch_grid=(3e-2, 1e-1),
        small_batch_grid=(1e-2, 3e-2),
        reference_grids={"AdamW": (1e-2,), "SGD": (0.3,)},
        references_from=4096,
        seeds=2,
        small_seeds=2,
        lm_batch_sizes=(4, 8),
        lm_steps=12,
        lm_seeds=2,
        lm_grid=(1e-2, 3e-2),
        lm_reference_grids={"AdamW": (3e-3,)},
        lm_size=(16, 2, 1, 32, 16),
        lm_eval_windows=16,
    )


def groups(config: StudyConfig) -> List[Group]:
    """The study's settings in the order they run: the largest batch first (where the paper makes its claim),
    then 4096, the step-budget axis, the language model and the small-batch arms last."""
    tuning = tuple(config.tuning_seeds)
    result: List[Group] = []
    largest = max(config.batch_sizes) if config.batch_sizes else None
    for batch_size in sorted(config.batch_sizes, reverse=True):
        large = batch_size >= LARGE_BATCH
        refs = (
            tuple((name, tuple(grid)) for name, grid in config.reference_grids.items())
            if batch_size >= config.references_from
            else ()
        )
        count = config.seeds if large else config.small_seeds
        group = Group(
            "mnist1d",
            batch_size,
            config.steps_for(batch_size),
            tuple(config.large_batch_grid if large else config.small_batch_grid),
            tuning,
            tuple(range(count)),
            refs,
            clip_arm=batch_size == largest,
        )
        result.append(group)
        if batch_size == largest:
            for steps in config.step_budgets:
                if steps != group.steps:
                    result.append(
                        Group("mnist1d", batch_size, steps, group.grid, tuning, group.seeds, label="step budget")
                    )
    lm = [
        Group(
            "lm",
            batch_size,
            config.lm_steps,
            tuple(config.lm_grid),
            tuning,
            tuple(range(config.lm_seeds)),
            tuple((name, tuple(grid)) for name, grid in config.lm_reference_grids.items()),
        )
        for batch_size in config.lm_batch_sizes
    ]
    large_groups = [g for g in result if g.batch_size >= LARGE_BATCH]
    small_groups = [g for g in result if g.batch_size < LARGE_BATCH]
    return large_groups + lm + small_groups
