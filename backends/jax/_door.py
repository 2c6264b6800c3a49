"""The door between optax and ``valley_core``: pytrees in, the core's update over their leaves, pytrees out.

optax transformations take pytrees (nested dicts, lists, dataclasses of arrays); the core takes a flat
sequence of arrays of one namespace. ``optax_transformation`` flattens the parameters, gradients and masks
with one tree structure, runs the core transform with ``xp=jax.numpy`` over the leaves, and rebuilds the
updates with that structure. The core's state (NamedTuples of tuples of arrays) is already a pytree, so it is
the optax state as it is: ``jax.jit``, ``pickle`` and any checkpointer that stores pytrees take it.

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
            raise ValueError("init: the parameters contain no arrays")
        with _int32_is_enough():
            state = core_for(params, treedef).init(tuple(leaves), xp=XP)
        return _placed_like(leaves, state)

    def update(updates: Any, state: Any, params: Any = None) -> Tuple[Any, Any]:
        grad_leaves, treedef = jax.tree_util.tree_flatten(updates)
        param_leaves = None if params is None else tuple(leaves_of(params, treedef, "params"))
        transform = core_for(updates if params is None else params, treedef)
        with _int32_is_enough():
            new_leaves, new_state = transform.update(tuple(grad_leaves), state, param_leaves, xp=XP)
        in_grad_dtypes = [jnp.asarray(u, dtype=g.dtype) for u, g in zip(new_leaves, grad_leaves)]
        return jax.tree_util.tree_unflatten(treedef, in_grad_dtypes), new_state

    return optax.GradientTransformation(init, update)


def optax_signature(core_factory: Callable[..., Any]) -> inspect.Signature:
    """The core factory's signature with ``lr`` spelled ``learning_rate`` (optax's name), same defaults."""
    parameters = [
        parameter.replace(name="learning_rate") if parameter.name == "lr" else parameter
        for parameter in inspect.signature(core_factory).parameters.values()
    ]
    return inspect.Signature(parameters, return_annotation="optax.GradientTransformation")
