"""Hyperparameters that change with the step number.

``lr``, ``alpha`` and ``weight_decay`` accept a float or a schedule: a callable ``k -> value`` where ``k`` is
the 1-based index of the step being taken. ``k`` is a 0-d floating array of the parameters' namespace (in
the core) or a Python number (in adapters that keep the step on the host), so a schedule must use only
arithmetic operators (``k ** -0.5``), never ``math`` or ``numpy`` functions. The built-ins below follow
that rule.
"""

from __future__ import annotations

from typing import Any, Callable, Union

Schedule = Callable[[Any], Any]
ScalarOrSchedule = Union[float, Schedule]


def inverse_sqrt(value: float) -> Schedule:
    """``k -> value / sqrt(k)``: the schedule of the paper's convex theorem (for lr, alpha and lambda)."""

    def schedule(k: Any) -> Any:
        return value * k**-0.5

    schedule.__qualname__ = f"inverse_sqrt({value!r})"
    return schedule


def exponential_decay(value: float, rate: float) -> Schedule:
    """``k -> value * rate ** k``: the weight-decay schedule ``lambda * (1 - mu) ** k`` of the non-convex theorem."""

    def schedule(k: Any) -> Any:
        return value * rate**k

    schedule.__qualname__ = f"exponential_decay({value!r}, {rate!r})"
    return schedule


def evaluate(value: ScalarOrSchedule, k: Any) -> Any:
    """The value of a float-or-schedule hyperparameter at step ``k`` (1-based)."""
    return value(k) if callable(value) else value
