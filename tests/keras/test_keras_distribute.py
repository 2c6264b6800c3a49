"""tf.distribute.MirroredStrategy over two logical CPU devices, in one subprocess.

``fit`` under the strategy must give the single-device result (same global batch) with the optimizer state
mirrored identically on both replicas; a custom ``strategy.run`` loop and mixed_float16 (LossScaleOptimizer)
must run. ``jit_compile=True`` under a multi-device MirroredStrategy is not tested: TensorFlow's XLA refuses
variables placed on another device, for Keras' own optimizers too (see docs/keras.md).
"""

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from tests.keras._harness import assert_check, run_worker  # noqa: E402

CHECKS = ["mirrored[alto-fit]", "mirrored[eadamw-fit]", "mirrored[adamcm-fit]", "mirrored[custom-loop]"]
CHECKS += ["mirrored[mixed_float16]"]


@pytest.fixture(scope="module")
def results():
    return run_worker("_worker_distribute")


@pytest.mark.parametrize("check", CHECKS)
def test_mirrored_strategy(results, check):
    assert_check(results, check)
