"""Property tests: random shapes and valid hyperparameters give finite state, the same on every namespace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import valley_core as vc
from tests.core.helpers import relative_error, run_core, to_numpy

shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3)
beta = st.floats(0.0, 0.999)


@st.composite
def e_optimizers(draw):
    """A named E-optimizer with valid random hyperparameters (alpha inside the stability rule)."""
    name = draw(st.sampled_from(["alto", "alto_vanilla", "eadam", "eadamw", "esgd"]))
    beta1 = draw(beta)
    alpha = draw(st.floats(-0.95, 0.95)) / (1 - beta1)
    lr = draw(st.floats(1e-5, 1e-1))
    if name == "esgd":
        return name, dict(
            lr=lr, alpha=alpha, betas=(beta1, draw(st.floats(0.0, 0.9))), weight_decay=draw(st.floats(0.0, 0.1))
        )
    kwargs = dict(
        lr=lr,
        alpha=alpha,
        betas=(beta1, draw(beta), draw(beta)),
        eps=draw(st.floats(1e-10, 1e-3)),
        weight_decay=draw(st.floats(0.0, 0.1)),
    )
    if name in ("alto", "alto_vanilla"):
        kwargs.update(trust_eps=draw(st.floats(0.0, 1e-3)), norm_eps=draw(st.floats(1e-12, 1e-6)))
    return name, kwargs


def _namespaces():
    import array_api_compat.numpy as np_xp

    found = [np_xp]
    try:
        import array_api_strict

        found.append(array_api_strict)
    except ImportError:
        pass
    try:
        import array_api_compat.torch as torch_xp

        found.append(torch_xp)
    except ImportError:
        pass
    return found


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=e_optimizers(), tensor_shapes=shapes, seed=st.integers(0, 2**16))
def test_random_valid_configurations_stay_finite_and_agree_across_namespaces(config, tensor_shapes, seed):
    name, kwargs = config
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in tensor_shapes]
    grads = [[rng.normal(size=s) * 10.0 ** rng.uniform(-3, 3) for s in tensor_shapes] for _ in range(15)]
    reference = None
    for xp in _namespaces():
        out_params, state = run_core(vc.OPTIMIZERS[name](**kwargs), params, grads, xp)
        flat = {f"param.{i}": p for i, p in enumerate(out_params)} | vc.state_to_dict(state)
        flat = {key: to_numpy(value) for key, value in flat.items()}
        for key, value in flat.items():
            assert np.all(np.isfinite(value)), f"{name} {key} not finite on {xp.__name__}"
        if reference is None:
            reference = flat
            continue
        for key, value in flat.items():
            assert relative_error(value, reference[key]) <= 1e-10, f"{key}: {xp.__name__} differs from numpy"


@pytest.mark.parametrize("name", sorted(vc.OPTIMIZERS))
def test_init_returns_zero_state_of_the_right_shapes(name):
    params = (np.ones((2, 3)), np.ones(()))
    flat = vc.state_to_dict(vc.OPTIMIZERS[name]().init(params))
    for key, value in flat.items():
        assert not np.any(value), key
        if not key.endswith(".count"):
            shape = params[int(key.rsplit(".", 1)[1])].shape
            if ".buffer." in key or ".priorities." in key:  # Adam+CM's stacked buffer: (top_c, *shape), (top_c,)
                shape = (5, *shape) if ".buffer." in key else (5,)
            assert value.shape == shape
