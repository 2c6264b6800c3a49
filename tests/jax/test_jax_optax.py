"""``backends.jax`` as optax users use it: jit without retracing, checkpoints, masks, inject_hyperparams, errors."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import valley_core as vc
from backends import jax as bj
from tests.jax._problems import as_tree, problem, run_optax, treedef

_COMPILES: list = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None
)


def _jitted_step(transformation, traces):
    def step(tree, state, grads):
        traces.append(1)  # runs only while JAX traces the function
        updates, state = transformation.update(grads, state, tree)
        return optax.apply_updates(tree, updates), state

    return jax.jit(step)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bj.alto(learning_rate=optax.cosine_decay_schedule(1e-2, 50), alpha=-1.0, betas=(0.9, 0.9, 0.99)),
        lambda: bj.eadamw(alpha=lambda count: 0.5 / (1 + count)),
        lambda: bj.adam_cm(top_c=2),
        lambda: optax.inject_hyperparams(bj.alto)(learning_rate=1e-2, alpha=-1.0, betas=(0.9, 0.9, 0.99)),
        lambda: optax.chain(bj.e_adaptor(-0.5, 0.5), optax.sgd(1e-2, momentum=0.9)),
    ],
    ids=["alto-schedule", "eadamw-alpha-schedule", "adam_cm", "inject_hyperparams", "e_adaptor-chain"],
)
def test_jit_traces_the_step_once(make):
    params, grads = problem(12, seed=1)
    transformation = make()
    traces: list = []
    step = _jitted_step(transformation, traces)
    tree, state = as_tree(params), transformation.init(as_tree(params))
    gradient_trees = [as_tree(g) for g in grads]
    _COMPILES.clear()
    for g in gradient_trees:
        tree, state = step(tree, state, g)
    assert len(traces) == 1
    assert len(_COMPILES) == 1, "the step was compiled more than once"
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def test_jitted_init_gives_the_eager_state_and_one_compiled_step():
    params, grads = problem(5, seed=1)
    transformation = bj.alto(learning_rate=1e-2)
    eager = transformation.init(as_tree(params))
    state = jax.jit(transformation.init)(as_tree(params))
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    step = _jitted_step(transformation, [])
    tree = as_tree(params)
    _COMPILES.clear()
    for g in grads:
        tree, state = step(tree, state, as_tree(g))
    assert len(_COMPILES) == 1


def test_state_is_a_pytree_of_arrays_that_numpy_can_store(tmp_path):
    """What every checkpointer (orbax, flax.serialization, np.savez) needs: array leaves, a rebuildable tree."""
    params, grads = problem(3, seed=2)
    transformation = bj.eadam_cm(top_c=2)
    tree = as_tree(params)
    state = transformation.init(tree)
    _, state = jax.jit(transformation.update)(as_tree(grads[0]), state, tree)
    leaves, structure = jax.tree_util.tree_flatten(state)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    np.savez(tmp_path / "state.npz", *[np.asarray(leaf) for leaf in leaves])
    with np.load(tmp_path / "state.npz") as stored:
        restored = jax.tree_util.tree_unflatten(
            structure, [jnp.asarray(stored[f"arr_{i}"]) for i in range(len(leaves))]
        )
    for a, b in zip(leaves, jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_masks_as_pytree_and_as_callable_equal_the_core_with_flat_masks():
    params, grads = problem(20, seed=6)
    ndim = [np.ndim(p) for p in params]
    flat_decay, flat_trust = [n > 1 for n in ndim], [n != 1 for n in ndim]
    expected, _ = run_optax(
        bj.alto(
            weight_decay=1e-2,
            weight_decay_mask=treedef().unflatten(flat_decay),
            trust_ratio_mask=treedef().unflatten(flat_trust),
        ),
        params,
        grads,
    )
    by_callable, _ = run_optax(
        bj.alto(
            weight_decay=1e-2,
            weight_decay_mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p),
            trust_ratio_mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim != 1, p),
        ),
        params,
        grads,
    )
    unmasked, _ = run_optax(bj.alto(weight_decay=1e-2), params, grads)
    from tests.jax._problems import run_numpy_core

    core, _ = run_numpy_core(
        vc.alto(weight_decay=1e-2, weight_decay_mask=flat_decay, trust_ratio_mask=flat_trust), params, grads
    )
    for a, b, c, d in zip(*(jax.tree_util.tree_leaves(t) for t in (expected, by_callable, unmasked)), core):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(np.asarray(a), d, rtol=1e-12)
    assert any(not np.allclose(a, c) for a, c in zip(*(jax.tree_util.tree_leaves(t) for t in (expected, unmasked))))


@pytest.mark.parametrize(
    "mask,pattern",
    [
        ({"a": True}, r"weight_decay_mask's entries do not have the structure of the parameters"),
        ({"w": 1, "b": True}, r"weight_decay_mask: every entry must be a Python bool .* got int 1"),
        (lambda p: {"w": jnp.asarray(True), "b": False}, r"weight_decay_mask: every entry must be a Python bool"),
    ],
)
def test_bad_masks_raise_naming_the_mask(mask, pattern):
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    with pytest.raises(ValueError, match=pattern):
        bj.alto(weight_decay_mask=mask).init(params)


def test_inject_hyperparams_changes_the_learning_rate_between_jitted_steps_without_retracing():
    params, grads = problem(6, seed=7)
    injected = optax.inject_hyperparams(bj.alto)(learning_rate=1e-2, alpha=-1.0, betas=(0.9, 0.9, 0.99))
    traces: list = []
    step = _jitted_step(injected, traces)
    tree, state = as_tree(params), injected.init(as_tree(params))
    plain_tree, plain_state = run_optax(bj.alto(1e-2, alpha=-1.0, betas=(0.9, 0.9, 0.99)), params, grads[:3])
    for g in grads[:3]:
        tree, state = step(tree, state, as_tree(g))
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(plain_tree)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14)
    state.hyperparams["learning_rate"] = jnp.zeros_like(state.hyperparams["learning_rate"])
    frozen = tree
    for g in grads[3:]:
        tree, state = step(tree, state, as_tree(g))
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(frozen)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # lr = 0: nothing moves
    assert len(traces) == 1


def test_inject_hyperparams_with_adam_cm_needs_its_structural_settings_static():
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"^(top_c|decay)=Array\(.* violates (top_c|decay) is"):
        optax.inject_hyperparams(bj.adam_cm)(learning_rate=1e-3).init(params)
    static = ("top_c", "decay", "kappa", "critical_test")
    injected = optax.inject_hyperparams(bj.adam_cm, static_args=static)(learning_rate=1e-2, top_c=2)
    state = injected.init(params)
    for _ in range(3):
        updates, state = jax.jit(injected.update)(params, state, params)
        params = optax.apply_updates(params, updates)
    assert float(params["w"][0]) < 1.0


def test_inject_hyperparams_checks_concrete_values_at_init():
    with pytest.raises(ValueError, match=r"^lr=-0\.1 violates lr >= 0$"):
        optax.inject_hyperparams(bj.alto)(learning_rate=-0.1).init({"w": jnp.ones(2)})


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: bj.e_adaptor(alpha=3.0, beta1=0.5), r"^alpha=3\.0 violates \|alpha\| < 1/\(1-beta1\) = 2"),
        (lambda: bj.e_adaptor(alpha=0.5, beta1=1.0), r"^beta1=1\.0 violates 0 <= beta1 < 1$"),
    ],
)
def test_invalid_e_adaptor_hyperparameters_raise_the_cores_error(call, pattern):
    """(The optimizers' invalid inputs are the table's: ``test_jax_parity.py``.)"""
    with pytest.raises(ValueError) as error:
        call()
    assert re.search(pattern, str(error.value)), str(error.value)


def test_float32_parameters_get_float32_updates_and_learn():
    """Under x64 a float32 model stays float32 (updates in the gradients' dtype), and a quadratic is minimised."""
    transformation = bj.alto(learning_rate=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)
    params = {"w": jnp.asarray([3.0, -2.0], dtype=jnp.float32)}
    state = transformation.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(300):
        params, state = step(params, state)
    assert params["w"].dtype == jnp.float32
    assert float(jnp.max(jnp.abs(params["w"]))) < 0.1


def test_update_without_params_raises_when_the_core_needs_them():
    transformation = bj.alto()
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="needs params"):
        transformation.update(params, transformation.init(params))


def test_signature_is_the_cores_with_learning_rate():
    import inspect

    ours = inspect.signature(bj.alto).parameters
    core = inspect.signature(vc.alto).parameters
    assert list(ours) == ["learning_rate"] + list(core)[1:]
    assert all(ours[name].default == core[name].default for name in list(core)[1:])
    assert ours["learning_rate"].default == core["lr"].default
