"""Keras' distribution API on the JAX backend over 8 host CPU devices (its own process: the device count is
fixed before JAX starts).

For ``DataParallel`` (8-way batch) and ``ModelParallel`` (a 2x4 ``batch`` x ``model`` mesh; a ``LayoutMap``
shards every kernel's output axis and every bias over ``model``), ``fit`` trains the valley optimizers and:

* every optimizer variable has its parameter's sharding (``variable.value.sharding``), so the state is split
  like the parameters instead of replicated; a stack of copies (AdamCM's critical momenta) is split like
  the parameter along the parameter's axes, and a 16-bit parameter's float32 state is split like it too;
* weights and optimizer variables equal the single-device run on the same batches within float32 round-off;
* ``model.save`` / ``keras.models.load_model`` under the distribution restore the layout, and training
  continued after loading equals uninterrupted training;
* a ``LayoutMap`` key that also matches optimizer variables' names does not apply to them.
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["KERAS_BACKEND"] = "jax"

import tempfile  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from backends.keras import ALTO, AdamCM, EAdamW, Lamb  # noqa: E402
from tests.keras._harness import Checks, relative_error  # noqa: E402

# float32 runs whose reductions (the batch mean, the trust ratio's norms) are summed in another order on 8
# devices: the weights and state agree to a few float32 ulps per step (measured below 1e-6 over 4 steps).
TOLERANCE = 1e-5
STEPS = 4
BATCH = 16

OPTIMIZERS = {
    "ALTO": lambda: ALTO(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.99), weight_decay=1e-3),
    "Lamb": lambda: Lamb(learning_rate=0.01, weight_decay=1e-3),
    "EAdamW": lambda: EAdamW(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01),
    "AdamCM": lambda: AdamCM(learning_rate=0.01, top_c=3),
}


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 8)).astype("float32")
    y = np.tanh(x @ rng.normal(size=(8, 8))).astype("float32")
    return x, y


def data_parallel():
    return keras.distribution.DataParallel(devices=jax.devices())


def model_parallel():
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], jax.devices())
    layout_map = keras.distribution.LayoutMap(mesh)
    # Keys are matched against the whole path (re.fullmatch): "sequential/dense_1/kernel" matches, and so does
    # "dense_1/kernel" (a Sequential model loaded by keras.models.load_model has no "sequential/" in its paths);
    # the optimizer's "alto/sequential_dense_1_kernel_adam_first" does not, so its layout must come from its
    # parameter.
    layout_map["(.*/)?dense[^/]*/kernel"] = (None, "model")
    layout_map["(.*/)?dense[^/]*/bias"] = ("model",)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def make_model(make_optimizer, dtype="float32"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh", dtype=dtype),
            keras.layers.Dense(8, dtype=dtype),
        ]
    )
    model.compile(optimizer=make_optimizer(), loss="mse")
    return model


def train(make_optimizer, distribution=None, dtype="float32"):
    x, y = data()
    if distribution is None:
        model = make_model(make_optimizer, dtype)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        return model
    with distribution.scope():
        model = make_model(make_optimizer, dtype)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def parameter_of(optimizer, slot, parameters):
    """The parameter an optimizer variable was created for, from its name (``<optimizer>/<path>_<field>``)."""
    prefixes = {f"{optimizer.name}/{p.path.replace('/', '_')}_": p for p in parameters}
    matches = [prefix for prefix in prefixes if slot.path.startswith(prefix)]
    assert matches, f"{slot.path} is named after no parameter"
    return prefixes[max(matches, key=len)]


def expected_sharding(parameter, slot):
    """The parameter's sharding, with replicated leading axes for a stack of copies of the parameter."""
    sharding = parameter.value.sharding
    extra = len(slot.shape) - len(parameter.shape)
    if extra == 0:
        return sharding
    assert tuple(slot.shape[extra:]) == tuple(parameter.shape), (slot.path, slot.shape)
    spec = tuple(sharding.spec) + (None,) * (len(parameter.shape) - len(sharding.spec))
    return NamedSharding(sharding.mesh, PartitionSpec(*((None,) * extra + spec)))


def check_layouts(model, sharded_parameters):
    """Every optimizer variable is sharded like its parameter; returns how many are split over devices."""
    optimizer = model.optimizer
    parameters = model.trainable_variables
    assert sum(not p.value.sharding.is_fully_replicated for p in parameters) == sharded_parameters
    split = 0
    for slot in optimizer.variables:
        if slot is optimizer.iterations or slot is optimizer._learning_rate:
            continue
        parameter = parameter_of(optimizer, slot, parameters)
        if tuple(slot.shape)[-len(parameter.shape) :] != tuple(parameter.shape):
            # not a copy of the parameter (AdamCM's priorities, shape (top_c,)): replicated
            assert slot.value.sharding.is_fully_replicated, (slot.path, slot.value.sharding)
            continue
        expected = expected_sharding(parameter, slot)
        actual = slot.value.sharding
        assert actual.is_equivalent_to(expected, len(slot.shape)), (slot.path, actual, expected)
        split += not actual.is_fully_replicated
    return split


def compare(distributed, single, tolerance=TOLERANCE):
    worst = 0.0
    for a, b in zip(distributed.get_weights(), single.get_weights()):
        worst = max(worst, relative_error(a, b))
    assert len(distributed.optimizer.variables) == len(single.optimizer.variables)
    for a, b in zip(distributed.optimizer.variables, single.optimizer.variables):
        assert a.shape == b.shape, (a.path, b.path)
        worst = max(worst, relative_error(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)))
    assert worst <= tolerance, f"differs from the single-device run by {worst:.3g} (relative)"
    assert int(distributed.optimizer.iterations) == STEPS
    return worst


def equals_single_device(name, make_distribution, sharded_parameters, dtype="float32", tolerance=TOLERANCE):
    def check():
        assert len(jax.devices()) == 8, jax.devices()
        single = train(OPTIMIZERS[name], dtype=dtype)
        distributed = train(OPTIMIZERS[name], make_distribution(), dtype=dtype)
        moved = relative_error(distributed.get_weights()[0], make_model(OPTIMIZERS[name], dtype).get_weights()[0])
        assert moved > 1e-3, "the kernel did not move"
        split = check_layouts(distributed, sharded_parameters)
        assert (split > 0) == (sharded_parameters > 0), split
        worst = compare(distributed, single, tolerance)
        return f"{split} optimizer variables split over devices; worst relative difference {worst:.2e}"

    return check


def save_load_resume():
    """Save after 4 steps, load under the distribution, 4 more steps == 8 uninterrupted steps."""
    x, y = data()
    distribution = model_parallel()
    with distribution.scope():
        first = make_model(OPTIMIZERS["ALTO"])
        first.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "m.keras")
            first.save(path)
            resumed = keras.models.load_model(path)
        resumed.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        uninterrupted = make_model(OPTIMIZERS["ALTO"])
        uninterrupted.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert type(resumed.optimizer) is ALTO
    split = check_layouts(resumed, sharded_parameters=4)
    assert split == 12, split
    assert int(resumed.optimizer.iterations) == 2 * STEPS
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(resumed.optimizer.variables, uninterrupted.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)


def broad_layout_map_key():
    """A key that also matches optimizer variables' names (``.*kernel.*`` matches AdamCM's
    ``..._kernel_criticalmomenta_priorities``, shape ``(top_c,)``) does not apply to them: Keras' own ``Adam``
    trains under it, and so does every valley optimizer."""
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], jax.devices())
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*kernel.*"] = (None, "model")
    distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    x, y = data()
    for make in (keras.optimizers.Adam, AdamCM, ALTO):
        with distribution.scope():
            model = make_model(lambda: make(learning_rate=0.01))
            model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        if make is not keras.optimizers.Adam:
            assert check_layouts(model, sharded_parameters=2) > 0


def variable_with_a_jax_sharding():
    """A ``keras.Variable`` given a ``jax.sharding.NamedSharding`` as its layout (no distribution set): the
    optimizer variables get it too (AdamCM's stack along the variable's axes, its priorities replicated)."""
    mesh = jax.make_mesh((2, 4), ("batch", "model"))
    weight = keras.Variable(np.ones((8, 16), "float32"), layout=NamedSharding(mesh, PartitionSpec(None, "model")))
    for make in (ALTO, AdamCM):
        optimizer = make(learning_rate=0.1)
        optimizer.apply_gradients([(keras.ops.ones((8, 16)), weight)])
        slots = optimizer.variables[2:]
        assert len(slots) == (3 if make is ALTO else 4), [v.path for v in slots]
        for slot in slots:
            sharding = slot.value.sharding
            if tuple(slot.shape) == (8, 16):
                assert sharding.is_equivalent_to(weight.value.sharding, 2), (slot.path, sharding)
            elif len(slot.shape) == 3:
                expected = NamedSharding(mesh, PartitionSpec(None, None, "model"))
                assert sharding.is_equivalent_to(expected, 3), (slot.path, sharding)
            else:
                assert sharding.is_fully_replicated and len(sharding.device_set) == 8, (slot.path, sharding)


if __name__ == "__main__":
    checks = Checks()
    for name in ("ALTO", "Lamb", "EAdamW"):
        checks.run(f"data-parallel[{name}]", equals_single_device(name, data_parallel, sharded_parameters=0))
        checks.run(f"model-parallel[{name}]", equals_single_device(name, model_parallel, sharded_parameters=4))
    checks.run("model-parallel[AdamCM]", equals_single_device("AdamCM", model_parallel, sharded_parameters=4))
    # float16 parameters, float32 state. The forward and backward passes run in float16, so the gradients
    # summed in another order differ by float16 round-off (2**-11 ~ 5e-4 relative), which Adam's normalised
    # step passes on (measured 1.7e-3); a wrong update would differ by order 1.
    checks.run(
        "model-parallel-float16[ALTO]",
        equals_single_device("ALTO", model_parallel, sharded_parameters=4, dtype="float16", tolerance=1e-2),
    )
    checks.run("model-parallel-save-load[ALTO]", save_load_resume)
    checks.run("model-parallel-broad-key", broad_layout_map_key)
    checks.run("variable-with-a-jax-sharding", variable_with_a_jax_sharding)
    checks.emit()
