"""``jax.grad`` through unrolled ``bj.alto`` / ``bj.lamb`` updates is finite for zero-initialised leaves.

Issue 23 item 7: meta-gradients (a learned learning rate, gradients w.r.t. the initial parameters) were NaN,
because the trust ratio's ``||theta||`` at a leaf of zeros went through ``sqrt``'s infinite derivative.
``optax.lamb`` (whose ``safe_norm`` guards it) is the external reference: at ``alpha = 0`` and
``trust_eps = norm_eps = weight_decay = 0`` ``bj.lamb`` is the same maths, so its meta-gradients must agree.
The forward values must be those of the old formula (``jnp.linalg.vector_norm``) bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import valley_core as vc
from backends import jax as bj

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(6, 3)))
Y = jnp.asarray(RNG.normal(size=(6, 2)))
ZEROS = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}

MAKERS = {
    "alto": lambda lr: bj.alto(lr, alpha=-1.0, betas=(0.5, 0.9, 0.99)),
    "alto-paper-ratio": lambda lr: bj.alto(lr, alpha=-1.0, betas=(0.5, 0.9, 0.99), zero_norm_ratio=None),
    "lamb-as-optax": lambda lr: bj.lamb(lr, weight_decay=0.0, trust_eps=0.0, norm_eps=0.0),
    "optax.lamb": lambda lr: optax.lamb(lr, b1=0.9, b2=0.99, eps=1e-6, weight_decay=0.0),
}


def _loss(params):
    return jnp.mean((X @ params["w"] + params["b"] - Y) ** 2)


def _unrolled(params, lr, make, steps=3):
    transformation = make(lr)
    state = transformation.init(params)
    for _ in range(steps):
        updates, state = transformation.update(jax.grad(_loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return _loss(params)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_meta_gradients_are_finite_for_zero_initial_leaves(name):
    by_params, by_lr = jax.jit(jax.grad(_unrolled, argnums=(0, 1)), static_argnums=2)(ZEROS, 1e-2, MAKERS[name])
    leaves = jax.tree_util.tree_leaves(by_params)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves), by_params
    assert any(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in leaves)
    assert np.isfinite(float(by_lr)) and float(by_lr) != 0


def test_lamb_meta_gradients_equal_optax_lamb():
    meta_gradient = jax.jit(jax.grad(_unrolled), static_argnums=2)
    ours = meta_gradient(ZEROS, 1e-2, MAKERS["lamb-as-optax"])
    theirs = meta_gradient(ZEROS, 1e-2, MAKERS["optax.lamb"])
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,jit", [(jnp.float32, True), (jnp.float64, True), (jnp.float64, False)], ids=["f32-jit", "f64-jit", "f64"]
)
def test_forward_values_are_the_old_formulas_bit_for_bit(dtype, jit):
    """The door (portable, guarded norm) against the core run on ``jax.numpy`` itself, whose
    ``linalg.vector_norm`` is the norm before the fix: parameters and state equal bit for bit."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (5,), (7, 2, 3)]
    params = tuple(jnp.asarray(rng.normal(size=s), dtype) for s in shapes)
    params = (params[0], jnp.zeros(5, dtype), params[2])  # a zero leaf: the ratio's fallback branch too
    grads = [tuple(jnp.asarray(rng.normal(size=s), dtype) for s in shapes) for _ in range(6)]
    old, new = vc.alto(1e-2, alpha=-1.0, betas=(0.5, 0.9, 0.99)), bj.alto(1e-2, alpha=-1.0, betas=(0.5, 0.9, 0.99))

    def old_step(p, s, g):
        updates, s = old.update(g, s, p, xp=jnp)
        return vc.apply_updates(p, updates), s

    def new_step(p, s, g):
        updates, s = new.update(g, s, p)
        return optax.apply_updates(p, updates), s

    if jit:
        old_step, new_step = jax.jit(old_step), jax.jit(new_step)
    a, state_a = params, old.init(params, xp=jnp)
    b, state_b = params, new.init(params)
    for g in grads:
        a, state_a = old_step(a, state_a, g)
        b, state_b = new_step(b, state_b, g)
    for x, y in zip(jax.tree_util.tree_leaves((a, state_a)), jax.tree_util.tree_leaves((b, state_b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(b[1]), np.zeros(5))
