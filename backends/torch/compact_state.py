"""Compact optimizer state: bfloat16 or block-wise int8 buffers, decoded to float32 around every step.

The update maths stays the core's. An executor decodes each compact buffer to float32, runs the plan's (or the
core chain's) element-wise functions in float32, and encodes the new buffer again. This module is the torch
reference of the two formats (the core path uses it; the fused C++ kernels, ``backends.kernels.cpu``, implement
the same arithmetic bit for bit, and ``tests/torch/test_torch_compact_state.py`` checks it).

Formats (``state_dtype``, a per-group setting of every ``ValleyOptimizer``), each owned by one :class:`Codec`
(``codec("int8")``) that the optimizer, the dispatcher and the fused executor ask instead of comparing names:

- ``"float32"``: the core's buffers unchanged (the default).
- ``"bfloat16"``: each buffer is stored as bfloat16 (2 bytes per element), rounded STOCHASTICALLY: the float32
  value's bits plus 16 random bits, truncated to the upper half. The rounding is unbiased (``E[stored] = x``),
  so increments far below bfloat16's resolution (``(1 - beta) g`` added to a large EMA) are kept on average
  instead of being lost, as round-to-nearest would lose them at every step.
- ``"int8"``: per block of :data:`QBLOCK` = 256 consecutive elements a float32 scale and one byte per element,
  stochastically rounded as well. ``scale = max(max |x|, FLT_MIN)`` (FLT_MIN keeps ``1/scale`` finite; an
  all-zero block keeps zero codes) and ``r = min(|x| * fl(1/scale), 1)``. The code of ``r`` is ``L f(r)``
  rounded stochastically: ``c = min((floor(f(r) * L * 2^16) + b) >> 16, L)`` with ``b`` 16 random bits, i.e.
  ``floor(L f(r) + u)`` with a uniform ``u`` in 16-bit fixed point (unbiased for ``L f(r)`` to 2^-16 of a code).
  Signed buffers (the E carry, ``m``): ``L = 127``, the sign of ``x``, and ``f`` (:func:`compand`) the float
  with bits ``(bits(r) >> 1) + 0x1FC00000``: ``sqrt(r)`` at powers of 4, linear in ``r`` between powers of 2,
  never below ``sqrt(r)`` and at most 6.1 % above. The second moment ``v >= 0`` (declared ``nonnegative``
  by the core): ``L = 255``, unsigned, ``f`` with bits ``(bits(r) >> 2) + 0x2FA00000``: ``r^(1/4)`` at powers of 16,
  linear between powers of 2, at most 6.1 % above it. Decoded: ``scale g(|c| fl(1/L))`` with the sign of ``c``,
  ``g`` (:func:`expand`) the exact inverse of ``f`` (bits ``(max(bits(y), bias) - bias) <<
  shift``; ``g(0) = 0``). ``fl(1/127)``, ``fl(1/255)``: the float32 nearest; the only division is
  ``1/scale``, once per block; the codes need no square root (square roots per element bounded the fused
  kernel's speed). Why these codes: a linear code sets small elements of a block to 0; for ``v`` that divides
  ``m`` by ``eps`` alone, a huge update. Companding like a square root on ``m`` (a fourth root on ``v``: the
  code of ``sqrt(v)`` companded once more) spends the codes on the small values: ``m`` spans ``127^2 = 1.6e4``
  and ``v`` spans ``255^4 = 4.2e9`` per block before an element becomes 0 (``f`` is above the root, so every
  ``|x| >= scale / 127^2``, ``v >= scale / 255^4`` keeps a nonzero code), and an element of the same block with
  ``|g|`` 1000x below the block's largest still has nonzero codes in ``m`` and ``v``. The error of one store is
  at most one code step: ``2 scale / 127`` for signed buffers, ``4 scale / 255`` for ``v`` (the slope of ``g``
  at the top of the range, its largest), far less for small elements. The rounding is unbiased for ``f(r)``;
  ``g`` is linear between the codes except across powers of 2, so it is unbiased for ``x`` too except for
  a pair of codes that straddles a power of 2.
  Non-finite values (policy): a block holding NaN or Inf gets the scale NaN and codes 0, so the whole block
  decodes to NaN: one scale cannot keep a NaN among finite values, so the NaN spreads to its 256 neighbours
  (float32 state keeps it in its element; a trust-ratio optimizer spreads it to the whole parameter anyway).
  ``skip_nonfinite=True`` skips a step with a non-finite gradient before anything is stored.

The random bits: a counter-based generator, so that a resumed run equals the uninterrupted one bit for bit
without storing a generator state. The 32-bit random word of element ``i`` is ``hash32((i mod 2^32) ^ seed)``,
``seed = hash32(hash32(hash32(step ^ 0x5EED) ^ tensor_index) ^ crc32(key))``: ``step`` the step count AFTER the
step that writes the buffer, ``tensor_index`` the parameter's position in the optimizer's parameters (the order
of ``state_dict``: group by group), and ``hash32`` the "lowbias32" integer hash (Wellons: ``x ^= x >> 16;
x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``, modulo 2^32). The compact buffers of a
parameter, ordered by key, share one word per element in groups of three (``key`` the group's first,
``backends.kernels.cpu.word_groups``), so the fused kernels hash once per element instead of once per buffer.
Each buffer takes 16 bits of the word by its slot: slot 0 the word's low 16 bits, slot 1 its high 16 bits,
slot 2 the two halves xor-ed (each uniform, pairwise independent). bfloat16 adds them to the float32 bits;
int8 uses them as ``b`` above.

Storage: ``optimizer.state[p][key]`` holds the bfloat16 buffer, or the int8/uint8 codes (the parameter's
shape) and ``optimizer.state[p][key + ".scales"]`` the float32 scales (``ceil(numel / 256)``); int8 state of the
first code (square roots, scales under ``key + ".scale"``, :data:`LEGACY_SCALE`) is decoded with that code and
converted on load. ``state_dict``
stores these; :func:`convert_state_dict` converts a checkpoint between formats (float32 <-> compact).
"""

from __future__ import annotations

import functools
import zlib
from copy import copy
from typing import Any, Dict, Iterable, Optional, Tuple

import torch

from backends.kernels.cpu import CODE_BIAS, CODE_SHIFT, word_groups
from valley_core.base import field_properties

#: The formats of ``state_dtype``.
FORMATS = ("float32", "bfloat16", "int8")
#: Elements per int8 block (one float32 scale each).
QBLOCK = 256
#: Suffix of the key of an int8 buffer's scales.
SCALE = ".scales"
#: The scales' suffix of the first int8 code (square roots, valley at commit d52546f): such a buffer is decoded
#: with that code (:func:`decode`) and converted to the current one on load; its suffix tells the two apart.
LEGACY_SCALE = ".scale"
#: :func:`stored_format` of such a buffer (never a group's format: it is always converted).
LEGACY_FORMAT = "int8 (legacy code)"
_M32 = 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ random bits
def hash32(x: int) -> int:
    """Wellons' lowbias32 on a Python int (modulo 2^32)."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return x


def seeds(step: int, tensor_index: int, keys: Iterable[str]) -> list:
    """The 32-bit seeds of buffers ``keys``' stores at ``step`` (the step count after the step), computing the
    part that does not depend on the key once."""
    common = hash32(hash32(step ^ 0x5EED) ^ tensor_index)
    return [hash32(common ^ _crc32(key)) for key in keys]


def seed(step: int, tensor_index: int, key: str) -> int:
    """The 32-bit seed of one buffer's store at ``step`` (:func:`seeds`)."""
    return seeds(step, tensor_index, (key,))[0]


@functools.lru_cache(maxsize=None)
def _crc32(key: str) -> int:
    return zlib.crc32(key.encode())


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    # x * constant mod 2^32 in int64 without overflow: the constant in two 16-bit halves.
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _M32


def random_bits(count: int, seed_value: int, device: Any = "cpu") -> torch.Tensor:
    """``hash32((i mod 2^32) ^ seed)`` for ``i < count``, as int64 in [0, 2^32)."""
    x = (torch.arange(count, dtype=torch.int64, device=device) & _M32) ^ seed_value
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


# ----------------------------------------------------------------------------------------------------- formats
def _bits16(words: torch.Tensor, slot: int) -> torch.Tensor:
    """The 16 random bits of ``slot`` (0, 1, 2) of a group's words."""
    if slot == 0:
        return words & 0xFFFF
    if slot == 1:
        return words >> 16
    return (words ^ (words >> 16)) & 0xFFFF


def _to_bfloat16(x: torch.Tensor, seed_value: int, slot: int = 0) -> torch.Tensor:
    flat = x.detach().reshape(-1).to(torch.float32)
    bits = flat.view(torch.int32).to(torch.int64) & _M32
    noise = _bits16(random_bits(flat.numel(), seed_value, flat.device), slot)
    rounded = (bits + noise) & 0xFFFF0000
    rounded = torch.where(rounded >= 1 << 31, rounded - (1 << 32), rounded).to(torch.int32).view(torch.float32)
    # Inf and NaN are kept as they are (no random bits added to them).
    out = torch.where(torch.isfinite(flat), rounded, flat).to(torch.bfloat16)
    return out.reshape(x.shape)


def _blocks(flat: torch.Tensor) -> torch.Tensor:
    pad = (-flat.numel()) % QBLOCK
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.reshape(-1, QBLOCK)


#: 1/127 and 1/255 rounded to float32: the decodings multiply by these (no division per element).
K127 = float.fromhex("0x1.020408p-7")
K255 = float.fromhex("0x1.010102p-8")
#: The smallest int8 scale (FLT_MIN): 1/scale stays finite, an all-zero block keeps zero codes.
MIN_SCALE = float.fromhex("0x1p-126")


def compand(r: torch.Tensor, nonnegative: bool) -> torch.Tensor:
    """The int8 codes' companding ``f(r)`` of a float32 tensor ``0 <= r <= 1``: the float with bits
    ``(bits(r) >> SHIFT) + BIAS`` (``backends.kernels.cpu.CODE_SHIFT``, ``CODE_BIAS``), i.e. ``sqrt(r)``
    (``v``: ``r^(1/4)``) at powers of 4 (16) and linear in ``r`` between powers of 2, never below the root and
    at most 6.1 % above it, ``f(1) = 1``. Integer operations only, no square root."""
    code = "q8u" if nonnegative else "q8s"
    return ((r.view(torch.int32) >> CODE_SHIFT[code]) + CODE_BIAS[code]).view(torch.float32)


def expand(y: torch.Tensor, nonnegative: bool) -> torch.Tensor:
    """The inverse of :func:`compand` (the decoding): the float with bits ``(max(bits(y), BIAS) - BIAS) << SHIFT``
    for ``y >= 0`` (0 at 0; ``expand(compand(r))`` is ``r`` with its lowest SHIFT bits cleared)."""
    code = "q8u" if nonnegative else "q8s"
    bits = y.view(torch.int32).clamp(min=CODE_BIAS[code]) - CODE_BIAS[code]
    return (bits << CODE_SHIFT[code]).view(torch.float32)


def _to_int8(x: torch.Tensor, seed_value: int, nonnegative: bool, slot: int) -> Tuple[torch.Tensor, torch.Tensor]:
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    magnitude = _blocks(flat.abs())
    scales = magnitude.amax(dim=1) if n else torch.zeros(0, dtype=torch.float32, device=flat.device)
    poisoned = ~torch.isfinite(scales)  # a block holding NaN or Inf: scale NaN, codes 0 (decodes to NaN)
    scales = torch.where(poisoned, torch.nan, scales.clamp_min(MIN_SCALE))
    inverse = torch.where(poisoned, 0.0, 1.0 / scales)
    ratio = (magnitude * inverse[:, None]).reshape(-1)[:n]
    ratio = torch.where(ratio < 1.0, ratio, 1.0)  # also NaN -> 1 (the kernels: an unsigned minimum of the bits)
    limit = 255 if nonnegative else 127
    fixed = (compand(ratio, nonnegative) * float(limit * 65536)).to(torch.int64)  # truncation: floor (>= 0)
    bits = _bits16(random_bits(n, seed_value, flat.device), slot)
    codes = ((fixed + bits) >> 16).clamp(max=limit)
    codes = torch.where(poisoned.repeat_interleave(QBLOCK)[:n], 0, codes)
    if nonnegative:
        stored = codes.to(torch.uint8)
    else:
        stored = torch.where(flat < 0, -codes, codes).to(torch.int8)
    return stored.reshape(x.shape), scales


def _from_int8(codes: torch.Tensor, scales: torch.Tensor, legacy: bool = False) -> torch.Tensor:
    # scale g(|c| fl(1/L)) with c's sign; the legacy code (LEGACY_SCALE) had g(y) = y^2 (y^4 for v).
    n = codes.numel()
    flat = codes.reshape(-1)
    per_element = scales.repeat_interleave(QBLOCK)[:n]
    nonnegative = codes.dtype == torch.uint8
    y = flat.to(torch.int32).abs().to(torch.float32) * (K255 if nonnegative else K127)
    if legacy:
        value = per_element * ((y * y) * (y * y) if nonnegative else y * y)
    else:
        value = per_element * expand(y, nonnegative)
    if not nonnegative:
        value = torch.where(flat < 0, -value, value)
    return value.reshape(codes.shape)


def nonnegative(key: str) -> bool:
    """Whether the core declares the buffer ``key`` never negative (``valley_core.base.per_tensor``): it is stored
    with the unsigned int8 code."""
    return field_properties(key).nonnegative


class Codec:
    """One storage format of the state buffers (a ``state_dtype``): how a buffer is stored and converted, and what
    the executors need to know of the format. The instances are :data:`CODECS`' values (:func:`codec`)."""

    def __init__(self, name: str) -> None:
        #: The ``state_dtype`` this codec stores.
        self.name = name
        #: Whether buffers are stored in fewer bits than float32 (encoded after each step, decoded before).
        self.compact = name != "float32"
        #: Whether the compiled executor runs this format (float32 state only; the core path runs every format).
        self.compiled = not self.compact

    def kernel_code(self, key: str) -> Optional[str]:
        """The fused kernels' code of buffer ``key`` in this format (``backends.kernels.cpu``), None for float32."""
        if self.name == "bfloat16":
            return "bf16"
        return ("q8u" if nonnegative(key) else "q8s") if self.compact else None

    def holds(self, buffer: torch.Tensor, state_dtype: torch.dtype) -> bool:
        """Whether ``buffer`` is stored in this format (as float32 state: of the parameter's ``state_dtype``)."""
        return format_of(buffer) == self.name and (self.compact or buffer.dtype == state_dtype)

    def param_reason(self, dtype: torch.dtype) -> Optional[str]:
        """Why a parameter of ``dtype`` cannot keep its state in this format, or None (compact: not float64)."""
        if self.compact and dtype == torch.float64:
            return f"state_dtype={self.name!r} needs a float32/bfloat16/float16 parameter, not float64"
        return None

    def check_supported(self, keys: Iterable[str]) -> None:
        """``ValueError`` if compact and the core declares a state of ``keys`` ``float32_only`` (``per_tensor``)."""
        for key in keys if self.compact else ():
            reason = field_properties(key).float32_only
            if reason:
                raise ValueError(f"state_dtype={self.name!r} is not offered here: {reason} (use 'float32')")

    def encode(self, state: Dict[str, Any], key: str, value: torch.Tensor, seed_value: int, slot: int = 0) -> None:
        """Stores the float buffer ``value`` as ``state[key]`` (and ``state[key + SCALE]`` for int8); ``slot``: the
        slot of the random word (:meth:`store` chooses seeds and slots)."""
        if not self.compact:
            state[key] = value
        elif self.name == "bfloat16":
            state[key] = _to_bfloat16(value, seed_value, slot)
        else:
            state[key], state[key + SCALE] = _to_int8(value, seed_value, nonnegative(key), slot)

    def store(self, state: Dict[str, Any], buffers: Dict[str, torch.Tensor], step: int, tensor_index: int) -> None:
        """Stores one parameter's new float ``buffers``, seeded as a step's store: in groups of three by sorted key
        (``backends.kernels.cpu.word_groups``), each group by ``seed(step, tensor_index, key)`` of its first key,
        each buffer with its slot."""
        if not self.compact:
            state.update(buffers)
            return
        groups = word_groups(buffers)
        first = {group: key for key, (group, slot) in groups.items() if slot == 0}
        for key, (group, slot) in groups.items():
            self.encode(state, key, buffers[key], seed(step, tensor_index, first[group]), slot)

    def convert(self, state: Dict[str, Any], tensor_index: int, dtype: torch.dtype = torch.float32) -> dict:
        """One parameter's state with every buffer in this format (float32 buffers are decoded to ``dtype``); a
        compact store is seeded by ``(state["step"], tensor_index, key)``, like a store by a step."""
        out = {k: v for k, v in state.items() if scale_owner(k) is None}
        keys = list(buffer_keys(state))
        if self.compact and all(stored_format(state, key) == self.name for key in keys):
            return {**out, **{k: v for k, v in state.items() if scale_owner(k) is not None}}
        decoded = {key: decode(state, key, torch.float32 if self.compact else dtype) for key in keys}
        self.store(out, decoded, int(state.get("step", 0)), tensor_index)
        return out


#: The codec of each format, by ``state_dtype``.
CODECS = {name: Codec(name) for name in FORMATS}
#: The default format: the core's buffers unchanged.
FLOAT32 = CODECS["float32"]


def codec(state_dtype: Any) -> Codec:
    """The codec of ``state_dtype``, else ``ValueError`` naming the choices."""
    if not isinstance(state_dtype, str) or state_dtype not in CODECS:
        raise ValueError(f"state_dtype={state_dtype!r} violates state_dtype in {FORMATS}")
    return CODECS[state_dtype]


def of_group(group: Dict[str, Any]) -> Codec:
    """The codec of a param group's ``state_dtype`` (float32 when the group has none)."""
    return codec(group.get("state_dtype", FLOAT32.name))


def decode(state: Dict[str, Any], key: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The buffer ``state[key]`` as a float tensor of ``dtype`` (whatever its format, the legacy int8 code too)."""
    stored = state[key]
    if stored.dtype in (torch.int8, torch.uint8):
        legacy = stored_format(state, key) == LEGACY_FORMAT
        return _from_int8(stored, state[key + (LEGACY_SCALE if legacy else SCALE)], legacy).to(dtype)
    return stored if stored.dtype == dtype else stored.to(dtype)


def format_of(stored: torch.Tensor) -> str:
    """The format of a stored buffer: ``"bfloat16"``, ``"int8"`` or ``"float32"`` (any other float dtype)."""
    if stored.dtype == torch.bfloat16:
        return "bfloat16"
    if stored.dtype in (torch.int8, torch.uint8):
        return "int8"
    return "float32"


def stored_format(state: Dict[str, Any], key: str) -> str:
    """:func:`format_of` ``state[key]``, or :data:`LEGACY_FORMAT` for int8 codes with :data:`LEGACY_SCALE`
    scales."""
    stored = state[key]
    if format_of(stored) == "int8" and key + SCALE not in state and key + LEGACY_SCALE in state:
        return LEGACY_FORMAT
    return format_of(stored)


def scale_owner(key: str) -> Optional[str]:
    """The buffer key whose int8 scales ``key`` names (either suffix), else None."""
    for suffix in (SCALE, LEGACY_SCALE):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None


def check_stored(state: Dict[str, Any], key: str) -> Optional[str]:
    """None when ``state[key]`` (and its scales) is a well-formed stored buffer, else what is wrong."""
    stored = state.get(key)
    if not isinstance(stored, torch.Tensor):
        return f"{key} is missing or not a tensor"
    if stored.dtype in (torch.int8, torch.uint8):
        expected_dtype = torch.uint8 if nonnegative(key) else torch.int8
        if stored.dtype != expected_dtype:
            return f"{key} has codes of dtype {stored.dtype}, expected {expected_dtype}"
        suffix = LEGACY_SCALE if stored_format(state, key) == LEGACY_FORMAT else SCALE
        if key + SCALE in state and key + LEGACY_SCALE in state:
            return f"{key} has scales under both {key}{SCALE} and {key}{LEGACY_SCALE} (the legacy code's)"
        scales = state.get(key + suffix)
        blocks = -(-stored.numel() // QBLOCK)
        if not isinstance(scales, torch.Tensor) or scales.dtype != torch.float32 or tuple(scales.shape) != (blocks,):
            return f"{key}{suffix} must be a float32 tensor of shape ({blocks},)"
    else:
        for suffix in (SCALE, LEGACY_SCALE):
            if key + suffix in state:
                return f"{key}{suffix} given for a {stored.dtype} buffer"
    return None


def buffer_keys(state: Dict[str, Any]) -> Iterable[str]:
    """The buffer keys of one parameter's state (not ``"step"``, not the scales)."""
    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
        and (v.is_floating_point() or v.dtype in (torch.int8, torch.uint8))
        and scale_owner(k) is None
    ]


def convert_state_dict(state_dict: Dict[str, Any], state_dtype: str) -> Dict[str, Any]:
    """A copy of an optimizer's ``state_dict`` with every buffer in ``state_dtype`` and every group's
    ``state_dtype`` set: float32 -> bfloat16/int8 (a compact checkpoint) or back (``"float32"``).

    Example::

        compact = convert_state_dict(torch.load("alto.pt"), "int8")
        optimizer = ALTO(model.parameters(), state_dtype="int8")
        optimizer.load_state_dict(compact)
    """
    target = codec(state_dtype)
    groups = []
    for group in state_dict["param_groups"]:
        group = copy(group)
        group["state_dtype"] = state_dtype
        groups.append(group)
    positions = {saved_id: i for i, saved_id in enumerate(i for g in state_dict["param_groups"] for i in g["params"])}
    unlisted = [index for index in state_dict["state"] if index not in positions]
    if unlisted:
        raise ValueError(f"state for parameter ids {unlisted}, which no param group lists")
    state = {index: target.convert(value, positions[index]) for index, value in state_dict["state"].items()}
    return {**state_dict, "state": state, "param_groups": groups}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's state tensors (buffers and scales; not the step counters)."""
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and k != "step"
    )


__all__ = [
    "CODECS",
    "FLOAT32",
    "FORMATS",
    "QBLOCK",
    "LEGACY_FORMAT",
    "LEGACY_SCALE",
    "SCALE",
    "Codec",
    "codec",
    "convert_state_dict",
    "decode",
    "hash32",
    "random_bits",
    "compand",
    "expand",
    "nonnegative",
    "of_group",
    "seed",
    "seeds",
    "scale_owner",
    "state_bytes",
    "stored_format",
]
