"""backends.cupy tests; the shared problem: 20 tensors (two kernel launches per group of 16), drifting gradients."""

from __future__ import annotations

import numpy as np

import valley_core as vc
from backends import cupy as vcp
from tests.core import transcription

SHAPES = [(3, 4), (5,), (), (2, 1, 3), (40,)] * 4


def problem(steps=20, seed=0, dtype=np.float64, shapes=SHAPES):
    """Parameters and a gradient sequence (lists of NumPy arrays of ``dtype``)."""
    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.normal(size=shape), dtype=dtype) for shape in shapes]
    grads = transcription.drifting_gradients(shapes, steps, seed)
    return params, [[np.asarray(g, dtype=dtype) for g in step] for step in grads]


def core_run(transform, params, grads):
    """The core on NumPy arrays: (params, state as a flat dict)."""
    params = tuple(p.copy() for p in params)
    state = transform.init(params)
    for step in grads:
        updates, state = transform.update(tuple(step), state, params)
        params = vc.apply_updates(params, updates)
    return params, vc.state_to_dict(state)


def make(name, params, hyperparameters, **options):
    """The backend's named class for core optimizer ``name``, else its generic ``Optimizer`` (public API)."""
    if name in vcp.OPTIMIZERS:
        return vcp.OPTIMIZERS[name](params, **options, **hyperparameters)
    return vcp.Optimizer(params, vc.OPTIMIZERS[name], hyperparameters, **options)
