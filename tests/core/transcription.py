"""Straight float64 transcriptions of the paper's algorithms, written from shared/design/algorithm.md.

These are the golden oracles: plain NumPy loops with the TWO-buffer E adaptor (``a`` and ``g_prev``), no
code from ``valley_core``. They return the final parameters and every state buffer.
"""

from __future__ import annotations

import numpy as np


def _norm(x):
    return float(np.sqrt(np.sum(x * x)))


def _value(hp, k):
    return hp(k) if callable(hp) else hp


def alto(
    params,
    grad_sequence,
    lr,
    alpha,
    betas,
    eps,
    weight_decay,
    trust_eps,
    norm_eps,
    bias_correction,
    weight_decay_mask=None,
    trust_ratio_mask=None,
):
    """Algorithm 2 (bias_correction=True) or Algorithm 1 (False) of the paper; alpha=0 is Lamb."""
    beta1, beta2, beta3 = betas
    n = len(params)
    wd_mask = weight_decay_mask or [True] * n
    tr_mask = trust_ratio_mask or [True] * n
    theta = [np.array(p, dtype=np.float64) for p in params]
    a = [np.zeros_like(p) for p in theta]
    g_prev = [np.zeros_like(p) for p in theta]
    m = [np.zeros_like(p) for p in theta]
    v = [np.zeros_like(p) for p in theta]
    for k, grads in enumerate(grad_sequence, start=1):
        for i in range(n):
            g = grads[i]
            a[i] = beta1 * a[i] + (1 - beta1) * (g - g_prev[i])
            g_prev[i] = g
            u = g + _value(alpha, k) * a[i]
            m[i] = beta2 * m[i] + (1 - beta2) * u
            v[i] = beta3 * v[i] + (1 - beta3) * u**2
            if bias_correction:
                m_hat, v_hat = m[i] / (1 - beta2**k), v[i] / (1 - beta3**k)
            else:
                m_hat, v_hat = m[i], v[i]
            r = m_hat / (np.sqrt(v_hat) + eps)
            if wd_mask[i]:
                r = r + _value(weight_decay, k) * theta[i]
            if tr_mask[i]:
                phi = _norm(theta[i]) + norm_eps
                theta[i] = theta[i] - _value(lr, k) * r * phi / (_norm(r) + trust_eps * phi)
            else:
                theta[i] = theta[i] - _value(lr, k) * r
    return theta, {"a": a, "g_prev": g_prev, "m": m, "v": v}


def eadam(
    params, grad_sequence, lr, alpha, betas, eps, weight_decay, decoupled, bias_correction=True, weight_decay_mask=None
):
    """EAdam (L2 weight decay on the gradient) or EAdamW (decoupled); alpha=0 is Adam/AdamW."""
    beta1, beta2, beta3 = betas
    wd_mask = weight_decay_mask or [True] * len(params)
    theta = [np.array(p, dtype=np.float64) for p in params]
    a = [np.zeros_like(p) for p in theta]
    g_prev = [np.zeros_like(p) for p in theta]
    m = [np.zeros_like(p) for p in theta]
    v = [np.zeros_like(p) for p in theta]
    for k, grads in enumerate(grad_sequence, start=1):
        for i in range(len(theta)):
            g = grads[i] if decoupled else grads[i] + _value(weight_decay, k) * theta[i]
            a[i] = beta1 * a[i] + (1 - beta1) * (g - g_prev[i])
            g_prev[i] = g
            u = g + _value(alpha, k) * a[i]
            m[i] = beta2 * m[i] + (1 - beta2) * u
            v[i] = beta3 * v[i] + (1 - beta3) * u**2
            if bias_correction:
                m_hat, v_hat = m[i] / (1 - beta2**k), v[i] / (1 - beta3**k)
            else:
                m_hat, v_hat = m[i], v[i]
            step = m_hat / (np.sqrt(v_hat) + eps)
            if decoupled and wd_mask[i]:
                step = step + _value(weight_decay, k) * theta[i]
            theta[i] = theta[i] - _value(lr, k) * step
    return theta, {"a": a, "g_prev": g_prev, "m": m, "v": v}


def esgd(params, grad_sequence, lr, alpha, betas, weight_decay):
    """ESGD: heavy-ball momentum m = beta2 m + u on the adapted gradient; alpha=0 is SGD."""
    beta1, beta2 = betas
    theta = [np.array(p, dtype=np.float64) for p in params]
    a = [np.zeros_like(p) for p in theta]
    g_prev = [np.zeros_like(p) for p in theta]
    m = [np.zeros_like(p) for p in theta]
    for k, grads in enumerate(grad_sequence, start=1):
        for i in range(len(theta)):
            g = grads[i] + _value(weight_decay, k) * theta[i]
            a[i] = beta1 * a[i] + (1 - beta1) * (g - g_prev[i])
            g_prev[i] = g
            u = g + _value(alpha, k) * a[i]
            m[i] = beta2 * m[i] + u
            theta[i] = theta[i] - _value(lr, k) * m[i]
    return theta, {"a": a, "g_prev": g_prev, "m": m}


def drifting_gradients(shapes, steps, seed):
    """Gradients that drift slowly and carry noise, independent of the parameters (so errors do not feed back)."""
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=s) for s in shapes]
    drift = [rng.normal(size=s) * 0.01 for s in shapes]
    return [[b + d * k + 0.3 * rng.normal(size=s) for b, d, s in zip(base, drift, shapes)] for k in range(steps)]
