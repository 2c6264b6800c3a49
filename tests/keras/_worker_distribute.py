"""tf.distribute.MirroredStrategy over two logical CPU devices (needs its own process: devices are fixed
before TensorFlow starts)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from backends.keras import ALTO, AdamCM, EAdamW  # noqa: E402
from tests.keras._harness import Checks, relative_error  # noqa: E402

DEVICES = ["/cpu:0", "/cpu:1"]
_STRATEGY = []


def shared_strategy():
    """One strategy for the whole process: several MirroredStrategy objects share collective instance keys."""
    if not _STRATEGY:
        _STRATEGY.append(tf.distribute.MirroredStrategy(DEVICES))
    return _STRATEGY[0]


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (np.tanh(x @ rng.normal(size=(8, 1))) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def model_and_optimizer(make_optimizer, jit):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=make_optimizer(), loss="mse", jit_compile=jit)
    return model


def train(make_optimizer, strategy=None, jit=False, epochs=2):
    x, y = data()
    if strategy is None:
        model = model_and_optimizer(make_optimizer, jit)
    else:
        with strategy.scope():
            model = model_and_optimizer(make_optimizer, jit)
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]


def make_alto():
    return ALTO(
        learning_rate=0.01,
        alpha=-0.5,
        betas=(0.5, 0.9, 0.99),
        weight_decay=1e-3,
        weight_decay_exclude_names=["bias"],
        trust_ratio_exclude_names=["bias"],
    )


def make_eadamw():
    return EAdamW(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01)


def make_adam_cm():
    """AdamCM's stack of critical momenta and its priorities are not shaped like their variable: they are
    created through ``add_variable`` under TensorFlow's colocation rather than ``add_variable_from_reference``."""
    return AdamCM(learning_rate=0.01, top_c=3)


def mirrored_equals_single_device(make_optimizer, jit):
    def check():
        assert len(tf.config.list_logical_devices("CPU")) == 2
        strategy = shared_strategy()
        assert strategy.num_replicas_in_sync == 2
        single, _ = train(make_optimizer, jit=jit)
        mirrored, losses = train(make_optimizer, strategy, jit=jit)
        assert losses[-1] < losses[0], losses
        worst = 0.0
        for a, b in zip(mirrored.get_weights(), single.get_weights()):
            worst = max(worst, relative_error(a, b))
        assert worst < 1e-4, f"weights differ from the single-device run: {worst:.3g}"
        replicas_checked = 0
        for variable in mirrored.optimizer.variables:
            components = getattr(variable.value, "values", None)
            if components:
                first = components[0].numpy()
                for other in components[1:]:
                    np.testing.assert_array_equal(first, other.numpy())
                replicas_checked += 1
        assert replicas_checked >= 4, "optimizer variables are not mirrored"
        for a, b in zip(mirrored.optimizer.variables, single.optimizer.variables):
            assert relative_error(a.numpy(), b.numpy()) < 1e-3, a.path
        return f"2 replicas; worst weight relative error vs one device {worst:.2e}"

    return check


def mirrored_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, losses = train(make_alto, shared_strategy())
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    finally:
        keras.mixed_precision.set_global_policy("float32")


def mirrored_custom_loop():
    strategy = shared_strategy()
    x, y = data(128)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
        optimizer = make_alto()
        optimizer.build(model.trainable_variables)  # create the slots outside tf.function
    loss_fn = keras.losses.MeanSquaredError(reduction="sum")
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(32))

    @tf.function
    def step(batch):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True)) / 32.0
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

        strategy.run(replica_step, args=batch)

    for batch in dataset:
        step(batch)
    assert int(optimizer.iterations.numpy()) == 4
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


if __name__ == "__main__":
    checks = Checks()
    checks.run("mirrored[alto-fit]", mirrored_equals_single_device(make_alto, jit=False))
    checks.run("mirrored[eadamw-fit]", mirrored_equals_single_device(make_eadamw, jit=False))
    checks.run("mirrored[adamcm-fit]", mirrored_equals_single_device(make_adam_cm, jit=False))
    checks.run("mirrored[custom-loop]", mirrored_custom_loop)
    checks.run("mirrored[mixed_float16]", mirrored_mixed_float16)
    checks.emit()
