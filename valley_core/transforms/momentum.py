"""Heavy-ball momentum."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

from valley_core import elementwise
from valley_core._namespace import resolve_namespace
from valley_core.base import GradientTransformation, check_state_buffers, per_tensor


@per_tensor("momentum")
class TraceState(NamedTuple):
    """Attributes: ``momentum`` (one buffer per tensor)."""

    momentum: Tuple[Any, ...]


def trace(beta: float) -> GradientTransformation:
    """``m_k = beta m_{k-1} + u_k``; returns ``m_k``. ``beta = 0`` passes ``u_k`` through (plain SGD).

    This is PyTorch's SGD momentum without dampening: from ``m_0 = 0`` the first step returns ``u_1``.
    """

    def init(params: Sequence[Any], *, xp: Any = None) -> TraceState:
        xp = resolve_namespace(params, xp)
        return TraceState(tuple(xp.zeros_like(p) for p in params))

    def update(grads: Sequence[Any], state: TraceState, params: Any = None, *, xp: Any = None):
        check_state_buffers("trace", grads, state.momentum)
        momentum = tuple(elementwise.heavy_ball(u, m, beta) for u, m in zip(grads, state.momentum))
        return momentum, TraceState(momentum)

    return GradientTransformation(init, update, "trace")
