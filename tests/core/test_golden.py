"""Golden tests: the core against straight transcriptions of the algorithms, float64, on every namespace."""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from tests.core import transcription as golden
from tests.core.helpers import relative_error, run_core

SHAPES = [(1,), (), (5,), (3, 4), (2, 3, 5)]
STEPS = 300
TOLERANCE = 1e-12


def _params(seed=7):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in SHAPES]


def _masks():
    return [True, False, True, False, True], [False, True, True, True, True]


def _cases():
    """(id, core factory call, transcription call, expected state layout)."""
    wd_mask, tr_mask = _masks()
    schedule = dict(lr=vc.inverse_sqrt(1e-2), alpha=vc.inverse_sqrt(-2.0), weight_decay=vc.inverse_sqrt(1e-3))
    lamb_common = dict(eps=1e-6, trust_eps=1e-6, norm_eps=1e-10)
    return [
        (
            "alto_large_batch",
            lambda: vc.alto(lr=1e-2, alpha=-5.0, betas=(0.99, 0.9, 0.99), weight_decay=1e-4),
            lambda p, g: golden.alto(p, g, 1e-2, -5.0, (0.99, 0.9, 0.99), 1e-6, 1e-4, 1e-6, 1e-10, True),
            "alto",
        ),
        (
            "alto_small_batch",
            lambda: vc.alto(lr=1e-3, alpha=0.5, betas=(0.01, 0.9, 0.99), weight_decay=1e-2),
            lambda p, g: golden.alto(p, g, 1e-3, 0.5, (0.01, 0.9, 0.99), 1e-6, 1e-2, 1e-6, 1e-10, True),
            "alto",
        ),
        (
            "alto_vanilla",
            lambda: vc.alto_vanilla(lr=1e-2, alpha=-3.0, betas=(0.9, 0.8, 0.95), weight_decay=1e-3),
            lambda p, g: golden.alto(p, g, 1e-2, -3.0, (0.9, 0.8, 0.95), 1e-6, 1e-3, 1e-6, 1e-10, False),
            "alto",
        ),
        (
            "alto_masks",
            lambda: vc.alto(
                lr=1e-2,
                alpha=-2.0,
                betas=(0.9, 0.9, 0.99),
                weight_decay=1e-2,
                weight_decay_mask=wd_mask,
                trust_ratio_mask=tr_mask,
            ),
            lambda p, g: golden.alto(
                p, g, 1e-2, -2.0, (0.9, 0.9, 0.99), 1e-6, 1e-2, 1e-6, 1e-10, True, wd_mask, tr_mask
            ),
            "alto",
        ),
        (
            "alto_schedules",
            lambda: vc.alto(betas=(0.9, 0.9, 0.99), **schedule),
            lambda p, g: golden.alto(
                p,
                g,
                lambda k: 1e-2 / np.sqrt(k),
                lambda k: -2.0 / np.sqrt(k),
                (0.9, 0.9, 0.99),
                1e-6,
                lambda k: 1e-3 / np.sqrt(k),
                1e-6,
                1e-10,
                True,
            ),
            "alto",
        ),
        (
            "lamb",
            lambda: vc.lamb(lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-2, **lamb_common),
            lambda p, g: golden.alto(p, g, 1e-2, 0.0, (0.5, 0.9, 0.99), 1e-6, 1e-2, 1e-6, 1e-10, True),
            "lamb",
        ),
        (
            "eadam",
            lambda: vc.eadam(lr=1e-2, alpha=0.5, betas=(0.01, 0.9, 0.999), eps=1e-8, weight_decay=1e-3),
            lambda p, g: golden.eadam(p, g, 1e-2, 0.5, (0.01, 0.9, 0.999), 1e-8, 1e-3, decoupled=False),
            "eadam",
        ),
        (
            "adam",
            lambda: vc.adam(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3),
            lambda p, g: golden.eadam(p, g, 1e-2, 0.0, (0.5, 0.9, 0.999), 1e-8, 1e-3, decoupled=False),
            "adam",
        ),
        (
            "eadamw",
            lambda: vc.eadamw(lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.999), eps=1e-8, weight_decay=1e-2),
            lambda p, g: golden.eadam(p, g, 1e-2, -2.0, (0.9, 0.9, 0.999), 1e-8, 1e-2, decoupled=True),
            "eadam",
        ),
        (
            "adamw",
            lambda: vc.adamw(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
            lambda p, g: golden.eadam(p, g, 1e-2, 0.0, (0.5, 0.9, 0.999), 1e-8, 1e-2, decoupled=True),
            "adam",
        ),
        (
            "esgd",
            lambda: vc.esgd(lr=1e-3, alpha=0.5, betas=(0.01, 0.9), weight_decay=1e-3),
            lambda p, g: golden.esgd(p, g, 1e-3, 0.5, (0.01, 0.9), 1e-3),
            "esgd",
        ),
        (
            "esgd_explore",
            lambda: vc.esgd(lr=1e-3, alpha=-5.0, betas=(0.9, 0.0)),
            lambda p, g: golden.esgd(p, g, 1e-3, -5.0, (0.9, 0.0), 0.0),
            "esgd",
        ),
        (
            "sgd",
            lambda: vc.sgd(lr=1e-3, momentum=0.9, weight_decay=1e-3),
            lambda p, g: golden.esgd(p, g, 1e-3, 0.0, (0.5, 0.9), 1e-3),
            "sgd",
        ),
    ]


CASES = _cases()


def _expected_state(kind, expected, beta1):
    """Maps the transcription's buffers onto the core's state names."""
    flat = {}
    for i in range(len(SHAPES)):
        if kind in ("alto", "eadam", "esgd"):
            # The one-buffer carry after step k is b_{k+1} = beta1 a_k - (1 - beta1) g_k.
            flat[f"EState.carry.{i}"] = beta1 * expected["a"][i] - (1 - beta1) * expected["g_prev"][i]
        if kind in ("alto", "eadam", "lamb", "adam"):
            flat[f"AdamState.first.{i}"] = expected["m"][i]
            flat[f"AdamState.second.{i}"] = expected["v"][i]
        if kind in ("esgd", "sgd"):
            flat[f"TraceState.momentum.{i}"] = expected["m"][i]
    return flat


@pytest.mark.parametrize("case_id,make_core,make_golden,kind", CASES, ids=[c[0] for c in CASES])
def test_core_matches_transcription(xp, case_id, make_core, make_golden, kind):
    params = _params()
    grads = golden.drifting_gradients(SHAPES, STEPS, seed=11)
    expected_params, expected_state = make_golden(params, grads)
    transform = make_core()
    actual_params, actual_state = run_core(transform, params, grads, xp)

    for index, (actual, expected) in enumerate(zip(actual_params, expected_params)):
        assert relative_error(actual, expected) <= TOLERANCE, f"param {index} (shape {SHAPES[index]})"
        # The run must have moved the parameters, or the comparison proves nothing.
        assert relative_error(expected, params[index]) > 1e-4
    beta1 = {
        "alto_large_batch": 0.99,
        "alto_small_batch": 0.01,
        "alto_vanilla": 0.9,
        "alto_masks": 0.9,
        "alto_schedules": 0.9,
        "eadam": 0.01,
        "eadamw": 0.9,
        "esgd": 0.01,
        "esgd_explore": 0.9,
    }.get(case_id)
    actual_flat = vc.state_to_dict(actual_state)
    expected_flat = _expected_state(kind, expected_state, beta1)
    assert expected_flat, "no state compared"
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
