"""Float64 parity of the Keras optimizers with the NumPy core and the independent oracles, over the table.

Used by the TensorFlow worker (eager and XLA) and the other-backend worker (eager). Every record of
``tests/optimizers.py`` that Keras claims (``core``) runs against the ``valley_core`` factory on NumPy float64
(the ground truth of the project), variables and every optimizer state array, and against its oracle: the
transcription of the paper (``tests/core/transcription.py``) or Adam+CM's reference port.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import keras
import numpy as np

import backends.keras
import valley_core as vc
from backends.keras import AdamCM, EAdam
from tests.core import transcription
from tests.keras._harness import Checks, relative_error
from tests.optimizers import BY_ID, CASES, oracle_run

NAMES = ["kernel", "bias", "filters"]
STEPS = 60
#: The Keras class of each core optimizer Keras has (every ``ValleyOptimizer`` that ``backends.keras`` exports).
CLASSES = {
    name: cls
    for cls in (getattr(backends.keras, n) for n in backends.keras.__all__)
    if getattr(cls, "core_factory", None) is not None
    for name, factory in vc.OPTIMIZERS.items()
    if factory is cls.core_factory
}
#: The records Keras claims: one parity check per record and mode.
CONFIGS = [c.id for c in CASES if "core" in c.backends.get("keras", ())]


def check_names(modes):
    """Every check ``add_parity_checks(checks, modes)`` runs."""
    names = [f"parity[{i}-{m}]" for i in CONFIGS for m in modes] + [f"transcription[{i}]" for i in CONFIGS]
    return names + ["transcription[eadam-excluded]", *(f"adam_cm[{n}]" for n in ADAM_CM_CHECKS)]


class CoreSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A core schedule ``k -> lr_k`` as a Keras schedule of the 0-based iteration (the core's k is 1-based)."""

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, step):
        return self.schedule(keras.ops.cast(step, keras.config.floatx()) + 1)


def keras_kwargs(case, params, **overrides):
    """The record's hyperparameters (with the core's defaults, where Keras' differ) as Keras keywords:
    ``learning_rate``, masks as excluded variable names."""
    defaults = {k: p.default for k, p in inspect.signature(vc.OPTIMIZERS[case.name]).parameters.items()}
    kwargs = {**defaults, "weight_decay_mask": None, "trust_ratio_mask": None, **case.kwargs("keras"), **overrides}
    lr = kwargs.pop("lr", None)
    if lr is not None:
        kwargs["learning_rate"] = CoreSchedule(lr) if callable(lr) else lr
    for key in ("weight_decay_mask", "trust_ratio_mask"):
        mask = kwargs.pop(key, None)
        if mask is not None:
            mask = mask(params) if callable(mask) else mask
            kwargs[key.replace("mask", "exclude_names")] = [NAMES[i] for i, on in enumerate(mask) if not on]
    return kwargs


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in [(4, 3), (3,), (2, 2, 2)]]
    return params, transcription.drifting_gradients([p.shape for p in params], STEPS, seed + 1)


def run_core(transform, params, grads):
    theta = tuple(np.array(p, dtype=np.float64) for p in params)
    state = transform.init(theta)
    for step_grads in grads:
        updates, state = transform.update(tuple(np.asarray(g) for g in step_grads), state, theta)
        theta = vc.apply_updates(theta, updates)
    return theta, vc.state_to_dict(state)


def run_keras(cls, kwargs, params, grads, mode):
    """Builds ``cls(**kwargs)`` over float64 variables holding ``params`` (named from ``NAMES``) and applies
    ``grads`` eagerly or under ``tf.function(jit_compile=True)`` (``mode="jit"``)."""
    variables = [keras.Variable(np.array(p, dtype="float64"), name=n, dtype="float64") for p, n in zip(params, NAMES)]
    optimizer = cls(**kwargs)
    optimizer.build(variables)
    if mode == "jit":
        import tensorflow as tf

        step = tf.function(lambda g: optimizer.apply(g, variables), jit_compile=True)
    else:

        def step(g):
            optimizer.apply(g, variables)

    for step_grads in grads:
        step([keras.ops.convert_to_tensor(g, dtype="float64") for g in step_grads])
    return optimizer, variables


def compare(optimizer, variables, params, state, tolerance):
    """Variables and every optimizer state array (``state``: the core's flat naming) against a reference."""
    compared = 0
    for index, variable in enumerate(variables):
        error = relative_error(keras.ops.convert_to_numpy(variable), params[index])
        assert error < tolerance, f"variable {variable.name}: relative error {error:.3g}"
        for key, value in vc.state_to_dict(optimizer.core_state(variable)).items():
            value = keras.ops.convert_to_numpy(value)
            if not key.endswith(".0"):  # a step counter
                assert int(value) == STEPS, f"{key}: {value}"
                continue
            error = relative_error(value, state[key[:-2] + f".{index}"])
            assert error < tolerance, f"optimizer state {key} of {variable.name}: relative error {error:.3g}"
            compared += 1
    return compared


def add_parity_checks(checks: Checks, modes) -> None:
    keras.config.set_floatx("float64")
    params, grads = problem()
    for case in (BY_ID[i] for i in CONFIGS):
        cls, kwargs, tolerance = CLASSES[case.name], keras_kwargs(case, params), case.tolerance("float64", "keras")[0]
        core_params, core_state = run_core(case.make(), params, grads)

        def parity(cls=cls, kwargs=kwargs, expected=(core_params, core_state, tolerance), mode="eager"):
            optimizer, variables = run_keras(cls, kwargs, params, grads, mode)
            compared = compare(optimizer, variables, *expected)
            assert compared >= len(variables), "no optimizer state was compared"
            keras_own = [v for v in optimizer.variables if v.name in ("iteration", "learning_rate")]
            assert len(optimizer.variables) == len(keras_own) + compared, "optimizer variables are not Keras' + state"
            return f"{compared} state arrays + {len(variables)} variables"

        def oracle(case=case, cls=cls, kwargs=kwargs):
            optimizer, variables = run_keras(cls, kwargs, params, grads, modes[-1])
            if case.oracle == "transcription":
                theta, state = oracle_run(case, params, grads)
                return f"{compare(optimizer, variables, theta, state, 1e-9)} state arrays against the transcription"
            from tests.core.test_adam_cm import AdamCMTranscription, _reference_hyperparameters

            reference = AdamCMTranscription(params, **_reference_hyperparameters(case))
            for step in grads:
                reference.step(step)
            for variable, expected in zip(variables, reference.params):
                assert relative_error(keras.ops.convert_to_numpy(variable), expected) < 1e-9, variable.name
            return "the variables against Adam+CM's reference port"

        for mode in modes:
            checks.run(f"parity[{case.id}-{mode}]", lambda parity=parity, mode=mode: parity(mode=mode))
        checks.run(f"transcription[{case.id}]", oracle)

    def eadam_excluded():  # an L2 optimizer: Keras runs an excluded variable with weight_decay=0
        case = BY_ID["eadam_l2"]
        kwargs = keras_kwargs(case, params, weight_decay_exclude_names=["bias"])
        _, variables = run_keras(EAdam, kwargs, params, grads, modes[-1])
        for i, variable in enumerate(variables):
            decay = 0.0 if NAMES[i] == "bias" else case.hyperparameters["weight_decay"]
            single = replace(case, hyperparameters={**case.hyperparameters, "weight_decay": decay})
            theta, _ = oracle_run(single, [params[i]], [[g[i]] for g in grads])
            assert relative_error(keras.ops.convert_to_numpy(variable), theta[0]) < 1e-9, variable.name

    checks.run("transcription[eadam-excluded]", eadam_excluded)
    add_adam_cm_checks(checks, params, grads)


ADAM_CM_CHECKS = ("one-variable-is-the-reference-default", "kappa-zero-is-adamw")


def add_adam_cm_checks(checks: Checks, params, grads) -> None:
    """What is particular to Keras' Adam+CM (synced=False only): one variable is the reference's default
    (synced=True), and kappa = 0 is AdamW."""
    from tests.core.test_adam_cm import AdamCMTranscription, _reference_hyperparameters

    case = BY_ID["adam_cm_unsynced"]

    def one_variable():
        single = [[g[2]] for g in grads]
        reference = AdamCMTranscription([params[2]], **dict(_reference_hyperparameters(case), synced=True))
        for step in single:
            reference.step(step)
        _, variables = run_keras(AdamCM, keras_kwargs(case, params), [params[2]], single, "eager")
        assert relative_error(keras.ops.convert_to_numpy(variables[0]), reference.params[0]) < 1e-10

    def kappa_zero():
        hp = {k: v for k, v in case.hyperparameters.items() if k in ("lr", "betas", "eps", "weight_decay")}
        expected, _ = run_core(vc.adamw(**hp), params, grads)
        _, variables = run_keras(AdamCM, keras_kwargs(case, params, kappa=0.0), params, grads, "eager")
        for variable, want in zip(variables, expected):
            assert relative_error(keras.ops.convert_to_numpy(variable), want) < 1e-11

    for name, check in zip(ADAM_CM_CHECKS, (one_variable, kappa_zero)):
        checks.run(f"adam_cm[{name}]", check)
