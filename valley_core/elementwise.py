"""The element-wise arithmetic of every transform, as pure functions of arrays and scalars.

These functions are the definition. The transforms in ``valley_core.transforms`` call them tensor by tensor;
a backend may instead compile or fuse them (``torch.compile``, XLA, CuPy kernels), which is allowed because
the parity suite checks the result against the transforms. Reductions (norms) live in
``valley_core.reductions``, so that each function here touches every element independently.

Scalars (``alpha``, ``beta*``, ``eps``, bias corrections, ``lr``) may be Python floats or 0-d arrays.
"""

from __future__ import annotations

from typing import Any, Tuple


def e_adaptor_step(grad: Any, carry: Any, alpha: Any, beta1: float) -> Tuple[Any, Any]:
    """One step of the E adaptor in its one-buffer form.

    The direct form keeps ``a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1})`` and ``g_{k-1}``. The carry
    ``b_k = a_k - (1 - beta1) g_k`` holds the same information in one buffer::

        a_k     = b_k + (1 - beta1) g_k
        u_k     = g_k + alpha a_k
        b_{k+1} = beta1 a_k - (1 - beta1) g_k

    Args:
        grad: ``g_k``.
        carry: ``b_k`` (zeros before the first step, so that ``a_1 = (1 - beta1) g_1``).
        alpha: the exploration coefficient (``< 0`` explores, ``> 0`` exploits).
        beta1: persistence of the EMA of gradient differences.

    Returns:
        ``(u_k, b_{k+1})``: the adapted gradient and the next carry.
    """
    one_minus_beta1 = 1.0 - beta1
    ema = carry + one_minus_beta1 * grad
    return grad + alpha * ema, beta1 * ema - one_minus_beta1 * grad


def adam_moments(update: Any, first: Any, second: Any, beta2: float, beta3: float) -> Tuple[Any, Any]:
    """``m_k = beta2 m + (1 - beta2) u`` and ``v_k = beta3 v + (1 - beta3) u^2``."""
    return beta2 * first + (1.0 - beta2) * update, beta3 * second + (1.0 - beta3) * (update * update)


def adam_direction(first: Any, second: Any, eps: float, correction2: Any, correction3: Any, xp: Any) -> Any:
    """``m^ / (sqrt(v^) + eps)`` with ``m^ = m / correction2`` and ``v^ = v / correction3``.

    ``correction2 = 1 - beta2**k`` and ``correction3 = 1 - beta3**k`` with bias correction, ``1.0`` without.
    """
    return (first / correction2) / (xp.sqrt(second / correction3) + eps)


def bias_corrections(beta2: float, beta3: float, k: Any, enabled: bool) -> Tuple[Any, Any]:
    """``(1 - beta2**k, 1 - beta3**k)``, or ``(1.0, 1.0)`` when bias correction is off."""
    if not enabled:
        return 1.0, 1.0
    return 1.0 - beta2**k, 1.0 - beta3**k


def heavy_ball(update: Any, momentum_buffer: Any, beta: float) -> Any:
    """``m_k = beta m_{k-1} + u_k`` (``beta = 0`` is plain SGD)."""
    return beta * momentum_buffer + update


def add_decay(update: Any, param: Any, weight_decay: Any) -> Any:
    """``u + lambda * theta``."""
    return update + weight_decay * param


def scale(update: Any, factor: Any) -> Any:
    """``factor * u`` (the trust ratio, or ``-lr``)."""
    return factor * update
