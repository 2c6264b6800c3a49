"""The reductions of a step (norms), kept apart from the element-wise arithmetic."""

from __future__ import annotations

from typing import Any


def l2_norm(array: Any, xp: Any) -> Any:
    """The Euclidean norm of a whole tensor, as a 0-d array."""
    linalg = getattr(xp, "linalg", None)
    if linalg is not None and hasattr(linalg, "vector_norm"):
        return linalg.vector_norm(array)
    return xp.sqrt(xp.sum(array * array))


def trust_ratio(param_norm: Any, update_norm: Any, trust_eps: float, norm_eps: float) -> Any:
    """The paper's layer-wise trust ratio ``phi / (||r|| + trust_eps * phi)`` with ``phi = ||theta|| + norm_eps``.

    Deviation from most Lamb implementations: no special case when ``||theta|| = 0`` or ``||r|| = 0``; the
    epsilons keep it finite. A zero-initialised tensor therefore moves by about ``lr * norm_eps`` per step
    under the trust ratio: exclude such tensors (biases) with the trust-ratio mask.
    """
    phi = param_norm + norm_eps
    return phi / (update_norm + trust_eps * phi)
