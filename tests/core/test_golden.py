"""Golden tests: the core against straight transcriptions of the algorithms, float64, on every namespace.

Every record of ``tests/optimizers.py`` with the transcription as oracle, 300 steps, parameters and every state
buffer; then the E adaptor's one-buffer form against the paper's two buffers.
"""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from tests.core import transcription as golden
from tests.core.helpers import relative_error, run_core
from tests.optimizers import cases, oracle_run

SHAPES = [(1,), (), (5,), (3, 4), (2, 3, 5)]
STEPS = 300
TOLERANCE = 1e-12


@pytest.mark.parametrize("case", cases("numpy", where=lambda c: c.oracle == "transcription"))
def test_core_matches_transcription(xp, case):
    rng = np.random.default_rng(7)
    params = [rng.normal(size=s) for s in SHAPES]
    grads = golden.drifting_gradients(SHAPES, STEPS, seed=11)
    expected_params, expected_flat = oracle_run(case, params, grads)
    actual_params, actual_state = run_core(case.make(), params, grads, xp)

    for index, (actual, expected) in enumerate(zip(actual_params, expected_params)):
        assert relative_error(actual, expected) <= TOLERANCE, f"param {index} (shape {SHAPES[index]})"
        # The run must have moved the parameters, or the comparison proves nothing.
        assert relative_error(expected, params[index]) > 1e-4
    actual_flat = vc.state_to_dict(actual_state)
    assert expected_flat, "no state compared"
    assert {k for k in actual_flat if not k.endswith(".count")} == set(expected_flat)
    for key, expected in expected_flat.items():
        assert relative_error(actual_flat[key], expected) <= TOLERANCE, key
    for key, value in actual_flat.items():
        if key.endswith(".count"):
            assert int(value) == STEPS, key


def test_one_buffer_e_equals_two_buffer_formula(xp):
    """The carried form of E gives the same adapted gradients as the direct EMA of differences, 600 steps."""
    beta1, alpha, steps = 0.9, -5.0, 600
    grads = golden.drifting_gradients(SHAPES, steps, seed=3)
    transform = vc.e_adaptor(alpha, beta1)
    state = transform.init(tuple(xp.asarray(g) for g in grads[0]))
    ema = [np.zeros(s) for s in SHAPES]
    previous = [np.zeros(s) for s in SHAPES]
    worst = 0.0
    for step_grads in grads:
        adapted, state = transform.update(tuple(xp.asarray(g) for g in step_grads), state)
        for i, g in enumerate(step_grads):
            ema[i] = beta1 * ema[i] + (1 - beta1) * (g - previous[i])
            previous[i] = g
            worst = max(worst, relative_error(adapted[i], g + alpha * ema[i]))
    assert worst <= TOLERANCE


def test_first_step_of_e_is_not_bias_corrected():
    """a_1 = (1 - beta1) g_1 because g_0 = 0: u_1 = (1 + alpha (1 - beta1)) g_1."""
    transform = vc.e_adaptor(-5.0, 0.99)
    g = np.array([1.0, -2.0, 4.0])
    state = transform.init((g,))
    (u,), _ = transform.update((g,), state)
    np.testing.assert_allclose(u, (1 + -5.0 * 0.01) * g, rtol=1e-15)
