"""Shared helpers of the torch tests: gradient sequences, running an optimizer or the core, comparisons."""

from __future__ import annotations

import numpy as np
import torch

import valley_core as vc

SHAPES = [(4, 3), (5,), (2, 3, 2)]


def initial_params(shapes=SHAPES, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.normal(size=s), dtype=dtype) for s in shapes]


def gradient_sequence(steps, shapes=SHAPES, seed=1, dtype=torch.float64, global_norm=None):
    """Gradients that drift and carry noise, independent of the parameters (errors cannot feed back)."""
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=s) for s in shapes]
    drift = [rng.normal(size=s) * 0.01 for s in shapes]
    sequence = []
    for k in range(steps):
        grads = [b + d * k + 0.3 * rng.normal(size=s) for b, d, s in zip(base, drift, shapes)]
        if global_norm is not None:
            norm = np.sqrt(sum(float((g * g).sum()) for g in grads))
            grads = [g * (global_norm / norm) for g in grads]
        sequence.append([torch.tensor(g, dtype=dtype) for g in grads])
    return sequence


def run_optimizer(make, grads_sequence, params=None, dtype=torch.float64):
    """Runs ``make(params)`` over the gradient sequence; returns (params, optimizer)."""
    params = [torch.nn.Parameter(p.clone()) for p in (params or initial_params(dtype=dtype))]
    optimizer = make(params)
    for grads in grads_sequence:
        for p, g in zip(params, grads):
            p.grad = g.clone().to(p.dtype)
        optimizer.step()
    return params, optimizer


def run_core(transform, grads_sequence, params=None, dtype=torch.float64):
    """Runs a ``valley_core`` transform directly on torch tensors; returns (params, state)."""
    params = tuple(p.clone() for p in (params or initial_params(dtype=dtype)))
    state = transform.init(params)
    for grads in grads_sequence:
        updates, state = transform.update(tuple(grads), state, params)
        params = vc.apply_updates(params, updates)
    return params, state


def optimizer_state_as_core_dict(optimizer, params):
    """The torch optimizer's state in the core's flat naming (``"AdamState.first.3"``); the core's step counters
    (``"AdamState.count"``), which the torch state keeps as one ``"step"``, are made from it."""
    flat = {}
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for index, p in enumerate(params):
        state = optimizer.state[p]
        for key in optimizer.counter_keys(group_of[id(p)]):
            flat[key] = torch.as_tensor(state["step"]).to(device="cpu", dtype=torch.int32)
        for key, value in state.items():
            if key != "step":
                flat[f"{key}.{index}"] = value
    return flat


def assert_close(actual, expected, rtol=1e-12, atol=1e-14, what=""):
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    expected = torch.as_tensor(expected).detach().to(torch.float64)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-12, atol=1e-14):
    """Parameters and every state tensor of a torch optimizer against a core run: same shapes, same state keys,
    values within ``rtol``/``atol``."""
    for index, (p, q) in enumerate(zip(params, core_params)):
        assert p.shape == q.shape, f"param {index}"
        assert_close(p, q, rtol=rtol, atol=atol, what=f"param {index} (shape {tuple(q.shape)})")
    expected = vc.state_to_dict(core_state)
    actual = optimizer_state_as_core_dict(optimizer, params)
    assert set(actual) == set(expected)
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        assert_close(actual[key], expected[key], rtol=rtol, atol=atol, what=key)


def clone_state(optimizer):
    """A deep copy of ``optimizer.state`` (tensor values cloned), keyed like the original."""
    return {
        p: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
        for p, s in optimizer.state.items()
    }


def assert_same_state(before, after):
    assert set(before) == set(after)
    for p in before:
        assert set(before[p]) == set(after[p])
        for key, value in before[p].items():
            other = after[p][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), key
            else:
                assert value == other, key


def assert_load_refused(optimizer, state_dict, match):
    """``load_state_dict`` raises ``ValueError`` matching ``match`` and leaves state and groups as they were."""
    import pytest

    before_state = clone_state(optimizer)
    before_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    with pytest.raises(ValueError, match=match):
        optimizer.load_state_dict(state_dict)
    assert_same_state(before_state, optimizer.state)
    assert before_groups == [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def torch_class(name):
    """The ``backends.torch`` class of a core optimizer: the named one, or ``optimizer_class`` over its factory."""
    import backends.torch as bt

    info = vc.REGISTRY[name]
    return getattr(bt, info.class_name, None) or bt.optimizer_class(info.class_name, info.factory)


def build(case, params, implementation="core", **overrides):
    """The torch optimizer of a table record (``tests/optimizers.py``); the core's per-tensor masks become one
    param group per tensor (``weight_decay=0``, ``trust_ratio=False``), as ``lamb_param_groups`` does."""
    kwargs = {**case.kwargs("torch"), **overrides}
    masks = [kwargs.pop(key, None) for key in ("weight_decay_mask", "trust_ratio_mask")]
    if any(m is not None for m in masks):
        decay, trust = ((m(params) if callable(m) else m) if m is not None else [True] * len(params) for m in masks)
        params = [
            {"params": [p], **({} if d else {"weight_decay": 0.0}), **({} if t else {"trust_ratio": False})}
            for p, d, t in zip(params, decay, trust)
        ]
    return torch_class(case.name)(params, implementation=implementation, **kwargs)


def numpy_core(case, start, grads_sequence):
    """The record run by the float64 NumPy core from torch tensors: (params, state) as NumPy arrays."""
    import array_api_compat.numpy as xp

    from tests.core.helpers import run_core as run_on

    as_numpy = [p.detach().to(torch.float64).numpy() for p in start]
    grads = [[g.to(torch.float64).numpy() for g in gs] for gs in grads_sequence]
    return run_on(case.make(), as_numpy, grads, xp)
