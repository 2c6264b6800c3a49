"""The table's records on the core: downhill on a quadratic, Rosenbrock solved, alpha = 0 is the base (and alpha != 0
is not), a resumed run is the uninterrupted one, invalid inputs are refused."""

from __future__ import annotations

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import valley_core as vc
from backends.numpy import Optimizer
from tests.core.helpers import assert_resume_equals_uninterrupted, run_core, to_numpy
from tests.optimizers import CASES, cases


def test_every_core_optimizer_has_a_record():
    assert {c.name for c in CASES} == set(vc.OPTIMIZERS)
    assert all(c.base is not None for c in CASES if vc.REGISTRY[c.name].base)


def _quadratic_loss_and_grad(params, curvatures):
    loss = sum(0.5 * float(np.sum(c * p * p)) for p, c in zip(params, curvatures))
    return loss, [c * p for p, c in zip(params, curvatures)]


@pytest.mark.parametrize("case", cases("numpy", "converges"))
def test_first_step_goes_downhill_on_a_quadratic(case):
    rng = np.random.default_rng(0)
    params = (rng.normal(size=(4, 3)) + 2.0, rng.normal(size=(5,)) + 2.0)
    curvatures = [np.full((4, 3), 2.0), np.linspace(0.5, 3.0, 5)]
    loss_before, grads = _quadratic_loss_and_grad(params, curvatures)
    transform = case.make()
    updates, _ = transform.update(tuple(grads), transform.init(params), params)
    for update, grad in zip(updates, grads):
        assert float(np.sum(update * grad)) < 0, "the update must have a negative inner product with the gradient"
    loss_after, _ = _quadratic_loss_and_grad(vc.apply_updates(params, updates), curvatures)
    assert loss_after < loss_before


SHIFT = 3.0  # keeps the iterates away from 0, where a trust ratio (step ~ lr ||theta||) would stall


def _rosenbrock(theta):
    x, y = theta[0] - SHIFT, theta[1] - SHIFT
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2, np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


@pytest.mark.parametrize("case", cases("numpy", "converges"))
def test_converges_on_rosenbrock(case):
    transform = case.make()
    params = (np.array([1.5, 5.0]),)
    state = transform.init(params)
    start, _ = _rosenbrock(params[0])
    for _ in range(8000):
        _, grad = _rosenbrock(params[0])
        updates, state = transform.update((grad,), state, params)
        params = vc.apply_updates(params, updates)
    final, _ = _rosenbrock(params[0])
    assert start > 8.0
    assert final < 5e-3, f"{case.id}: loss {final:.3g} after 8000 steps"
    np.testing.assert_allclose(params[0], [SHIFT + 1, SHIFT + 1], atol=0.1)


def _problem(steps, seed):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (1,), (6,), ()]
    return [rng.normal(size=s) for s in shapes], [[rng.normal(size=s) for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("case", cases("numpy", where=lambda c: c.base is not None))
def test_alpha_zero_reproduces_the_base_exactly(xp, case):
    params, grads = _problem(60, seed=1)
    e_params, e_state = run_core(case.at_alpha_zero().make(), params, grads, xp)
    base_name, base_hyperparameters = case.base
    base_params, base_state = run_core(vc.OPTIMIZERS[base_name](**base_hyperparameters), params, grads, xp)
    for e_param, base_param in zip(e_params, base_params):
        np.testing.assert_array_equal(to_numpy(e_param), to_numpy(base_param))
    base_flat = vc.state_to_dict(base_state)
    for key, value in vc.state_to_dict(e_state).items():
        if key in base_flat:
            np.testing.assert_array_equal(to_numpy(value), to_numpy(base_flat[key]), err_msg=key)
    # The E adaptor must change the trajectory (guards the comparison against a no-op E).
    actual, _ = run_core(case.make(), params, grads[:10], np_xp)
    expected, _ = run_core(vc.OPTIMIZERS[base_name](**base_hyperparameters), params, grads[:10], np_xp)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(actual, expected)) > 1e-6


@pytest.mark.parametrize("case", cases("numpy"))
def test_resume_from_a_state_dict_equals_the_uninterrupted_run(case):
    params, grads = _problem(30, seed=4)
    assert_resume_equals_uninterrupted(lambda arrays: Optimizer(arrays, case.make()), params, grads, split=13)


@pytest.mark.parametrize("case", cases("numpy", where=lambda c: bool(c.invalid)))
def test_invalid_inputs_are_refused(case):
    for overrides, message in case.invalid:
        with pytest.raises(ValueError, match=message):
            case.make(**overrides)
