"""Helpers shared by the core tests: run a transform on a namespace, compare with NumPy."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

import valley_core as vc


def to_numpy(array):
    """A NumPy copy of an array from any namespace (via DLPack where needed)."""
    if isinstance(array, (np.ndarray, np.generic)):
        return np.asarray(array)
    if hasattr(array, "detach"):  # torch
        return array.detach().cpu().numpy()
    return np.from_dlpack(array)


def run_core(transform, params, grad_sequence, xp):
    """Runs ``transform`` for every gradient list in ``grad_sequence``; returns (params, state) as arrays of xp."""
    params = tuple(xp.asarray(p) for p in params)
    state = transform.init(params)
    for grads in grad_sequence:
        updates, state = transform.update(tuple(xp.asarray(g) for g in grads), state, params)
        params = vc.apply_updates(params, updates)
    return params, state


def relative_error(actual, expected):
    """``||actual - expected|| / ||expected||`` over a whole tensor (0 when both are 0)."""
    actual, expected = to_numpy(actual).astype(np.float64), np.asarray(expected, dtype=np.float64)
    scale = np.linalg.norm(expected)
    difference = np.linalg.norm(actual - expected)
    return float(difference / scale) if scale > 0 else float(difference)


def assert_resume_equals_uninterrupted(make, params, grads, split):
    """For optimizers that update NumPy-like arrays in place with ``step(grads)``: stopping after ``split``
    steps, saving ``state_dict()``, and continuing with a new optimizer loaded from it (``make(arrays)`` builds
    one) gives the uninterrupted run's arrays bit for bit and the full step count."""
    uninterrupted = [p.copy() for p in params]
    opt = make(uninterrupted)
    for step_grads in grads:
        opt.step(step_grads)
    resumed = [p.copy() for p in params]
    first = make(resumed)
    for step_grads in grads[:split]:
        first.step(step_grads)
    checkpoint = first.state_dict()
    second = make(resumed)
    second.load_state_dict(checkpoint)
    for step_grads in grads[split:]:
        second.step(step_grads)
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a, b)
    assert second.steps_taken == len(grads)


#: Corruptions of a NumPy-layout checkpoint (``backends.numpy`` and ``backends.cupy`` share it) of ALTO over two
#: tensors of shapes (3, 4) and (5,) after 5 steps, each with the message ``load_state_dict`` must raise.
CORRUPT_CHECKPOINTS = [
    (lambda sd: sd["state"].pop("AdamState.first.1"), r"missing keys \['AdamState\.first\.1'\]"),
    (lambda sd: sd["state"].__setitem__("Extra.x", np.zeros(1)), r"unexpected keys \['Extra\.x'\]"),
    (
        lambda sd: sd["state"].__setitem__("AdamState.second.0", np.zeros((4, 3))),
        r"AdamState\.second\.0: shape \(4, 3\) does not match the optimizer's \(3, 4\)",
    ),
    (
        lambda sd: sd["state"].__setitem__("EState.carry.1", np.zeros(5, dtype=np.float32)),
        r"EState\.carry\.1: dtype float32 does not match the optimizer's float64",
    ),
    (lambda sd: sd.__setitem__("optimizer", "lamb"), r"state_dict is for optimizer 'lamb', this optimizer is 'alto'"),
    (lambda sd: sd.pop("state"), r"state_dict must be a dict with keys"),
    (
        lambda sd: sd["state"].__setitem__("AdamState.count", np.asarray(7, dtype=np.int32)),
        r"inconsistent step counts \[5, 7\]",
    ),
]


def legacy_0_1_0_case(name):
    """Fixture ``name`` of valley 0.1.0's state dicts (``tests/core/data/make_legacy_fixtures.py``, written by that
    code): its params, ``state_dict`` after 5 steps, the next gradients and the parameters 0.1.0 computed from them."""
    with open(Path(__file__).parent / "data" / "legacy_state_dicts_0.1.0.pkl", "rb") as f:
        return pickle.load(f)[name]


def assert_takes_the_step_0_1_0_took(name, make):
    """Loads valley 0.1.0's ``state_dict()`` of fixture ``name`` (``tests/core/data/make_legacy_fixtures.py``: 5 steps
    taken, written by that code) into ``make(params)``, takes the next step and checks the parameters against the ones
    0.1.0 computed. Returns the optimizer, for the backend's own checks of what it writes now."""
    case = legacy_0_1_0_case(name)
    assert case["state_dict"]["steps_taken"] == 5
    params = [p.copy() for p in case["params"]]
    opt = make(params)
    opt.load_state_dict(case["state_dict"])
    assert opt.steps_taken == 5
    opt.step(case["next_grads"])
    for actual, expected in zip(params, case["next_params"]):
        np.testing.assert_array_equal(actual, expected)
    assert opt.steps_taken == 6
    assert opt.checkpoint_version == "0.1.0"  # it records no version
    return opt
