"""Weight decay added to the update: ``u + lambda * theta`` on the tensors the mask selects."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from valley_core import elementwise
from valley_core._namespace import resolve_namespace, scalar_zero
from valley_core.base import GradientTransformation, per_tensor, step_index
from valley_core.schedules import ScalarOrSchedule, evaluate

Mask = Optional[Union[Sequence[bool], Callable[[Sequence[Any]], Sequence[bool]]]]


def resolve_mask(mask: Mask, params: Sequence[Any], what: str) -> tuple:
    """The per-tensor booleans of ``mask`` (``None`` selects every tensor)."""
    if mask is None:
        return (True,) * len(params)
    values = mask(params) if callable(mask) else mask
    values = tuple(values)
    if len(values) != len(params):
        raise ValueError(f"{what}: mask has {len(values)} entries for {len(params)} tensors")
    if not all(isinstance(v, bool) for v in values):
        raise ValueError(f"{what}: mask entries must be bools, got {values!r}")
    return values


@per_tensor()
class WeightDecayState(NamedTuple):
    """Attributes: ``count`` (steps taken; used by a weight-decay schedule)."""

    count: Any


def add_decayed_weights(weight_decay: ScalarOrSchedule, mask: Mask = None) -> GradientTransformation:
    """``u_k + lambda_k * theta_k`` for the tensors where ``mask`` is True.

    Where it sits in a chain decides its meaning: before ``scale_by_adam`` it is L2 regularisation (Adam's
    ``weight_decay``); after it, decoupled decay (AdamW); before the trust ratio, Lamb's decay inside ``r``.

    Args:
        weight_decay: float or schedule ``k -> lambda_k``.
        mask: ``None`` (every tensor), a sequence of bools, or a callable ``params -> sequence of bools``.
    """

    def init(params: Sequence[Any], *, xp: Any = None) -> WeightDecayState:
        xp = resolve_namespace(params, xp)
        return WeightDecayState(scalar_zero(xp, params[0]))

    def update(grads: Sequence[Any], state: WeightDecayState, params: Any = None, *, xp: Any = None):
        if params is None:
            raise ValueError("add_decayed_weights needs params")
        xp = resolve_namespace(grads, xp)
        selected = resolve_mask(mask, params, "add_decayed_weights")
        decay = (
            evaluate(weight_decay, step_index(state.count, grads[0], xp)) if callable(weight_decay) else weight_decay
        )
        updates = tuple(elementwise.add_decay(u, p, decay) if use else u for u, p, use in zip(grads, params, selected))
        return updates, WeightDecayState(state.count + 1)

    return GradientTransformation(init, update, "add_decayed_weights")
