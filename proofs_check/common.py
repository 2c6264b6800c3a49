"""What every check shares: the run context, the result record, fits and figure saving."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from proofs_check.runners import Stepper, make_stepper


@dataclasses.dataclass
class Check:
    """One pass/fail criterion of a claim, decided by a threshold fixed before the run.

    Attributes:
        description: what is compared, in words.
        value: the measured number (or a short string of numbers).
        threshold: the rule, e.g. ``"<= 0.6"``.
        passed: whether ``value`` satisfies ``threshold``.
        statistic: the paired statistics behind the decision (``stats.paired``), when it compares a method
            with its control over seeds or starts.
    """

    description: str
    value: Any
    threshold: str
    passed: bool
    statistic: Optional[Dict[str, Any]] = None


@dataclasses.dataclass
class ClaimResult:
    """The record of one claim: what the paper says, what was tested (controls, regime, statistics), what was
    enforced, what was measured, the verdict and its explanation."""

    name: str
    title: str
    statement: str
    assumptions: List[str]
    evidence: Dict[str, Any]
    checks: List[Check]
    plots: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)
    runner_paths: List[str] = dataclasses.field(default_factory=list)
    runtime_s: float = 0.0
    tested: str = ""
    controls: List[str] = dataclasses.field(default_factory=list)
    regime: List[str] = dataclasses.field(default_factory=list)
    statistics: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    explanation: str = ""

    @property
    def verdict(self) -> str:
        """``"PASS"`` when every check passed, else ``"FAIL"``."""
        return "PASS" if self.checks and all(c.passed for c in self.checks) else "FAIL"

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "statement": self.statement,
            "tested": self.tested,
            "controls": self.controls,
            "regime": self.regime,
            "statistics": to_jsonable(self.statistics),
            "explanation": self.explanation,
            "assumptions": self.assumptions,
            "evidence": to_jsonable(self.evidence),
            "checks": [to_jsonable(dataclasses.asdict(c)) for c in self.checks],
            "verdict": self.verdict,
            "plots": self.plots,
            "notes": self.notes,
            "runner_paths": self.runner_paths,
            "runtime_s": round(self.runtime_s, 2),
        }


class Context:
    """How the checks run: backend, mode, seed, output folder and progress reporting.

    Args:
        backend: ``"numpy"``, ``"torch"`` or ``"cupy"``.
        quick: the small version of every check.
        seed: base seed; every check derives its own generators from it.
        out_dir: where plots go.
        progress: a callable ``(iterable, total, desc) -> iterable`` (a tqdm wrapper) or None.
        plant: tests only: ``(name, hyperparameters) -> (name, hyperparameters)`` applied to every optimizer
            a check asks for, to plant a wrong optimizer and see the verdict flip.
        tiny: tests only: the smallest sizes (``pick``'s ``tiny`` argument, else its ``quick`` one).
    """

    def __init__(
        self,
        backend: str = "numpy",
        quick: bool = True,
        seed: int = 0,
        out_dir: str = ".",
        progress: Optional[Callable[..., Iterable]] = None,
        plant: Optional[Callable[[str, Dict[str, Any]], tuple]] = None,
        tiny: bool = False,
    ) -> None:
        self.backend = backend
        self.quick = quick or tiny
        self.tiny = tiny
        self.seed = seed
        self.out_dir = out_dir
        self._progress = progress
        self.plant = plant
        self.paths: Dict[str, None] = {}

    def stepper(self, name: str, params: Sequence[np.ndarray], **hyperparameters: Any) -> Stepper:
        """An optimizer on this context's backend; its code path is recorded for the report."""
        if self.plant is not None:
            name, hyperparameters = self.plant(name, dict(hyperparameters))
        stepper = make_stepper(self.backend, name, params, **hyperparameters)
        self.paths.setdefault(stepper.path, None)
        return stepper

    def take_paths(self) -> List[str]:
        """The code paths used since the last call (for one claim's record)."""
        paths = list(self.paths)
        self.paths = {}
        return paths

    def rng(self, *key: int) -> np.random.Generator:
        """A generator seeded by the base seed and ``key`` (independent streams per use)."""
        return np.random.default_rng([self.seed, *key])

    def progress(self, iterable: Iterable, total: Optional[int] = None, desc: str = "") -> Iterable:
        if self._progress is None:
            return iterable
        return self._progress(iterable, total=total, desc=desc)

    def pick(self, quick: Any, full: Any, tiny: Any = None) -> Any:
        """``quick`` in quick mode, ``full`` otherwise (``tiny``, when given, in the tests' tiny mode)."""
        if self.tiny and tiny is not None:
            return tiny
        return quick if self.quick else full


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (points with non-positive values are dropped)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def to_jsonable(value: Any) -> Any:
    """Converts NumPy scalars/arrays (nested in dicts and lists) to plain JSON types; floats rounded to 6 s.f."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not np.isfinite(value):
            return str(value)
        return float(f"{value:.6g}")
    return value


def fmt(value: Any) -> str:
    """A short human form of a number (4 significant figures) or of a list of numbers."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def figure() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(ctx: Context, fig: Any, filename: str) -> str:
    """Saves ``fig`` as a compact PNG under the context's output folder; returns the file name."""
    plt = figure()
    os.makedirs(ctx.out_dir, exist_ok=True)
    fig.savefig(os.path.join(ctx.out_dir, filename), dpi=80, bbox_inches="tight")
    plt.close(fig)
    return filename
