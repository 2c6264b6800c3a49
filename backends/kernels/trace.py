"""Turns ``valley_core.elementwise`` compositions into straight-line kernel code.

A *program* is a Python function made only of calls into ``valley_core.elementwise`` (and
``valley_core.reductions.trust_ratio``); see ``backends.kernels.programs``. ``trace`` calls it once with
symbolic arguments and records every arithmetic operation the core performs, in the core's order, as a list
of single-assignment statements. The same recording is then

- rendered as the body of a CuPy ``ElementwiseKernel`` (``render_cuda``), and
- executed with NumPy by ``run_numpy`` (the CPU mode of ``backends.cupy`` and the tests).

So the fused GPU kernel is generated from the core, not written by hand: this module knows arithmetic
operators and ``sqrt``, nothing about any optimizer.

Types follow the array-API / NumPy rule for Python scalars ("weak" scalars): an operation between two
scalars is done in double precision (``double`` in the kernel, ``float`` in Python), and a scalar that meets
an array is cast to the array's type ``T`` first, so ``float32`` arrays are computed in ``float32`` exactly
as the core does on NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

ARRAY = "array"
SCALAR = "scalar"

_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class Statement:
    """``target = op(operands)``; ``kind`` is ARRAY (type ``T``) or SCALAR (double)."""

    target: str
    kind: str
    op: str
    operands: Tuple[Any, ...]


@dataclass
class Program:
    """A traced program.

    Attributes:
        name: the program's name (used as the kernel name).
        arrays_in: names of the array inputs that are only read.
        arrays_inout: names of the array inputs that are also outputs (updated in place).
        arrays_out: names of array outputs that are not inputs (written only).
        scalars: names of the scalar (float64) inputs.
        statements: the recorded operations, in order.
        results: output name -> the symbol (statement target or input name) holding its final value.
    """

    name: str
    arrays_in: Tuple[str, ...]
    arrays_inout: Tuple[str, ...]
    arrays_out: Tuple[str, ...]
    scalars: Tuple[str, ...]
    statements: List[Statement] = field(default_factory=list)
    results: Dict[str, "Symbol"] = field(default_factory=dict)


class Symbol:
    """A value during tracing: an input, a constant or the result of a recorded statement."""

    __array_priority__ = 1000  # so that ``numpy_float * symbol`` defers to Symbol

    def __init__(self, name: str, kind: str, recorder: "_Recorder | None" = None):
        self.name = name
        self.kind = kind
        self._recorder = recorder

    def __repr__(self) -> str:
        return f"Symbol({self.name!r}, {self.kind})"

    # -- arithmetic -----------------------------------------------------------------------------------
    def _binary(self, op: str, other: Any, reflected: bool = False) -> "Symbol":
        other = _as_symbol(other)
        left, right = (other, self) if reflected else (self, other)
        return self._recorder.emit(op, (left, right))

    def __add__(self, other):
        return self._binary("add", other)

    def __radd__(self, other):
        return self._binary("add", other, True)

    def __sub__(self, other):
        return self._binary("sub", other)

    def __rsub__(self, other):
        return self._binary("sub", other, True)

    def __mul__(self, other):
        return self._binary("mul", other)

    def __rmul__(self, other):
        return self._binary("mul", other, True)

    def __truediv__(self, other):
        return self._binary("div", other)

    def __rtruediv__(self, other):
        return self._binary("div", other, True)

    def __neg__(self):
        return self._recorder.emit("neg", (self,))

    def __pos__(self):
        return self

    def __bool__(self):
        raise TypeError("a traced value has no truth value: element-wise programs cannot branch on data")


class Constant(Symbol):
    """A Python number that appears in the core's arithmetic (for example the ``1.0`` of ``1 - beta1``)."""

    def __init__(self, value: float):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"cannot trace the non-finite constant {value!r}")
        super().__init__(repr(value), SCALAR)
        self.value = value


def _as_symbol(value: Any) -> Symbol:
    if isinstance(value, Symbol):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"cannot trace a {type(value).__name__} in an element-wise program")
    return Constant(value)


class _Recorder:
    def __init__(self) -> None:
        self.statements: List[Statement] = []

    def emit(self, op: str, operands: Tuple[Symbol, ...]) -> Symbol:
        for operand in operands:
            if operand._recorder is None and not isinstance(operand, Constant):
                operand._recorder = self
        kind = ARRAY if any(o.kind == ARRAY for o in operands) else SCALAR
        target = f"tmp{len(self.statements)}"
        self.statements.append(
            Statement(target, kind, op, tuple(o.name if not isinstance(o, Constant) else o for o in operands))
        )
        return Symbol(target, kind, self)


class SymbolicNamespace:
    """The ``xp`` handed to the core while tracing: only ``sqrt`` is needed by the element-wise functions."""

    def __init__(self, recorder: _Recorder) -> None:
        self._recorder = recorder

    def sqrt(self, value: Symbol) -> Symbol:
        return self._recorder.emit("sqrt", (_as_symbol(value),))


def trace(
    function: Callable[..., Dict[str, Any]],
    name: str,
    *,
    arrays_in: Sequence[str],
    arrays_inout: Sequence[str] = (),
    arrays_out: Sequence[str] = (),
    scalars: Sequence[str] = (),
    static: Dict[str, Any] | None = None,
) -> Program:
    """Records ``function(**symbols, xp=..., **static)``.

    Args:
        function: returns a dict ``output name -> value``; every name in ``arrays_inout`` and
            ``arrays_out`` must be returned, and nothing else.
        name: the kernel name.
        arrays_in, arrays_inout, arrays_out, scalars: names of the arguments (see ``Program``).
        static: Python values that select a variant of the program (flags), passed through unchanged.

    Returns:
        The recorded ``Program``.
    """
    recorder = _Recorder()
    symbols = {n: Symbol(n, ARRAY, recorder) for n in (*arrays_in, *arrays_inout)}
    symbols.update({n: Symbol(n, SCALAR, recorder) for n in scalars})
    outputs = function(**symbols, xp=SymbolicNamespace(recorder), **(static or {}))
    expected = set(arrays_inout) | set(arrays_out)
    if set(outputs) != expected:
        raise ValueError(f"{name}: the program returned {sorted(outputs)}, expected {sorted(expected)}")
    results = {}
    for out_name, value in outputs.items():
        value = _as_symbol(value)
        if value.kind != ARRAY:
            raise ValueError(f"{name}: output {out_name!r} does not depend on any array")
        results[out_name] = value
    return Program(
        name, tuple(arrays_in), tuple(arrays_inout), tuple(arrays_out), tuple(scalars), recorder.statements, results
    )


# -- CUDA rendering ---------------------------------------------------------------------------------------


def _operand_code(operand: Any, kinds: Dict[str, str], result_kind: str) -> str:
    if isinstance(operand, Constant):
        text = repr(operand.value)
        return f"((T){text})" if result_kind == ARRAY else text
    if result_kind == ARRAY and kinds[operand] == SCALAR:
        return f"((T){operand})"
    return operand


def render_cuda(program: Program) -> Tuple[str, str, str]:
    """The ``(in_params, out_params, operation)`` strings of an ``ElementwiseKernel`` for ``program``.

    Arrays have the type placeholder ``T``; scalars are ``float64``. Every temporary is computed before
    any output is assigned, so outputs that are also inputs (``arrays_inout``) are read before written.
    """
    kinds: Dict[str, str] = {n: ARRAY for n in (*program.arrays_in, *program.arrays_inout)}
    kinds.update({n: SCALAR for n in program.scalars})
    lines = []
    for s in program.statements:
        ctype = "T" if s.kind == ARRAY else "double"
        ops = [_operand_code(o, kinds, s.kind) for o in s.operands]
        if s.op in _BINARY:
            expression = f"{ops[0]} {_BINARY[s.op]} {ops[1]}"
        elif s.op == "neg":
            expression = f"-{ops[0]}"
        elif s.op == "sqrt":
            expression = f"sqrt({ops[0]})"
        else:  # pragma: no cover - the recorder emits only the ops above
            raise ValueError(f"unknown op {s.op}")
        lines.append(f"const {ctype} {s.target} = {expression};")
        kinds[s.target] = s.kind
    for out_name in (*program.arrays_inout, *program.arrays_out):
        lines.append(f"{out_name} = {program.results[out_name].name};")
    in_params = ", ".join([f"T {n}" for n in program.arrays_in] + [f"float64 {n}" for n in program.scalars])
    out_params = ", ".join(f"T {n}" for n in (*program.arrays_inout, *program.arrays_out))
    return in_params, out_params, "\n".join(lines)


# -- NumPy execution ------------------------------------------------------------------------------------


def run_numpy(program: Program, arrays: Dict[str, Any], scalars: Dict[str, float]) -> Dict[str, Any]:
    """Executes ``program`` with NumPy arrays, following the same typing rules as the kernel.

    Args:
        program: a traced program.
        arrays: every array input (``arrays_in`` and ``arrays_inout``) by name; one floating dtype.
        scalars: every scalar input by name (Python floats).

    Returns:
        The new values of ``arrays_inout`` and ``arrays_out`` (new arrays; nothing is written).
    """
    import numpy as np

    env: Dict[str, Any] = dict(arrays)
    env.update({n: float(scalars[n]) for n in program.scalars})
    for s in program.statements:
        values = [o.value if isinstance(o, Constant) else env[o] for o in s.operands]
        if s.op == "add":
            result = values[0] + values[1]
        elif s.op == "sub":
            result = values[0] - values[1]
        elif s.op == "mul":
            result = values[0] * values[1]
        elif s.op == "div":
            result = values[0] / values[1]
        elif s.op == "neg":
            result = -values[0]
        elif s.op == "sqrt":
            result = np.sqrt(values[0]) if s.kind == ARRAY else math.sqrt(values[0])
        else:  # pragma: no cover
            raise ValueError(f"unknown op {s.op}")
        env[s.target] = result
    return {n: env[program.results[n].name] for n in (*program.arrays_inout, *program.arrays_out)}
