"""Transforms as pure ``(init, update)`` pairs, their composition, and applying updates.

A transform maps gradients to updates and carries a small state:

    state = transform.init(params)
    updates, state = transform.update(grads, state, params)
    params = apply_updates(params, updates)

``params``, ``grads`` and ``updates`` are sequences of arrays of ONE array-API namespace. Nothing is written
in place: every call returns new arrays, so a failed step can never leave a state half-updated.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

from valley_core._namespace import resolve_namespace

Arrays = Tuple[Any, ...]


def per_tensor(
    *fields: str, nonnegative: Tuple[str, ...] = (), float32_only: Optional[str] = None
) -> Callable[[type], type]:
    """Declares, on a state type, which of its fields hold one array per tensor (in the tensors' order), and
    the properties of its state that adapters rely on.

    The other fields are scalars (step counters). Adapters that give the state another shape or storage read
    these declarations (``per_tensor_fields``, ``field_properties``) instead of keeping lists of names: the JAX
    adapter turns the per-tensor fields into pytrees shaped like the parameters, torch's compact state stores a
    ``nonnegative`` field with an unsigned code and refuses to compact a ``float32_only`` state.

    Args:
        *fields: the per-tensor fields.
        nonnegative: the per-tensor fields that are never negative (Adam's second moment).
        float32_only: why the state must stay float32 (rounding it would change the maths), or None.
    """
    if not set(nonnegative) <= set(fields):
        raise ValueError(f"per_tensor: nonnegative fields {sorted(set(nonnegative) - set(fields))} are not per tensor")

    def declare(state_type: type) -> type:
        setattr(state_type, "__per_tensor_fields__", tuple(fields))
        setattr(state_type, "__state_properties__", (frozenset(nonnegative), float32_only))
        _DECLARED[state_type.__name__] = state_type
        return state_type

    return declare


#: The state types that declared their fields, by class name (the prefix of the core's state keys).
_DECLARED: Dict[str, type] = {}


class FieldProperties(NamedTuple):
    """What a state field declares (``per_tensor``): never negative, and why it must stay float32 (or None)."""

    nonnegative: bool = False
    float32_only: Optional[str] = None


def field_properties(key: str) -> FieldProperties:
    """The properties of the state field named ``key`` as the core names it (``"AdamState.second"``, an index
    suffix allowed). A state type that declares nothing (a user's own) gets the defaults: may be negative, may be
    stored compactly."""
    state_name, _, rest = key.partition(".")
    state_type = _DECLARED.get(state_name)
    if state_type is None:
        return FieldProperties()
    nonnegative, float32_only = getattr(state_type, "__state_properties__")
    return FieldProperties(rest.split(".")[0] in nonnegative, float32_only)


def per_tensor_fields(state: Any) -> Optional[Tuple[str, ...]]:
    """The per-tensor fields a transform's state type declares (``per_tensor``), or None if it declares
    none (a user's own transform: by the core's layout, its tuple-valued fields are the per-tensor ones)."""
    return getattr(type(state), "__per_tensor_fields__", None)


@per_tensor()
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
        check_update_inputs(grads, params)
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


def check_state_buffers(name: str, grads: Sequence[Any], buffers: Sequence[Any]) -> None:
    """Raises ``ValueError`` when a transform's per-tensor state does not fit the gradients it is given.

    The one check of a state against the tensors, called by every transform that keeps per-tensor buffers
    (``buffers`` is one field of its state, a buffer per tensor shaped like it): the counts must be equal, and
    so must the shapes, which the element-wise maths would otherwise broadcast (a state built for a ``(1,)``
    tensor would silently grow to ``(3,)``). Only ``.shape`` is read, so traced tensors pass (``jax.jit``,
    ``tf.function``, ``torch.compile``); a dimension not known yet (``None``) matches any size. Gradients are
    checked against the parameters by ``check_update_inputs``, so the message names the parameter.
    """
    if len(grads) != len(buffers):
        raise ValueError(f"{name}: got {len(grads)} gradients for a state built for {len(buffers)} tensors")
    for index, (grad, buffer) in enumerate(zip(grads, buffers)):
        if buffer.shape != grad.shape and not _shapes_compatible(buffer.shape, grad.shape):
            raise ValueError(
                f"{name}: the state of tensor {index} has shape {tuple(buffer.shape)} but parameter {index} has "
                f"shape {tuple(grad.shape)}; the state was built for other parameters (init it with these)"
            )


def check_update_inputs(grads: Sequence[Any], params: Sequence[Any] | None) -> None:
    """Raises ``ValueError`` when ``params`` (if given) do not pair one to one, shape for shape, with ``grads``.

    Called once per update by ``chain`` (every named optimizer is one): the element-wise maths would
    otherwise broadcast a ``(3, 3)`` gradient against a ``(3,)`` parameter, and ``zip`` would drop the
    tensors of the longer sequence. Only ``.shape`` is read, so symbolic tensors (``torch.compile``,
    ``tf.function``, ``jax.jit``) pass; a dimension that is not known yet (``None``) matches any size.
    """
    if params is None:
        return
    if len(params) != len(grads):
        raise ValueError(f"update: got {len(grads)} gradients but {len(params)} params; they must pair one to one")
    for index, (grad, param) in enumerate(zip(grads, params)):
        if grad.shape != param.shape and not _shapes_compatible(grad.shape, param.shape):
            raise ValueError(
                f"update: grads[{index}] has shape {tuple(grad.shape)} but params[{index}] has shape "
                f"{tuple(param.shape)}; a gradient must have its parameter's shape (nothing is broadcast)"
            )


def _shapes_compatible(first: Any, second: Any) -> bool:
    """Equal ranks and sizes, where a size not known yet (``None``, or a shape of unknown rank) matches any."""
    try:
        first, second = tuple(first), tuple(second)
    except (TypeError, ValueError):  # TensorFlow's shape of unknown rank has no length
        return True
    return len(first) == len(second) and all(a is None or b is None or a == b for a, b in zip(first, second))


def step_index(count: Any, like: Any, xp: Any) -> Any:
    """The 1-based index ``k`` of the step being taken, as a 0-d array of ``like``'s floating dtype."""
    return xp.astype(count + 1, like.dtype)
