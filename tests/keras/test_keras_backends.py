"""The same optimizers under Keras' torch and JAX backends, each in a subprocess with KERAS_BACKEND set.

Each backend: float64 parity with the core over 60 steps (variables and optimizer state, eager), the
independent transcriptions, ``fit`` learning, save/load/resume equal to an uninterrupted run, every
optimizer under ``jit_compile=True`` equal to its eager run, and a zero-size variable. A backend whose
framework is not installed is skipped with the reason.
"""

import importlib.util

import pytest

pytest.importorskip("keras")

from tests.keras._harness import assert_check, run_worker  # noqa: E402
from tests.keras._parity import check_names  # noqa: E402

CHECKS = ["backend", "fit", "save-load-resume"]
CHECKS += [*check_names(("eager",)), "zero-size-variable"]
CHECKS += [f"jit-compile[{name}]" for name in ("ALTO", "ALTOVanilla", "Lamb", "EAdam", "EAdamW", "ESGD", "AdamCM")]

_results = {}


@pytest.fixture(scope="module", params=["torch", "jax"])
def backend_results(request):
    backend = request.param
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed, so Keras' {backend} backend cannot be tested")
    if backend not in _results:
        # JAX computes in float32 unless x64 is enabled, which the float64 parity needs.
        _results[backend] = run_worker("_worker_backend", backend=backend, env={"JAX_ENABLE_X64": "1"})
    return _results[backend]


@pytest.mark.parametrize("check", CHECKS)
def test_other_keras_backend(backend_results, check):
    assert_check(backend_results, check)
