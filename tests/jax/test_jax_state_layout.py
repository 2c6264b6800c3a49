"""The JAX state is shaped like the parameters (issue 23 item 1) and the 0.1.0 layout still loads.

optax's own optimizers keep ``mu``/``nu`` with the parameters' tree structure, and sharding rules, optax's
tree utilities and flax.nnx rely on it. These tests compare valley's state with ``optax.adamw``'s as those
tools see it, and load pickles written by valley 0.1.0 (``tests/jax/data``, made by
``tests/core/data/make_legacy_fixtures.py`` at commit d24396a) to take the step that code took next.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import valley_core as vc
from backends import jax as bj
from tests.jax._problems import as_tree, problem

ROOT = Path(__file__).resolve().parents[2]
LEGACY = Path(__file__).parent / "data" / "legacy_jax_states_0.1.0.pkl"

FACTORIES = {
    **{name: factory for name, factory in bj.OPTIMIZERS.items()},
    "e_adaptor": lambda: bj.e_adaptor(-0.5, 0.5),
}


def _state_after_a_step(transformation):
    params, grads = problem(1, seed=3)
    tree = as_tree(params)
    state = transformation.init(tree)
    _, state = jax.jit(transformation.update)(as_tree(grads[0]), state, tree)
    return tree, state


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_array_field_has_the_parameters_tree_structure(name):
    """Each per-tensor field is a pytree with the parameters' structure; the other leaves are 0-d counters."""
    tree, state = _state_after_a_step(FACTORIES[name]())
    params_structure = jax.tree_util.tree_structure(tree)
    shaped, counters = 0, 0
    for transform_state in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "_fields")):
        for field in transform_state._fields:
            value = getattr(transform_state, field)
            if field in vc.base.per_tensor_fields(transform_state):
                assert jax.tree_util.tree_structure(value) == params_structure, (type(transform_state), field)
                shaped += 1
            else:
                assert jnp.ndim(value) == 0, (type(transform_state), field)
                counters += 1
    assert shaped >= 1 and counters + shaped >= 1


def _paths(tree):
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.parametrize("name", ["alto", "lamb", "eadamw"])
def test_a_path_based_rule_matches_the_state_as_it_matches_optax_adamw(name):
    """A regex on parameter names (how sharding rules are written) finds every buffer of the weight: for ALTO
    its carry, m and v (0 matches in the 0.1.0 layout, whose leaves were indexed by position)."""
    _, state = _state_after_a_step(bj.OPTIMIZERS[name]())
    _, adamw_state = _state_after_a_step(optax.adamw(1e-3))
    rule = re.compile(r"\['dense'\]\['w'\]$")
    ours = [path for path in _paths(state) if rule.search(path)]
    theirs = [path for path in _paths(adamw_state) if rule.search(path)]
    assert len(theirs) == 2  # mu and nu
    expected = {"alto": 3, "lamb": 2, "eadamw": 3}[name]
    assert len(ours) == expected, _paths(state)


def test_tree_map_params_maps_the_state_like_optax_adamw():
    """``optax.tree_utils.tree_map_params`` (e.g. partition specs from the parameters' specs) reaches every
    per-tensor buffer and leaves the counters to ``transform_non_params``."""
    tree, state = _state_after_a_step(bj.alto(1e-3))
    specs = jax.tree_util.tree_map(lambda p: f"spec{p.ndim}", tree)
    mapped = optax.tree_utils.tree_map_params(
        bj.alto(1e-3), lambda _, spec: spec, state, specs, transform_non_params=lambda _: "counter"
    )
    leaves = jax.tree_util.tree_leaves(mapped)
    assert leaves.count("counter") == 4  # the counts of E, Adam, weight decay and the learning rate
    assert sorted(set(leaves)) == ["counter", "spec1", "spec2", "spec3"]
    assert len(leaves) == 4 + 3 * len(jax.tree_util.tree_leaves(tree))  # E's carry, m and v per parameter


def test_legacy_pickles_load_and_take_the_step_that_code_took():
    """Pickles of valley 0.1.0 states (tuples over the leaves) resume: the next jitted step gives the
    parameters 0.1.0 computed, bit for bit, and the state comes back shaped like the parameters."""
    with open(LEGACY, "rb") as f:
        cases = pickle.load(f)
    factories = {
        "alto": lambda: bj.alto(1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3),
        "lamb": lambda: bj.lamb(1e-2),
        "eadam_cm": lambda: bj.eadam_cm(1e-2, alpha=-0.5, betas=(0.5, 0.9, 0.999), top_c=2),
        "inject_alto": lambda: optax.inject_hyperparams(bj.alto)(
            learning_rate=1e-2, alpha=-1.0, betas=(0.9, 0.9, 0.99)
        ),
        "e_adaptor_chain": lambda: optax.chain(bj.e_adaptor(-0.5, 0.5), optax.adamw(1e-2)),
    }
    assert sorted(cases) == sorted(factories)
    for name, make in factories.items():
        case = cases[name]
        transformation = make()
        old_leaves = jax.tree_util.tree_leaves(case["state"])

        @jax.jit
        def step(params, state, grads, transformation=transformation):  # the step the fixture was made with
            updates, state = transformation.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        resumed, state = step(case["params"], case["state"], case["next_grads"])
        for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(case["next_params"])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
        fresh = transformation.init(case["params"])
        assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(fresh), name
        assert len(jax.tree_util.tree_leaves(state)) == len(old_leaves), name
        if name != "inject_alto":  # optax's InjectHyperparamsState wraps ours: convert its inner_state
            migrated = bj.state_like_params(case["state"], case["params"])
            assert jax.tree_util.tree_structure(migrated) == jax.tree_util.tree_structure(fresh), name


def test_core_state_gives_the_cores_layout_and_keys():
    tree, state = _state_after_a_step(bj.alto(1e-3))
    flat = vc.state_to_dict(bj.core_state(state, tree))
    expected = vc.state_to_dict(vc.alto(1e-3).init(tuple(np.asarray(x) for x in jax.tree_util.tree_leaves(tree))))
    assert sorted(flat) == sorted(expected)


def test_a_state_of_another_structure_is_refused_naming_the_field():
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    state = bj.alto().init({"w": jnp.ones((2, 2)), "c": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"state field EState\.carry does not have the structure of the parameters"):
        bj.alto().update(params, state, params)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_state_built_for_other_shapes_is_refused(jit):
    """Issue 26 item 3: state for shapes (1,) and (4, 3) used with parameters (3,) and (2, 4, 3) used to
    broadcast and change shape; the core now refuses it, also while the step is traced."""
    transformation = bj.alto()
    state = transformation.init([jnp.zeros(1), jnp.zeros((4, 3))])
    params = [jnp.ones(3), jnp.ones((2, 4, 3))]
    update = jax.jit(transformation.update) if jit else transformation.update
    with pytest.raises(ValueError, match=r"state of tensor 0 has shape \(1,\) but parameter 0 has shape \(3,\)"):
        update(params, state, params)
    state = transformation.init([jnp.zeros(3), jnp.zeros((4, 3))])
    with pytest.raises(ValueError, match=r"state of tensor 1 has shape \(4, 3\) but parameter 1 has shape \(2, 4, 3\)"):
        update(params, state, params)


def test_import_without_optax_names_the_extra():
    """Issue 26 item 16: ``import backends.jax`` without optax says which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['optax'] = None\n"
        "try:\n"
        "    import backends.jax\n"
        "except ImportError as error:\n"
        "    print('ERROR', error.name, str(error))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ERROR optax "), done.stdout
    assert 'pip install "valley-optim[jax]"' in done.stdout, done.stdout
