"""The layer-wise trust ratio of Lamb and ALTO."""

from __future__ import annotations

from typing import Any, Sequence

from valley_core import elementwise, reductions
from valley_core._namespace import resolve_namespace
from valley_core.base import EmptyState, GradientTransformation
from valley_core.transforms.weight_decay import Mask, resolve_mask


def scale_by_trust_ratio(trust_eps: float, norm_eps: float, mask: Mask = None) -> GradientTransformation:
    """Scales each tensor's update by ``phi / (||r|| + trust_eps * phi)``, ``phi = ||theta|| + norm_eps``.

    This is the paper's form (Algorithms 1 and 2): the norms are of the whole tensor ("layer"), and the
    epsilons keep the ratio finite without special cases (see ``reductions.trust_ratio``).

    Args:
        trust_eps: the paper's eps2 (in the denominator).
        norm_eps: the paper's eps3 (added to ``||theta||``).
        mask: tensors where the ratio applies (``None``: all, as in the paper); elsewhere the update passes
            through unscaled.
    """

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
                    reductions.l2_norm(p, xp), reductions.l2_norm(r, xp), trust_eps, norm_eps
                )
                r = elementwise.scale(r, ratio)
            updates.append(r)
        return tuple(updates), state

    return GradientTransformation(init, update, "scale_by_trust_ratio")
