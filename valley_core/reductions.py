"""The reductions of a step (norms), kept apart from the element-wise arithmetic."""

from __future__ import annotations

from typing import Any


def l2_norm(array: Any, xp: Any) -> Any:
    """The Euclidean norm of a whole tensor, as a 0-d array.

    ``xp.linalg.vector_norm`` where the namespace has one (NumPy, torch: its own summation, and torch defines
    the norm's gradient at 0 as 0); otherwise the portable form ``sqrt(sum(x * x))`` through ``safe_sqrt``,
    whose gradient at a tensor of zeros is 0 instead of NaN (``sqrt``'s derivative at 0 is infinite). The
    portable form is what the JAX adapter runs (``jax.numpy``'s ``vector_norm`` is the same arithmetic
    without the guard) and what the fast paths trace (``backends.kernels``).
    """
    linalg = getattr(xp, "linalg", None)
    if linalg is not None and hasattr(linalg, "vector_norm"):
        return linalg.vector_norm(array)
    return safe_sqrt(xp.sum(array * array), xp)


def safe_sqrt(value: Any, xp: Any) -> Any:
    """``sqrt(value)`` for ``value >= 0`` (or NaN), with a finite gradient (0) where ``value = 0``.

    The double ``where``: the square root is taken of 1 where ``value <= 0`` and the result replaced by 0
    there, so no infinite derivative meets a zero cotangent (``inf * 0 = NaN`` in reverse-mode autodiff).
    The values are ``sqrt(value)``'s bit for bit: ``sqrt(0) = 0``, and a NaN fails ``<= 0`` and propagates.
    Only comparisons, ``where`` and ``sqrt``, so the fast paths' tracer records it.
    """
    zero = value <= 0
    return xp.where(zero, value, xp.sqrt(xp.where(zero, value + 1, value)))


def trust_ratio(
    param_norm: Any,
    update_norm: Any,
    trust_eps: float,
    norm_eps: float,
    zero_norm_ratio: Any = None,
    xp: Any = None,
) -> Any:
    """The layer-wise trust ratio: the paper's ``phi / (||r|| + trust_eps * phi)``, ``phi = ||theta|| + norm_eps``,
    where both norms are positive, and ``zero_norm_ratio`` where either is zero (``None``: the paper's formula
    everywhere; ``xp`` is needed otherwise).

    Why the zero-norm rule: under the paper's formula a tensor that starts at exactly zero (every bias,
    LayerNorm's shift) moves by about ``lr * norm_eps`` (1e-13) per step, so it never trains. Keras', optax's
    and pytorch-optimizer's Lamb and the authors' own ALTO use a ratio of 1 there; so do the named optimizers
    by default (``zero_norm_ratio=1.0``). Where both norms are positive the two agree bit for bit.

    Only comparisons, ``where`` and arithmetic on arrays, so that every executor's generated code (traced by
    ``backends.kernels``) computes exactly this.
    """
    phi = param_norm + norm_eps
    if zero_norm_ratio is None:
        return phi / (update_norm + trust_eps * phi)
    # Where ||r|| = 0 the denominator is replaced (by 1) so that trust_eps = 0 cannot divide by zero there.
    denominator = xp.where(update_norm > 0, update_norm + trust_eps * phi, update_norm + 1)
    fallback = update_norm * 0 + zero_norm_ratio  # the constant as an array like the norms (exact for finite norms)
    return xp.where(param_norm > 0, xp.where(update_norm > 0, phi / denominator, fallback), fallback)
