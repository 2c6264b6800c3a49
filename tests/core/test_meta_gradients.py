"""Gradients through unrolled ALTO/Lamb updates are finite for zero-initialised tensors (issue 23 item 7).

The trust ratio takes ``||theta||``; at a tensor of zeros ``sqrt``'s derivative is infinite, and reverse-mode
autodiff multiplied it by a zero cotangent: NaN for every meta-gradient (a learned learning rate, gradients
w.r.t. the initial parameters). The core's portable norm (``reductions.safe_sqrt``, the double ``where``) is
what namespaces without ``linalg.vector_norm`` run: the JAX adapter, Keras' shim, the fast paths' tracer.
Here torch runs the core through such a namespace (and through array-api-compat's, whose ``vector_norm``
torch differentiates safely by itself); the values must stay those of the old formula bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from valley_core import reductions

torch = pytest.importorskip("torch")
torch_xp = pytest.importorskip("array_api_compat.torch")


class _WithoutLinalg:
    """torch's array-API namespace without ``linalg``: the core takes its portable norm."""

    linalg = None

    def __getattr__(self, name):
        return getattr(torch_xp, name)


NAMESPACES = {"portable": _WithoutLinalg(), "array_api_compat.torch": torch_xp}
OPTIMIZERS = {
    "alto": lambda **kw: vc.alto(1e-2, alpha=-1.0, betas=(0.5, 0.9, 0.99), **kw),
    "lamb": lambda **kw: vc.lamb(1e-2, **kw),
}


def _old_l2_norm(array, xp):
    """The norm before the fix, transcribed: ``vector_norm`` if the namespace has it, else sqrt(sum(x*x))."""
    linalg = getattr(xp, "linalg", None)
    if linalg is not None and hasattr(linalg, "vector_norm"):
        return linalg.vector_norm(array)
    return xp.sqrt(xp.sum(array * array))


def _data():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(6, 3)))
    y = torch.tensor(rng.normal(size=(6, 2)))
    return x, y


def _unrolled(make, xp, params, steps=3):
    """Params after ``steps`` updates on a linear least-squares loss, differentiable w.r.t. the start."""
    x, y = (t.to(params[0].dtype) for t in _data())
    transform = make()
    state = transform.init(params, xp=xp)
    for _ in range(steps):
        loss = ((x @ params[0] + params[1] - y) ** 2).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        updates, state = transform.update(grads, state, params, xp=xp)
        params = vc.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("zero_norm_ratio", [1.0, None], ids=["ratio1", "paper"])
@pytest.mark.parametrize("namespace", sorted(NAMESPACES))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gradient_through_unrolled_updates_of_zero_tensors_is_finite(name, namespace, zero_norm_ratio):
    start = (torch.zeros(3, 2, dtype=torch.float64, requires_grad=True), torch.zeros(2, dtype=torch.float64))
    start[1].requires_grad_(True)
    make = lambda: OPTIMIZERS[name](zero_norm_ratio=zero_norm_ratio)  # noqa: E731
    final = _unrolled(make, NAMESPACES[namespace], start)
    x, y = _data()
    loss = ((x @ final[0] + final[1] - y) ** 2).mean()
    meta = torch.autograd.grad(loss, start)
    assert all(bool(torch.isfinite(g).all()) for g in meta), meta
    assert any(float(g.abs().max()) > 0 for g in meta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_values_are_the_old_formulas_bit_for_bit(monkeypatch, name, dtype):
    """Zero and non-zero tensors, 8 steps: the same bits as with the old norm, on both namespaces."""
    rng = np.random.default_rng(1)
    start = (torch.zeros(3, 2, dtype=dtype), torch.tensor(rng.normal(size=2), dtype=dtype))
    start = tuple(p.requires_grad_(True) for p in start)  # the loss's gradient is taken by autograd
    results = {}
    for formula in ("new", "old"):
        if formula == "old":
            monkeypatch.setattr(reductions, "l2_norm", _old_l2_norm)
        for namespace, xp in NAMESPACES.items():
            results[formula, namespace] = [p.detach() for p in _unrolled(OPTIMIZERS[name], xp, start, steps=8)]
    for namespace in NAMESPACES:
        for new, old in zip(results["new", namespace], results["old", namespace]):
            assert torch.equal(new, old), namespace
        assert not torch.equal(results["new", namespace][0], start[0])  # the zero tensor trained


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_safe_sqrt_is_sqrt_bit_for_bit(dtype):
    import array_api_compat.numpy as xp

    tiny = np.finfo(dtype).smallest_subnormal
    values = np.array([0.0, -0.0, tiny, 1e-30, 0.25, 2.0, 1e30, np.inf, np.nan], dtype=dtype)
    for value in values:
        expected = np.sqrt(value)
        actual = reductions.safe_sqrt(xp.asarray(value), xp)
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(actual), expected)
        assert np.signbit(actual) == np.signbit(expected)


def test_safe_sqrt_has_a_finite_gradient_at_zero():
    value = torch.tensor([0.0, 4.0], dtype=torch.float64, requires_grad=True)
    out = torch.stack([reductions.safe_sqrt(v, torch_xp) for v in value])
    (grad,) = torch.autograd.grad(out.sum(), value)
    assert grad.tolist() == [1.0, 0.25]  # finite at 0 (1: the identity branch); a norm's is then 2x * 1 = 0
