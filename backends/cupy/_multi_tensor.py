"""Multi-tensor CUDA kernels generated from a plan: one launch per pass for up to ``TENSORS_PER_LAUNCH`` tensors.

The body of a pass is the plan's statements (``backends.kernels.trace.render_c``: the core's arithmetic);
this module adds only the plumbing: selecting a tensor's pointers from ``blockIdx.y``, a grid-stride loop, and
for a pass with sums (the squares ``valley_core.reductions.l2_norm`` adds) a warp-level sum followed by one
``atomicAdd`` per warp into a float64 buffer that the next pass reads. Nothing here knows an optimizer.

Traffic per float32 parameter of ALTO: 32 + 16 = 48 bytes (the second pass recomputes ``r`` from the new
``m, v``: the plan's ``recompute`` passes). With ``-DVALLEY_HOST_EMULATION`` the same source compiles as C++
for the host (CUDA's indices become globals, the warp sum a plain add), which is how the CPU tests run it;
see ``emulation_source``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from backends.kernels.plan import Pass, Plan
from backends.kernels.trace import render_c

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


def arrays_of(step: Pass) -> List[str]:
    """The arrays a pass reads or writes, in the order of the kernel's parameters."""
    return list(dict.fromkeys([array for _, array in step.loads] + [array for array, _ in step.stores]))


def pass_source(plan: Plan, index: int, step: Pass, name: str, ctype: str) -> Tuple[str, List[str]]:
    """Source of the kernel of pass ``index`` and its C parameter declarations, in order.

    Parameters: per slot, the pass's arrays (``arrays_of``) and ``n``; then the plan's per-step scalars; then
    ``sums``: ``Plan.reductions`` doubles per slot (zeroed before the first pass), in the order of the plan's sums.
    """
    arrays = arrays_of(step)
    params: List[str] = []
    for slot in range(TENSORS_PER_LAUNCH):
        params += [f"T* __restrict__ {a}_{slot}" for a in arrays]
        params.append(f"const long long n_{slot}")
    params += [f"const double {s}" for s in plan.step_scalars]
    params.append("double* __restrict__ sums")
    offsets: Dict[str, int] = {t: j for j, t in enumerate(t for p in plan.passes for t, _ in p.sums)}
    total = len(offsets)
    cases = []
    for slot in range(TENSORS_PER_LAUNCH):
        assigns = " ".join(f"{a}_ptr = {a}_{slot};" for a in arrays)
        cases.append(f"    case {slot}: {assigns} n = n_{slot}; break;")
    prologue = [f"  const T {t} = (T)sums[{total} * slot + {offsets[t]}];" for t in step.totals]
    prologue += ["  " + render_c(s, plan.kinds) for s in step.uniforms]
    prologue += [f"  double acc{j} = 0.0;" for j in range(len(step.sums))]
    body = [f"const T {symbol} = {array}_ptr[i];" for symbol, array in step.loads]
    body += [render_c(s, plan.kinds) for s in step.statements]
    body += [f"{array}_ptr[i] = {symbol};" for array, symbol in step.stores]
    body += [f"acc{j} += (double){operand};" for j, (_, operand) in enumerate(step.sums)]
    epilogue = [
        f"  valley_warp_add(acc{j}, &sums[{total} * slot + {offsets[t]}]);" for j, (t, _) in enumerate(step.sums)
    ]
    source = "\n".join(
        [
            f"typedef {ctype} T;",
            _PRELUDE,
            f'extern "C" __global__ void {name}({", ".join(params)}) {{',
            "  const int slot = (int)blockIdx.y;",
            "  " + " ".join(f"T* {a}_ptr = 0;" for a in arrays),
            "  long long n = 0;",
            "  switch (slot) {",
            *cases,
            "    default: return;",
            "  }",
            *prologue,
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;",
            "       i += (long long)gridDim.x * blockDim.x) {",
            *("    " + line for line in body),
            "  }",
            *epilogue,
            "}",
        ]
    )
    return source, params


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
