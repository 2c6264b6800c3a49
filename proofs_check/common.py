"""What every check shares: the run context, the result record, fits and figure saving."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

import valley_core as vc
from proofs_check.runners import Stepper, make_stepper

#: The core optimizers the checks run, by their ``valley_core.REGISTRY`` names (what ``Context.stepper`` takes).
ALTO, ALTO_VANILLA, LAMB, EADAM, ADAM, ESGD, SGD = (
    vc.info_for(f).name for f in (vc.alto, vc.alto_vanilla, vc.lamb, vc.eadam, vc.adam, vc.esgd, vc.sgd)
)

PASS = "PASS"
FAIL = "FAIL"
#: the third verdict: the claim's assumptions do not hold on the problems tried, or the control fails the same
#: way, so the measurement says nothing about the claim either way (exit code 0).
NOT_TESTABLE = "NOT TESTABLE HERE - ASSUMPTIONS NOT MET"
VERDICTS = (PASS, FAIL, NOT_TESTABLE)


@dataclasses.dataclass
class Check:
    """One pass/fail criterion of a claim, decided by a fixed threshold.

    A check that ``applies`` is scored: it is in the regime the claim's assumptions cover and its control
    behaves differently. One that does not (``applies=False``, with the reason in ``not_applicable``) is
    measured and reported but cannot make the claim FAIL.

    Attributes:
        description: what is compared, in words.
        value: the measured number (or a short string of numbers).
        threshold: the rule, e.g. ``"<= 0.6"``.
        passed: whether ``value`` satisfies ``threshold``.
        statistic: the paired statistics behind the decision (``stats.paired``), when it compares a method
            with its control over seeds or starts.
        applies: whether the claim's assumptions hold where this check measures (and the control differs).
        not_applicable: why not, in a few words, when ``applies`` is False.
    """

    description: str
    value: Any
    threshold: str
    passed: bool
    statistic: Optional[Dict[str, Any]] = None
    applies: bool = True
    not_applicable: str = ""


def verdict_of(checks: Sequence[Check]) -> str:
    """FAIL when a check that applies fails; NOT TESTABLE when no check applies; else PASS."""
    scored = [c for c in checks if c.applies]
    if any(not c.passed for c in scored):
        return FAIL
    return PASS if scored else NOT_TESTABLE


def reason_of(checks: Sequence[Check]) -> str:
    """One line: why :func:`verdict_of` gives its verdict."""
    scored = [c for c in checks if c.applies]
    outside = [c for c in checks if not c.applies]
    failed = [c for c in scored if not c.passed]
    if failed:
        first = failed[0]
        return (
            f"{len(failed)} of {len(scored)} scored checks contradict the claim where its assumptions hold, "
            f"first: {first.description} = {fmt(first.value)} (needs {first.threshold})."
        )
    if not scored:
        why = list(dict.fromkeys(part for c in outside for part in c.not_applicable.split("; ") if part))
        more = f" (and {len(why) - 2} more)" if len(why) > 2 else ""
        return f"no check is in the claim's regime: {'; '.join(why[:2]) or 'assumptions not met'}{more}."
    text = f"all {len(scored)} scored checks pass where the assumptions hold"
    if outside:
        why = list(dict.fromkeys(part for c in outside for part in c.not_applicable.split("; ") if part))[:2]
        passed = sum(c.passed for c in outside)
        text += f"; {len(outside)} measured outside them ({passed} would pass) are not scored: {'; '.join(why)}"
    return text + "."


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
    sweep: Dict[str, Any] = dataclasses.field(default_factory=dict)
    size_note: str = ""
    summary: str = ""

    @property
    def verdict(self) -> str:
        """PASS, FAIL or NOT TESTABLE HERE (:func:`verdict_of` over the checks)."""
        return verdict_of(self.checks)

    @property
    def reason(self) -> str:
        """The verdict's one-line reason: the claim's own summary (what held where), then the rule's reason."""
        text = f"{self.summary} {reason_of(self.checks)}".strip() if self.summary else reason_of(self.checks)
        return f"{text} Quick size: {self.size_note}" if self.size_note else text

    def paired_statistics(self) -> List[Dict[str, Any]]:
        """Every paired comparison with the control: the checks' statistics, then the further ones."""
        return [c.statistic for c in self.checks if c.statistic] + list(self.statistics)

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
            "reason": self.reason,
            "sweep": to_jsonable(self.sweep),
            "paired_statistics": to_jsonable(self.paired_statistics()),
            "size_note": self.size_note,
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
        plant_problem: tests only: ``(claim, problem) -> problem`` applied to the problem a check builds (see
            each claim), to plant one whose assumptions do not hold and see the third verdict.
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
        plant_problem: Optional[Callable[[str, Any], Any]] = None,
    ) -> None:
        self.backend = backend
        self.quick = quick or tiny
        self.tiny = tiny
        self.seed = seed
        self.out_dir = out_dir
        self._progress = progress
        self.plant = plant
        self.plant_problem = plant_problem
        self.paths: Dict[str, None] = {}

    def stepper(self, name: str, params: Sequence[np.ndarray], **hyperparameters: Any) -> Stepper:
        """An optimizer on this context's backend; its code path is recorded for the report."""
        if self.plant is not None:
            name, hyperparameters = self.plant(name, dict(hyperparameters))
        stepper = make_stepper(self.backend, name, params, **hyperparameters)
        self.paths.setdefault(stepper.path, None)
        return stepper

    def problem(self, claim: str, problem: Any) -> Any:
        """``problem``, or the planted one in tests (``plant_problem``)."""
        return problem if self.plant_problem is None else self.plant_problem(claim, problem)

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
