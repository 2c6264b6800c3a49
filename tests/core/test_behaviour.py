"""Table-driven behaviour: right direction on a quadratic, convergence on Rosenbrock, alpha=0 is the base."""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from tests.core.helpers import run_core, to_numpy
from tests.core.optimizer_table import CONFIGS, make


def _quadratic_loss_and_grad(params, curvatures):
    loss = sum(0.5 * float(np.sum(c * p * p)) for p, c in zip(params, curvatures))
    return loss, [c * p for p, c in zip(params, curvatures)]


@pytest.mark.parametrize("config_id", sorted(CONFIGS))
def test_first_step_goes_downhill_on_a_quadratic(config_id):
    rng = np.random.default_rng(0)
    params = (rng.normal(size=(4, 3)) + 2.0, rng.normal(size=(5,)) + 2.0)
    curvatures = [np.full((4, 3), 2.0), np.linspace(0.5, 3.0, 5)]
    loss_before, grads = _quadratic_loss_and_grad(params, curvatures)
    transform = make(config_id)
    updates, _ = transform.update(tuple(grads), transform.init(params), params)
    for update, grad in zip(updates, grads):
        assert float(np.sum(update * grad)) < 0, "the update must have a negative inner product with the gradient"
    loss_after, _ = _quadratic_loss_and_grad(vc.apply_updates(params, updates), curvatures)
    assert loss_after < loss_before


SHIFT = 3.0  # keeps the iterates away from 0, where a trust ratio (step ~ lr ||theta||) would stall


def _rosenbrock(theta):
    x, y = theta[0] - SHIFT, theta[1] - SHIFT
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2, np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


@pytest.mark.parametrize("config_id", sorted(CONFIGS))
def test_converges_on_rosenbrock(config_id):
    transform = make(config_id)
    params = (np.array([1.5, 5.0]),)
    state = transform.init(params)
    start, _ = _rosenbrock(params[0])
    for _ in range(8000):
        _, grad = _rosenbrock(params[0])
        updates, state = transform.update((grad,), state, params)
        params = vc.apply_updates(params, updates)
    final, _ = _rosenbrock(params[0])
    assert start > 8.0
    assert final < 5e-3, f"{config_id}: loss {final:.3g} after 8000 steps"
    np.testing.assert_allclose(params[0], [SHIFT + 1, SHIFT + 1], atol=0.1)


BASE_PAIRS = [
    (
        "alto->lamb",
        lambda: vc.alto(lr=1e-2, alpha=0.0, betas=(0.99, 0.9, 0.99), weight_decay=1e-3),
        lambda: vc.lamb(lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-3),
    ),
    (
        "alto_vanilla->lamb",
        lambda: vc.alto_vanilla(lr=1e-2, alpha=0.0, betas=(0.5, 0.9, 0.99)),
        lambda: vc.lamb(lr=1e-2, betas=(0.9, 0.99), bias_correction=False),
    ),
    (
        "eadam->adam",
        lambda: vc.eadam(lr=1e-2, alpha=0.0, betas=(0.3, 0.9, 0.999), weight_decay=1e-3),
        lambda: vc.adam(lr=1e-2, betas=(0.9, 0.999), weight_decay=1e-3),
    ),
    (
        "eadamw->adamw",
        lambda: vc.eadamw(lr=1e-2, alpha=0.0, betas=(0.3, 0.9, 0.999), weight_decay=1e-2),
        lambda: vc.adamw(lr=1e-2, betas=(0.9, 0.999), weight_decay=1e-2),
    ),
    (
        "esgd->sgd",
        lambda: vc.esgd(lr=1e-2, alpha=0.0, betas=(0.3, 0.9), weight_decay=1e-3),
        lambda: vc.sgd(lr=1e-2, momentum=0.9, weight_decay=1e-3),
    ),
]


@pytest.mark.parametrize("pair_id,make_e,make_base", BASE_PAIRS, ids=[p[0] for p in BASE_PAIRS])
def test_alpha_zero_reproduces_the_base_exactly(xp, pair_id, make_e, make_base):
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (1,), (6,)]
    params = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(60)]
    e_params, e_state = run_core(make_e(), params, grads, xp)
    base_params, base_state = run_core(make_base(), params, grads, xp)
    for e_param, base_param in zip(e_params, base_params):
        np.testing.assert_array_equal(to_numpy(e_param), to_numpy(base_param))
    base_flat = vc.state_to_dict(base_state)
    for key, value in vc.state_to_dict(e_state).items():
        if key in base_flat:
            np.testing.assert_array_equal(to_numpy(value), to_numpy(base_flat[key]), err_msg=key)


def test_alpha_nonzero_differs_from_the_base():
    """The E adaptor must actually change the trajectory (guards the alpha=0 test against a no-op E)."""
    rng = np.random.default_rng(2)
    params = [rng.normal(size=(5,))]
    grads = [[rng.normal(size=(5,))] for _ in range(10)]
    import array_api_compat.numpy as xp

    e_params, _ = run_core(vc.eadam(alpha=-2.0, betas=(0.9, 0.9, 0.999)), params, grads, xp)
    base_params, _ = run_core(vc.adam(), params, grads, xp)
    assert np.max(np.abs(e_params[0] - base_params[0])) > 1e-4


def test_fused_alto_direction_equals_the_chain():
    """``elementwise.alto_direction`` (the unit backends fuse) is the same arithmetic as the transforms."""
    rng = np.random.default_rng(5)
    params = (rng.normal(size=(4, 4)),)
    chain = vc.chain(vc.e_adaptor(-2.0, 0.9), vc.scale_by_adam(0.9, 0.99, 1e-6), vc.add_decayed_weights(1e-2))
    state = chain.init(params)
    carry, first, second = (np.zeros((4, 4)) for _ in range(3))
    for k in range(1, 50):
        grad = rng.normal(size=(4, 4))
        (expected,), state = chain.update((grad,), state, params)
        actual, carry, first, second = vc.elementwise.alto_direction(
            grad,
            carry,
            first,
            second,
            params[0],
            alpha=-2.0,
            beta1=0.9,
            beta2=0.9,
            beta3=0.99,
            eps=1e-6,
            correction2=1 - 0.9**k,
            correction3=1 - 0.99**k,
            weight_decay=1e-2,
            xp=np,
        )
        np.testing.assert_allclose(actual, expected, rtol=1e-14, atol=0)
        np.testing.assert_allclose(carry, state[0].carry[0], rtol=1e-14, atol=0)
        np.testing.assert_allclose(second, state[1].second[0], rtol=1e-14, atol=0)
