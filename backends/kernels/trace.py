"""Symbolic evaluation of ``valley_core`` code: every arithmetic operation the core performs, recorded in order.

``Symbol`` stands for a value while the core runs (``backends.kernels.plan`` hands symbols to a chain's
``update``); ``SymbolicNamespace`` is the ``xp`` it runs with. Each operation becomes a single-assignment
``Statement``. This module knows arithmetic operators, ``**``, ``sqrt``, ``astype`` and ``sum``, nothing about
any optimizer.

Three kinds of value, which decide where a statement runs and in which type:

- ``SCALAR``: per step, the same for every tensor (hyperparameters, step counters, bias corrections): computed
  on the host, double precision, as the core does with Python floats and NumPy 0-d values;
- ``ARRAY``: per element, in the tensor's type ``T``;
- ``UNIFORM``: per tensor, in ``T``: a reduction (``sum``) and what is computed from it (a norm, a trust ratio).

Types follow the array-API rule for Python scalars ("weak" scalars): a scalar that meets an array is cast to
the array's type ``T`` first, so float32 arrays are computed in float32 exactly as the core does.
"""

from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Tuple

SCALAR = "scalar"
UNIFORM = "uniform"
ARRAY = "array"
_RANK = {SCALAR: 0, UNIFORM: 1, ARRAY: 2}
#: C/C++/CUDA and Python spellings of the binary operators.
BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
#: Comparisons: their value is 1 or 0 in the statement's type (so a policy such as "ratio 1 where a norm is
#: zero", ``xp.where(norm > 0, ratio, 1.0)``, traces like any arithmetic).
COMPARE = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


class NotTraceable(TypeError):
    """The code branches on a traced value, or uses an operation this module does not record."""


@dataclass(frozen=True)
class Statement:
    """``target = op(operands)``; operands are symbol names or ``Constant``s."""

    target: str
    kind: str
    op: str
    operands: Tuple[Any, ...]


class Recorder:
    """Collects the statements of one trace."""

    def __init__(self) -> None:
        self.statements: List[Statement] = []

    def emit(self, op: str, operands: Tuple["Symbol", ...], kind: str | None = None) -> "Symbol":
        if kind is None:
            kind = max((o.kind for o in operands), key=_RANK.__getitem__)
        target = f"t{len(self.statements)}"
        names = tuple(o if isinstance(o, Constant) else o.name for o in operands)
        self.statements.append(Statement(target, kind, op, names))
        return Symbol(target, kind, self)

    def symbol(self, name: str, kind: str) -> "Symbol":
        return Symbol(name, kind, self)


class Symbol:
    """A value during tracing: an input, a constant or the result of a recorded statement."""

    __array_priority__ = 1000  # so that ``numpy_float * symbol`` defers to Symbol
    shape: Tuple[int, ...] = ()
    dtype = "T"

    def __init__(self, name: str, kind: str, recorder: Recorder | None = None) -> None:
        self.name = name
        self.kind = kind
        self.recorder = recorder

    def __repr__(self) -> str:
        return f"Symbol({self.name!r}, {self.kind})"

    def _binary(self, op: str, other: Any, reflected: bool = False) -> "Symbol":
        other = as_symbol(other)
        left, right = (other, self) if reflected else (self, other)
        if op == "pow" and ARRAY in (left.kind, right.kind):
            raise NotTraceable("'**' on an array is not recorded (only on per-step scalars)")
        assert self.recorder is not None
        return self.recorder.emit(op, (left, right))

    def __add__(self, other: Any) -> "Symbol":
        return self._binary("add", other)

    def __radd__(self, other: Any) -> "Symbol":
        return self._binary("add", other, True)

    def __sub__(self, other: Any) -> "Symbol":
        return self._binary("sub", other)

    def __rsub__(self, other: Any) -> "Symbol":
        return self._binary("sub", other, True)

    def __mul__(self, other: Any) -> "Symbol":
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> "Symbol":
        return self._binary("mul", other, True)

    def __truediv__(self, other: Any) -> "Symbol":
        return self._binary("div", other)

    def __rtruediv__(self, other: Any) -> "Symbol":
        return self._binary("div", other, True)

    def __pow__(self, other: Any) -> "Symbol":
        return self._binary("pow", other)

    def __rpow__(self, other: Any) -> "Symbol":
        return self._binary("pow", other, True)

    def __gt__(self, other: Any) -> "Symbol":
        return self._binary("gt", other)

    def __ge__(self, other: Any) -> "Symbol":
        return self._binary("ge", other)

    def __lt__(self, other: Any) -> "Symbol":
        return self._binary("lt", other)

    def __le__(self, other: Any) -> "Symbol":
        return self._binary("le", other)

    def __neg__(self) -> "Symbol":
        assert self.recorder is not None
        return self.recorder.emit("neg", (self,))

    def __pos__(self) -> "Symbol":
        return self

    def __bool__(self) -> bool:
        raise NotTraceable(f"the code takes the truth value of the traced value {self.name} (a data-dependent branch)")

    __hash__ = object.__hash__


class Constant(Symbol):
    """A Python number in the core's arithmetic (the ``1.0`` of ``1 - beta1``)."""

    def __init__(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise NotTraceable(f"cannot record the non-finite constant {value!r}")
        super().__init__(repr(value), SCALAR)
        self.value = value

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Constant) and other.value == self.value

    __hash__ = Symbol.__hash__


@contextlib.contextmanager
def symbolic_hyperparameters() -> Iterator[None]:
    """Where a core factory is called with symbols for its hyperparameters.

    The core's validation leaves a symbol unchecked (a value of shape ``()`` that has no ``float``: see
    ``valley_core.validation``); the real values were checked by an ordinary call of the factory first. A
    ``ValueError`` here means the factory needs a hyperparameter's value to build its chain: not traceable.
    """
    try:
        yield
    except ValueError as error:
        raise NotTraceable(f"building it needs the value of a hyperparameter ({error})") from None


def as_symbol(value: Any) -> Symbol:
    """``value`` itself, or a ``Constant`` for a Python number."""
    if isinstance(value, Symbol):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotTraceable(f"cannot record a {type(value).__name__} in traced arithmetic")
    return Constant(value)


class SymbolicNamespace:
    """The ``xp`` the core runs with while it is traced.

    It has no ``linalg``, so ``valley_core.reductions.l2_norm`` takes its portable form
    ``sqrt(sum(x * x))``: the norm in every generated kernel is the core's definition, with ``sum`` the only
    primitive an executor supplies.
    """

    linalg = None

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def sqrt(self, value: Any) -> Symbol:
        return self.recorder.emit("sqrt", (as_symbol(value),))

    def astype(self, value: Any, dtype: Any) -> Symbol:
        """Only the step index ``k`` is cast (``valley_core.base.step_index``): to the tensors' type ``T``."""
        value = as_symbol(value)
        if dtype != "T" or value.kind != SCALAR:
            raise NotTraceable(f"astype({value.name}, {dtype!r}) is not recorded")
        return self.recorder.emit("astype", (value,))

    def sum(self, value: Any) -> Symbol:
        value = as_symbol(value)
        if value.kind != ARRAY:
            raise NotTraceable("sum of a value that is not per element")
        return self.recorder.emit("sum", (value,), UNIFORM)

    def where(self, condition: Any, if_true: Any, if_false: Any) -> Symbol:
        """An element-wise (or per-tensor) selection; ``condition`` is a traced comparison."""
        return self.recorder.emit("where", (as_symbol(condition), as_symbol(if_true), as_symbol(if_false)))

    def __getattr__(self, name: str) -> Any:
        raise NotTraceable(f"xp.{name} is not recorded")


# -- rendering -------------------------------------------------------------------------------------------


def operand_code(operand: Any, kinds: Dict[str, str], result_kind: str, cast: Callable[[str], str]) -> str:
    """One operand as code; a double (SCALAR) operand of a ``T`` statement goes through ``cast``."""
    if isinstance(operand, Constant):
        text = repr(operand.value)
    else:
        text = operand
        if kinds[operand] != SCALAR:
            return text
    return cast(text) if result_kind != SCALAR else text


def render_c(statement: Statement, kinds: Dict[str, str]) -> str:
    """``const T|double target = expression;`` for C, C++ and CUDA (the kernels' common subset)."""
    ctype = "double" if statement.kind == SCALAR else "T"
    ops = [operand_code(o, kinds, statement.kind, lambda text: f"((T){text})") for o in statement.operands]
    if statement.op in ("add", "sub", "mul", "div"):
        expression = f"{ops[0]} {BINARY[statement.op]} {ops[1]}"
    elif statement.op == "neg":
        expression = f"-{ops[0]}"
    elif statement.op == "sqrt":
        expression = f"sqrt({ops[0]})"
    elif statement.op in COMPARE:
        expression = f"({ctype})({ops[0]} {COMPARE[statement.op]} {ops[1]})"
    elif statement.op == "where":
        expression = f"{ops[0]} != 0 ? {ops[1]} : {ops[2]}"
    else:  # pow, astype, sum: per-step scalars and reductions, computed outside element-wise code
        raise ValueError(f"{statement.op} has no element-wise C form")
    return f"const {ctype} {statement.target} = {expression};"


def evaluate(statements: List[Statement], env: Dict[str, Any], xp: Any, dtype: Any) -> Dict[str, Any]:
    """Runs ``statements`` with the operators of the values in ``env`` (NumPy or torch arrays, Python numbers).

    ``xp`` supplies ``sqrt`` and ``sum`` for array values; ``astype`` casts to ``dtype``. This is the core's own
    evaluation order and typing (its operations are these operators), used for the per-step scalars on the
    host and by the interpreted executors.
    """
    env = dict(env)
    for s in statements:
        values = [o.value if isinstance(o, Constant) else env[o] for o in s.operands]
        if s.op == "add":
            result = values[0] + values[1]
        elif s.op == "sub":
            result = values[0] - values[1]
        elif s.op == "mul":
            result = values[0] * values[1]
        elif s.op == "div":
            result = values[0] / values[1]
        elif s.op == "pow":
            result = values[0] ** values[1]
        elif s.op == "neg":
            result = -values[0]
        elif s.op == "sqrt":
            result = math.sqrt(values[0]) if isinstance(values[0], float) else xp.sqrt(values[0])
        elif s.op == "astype":
            result = xp.astype(values[0], dtype)
        elif s.op == "sum":
            result = xp.sum(values[0])
        elif s.op in COMPARE:
            result = getattr(operator, s.op)(values[0], values[1])
        elif s.op == "where":
            result = xp.where(values[0], values[1], values[2])
        else:  # pragma: no cover - the recorder emits only the ops above
            raise ValueError(f"unknown op {s.op}")
        env[s.target] = result
    return env
