"""``backends.keras.AdamCM`` against the float64 core and the reference transcription (TensorFlow backend).

The checks run in one subprocess (``python -m tests.test_adam_cm_keras``): ``keras.config.set_floatx`` is
global and TensorFlow's start-up is paid once. The learning rate is ``2**-7`` so that Keras' float32
learning-rate variable holds it exactly and the float64 comparison is not limited by that rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LR = 2.0**-7
TOLERANCE = 1e-11
CHECKS = [
    "parity-eager",
    "parity-jit",
    "transcription",
    "one-variable-is-the-reference-default",
    "kappa-zero-is-adamw",
    "config-round-trip",
    "synced-true-is-refused",
]


def _worker() -> None:  # runs in the subprocess
    import keras
    import numpy as np

    import valley_core as vc
    from backends.keras import AdamCM
    from tests.core.helpers import relative_error, run_core
    from tests.keras._harness import Checks
    from tests.keras._parity import run_keras as run_keras_optimizer
    from tests.test_adam_cm import AdamCMTranscription, _grads, _params

    keras.config.set_floatx("float64")
    checks = Checks()
    hp = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3, top_c=3, decay=0.7, kappa=1.0)
    grads = _grads(40)

    def run_keras(kwargs, params, grads, mode="eager"):
        return run_keras_optimizer(AdamCM, dict(learning_rate=LR, **kwargs), params, grads, mode)

    def parity(mode):
        core_params, core_state = run_core(vc.adam_cm(lr=LR, synced=False, **hp), _params(), grads, np)
        core_flat = vc.state_to_dict(core_state)
        optimizer, variables = run_keras(hp, _params(), grads, mode)
        compared = 0
        for i, variable in enumerate(variables):
            error = relative_error(keras.ops.convert_to_numpy(variable), core_params[i])
            assert error < TOLERANCE, f"{variable.name}: {error:.3g}"
            for key, value in vc.state_to_dict(optimizer.core_state(variable)).items():
                if key.endswith(".count"):
                    assert int(keras.ops.convert_to_numpy(value)) == len(grads)
                    continue
                expected = core_flat[key[:-2] + f".{i}"]
                error = relative_error(keras.ops.convert_to_numpy(value), expected)
                assert error < TOLERANCE, f"{key} of {variable.name}: {error:.3g}"
                compared += 1
        assert compared == 4 * len(variables)
        return f"{compared} state arrays, {mode}"

    def transcription():
        oracle = AdamCMTranscription(_params(), lr=LR, synced=False, critical_test=0.0, **hp)
        for step in grads:
            oracle.step(step)
        _, variables = run_keras(hp, _params(), grads)
        for variable, expected in zip(variables, oracle.params):
            assert relative_error(keras.ops.convert_to_numpy(variable), expected) < 1e-10

    def one_variable():
        single = [[g[2]] for g in grads]
        oracle = AdamCMTranscription([_params()[2]], lr=LR, synced=True, critical_test=0.0, **hp)
        for step in single:
            oracle.step(step)
        _, variables = run_keras(hp, [_params()[2]], single)
        assert relative_error(keras.ops.convert_to_numpy(variables[0]), oracle.params[0]) < 1e-10

    def kappa_zero():
        core_params, _ = run_core(
            vc.adamw(lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3), _params(), grads, np
        )
        _, variables = run_keras(dict(hp, kappa=0.0), _params(), grads)
        for variable, expected in zip(variables, core_params):
            assert relative_error(keras.ops.convert_to_numpy(variable), expected) < TOLERANCE

    def config_round_trip():
        optimizer = AdamCM(learning_rate=LR, top_c=7, decay=0.9, critical_test=1.0)
        config = optimizer.get_config()
        assert config["top_c"] == 7 and config["synced"] is False and config["critical_test"] == 1.0
        restored = AdamCM.from_config(config)
        assert dict(restored.hyperparameters) == dict(optimizer.hyperparameters)
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored).__name__ == "AdamCM" and restored.hyperparameters["top_c"] == 7

    def synced_true():
        try:
            AdamCM(synced=True)
        except ValueError as error:
            assert "synced=True violates" in str(error), error
        else:
            raise AssertionError("synced=True was accepted")
        try:
            AdamCM(top_c=0)
        except ValueError as error:
            assert str(error) == "top_c=0 violates top_c is an integer >= 1", error
        else:
            raise AssertionError("top_c=0 was accepted")

    checks.run("parity-eager", lambda: parity("eager"))
    checks.run("parity-jit", lambda: parity("jit"))
    checks.run("transcription", transcription)
    checks.run("one-variable-is-the-reference-default", one_variable)
    checks.run("kappa-zero-is-adamw", kappa_zero)
    checks.run("config-round-trip", config_round_trip)
    checks.run("synced-true-is-refused", synced_true)
    checks.emit()


@pytest.fixture(scope="module")
def results():
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    import json

    from tests.keras._harness import MARKER, ROOT

    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONHASHSEED="0",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_adam_cm_keras"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    pytest.fail(
        f"worker produced no results, exit code {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )


@pytest.mark.parametrize("check", CHECKS)
def test_keras_adam_cm(results, check):
    from tests.keras._harness import assert_check

    assert_check(results, check)


if __name__ == "__main__":
    _worker()
