"""The execution plan of a ``valley_core`` optimizer, derived from the core's own chain.

``derive(factory, hyperparameters)`` calls the factory with symbolic hyperparameters and runs the chain's
``update`` (then ``apply_updates``) over ONE symbolic tensor (``backends.kernels.trace``). What the core does
becomes the plan:

- **per-step scalars**: everything computed from hyperparameters and step counters only (``1 - beta1``, bias
  corrections, schedules at ``k``), evaluated on the host once per step (``step_scalars``) exactly as the core
  evaluates them on NumPy;
- **passes**: the element-wise statements, cut at each reduction (a ``sum`` of ``valley_core.reductions``'s
  ``l2_norm``): pass ``p`` runs what needs the sums of pass ``p - 1``; what a pass reads from an earlier pass
  is either the state written there, kept in a workspace (``passes``) or computed again from the state
  already written (``recompute``, when the chain allows it);
- **state mapping**: which array of the kernels (``grad``, ``param``, ``b0``, ``b1`` ...) is which core state
  field (``"EState.carry"`` ...), and the core's step counters (all advance by one per step).

No optimizer is named here: a user's chain of core transforms gets the same plan as a named optimizer.
Executors (``backends.kernels.cpu``, ``backends.torch.compiled``, ``backends.cupy``) render passes; a chain
the tracer cannot record (a data-dependent branch, state not shaped like the parameter) gets an
``Unplannable`` with the reason, and runs on the core path.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backends.kernels.trace import (
    ARRAY,
    SCALAR,
    UNIFORM,
    Constant,
    NotTraceable,
    Recorder,
    Statement,
    Symbol,
    SymbolicNamespace,
    evaluate,
    symbolic_hyperparameters,
)
from valley_core.serialization import state_to_dict

GRAD, PARAM, UPDATE = "grad", "param", "update"


class Unplannable(Exception):
    """The chain cannot be planned; ``str(error)`` says why (it runs on the core path)."""


@dataclass(frozen=True)
class Pass:
    """One sweep over a tensor's elements.

    Attributes:
        loads: ``(symbol, array)``: the element of ``array`` (a role or a workspace) read into ``symbol``.
        totals: sums accumulated by earlier passes that this pass reads (per-tensor values of type ``T``).
        uniforms: per-tensor statements run once before the sweep (a norm, the trust ratio).
        statements: per-element statements.
        stores: ``(array, symbol)``: written per element.
        sums: ``(target, operand)``: ``target = sum(operand)`` over the elements, read by later passes.
    """

    loads: Tuple[Tuple[str, str], ...]
    totals: Tuple[str, ...]
    uniforms: Tuple[Statement, ...]
    statements: Tuple[Statement, ...]
    stores: Tuple[Tuple[str, str], ...]
    sums: Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class Plan:
    """How to run one step of a chain on one tensor (see the module docstring).

    Attributes:
        name: the factory's name (for messages and kernel names).
        buffers: ``(role, core key)`` of each per-tensor state buffer, ``("b0", "EState.carry")`` ...
        counters: core keys of the step counters (``"EState.count"`` ...), each equal to the steps taken.
        hyper_inputs: ``(symbol, path)`` of each hyperparameter: ``("h_lr", "lr")``, ``("h_betas_1", "betas.1")``.
        counter_symbols: the symbols of the counters in the trace (their value: the steps taken so far).
        scalar_statements: the per-step scalar program (host).
        step_scalars: the per-step scalars the passes read, in the order executors pass them.
        passes: the passes, values crossing a reduction kept in workspaces (``workspaces`` of them).
        recompute: the passes with values crossing a reduction computed again, or None when impossible.
        writes_param: True: the step updates ``param``; False: it writes the update into ``update`` (E).
        kinds: the kind of every symbol (``SCALAR``, ``UNIFORM``, ``ARRAY``).
    """

    name: str
    buffers: Tuple[Tuple[str, str], ...]
    counters: Tuple[str, ...]
    hyper_inputs: Tuple[Tuple[str, str], ...]
    counter_symbols: Tuple[str, ...]
    scalar_statements: Tuple[Statement, ...]
    step_scalars: Tuple[str, ...]
    passes: Tuple[Pass, ...]
    workspaces: int
    recompute: Optional[Tuple[Pass, ...]]
    writes_param: bool
    kinds: Dict[str, str] = field(repr=False, compare=False, hash=False)
    #: The factory's defaults, for hyperparameters a caller of ``step_scalar_values`` leaves out.
    defaults: Dict[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    @property
    def roles(self) -> Tuple[str, ...]:
        """The per-tensor arrays of a kernel call, in order: ``grad``, ``param`` (or ``update``), buffers."""
        return (GRAD, PARAM if self.writes_param else UPDATE, *(role for role, _ in self.buffers))

    @property
    def reductions(self) -> int:
        """The number of sums per tensor and step (two per trust ratio)."""
        return sum(len(p.sums) for p in self.passes)

    def step_scalar_values(self, hyperparameters: Dict[str, Any], steps_taken: int, dtype: Any) -> List[float]:
        """The values of ``step_scalars`` for the step after ``steps_taken`` steps, on tensors of ``dtype``.

        The counters are 0-d int32 NumPy arrays, the hyperparameters Python floats, ``astype`` casts to
        ``dtype``: the core's own types on NumPy, so a kernel sees the values the core computes.
        """
        import array_api_compat.numpy as xp

        values = {**self.defaults, **hyperparameters}
        env: Dict[str, Any] = {name: float(_lookup(values, path)) for name, path in self.hyper_inputs}
        counter = np.asarray(steps_taken, dtype=np.int32)
        env.update({name: counter for name in self.counter_symbols})
        env = evaluate(list(self.scalar_statements), env, xp, np.dtype(dtype))
        return [float(env[name]) for name in self.step_scalars]


def _lookup(hyperparameters: Dict[str, Any], path: str) -> Any:
    name, _, index = path.partition(".")
    value = hyperparameters[name]
    return value[int(index)] if index else value


# -- deriving a plan ------------------------------------------------------------------------------------------


def _symbolic(name: str, value: Any, default: Any, recorder: Recorder, inputs: List[Tuple[str, str]]) -> Any:
    """``value`` with every real hyperparameter replaced by a named scalar symbol (structure kept as is)."""
    if isinstance(value, (tuple, list)) and value and all(_is_real(v) for v in value):
        return tuple(_symbolic(f"{name}.{i}", v, None, recorder, inputs) for i, v in enumerate(value))
    if _is_real(value) and not (isinstance(default, numbers.Integral) and not isinstance(default, bool)):
        symbol = "h_" + name.replace(".", "_")
        inputs.append((symbol, name))
        return recorder.symbol(symbol, SCALAR)
    return value


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _LayoutNamespace:
    """The ``xp`` of ``init`` while planning: state shaped like the parameter, and 0-d counters, nothing else."""

    int32 = "int32"

    def zeros_like(self, like: Any) -> Symbol:
        return Symbol("buffer", ARRAY)

    def asarray(self, value: Any, dtype: Any = None, device: Any = None) -> Symbol:
        return Symbol("counter", SCALAR)

    def __getattr__(self, name: str) -> Any:
        raise NotTraceable(f"its state holds arrays not shaped like the parameter (xp.{name} in init)")


def derive(
    factory: Callable[..., Any],
    hyperparameters: Dict[str, Any],
    writes_param: bool = True,
    name: str | None = None,
    maximize: bool = False,
) -> Plan:
    """The plan of ``factory(**hyperparameters)`` (the caller has validated them with a real call).

    Args:
        factory: a ``valley_core`` factory (or a user's function returning a chain of core transforms).
        hyperparameters: its keyword arguments; real numbers become per-step inputs, everything else
            (booleans, integers, masks over one tensor, schedules) is part of the plan's structure.
        writes_param: whether the step applies the update to the parameter (an optimizer) or only
            writes it (the E adaptor in front of another optimizer).
        name: for messages and kernel names (default: the factory's ``__name__``).
        maximize: the chain sees the negated gradient (torch's ``maximize=True``). The negation is the first
            statement of the trace, ``-grad``, so it happens once per element, in the pass that reads the
            gradient, before anything else uses it (every executor of the plan inherits it).

    Raises:
        Unplannable: naming the reason.
    """
    name = name or str(getattr(factory, "__name__", "chain"))
    try:
        return _derive(factory, hyperparameters, writes_param, name, maximize)
    except (NotTraceable, TypeError, AttributeError) as error:
        raise Unplannable(f"valley_core.{name} cannot be planned: {error}") from None


def _derive(
    factory: Callable[..., Any], hyperparameters: Dict[str, Any], writes_param: bool, name: str, maximize: bool
) -> Plan:
    recorder = Recorder()
    signature = inspect.signature(factory)
    defaults = {n: p.default for n, p in signature.parameters.items()}
    bound = signature.bind(**hyperparameters)
    bound.apply_defaults()
    hyperparameters = dict(bound.arguments)
    hyper_inputs: List[Tuple[str, str]] = []
    symbolic = {n: _symbolic(n, v, defaults.get(n), recorder, hyper_inputs) for n, v in hyperparameters.items()}
    # The structure of the state, from the real factory's init over one layout tensor.
    template = factory(**hyperparameters).init((Symbol("param", ARRAY),), xp=_LayoutNamespace())
    with symbolic_hyperparameters():
        transform = factory(**symbolic)
    inputs: Dict[str, Symbol] = {}
    buffers: List[Tuple[str, str]] = []
    counters: List[str] = []
    for key in state_to_dict(template):
        if key.endswith(".0"):
            role = f"b{len(buffers)}"
            buffers.append((role, key[:-2]))
            inputs[key] = recorder.symbol(role, ARRAY)
        else:
            counters.append(key)
            inputs[key] = recorder.symbol(f"c{len(counters) - 1}", SCALAR)
    state = _rebuild(template, inputs)
    grad, param = recorder.symbol(GRAD, ARRAY), recorder.symbol(PARAM, ARRAY)
    xp = SymbolicNamespace(recorder)
    updates, new_state = transform.update((-grad if maximize else grad,), state, (param,), xp=xp)
    (update,) = updates
    outputs: Dict[str, Symbol] = {}
    if writes_param:
        outputs[PARAM] = param + update
    else:
        outputs[UPDATE] = update
    new_flat = state_to_dict(new_state)
    for key, symbol in inputs.items():
        new = new_flat[key]
        if symbol.kind == SCALAR:
            if not _is_increment(recorder, new, symbol):
                raise NotTraceable(f"its state scalar {key} is not a step counter")
        elif new is not symbol:
            outputs[symbol.name] = new
    plan = _schedule(name, recorder, buffers, counters, hyper_inputs, inputs, outputs, writes_param)
    plan.defaults.update({n: v for n, v in defaults.items() if v is not inspect.Parameter.empty})
    return plan


def _rebuild(template: Any, flat: Dict[str, Symbol]) -> Any:
    from valley_core.serialization import state_from_dict

    return state_from_dict(template, flat)


def _is_increment(recorder: Recorder, new: Any, old: Symbol) -> bool:
    if not isinstance(new, Symbol) or isinstance(new, Constant):
        return False
    for s in recorder.statements:
        if s.target == new.name:
            return s.op == "add" and s.operands[0] == old.name and s.operands[1] == Constant(1)
    return False


def _schedule(
    name: str,
    recorder: Recorder,
    buffers: List[Tuple[str, str]],
    counters: List[str],
    hyper_inputs: List[Tuple[str, str]],
    inputs: Dict[str, Symbol],
    outputs: Dict[str, Symbol],
    writes_param: bool,
) -> Plan:
    """Cuts the recorded statements into the per-step scalar program and the passes."""
    statements = {s.target: s for s in recorder.statements}
    kinds: Dict[str, str] = {s.target: s.kind for s in recorder.statements}
    kinds.update({sym.name: sym.kind for sym in inputs.values()})
    kinds.update({GRAD: ARRAY, PARAM: ARRAY})
    kinds.update({symbol: SCALAR for symbol, _ in hyper_inputs})
    level: Dict[str, int] = {}
    for s in recorder.statements:
        below = [level.get(o, 0) for o in s.operands if isinstance(o, str)]
        level[s.target] = (below[0] + 1) if s.op == "sum" else max(below, default=0)
    for role, symbol in outputs.items():
        if symbol.kind != ARRAY:
            raise NotTraceable(f"its output {role} is not an element-wise value")
    # Stores happen in the pass that computes the value; a store of an input happens in pass 0.
    store_pass = {role: level.get(symbol.name, 0) for role, symbol in outputs.items()}
    count = 1 + max([level.get(s.name, 0) for s in outputs.values()], default=0)

    def passes(recompute: bool) -> Tuple[Tuple[Pass, ...], int]:
        workspace: Dict[str, str] = {}  # symbol -> workspace array, values kept between passes
        built: List[Dict[str, Any]] = [
            dict(loads={}, uniforms={}, elements={}, stores=[], sums=[], totals=set()) for _ in range(count)
        ]

        def need(symbol: str, p: int) -> None:
            """Makes ``symbol`` available per element (or per tensor) in pass ``p``."""
            b = built[p]
            if symbol in b["loads"].values() or symbol in b["elements"] or symbol in b["uniforms"]:
                return
            if symbol in b["totals"] or kinds.get(symbol, SCALAR) == SCALAR and symbol not in statements:
                return
            s = statements.get(symbol)
            if s is not None and s.kind == SCALAR:
                return  # a per-step scalar (host)
            if s is not None and s.op == "sum":
                if level[symbol] > p:
                    raise AssertionError("a sum is read before its pass")  # pragma: no cover
                b["totals"].add(symbol)
                return
            if s is not None and s.kind == UNIFORM:
                for o in s.operands:
                    if isinstance(o, str):
                        need(o, p)
                b["uniforms"][symbol] = s
                return
            # An element-wise value: a role's current contents, computed here, or kept from an earlier pass.
            for role, out in outputs.items():
                if out.name == symbol and store_pass[role] < p:
                    b["loads"][role] = symbol  # the new value, written by an earlier pass
                    return
            if s is None:  # an input role
                if symbol in outputs and store_pass[symbol] < p:
                    keep(symbol, p)  # overwritten before this pass: its old value was kept
                    return
                b["loads"][symbol] = symbol
                return
            if level[symbol] == p or recompute:
                for o in s.operands:
                    if isinstance(o, str):
                        need(o, p)
                b["elements"][symbol] = s
                return
            keep(symbol, p)

        def keep(symbol: str, p: int) -> None:
            if recompute:
                raise NotTraceable(f"{symbol} would have to be kept between passes")
            origin = 0 if symbol not in statements else level[symbol]
            if symbol not in workspace:
                workspace[symbol] = f"w{len(workspace)}"
                need(symbol, origin)
                built[origin]["stores"].append((workspace[symbol], symbol))
            built[p]["loads"][workspace[symbol]] = symbol

        for role, symbol in outputs.items():
            need(symbol.name, store_pass[role])
            built[store_pass[role]]["stores"].append((role, symbol.name))
        for s in recorder.statements:  # the reductions, in the pass that sees their operand
            if s.op == "sum" and any(s.target in b["totals"] for b in built):
                need(s.operands[0], level[s.target] - 1)
                built[level[s.target] - 1]["sums"].append((s.target, s.operands[0]))
        order = {s.target: i for i, s in enumerate(recorder.statements)}
        result = []
        for b in built:
            result.append(
                Pass(
                    loads=tuple((symbol, array) for array, symbol in b["loads"].items()),
                    totals=tuple(sorted(b["totals"], key=order.__getitem__)),
                    uniforms=tuple(sorted(b["uniforms"].values(), key=lambda s: order[s.target])),
                    statements=tuple(sorted(b["elements"].values(), key=lambda s: order[s.target])),
                    stores=tuple(b["stores"]),
                    sums=tuple(b["sums"]),
                )
            )
        return tuple(result), len(workspace)

    stored, workspaces = passes(False)
    try:
        recomputed: Optional[Tuple[Pass, ...]] = passes(True)[0] if count > 1 else None
    except NotTraceable:
        recomputed = None
    # Per-step scalars: the SCALAR values the passes read, and the host statements that compute them.
    read = [
        o
        for p in stored + (recomputed or ())
        for s in (*p.uniforms, *p.statements)
        for o in s.operands
        if isinstance(o, str) and kinds.get(o) == SCALAR
    ]
    step_scalars = tuple(dict.fromkeys(read))
    host = _closure(step_scalars, statements)
    return Plan(
        name=name,
        buffers=tuple(buffers),
        counters=tuple(counters),
        hyper_inputs=tuple(hyper_inputs),
        counter_symbols=tuple(f"c{i}" for i in range(len(counters))),
        scalar_statements=tuple(s for s in recorder.statements if s.target in host),
        step_scalars=step_scalars,
        passes=stored,
        workspaces=workspaces,
        recompute=recomputed,
        writes_param=writes_param,
        kinds=kinds,
    )


def _closure(names: Sequence[str], statements: Dict[str, Statement]) -> set:
    """The statements ``names`` depend on."""
    seen: set = set()
    stack = [n for n in names if n in statements]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack += [o for o in statements[name].operands if isinstance(o, str) and o in statements]
    return seen
