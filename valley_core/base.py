"""Transforms as pure ``(init, update)`` pairs, their composition, and applying updates.

A transform maps gradients to updates and carries a small state:

    state = transform.init(params)
    updates, state = transform.update(grads, state, params)
    params = apply_updates(params, updates)

``params``, ``grads`` and ``updates`` are sequences of arrays of ONE array-API namespace. Nothing is written
in place: every call returns new arrays, so a failed step can never leave a state half-updated.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence, Tuple

from valley_core._namespace import resolve_namespace

Arrays = Tuple[Any, ...]


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""


class GradientTransformation(NamedTuple):
    """A pure pair of functions.

    Attributes:
        init: ``init(params, *, xp=None) -> state``.
        update: ``update(grads, state, params=None, *, xp=None) -> (updates, new_state)``.
        name: a readable name, used in error messages.
    """

    init: Callable[..., Any]
    update: Callable[..., Tuple[Arrays, Any]]
    name: str = "transform"


def chain(*transforms: GradientTransformation, name: str = "chain") -> GradientTransformation:
    """Composes transforms left to right; the state is the tuple of their states.

    Example:
        >>> import numpy as np
        >>> from valley_core import chain, scale_by_adam, scale_by_learning_rate, apply_updates
        >>> opt = chain(scale_by_adam(0.9, 0.999, 1e-8), scale_by_learning_rate(0.1))
        >>> params = (np.array([1.0, -2.0]),)
        >>> state = opt.init(params)
        >>> for _ in range(200):
        ...     updates, state = opt.update(tuple(2 * p for p in params), state, params)
        ...     params = apply_updates(params, updates)
        >>> bool(np.abs(params[0]).max() < 0.05)
        True
    """
    if not transforms:
        raise ValueError("chain() needs at least one transform")

    def init(params: Sequence[Any], *, xp: Any = None) -> tuple:
        xp = resolve_namespace(params, xp)
        return tuple(t.init(params, xp=xp) for t in transforms)

    def update(
        grads: Sequence[Any], state: tuple, params: Sequence[Any] | None = None, *, xp: Any = None
    ) -> Tuple[Arrays, tuple]:
        if len(state) != len(transforms):
            raise ValueError(f"{name}: state has {len(state)} entries, expected {len(transforms)}")
        xp = resolve_namespace(grads, xp)
        updates = tuple(grads)
        new_state = []
        for transform, inner in zip(transforms, state):
            updates, inner = transform.update(updates, inner, params, xp=xp)
            new_state.append(inner)
        return updates, tuple(new_state)

    return GradientTransformation(init, update, name)


def apply_updates(params: Sequence[Any], updates: Sequence[Any]) -> Arrays:
    """``params + updates``, tensor by tensor (new arrays; nothing is modified)."""
    if len(params) != len(updates):
        raise ValueError(f"apply_updates: {len(params)} params but {len(updates)} updates")
    return tuple(p + u for p, u in zip(params, updates))


def check_same_length(name: str, grads: Sequence[Any], buffers: Sequence[Any]) -> None:
    """Raises a clear error when the gradients do not match the state the transform was built for."""
    if len(grads) != len(buffers):
        raise ValueError(f"{name}: got {len(grads)} gradients for a state built for {len(buffers)} tensors")


def step_index(count: Any, like: Any, xp: Any) -> Any:
    """The 1-based index ``k`` of the step being taken, as a 0-d array of ``like``'s floating dtype."""
    return xp.astype(count + 1, like.dtype)
