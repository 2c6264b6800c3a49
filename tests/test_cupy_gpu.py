"""backends.cupy on a CUDA device: the generated kernels against the float64 NumPy core.

Skipped (with the reason) where CuPy or CUDA is missing; ``benchmarks/gpu_check.py`` runs the same parity
for every backend on a GPU machine and records it.
"""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from backends import cupy as vcp
from tests.core import transcription as golden
from tests.test_cupy_cpu import CONFIGS, SHAPES, _core_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not vcp.cuda_available(), reason="needs CuPy with a CUDA device (none here)"),
]


def _problem(steps=25, seed=0):
    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.normal(size=shape)) for shape in SHAPES]
    grads = [[np.asarray(g) for g in step] for step in golden.drifting_gradients(SHAPES, steps, seed)]
    return params, grads


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_float64_kernels_match_the_core_params_and_state(config):
    import cupy

    name, hyperparameters = CONFIGS[config]
    params, grads = _problem()
    expected_params, expected_state = _core_run(name, hyperparameters, params, grads)
    device_params = [cupy.asarray(p) for p in params]
    opt = vcp.OPTIMIZERS[name](device_params, **hyperparameters)
    for step in grads:
        assert opt.step([cupy.asarray(g) for g in step]) is True
    for actual, want in zip(device_params, expected_params):
        np.testing.assert_allclose(cupy.asnumpy(actual), want, rtol=1e-11, atol=1e-13)
    state = opt.state_dict()["state"]
    for key, want in vc.state_to_dict(expected_state).items():
        np.testing.assert_allclose(state[key], np.asarray(want), rtol=1e-11, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("name", sorted(vcp.OPTIMIZERS))
def test_float32_kernels_stay_close_to_the_float64_core(name):
    import cupy

    params, grads = _problem(20, seed=4)
    expected, _ = _core_run(name, {}, params, grads)
    device_params = [cupy.asarray(p, dtype=cupy.float32) for p in params]
    opt = vcp.OPTIMIZERS[name](device_params)
    for step in grads:
        opt.step([cupy.asarray(g, dtype=cupy.float32) for g in step])
    for actual, want in zip(device_params, expected):
        assert actual.dtype == cupy.float32
        np.testing.assert_allclose(cupy.asnumpy(actual), want, rtol=1e-4, atol=1e-5)


def test_gpu_checkpoint_round_trip_and_cross_load_from_cpu_mode():
    import cupy

    params, grads = _problem(10, seed=2)
    cpu_params = [p.copy() for p in params]
    cpu = vcp.ALTO(cpu_params, array_module="numpy", lr=1e-2)
    for step in grads[:5]:
        cpu.step(step)
    device_params = [cupy.asarray(p) for p in cpu_params]
    gpu = vcp.ALTO(device_params, lr=1e-2)
    gpu.load_state_dict(cpu.state_dict())
    for step in grads[5:]:
        cpu.step(step)
        gpu.step([cupy.asarray(g) for g in step])
    for a, b in zip(device_params, cpu_params):
        np.testing.assert_allclose(cupy.asnumpy(a), b, rtol=1e-11, atol=1e-13)


def test_cupy_mode_rejects_numpy_arrays():
    with pytest.raises(TypeError, match=r"params\[0\] is a ndarray, expected a cupy.ndarray"):
        vcp.ALTO([np.ones(3)])


@pytest.mark.parametrize("config", ["alto_default", "alto_masks", "alto_vanilla", "lamb", "lamb_masks_no_bc"])
def test_multi_tensor_kernels_match_the_core(config):
    import cupy

    name, hyperparameters = CONFIGS[config]
    params, grads = _problem(15, seed=3)
    expected_params, expected_state = _core_run(name, hyperparameters, params, grads)
    device_params = [cupy.asarray(p) for p in params]
    opt = vcp.OPTIMIZERS[name](device_params, multi_tensor=True, **hyperparameters)
    for step in grads:
        opt.step([cupy.asarray(g) for g in step])
    for actual, want in zip(device_params, expected_params):
        np.testing.assert_allclose(cupy.asnumpy(actual), want, rtol=1e-11, atol=1e-13)
    state = opt.state_dict()["state"]
    for key, want in vc.state_to_dict(expected_state).items():
        np.testing.assert_allclose(state[key], np.asarray(want), rtol=1e-11, atol=1e-13, err_msg=key)
