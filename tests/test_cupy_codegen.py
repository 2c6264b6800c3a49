"""The generated CuPy kernels, checked on the CPU.

Three links of one chain, none of which needs a GPU:

1. the traced program, executed by NumPy, equals the direct ``valley_core.elementwise`` call bit for bit;
2. the CUDA-C body rendered from the same trace, compiled by the host C++ compiler in a loop that reads and
   writes elements the way CuPy's ``ElementwiseKernel`` does, equals the NumPy execution bit for bit
   (float64 and float32; no FMA contraction on the host);
3. the same body compiles for a GPU with ``nvcc -ptx`` (when the CUDA toolkit is installed), and the float32
   kernel uses single-precision ``sqrt``.

What stays for a GPU run (``benchmarks/gpu_check.py``): CuPy's own wrapping and the device's rounding (FMA).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from backends.kernels import programs as _programs
from backends.kernels.trace import Symbol, render_cuda, run_numpy, trace
from valley_core import elementwise

VARIANTS = [
    ("lamb_direction", dict(adaptor=True, decay=True)),
    ("lamb_direction", dict(adaptor=True, decay=False)),
    ("lamb_direction", dict(adaptor=False, decay=True)),
    ("lamb_direction", dict(adaptor=False, decay=False)),
    ("apply_trust_ratio", {}),
    ("apply_plain", {}),
    ("adam_step", dict(l2=True, decoupled=False)),
    ("adam_step", dict(l2=False, decoupled=True)),
    ("adam_step", dict(l2=False, decoupled=False)),
    ("heavy_ball_step", {}),
]

SCALARS = dict(
    alpha=-0.7,
    beta1=0.6,
    beta2=0.9,
    beta3=0.999,
    eps=1e-6,
    correction2=1 - 0.9**3,
    correction3=1 - 0.999**3,
    weight_decay=1e-2,
    lr=3e-3,
    trust_eps=1e-6,
    norm_eps=1e-10,
)
SIZE = 257


def _inputs(program, dtype, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in (*program.arrays_in, *program.arrays_inout, *program.arrays_out):
        if name in ("param_norm", "direction_norm"):
            arrays[name] = np.asarray(rng.uniform(0.5, 2.0), dtype=dtype)
        elif name == "second":
            arrays[name] = rng.uniform(0.0, 1.0, SIZE).astype(dtype)
        else:
            arrays[name] = rng.normal(size=SIZE).astype(dtype)
    return arrays, {n: SCALARS[n] for n in program.scalars}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_traced_alto_direction_equals_the_core_bit_for_bit(dtype):
    program = _programs.program("lamb_direction", adaptor=True, decay=True)
    arrays, scalars = _inputs(program, dtype)
    result = run_numpy(program, arrays, scalars)
    direct = elementwise.alto_direction(
        arrays["grad"],
        arrays["carry"],
        arrays["first"],
        arrays["second"],
        arrays["param"],
        alpha=scalars["alpha"],
        beta1=scalars["beta1"],
        beta2=scalars["beta2"],
        beta3=scalars["beta3"],
        eps=scalars["eps"],
        correction2=scalars["correction2"],
        correction3=scalars["correction3"],
        weight_decay=scalars["weight_decay"],
        xp=np,
    )
    for name, want in zip(("direction", "carry", "first", "second"), direct):
        assert result[name].dtype == dtype
        np.testing.assert_array_equal(result[name], want, err_msg=name)


@pytest.mark.parametrize("kind,flags", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_traced_program_equals_its_python_definition(kind, flags, dtype):
    program = _programs.program(kind, **flags)
    arrays, scalars = _inputs(program, dtype, seed=1)
    result = run_numpy(program, arrays, scalars)
    function = getattr(_programs, kind)
    inputs = {n: arrays[n] for n in (*program.arrays_in, *program.arrays_inout)}
    direct = function(**inputs, **scalars, xp=np, **flags)
    assert set(result) == set(direct)
    for name, want in direct.items():
        assert result[name].dtype == dtype, name
        np.testing.assert_array_equal(result[name], want, err_msg=name)


def test_tracing_rejects_data_dependent_branches_and_foreign_values():
    def branches(*, x, xp):
        return {"y": x if x else x}

    with pytest.raises(TypeError, match="no truth value"):
        trace(branches, "branches", arrays_in=("x",), arrays_out=("y",))

    def foreign(*, x, xp):
        return {"y": x * "2"}

    with pytest.raises(TypeError, match="cannot trace a str"):
        trace(foreign, "foreign", arrays_in=("x",), arrays_out=("y",))

    def wrong_outputs(*, x, xp):
        return {"z": x}

    with pytest.raises(ValueError, match=r"returned \['z'\], expected \['y'\]"):
        trace(wrong_outputs, "wrong", arrays_in=("x",), arrays_out=("y",))
    assert isinstance(Symbol("x", "array"), Symbol)


def _harness_source(programs, device: bool) -> str:
    """C++ (host) or CUDA source that runs each rendered body the way CuPy's ElementwiseKernel does.

    Each array argument comes with a stride (0 for a broadcast 0-d input, 1 otherwise); inputs are read
    into ``const T name`` and outputs bound as ``T& name``, then the generated operation runs unchanged.
    """
    lines = ["#include <cmath>", "using std::sqrt;"] if not device else []
    for program in programs:
        _, _, operation = render_cuda(program)
        outs = (*program.arrays_inout, *program.arrays_out)
        params = ["long n"]
        params += [f"const T* {a}_in, long {a}_stride" for a in program.arrays_in]
        params += [f"double {s}" for s in program.scalars]
        params += [f"T* {a}_out" for a in outs]
        body = []
        for a in program.arrays_in:
            body.append(f"const T {a} = {a}_in[i * {a}_stride];")
        for a in program.arrays_inout:
            body.append(f"T& {a} = {a}_out[i];")
        for a in program.arrays_out:
            body.append(f"T& {a} = {a}_out[i];")
        body.append("{\n" + operation + "\n}")
        prefix = "__global__ " if device else ""
        loop_head = (
            "long i = blockIdx.x * (long)blockDim.x + threadIdx.x; if (i >= n) return;"
            if device
            else "for (long i = 0; i < n; ++i) {"
        )
        loop_tail = "" if device else "}"
        lines.append(
            f"template <typename T> {prefix}void {program.name}({', '.join(params)}) {{\n"
            f"{loop_head}\n" + "\n".join(body) + f"\n{loop_tail}\n}}"
        )
        for ctype, suffix in (("float", "f32"), ("double", "f64")):
            concrete = ", ".join(p.replace("T*", f"{ctype}*") for p in params)
            call = ", ".join(
                ["n"]
                + [x for a in program.arrays_in for x in (f"{a}_in", f"{a}_stride")]
                + list(program.scalars)
                + [f"{a}_out" for a in outs]
            )
            if device:
                lines.append(f"template __global__ void {program.name}<{ctype}>({concrete});")
            else:
                lines.append(
                    f'extern "C" void {program.name}_{suffix}({concrete}) {{ {program.name}<{ctype}>({call}); }}'
                )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def host_library(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler (g++, c++ or clang++) to compile the generated kernel bodies")
    programs = [_programs.program(kind, **flags) for kind, flags in VARIANTS]
    folder = tmp_path_factory.mktemp("kernels")
    source, library = folder / "kernels.cpp", folder / "kernels.so"
    source.write_text(_harness_source(programs, device=False))
    subprocess.run(
        [compiler, "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", str(source), "-o", str(library)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return ctypes.CDLL(str(library))


@pytest.mark.parametrize("kind,flags", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rendered_cuda_body_compiled_for_the_host_equals_numpy_bit_for_bit(host_library, kind, flags, dtype):
    program = _programs.program(kind, **flags)
    arrays, scalars = _inputs(program, dtype, seed=2)
    expected = run_numpy(program, arrays, scalars)
    ctype = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    pointer = ctypes.POINTER(ctype)
    outputs = {n: arrays[n].copy() for n in (*program.arrays_inout, *program.arrays_out)}
    args, keep_alive = [ctypes.c_long(SIZE)], []
    for name in program.arrays_in:
        array = np.require(arrays[name], requirements="C")  # keeps 0-d inputs 0-d (stride 0)
        keep_alive.append(array)
        args += [array.ctypes.data_as(pointer), ctypes.c_long(0 if array.ndim == 0 else 1)]
    args += [ctypes.c_double(scalars[n]) for n in program.scalars]
    args += [outputs[n].ctypes.data_as(pointer) for n in (*program.arrays_inout, *program.arrays_out)]
    getattr(host_library, f"{program.name}_{'f32' if dtype == np.float32 else 'f64'}")(*args)
    for name, want in expected.items():
        np.testing.assert_array_equal(outputs[name], want, err_msg=name)


def test_rendered_bodies_compile_for_a_gpu_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed: the device compile check needs it, not a GPU")
    programs = [_programs.program(kind, **flags) for kind, flags in VARIANTS]
    source = tmp_path / "kernels.cu"
    source.write_text(_harness_source(programs, device=True))
    completed = subprocess.run(
        [nvcc, "-ptx", "-arch=compute_80", str(source), "-o", str(tmp_path / "k.ptx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    assert "sqrt.rn.f32" in ptx and "sqrt.rn.f64" in ptx


def test_cupys_own_kernel_source_for_every_program_compiles_with_nvcc(tmp_path):
    """The exact source CuPy's ElementwiseKernel generates around each body (CuPy's private code generator,
    called without a device), compiled with nvcc against CuPy's headers."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    try:
        from cupy._core import _carray, _kernel, _scalar

        parts = ["#include <cupy/carray.cuh>"]
        for kind, flags in VARIANTS:
            program = _programs.program(kind, **flags)
            kernel = cupy.ElementwiseKernel(*render_cuda(program), program.name)
            for dtype in (np.float32, np.float64):
                arginfos = []
                for param in kernel.params:  # 2-D strided arrays, float64 scalars, a 2-D indexer
                    if param.name == "_ind":
                        arginfos.append(_kernel._ArgInfo(2, _carray.Indexer, None, 2, True, True))
                    elif param.dtype is not None:
                        arginfos.append(_kernel._ArgInfo(3, _scalar.CScalar, param.dtype, 0, True, True))
                    else:
                        arginfos.append(_kernel._ArgInfo(1, cupy.ndarray, dtype, 2, False, True))
                code = _kernel._get_elementwise_kernel_code(
                    tuple(arginfos),
                    _kernel._TypeMap((("T", dtype),)),
                    kernel.params,
                    kernel.operation,
                    f"{program.name}_{dtype.__name__}",
                    kernel.preamble,
                )
                parts.append(f"namespace {program.name}_{dtype.__name__}_ns {{\n{code}\n}}")
    except (AttributeError, TypeError, ImportError, AssertionError) as error:
        pytest.skip(f"CuPy's private kernel code generator changed ({type(error).__name__}: {error})")
    source = tmp_path / "cupy_kernels.cu"
    source.write_text("\n".join(parts))
    completed = subprocess.run(
        [
            nvcc,
            "-ptx",
            "-arch=compute_80",
            "-std=c++17",
            f"-I{include}",
            str(source),
            "-o",
            str(tmp_path / "cupy_kernels.ptx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "cupy_kernels.ptx").read_text().count(".entry") == 2 * len(VARIANTS)


def test_multi_tensor_kernels_compile_with_nvcc(tmp_path):
    """The opt-in multi-tensor kernels (backends.cupy._multi_tensor), every variant, float32 and float64."""
    from backends.cupy import _multi_tensor

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    sources = []
    for ctype in ("float", "double"):
        for adaptor in (True, False):
            for decay in (True, False):
                first = _programs.program("lamb_direction", adaptor=adaptor, decay=decay)
                name = f"first_{int(adaptor)}{int(decay)}_{ctype}"
                sources.append((name, _multi_tensor.first_pass_source(first, name, ctype)[0]))
        for decay in (True, False):
            for trust in (True, False):
                second = _programs.apply_from_moments_program(decay, trust)
                name = f"second_{int(decay)}{int(trust)}_{ctype}"
                sources.append((name, _multi_tensor.second_pass_source(second, name, ctype)[0]))
    source = tmp_path / "multi_tensor.cu"
    source.write_text("\n".join(f"namespace {name}_ns {{\n{code}\n}}" for name, code in sources))
    completed = subprocess.run(
        [nvcc, "-ptx", "-arch=compute_80", str(source), "-o", str(tmp_path / "mt.ptx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ptx = (tmp_path / "mt.ptx").read_text()
    assert ptx.count(".entry") == len(sources)
    assert "atom.global.add.f64" in ptx and "shfl.sync.down" in ptx
