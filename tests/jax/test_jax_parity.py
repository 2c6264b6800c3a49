"""``backends.jax`` under ``jax.jit`` in float64 equals the NumPy core: every record of ``tests/optimizers.py`` that
JAX claims, 120 steps, params and state; at ``alpha = 0`` optax's own optimizers; resume; invalid inputs.

The NumPy core (``valley_core`` with ``xp=numpy``) is the ground truth; the JAX door runs the same core functions on
``jax.numpy`` inside XLA, so the two agree to float64 round-off (the record's float64 tolerance, relative per
tensor).
"""

from __future__ import annotations

import inspect
import pickle

import jax
import numpy as np
import optax
import pytest

import valley_core as vc
from backends import jax as bj
from tests.core.helpers import relative_error, to_numpy
from tests.jax._problems import (
    as_tree,
    core_schedule_on_optax_count,
    leaf_shapes,
    problem,
    run_numpy_core,
    run_optax,
    treedef,
)
from tests.optimizers import cases

STEPS = 120
MASKS = ("weight_decay_mask", "trust_ratio_mask")


def _jax(case, **overrides):
    """The record as ``backends.jax`` takes it: ``learning_rate``, schedules on optax's count, masks as pytrees."""
    kwargs = {**case.kwargs("jax"), **overrides}
    kwargs["learning_rate"] = kwargs.pop("lr", 1e-3)
    shapes = [np.zeros(s) for s in leaf_shapes()]
    for key, value in kwargs.items():
        if key in MASKS and value is not None:
            kwargs[key] = treedef().unflatten(list(value(shapes) if callable(value) else value))
        elif callable(value):
            kwargs[key] = core_schedule_on_optax_count(value)
    return bj.OPTIMIZERS[case.name](**kwargs)


@pytest.mark.parametrize("case", cases("jax"))
def test_jit_float64_equals_numpy_core_params_and_state(case):
    params, grads = problem(STEPS, seed=3)
    expected_params, expected_state = run_numpy_core(case.make(), params, grads)
    tree, state = run_optax(_jax(case), params, grads, jit=True)
    rtol, _ = case.tolerance("float64")
    for index, (actual, expected) in enumerate(zip(jax.tree_util.tree_leaves(tree), expected_params)):
        assert str(actual.dtype) == "float64"
        assert relative_error(actual, expected) <= rtol, f"leaf {index}"
        assert relative_error(expected, params[index]) > 1e-4, "the run must move every tensor"
    actual_flat = vc.state_to_dict(bj.core_state(state, tree))
    expected_flat = vc.state_to_dict(expected_state)
    assert sorted(actual_flat) == sorted(expected_flat)
    for key, expected in expected_flat.items():
        if key.endswith(".count"):
            assert int(actual_flat[key]) == int(expected) == STEPS, key
        else:
            assert relative_error(actual_flat[key], expected) <= rtol, key


@pytest.mark.parametrize("case", cases("jax"))
def test_resume_from_a_pickled_state_equals_the_uninterrupted_run(case):
    params, grads = problem(20, seed=2)
    tree, state = run_optax(_jax(case), params, grads)
    resumed, resumed_state = run_optax(_jax(case), params, grads[:9])
    resumed, resumed_state = pickle.loads(pickle.dumps((resumed, resumed_state)))
    fresh = _jax(case)
    step = jax.jit(lambda t, s, g: (lambda u, s: (optax.apply_updates(t, u), s))(*fresh.update(g, s, t)))
    for g in grads[9:]:
        resumed, resumed_state = step(resumed, resumed_state, as_tree(g))
    for a, b in zip(jax.tree_util.tree_leaves((tree, state)), jax.tree_util.tree_leaves((resumed, resumed_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("case", cases("jax", where=lambda c: bool(c.invalid)))
def test_invalid_hyperparameters_raise_the_cores_error_at_construction(case):
    for overrides, message in case.invalid:
        with pytest.raises(ValueError, match=message):
            _jax(case, **overrides)


def _optax_builtin(case):
    """optax's optimizer of the record's base (of the record itself for a base), with its hyperparameters."""
    defaults = {k: p.default for k, p in inspect.signature(vc.OPTIMIZERS[case.name]).parameters.items()}
    name, hp = case.base or (case.name, {**defaults, **case.hyperparameters})
    b1, b2 = hp["betas"]
    if callable(hp["lr"]):  # a core schedule (step k from 1) on optax's count (from 0)
        hp = {**hp, "lr": core_schedule_on_optax_count(hp["lr"])}
    if name == "adam":
        assert hp["weight_decay"] == 0  # optax.adam has no L2 decay
        return optax.adam(hp["lr"], b1=b1, b2=b2, eps=hp["eps"])
    return getattr(optax, name)(hp["lr"], b1=b1, b2=b2, eps=hp["eps"], weight_decay=hp["weight_decay"])


@pytest.mark.parametrize("case", cases("jax", "optax"))
def test_alpha_zero_equals_optax_builtin(case):
    """At ``alpha = 0`` (and ``trust_eps = norm_eps = 0`` for Lamb) the maths is optax's own: equal to round-off;
    at the record's alpha the trajectory is not optax's (guards the comparison)."""
    trust_ratio = "trust_eps" in inspect.signature(vc.OPTIMIZERS[case.name]).parameters
    lamb = {"trust_eps": 0.0, "norm_eps": 0.0} if trust_ratio else {}
    params, grads = problem(STEPS, seed=5)
    reference, _ = run_optax(_optax_builtin(case), params, grads)
    runs = (({"alpha": 0.0}, True), ({}, False)) if case.base else (({}, True),)
    for overrides, same in runs:
        mine, _ = run_optax(_jax(case, **overrides, **lamb), params, grads)
        pairs = list(zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(reference)))
        worst = max(relative_error(a, to_numpy(b)) for a, b in pairs)
        assert worst <= 1e-12 if same else worst > 1e-4, worst
    for expected, start in zip(jax.tree_util.tree_leaves(reference), params):
        assert relative_error(to_numpy(expected), start) > 1e-3


def test_e_adaptor_in_front_of_optax_adamw_equals_eadamw():
    """``optax.chain(bj.e_adaptor, optax.adamw)`` is EAdamW: the door's E adaptor against the core's EAdamW."""
    params, grads = problem(STEPS, seed=4)
    expected_params, _ = run_numpy_core(
        vc.eadamw(lr=1e-2, alpha=-1.0, betas=(0.7, 0.9, 0.999), eps=1e-8, weight_decay=1e-2), params, grads
    )
    chained = optax.chain(
        bj.e_adaptor(alpha=-1.0, beta1=0.7), optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2)
    )
    tree, _ = run_optax(chained, params, grads)
    for actual, expected in zip(jax.tree_util.tree_leaves(tree), expected_params):
        assert relative_error(actual, expected) <= 1e-10
