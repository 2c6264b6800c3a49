"""A stand-in ``cupy`` module that runs the GPU code path of backends.cupy (``CupyEngine``) on the CPU.

The stand-in compiles the very CUDA source the engine hands to ``cupy.RawKernel`` for the host
(``-DVALLEY_HOST_EMULATION``: the grid runs sequentially) and passes the positional arguments by the parsed
parameter declarations, as CuPy does. It checks what the NumPy mode cannot: the argument order of every
launch, the in-place outputs, the sums of the norms, state allocation and checkpoint conversion of the CuPy
engine. It is not a GPU: CuPy's compiler and the device are replaced (``test_cupy_parity.py`` uses it).
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections import Counter

import numpy as np
import pytest

from backends.cupy import _engine


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


def install(monkeypatch):
    """Makes ``import cupy`` give the stand-in (with a fresh kernel cache) for the current test."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(_engine, "_KERNELS", {})
    FakeRawKernel.launches = 0
    return sys.modules["cupy"]


def kernel_launches(opt):
    """One launch per pass for up to 16 tensors of one plan (the masks make a plan per combination)."""
    plans = {id(plan): plan for plan in opt._plans}
    counts = Counter(id(plan) for plan in opt._plans)
    return sum(len(plans[i].passes) * -(-n // 16) for i, n in counts.items())
