"""Multi-tensor CPU kernels generated from a plan (``backends.kernels.plan``), compiled with the host C++ compiler.

One call steps every tensor of a batch. The loop bodies are the plan's statements (the core's element-wise
arithmetic in the core's order and types, ``backends.kernels.trace.render_c``); this module adds only loops,
loads, stores and sums, and knows no optimizer:

- per tensor, one sweep per pass of the plan over blocks of :data:`BLOCK` elements; a pass adds the squares
  the core's ``l2_norm`` sums per block, in double, and the block sums are added in block order (so the norms
  do not depend on the number of threads); the next pass starts from the totals (compact-state kernels sum
  each :data:`QBLOCK` of a block pairwise, then the QBLOCK sums in order);
- values that cross a reduction (ALTO's ``r``) are kept in a workspace for a tensor of at most
  :data:`STORE_LIMIT_BYTES` (still in the cache for the next pass) or, for a larger one, computed again from
  the state the first pass wrote (the plan's ``recompute`` passes: the same arithmetic, so the same bits),
  which moves fewer bytes than writing them to memory and reading them back.

Types: each kernel is a template over the compute and state type ``T`` and the storage type ``P`` of the
parameter and its gradient: float32/float32, float64/float64, and float32 with bfloat16 or float16 parameters
(loaded into float32, stored rounded to nearest even, as the core path's float32 working copies are).

Floating point: compiled with ``-ffp-contract=off`` (no fused multiply-add: every operation is rounded as in
the core's op-by-op evaluation) and without ``-ffast-math``; ``-fno-math-errno`` only lets ``sqrt``
vectorise. Element-wise results therefore equal the core's bit for bit on the same inputs; the norms are
summed in another order (and in double for float32), which the parity suite bounds.

Threads: OpenMP, ``threads`` per call; blocks are shared statically, so each thread sweeps in every pass the
blocks it swept in the first. Without OpenMP the same source compiles single-threaded.

Build: on first use of a plan its source is compiled into ``<cache>/valley-kernels-<hash>.so`` (cache: the
``VALLEY_CACHE_DIR`` environment variable, else ``$XDG_CACHE_HOME/valley``, else ``~/.cache/valley``); the
hash covers the source, the compiler, its flags and the CPU, and the file is written atomically, so
concurrent processes (DDP ranks) can build at once. The compiler is ``VALLEY_CXX``, else ``CXX``, else
``c++``/``g++`` from ``PATH``. :class:`KernelUnavailable` says why a build failed. A cached file that cannot be
loaded (truncated, copied from another machine) is rebuilt, with a ``RuntimeWarning`` naming it; falling back to
the one-thread build (no OpenMP) also warns.
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
import warnings
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from backends.kernels.plan import GRAD, PARAM, UPDATE, Pass, Plan
from backends.kernels.trace import render_c

#: Elements per block: the unit of work sharing and of the norms' partial sums.
BLOCK = 4096
#: A tensor of at most this many bytes keeps the values that cross a reduction in a workspace (see above).
STORE_LIMIT_BYTES = 2 << 20
#: Parameter dtypes: (compute and state type ``T``, storage type ``P`` of the parameter and its gradient).
#: float16 needs the compiler's ``_Float16``.
DTYPES = {
    "float32": ("float", "float"),
    "float64": ("double", "double"),
    "bfloat16": ("float", "valley_bf16"),
    "float16": ("float", "_Float16"),
}
#: The arrays stored in the parameter's dtype (the others, state and workspaces, are in the compute type).
_STORAGE_ROLES = frozenset({GRAD, PARAM, UPDATE})
#: Compact state codes (``backends.torch.compact_state``): stochastically rounded bfloat16, and block-wise int8
#: with a square-root-like code (signed) or a fourth-root-like code (unsigned, the second moment): CODE_BIAS.
COMPACT_CODES = ("bf16", "q8s", "q8u")
_INT8_CODES = ("q8s", "q8u")
_CODE_TYPES = {"bf16": "valley_bf16", "q8s": "int8_t", "q8u": "uint8_t"}
#: Elements per int8 block (one float32 scale): ``backends.torch.compact_state.QBLOCK``.
QBLOCK = 256
#: The int8 codes' companding (``backends.torch.compact_state``): ``f(r)`` is the float with bits
#: ``(bits(r) >> SHIFT) + BIAS``, ``r^(1/2)`` (signed code) or ``r^(1/4)`` (unsigned) at powers of 4 (16), linear
#: in between; ``f(1) = 1``. Its inverse, the decoding: bits ``(max(bits(y), BIAS) - BIAS) << SHIFT`` (0 at 0).
CODE_SHIFT = {"q8s": 1, "q8u": 2}
CODE_BIAS = {"q8s": 0x3F800000 - (0x3F800000 >> 1), "q8u": 0x3F800000 - (0x3F800000 >> 2)}
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-std=c++17")


#: Compact-state translation units ask GCC for 512-bit vectors where the CPU has them (GCC's default for most
#: AVX-512 CPUs is 256): their decoding and encoding make them compute-bound, where the wider vectors pay
#: (``benchmarks/torch_step.py --state-dtype``), while the memory-bound float32 kernels measured slower with them.
#: The element-wise results do not depend on the width; the per-block norm sums (in double) are added in
#: another order, which the parity suite bounds as it does for every kernel against the core.
_WIDE_VECTORS = """#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC target("prefer-vector-width=512")
#endif
"""


class KernelUnavailable(RuntimeError):
    """The CPU kernels could not be built or loaded (no compiler, a failed compilation ...)."""


def _sweep(
    plan: Plan,
    step: Pass,
    index: int,
    pointers: Dict[str, str],
    stores: Optional[FrozenSet[str]],
    formats: Optional[Dict[str, str]] = None,
) -> str:
    """One pass over the blocks of a tensor: totals of earlier sums, uniforms, then the element loop.

    ``formats``: the compact code of each state role so stored (decoded on load; encoded on store: bfloat16 per
    element, int8 per block of :data:`QBLOCK` after the block's new values are known).
    """
    formats = formats or {}
    offsets = {target: i for i, (target, _) in enumerate(s for p in plan.passes for s in p.sums)}
    total = len(offsets)
    lines = []
    for target in step.totals:
        lines += [
            f"double {target}_total = 0.0;",
            f"for (int64_t b = 0; b < blocks; ++b) {target}_total += sums[{total} * b + {offsets[target]}];",
            f"const T {target} = static_cast<T>({target}_total);",
        ]
    lines += [render_c(s, plan.kinds) for s in step.uniforms]
    barrier = bool(step.sums) or plan.reductions > 0 or index + 1 < len(plan.passes)
    accumulators = [f"acc{i}" for i in range(len(step.sums))]

    def load(symbol: str, array: str) -> str:
        code = formats.get(array)
        if code in _INT8_CODES:
            return f"const T {symbol} = valley_decode_one({pointers[array]}[i], {array}_old);"
        value = f"{pointers[array]}[i]"
        return f"const T {symbol} = {'widen(' + value + ')' if array in _STORAGE_ROLES or code else value};"

    def store(array: str, symbol: str) -> str:
        code = formats.get(array)
        if code == "bf16":
            group, slot = slots[array]
            return f"{pointers[array]}[i] = valley_sr_bf16({symbol}, valley_bits16(word{group}, {slot}));"
        if code:
            return f"{array}_x[i - ql] = {symbol};"
        value = f"narrow<P>({symbol})" if array in _STORAGE_ROLES else symbol
        return f"{pointers[array]}[i] = {value};"

    written = [array for array, _ in step.stores if stores is None or array in stores]
    # int8 arrays: the element loop runs one QBLOCK (one scale) at a time, decodes each element as it loads it and
    # stores the new values in a float array of QBLOCK elements (in the L1 cache), encoded after it (_encode_int8).
    decoded = [array for _, array in step.loads if formats.get(array) in _INT8_CODES]
    encoded = [array for array in written if formats.get(array) in _INT8_CODES]

    # One random word per element and group of three buffers (word_slots), hashed once: bfloat16 in the element
    # loop, int8 in the encoding loop.
    slots = word_slots(plan, formats)
    groups = sorted({slots[array][0] for array in written if formats.get(array) == "bf16"})
    body = [f"const uint32_t word{g} = valley_hash32(static_cast<uint32_t>(i) ^ seed{g});" for g in groups]
    body += [load(symbol, array) for symbol, array in step.loads]
    body += [render_c(s, plan.kinds) for s in step.statements]
    body += [store(array, symbol) for array, symbol in step.stores if stores is None or array in stores]
    summed = list(zip(accumulators, (operand for _, operand in step.sums)))  # (accumulator, operand)
    reduction = f" reduction(+:{', '.join(accumulators)})" if accumulators else ""
    loop = [
        f"#pragma omp simd{reduction}",
        "for (int64_t i = lo; i < hi; ++i) {",
        *("  " + x for x in body),
        *(f"  {acc} += static_cast<double>({operand});" for acc, operand in summed),
        "}",
    ]
    if decoded or encoded:
        # Per QBLOCK; the squares go to an array summed pairwise after the loop: a reduction inside this
        # compute-bound loop would chain its additions (each waits for the last), which bounded it. The largest
        # |new value| of each encoded array (its scale) as an integer maximum of the bit patterns.
        maxima = [(f"{array}_max", symbol) for array, symbol in step.stores if array in encoded]
        largest = f" reduction(max:{', '.join(m for m, _ in maxima)})" if maxima else ""
        loop = [
            "for (int64_t ql = lo; ql < hi; ql += VALLEY_QBLOCK) {",
            "  const int64_t qh = ql + VALLEY_QBLOCK < hi ? ql + VALLEY_QBLOCK : hi;",
            *(f"  const float {a}_old = {a}_s[ql / VALLEY_QBLOCK];" for a in decoded),
            *(f"  uint32_t {m} = 0;" for m, _ in maxima),
            f"  #pragma omp simd{largest}",
            "  for (int64_t i = ql; i < qh; ++i) {",
            *("    " + x for x in body),
            *(f"    {acc}_part[i - ql] = static_cast<double>({operand});" for acc, operand in summed),
            *(f"    {m} = valley_max_abs({m}, {symbol});" for m, symbol in maxima),
            "  }",
            *(f"  {acc} += valley_sum_pairwise({acc}_part, static_cast<int>(qh - ql));" for acc, _ in summed),
            *("  " + line for line in _encode_int8(encoded, pointers, slots, formats)),
            "}",
        ]
    lines += [
        f"#pragma omp for schedule(static){'' if barrier else ' nowait'}",
        "for (int64_t b = 0; b < blocks; ++b) {",
        "  const int64_t lo = b * VALLEY_BLOCK;",
        "  const int64_t hi = lo + VALLEY_BLOCK < n ? lo + VALLEY_BLOCK : n;",
        *(f"  double {acc} = 0.0;" for acc in accumulators),
        *(f"  double {acc}_part[VALLEY_QBLOCK];" for acc in accumulators if decoded or encoded),
        *(f"  float {array}_x[VALLEY_QBLOCK];" for array in encoded),
        *("  " + line for line in loop),
        *(f"  sums[{total} * b + {offsets[target]}] = {acc};" for acc, (target, _) in zip(accumulators, step.sums)),
        "}",
    ]
    return "{\n" + "\n".join(lines) + "\n}"


def _encode_int8(
    encoded: Sequence[str], pointers: Dict[str, str], slots: Dict[str, Tuple[int, int]], formats: Dict[str, str]
) -> List[str]:
    """The encoding of the int8 arrays ``encoded`` of one QBLOCK (``ql .. qh``) from their float arrays: the scales,
    then per group of :func:`word_slots` one loop that hashes each element's word once and encodes every member
    with its slot's 16 bits (``valley_code_q8``); a NaN/Inf block gets codes 0."""
    if not encoded:
        return []
    lines = ["const int n = static_cast<int>(qh - ql);", "const uint32_t base = static_cast<uint32_t>(ql);"]
    for a in encoded:
        lines += [
            f"const float {a}_new = valley_scale({a}_max);",
            f"{a}_s[ql / VALLEY_QBLOCK] = {a}_new;",
            f"const float {a}_inv = valley_inverse({a}_new);",
        ]
    for group in sorted({slots[a][0] for a in encoded}):
        members = [a for a in encoded if slots[a][0] == group]
        lines += [
            "#pragma omp simd",
            "for (int j = 0; j < n; ++j) {",
            f"  const uint32_t word = valley_hash32((base + static_cast<uint32_t>(j)) ^ seed{group});",
            *(
                f"  {pointers[a]}[ql + j] = valley_code_q8<{_CODE_TYPES[formats[a]]}>("
                f"{a}_x[j], {a}_inv, valley_bits16(word, {slots[a][1]}));"
                for a in members
            ),
            "}",
        ]
    zero = "if ({0}_new != {0}_new) std::memset({1} + ql, 0, static_cast<size_t>(n));"
    return [*lines, *(zero.format(a, pointers[a]) for a in encoded)]


def word_groups(keys: Iterable[str]) -> Dict[str, Tuple[int, int]]:
    """``key -> (group, slot)`` of a parameter's compact buffers: ordered by key, in groups of three that share
    one 32-bit random word per element, seeded by the group's first key (slot 0: the word's low 16 bits, 1: its
    high 16 bits, 2: the two halves xor-ed). The one rule for the kernels and ``backends.torch.compact_state``."""
    return {key: divmod(position, 3) for position, key in enumerate(sorted(keys))}


def word_slots(plan: Plan, formats: Dict[str, str]) -> Dict[str, Tuple[int, int]]:
    """``role -> (group, slot)`` of the compact state roles (:func:`word_groups` of their keys)."""
    groups = word_groups(key for role, key in plan.buffers if formats.get(role))
    return {role: groups[key] for role, key in plan.buffers if key in groups}


def compact_seed_keys(plan: Plan, formats: Dict[str, str]) -> List[str]:
    """The core keys whose store seeds a compact kernel takes (the ``"seeds"`` column), in its order: the first
    key of each group of :func:`word_groups`."""
    groups = word_groups(key for role, key in plan.buffers if formats.get(role))
    return [key for key, (_, slot) in sorted(groups.items(), key=lambda item: item[1]) if slot == 0]


def compact_columns(plan: Plan, formats: Dict[str, str]) -> List[str]:
    """The array columns a compact kernel takes after ``plan.roles``: the scales of each int8 role
    (``"<role>.scale"``), then ``"seeds"`` (per tensor, the uint32 seeds of :func:`compact_seed_keys`)."""
    scaled = [f"{role}.scale" for role in plan.roles if formats.get(role) in _INT8_CODES]
    return [*scaled, "seeds"] if formats else []


def kernel_source(
    plan: Plan, name: str, stores: Optional[FrozenSet[str]] = None, formats: Optional[Dict[str, str]] = None
) -> str:
    """The C++ of one plan: a template kernel ``name`` and its exported instances ``<name>_<dtype>``.

    ``stores``: the arrays written (default: every store of the plan). ``backends.torch.E`` runs a plan twice,
    first writing only the update, then (after the base optimizer's step) only the state.
    ``formats``: state roles kept in a compact code (:data:`COMPACT_CODES`); such a kernel takes the columns
    :func:`compact_columns` after the roles, has float32 compute only, and no recompute passes (a value that
    crosses a reduction is always kept in the workspace: recomputing it from the encoded state would differ).
    """
    formats = dict(formats or {})
    pointers = {role: f"{role}_p" for role in plan.roles}
    pointers.update({f"w{i}": f"w{i}_p" for i in range(plan.workspaces)})
    declarations = []
    for index, role in enumerate(plan.roles):
        ctype = "P" if role in _STORAGE_ROLES else _CODE_TYPES.get(formats.get(role, ""), "T")
        declarations.append(f"{ctype}* __restrict__ {role}_p = static_cast<{ctype}*>(arrays[{index} * count + t]);")
    extra = compact_columns(plan, formats)
    for offset, column in enumerate(extra, start=len(plan.roles)):
        if column == "seeds":
            declarations.append(
                f"const uint32_t* seeds_p = static_cast<const uint32_t*>(arrays[{offset} * count + t]);"
            )
            group_count = len({group for group, _ in word_slots(plan, formats).values()})
            declarations += [f"const uint32_t seed{g} = seeds_p[{g}];" for g in range(group_count)]
        else:
            role = column.split(".")[0]
            declarations.append(f"float* __restrict__ {role}_s = static_cast<float*>(arrays[{offset} * count + t]);")
    declarations += [f"T* __restrict__ w{i}_p = work_p + {i} * work_capacity;" for i in range(plan.workspaces)]
    stored = "\n".join(_sweep(plan, p, i, pointers, stores, formats) for i, p in enumerate(plan.passes))
    if plan.recompute is not None and not formats:
        again = "\n".join(_sweep(plan, p, i, pointers, stores) for i, p in enumerate(plan.recompute))
        passes = f"if (n <= work_capacity) {{\n{stored}\n}} else {{\n{again}\n}}"
    else:
        passes = stored
    unpack = "\n".join(f"  const double {symbol} = scalars[{i}];" for i, symbol in enumerate(plan.step_scalars))
    source = f"""
template <typename T, typename P>
static void {name}(int64_t count, void* const* arrays, const int64_t* sizes, void* work, int64_t work_capacity,
                   double* sums, const double* scalars, int threads) {{
{unpack}
  T* __restrict__ work_p = static_cast<T*>(work);
  (void)work_p;
  #pragma omp parallel num_threads(threads)
  for (int64_t t = 0; t < count; ++t) {{
    const int64_t n = sizes[t];
    const int64_t blocks = (n + VALLEY_BLOCK - 1) / VALLEY_BLOCK;
    {chr(10).join(declarations)}
    {passes}
  }}
}}
"""
    for dtype, (ctype, storage) in DTYPES.items():
        if formats and ctype != "float":
            continue  # compact state is decoded to float32
        guard_open, guard_close = ("#ifdef __FLT16_MAX__\n", "#endif\n") if storage == "_Float16" else ("", "")
        source += f"""{guard_open}extern "C" void {name}_{dtype}(int64_t count, void* const* arrays,
    const int64_t* sizes, void* work, int64_t work_capacity, double* sums, const double* scalars, int threads) {{
  {name}<{ctype}, {storage}>(count, arrays, sizes, work, work_capacity, sums, scalars, threads);
}}
{guard_close}"""
    return source


def source(kernels: Sequence[Tuple[Any, ...]]) -> str:
    """A C++ translation unit with the kernels ``(plan, name, stores)`` or ``(plan, name, stores, formats)``
    (``formats``: ``((role, code), ...)``, see :func:`kernel_source`)."""
    header = f"""// Generated by backends/kernels/cpu.py from valley_core execution plans. Do not edit.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
{_WIDE_VECTORS if any(len(k) > 3 and k[3] for k in kernels) else ""}using std::sqrt;
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

// Compact state (backends/torch/compact_state.py has the same arithmetic in torch; the two agree bit for bit).
// Random bits: Wellons' lowbias32 of (element index ^ seed), one word per element for up to three buffers
// (16 bits each); stochastic rounding.
static const int64_t VALLEY_QBLOCK = {QBLOCK};
static inline uint32_t valley_hash32(uint32_t x) {{
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}}
// The 16 random bits of slot 0, 1, 2 of a group's word (backends/torch/compact_state.py).
static inline uint32_t valley_bits16(uint32_t word, int slot) {{
  return slot == 0 ? (word & 0xFFFFu) : slot == 1 ? (word >> 16) : ((word ^ (word >> 16)) & 0xFFFFu);
}}
static inline valley_bf16 valley_sr_bf16(float x, uint32_t r) {{
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7F800000u) != 0x7F800000u) u += r & 0xFFFFu;
  return valley_bf16{{static_cast<uint16_t>(u >> 16)}};
}}
// int8: the generated element loop runs one VALLEY_QBLOCK (one scale) at a time, decodes each element as it loads
// it (valley_decode_one) and keeps the new values in a float array, encoded after it (valley_scale,
// valley_inverse, valley_code_q8; cpu.py's _encode_int8). Only
// multiplications per element (1/127, 1/255 as the float constants below; 1/scale once per QBLOCK), the
// maximum |x| as an integer maximum of the bit patterns (NaN and Inf compare above every finite value),
// truncation instead of floor (equal: the operand is >= 0) and 32-bit indices, so that every loop vectorises
// and stays off the divider.
static const float VALLEY_K127 = 0x1.020408p-7f;  // fl(1/127)
static const float VALLEY_K255 = 0x1.010102p-8f;  // fl(1/255)
static const float VALLEY_MIN_SCALE = 0x1p-126f;  // FLT_MIN: 1/scale stays finite
// The companding (cpu.py's CODE_SHIFT, CODE_BIAS).
static constexpr uint32_t VALLEY_BIAS_Q8S = {CODE_BIAS["q8s"]:#x}u, VALLEY_SHIFT_Q8S = {CODE_SHIFT["q8s"]};
static constexpr uint32_t VALLEY_BIAS_Q8U = {CODE_BIAS["q8u"]:#x}u, VALLEY_SHIFT_Q8U = {CODE_SHIFT["q8u"]};
// Bit casts (vectorise as register moves). The clamps below are unsigned minima and maxima of the bit patterns
// of values >= +0 or NaN (one integer instruction; a float comparison and blend would take more).
static inline uint32_t valley_bits(float x) {{
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}}
static inline float valley_float(uint32_t u) {{
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}}
// One element's value: scale g(|c| fl(1/127)) with c's sign (int8_t), or scale g(c fl(1/255)) (uint8_t, the
// second moment); g, the inverse of the companding: bits (max(bits(y), BIAS) - BIAS) << SHIFT.
template <typename C>
static inline float valley_decode_one(C c, float scale) {{
  constexpr bool is_signed = std::is_signed<C>::value;
  constexpr uint32_t bias = is_signed ? VALLEY_BIAS_Q8S : VALLEY_BIAS_Q8U;
  constexpr uint32_t shift = is_signed ? VALLEY_SHIFT_Q8S : VALLEY_SHIFT_Q8U;
  const int ci = c;
  const uint32_t y = valley_bits(static_cast<float>(ci < 0 ? -ci : ci) * (is_signed ? VALLEY_K127 : VALLEY_K255));
  const float v = scale * valley_float(((y > bias ? y : bias) - bias) << shift);
  return ci < 0 ? -v : v;
}}
// max(m, |x|) on bit patterns (an integer maximum: vectorises without reassociating floats; NaN and Inf compare
// above every finite value).
static inline uint32_t valley_max_abs(uint32_t m, float x) {{
  const uint32_t u = valley_bits(x) & 0x7FFFFFFFu;
  return u > m ? u : m;
}}
// A QBLOCK's scale from the bits of its largest |x|: at least FLT_MIN (so that 1/scale is finite), or NaN for a
// block holding NaN or Inf (its codes are then 0: every element decodes to NaN).
static inline float valley_scale(uint32_t largest) {{
  if (largest >= 0x7F800000u) return NAN;
  const float m = valley_float(largest);
  return m > VALLEY_MIN_SCALE ? m : VALLEY_MIN_SCALE;
}}
// The sum of a[0 .. n), n <= VALLEY_QBLOCK, pairwise (a tree of vector additions; a is overwritten).
static inline double valley_sum_pairwise(double* a, int n) {{
  for (int j = n; j < VALLEY_QBLOCK; ++j) a[j] = 0.0;
  for (int width = VALLEY_QBLOCK / 2; width >= 1; width /= 2) {{
    #pragma omp simd
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  }}
  return a[0];
}}
// 1 / scale, or 0 for a NaN scale (the block's codes are then set to 0 after the encoding loop).
static inline float valley_inverse(float scale) {{ return scale == scale ? 1.0f / scale : 0.0f; }}
// One element's code: signed (int8_t) or unsigned (uint8_t, the second moment), stochastically rounded in 16-bit
// fixed point: k = min((floor(f(r) L 2^16) + bits) >> 16, L) with r = min(|v| inv, 1) (as bit patterns: NaN,
// whatever its sign bit, maps to 1; no undefined conversion) and the companding f: bits (r >> SHIFT) + BIAS,
// integer operations only (square roots were this kernel's bottleneck).
template <typename C>
static inline C valley_code_q8(float v, float inv, uint32_t bits) {{
  constexpr bool is_signed = std::is_signed<C>::value;
  constexpr int limit = is_signed ? 127 : 255;
  const uint32_t ratio = valley_bits(std::fabs(v) * inv);
  const uint32_t r = ratio < 0x3F800000u ? ratio : 0x3F800000u;
  constexpr uint32_t bias = is_signed ? VALLEY_BIAS_Q8S : VALLEY_BIAS_Q8U;
  constexpr uint32_t shift = is_signed ? VALLEY_SHIFT_Q8S : VALLEY_SHIFT_Q8U;
  const float companded = valley_float((r >> shift) + bias);
  const float fixed = companded * static_cast<float>(limit * 65536);
  const int rounded = (static_cast<int>(fixed) + static_cast<int>(bits)) >> 16;
  const int k = rounded < limit ? rounded : limit;
  return static_cast<C>(is_signed && v < 0.0f ? -k : k);
}}
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-function"
"""
    return header + "".join(
        kernel_source(k[0], k[1], k[2], dict(k[3]) if len(k) > 3 and k[3] else None) for k in kernels
    )


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


def _build(compiler: str, flags: Sequence[str], target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        src = Path(scratch) / "valley_kernels.cpp"
        src.write_text(text, encoding="utf-8")
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
    """The loaded kernels of one translation unit. ``run`` steps ``count`` tensors with one kernel."""

    def __init__(self, path: Path, openmp: bool, names: Sequence[str]) -> None:
        self.path = path
        #: Whether the kernels were built with OpenMP (else ``threads`` is ignored: one thread).
        self.openmp = openmp
        self._cdll = ctypes.CDLL(str(path))
        self._functions = {}
        for name in names:
            for dtype in DTYPES:
                function = getattr(self._cdll, f"{name}_{dtype}", None)
                if function is None:  # float16 where the compiler has no _Float16
                    continue
                function.restype = None
                function.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
                function.argtypes += [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
                self._functions[name, dtype] = function

    def supports(self, name: str, dtype: str) -> bool:
        """Whether kernel ``name`` exists for parameters of ``dtype`` (float16 needs the compiler's ``_Float16``)."""
        return (name, dtype) in self._functions

    def run(
        self,
        name: str,
        dtype: str,
        pointers: Sequence[Sequence[int]],
        sizes: Sequence[int],
        work: int,
        work_capacity: int,
        sums: int,
        scalars: Sequence[float],
        threads: int,
    ) -> None:
        """Steps the tensors in place.

        Args:
            name: the kernel.
            dtype: the parameters' dtype, a key of :data:`DTYPES`.
            pointers: for each role of the plan (``Plan.roles``), the data pointers of the tensors (contiguous).
            sizes: the number of elements of each tensor (> 0).
            work: ``Plan.workspaces`` buffers of ``work_capacity`` elements of the compute type, one after another.
            work_capacity: tensors of at most this many elements keep values in ``work`` between passes;
                larger ones run the plan's ``recompute`` passes (a plan without them needs ``max(sizes)``).
            sums: ``Plan.reductions * ceil(max(sizes) / BLOCK)`` doubles.
            scalars: the plan's per-step scalars (``Plan.step_scalar_values``).
            threads: OpenMP threads.
        """
        count = len(sizes)
        table = (ctypes.c_void_p * (len(pointers) * count))(*[p for column in pointers for p in column])
        size_array = (ctypes.c_int64 * count)(*sizes)
        scalar_array = (ctypes.c_double * max(1, len(scalars)))(*scalars)
        self._functions[name, dtype](
            count, table, size_array, work, int(work_capacity), sums, scalar_array, max(1, int(threads))
        )


_lock = threading.Lock()
_loaded: Dict[tuple, object] = {}
_plans: List[Plan] = []


def load(kernels: Sequence[Tuple[Any, ...]]) -> Library:
    """The kernels ``(plan, name, stores)``, built on first use (then from the cache). Raises
    :class:`KernelUnavailable`.

    The outcome is remembered per process for the current ``VALLEY_CXX``/``CXX``/cache directory, so a build
    that failed is not retried at every step, and changing those variables is seen at the next call.
    """
    environment = tuple(os.environ.get(name) for name in ("VALLEY_CXX", "CXX", "VALLEY_CACHE_DIR", "XDG_CACHE_HOME"))
    # By the plans' identity (each optimizer keeps its plans; ``_plans`` keeps them alive, so an id is not reused).
    key = (tuple((id(k[0]), *k[1:]) for k in kernels), environment)
    outcome = _loaded.get(key)
    if isinstance(outcome, Library):
        return outcome
    with _lock:
        if key not in _loaded:
            _plans.extend(k[0] for k in kernels)
            try:
                _loaded[key] = _load_uncached(source(kernels), [k[1] for k in kernels])
            except KernelUnavailable as error:
                _loaded[key] = error
        outcome = _loaded[key]
    if isinstance(outcome, KernelUnavailable):
        raise KernelUnavailable(str(outcome))
    assert isinstance(outcome, Library)
    return outcome


def _load_uncached(text: str, names: Sequence[str]) -> Library:
    compiler = _compiler()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError as error:
        raise KernelUnavailable(f"cannot run {compiler}: {error}") from None
    errors: List[str] = []
    for openmp in (True, False):
        flags = (*_FLAGS, "-fopenmp") if openmp else (*_FLAGS, "-fopenmp-simd")
        key = hashlib.sha256("\n".join([text, compiler, version, *flags, _cpu_signature()]).encode())
        target = cache_dir() / f"valley-kernels-{key.hexdigest()[:24]}.so"
        try:
            library = _cached_or_built(compiler, flags, target, text, openmp, names)
        except (KernelUnavailable, OSError) as error:
            errors.append(str(error))
            continue
        if errors:  # the OpenMP build failed: say so, since every step now runs on one thread
            warnings.warn(
                f"valley: kernels built without OpenMP (one thread): {errors[0]}", RuntimeWarning, stacklevel=4
            )
        return library
    raise KernelUnavailable("; ".join(errors))


def _cached_or_built(
    compiler: str, flags: Sequence[str], target: Path, text: str, openmp: bool, names: Sequence[str]
) -> Library:
    """The library at ``target``; a cached file that cannot be loaded (truncated, another architecture, a
    partial copy) is rebuilt once, with a warning naming it, instead of being taken as a failed build."""
    if target.exists():
        try:
            return Library(target, openmp, names)
        except OSError as error:
            warnings.warn(
                f"valley: the cached kernel library {target} cannot be loaded ({error}); rebuilding it",
                RuntimeWarning,
                stacklevel=5,
            )
    _build(compiler, flags, target, text)
    return Library(target, openmp, names)
