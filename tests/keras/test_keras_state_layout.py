"""Optimizer state shaped like the parameters (TensorFlow backend, in this process), and checkpoints of
valley 0.1.0's layout.

Every optimizer variable is created from its parameter: named ``<optimizer>/<parameter path>_<state field>``,
shaped like it (AdamCM's stack of critical momenta: ``(top_c, *shape)``, its priorities ``(top_c,)``), in
float32 for a 16-bit parameter; the step counter is Keras' ``iterations`` and there is no other. The layout
under ``keras.distribution`` is checked on JAX (``test_keras_jax_distribution.py``).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the in-process Keras tests run on the TensorFlow backend", allow_module_level=True)

import valley_core as vc  # noqa: E402
from backends.keras import ALTO, ESGD, AdamCM, ALTOVanilla, EAdam, EAdamW, Lamb  # noqa: E402

EVERY = (ALTO, ALTOVanilla, Lamb, EAdam, EAdamW, ESGD, AdamCM)
# The core's per-parameter state fields of each optimizer, as the optimizer variables name them.
FIELDS = {
    ALTO: ["e_carry", "adam_first", "adam_second"],
    ALTOVanilla: ["e_carry", "adam_first", "adam_second"],
    Lamb: ["adam_first", "adam_second"],
    EAdam: ["e_carry", "adam_first", "adam_second"],
    EAdamW: ["e_carry", "adam_first", "adam_second"],
    ESGD: ["e_carry", "trace_momentum"],
    AdamCM: [
        "criticalmomenta_first",
        "criticalmomenta_second",
        "criticalmomenta_buffer",
        "criticalmomenta_priorities",
    ],
}
LEGACY = Path(__file__).parent / "data" / "keras_checkpoints_valley_0.1.0.pkl.gz"


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.config.set_floatx("float32")
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("cls", EVERY, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_optimizer_variable_is_made_from_its_parameter(cls, dtype):
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(3, dtype=dtype), keras.layers.Dense(2, dtype=dtype)]
    model = keras.Sequential([keras.Input((4,)), *layers])
    optimizer = cls(learning_rate=0.01)
    parameters = model.trainable_variables
    optimizer.apply_gradients([(keras.ops.ones(p.shape, p.dtype), p) for p in parameters])  # eager, one step

    expected = [f"{optimizer.name}/iteration", f"{optimizer.name}/learning_rate"]
    shapes = {}
    for parameter in parameters:
        prefix = f"{optimizer.name}/{parameter.path.replace('/', '_')}_"
        for field in FIELDS[cls]:
            expected.append(prefix + field)
            shape = tuple(parameter.shape)
            if field == "criticalmomenta_buffer":
                shape = (optimizer.hyperparameters["top_c"],) + shape
            elif field == "criticalmomenta_priorities":
                shape = (optimizer.hyperparameters["top_c"],)
            shapes[prefix + field] = shape
    assert [v.path for v in optimizer.variables] == expected
    for variable in optimizer.variables[2:]:
        assert tuple(variable.shape) == shapes[variable.path], variable.path
        assert variable.dtype == "float32", variable.path  # float32 state for a 16-bit parameter too
    # One step counter: Keras' own, which the core's counts are read from.
    counters = [v for v in optimizer.variables if "int" in v.dtype]
    assert counters == [optimizer.iterations] and int(optimizer.iterations) == 1
    for parameter in parameters:
        counts = {k: v for k, v in vc.state_to_dict(optimizer.core_state(parameter)).items() if k.endswith(".count")}
        assert counts and all(int(count) == 1 for count in counts.values()), counts


@pytest.mark.parametrize("name", [c.__name__ for c in EVERY])
def test_checkpoints_of_valley_0_1_0_load_and_give_the_same_next_step(name, tmp_path):
    """``.keras`` files written by valley 0.1.0's code (tests/keras/data/make_legacy_fixtures.py) load with
    today's code, and their next step equals the one that code took."""
    legacy = pickle.loads(gzip.decompress(LEGACY.read_bytes()))["cases"][name]
    path = tmp_path / "legacy.keras"
    path.write_bytes(legacy["keras"])
    model = keras.models.load_model(path)
    assert type(model.optimizer).__name__ == name
    assert int(model.optimizer.iterations) == 3
    model.train_on_batch(legacy["x"], legacy["y"])
    for actual, expected in zip(model.get_weights(), legacy["weights_after"]):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    after = list(legacy["optimizer_variables_after"].values())
    assert len(model.optimizer.variables) == len(after)
    for variable, expected in zip(model.optimizer.variables, after):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=variable.path)
