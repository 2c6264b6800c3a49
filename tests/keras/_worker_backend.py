"""The optimizers on another Keras backend (``KERAS_BACKEND`` set by the parent: torch or jax).

Float64 parity with the core (eager), then float32 training: fit learns, and save/load/resume equals an
uninterrupted run.
"""

import os
import tempfile

import keras
import numpy as np

from backends.keras import ALTO
from tests.keras._harness import Checks
from tests.keras._parity import add_parity_checks


def data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (np.tanh(x @ rng.normal(size=(8, 1))) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.compile(
        optimizer=ALTO(
            learning_rate=0.01,
            alpha=-0.5,
            betas=(0.5, 0.9, 0.99),
            weight_decay=1e-3,
            weight_decay_exclude_names=["bias"],
            trust_ratio_exclude_names=["bias"],
        ),
        loss="mse",
    )
    return model


def backend_is_selected():
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
    return keras.backend.backend()


def fit_learns():
    keras.config.set_floatx("float32")
    x, y = data()
    losses = make_model().fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    return f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"


def save_load_resume():
    keras.config.set_floatx("float32")
    x, y = data()
    first = make_model()
    first.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        first.save(path)
        resumed = keras.models.load_model(path)
    assert type(resumed.optimizer) is ALTO
    resumed.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    uninterrupted = make_model()
    uninterrupted.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0)
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(resumed.optimizer.variables, uninterrupted.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)


if __name__ == "__main__":
    checks = Checks()
    checks.run("backend", backend_is_selected)
    checks.run("fit", fit_learns)
    checks.run("save-load-resume", save_load_resume)
    add_parity_checks(checks, modes=("eager",))
    checks.emit()
