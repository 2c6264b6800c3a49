"""Shared problems for the JAX tests: a nested pytree of parameters, drifting gradients, the NumPy core run."""

from __future__ import annotations

import array_api_compat.numpy as np_xp
import jax
import jax.numpy as jnp
import numpy as np

import valley_core as vc
from tests.core import transcription as golden
from tests.core.helpers import run_core

#: A nested pytree: dict keys sort, so the leaves' order is dense.b, dense.w, norm.scale, conv.
SHAPES = {"dense": {"w": (3, 4), "b": (5,)}, "norm": {"scale": (4,)}, "conv": (2, 2, 3)}


def treedef():
    return jax.tree_util.tree_structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def leaf_shapes():
    return jax.tree_util.tree_leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def problem(steps, seed=0):
    """``(params, grads)``: lists of float64 NumPy leaves (params) and of leaf lists (one per step)."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in leaf_shapes()]
    return params, golden.drifting_gradients(leaf_shapes(), steps, seed + 1)


def as_tree(leaves, dtype=jnp.float64):
    return jax.tree_util.tree_unflatten(treedef(), [jnp.asarray(x, dtype=dtype) for x in leaves])


def run_optax(transformation, params, grads, jit=True, dtype=jnp.float64):
    """Runs an optax transformation over the pytree form of ``params`` and ``grads``; returns (params, state)."""
    tree = as_tree(params, dtype)
    state = transformation.init(tree)

    def step(tree, state, g):
        updates, state = transformation.update(g, state, tree)
        return jax.tree_util.tree_map(lambda p, u: p + u, tree, updates), state

    step = jax.jit(step) if jit else step
    for g in grads:
        tree, state = step(tree, state, as_tree(g, dtype))
    return tree, state


def run_numpy_core(core_transform, params, grads):
    return run_core(core_transform, params, grads, np_xp)


def core_schedule_on_optax_count(schedule):
    """A core schedule (1-based step ``k``) in optax's convention (0-based update count)."""
    return lambda count: schedule(count + 1)


__all__ = ["vc"]
