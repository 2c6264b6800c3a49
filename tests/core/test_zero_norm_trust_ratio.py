"""The trust ratio where a norm is zero (issue 13, defect 7): zero-initialised tensors train by default, and the
paper's exact formula stays available as ``zero_norm_ratio=None``.

Oracle: a straight transcription of ALTO's step (one tensor, NumPy float64) with the rule written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from tests.core.helpers import to_numpy


def _transcribed_alto(theta, grads, lr, alpha, beta1, beta2, beta3, eps, wd, trust_eps, norm_eps, zero_ratio):
    a = np.zeros_like(theta)
    g_prev = np.zeros_like(theta)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for k, g in enumerate(grads, start=1):
        a = beta1 * a + (1 - beta1) * (g - g_prev)
        g_prev = g
        u = g + alpha * a
        m = beta2 * m + (1 - beta2) * u
        v = beta3 * v + (1 - beta3) * u * u
        r = (m / (1 - beta2**k)) / (np.sqrt(v / (1 - beta3**k)) + eps) + wd * theta
        theta_norm, r_norm = np.linalg.norm(theta), np.linalg.norm(r)
        if zero_ratio is not None and (theta_norm == 0 or r_norm == 0):
            ratio = zero_ratio
        else:
            phi = theta_norm + norm_eps
            ratio = phi / (r_norm + trust_eps * phi)
        theta = theta - lr * ratio * r
    return theta


@pytest.mark.parametrize("zero_norm_ratio", [1.0, 0.5, None])
def test_zero_tensor_follows_the_transcribed_rule(xp, zero_norm_ratio):
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(4,)) for _ in range(12)]
    hyper = dict(lr=1e-2, alpha=-0.5, beta1=0.5, beta2=0.9, beta3=0.99, eps=1e-6, wd=1e-4)
    expected = _transcribed_alto(
        np.zeros(4), grads, trust_eps=1e-6, norm_eps=1e-10, zero_ratio=zero_norm_ratio, **hyper
    )
    opt = vc.alto(
        lr=1e-2,
        alpha=-0.5,
        betas=(0.5, 0.9, 0.99),
        eps=1e-6,
        weight_decay=1e-4,
        zero_norm_ratio=zero_norm_ratio,
    )
    params = (xp.zeros((4,), dtype=xp.float64),)
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update((xp.asarray(g),), state, params)
        params = vc.apply_updates(params, updates)
    np.testing.assert_allclose(to_numpy(params[0]), expected, rtol=1e-12, atol=1e-300)
    moved = np.abs(expected).max()
    if zero_norm_ratio is None:
        assert moved < 1e-9  # the paper's formula: lr * norm_eps-sized first step, and it stays tiny
    else:
        assert moved > 1e-3


def test_with_trust_eps_zero_a_zero_update_does_not_make_nan(xp):
    opt = vc.lamb(lr=1e-2, weight_decay=0.0, trust_eps=0.0, norm_eps=0.0)
    params = (xp.ones((3,), dtype=xp.float64), xp.zeros((2,), dtype=xp.float64))
    state = opt.init(params)
    updates, _ = opt.update((xp.zeros((3,), dtype=xp.float64), xp.zeros((2,), dtype=xp.float64)), state, params)
    for update in updates:
        assert np.all(np.isfinite(to_numpy(update)))


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "one", True])
def test_zero_norm_ratio_is_validated(bad):
    with pytest.raises(ValueError, match="zero_norm_ratio="):
        vc.alto(zero_norm_ratio=bad)
