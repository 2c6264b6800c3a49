"""The learning rate: ``update = -lr_k * r_k``."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from valley_core import elementwise
from valley_core._namespace import resolve_namespace, scalar_zero
from valley_core.base import GradientTransformation, per_tensor, step_index
from valley_core.schedules import ScalarOrSchedule, evaluate


@per_tensor()
class LearningRateState(NamedTuple):
    """Attributes: ``count`` (steps taken; used by a learning-rate schedule)."""

    count: Any


def scale_by_learning_rate(lr: ScalarOrSchedule) -> GradientTransformation:
    """Returns ``-lr_k * r_k`` (a descent step once added to the parameters).

    Args:
        lr: float or schedule ``k -> lr_k`` (``k`` the 1-based step index).
    """

    def init(params: Sequence[Any], *, xp: Any = None) -> LearningRateState:
        xp = resolve_namespace(params, xp)
        return LearningRateState(scalar_zero(xp, params[0]))

    def update(grads: Sequence[Any], state: LearningRateState, params: Any = None, *, xp: Any = None):
        xp = resolve_namespace(grads, xp)
        rate = evaluate(lr, step_index(state.count, grads[0], xp)) if callable(lr) else lr
        return tuple(elementwise.scale(r, -rate) for r in grads), LearningRateState(state.count + 1)

    return GradientTransformation(init, update, "scale_by_learning_rate")
