"""Multi-tensor CPU kernels generated from the traced core programs, compiled with the host C++ compiler.

One call steps every tensor of a group. The loop bodies are ``backends.kernels.trace.render_cuda`` output for
the programs of ``backends.kernels.programs``, i.e. the core's element-wise arithmetic in the core's order
and types; this module adds only loops, loads and stores:

- Lamb family (ALTO, ALTO vanilla, Lamb), per tensor, two passes over blocks of :data:`BLOCK` elements:
  pass 1 runs ``lamb_direction`` (``valley_core.elementwise.alto_direction`` for ALTO), stores the new
  carry/m/v in place and, for a tensor of at most :data:`STORE_LIMIT_BYTES`, ``r`` in a workspace, and sums
  ``theta^2`` and ``r^2`` per block in double; the block sums are added in block order (so the norms do not
  depend on the number of threads); pass 2 runs ``apply_trust_ratio`` (the core's ``trust_ratio`` of the two
  norms, then ``theta + (-lr)(ratio r)``), or ``apply_plain`` for a group without the trust ratio, on the
  stored ``r`` (a small tensor's second pass follows its own first pass, so ``r`` and ``theta`` are read back
  from the cache) or, for a larger tensor, on ``r`` recomputed from the new m, v by
  ``lamb_apply_from_moments`` (the first pass's own arithmetic, so the same ``r`` bit for bit).
- Adam family (EAdam, EAdamW) and heavy ball (ESGD): one pass, ``adam_step`` / ``heavy_ball_step``.
- The E adaptor alone (``backends.torch.E``), in two parts of the ``e_adaptor`` program: ``e_adapted`` writes
  the adapted gradient before the base optimizer's step, ``e_commit`` the next carry, in place, after it.

Types: each kernel is a template over the compute and state type ``T`` and the storage type ``P`` of the
parameter and its gradient: float32/float32, float64/float64, and float32 with bfloat16 or float16 parameters
(loaded into float32, stored rounded to nearest even, as the core path's float32 working copies are).

Floating point: compiled with ``-ffp-contract=off`` (no fused multiply-add: every operation is rounded as in
the core's op-by-op evaluation) and without ``-ffast-math``; ``-fno-math-errno`` only lets ``sqrt``
vectorise. Element-wise results therefore equal the core's bit for bit on the same inputs; the norms are
summed in another order (and in double for float32), which the parity suite bounds.

Threads: OpenMP, ``threads`` per call (``torch.get_num_threads()`` from the torch backend); blocks are
shared statically, so each thread updates in pass 2 the blocks it produced in pass 1. Without OpenMP the
same source compiles single-threaded.

Build: on first use the source is compiled into ``<cache>/valley-kernels-<hash>.so`` (cache: the
``VALLEY_CACHE_DIR`` environment variable, else ``$XDG_CACHE_HOME/valley``, else ``~/.cache/valley``); the
hash covers the source, the compiler, its flags and the CPU, and the file is written atomically, so
concurrent processes (DDP ranks) can build at once. The compiler is ``VALLEY_CXX``, else ``CXX``, else
``c++``/``g++`` from ``PATH``. :class:`KernelUnavailable` says why a build failed.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from backends.kernels.programs import apply_from_moments_program, program
from backends.kernels.trace import Program, render_cuda

#: Elements per block: the unit of work sharing and of the norms' partial sums.
BLOCK = 4096
#: Lamb family: a tensor of at most this many bytes keeps ``r`` in a workspace between the two passes (its
#: ``r`` and theta are still in the cache for the second pass); a larger one recomputes ``r`` from the new m, v
#: in the second pass, which moves fewer bytes than writing ``r`` to memory and reading it back, and needs no
#: workspace as large as the largest tensor.
STORE_LIMIT_BYTES = 2 << 20
#: Every scalar any kernel reads, in the order of the ``scalars`` array passed to a kernel.
SCALARS = (
    "alpha",
    "beta1",
    "beta2",
    "beta3",
    "eps",
    "correction2",
    "correction3",
    "weight_decay",
    "lr",
    "trust_eps",
    "norm_eps",
)
#: Per-tensor arrays in the order of the pointer table, for each kernel.
ROLES: Dict[str, Tuple[str, ...]] = {
    "lamb_e1": ("grad", "param", "carry", "first", "second"),
    "lamb_e0": ("grad", "param", "first", "second"),
    "adam_l2": ("grad", "param", "carry", "first", "second"),
    "adam_decoupled": ("grad", "param", "carry", "first", "second"),
    "heavy_ball": ("grad", "param", "carry", "momentum"),
    "e_adapted": ("grad", "carry", "adapted"),
    "e_commit": ("grad", "carry"),
}
#: Kernels that run a program only in part: outputs kept local (not stored), outputs stored into another role.
_PARTIAL = {
    "e_adapted": {"keep": ("new_carry",), "alias": {}},
    "e_commit": {"keep": ("adapted",), "alias": {"new_carry": "carry"}},
}
#: Parameter dtypes: (compute and state type ``T``, storage type ``P`` of the parameter and its gradient).
#: bfloat16/float16 parameters are computed with float32 state, as the core path does (working copies in
#: float32, the result rounded to nearest even into the parameter); float16 needs the compiler's ``_Float16``.
_DTYPES = {
    "float32": ("float", "float"),
    "float64": ("double", "double"),
    "bfloat16": ("float", "valley_bf16"),
    "float16": ("float", "_Float16"),
}
#: The arrays stored in the parameter's dtype (the others, state and workspace, are in the compute type).
_STORAGE_ROLES = frozenset({"grad", "param"})
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-std=c++17")


class KernelUnavailable(RuntimeError):
    """The CPU kernels could not be built or loaded (no compiler, a failed compilation ...)."""


def _programs(kernel: str) -> Dict[str, Program]:
    """The traced programs of ``kernel``: ``main``, and for the Lamb family the second passes ``trust`` and
    ``plain`` (from a stored ``r``) and ``trust_recompute`` and ``plain_recompute`` (``r`` recomputed from the
    new m, v: the same arithmetic as the first pass, ``valley_core.elementwise.adam_direction`` + decay)."""
    if kernel.startswith("lamb"):
        return {
            "main": program("lamb_direction", adaptor=kernel == "lamb_e1", decay=True),
            "trust": program("apply_trust_ratio"),
            "plain": program("apply_plain"),
            "trust_recompute": apply_from_moments_program(True, True),
            "plain_recompute": apply_from_moments_program(True, False),
        }
    if kernel.startswith("adam"):
        return {"main": program("adam_step", l2=kernel == "adam_l2", decoupled=kernel == "adam_decoupled")}
    if kernel.startswith("e_"):
        return {"main": program("e_adaptor")}
    return {"main": program("heavy_ball_step")}


def _element(prog: Program, pointers: Dict[str, str], broadcast: Sequence[str] = (), keep: Sequence[str] = ()) -> str:
    """The loop body for element ``i``: loads, the traced operation, stores.

    ``pointers`` maps each array of the program to the C pointer holding it; names in ``broadcast`` are
    loop-invariant values already declared (the norms); outputs in ``keep`` stay local (not stored).
    """
    _, _, operation = render_cuda(prog)

    def load(name: str) -> str:
        return f"widen({pointers[name]}[i])" if name in _STORAGE_ROLES else f"{pointers[name]}[i]"

    def store(name: str) -> str:
        value = f"narrow<P>({name})" if name in _STORAGE_ROLES else name
        return f"{pointers[name]}[i] = {value};"

    lines = [f"const T {name} = {load(name)};" for name in prog.arrays_in if name not in broadcast]
    lines += [f"T {name} = {load(name)};" for name in prog.arrays_inout]
    lines += [f"T {name};" for name in prog.arrays_out]
    lines += operation.splitlines()
    lines += [store(name) for name in (*prog.arrays_inout, *prog.arrays_out) if name not in keep]
    return "\n".join("        " + line for line in lines)


def _pointer_declarations(roles: Sequence[str]) -> str:
    lines = []
    for index, role in enumerate(roles):
        ctype = "P" if role in _STORAGE_ROLES else "T"
        lines.append(f"    {ctype}* __restrict__ {role}_p = static_cast<{ctype}*>(arrays[{index} * count + t]);")
    return "\n".join(lines)


def _kernel_source(kernel: str) -> str:
    roles = ROLES[kernel]
    programs = _programs(kernel)
    pointers = {role: f"{role}_p" for role in roles}
    pointers["direction"] = "work_p"
    partial = _PARTIAL.get(kernel, {"keep": (), "alias": {}})
    pointers.update({name: f"{role}_p" for name, role in partial["alias"].items()})
    unpack = "\n".join(f"  const double {name} = scalars[{index}];" for index, name in enumerate(SCALARS))
    blocks = (
        "    const int64_t n = sizes[t];\n"
        "    const int64_t blocks = (n + VALLEY_BLOCK - 1) / VALLEY_BLOCK;\n" + _pointer_declarations(roles)
    )
    loop = (
        "      const int64_t lo = b * VALLEY_BLOCK;\n"
        "      const int64_t hi = lo + VALLEY_BLOCK < n ? lo + VALLEY_BLOCK : n;\n"
    )
    if not kernel.startswith("lamb"):
        body = f"""
{blocks}
    #pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < blocks; ++b) {{
{loop}      #pragma omp simd
      for (int64_t i = lo; i < hi; ++i) {{
{_element(programs["main"], pointers, keep=partial["keep"])}
      }}
    }}"""
    else:
        broadcast = ("param_norm", "direction_norm")

        def first_pass(store: bool) -> str:
            return f"""
      #pragma omp for schedule(static)
      for (int64_t b = 0; b < blocks; ++b) {{
{loop}        double sum_param = 0.0, sum_direction = 0.0;
        #pragma omp simd reduction(+:sum_param, sum_direction)
        for (int64_t i = lo; i < hi; ++i) {{
{_element(programs["main"], pointers, keep=() if store else ("direction",))}
          sum_param += static_cast<double>(param) * static_cast<double>(param);
          sum_direction += static_cast<double>(direction) * static_cast<double>(direction);
        }}
        sums[2 * b] = sum_param;
        sums[2 * b + 1] = sum_direction;
      }}"""

        def second_pass(name: str) -> str:
            return f"""
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {{
{loop}          #pragma omp simd
          for (int64_t i = lo; i < hi; ++i) {{
{_element(programs[name], pointers, broadcast)}
          }}
        }}"""

        body = f"""
{blocks}
    const bool store = n <= work_capacity;
    if (store) {{{first_pass(True)}
    }} else {{{first_pass(False)}
    }}
    if (trust) {{
      double total_param = 0.0, total_direction = 0.0;
      for (int64_t b = 0; b < blocks; ++b) {{
        total_param += sums[2 * b];
        total_direction += sums[2 * b + 1];
      }}
      const T param_norm = static_cast<T>(sqrt(total_param));
      const T direction_norm = static_cast<T>(sqrt(total_direction));
      if (store) {{{second_pass("trust")}
      }} else {{{second_pass("trust_recompute")}
      }}
    }} else if (store) {{{second_pass("plain")}
    }} else {{{second_pass("plain_recompute")}
    }}"""
    template = f"""
template <typename T, typename P>
static void {kernel}(int64_t count, void* const* arrays, const int64_t* sizes, void* work,
                     int64_t work_capacity, double* sums, const double* scalars, int trust, int threads) {{
{unpack}
  T* __restrict__ work_p = static_cast<T*>(work);
  #pragma omp parallel num_threads(threads)
  for (int64_t t = 0; t < count; ++t) {{{body}
  }}
}}
"""
    exports = []
    for dtype, (ctype, storage) in _DTYPES.items():
        guard_open, guard_close = ("#ifdef __FLT16_MAX__\n", "#endif\n") if storage == "_Float16" else ("", "")
        exports.append(f"""
{guard_open}extern "C" void valley_{kernel}_{dtype}(int64_t count, void* const* arrays, const int64_t* sizes,
                                      void* work, int64_t work_capacity, double* sums, const double* scalars, int trust,
                                      int threads) {{
  {kernel}<{ctype}, {storage}>(count, arrays, sizes, work, work_capacity, sums, scalars, trust, threads);
}}
{guard_close}""")
    return template + "".join(exports)


@lru_cache(maxsize=None)
def source() -> str:
    """The whole C++ translation unit (every kernel, float32 and float64)."""
    header = f"""// Generated by backends/kernels/cpu.py from the traced valley_core programs. Do not edit.
#include <cmath>
#include <cstdint>
#include <cstring>
using std::sqrt;
static const int64_t VALLEY_BLOCK = {BLOCK};

// Storage conversions. bfloat16: the upper half of a float32, rounded to nearest even (NaN -> 0x7FC0), as
// c10::BFloat16 does; float16: the compiler's _Float16 conversions (IEEE, round to nearest even).
struct valley_bf16 {{ uint16_t bits; }};
static inline float widen(float x) {{ return x; }}
static inline double widen(double x) {{ return x; }}
static inline float widen(valley_bf16 x) {{
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}}
#ifdef __FLT16_MAX__
static inline float widen(_Float16 x) {{ return static_cast<float>(x); }}
#endif
template <typename P, typename T> static inline P narrow(T x) {{ return static_cast<P>(x); }}
template <> inline valley_bf16 narrow<valley_bf16, float>(float x) {{
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if (x != x) return valley_bf16{{0x7FC0u}};
  u += ((u >> 16) & 1u) + 0x7FFFu;
  return valley_bf16{{static_cast<uint16_t>(u >> 16)}};
}}
#pragma GCC diagnostic ignored "-Wunused-variable"
"""
    return header + "".join(_kernel_source(kernel) for kernel in ROLES)


def _compiler() -> str:
    for candidate in (os.environ.get("VALLEY_CXX"), os.environ.get("CXX"), "c++", "g++"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
            if os.environ.get("VALLEY_CXX") == candidate:
                raise KernelUnavailable(f"VALLEY_CXX={candidate!r} is not an executable")
    raise KernelUnavailable("no C++ compiler found (set VALLEY_CXX, or install g++)")


def cache_dir() -> Path:
    """Where built kernels are kept (see the module docstring)."""
    if os.environ.get("VALLEY_CACHE_DIR"):
        return Path(os.environ["VALLEY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "valley"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _build(compiler: str, flags: Sequence[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        src = Path(scratch) / "valley_kernels.cpp"
        src.write_text(source(), encoding="utf-8")
        out = Path(scratch) / target.name
        result = subprocess.run(
            [compiler, *flags, str(src), "-o", str(out)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise KernelUnavailable(
                f"{compiler} failed ({' '.join(flags)}): {(result.stderr or result.stdout).strip()[:2000]}"
            )
        os.replace(out, target)  # atomic: another process sees the old file or the whole new one


class Library:
    """The loaded kernels. ``run`` steps ``count`` tensors of one dtype with one kernel."""

    def __init__(self, path: Path, openmp: bool) -> None:
        self.path = path
        #: Whether the kernels were built with OpenMP (else ``threads`` is ignored: one thread).
        self.openmp = openmp
        self._cdll = ctypes.CDLL(str(path))
        self._functions = {}
        for kernel in ROLES:
            for dtype in _DTYPES:
                function = getattr(self._cdll, f"valley_{kernel}_{dtype}", None)
                if function is None:  # float16 where the compiler has no _Float16
                    continue
                function.restype = None
                function.argtypes = [
                    ctypes.c_int64,
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    ctypes.c_int64,
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    ctypes.c_int,
                    ctypes.c_int,
                ]
                self._functions[kernel, dtype] = function

    def supports(self, dtype: str) -> bool:
        """Whether the kernels exist for parameters of ``dtype`` (float16 needs the compiler's ``_Float16``)."""
        return (next(iter(ROLES)), dtype) in self._functions

    def run(
        self,
        kernel: str,
        dtype: str,
        pointers: Sequence[Sequence[int]],
        sizes: Sequence[int],
        work: int,
        work_capacity: int,
        sums: int,
        scalars: Dict[str, float],
        trust: bool,
        threads: int,
    ) -> None:
        """Steps the tensors in place.

        Args:
            kernel: a key of :data:`ROLES`.
            dtype: the parameters' dtype: ``"float32"``, ``"float64"``, ``"bfloat16"`` or ``"float16"`` (the
                state and ``work`` are then float32).
            pointers: for each role of ``ROLES[kernel]``, the data pointers of the tensors (contiguous).
            sizes: the number of elements of each tensor (> 0).
            work: (Lamb family) a buffer of ``work_capacity`` elements of ``dtype`` for ``r``.
            work_capacity: (Lamb family) tensors of at most this many elements store ``r`` in ``work`` and
                read it back in the second pass; larger ones recompute it there from the new m, v (see
                :data:`STORE_LIMIT_BYTES`).
            sums: (Lamb family) a buffer of ``2 * ceil(max(sizes) / BLOCK)`` doubles.
            scalars: the step's scalars by name (``backends.kernels.scalars.step_scalars``); missing ones
                are 0 and unread.
            trust: (Lamb family) apply the trust ratio.
            threads: OpenMP threads.
        """
        count = len(sizes)
        roles = ROLES[kernel]
        if len(pointers) != len(roles) or any(len(column) != count for column in pointers):
            raise ValueError(f"{kernel}: expected {len(roles)} pointer lists ({', '.join(roles)}) of {count}")
        table = (ctypes.c_void_p * (len(roles) * count))(*[p for column in pointers for p in column])
        size_array = (ctypes.c_int64 * count)(*sizes)
        scalar_array = (ctypes.c_double * len(SCALARS))(*[float(scalars.get(name, 0.0)) for name in SCALARS])
        self._functions[kernel, dtype](
            count, table, size_array, work, int(work_capacity), sums, scalar_array, int(trust), max(1, int(threads))
        )


_lock = threading.Lock()
_loaded: Dict[tuple, object] = {}


def load() -> Library:
    """The kernels, built on first use (then from the cache). Raises :class:`KernelUnavailable`.

    The outcome is remembered per process for the current ``VALLEY_CXX``/``CXX``/cache directory, so a build
    that failed is not retried at every step, and changing those variables is seen at the next call.
    """
    key = tuple(os.environ.get(name) for name in ("VALLEY_CXX", "CXX", "VALLEY_CACHE_DIR", "XDG_CACHE_HOME"))
    outcome = _loaded.get(key)
    if isinstance(outcome, Library):
        return outcome
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = _load_uncached()
            except KernelUnavailable as error:
                _loaded[key] = error
        outcome = _loaded[key]
    if isinstance(outcome, KernelUnavailable):
        raise KernelUnavailable(str(outcome))
    return outcome  # type: ignore[return-value]


def _load_uncached() -> Library:
    compiler = _compiler()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError as error:
        raise KernelUnavailable(f"cannot run {compiler}: {error}") from None
    errors: List[str] = []
    for openmp in (True, False):
        flags = (*_FLAGS, "-fopenmp") if openmp else (*_FLAGS, "-fopenmp-simd")
        key = hashlib.sha256("\n".join([source(), compiler, version, *flags, _cpu_signature()]).encode())
        target = cache_dir() / f"valley-kernels-{key.hexdigest()[:24]}.so"
        try:
            if not target.exists():
                _build(compiler, flags, target)
            return Library(target, openmp)
        except (KernelUnavailable, OSError) as error:
            errors.append(str(error))
    raise KernelUnavailable("; ".join(errors))
