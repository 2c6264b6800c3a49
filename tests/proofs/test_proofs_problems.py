"""The problems' analytic gradients and Hessians against central finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from proofs_check import problems


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_tanh_regression_gradient_and_hvp():
    rng = np.random.default_rng(0)
    p = problems.TanhRegression(rng, n=256, dim=6)
    theta, v = rng.standard_normal(6), rng.standard_normal(6)
    np.testing.assert_allclose(p.grad(theta), _fd_grad(p.loss, theta), rtol=1e-6, atol=1e-9)
    fd_hvp = (p.grad(theta + 1e-6 * v) - p.grad(theta - 1e-6 * v)) / 2e-6
    np.testing.assert_allclose(p.hvp(theta, v), fd_hvp, rtol=1e-5, atol=1e-9)
    index = np.arange(10)
    batch = problems.TanhRegression.__new__(problems.TanhRegression)
    batch.__dict__.update(p.__dict__, x=p.x[index], y=p.y[index], n=10)
    np.testing.assert_allclose(p.grad(theta, index), batch.grad(theta))
    assert np.max(np.abs(p.x)) <= 1.0 and p.g_inf > 0


@pytest.mark.parametrize("name", ["logistic", "least_squares"])
def test_online_losses(name):
    rng = np.random.default_rng(1)
    stream = getattr(problems, f"{name}_stream")
    losses, grad, hess = (getattr(problems, f"{name}_{k}") for k in ("losses", "grad", "hess"))
    x, y = stream(rng, 50, 4)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    theta = rng.standard_normal(4)
    total = lambda t: float(np.sum(losses(t, x, y)))  # noqa: E731
    np.testing.assert_allclose(grad(theta, x, y), _fd_grad(total, theta), rtol=1e-6, atol=1e-8)
    fd_hess = np.column_stack([_fd_grad(lambda t: grad(t, x, y)[i], theta) for i in range(4)])
    np.testing.assert_allclose(hess(theta, x, y), fd_hess, rtol=1e-5, atol=1e-7)


def test_valleys_and_landscapes():
    rng = np.random.default_rng(2)
    p = rng.standard_normal(2)
    for f, g in (
        (problems.rosenbrock_valley, problems.rosenbrock_valley_grad),
        (problems.cardioid_valley, problems.cardioid_valley_grad),
        (problems.sharp_flat_2d, problems.sharp_flat_2d_grad),
        (problems.descending_valley, problems.descending_valley_grad),
    ):
        np.testing.assert_allclose(g(p), _fd_grad(f, p), rtol=1e-5, atol=1e-8)
    v = rng.standard_normal(2)
    fd = (problems.rosenbrock_valley_grad(p + 1e-6 * v) - problems.rosenbrock_valley_grad(p - 1e-6 * v)) / 2e-6
    np.testing.assert_allclose(problems.rosenbrock_valley_hvp(p, v), fd, rtol=1e-5, atol=1e-8)
    fd_h = np.column_stack([_fd_grad(lambda q: problems.sharp_flat_2d_grad(q)[i], p) for i in range(2)])
    np.testing.assert_allclose(problems.sharp_flat_2d_hess(p), fd_h, rtol=1e-5, atol=1e-8)
    x = np.linspace(-2, 3, 7)
    np.testing.assert_allclose(
        problems.sharp_flat_1d_grad(x),
        (problems.sharp_flat_1d(x + 1e-6) - problems.sharp_flat_1d(x - 1e-6)) / 2e-6,
        rtol=1e-5,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        problems.sharp_flat_1d_hess(x),
        (problems.sharp_flat_1d_grad(x + 1e-6) - problems.sharp_flat_1d_grad(x - 1e-6)) / 2e-6,
        rtol=1e-5,
        atol=1e-7,
    )
    # zero-loss floors and their arc-length coordinates
    u = np.linspace(-1.5, 1.5, 9)
    floor = np.column_stack([u, u * u])
    np.testing.assert_allclose(problems.rosenbrock_valley(floor), 0.0, atol=1e-24)
    s = problems.rosenbrock_valley_position(floor)
    assert np.all(np.diff(s) > 0) and abs(s[4]) < 1e-12
    phi = np.linspace(-2.5, 2.5, 9)
    r = 1 + np.cos(phi)
    card = np.column_stack([r * np.cos(phi), r * np.sin(phi)])
    np.testing.assert_allclose(problems.cardioid_valley(card), 0.0, atol=1e-20)
    np.testing.assert_allclose(problems.cardioid_valley_position(card), 4 * np.sin(phi / 2))


def test_drifting_stream_rotates():
    steps = 4000
    x, y = problems.logistic_drifting_stream(np.random.default_rng(5), steps, 6, label_noise=0.0, turns=1.0)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    # the best linear separator of the first eighth labels the fifth eighth (half a turn later) mostly wrong
    first, later = slice(0, steps // 8), slice(steps // 2, steps // 2 + steps // 8)
    w, *_ = np.linalg.lstsq(x[first], y[first], rcond=None)
    assert np.mean(np.sign(x[first] @ w) == y[first]) > 0.9
    assert np.mean(np.sign(x[later] @ w) == y[later]) < 0.2
