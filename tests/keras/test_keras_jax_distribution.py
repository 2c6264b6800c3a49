"""Keras' distribution API (``DataParallel``, ``ModelParallel`` with a ``LayoutMap``) on the JAX backend over
8 host CPU devices, in one subprocess (``tests/keras/_worker_jax_distribution.py``).

Each optimizer trains with ``fit``; every optimizer variable is sharded like its parameter (also a 16-bit
parameter's float32 state and AdamCM's stack of critical momenta); the result equals the single-device run
within float32 round-off; ``model.save`` / ``load_model`` under the distribution keeps the layout and resumes.
"""

import importlib.util

import pytest

pytest.importorskip("keras")

from tests.keras._harness import assert_check, run_worker  # noqa: E402

CHECKS = [f"{mode}[{name}]" for name in ("ALTO", "Lamb", "EAdamW") for mode in ("data-parallel", "model-parallel")]
CHECKS += ["model-parallel[AdamCM]", "model-parallel-float16[ALTO]", "model-parallel-save-load[ALTO]"]
CHECKS += ["model-parallel-broad-key", "variable-with-a-jax-sharding"]


@pytest.fixture(scope="module")
def results():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed, so Keras' JAX backend cannot be tested")
    return run_worker(
        "_worker_jax_distribution", backend="jax", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    )


@pytest.mark.parametrize("check", CHECKS)
def test_keras_distribution_on_jax(results, check):
    assert_check(results, check)
