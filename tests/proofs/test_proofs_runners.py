"""The runner layer: every backend path runs the core's optimizers and agrees with the NumPy reference."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import valley_core as vc
from proofs_check import runners

CASES = [
    ("alto", {"lr": 0.05, "alpha": -1.0, "betas": (0.5, 0.9, 0.99), "weight_decay": 1e-3}),
    (
        "alto_vanilla",
        {
            "lr": vc.inverse_sqrt(0.1),
            "alpha": vc.inverse_sqrt(0.5),
            "betas": (0.01, 0.9, 0.99),
            "weight_decay": vc.inverse_sqrt(1e-4),
        },
    ),
    ("lamb", {"lr": 0.01, "weight_decay": vc.exponential_decay(1e-4, 0.5)}),
    ("eadam", {"lr": 0.01, "alpha": -5.0, "betas": (0.9, 0.9, 0.999)}),
    ("esgd", {"lr": 0.01, "alpha": 5.0, "betas": (0.9, 0.0)}),
    ("sgd", {"lr": 0.01}),
    ("adam", {"lr": 0.01}),
]


def _trajectory(backend, name, hyper, steps=40):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    stepper = runners.make_stepper(backend, name, start, **hyper)
    for _ in range(steps):
        stepper.step([np.sin(3 * p) + p**3 for p in stepper.params])
    return [np.array(p) for p in stepper.params], stepper


@pytest.mark.parametrize("name,hyper", CASES, ids=[c[0] for c in CASES])
def test_numpy_stepper_equals_the_core(name, hyper):
    params, stepper = _trajectory("numpy", name, hyper)
    assert stepper.path.startswith("backends.numpy.")
    rng = np.random.default_rng(0)
    ref = (rng.standard_normal((3, 2)), rng.standard_normal(4))
    transform = vc.OPTIMIZERS[name](**hyper)
    state = transform.init(ref)
    for _ in range(40):
        updates, state = transform.update(tuple(np.sin(3 * p) + p**3 for p in ref), state, ref)
        ref = vc.apply_updates(ref, updates)
    for a, b in zip(params, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,hyper", CASES, ids=[c[0] for c in CASES])
def test_torch_stepper_matches_numpy(name, hyper):
    pytest.importorskip("torch")
    expected, _ = _trajectory("numpy", name, hyper)
    got, stepper = _trajectory("torch", name, hyper)
    assert "torch" in stepper.path
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_torch_core_fallback_matches_numpy():
    pytest.importorskip("torch")
    name, hyper = CASES[0]
    expected, _ = _trajectory("numpy", name, hyper)
    stepper = runners.TorchCoreStepper(
        name,
        [np.random.default_rng(0).standard_normal((3, 2)), np.random.default_rng(0).standard_normal(4)],
        hyper,
        "test",
    )
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    stepper.set_params(start)
    for _ in range(40):
        stepper.step([np.sin(3 * p) + p**3 for p in stepper.params])
    assert stepper.path.startswith("valley_core.alto on torch")
    for a, b in zip(stepper.params, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert stepper.second_moments() is not None


def test_second_moments_and_set_params():
    stepper = runners.make_stepper("numpy", "alto", [np.ones(3)], lr=0.1, alpha=0.0, betas=(0.0, 0.9, 0.99))
    stepper.step([np.full(3, 2.0)])
    np.testing.assert_allclose(stepper.second_moments()[0], 0.01 * 4.0)
    stepper.set_params([np.zeros(3)])
    np.testing.assert_array_equal(stepper.params[0], 0.0)
    assert runners.make_stepper("numpy", "esgd", [np.ones(2)], lr=0.1).second_moments() is None


def test_rows_of_elementwise_optimizers_are_independent_runs():
    """The landscape and valley checks run many starts as the rows of one array (ESGD/EAdam/SGD/Adam)."""
    starts = np.random.default_rng(3).standard_normal((5, 2))
    grad = lambda p: np.sin(2 * p) + 0.3 * p**3  # noqa: E731
    for name, hyper in (
        ("esgd", {"lr": 0.01, "alpha": -5.0, "betas": (0.9, 0.0)}),
        ("eadam", {"lr": 0.01, "alpha": -5.0, "betas": (0.9, 0.9, 0.999)}),
    ):
        together = runners.make_stepper("numpy", name, [starts], **hyper)
        alone = [runners.make_stepper("numpy", name, [row], **hyper) for row in starts]
        for _ in range(50):
            together.step([grad(together.params[0])])
            for s in alone:
                s.step([grad(s.params[0])])
        np.testing.assert_allclose(together.params[0], np.array([s.params[0] for s in alone]), rtol=0, atol=1e-14)


def test_cupy_without_cuda_is_a_clear_error():
    try:
        from backends.cupy import cuda_available
    except ImportError:
        pytest.skip("backends.cupy does not import")
    if cuda_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(runners.BackendUnavailable, match="CUDA"):
        runners.check_backend("cupy")
    result = subprocess.run(
        [sys.executable, "-m", "proofs_check", "--backend", "cupy", "--quick", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "CUDA" in result.stderr and "No results were produced" in result.stderr


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="backend"):
        runners.make_stepper("jax", "alto", [np.ones(2)])
    with pytest.raises(ValueError, match="name"):
        runners.make_stepper("numpy", "rmsprop", [np.ones(2)])
