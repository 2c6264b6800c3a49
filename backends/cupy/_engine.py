"""Where a traced program runs: CuPy kernels on a CUDA device, or NumPy on the CPU (test mode).

Both engines offer the same five operations, so ``backends.cupy._optimizer`` has one code path:

- ``run(program, arrays, scalars)``: the program's outputs written into the given arrays, in place;
- ``norm(x)``: the Euclidean norm of a whole tensor as a 0-d array (no host synchronisation on the GPU);
- ``zeros``, ``to_host``, ``from_host``: state allocation and checkpoint conversion.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from backends.kernels.trace import Program, render_cuda, run_numpy

#: Floating dtypes the kernels are generated for.
SUPPORTED_DTYPES = ("float32", "float64")

#: CuPy kernel objects by name, shared by every optimizer of the process (CuPy compiles each once per dtype).
_KERNELS: Dict[str, Any] = {}


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


class NumpyEngine:
    """Runs the traced programs with NumPy (``run_numpy``) and the core's ``l2_norm``: the CPU test mode."""

    name = "numpy"

    def __init__(self) -> None:
        import array_api_compat.numpy as compat

        self.xp = np
        self._compat = compat
        self.array_type = np.ndarray
        self.array_type_name = "numpy.ndarray"

    def run(self, program: Program, arrays: Dict[str, Any], scalars: Dict[str, float]) -> None:
        results = run_numpy(program, {n: arrays[n] for n in (*program.arrays_in, *program.arrays_inout)}, scalars)
        for name, value in results.items():
            arrays[name][...] = value

    def norm(self, array: Any) -> Any:
        from valley_core import reductions

        return reductions.l2_norm(array, self._compat)

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
    """Runs the traced programs as CuPy ``ElementwiseKernel``s and norms as a CuPy ``ReductionKernel``.

    Kernels are generated once per program (``render_cuda``) and compiled by CuPy once per dtype.
    Nothing here reads a device value on the host, so a step is a sequence of asynchronous launches.
    """

    name = "cupy"

    def __init__(self) -> None:
        cupy = import_cupy()
        self.xp = cupy
        self.array_type = cupy.ndarray
        self.array_type_name = "cupy.ndarray"
        self._sums: Dict[int, Any] = {}  # squared norms of the multi-tensor path, by tensor count
        self._norm = _KERNELS.get("valley_l2_norm")
        if self._norm is None:
            self._norm = _KERNELS["valley_l2_norm"] = cupy.ReductionKernel(
                "T x", "T y", "x * x", "a + b", "y = sqrt(a)", "0", "valley_l2_norm"
            )

    def kernel(self, program: Program) -> Any:
        """The ``ElementwiseKernel`` generated from ``program`` (built once per process, cached by name)."""
        kernel = _KERNELS.get(program.name)
        if kernel is None:
            in_params, out_params, operation = render_cuda(program)
            kernel = _KERNELS[program.name] = self.xp.ElementwiseKernel(in_params, out_params, operation, program.name)
        return kernel

    def run(self, program: Program, arrays: Dict[str, Any], scalars: Dict[str, float]) -> None:
        args = [arrays[n] for n in program.arrays_in]
        args += [float(scalars[n]) for n in program.scalars]
        args += [arrays[n] for n in (*program.arrays_inout, *program.arrays_out)]
        self.kernel(program)(*args)

    def norm(self, array: Any) -> Any:
        return self._norm(array)

    def _raw_kernel(self, name: str, make_source: Callable[[], Tuple[str, Any]]) -> Any:
        kernel = _KERNELS.get(name)
        if kernel is None:
            source, _ = make_source()
            kernel = _KERNELS[name] = self.xp.RawKernel(source, name)
        return kernel

    def lamb_multi_tensor(
        self,
        tensors: List[Dict[str, Any]],
        adaptor: bool,
        decay: Sequence[bool],
        trust: Sequence[bool],
        scalars: Dict[str, float],
    ) -> None:
        """The Lamb family's step for C-contiguous tensors: two launches per group of up to 16 tensors.

        See ``backends.cupy._multi_tensor``. Tensors are grouped by dtype and by their weight-decay and
        trust-ratio switches; each launch accumulates its tensors' squared norms in its own slice of one
        float64 buffer, zeroed once per step. No value is read back to the host.

        Args:
            tensors: per tensor, the arrays ``grad``, ``param``, ``first``, ``second`` (and ``carry``).
            adaptor: whether the E adaptor runs (ALTO) or not (Lamb).
            decay: the per-tensor weight-decay switches.
            trust: the per-tensor trust-ratio switches.
            scalars: every scalar the programs take, by name.
        """
        from backends.cupy import _multi_tensor as mt
        from backends.kernels.programs import apply_from_moments_program, program

        sums = self._sums.get(len(tensors))
        if sums is None:
            sums = self._sums[len(tensors)] = self.xp.zeros(2 * len(tensors), dtype=self.xp.float64)
        sums.fill(0)
        launched = 0
        groups: Dict[Tuple[Any, bool, bool], List[int]] = {}
        for index, arrays in enumerate(tensors):
            groups.setdefault((arrays["param"].dtype, decay[index], trust[index]), []).append(index)
        for (dtype, decay_on, trust_on), indices in groups.items():
            ctype = "float" if dtype == np.float32 else "double"
            first_program = program("lamb_direction", adaptor=adaptor, decay=decay_on)
            second_program = apply_from_moments_program(decay_on, trust_on)
            first_name = f"valley_mt_{first_program.name[len('valley_') :]}_{ctype}"
            second_name = f"valley_mt_{second_program.name[len('valley_') :]}_{ctype}"
            first = self._raw_kernel(first_name, lambda: mt.first_pass_source(first_program, first_name, ctype))
            second = self._raw_kernel(second_name, lambda: mt.second_pass_source(second_program, second_name, ctype))
            first_arrays = (*first_program.arrays_in, *first_program.arrays_inout)
            second_arrays = (
                *[a for a in second_program.arrays_in if a not in ("param_norm", "direction_norm")],
                *second_program.arrays_inout,
            )
            for start in range(0, len(indices), mt.TENSORS_PER_LAUNCH):
                chunk = indices[start : start + mt.TENSORS_PER_LAUNCH]
                # Slot j of this launch accumulates into chunk_sums[2 j] (||theta||^2) and [2 j + 1] (||r||^2).
                chunk_sums = sums[2 * launched : 2 * (launched + len(chunk))]
                launched += len(chunk)
                sizes = [int(tensors[i]["param"].size) for i in chunk]
                grid = (mt.grid_x(sizes), len(chunk))
                for kernel, kernel_program, names in (
                    (first, first_program, first_arrays),
                    (second, second_program, second_arrays),
                ):
                    args: List[Any] = []
                    for slot in range(mt.TENSORS_PER_LAUNCH):  # unused slots: any valid arrays, n = 0
                        used = slot < len(chunk)
                        arrays = tensors[chunk[slot] if used else chunk[0]]
                        args += [arrays[a] for a in names]
                        args.append(np.int64(sizes[slot] if used else 0))
                    args += [np.float64(scalars[n]) for n in kernel_program.scalars]
                    args.append(chunk_sums)
                    kernel(grid, (mt.BLOCK,), tuple(args))

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
