"""Float64 parity of the Keras optimizers with the NumPy core and with the straight transcriptions.

Used by the TensorFlow worker (eager and XLA) and the other-backend worker (eager). The references are the
``valley_core`` factories run on NumPy float64 (the ground truth of the project) and, for ALTO and EAdam,
the independent transcriptions in ``tests/core/transcription.py``.
"""

from __future__ import annotations

import array_api_compat.numpy as xp_numpy
import keras
import numpy as np

import valley_core as vc
from backends.keras import ALTO, ESGD, ALTOVanilla, EAdam, EAdamW, Lamb
from tests.core import transcription
from tests.keras._harness import Checks, relative_error

SHAPES = [(4, 3), (3,), (2, 2, 2)]
NAMES = ["kernel", "bias", "filters"]
STEPS = 60
TOLERANCE = 1e-9


def _exponential_core(initial, rate, steps):
    # Keras evaluates a schedule at the 0-based iteration, the core at the 1-based step k.
    return lambda k: initial * rate ** ((k - 1) / steps)


# name: (Keras class, Keras kwargs, core factory, core kwargs)
CONFIGS = {
    "alto": (
        ALTO,
        dict(learning_rate=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01),
        vc.alto,
        dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01),
    ),
    "alto_exploit": (
        ALTO,
        dict(learning_rate=0.01, alpha=0.5, betas=(0.01, 0.9, 0.99)),
        vc.alto,
        dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.99)),
    ),
    "alto_masked": (
        ALTO,
        dict(
            learning_rate=0.02,
            alpha=-0.5,
            betas=(0.5, 0.9, 0.999),
            weight_decay=0.01,
            weight_decay_exclude_names=["bias"],
            trust_ratio_exclude_names=["bias"],
        ),
        vc.alto,
        dict(
            lr=0.02,
            alpha=-0.5,
            betas=(0.5, 0.9, 0.999),
            weight_decay=0.01,
            weight_decay_mask=(True, False, True),
            trust_ratio_mask=(True, False, True),
        ),
    ),
    "alto_schedule": (
        ALTO,
        dict(
            learning_rate=keras.optimizers.schedules.ExponentialDecay(
                np.float64(0.02), 10, np.float64(0.7)
            ),  # float64: Keras casts via float32
            alpha=-0.5,
            betas=(0.5, 0.9, 0.999),
            weight_decay=0.01,
        ),
        vc.alto,
        dict(lr=_exponential_core(0.02, 0.7, 10), alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01),
    ),
    "alto_vanilla": (
        ALTOVanilla,
        dict(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01),
        vc.alto_vanilla,
        dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.01),
    ),
    "lamb": (
        Lamb,
        dict(learning_rate=0.01, betas=(0.9, 0.999), weight_decay=0.01),
        vc.lamb,
        dict(lr=0.01, betas=(0.9, 0.999), weight_decay=0.01),
    ),
    "eadam": (
        EAdam,
        dict(learning_rate=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=0.01),
        vc.eadam,
        dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=0.01),
    ),
    "eadamw": (
        EAdamW,
        dict(learning_rate=0.005, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.05),
        vc.eadamw,
        dict(lr=0.005, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.05),
    ),
    "esgd": (
        ESGD,
        dict(learning_rate=1e-3, alpha=0.5, betas=(0.01, 0.9), weight_decay=0.01),
        vc.esgd,
        dict(lr=1e-3, alpha=0.5, betas=(0.01, 0.9), weight_decay=0.01),
    ),
}


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in SHAPES]
    grads = transcription.drifting_gradients(SHAPES, STEPS, seed + 1)
    return params, grads


def run_core(factory, kwargs, params, grads):
    transform = factory(**kwargs)
    theta = tuple(np.array(p, dtype=np.float64) for p in params)
    state = transform.init(theta, xp=xp_numpy)
    for step_grads in grads:
        updates, state = transform.update(tuple(np.asarray(g) for g in step_grads), state, theta, xp=xp_numpy)
        theta = vc.apply_updates(theta, updates)
    return theta, vc.state_to_dict(state)


def run_keras(cls, kwargs, params, grads, mode):
    """Builds ``cls(**kwargs)`` over float64 variables holding ``params`` (named from ``NAMES``, then ``w3``,
    ``w4`` ...) and applies ``grads`` eagerly or under ``tf.function(jit_compile=True)`` (``mode="jit"``)."""
    names = [*NAMES, *(f"w{i}" for i in range(len(NAMES), len(params)))]
    variables = [keras.Variable(np.array(p, dtype="float64"), name=n, dtype="float64") for p, n in zip(params, names)]
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


def compare_with_core(optimizer, variables, core_params, core_state):
    """Variables and every optimizer state array against the core; returns a summary."""
    worst = 0.0
    compared = 0
    for index, variable in enumerate(variables):
        error = relative_error(keras.ops.convert_to_numpy(variable), core_params[index])
        assert error < TOLERANCE, f"variable {variable.name}: relative error {error:.3g}"
        worst = max(worst, error)
        for key, value in vc.state_to_dict(optimizer.core_state(variable)).items():
            value = keras.ops.convert_to_numpy(value)
            if key.endswith(".0"):  # a per-tensor buffer of this variable
                expected = core_state[key[:-2] + f".{index}"]
            else:  # a step counter
                expected = core_state[key]
                assert int(value) == int(expected) == STEPS, f"{key}: {value} vs core {expected}"
                continue
            error = relative_error(value, expected)
            assert error < TOLERANCE, f"optimizer state {key} of {variable.name}: relative error {error:.3g}"
            worst = max(worst, error)
            compared += 1
    assert compared >= len(variables), "no optimizer state was compared"
    keras_own = [v for v in optimizer.variables if v.name in ("iteration", "learning_rate")]
    assert len(optimizer.variables) == len(keras_own) + compared, "optimizer variables are not Keras' + state"
    return f"{compared} state arrays + {len(variables)} variables, worst relative error {worst:.2e}"


def add_parity_checks(checks: Checks, modes) -> None:
    keras.config.set_floatx("float64")
    params, grads = problem()
    for name, (cls, keras_kwargs, factory, core_kwargs) in CONFIGS.items():
        core_params, core_state = run_core(factory, core_kwargs, params, grads)
        for mode in modes:
            checks.run(
                f"parity[{name}-{mode}]",
                lambda: compare_with_core(*run_keras(cls, keras_kwargs, params, grads, mode), core_params, core_state),
            )

    def alto_vs_transcription():
        hyper = dict(alpha=-0.5, betas=(0.5, 0.9, 0.999), eps=1e-6, weight_decay=0.01, trust_eps=1e-6, norm_eps=1e-10)
        theta, buffers = transcription.alto(params, grads, lr=0.02, bias_correction=True, **hyper)
        optimizer, variables = run_keras(ALTO, dict(learning_rate=0.02, **hyper), params, grads, modes[-1])
        beta1 = hyper["betas"][0]
        for i, variable in enumerate(variables):
            state = vc.state_to_dict(optimizer.core_state(variable))
            expected = {
                "AdamState.first.0": buffers["m"][i],
                "AdamState.second.0": buffers["v"][i],
                # the one-buffer carry b_{k+1} = beta1 a_k - (1 - beta1) g_k (algorithm.md, section 1)
                "EState.carry.0": beta1 * buffers["a"][i] - (1 - beta1) * buffers["g_prev"][i],
            }
            assert relative_error(keras.ops.convert_to_numpy(variable), theta[i]) < TOLERANCE
            for key, value in expected.items():
                error = relative_error(keras.ops.convert_to_numpy(state[key]), value)
                assert error < TOLERANCE, f"{key} of {variable.name}: {error:.3g}"
        return "ALTO (Algorithm 2) matches the two-buffer transcription"

    def eadam_excluded_vs_transcription():
        optimizer, variables = run_keras(
            EAdam,
            dict(
                learning_rate=0.01,
                alpha=0.5,
                betas=(0.01, 0.9, 0.999),
                weight_decay=0.05,
                weight_decay_exclude_names=["bias"],
            ),
            params,
            grads,
            modes[-1],
        )
        for i, variable in enumerate(variables):
            decay = 0.0 if NAMES[i] == "bias" else 0.05
            theta, _ = transcription.eadam(
                [params[i]],
                [[g[i]] for g in grads],
                lr=0.01,
                alpha=0.5,
                betas=(0.01, 0.9, 0.999),
                eps=1e-8,
                weight_decay=decay,
                decoupled=False,
            )
            error = relative_error(keras.ops.convert_to_numpy(variable), theta[0])
            assert error < TOLERANCE, f"{variable.name}: {error:.3g}"
        return "EAdam with 'bias' excluded from L2 decay matches the transcription"

    checks.run("transcription[alto]", alto_vs_transcription)
    checks.run("transcription[eadam-excluded]", eadam_excluded_vs_transcription)
