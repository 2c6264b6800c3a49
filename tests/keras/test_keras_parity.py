"""Float64 parity of every Keras record of ``tests/optimizers.py`` with the NumPy core over 60 steps, eager and
XLA (TensorFlow), and with its oracle; Adam+CM's particular checks.

Variables AND every optimizer state array are compared. One subprocess runs them all, because
``keras.config.set_floatx("float64")`` is global.
"""

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from tests.keras._harness import assert_check, run_worker  # noqa: E402
from tests.keras._parity import check_names  # noqa: E402


@pytest.fixture(scope="module")
def results():
    return run_worker("_worker_tensorflow")


@pytest.mark.parametrize("check", check_names(("eager", "jit")))
def test_float64_parity_with_the_core(results, check):
    assert_check(results, check)
