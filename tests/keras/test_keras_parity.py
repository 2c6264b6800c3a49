"""Float64 parity of every Keras optimizer with the NumPy core over 60 steps, eager and XLA (TensorFlow).

Variables AND every optimizer state array are compared (relative error < 1e-9), plus two comparisons with
the independent two-buffer transcriptions of ``tests/core/transcription.py``. One subprocess runs them all,
because ``keras.config.set_floatx("float64")`` is global.
"""

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from tests.keras._harness import assert_check, run_worker  # noqa: E402
from tests.keras._parity import CONFIGS  # noqa: E402

CHECKS = [f"parity[{name}-{mode}]" for name in CONFIGS for mode in ("eager", "jit")]
CHECKS += ["transcription[alto]", "transcription[eadam-excluded]"]


@pytest.fixture(scope="module")
def results():
    return run_worker("_worker_tensorflow")


@pytest.mark.parametrize("check", CHECKS)
def test_float64_parity_with_the_core(results, check):
    assert_check(results, check)
