"""``valley_core.REGISTRY``: its records agree with the factories, and its E/base pairs are what they claim."""

from __future__ import annotations

import inspect

import array_api_compat.numpy as xp
import numpy as np
import pytest

import valley_core as vc
from tests.core.helpers import run_core

RECORDS = list(vc.REGISTRY.values())


def test_every_public_factory_has_one_record_named_like_its_transform():
    factories = {
        name
        for name, value in vars(vc.optimizers).items()
        if inspect.isfunction(value) and not name.startswith("_") and value.__module__ == vc.optimizers.__name__
    }
    assert set(vc.REGISTRY) == factories
    assert vc.OPTIMIZERS == {info.name: info.factory for info in RECORDS}
    for info in RECORDS:
        assert info.factory().name == info.name


def test_names_are_unique_and_every_name_finds_its_record():
    for field in ("display_name", "class_name"):
        values = [getattr(info, field) for info in RECORDS]
        assert len(set(values)) == len(values), field
    for info in RECORDS:
        for key in (info.factory, info.name, info.display_name, info.class_name):
            assert vc.info_for(key) is info
    with pytest.raises(KeyError, match="'rmsprop' is not a valley_core optimizer"):
        vc.info_for("rmsprop")


def test_e_optimizer_of_a_base_is_the_one_at_its_defaults():
    assert vc.e_optimizer_of(vc.lamb) is vc.info_for(vc.alto)
    assert vc.e_optimizer_of("sgd").factory is vc.esgd
    assert vc.e_optimizer_of(vc.alto) is None


def _base_arguments(info):
    """The base's arguments matching the E-optimizer's defaults (betas[1:] are the base's moments)."""
    base = vc.REGISTRY[info.base]
    e_defaults = {n: p.default for n, p in inspect.signature(info.factory).parameters.items()}
    arguments = dict(info.base_options)
    for name in inspect.signature(base.factory).parameters:
        if name == "betas":
            arguments[name] = e_defaults["betas"][1:]
        elif name == "momentum":
            arguments[name] = e_defaults["betas"][1]
        elif name in e_defaults:
            arguments[name] = e_defaults[name]
    return base.factory, arguments


@pytest.mark.parametrize("info", [i for i in RECORDS if i.base], ids=lambda i: i.name)
def test_e_optimizer_at_alpha_zero_is_its_base(info):
    rng = np.random.default_rng(7)
    params = (rng.standard_normal((3, 4)), rng.standard_normal(5))
    grads = [tuple(rng.standard_normal(p.shape) for p in params) for _ in range(4)]
    base, arguments = _base_arguments(info)
    expected, _ = run_core(base(**arguments), params, grads, xp)
    actual, _ = run_core(info.factory(alpha=0.0), params, grads, xp)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)
