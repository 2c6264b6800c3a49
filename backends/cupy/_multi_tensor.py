"""Multi-tensor CUDA kernels for the Lamb family (ALTO, ALTO vanilla, Lamb): an opt-in path, not the default.

The default path launches four kernels per tensor. This one launches two per group of up to
``TENSORS_PER_LAUNCH`` contiguous tensors, with the norms fused into the first pass:

1. ``first pass``: the traced ``lamb_direction`` program (``valley_core.elementwise.alto_direction``) per
   element; stores ``b, m, v`` in place and accumulates ``||theta||^2`` and ``||r||^2`` (in double) per tensor,
   without storing ``r``;
2. ``second pass``: the traced ``lamb_apply_from_moments`` program: ``r`` recomputed from the stored ``m, v``
   (the same arithmetic), the core's trust ratio from the two norms, and ``theta`` updated in place.

Traffic per float32 parameter: 32 + 16 = 48 bytes (the per-tensor path moves 56; the minimum is 36).

The bodies are the same generated code as the default path (``backends.kernels.trace``); this module only
adds the plumbing: selecting a tensor's pointers from ``blockIdx.y``, a grid-stride loop, and a warp-level
sum of the two squared norms followed by one ``atomicAdd`` per warp. With ``-DVALLEY_HOST_EMULATION`` the
same source compiles as C++ for the host (CUDA's indices become globals, the warp sum a plain add), which
is how the CPU tests run it; see ``emulation_source``.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from backends.kernels.trace import Program, render_cuda

#: Tensors handled by one launch (``gridDim.y``); every launch passes this many pointer slots.
TENSORS_PER_LAUNCH = 16
#: Threads per block (a multiple of the warp size, 32).
BLOCK = 256
#: Elements each thread handles on average (sets ``gridDim.x``).
ELEMENTS_PER_THREAD = 16

_PRELUDE = r"""
#ifdef VALLEY_HOST_EMULATION
#include <cmath>
using std::sqrt;
struct valley_dim3 { unsigned int x, y, z; };
static valley_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
static inline void valley_warp_add(double value, double* target) { *target += value; }
#else
__device__ __forceinline__ void valley_warp_add(double value, double* target) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  if ((threadIdx.x & 31u) == 0u) atomicAdd(target, value);
}
#endif
"""


def _kernel(
    name: str,
    ctype: str,
    arrays_in: Sequence[str],
    arrays_inout: Sequence[str],
    scalars: Sequence[str],
    prologue: str,
    body: str,
    loads_extra: str,
    epilogue: str,
    loop_tail: str,
) -> Tuple[str, List[str]]:
    """Source of one multi-tensor kernel and its C parameter declarations, in order."""
    params: List[str] = []
    for slot in range(TENSORS_PER_LAUNCH):
        params += [f"const T* __restrict__ {a}_{slot}" for a in arrays_in]
        params += [f"T* __restrict__ {a}_{slot}" for a in arrays_inout]
        params.append(f"const long long n_{slot}")
    params += [f"const double {s}" for s in scalars]
    params.append("double* __restrict__ sums")
    pointers = [f"const T* {a}_ptr = 0;" for a in arrays_in] + [f"T* {a}_ptr = 0;" for a in arrays_inout]
    cases = []
    for slot in range(TENSORS_PER_LAUNCH):
        assigns = " ".join(f"{a}_ptr = {a}_{slot};" for a in (*arrays_in, *arrays_inout))
        cases.append(f"    case {slot}: {assigns} n = n_{slot}; break;")
    loads = [f"const T {a} = {a}_ptr[i];" for a in arrays_in] + [f"T {a} = {a}_ptr[i];" for a in arrays_inout]
    stores = [f"{a}_ptr[i] = {a};" for a in arrays_inout]
    source = "\n".join(
        [
            f"typedef {ctype} T;",
            _PRELUDE,
            f'extern "C" __global__ void {name}({", ".join(params)}) {{',
            "  const int slot = (int)blockIdx.y;",
            "  " + " ".join(pointers),
            "  long long n = 0;",
            "  switch (slot) {",
            *cases,
            "    default: return;",
            "  }",
            prologue,
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;",
            "       i += (long long)gridDim.x * blockDim.x) {",
            "    " + " ".join(loads),
            loads_extra,
            "    {",
            body,
            "    }",
            "    " + " ".join(stores),
            loop_tail,
            "  }",
            epilogue,
            "}",
        ]
    )
    return source, params


def first_pass_source(program: Program, name: str, ctype: str) -> Tuple[str, List[str]]:
    """The first pass for ``program`` (a traced ``lamb_direction``): ``b, m, v`` in place, squared norms summed.

    ``sums[2 * slot]`` receives ``||theta||^2`` and ``sums[2 * slot + 1]`` receives ``||r||^2``.
    """
    if program.arrays_out != ("direction",):
        raise ValueError(f"{program.name}: the first pass needs a program whose only new output is 'direction'")
    _, _, body = render_cuda(program)
    return _kernel(
        name,
        ctype,
        program.arrays_in,
        program.arrays_inout,
        program.scalars,
        prologue="  double sum_param = 0.0, sum_direction = 0.0;",
        body=body,
        loads_extra="    T direction;",
        loop_tail="    sum_param += (double)param * (double)param;\n"
        "    sum_direction += (double)direction * (double)direction;",
        epilogue="  valley_warp_add(sum_param, &sums[2 * slot]);\n"
        "  valley_warp_add(sum_direction, &sums[2 * slot + 1]);",
    )


def second_pass_source(program: Program, name: str, ctype: str) -> Tuple[str, List[str]]:
    """The second pass for ``program`` (a traced ``lamb_apply_from_moments``), norms read from ``sums``."""
    arrays_in = [a for a in program.arrays_in if a not in ("param_norm", "direction_norm")]
    _, _, body = render_cuda(program)
    norms = (
        ("    const T param_norm = (T)sqrt(sums[2 * slot]);\n    const T direction_norm = (T)sqrt(sums[2 * slot + 1]);")
        if "param_norm" in program.arrays_in
        else ""
    )
    return _kernel(
        name,
        ctype,
        arrays_in,
        program.arrays_inout,
        program.scalars,
        prologue="",
        body=body,
        loads_extra=norms,
        epilogue="",
        loop_tail="",
    )


def emulation_source(source: str, name: str, params: Sequence[str]) -> str:
    """``source`` plus a host driver ``<name>_emulate(gx, gy, bx, <params>)`` that runs the grid sequentially.

    Compile with ``-DVALLEY_HOST_EMULATION``. Threads run one after another, so this checks indexing,
    pointer selection, the generated bodies and the norms, not concurrency.
    """
    names = [p.split()[-1] for p in params]
    driver = (
        f'extern "C" void {name}_emulate(unsigned int gx, unsigned int gy, unsigned int bx, '
        f"{', '.join(params)}) {{\n"
        "  gridDim.x = gx; gridDim.y = gy; gridDim.z = 1; blockDim.x = bx; blockDim.y = 1; blockDim.z = 1;\n"
        "  for (unsigned int y = 0; y < gy; ++y) for (unsigned int x = 0; x < gx; ++x)\n"
        "    for (unsigned int t = 0; t < bx; ++t) {\n"
        "      blockIdx.x = x; blockIdx.y = y; blockIdx.z = 0;\n"
        "      threadIdx.x = t; threadIdx.y = 0; threadIdx.z = 0;\n"
        f"      {name}({', '.join(names)});\n"
        "    }\n}\n"
    )
    return source + "\n" + driver


def grid_x(sizes: Sequence[int]) -> int:
    """``gridDim.x`` for a launch whose largest tensor has ``max(sizes)`` elements."""
    largest = max(sizes) if sizes else 0
    return max(1, min(65535, -(-largest // (BLOCK * ELEMENTS_PER_THREAD))))
