"""The E adaptor: ``g~_k = g_k + alpha * EMA_beta1(g_k - g_{k-1})``."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

from valley_core import elementwise
from valley_core._namespace import resolve_namespace, scalar_zero
from valley_core.base import GradientTransformation, check_state_buffers, per_tensor, step_index
from valley_core.schedules import ScalarOrSchedule, evaluate


@per_tensor("carry")
class EState(NamedTuple):
    """State of the E adaptor.

    Attributes:
        count: number of steps taken (0-d int array).
        carry: one buffer per tensor, ``b_k = a_k - (1 - beta1) g_k`` (see ``elementwise.e_adaptor_step``).
    """

    count: Any
    carry: Tuple[Any, ...]


def e_adaptor(alpha: ScalarOrSchedule, beta1: float) -> GradientTransformation:
    """Adds ``alpha * a_k`` to the gradient, ``a_k`` the EMA of gradient differences.

    Maths (paper, Section 3)::

        a_k  = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1}),   a_0 = 0, g_0 = 0
        g~_k = g_k + alpha a_k

    ``a_k`` is not bias-corrected. It is stored in ONE buffer per tensor instead of two (``a`` and
    ``g_{k-1}``); ``tests/test_golden.py`` shows the two forms agree to float64 round-off.
    ``alpha = 0`` returns the gradient unchanged (``g + 0 * a`` is exact for finite ``a``).

    Args:
        alpha: float or schedule ``k -> alpha_k``. ``< 0`` explores (flatter minima), ``> 0`` exploits.
        beta1: in ``[0, 1)``. This transform does not check the stability rule; the named optimizers do.
    """

    def init(params: Sequence[Any], *, xp: Any = None) -> EState:
        xp = resolve_namespace(params, xp)
        return EState(scalar_zero(xp, params[0]), tuple(xp.zeros_like(p) for p in params))

    def update(grads: Sequence[Any], state: EState, params: Any = None, *, xp: Any = None):
        check_state_buffers("e_adaptor", grads, state.carry)
        xp = resolve_namespace(grads, xp)
        alpha_k = evaluate(alpha, step_index(state.count, grads[0], xp)) if callable(alpha) else alpha
        stepped = [elementwise.e_adaptor_step(g, b, alpha_k, beta1) for g, b in zip(grads, state.carry)]
        return (tuple(u for u, _ in stepped), EState(state.count + 1, tuple(b for _, b in stepped)))

    return GradientTransformation(init, update, "e_adaptor")
