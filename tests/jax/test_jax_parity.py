"""``backends.jax`` under ``jax.jit`` in float64 equals the NumPy core: every optimizer, 120 steps, params and state.

The NumPy core (``valley_core`` with ``xp=numpy``) is the ground truth; the JAX door runs the same core
functions on ``jax.numpy`` inside XLA, so the two agree to float64 round-off, which the tests bound at 1e-12
relative per tensor. The configurations are the core table's (``tests/core/optimizer_table.py``) plus masks,
weight decay and Adam+CM.
"""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from backends import jax as bj
from tests.core.helpers import relative_error, to_numpy
from tests.core.optimizer_table import CONFIGS
from tests.jax._problems import core_schedule_on_optax_count, problem, run_numpy_core, run_optax

STEPS = 120
TOLERANCE = 1e-12

EXTRA = {
    "alto_decay_masks": (
        "alto",
        dict(lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-2),
        dict(weight_decay_mask=[False, True, True, False], trust_ratio_mask=[False, True, True, True]),
    ),
    "lamb_decay": ("lamb", dict(lr=1e-2, weight_decay=1e-2), {}),
    "eadamw_decay": ("eadamw", dict(lr=1e-2, alpha=0.5, weight_decay=1e-2), {}),
    "eadam_l2": ("eadam", dict(lr=1e-2, weight_decay=1e-3), {}),
    "adam_cm": ("adam_cm", dict(lr=1e-2, top_c=3, weight_decay=1e-3), {}),
    "adam_cm_unsynced_overwrite": ("adam_cm", dict(lr=1e-2, top_c=2, synced=False, critical_test=1.0), {}),
    "eadam_cm": ("eadam_cm", dict(lr=1e-2, alpha=-0.5, betas=(0.5, 0.9, 0.999), top_c=4), {}),
}
TABLE = {**{key: (name, kwargs, {}) for key, (name, kwargs) in CONFIGS.items()}, **EXTRA}


def _masks_as_tree(masks):
    """The flat test masks as pytrees shaped like the parameters (optax's form)."""
    from tests.jax._problems import treedef

    return {name: treedef().unflatten(values) for name, values in masks.items()}


def _jax_arguments(kwargs):
    converted = dict(kwargs)
    lr = converted.pop("lr")
    converted["learning_rate"] = core_schedule_on_optax_count(lr) if callable(lr) else lr
    return converted


@pytest.mark.parametrize("config_id", sorted(TABLE))
def test_jit_float64_equals_numpy_core_params_and_state(config_id):
    name, kwargs, masks = TABLE[config_id]
    params, grads = problem(STEPS, seed=3)
    expected_params, expected_state = run_numpy_core(vc.OPTIMIZERS[name](**kwargs, **masks), params, grads)
    transformation = bj.OPTIMIZERS[name](**_jax_arguments(kwargs), **_masks_as_tree(masks))
    tree, state = run_optax(transformation, params, grads, jit=True)

    import jax

    for index, (actual, expected) in enumerate(zip(jax.tree_util.tree_leaves(tree), expected_params)):
        assert str(actual.dtype) == "float64"
        assert relative_error(actual, expected) <= TOLERANCE, f"leaf {index}"
        assert relative_error(expected, params[index]) > 1e-3, "the run must move every tensor"
    actual_flat = vc.state_to_dict(bj.core_state(state, tree))
    expected_flat = vc.state_to_dict(expected_state)
    assert sorted(actual_flat) == sorted(expected_flat)
    for key, expected in expected_flat.items():
        if key.endswith(".count"):
            assert int(actual_flat[key]) == int(expected) == STEPS, key
        else:
            assert relative_error(actual_flat[key], expected) <= TOLERANCE, key


def test_e_adaptor_in_front_of_optax_adamw_equals_eadamw():
    """``optax.chain(bj.e_adaptor, optax.adamw)`` is EAdamW: the door's E adaptor against the core's EAdamW."""
    import optax

    params, grads = problem(STEPS, seed=4)
    expected_params, _ = run_numpy_core(
        vc.eadamw(lr=1e-2, alpha=-1.0, betas=(0.7, 0.9, 0.999), eps=1e-8, weight_decay=1e-2), params, grads
    )
    chained = optax.chain(
        bj.e_adaptor(alpha=-1.0, beta1=0.7), optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2)
    )
    tree, _ = run_optax(chained, params, grads)
    import jax

    for actual, expected in zip(jax.tree_util.tree_leaves(tree), expected_params):
        assert relative_error(actual, expected) <= 1e-10


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (
            lambda: bj.eadamw(1e-2, alpha=0.0, betas=(0.5, 0.9, 0.999), eps=1e-8, weight_decay=1e-2),
            lambda optax: optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2),
        ),
        (
            lambda: bj.alto(
                1e-2, alpha=0.0, betas=(0.5, 0.9, 0.99), eps=1e-6, weight_decay=1e-2, trust_eps=0.0, norm_eps=0.0
            ),
            lambda optax: optax.lamb(1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=1e-2),
        ),
        (
            lambda: bj.lamb(1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.0, trust_eps=0.0, norm_eps=0.0),
            lambda optax: optax.lamb(1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=0.0),
        ),
        (
            lambda: bj.eadam(1e-2, alpha=0.0, betas=(0.5, 0.9, 0.999), eps=1e-8),
            lambda optax: optax.adam(1e-2, b1=0.9, b2=0.999, eps=1e-8),
        ),
    ],
    ids=["eadamw->optax.adamw", "alto->optax.lamb", "lamb->optax.lamb", "eadam->optax.adam"],
)
def test_alpha_zero_equals_optax_builtin(ours, theirs):
    """At ``alpha = 0`` (and ``trust_eps = norm_eps = 0`` for Lamb) the maths is optax's own: equal to round-off."""
    import jax
    import optax

    params, grads = problem(STEPS, seed=5)
    mine, _ = run_optax(ours(), params, grads)
    reference, _ = run_optax(theirs(optax), params, grads)
    for actual, expected, start in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(reference), params):
        assert relative_error(actual, to_numpy(expected)) <= 1e-12
        assert relative_error(to_numpy(expected), start) > 1e-3


def test_alpha_nonzero_differs_from_optax_lamb():
    """Guards the alpha=0 comparison: with exploration the trajectory is not optax.lamb's."""
    import jax
    import optax

    params, grads = problem(30, seed=5)
    mine, _ = run_optax(bj.alto(1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), trust_eps=0.0, norm_eps=0.0), params, grads)
    reference, _ = run_optax(optax.lamb(1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=1e-4), params, grads)
    worst = max(
        relative_error(a, to_numpy(b))
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(reference))
    )
    assert worst > 1e-4
    assert np.isfinite(worst)
