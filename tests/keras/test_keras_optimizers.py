"""The Keras optimizers in this process (TensorFlow backend, float32): the table's invalid inputs, refusals and
Keras built-ins at alpha = 0 (``tests/optimizers.py``), Keras features, errors.

Float64 parity with the core runs in a subprocess (``test_keras_parity.py``); distribution and the other
Keras backends too (``test_keras_distribute.py``, ``test_keras_backends.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the in-process Keras tests run on the TensorFlow backend", allow_module_level=True)

import array_api_compat.numpy as xp_numpy  # noqa: E402

import valley_core as vc  # noqa: E402
from backends.keras import ALTO, ESGD, ALTOVanilla, EAdam, EAdamW, Lamb, keras_namespace  # noqa: E402
from tests.keras._harness import relative_error  # noqa: E402
from tests.keras._parity import CLASSES, CONFIGS, keras_kwargs  # noqa: E402
from tests.optimizers import BY_ID, CASES, cases, refused  # noqa: E402

EVERY = tuple(CLASSES.values())
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SHAPES = [(5, 3), (3,)]


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.config.set_floatx("float32")
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def gradient_sequence(steps, seed=0):
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=s) for s in SHAPES]
    return [[(b + 0.3 * rng.normal(size=b.shape)).astype("float32") for b in base] for _ in range(steps)]


def apply_sequence(optimizer, grads, seed=1):
    rng = np.random.default_rng(seed)
    variables = [
        keras.Variable(rng.normal(size=s).astype("float32"), name=n) for s, n in zip(SHAPES, ("kernel", "bias"))
    ]
    for step in grads:
        optimizer.apply_gradients(zip([tf.constant(g) for g in step], variables))
    return [v.numpy() for v in variables]


# --- construction and configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.invalid and c.name in CLASSES and "keras" not in c.refused], ids=lambda c: c.id
)
def test_invalid_hyperparameters_raise_the_core_error(case):
    for overrides, message in case.invalid:
        with pytest.raises(ValueError, match=message):
            CLASSES[case.name](**keras_kwargs(case, [None] * 3, **overrides))


@pytest.mark.parametrize("case, what, message", refused("keras"))
def test_what_keras_cannot_run_is_refused_naming_why(case, what, message):
    with pytest.raises(ValueError, match=message):
        CLASSES[case.name](**keras_kwargs(case, [None] * 3))


def test_every_keras_optimizer_has_a_record():
    assert set(CLASSES) <= {BY_ID[i].name for i in CONFIGS}


def test_unknown_keyword_and_misplaced_exclusion_raise():
    with pytest.raises(ValueError, match="not recognized"):
        ALTO(momentum=0.9)
    with pytest.raises(ValueError, match="no trust ratio"):
        EAdam(trust_ratio_exclude_names=["bias"])
    with pytest.raises(ValueError, match="no trust ratio"):
        ESGD().exclude_from_trust_ratio(var_names=["bias"])


@pytest.mark.parametrize("cls", EVERY, ids=lambda c: c.__name__)
def test_config_round_trip_and_registered_serialization(cls):
    defaults = dict(cls._core_defaults)
    kwargs = {"learning_rate": 0.0125, "weight_decay_exclude_names": ["bias", "norm"], "clipnorm": 2.0}
    if "alpha" in defaults:
        kwargs["alpha"] = 0.25
    if "trust_ratio_mask" in cls._core_masks:
        kwargs["trust_ratio_exclude_names"] = ["bias"]
    optimizer = cls(**kwargs)
    config = optimizer.get_config()
    assert config["learning_rate"] == pytest.approx(0.0125)
    assert config["weight_decay"] == defaults["weight_decay"]
    assert set(defaults) <= set(config)
    clone = cls.from_config(config)
    assert clone.get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == f"valley>{cls.__name__}"
    restored = keras.optimizers.deserialize(serialized)
    assert type(restored) is cls and restored.get_config() == config
    assert dict(restored.hyperparameters) == {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in defaults
    }


def test_schedule_config_round_trip():
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100)
    optimizer = ALTO(learning_rate=schedule, alpha=-1.0, betas=(0.9, 0.9, 0.99))
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert restored.get_config() == optimizer.get_config()


def test_keras_decoupled_weight_decay_is_off():
    optimizer = ALTO(weight_decay=0.1)
    assert optimizer.weight_decay is None and optimizer.hyperparameters["weight_decay"] == 0.1
    optimizer.weight_decay = 0.1  # would make Keras decay a second time: refused at the first step
    with pytest.raises(ValueError, match="must stay None"):
        apply_sequence(optimizer, gradient_sequence(1))


def test_exclusion_by_variable_equals_exclusion_by_name():
    grads = gradient_sequence(10)
    by_name = apply_sequence(
        ALTO(
            learning_rate=0.01,
            weight_decay=0.1,
            weight_decay_exclude_names=["bias"],
            trust_ratio_exclude_names=["bias"],
        ),
        grads,
    )
    rng = np.random.default_rng(1)
    variables = [
        keras.Variable(rng.normal(size=s).astype("float32"), name=n) for s, n in zip(SHAPES, ("kernel", "bias"))
    ]
    optimizer = ALTO(learning_rate=0.01, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])
    optimizer.exclude_from_trust_ratio(var_list=[variables[1]])
    for step in grads:
        optimizer.apply_gradients(zip([tf.constant(g) for g in step], variables))
    for a, b in zip(by_name, variables):
        np.testing.assert_array_equal(a, b.numpy())
    everything = apply_sequence(ALTO(learning_rate=0.01, weight_decay=0.1), grads)
    assert relative_error(everything[1], by_name[1]) > 1e-3  # the exclusion changed the bias's update


def test_exclusions_only_before_build():
    optimizer = ALTO()
    apply_sequence(optimizer, gradient_sequence(1))
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.exclude_from_trust_ratio(var_names=["bias"])


# --- external oracles (Keras' own optimizers) -------------------------------------------------------------

#: Keras' own optimizer of a base (a core name) with the base's hyperparameters.
BUILTINS = {
    "adam": lambda hp: keras.optimizers.Adam(hp["lr"], *hp["betas"], epsilon=hp["eps"]),
    "adamw": lambda hp: keras.optimizers.AdamW(hp["lr"], hp["weight_decay"], *hp["betas"], epsilon=hp["eps"]),
    "lamb": lambda hp: keras.optimizers.Lamb(hp["lr"], *hp["betas"], epsilon=hp["eps"]),
    "sgd": lambda hp: keras.optimizers.SGD(hp["lr"], momentum=hp["momentum"]),
}


@pytest.mark.parametrize("case", cases("keras", "keras.optimizers"))
def test_alpha_zero_equals_the_keras_builtin_and_alpha_changes_the_trajectory(case):
    grads = gradient_sequence(40)
    builtin = apply_sequence(BUILTINS[case.base[0]](case.base[1]), grads)
    at_zero = apply_sequence(CLASSES[case.name](**keras_kwargs(case.at_alpha_zero(), [None] * 2)), grads)
    for a, b in zip(at_zero, builtin):
        assert relative_error(a, b) < 2e-6
    explored = apply_sequence(CLASSES[case.name](**keras_kwargs(case, [None] * 2)), grads)
    assert relative_error(explored[0], builtin[0]) > 1e-3  # guards the comparison against a vacuous pass


def test_namespace_runs_the_whole_core_on_tensorflow_tensors():
    """init and update of the core through the shim alone (scalar_zero, step_index, norms) vs NumPy."""
    transform = vc.alto(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.99), weight_decay=0.01)
    params_np = tuple(np.random.default_rng(0).normal(size=s) for s in SHAPES)
    grads = gradient_sequence(5)
    xp = keras_namespace
    params_tf = tuple(xp.asarray(p, dtype=xp.float64) for p in params_np)
    state_tf, state_np = transform.init(params_tf, xp=xp), transform.init(params_np, xp=xp_numpy)
    for step in grads:
        updates, state_tf = transform.update(
            tuple(xp.asarray(g, dtype=xp.float64) for g in step), state_tf, params_tf, xp=xp
        )
        params_tf = vc.apply_updates(params_tf, updates)
        updates, state_np = transform.update(
            tuple(g.astype(np.float64) for g in step), state_np, params_np, xp=xp_numpy
        )
        params_np = vc.apply_updates(params_np, updates)
    for a, b in zip(params_tf, params_np):
        assert relative_error(np.asarray(a), b) < 1e-12
    assert int(vc.state_to_dict(state_tf)["EState.count"]) == 5


def test_gradient_accumulation_counts_updates_not_batches():
    grads = gradient_sequence(4)
    accumulated = apply_sequence(
        ALTO(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.99), gradient_accumulation_steps=2), grads
    )
    averaged = [[(a + b) / 2 for a, b in zip(grads[i], grads[i + 1])] for i in (0, 2)]
    plain = apply_sequence(ALTO(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.99)), averaged)
    for a, b in zip(accumulated, plain):
        assert relative_error(a, b) < 1e-6


# --- training: fit, custom loops, save/load, mixed precision -------------------------------------------------


def regression_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (np.tanh(x @ rng.normal(size=(8, 1))) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])


def make_alto(**kwargs):
    return ALTO(
        learning_rate=0.01,
        alpha=-0.5,
        betas=(0.5, 0.9, 0.99),
        weight_decay=1e-3,
        weight_decay_exclude_names=["bias"],
        trust_ratio_exclude_names=["bias"],
        **kwargs,
    )


def test_fit_with_and_without_jit_agree_and_learn():
    x, y = regression_data()
    weights = {}
    for jit in (False, True):
        model = make_model()
        model.compile(optimizer=make_alto(), loss="mse", jit_compile=jit)
        history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
        losses = history.history["loss"]
        assert losses[-1] < 0.7 * losses[0], losses
        weights[jit] = model.get_weights()
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_gradient_tape_loop_equals_fit_with_a_schedule():
    x, y = regression_data(128)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=4, decay_rate=0.8)
    fitted = make_model()
    fitted.compile(optimizer=ALTO(learning_rate=schedule, alpha=-0.5, betas=(0.5, 0.9, 0.99)), loss="mse")
    fitted.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)

    model = make_model()
    optimizer = ALTO(learning_rate=schedule, alpha=-0.5, betas=(0.5, 0.9, 0.99))
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    for _ in range(2):
        for start in range(0, len(x), 32):
            train_step(x[start : start + 32], y[start : start + 32])
    assert int(optimizer.iterations) == 8
    for a, b in zip(model.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_save_load_resume_equals_uninterrupted(tmp_path):
    x, y = regression_data()
    interrupted = make_model()
    interrupted.compile(optimizer=make_alto(), loss="mse", jit_compile=True)
    interrupted.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / "m.keras"
    interrupted.save(path)
    resumed = keras.models.load_model(path)
    assert type(resumed.optimizer) is ALTO
    assert resumed.optimizer.get_config() == interrupted.optimizer.get_config()
    assert resumed.optimizer._weight_decay_exclude_names == ("bias",)
    for a, b in zip(resumed.optimizer.variables, interrupted.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    resumed.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)

    uninterrupted = make_model()
    uninterrupted.compile(optimizer=make_alto(), loss="mse", jit_compile=True)
    uninterrupted.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0)
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 32
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(resumed.optimizer.variables, uninterrupted.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    x, y = regression_data()
    model = make_model()
    model.compile(optimizer=make_alto(), loss="mse")
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    optimizer = model.optimizer
    if policy == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        optimizer = optimizer.inner_optimizer
    assert isinstance(optimizer, ALTO)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert all(np.all(np.isfinite(v.numpy())) for v in optimizer.variables)


def test_explicit_loss_scale_optimizer_in_a_custom_loop():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = regression_data(64)
    model = make_model()
    optimizer = keras.optimizers.LossScaleOptimizer(EAdamW(learning_rate=0.01))
    loss_fn = keras.losses.MeanSquaredError()
    for start in range(0, 64, 16):
        with tf.GradientTape() as tape:
            loss = optimizer.scale_loss(loss_fn(y[start : start + 16], model(x[start : start + 16])))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    assert int(optimizer.inner_optimizer.iterations) == 4
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("cls", EVERY, ids=lambda c: c.__name__)
def test_sparse_gradients_of_an_embedding_are_densified(cls):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(64, 6))
    labels = rng.normal(size=(64, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(50, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=cls(learning_rate=0.01), loss="mse")
    before = model.layers[0].get_weights()[0].copy()
    model.fit(tokens, labels, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(before, model.layers[0].get_weights()[0])


@pytest.mark.parametrize("cls", EVERY, ids=lambda c: c.__name__)
def test_indexed_slices_update_equals_the_dense_gradient_update(cls):
    rng = np.random.default_rng(1)
    initial = rng.normal(size=(10, 4)).astype("float32")
    steps = [(tf.constant([1, 7, 1, k], dtype="int64"), rng.normal(size=(4, 4)).astype("float32")) for k in range(3)]
    results = []
    for densify in (False, True):
        variable = keras.Variable(initial, name="embeddings")
        optimizer = cls(learning_rate=0.01)
        for indices, values in steps:  # row 1 appears twice: its two slices are summed, as in the dense form
            gradient = tf.IndexedSlices(tf.constant(values), indices, dense_shape=tf.constant([10, 4], dtype="int64"))
            optimizer.apply_gradients([(tf.convert_to_tensor(gradient) if densify else gradient, variable)])
        results.append(variable.numpy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.allclose(results[0], initial)


@pytest.mark.parametrize("cls", EVERY + (keras.optimizers.Adam, keras.optimizers.Lamb), ids=lambda c: c.__name__)
def test_zero_size_variable_is_updated_as_keras_does(cls):
    gradient = np.array([0.5, -1.0, 2.0], dtype="float32")
    moved = []
    for with_empty in (True, False):
        empty = keras.Variable(np.zeros((0, 3), dtype="float32"), name="empty")
        weight = keras.Variable(np.ones(3, dtype="float32"), name="weight")
        pairs = [(np.zeros((0, 3), dtype="float32"), empty)] if with_empty else []
        optimizer = cls(learning_rate=0.1)
        for _ in range(3):
            optimizer.apply_gradients(pairs + [(gradient, weight)])
        assert tuple(empty.shape) == (0, 3)
        moved.append(weight.numpy())
    np.testing.assert_array_equal(moved[0], moved[1])
    assert not np.allclose(moved[0], 1.0)


@pytest.mark.parametrize("cls", (EAdam, ALTO), ids=lambda c: c.__name__)
def test_float16_variable_keeps_float32_state_and_rounds_each_step(cls):
    # The policy of every backend (docs/algorithm.md). In float16 eps=1e-8 is 0 and v underflows.
    rng = np.random.default_rng(0)
    start = np.array([0.5, -0.25, 1e-3, 2.0], dtype=np.float16)
    grads = [(1e-4 * rng.normal(size=4)).astype(np.float16) for _ in range(5)]
    variable = keras.Variable(start, dtype="float16", name="weight")
    optimizer = cls(learning_rate=1e-2)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    assert variable.dtype == "float16"
    assert all(v.dtype == "float32" for v in optimizer.variables if v.name != "iteration")
    transform = cls.core_factory(lr=1e-2, **cls._core_defaults)  # the core in float32, rounded after each step
    theta = start.astype(np.float32)
    state = transform.init((theta,), xp=xp_numpy)
    for g in grads:
        updates, state = transform.update((g.astype(np.float32),), state, (theta,), xp=xp_numpy)
        theta = (theta + updates[0]).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(variable.numpy().astype(np.float32), theta, rtol=2e-3, atol=0)
    assert not np.allclose(variable.numpy(), start)


# --- zero-initialised tensors (issue 13, defect 7) ---------------------------------------------------------


@pytest.mark.parametrize("cls", [ALTO, ALTOVanilla, Lamb])
def test_zero_initialised_biases_train_under_the_default_trust_ratio(cls):
    def trained_bias(**kwargs):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])  # Dense biases start at zero
        model.compile(optimizer=cls(learning_rate=1e-2, **kwargs), loss="mse")
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")
        model.fit(x, y, epochs=40, batch_size=64, verbose=0)
        return float(np.abs(model.layers[0].bias.numpy()).max())

    assert trained_bias() > 1e-3  # a ratio of 1 where ||theta|| = 0: it moves about lr per step at first
    assert trained_bias(zero_norm_ratio=None) < 1e-8  # the paper's formula: about lr * norm_eps per step
