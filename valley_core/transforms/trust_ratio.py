"""The layer-wise trust ratio of Lamb and ALTO."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from valley_core import elementwise, reductions
from valley_core._namespace import resolve_namespace
from valley_core.base import EmptyState, GradientTransformation
from valley_core.transforms.weight_decay import Mask, resolve_mask
from valley_core.validation import check_zero_norm_ratio


def scale_by_trust_ratio(
    trust_eps: float, norm_eps: float, mask: Mask = None, zero_norm_ratio: Optional[float] = 1.0
) -> GradientTransformation:
    """Scales each tensor's update by ``phi / (||r|| + trust_eps * phi)``, ``phi = ||theta|| + norm_eps``.

    This is the paper's form (Algorithms 1 and 2), the norms of the whole tensor ("layer"), with one documented
    deviation: where ``||theta|| = 0`` or ``||r|| = 0`` the ratio is ``zero_norm_ratio`` (default 1, as in
    Keras', optax's and the authors' Lamb/ALTO), so that zero-initialised tensors train. ``zero_norm_ratio=None``
    gives the paper's formula everywhere (see ``reductions.trust_ratio``).

    Args:
        trust_eps: the paper's eps2 (in the denominator).
        norm_eps: the paper's eps3 (added to ``||theta||``).
        mask: tensors where the ratio applies (``None``: all, as in the paper); elsewhere the update passes
            through unscaled.
        zero_norm_ratio: the ratio where a norm is zero (a float >= 0), or None for the paper's formula.
    """
    check_zero_norm_ratio(zero_norm_ratio)

    def init(params: Sequence[Any], *, xp: Any = None) -> EmptyState:
        return EmptyState()

    def update(grads: Sequence[Any], state: EmptyState, params: Any = None, *, xp: Any = None):
        if params is None:
            raise ValueError("scale_by_trust_ratio needs params")
        xp = resolve_namespace(grads, xp)
        selected = resolve_mask(mask, params, "scale_by_trust_ratio")
        updates = []
        for r, p, use in zip(grads, params, selected):
            if use:
                ratio = reductions.trust_ratio(
                    reductions.l2_norm(p, xp), reductions.l2_norm(r, xp), trust_eps, norm_eps, zero_norm_ratio, xp
                )
                r = elementwise.scale(r, ratio)
            updates.append(r)
        return tuple(updates), state

    return GradientTransformation(init, update, "scale_by_trust_ratio")
