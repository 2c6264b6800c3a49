"""Where a plan runs: CuPy kernels on a CUDA device, or NumPy on the CPU (test mode).

Both engines offer the same operations, so ``backends.cupy._optimizer`` has one code path:

- ``run(plan, tensors, scalars)``: one step of the plan for every tensor (``{array role: array}``), in place;
- ``zeros``, ``to_host``, ``from_host``, ``all_finite``, ``check_param``, ``same_device``: state allocation,
  checkpoint conversion and checks.

``interpret`` runs a plan's passes with any array namespace's operators (NumPy; CuPy for a non-contiguous
tensor), in the kernels' types: a per-step scalar meets an array as a Python float (cast to ``T``), a sum is
accumulated in float64 and cast to ``T``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from backends.cupy import _multi_tensor as mt
from backends.kernels.plan import GRAD, PARAM, Plan
from backends.kernels.trace import evaluate

#: Floating dtypes the kernels are generated for.
SUPPORTED_DTYPES = ("float32", "float64")

#: CuPy kernel objects by (plan, pass, ctype, variant), shared by every optimizer of the process.
_KERNELS: Dict[Any, Any] = {}


def import_cupy() -> Any:
    """CuPy with a usable CUDA device, or a ``RuntimeError`` that says what is missing.

    Raises:
        RuntimeError: if CuPy is not installed, or CUDA is not available (no driver, no device).
    """
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(
            "backends.cupy needs CuPy, which is not installed (pip install cupy-cuda12x, or cupy-cuda13x for "
            f"CUDA 13; it runs on a CUDA GPU only): {error}"
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError: no driver, driver too old, no device
        raise RuntimeError(
            f"CUDA is not available: CuPy {cupy.__version__} found no usable CUDA device ({error}). "
            "backends.cupy runs on a CUDA GPU only; on a CPU use backends.numpy or backends.torch."
        ) from error
    if count < 1:
        raise RuntimeError(
            f"CUDA is not available: CuPy {cupy.__version__} sees 0 CUDA devices. backends.cupy runs on a CUDA "
            "GPU only; on a CPU use backends.numpy or backends.torch."
        )
    return cupy


def interpret(plan: Plan, arrays: Dict[str, Any], scalars: Sequence[float], xp: Any) -> None:
    """One step of ``plan`` for one tensor with ``xp``'s operators, writing ``arrays`` in place."""
    dtype = arrays[PARAM].dtype
    env: Dict[str, Any] = dict(zip(plan.step_scalars, (float(s) for s in scalars)))
    work: Dict[str, Any] = {}
    for step in plan.passes:
        values = dict(env)
        values.update({symbol: (work[a] if a in work else arrays[a]) for symbol, a in step.loads})
        values = evaluate([*step.uniforms, *step.statements], values, xp, dtype)
        for target, operand in step.sums:
            env[target] = xp.asarray(xp.sum(xp.asarray(values[operand], dtype=xp.float64)), dtype=dtype)
        for array, symbol in step.stores:
            if array.startswith("w"):
                work[array] = xp.asarray(values[symbol], dtype=dtype).copy()
            else:
                arrays[array][...] = values[symbol]


class NumpyEngine:
    """Runs plans with NumPy (``interpret``): the CPU test mode."""

    name = "numpy"

    def __init__(self) -> None:
        self.xp = np
        self.array_type = np.ndarray
        self.array_type_name = "numpy.ndarray"

    def run(self, plan: Plan, tensors: List[Dict[str, Any]], scalars: Sequence[float]) -> None:
        for arrays in tensors:
            interpret(plan, arrays, scalars, np)

    def zeros(self, shape: Tuple[int, ...], dtype: Any) -> Any:
        return np.zeros(shape, dtype=dtype)

    def to_host(self, array: Any) -> np.ndarray:
        return np.array(array, copy=True)

    def from_host(self, value: Any, like: Any) -> Any:
        return np.array(_to_numpy(value), dtype=like.dtype, copy=True)

    def all_finite(self, arrays: Any) -> bool:
        return all(bool(np.isfinite(a).all()) for a in arrays)

    def check_param(self, index: int, param: Any) -> None:
        if not param.flags.writeable:
            raise ValueError(f"params[{index}] is read-only; the optimizer updates parameters in place")

    def same_device(self, a: Any, b: Any) -> bool:
        return True


class CupyEngine:
    """Runs plans as multi-tensor CuPy ``RawKernel``s (``backends.cupy._multi_tensor``), one launch per pass for up
    to 16 C-contiguous tensors; a non-contiguous tensor is interpreted with CuPy's operators instead.

    Kernels are generated once per plan, pass and dtype and compiled by CuPy. Nothing here reads a device value
    on the host, so a step is a sequence of asynchronous launches.
    """

    name = "cupy"

    def __init__(self) -> None:
        cupy = import_cupy()
        self.xp = cupy
        self.array_type = cupy.ndarray
        self.array_type_name = "cupy.ndarray"
        self._sums: Dict[int, Any] = {}  # the sums of each launch, by size

    def run(self, plan: Plan, tensors: List[Dict[str, Any]], scalars: Sequence[float]) -> None:
        contiguous = [t for t in tensors if all(a.flags.c_contiguous for a in t.values())]
        for arrays in tensors:
            if not all(a.flags.c_contiguous for a in arrays.values()):
                interpret(plan, arrays, scalars, self.xp)
        passes = plan.recompute or plan.passes
        by_dtype: Dict[Any, List[Dict[str, Any]]] = {}
        for arrays in contiguous:
            by_dtype.setdefault(arrays[PARAM].dtype, []).append(arrays)
        for dtype, group in by_dtype.items():
            ctype = "float" if dtype == np.float32 else "double"
            for start in range(0, len(group), mt.TENSORS_PER_LAUNCH):
                chunk = group[start : start + mt.TENSORS_PER_LAUNCH]
                if plan.recompute is None:
                    chunk = [
                        {**t, **{f"w{j}": self.xp.zeros(t[GRAD].shape, dtype) for j in range(plan.workspaces)}}
                        for t in chunk
                    ]
                sums = self._sums.get(len(chunk))
                if sums is None:
                    sums = self._sums[len(chunk)] = self.xp.zeros(
                        max(1, plan.reductions) * len(chunk), dtype=self.xp.float64
                    )
                sums.fill(0)
                sizes = [int(t[PARAM].size) for t in chunk]
                for index, step in enumerate(passes):
                    args: List[Any] = []
                    for slot in range(mt.TENSORS_PER_LAUNCH):  # unused slots: any valid arrays, n = 0
                        arrays = chunk[slot] if slot < len(chunk) else chunk[0]
                        args += [arrays[a] for a in mt.arrays_of(step)]
                        args.append(np.int64(sizes[slot] if slot < len(chunk) else 0))
                    args += [np.float64(s) for s in scalars]
                    args.append(sums)
                    kernel = self._raw(plan, index, step, ctype, plan.recompute is not None)
                    kernel((mt.grid_x(sizes), len(chunk)), (mt.BLOCK,), tuple(args))

    def _raw(self, plan: Plan, index: int, step: Any, ctype: str, recompute: bool) -> Any:
        key = (plan, index, ctype, recompute)
        kernel = _KERNELS.get(key)
        if kernel is None:
            source, _ = mt.pass_source(plan, index, step, "VALLEY_KERNEL", ctype)
            name = f"valley_pass{index}_{hashlib.sha256(source.encode()).hexdigest()[:16]}_{ctype}"  # one per source
            kernel = _KERNELS[key] = self.xp.RawKernel(source.replace("VALLEY_KERNEL", name), name)
        return kernel

    def zeros(self, shape: Tuple[int, ...], dtype: Any) -> Any:
        return self.xp.zeros(shape, dtype=dtype)

    def to_host(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array)

    def from_host(self, value: Any, like: Any) -> Any:
        return self.xp.array(value, dtype=like.dtype, copy=True)

    def all_finite(self, arrays: Any) -> bool:
        flags = self.xp.stack([self.xp.isfinite(a).all() for a in arrays])
        return bool(flags.all())  # one host synchronisation per step (only with skip_nonfinite=True)

    def check_param(self, index: int, param: Any) -> None:
        return None

    def same_device(self, a: Any, b: Any) -> bool:
        return a.device.id == b.device.id


def _to_numpy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        return value.get()
    return np.asarray(value)


def make_engine(array_module: str) -> Any:
    """``"cupy"`` (the default: GPU kernels) or ``"numpy"`` (CPU test mode)."""
    if array_module == "cupy":
        return CupyEngine()
    if array_module == "numpy":
        return NumpyEngine()
    raise ValueError(f"array_module={array_module!r} violates array_module is 'cupy' or 'numpy'")
