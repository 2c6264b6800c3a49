"""The door between optax and ``valley_core``: pytrees in, the core's update over their leaves, pytrees out.

optax transformations take pytrees (nested dicts, lists, dataclasses of arrays); the core takes a flat
sequence of arrays of one namespace. ``optax_transformation`` flattens the parameters, gradients and masks
with one tree structure, runs the core transform with ``xp=jax.numpy`` over the leaves, and rebuilds the
updates with that structure.

The state is shaped like the parameters, as optax's own (``optax.adamw``'s ``mu`` and ``nu``): the core's
state NamedTuples are kept, and each per-tensor field (declared on the core's state type,
``valley_core.base.per_tensor_fields``) holds a pytree with the parameters' structure instead of the core's
tuple over the leaves; step counters stay 0-d arrays. So path-based sharding rules,
``optax.tree_utils.tree_map_params`` and flax.nnx's metadata (``nnx.Optimizer`` copies a parameter's
sharding onto the state leaves of its tree position) treat it as they treat optax's. ``update`` also takes
the layout of valley 0.1.0 (tuples over the leaves, e.g. from an old pickle) and returns the new one.

Nothing about the maths is decided here; the adapter converts and places things only:

* masks: optax's form (a pytree of bools shaped like the parameters, or a callable ``params -> pytree``)
  becomes the core's tuple of bools over the leaves;
* schedules: optax calls a schedule with the 0-based count of updates already applied; the core calls it
  with the 1-based index ``k`` of the step being taken, as a float. A callable hyperparameter is wrapped so
  that an optax schedule receives ``k - 1`` as an int32 count, as it would inside optax;
* updates are returned in each gradient leaf's dtype (a hyperparameter injected as a float64 array by
  ``optax.inject_hyperparams`` under ``jax_enable_x64`` would otherwise promote float32 updates);
* placement: the state sits where the parameters are (``_JaxNumpyForSharding``, ``_placed_like``), so
  sharded parameters get sharded state and a jitted step compiles once.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import valley_core as vc
from valley_core.base import per_tensor_fields

#: The core's mask arguments; each takes optax's forms here.
MASK_ARGUMENTS = ("weight_decay_mask", "trust_ratio_mask")


class _JaxNumpyForSharding:
    """``jax.numpy`` as the core's ``xp``, except where the core places new arrays beside a sharded parameter.

    The core creates its step counters and small constants with ``asarray(..., device=)`` and Adam+CM's
    stacks of momenta ``(top_c, *shape)`` and priorities ``(top_c,)`` with ``zeros(..., device=)``, ``device``
    being the device of a parameter (the array-API way to keep state beside the parameters; buffers shaped
    like a parameter come from ``zeros_like`` and keep its sharding by themselves). For a parameter sharded
    over several devices JAX reports its ``NamedSharding`` as that device, whose partition spec is written for
    the parameter's rank. Here ``asarray`` replicates over the same mesh, and ``zeros`` shards a stack of
    tensors like the tensor (``PartitionSpec(None, *spec)``; rank >= 2) and replicates the rank-1 arrays.
    Everything else is ``jax.numpy``.
    """

    #: No ``linalg``: the core's norm then takes its portable form ``sqrt(sum(x * x))`` with a gradient guarded
    #: at 0 (``valley_core.reductions.safe_sqrt``). ``jnp.linalg.vector_norm`` is the same arithmetic
    #: (``sqrt(sum(x * conj(x)))``, the same values bit for bit) but its gradient at a tensor of zeros is NaN,
    #: which made every meta-gradient through a zero-initialised leaf NaN.
    linalg = None

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)

    @staticmethod
    def _replicated(device: Any) -> Any:
        if isinstance(device, jax.sharding.NamedSharding):
            return jax.sharding.NamedSharding(device.mesh, jax.sharding.PartitionSpec())
        return device

    def asarray(self, obj: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        return jnp.asarray(obj, dtype=dtype, device=self._replicated(device), copy=copy)

    def zeros(self, shape: Any, dtype: Any = None, device: Any = None) -> Any:
        rank = len(shape) if isinstance(shape, (tuple, list)) else 1
        if isinstance(device, jax.sharding.NamedSharding) and rank >= 2:  # a stack of tensors (rank >= 1)
            device = jax.sharding.NamedSharding(device.mesh, jax.sharding.PartitionSpec(None, *device.spec))
        else:  # priorities, or the stack of a 0-d tensor (whose spec is empty anyway)
            device = self._replicated(device)
        return jnp.zeros(shape, dtype=dtype, device=device)


XP = _JaxNumpyForSharding()


def leaves_of(tree: Any, treedef: Any, what: str) -> list:
    """The leaves of ``tree`` in the order of ``treedef`` (the parameters' structure), or a clear error."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{what} do not have the structure of the parameters ({treedef}): {error}") from None


def mask_leaves(mask: Any, params: Any, treedef: Any, what: str) -> Tuple[bool, ...] | None:
    """optax's mask (pytree of bools, or a callable ``params -> pytree of bools``) as one bool per leaf."""
    if mask is None:
        return None
    tree = mask(params) if callable(mask) else mask
    values = leaves_of(tree, treedef, f"{what}'s entries")
    flags = []
    for value in values:
        if isinstance(value, (bool, np.bool_)):
            flags.append(bool(value))
        else:
            raise ValueError(
                f"{what}: every entry must be a Python bool (known when the step is traced), got "
                f"{type(value).__name__} {value!r}"
            )
    return tuple(flags)


def _schedule_on_optax_count(schedule: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A core schedule ``k -> value`` (1-based float ``k``) calling an optax schedule with ``count = k - 1``."""

    def core_schedule(k: Any) -> Any:
        if isinstance(k, (int, float)):  # the validator evaluates schedules at step 1 with a Python number
            with jax.ensure_compile_time_eval():  # a concrete value even while the step is being traced
                return schedule(int(k) - 1)
        return schedule(jnp.asarray(jnp.round(k) - 1, dtype=jnp.int32))

    core_schedule.__qualname__ = f"optax_count({getattr(schedule, '__qualname__', schedule)!r})"
    return core_schedule


def core_arguments(arguments: Dict[str, Any]) -> Dict[str, Any]:
    """The hyperparameters as the core takes them (``learning_rate`` -> ``lr``; optax schedules adapted)."""
    converted = {}
    for name, value in arguments.items():
        name = "lr" if name == "learning_rate" else name
        if callable(value) and name not in MASK_ARGUMENTS:
            value = _schedule_on_optax_count(value)
        converted[name] = value
    return converted


@contextlib.contextmanager
def _int32_is_enough():
    """Silences JAX's note that int64 is unavailable without ``jax_enable_x64``.

    The core asks for int64 slot indices and step counts (Adam+CM's buffer); JAX then gives int32, which
    holds every slot index and any step count below 2**31.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Explicitly requested dtype int64", category=UserWarning)
        yield


def _placed_like(param_leaves: list, state: Any) -> Any:
    """The state with no leaf committed to a device when no parameter is.

    The core creates its step counters on the first parameter's device, which commits them in JAX, while
    its buffers (``zeros_like``) follow the parameters. A jitted step given such a mix as its first state
    and its own committed outputs afterwards compiles twice; uncommitting the counters (0-d, a host round
    trip) makes the first state look like every later one.
    """
    if any(isinstance(leaf, jax.core.Tracer) for leaf in param_leaves):
        return state  # init is being traced (jax.jit(opt.init)): jit places its outputs
    if any(getattr(leaf, "committed", False) for leaf in param_leaves):
        return state
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(np.asarray(leaf)) if getattr(leaf, "committed", False) else leaf, state
    )


def _map_states(state: Any, change: Callable[[Any], Any]) -> Any:
    """``change`` applied to every transform state (NamedTuple) of a chained state (nested tuples)."""
    if hasattr(state, "_fields"):
        return change(state)
    if isinstance(state, tuple):
        return tuple(_map_states(inner, change) for inner in state)
    return state


def shaped_like_params(state: Any, treedef: Any) -> Any:
    """The core's state with every per-tensor field (a tuple over the leaves) as a pytree of ``treedef``."""

    def change(transform_state: Any) -> Any:
        fields = per_tensor_fields(transform_state) or ()
        return transform_state._replace(**{f: treedef.unflatten(getattr(transform_state, f)) for f in fields})

    return _map_states(state, change)


def _field_leaves(value: Any, treedef: Any, where: str) -> tuple:
    """A per-tensor field as the core's tuple over the leaves: from the parameters' structure, or as it is
    when it is valley 0.1.0's layout (a tuple with one array per leaf)."""
    try:
        leaves = treedef.flatten_up_to(value)
    except (ValueError, TypeError):
        leaves = None
    if leaves is not None and not any(isinstance(leaf, (tuple, list)) for leaf in leaves):
        return tuple(leaves)
    if isinstance(value, tuple) and len(value) == treedef.num_leaves:
        return value  # the 0.1.0 layout (a tuple over the leaves, in the parameters' leaf order)
    raise ValueError(
        f"state field {where} does not have the structure of the parameters ({treedef}); was the state built "
        f"by this optimizer's init for these parameters?"
    )


def core_layout(state: Any, treedef: Any) -> Any:
    """The state as the core takes it: every per-tensor field a tuple over the leaves of ``treedef``."""

    def change(transform_state: Any) -> Any:
        fields = per_tensor_fields(transform_state) or ()
        name = type(transform_state).__name__
        return transform_state._replace(
            **{f: _field_leaves(getattr(transform_state, f), treedef, f"{name}.{f}") for f in fields}
        )

    return _map_states(state, change)


def optax_transformation(build: Callable[..., vc.GradientTransformation], arguments: Dict[str, Any]):
    """An ``optax.GradientTransformation`` running ``build(**arguments)`` over the leaves of pytrees.

    Args:
        build: a ``valley_core`` factory taking the core's hyperparameter names.
        arguments: its arguments as the caller gave them (``learning_rate``, optax masks and schedules).
            They are validated now, by ``build`` (the core's validator): a bad value raises here.

    Returns:
        ``optax.GradientTransformation(init, update)``; ``update(updates, state, params=None)``.
    """
    arguments = core_arguments(arguments)
    masks = {name: arguments.pop(name) for name in MASK_ARGUMENTS if name in arguments}
    build(**arguments)  # validate now (a traced array is checked where it is concrete: at init)

    def core_for(tree: Any, treedef: Any) -> vc.GradientTransformation:
        # optax calls a mask callable with the parameters (or, as optax.masked does, the updates: same shapes).
        resolved = {name: mask_leaves(mask, tree, treedef, name) for name, mask in masks.items()}
        return build(**arguments, **resolved)

    def init(params: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if not leaves:
            return _structure_without_arrays(treedef)
        with _int32_is_enough():
            state = core_for(params, treedef).init(tuple(leaves), xp=XP)
        return shaped_like_params(_placed_like(leaves, state), treedef)

    def _structure_without_arrays(treedef: Any) -> Any:
        # Parameters without arrays (``{}``, or optax.tree_utils.tree_map_params's placeholder): the state's
        # structure, its per-tensor fields shaped like the (empty) parameters. A stand-in 0-d tensor gives the
        # structure; masks do not change it.
        with _int32_is_enough():
            state = build(**arguments).init((jnp.zeros(()),), xp=XP)
        empty = treedef.unflatten([])
        return _map_states(state, lambda s: s._replace(**{f: empty for f in per_tensor_fields(s) or ()}))

    def update(updates: Any, state: Any, params: Any = None) -> Tuple[Any, Any]:
        grad_leaves, treedef = jax.tree_util.tree_flatten(updates)
        if not grad_leaves:
            raise ValueError("update: the gradients contain no arrays")
        param_leaves = None if params is None else tuple(leaves_of(params, treedef, "params"))
        transform = core_for(updates if params is None else params, treedef)
        core_state = core_layout(state, treedef)
        with _int32_is_enough():
            new_leaves, new_state = transform.update(tuple(grad_leaves), core_state, param_leaves, xp=XP)
        in_grad_dtypes = [jnp.asarray(u, dtype=g.dtype) for u, g in zip(new_leaves, grad_leaves)]
        return jax.tree_util.tree_unflatten(treedef, in_grad_dtypes), shaped_like_params(new_state, treedef)

    return optax.GradientTransformation(init, update)


def core_state(state: Any, params: Any) -> Any:
    """The state of a ``backends.jax`` optimizer in the core's layout: every per-tensor field a tuple over the
    leaves of ``params`` (in ``jax.tree_util`` leaf order), as ``valley_core.state_to_dict`` names them.
    Takes the layout of valley 0.1.0 too."""
    return core_layout(state, jax.tree_util.tree_structure(params))


def state_like_params(state: Any, params: Any) -> Any:
    """The state with every per-tensor field shaped like ``params``: converts a state of valley 0.1.0's layout
    (tuples over the leaves, e.g. from an old pickle or checkpoint) to today's; today's is returned as it is.
    ``update`` accepts both layouts, so this is needed only where the structure matters before the first step
    (a checkpointer's target, sharding rules)."""
    treedef = jax.tree_util.tree_structure(params)
    return shaped_like_params(core_layout(state, treedef), treedef)


def optax_signature(core_factory: Callable[..., Any]) -> inspect.Signature:
    """The core factory's signature with ``lr`` spelled ``learning_rate`` (optax's name), same defaults."""
    parameters = [
        parameter.replace(name="learning_rate") if parameter.name == "lr" else parameter
        for parameter in inspect.signature(core_factory).parameters.values()
    ]
    return inspect.Signature(parameters, return_annotation="optax.GradientTransformation")
