"""The optimizers on another Keras backend (``KERAS_BACKEND`` set by the parent: torch or jax).

Float64 parity with the core (eager), then float32 training: fit learns, and save/load/resume equals an
uninterrupted run; every optimizer under ``jit_compile=True`` (``torch.compile`` on torch, XLA on JAX) equals
its eager run; a zero-size variable is updated (to nothing) as Keras' own optimizers do.
"""

import os
import tempfile

import keras
import numpy as np

from backends.keras import ALTO
from tests.keras._harness import Checks
from tests.keras._parity import CLASSES, add_parity_checks


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


EVERY = tuple(CLASSES.values())


def jit_compile_equals_eager(cls):
    """``fit`` with ``jit_compile=True`` runs and gives the weights of ``jit_compile=False`` (two steps)."""

    def check():
        keras.config.set_floatx("float32")
        x, y = data(32)
        weights = {}
        for jit in (False, True):
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
            model.compile(optimizer=cls(learning_rate=0.05), loss="mse", jit_compile=jit)
            initial = [w.copy() for w in model.get_weights()]
            model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            assert model.jit_compile is jit, (model.jit_compile, jit)
            weights[jit] = model.get_weights()
        assert not np.allclose(initial[0], weights[True][0]), "the kernel did not move"
        for eager, compiled in zip(weights[False], weights[True]):
            np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)

    return check


def zero_size_variable():
    """A ``(0, 3)`` variable next to a ``(3,)`` one: no error, and the other variable moves as without it."""
    keras.config.set_floatx("float32")
    gradient = keras.ops.convert_to_tensor(np.array([0.5, -1.0, 2.0], dtype="float32"))
    empty_gradient = keras.ops.convert_to_tensor(np.zeros((0, 3), dtype="float32"))
    for cls in EVERY + (keras.optimizers.Adam,):
        moved = []
        for with_empty in (True, False):
            empty = keras.Variable(np.zeros((0, 3), dtype="float32"), name="empty")
            weight = keras.Variable(np.ones(3, dtype="float32"), name="weight")
            pairs = [(empty_gradient, empty)] if with_empty else []
            optimizer = cls(learning_rate=0.1)
            for _ in range(3):
                optimizer.apply_gradients(pairs + [(gradient, weight)])
            assert tuple(empty.shape) == (0, 3)
            moved.append(keras.ops.convert_to_numpy(weight))
        np.testing.assert_array_equal(moved[0], moved[1], err_msg=cls.__name__)
        assert not np.allclose(moved[0], 1.0), cls.__name__


if __name__ == "__main__":
    checks = Checks()
    checks.run("backend", backend_is_selected)
    checks.run("fit", fit_learns)
    checks.run("save-load-resume", save_load_resume)
    add_parity_checks(checks, modes=("eager",))
    checks.run("zero-size-variable", zero_size_variable)
    for cls in EVERY:
        checks.run(f"jit-compile[{cls.__name__}]", jit_compile_equals_eager(cls))
    checks.emit()
