"""Adam's moment estimates and direction ``m^ / (sqrt(v^) + eps)``."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

from valley_core import elementwise
from valley_core._namespace import resolve_namespace, scalar_zero
from valley_core.base import GradientTransformation, check_state_buffers, per_tensor, step_index


@per_tensor("first", "second", nonnegative=("second",))
class AdamState(NamedTuple):
    """Attributes: ``count`` (steps taken), ``first`` (m, one per tensor), ``second`` (v, one per tensor)."""

    count: Any
    first: Tuple[Any, ...]
    second: Tuple[Any, ...]


def scale_by_adam(beta2: float, beta3: float, eps: float, bias_correction: bool = True) -> GradientTransformation:
    """Replaces ``u_k`` by Adam's direction.

    Maths::

        m_k = beta2 m_{k-1} + (1 - beta2) u_k
        v_k = beta3 v_{k-1} + (1 - beta3) u_k^2
        r_k = m^_k / (sqrt(v^_k) + eps),   m^ = m / (1 - beta2^k),  v^ = v / (1 - beta3^k)

    Without bias correction (``bias_correction=False``, ALTO's Algorithm 1) ``m^ = m`` and ``v^ = v``.
    ``eps`` is added outside the square root (as in Adam and the paper).
    """

    def init(params: Sequence[Any], *, xp: Any = None) -> AdamState:
        xp = resolve_namespace(params, xp)
        return AdamState(
            scalar_zero(xp, params[0]), tuple(xp.zeros_like(p) for p in params), tuple(xp.zeros_like(p) for p in params)
        )

    def update(grads: Sequence[Any], state: AdamState, params: Any = None, *, xp: Any = None):
        check_state_buffers("scale_by_adam", grads, state.first)
        xp = resolve_namespace(grads, xp)
        directions, firsts, seconds = [], [], []
        for u, m, v in zip(grads, state.first, state.second):
            correction2, correction3 = elementwise.bias_corrections(
                beta2, beta3, step_index(state.count, u, xp), bias_correction
            )
            m, v = elementwise.adam_moments(u, m, v, beta2, beta3)
            directions.append(elementwise.adam_direction(m, v, eps, correction2, correction3, xp))
            firsts.append(m)
            seconds.append(v)
        return tuple(directions), AdamState(state.count + 1, tuple(firsts), tuple(seconds))

    return GradientTransformation(init, update, "scale_by_adam")
