"""The GPU code path of backends.cupy (``CupyEngine``) run on the CPU against a stand-in ``cupy`` module.

The stand-in compiles the very CUDA source the engine hands to ``cupy.RawKernel`` for the host
(``-DVALLEY_HOST_EMULATION``: the grid runs sequentially) and passes the positional arguments by the parsed
parameter declarations, as CuPy does. This checks what the other CPU tests cannot: the argument order of
every launch, the in-place outputs, the sums of the norms, state allocation and checkpoint conversion of the
CuPy engine. It is not a GPU test: CuPy's compiler and the device are replaced.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections import Counter

import numpy as np
import pytest

import valley_core as vc
from backends import cupy as vcp
from backends.cupy import _engine
from tests.test_cupy_cpu import CONFIGS, _core_run, _problem


class FakeDeviceArray(np.ndarray):
    """A NumPy array that says it lives on device 0."""

    @property
    def device(self):
        return types.SimpleNamespace(id=0)


def _on_device(value, dtype=None):
    return np.array(value, dtype=dtype, copy=True).view(FakeDeviceArray)


# -- the kernels: their CUDA source, compiled for the host with -DVALLEY_HOST_EMULATION ---------------------


class FakeRawKernel:
    """Compiles a RawKernel's source for the host (sequential grid) and runs it on the arrays' memory."""

    folder = None
    launches = 0
    compiled = {}  # (name, source) -> (params, function): one compile per kernel and process

    def __init__(self, code, name):
        cached = FakeRawKernel.compiled.get((name, code))
        if cached is not None:
            self.params, self.function = cached
            return
        import ctypes
        import shutil
        import subprocess
        import tempfile

        from backends.cupy import _multi_tensor

        compiler = shutil.which("g++") or shutil.which("c++")
        if compiler is None:
            pytest.skip("no host C++ compiler to emulate the multi-tensor kernels")
        signature = re.search(r'extern "C" __global__ void (\w+)\((.*?)\) \{', code)
        assert signature and signature.group(1) == name
        self.params = signature.group(2).split(", ")
        if FakeRawKernel.folder is None:
            FakeRawKernel.folder = tempfile.mkdtemp(prefix="valley_raw_kernels_")
        source = os.path.join(FakeRawKernel.folder, f"{name}.cpp")
        library = os.path.join(FakeRawKernel.folder, f"{name}.so")
        with open(source, "w") as handle:
            handle.write(_multi_tensor.emulation_source(code, name, self.params))
        subprocess.run(
            [
                compiler,
                "-DVALLEY_HOST_EMULATION",
                "-O1",
                "-ffp-contract=off",
                "-shared",
                "-fPIC",
                source,
                "-o",
                library,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.function = getattr(ctypes.CDLL(library), f"{name}_emulate")
        FakeRawKernel.compiled[(name, code)] = (self.params, self.function)

    def __call__(self, grid, block, args):
        import ctypes

        assert len(args) == len(self.params)
        converted = [ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(block[0])]
        for declaration, value in zip(self.params, args):
            if "*" in declaration:
                assert isinstance(value, FakeDeviceArray), declaration
                converted.append(ctypes.c_void_p(value.ctypes.data))
            elif declaration.startswith("const long long"):
                assert isinstance(value, np.int64), declaration
                converted.append(ctypes.c_longlong(int(value)))
            else:
                assert declaration.startswith("const double") and isinstance(value, np.float64), declaration
                converted.append(ctypes.c_double(float(value)))
        self.function(*converted)
        FakeRawKernel.launches += 1


def _fake_cupy():
    module = types.ModuleType("cupy")
    module.__version__ = "fake"
    module.ndarray = FakeDeviceArray
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    module.RawKernel = FakeRawKernel
    module.float64 = np.float64
    module.sqrt, module.sum, module.where = np.sqrt, np.sum, np.where
    module.asarray = lambda value, dtype=None: _on_device(np.asarray(value), dtype)
    module.zeros = lambda shape, dtype=None: _on_device(np.zeros(shape, dtype=dtype))
    module.array = lambda value, dtype=None, copy=True: _on_device(np.asarray(value), dtype)
    module.asnumpy = lambda a: np.array(a).view(np.ndarray)
    module.isfinite = lambda a: np.isfinite(np.asarray(a))
    module.stack = lambda arrays: np.stack(arrays)
    return module


@pytest.fixture
def fake_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(_engine, "_KERNELS", {})
    FakeRawKernel.launches = 0
    return sys.modules["cupy"]


def _kernel_launches(opt):
    """One launch per pass for up to 16 tensors of one plan (the masks make a plan per combination)."""
    plans = {id(plan): plan for plan in opt._plans}
    counts = Counter(id(plan) for plan in opt._plans)
    return sum(len(plans[i].passes) * -(-n // 16) for i, n in counts.items())


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_cupy_engine_matches_the_float64_core(fake_cupy, config):
    name, hyperparameters = CONFIGS[config]
    params, grads = _problem(12)
    expected_params, expected_state = _core_run(name, hyperparameters, params, grads)
    device_params = [_on_device(p) for p in params]
    opt = vcp.OPTIMIZERS[name](device_params, **hyperparameters)
    assert opt._engine.name == "cupy"
    for step in grads:
        assert opt.step([_on_device(g) for g in step]) is True
    assert FakeRawKernel.launches == _kernel_launches(opt) * len(grads)
    for actual, want in zip(device_params, expected_params):
        np.testing.assert_allclose(np.asarray(actual), want, rtol=1e-12, atol=1e-14)
    checkpoint = opt.state_dict()
    for key, want in vc.state_to_dict(expected_state).items():
        assert type(checkpoint["state"][key]) is np.ndarray  # host copies
        np.testing.assert_allclose(checkpoint["state"][key], np.asarray(want), rtol=1e-12, atol=1e-14, err_msg=key)


def test_cupy_engine_float32_checkpoint_resume_and_errors(fake_cupy):
    params, grads = _problem(10, dtype=np.float32)
    straight = [_on_device(p) for p in params]
    opt = vcp.ALTO(straight)
    for step in grads:
        opt.step([_on_device(g) for g in step])
    resumed = [_on_device(p) for p in params]
    first = vcp.ALTO(resumed)
    for step in grads[:4]:
        first.step([_on_device(g) for g in step])
    second = vcp.ALTO(resumed)
    second.load_state_dict(first.state_dict())
    for step in grads[4:]:
        second.step([_on_device(g) for g in step])
    for a, b in zip(resumed, straight):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match=r"params\[0\] is a ndarray, expected a cupy.ndarray"):
        vcp.ALTO([np.ones(3)])
    with pytest.raises(TypeError, match=r"grads\[0\] is a ndarray, expected a cupy.ndarray"):
        opt.step([np.asarray(g) for g in grads[0]])
    skipping = vcp.EAdam([_on_device(np.ones(3))], skip_nonfinite=True)
    assert skipping.step([_on_device(np.array([1.0, np.nan, 0.0]))]) is False
    assert skipping.step([_on_device(np.array([1.0, 2.0, 0.0]))]) is True


def test_no_cuda_device_is_a_clear_error(fake_cupy):
    fake_cupy.cuda.runtime.getDeviceCount = lambda: 0
    with pytest.raises(RuntimeError, match=r"CUDA is not available: CuPy fake sees 0 CUDA devices"):
        vcp.ALTO([_on_device(np.ones(3))])


MANY_SHAPES = [(3, 4), (5,), (), (2, 1, 3), (40,)] * 4  # 20 tensors: two launches per group


def _many(steps, dtype=np.float64, seed=7):
    from tests.core import transcription as golden

    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.normal(size=shape), dtype=dtype) for shape in MANY_SHAPES]
    grads = [[np.asarray(g, dtype=dtype) for g in step] for step in golden.drifting_gradients(MANY_SHAPES, steps, seed)]
    return params, grads


@pytest.fixture
def fake_cupy_raw(fake_cupy):
    return fake_cupy


LAMB_CONFIGS = {
    "alto_default": ("alto", {}),
    "alto_masks": (
        "alto",
        dict(
            lr=1e-2,
            alpha=-0.5,
            betas=(0.5, 0.9, 0.999),
            weight_decay=1e-2,
            weight_decay_mask=[i % 2 == 0 for i in range(20)],
            trust_ratio_mask=lambda params: [p.ndim > 1 for p in params],
        ),
    ),
    "alto_vanilla": ("alto_vanilla", dict(lr=vc.inverse_sqrt(0.02), alpha=0.5, betas=(0.01, 0.9, 0.99))),
    "lamb": ("lamb", dict(lr=1e-2, weight_decay=1e-3, trust_ratio_mask=[i % 3 != 0 for i in range(20)])),
}


@pytest.mark.parametrize("config", sorted(LAMB_CONFIGS))
def test_multi_tensor_kernels_emulated_on_the_host_match_the_float64_core(fake_cupy_raw, config):
    name, hyperparameters = LAMB_CONFIGS[config]
    params, grads = _many(8)
    expected_params, expected_state = _core_run(name, hyperparameters, params, grads)
    device_params = [_on_device(p) for p in params]
    opt = vcp.OPTIMIZERS[name](device_params, multi_tensor=True, **hyperparameters)
    for step in grads:
        opt.step([_on_device(g) for g in step])
    assert FakeRawKernel.launches == _kernel_launches(opt) * len(grads)  # every step ran the kernels
    for actual, want in zip(device_params, expected_params):
        np.testing.assert_allclose(np.asarray(actual), want, rtol=1e-12, atol=1e-14)
    checkpoint = opt.state_dict()
    for key, want in vc.state_to_dict(expected_state).items():
        np.testing.assert_allclose(checkpoint["state"][key], np.asarray(want), rtol=1e-12, atol=1e-14, err_msg=key)


def test_multi_tensor_float32_and_the_non_contiguous_fallback(fake_cupy_raw):
    params, grads = _many(6, dtype=np.float32)
    expected, _ = _core_run("alto", {}, params, grads)
    device_params = [_on_device(p) for p in params]
    opt = vcp.ALTO(device_params, multi_tensor=True)
    for step in grads:
        opt.step([_on_device(g) for g in step])
    for actual, want in zip(device_params, expected):
        np.testing.assert_allclose(np.asarray(actual), want, rtol=2e-5, atol=2e-6)
    # A non-contiguous gradient: that tensor is run by CuPy's operators instead of the kernels, with the same result.
    launches = FakeRawKernel.launches
    square, reference = _on_device(np.ones((4, 4))), np.ones((4, 4))
    fallback = vcp.ALTO([square], multi_tensor=True)
    fallback.step([_on_device(np.arange(16.0).reshape(4, 4)).T])
    assert FakeRawKernel.launches == launches
    expected, _ = _core_run("alto", {}, [reference], [[np.arange(16.0).reshape(4, 4).T]])
    np.testing.assert_allclose(np.asarray(square), expected[0], rtol=1e-12, atol=1e-14)


def test_multi_tensor_must_be_a_bool(fake_cupy):
    with pytest.raises(ValueError, match="multi_tensor=1 violates multi_tensor is a bool"):
        vcp.ALTO([_on_device(np.ones(3))], multi_tensor=1)
