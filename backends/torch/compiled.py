"""The compiled executor: ``torch.compile`` of a plan's passes (the executor for CUDA tensors).

Nothing here knows an optimizer. Each pass of a ``backends.kernels.plan.Plan`` (the core chain's own
statements) is rendered as a Python function over a chunk of :data:`CHUNK` flat tensors (``render``) and
compiled; the values that cross a reduction live in transient workspaces, freed after the step. The per-step
scalars travel in ONE tensor of the parameters' dtype (a scalar meets an array in ``T``, as in the core), so
a new ``lr`` or step never recompiles. The norms' ``sum`` is ``torch.sum``.

Recompilation: each (plan, pass, dtype, device, one-element tensors or not) gets its own code object, hence
its own Dynamo cache and recompile limit. The last chunk of a group is padded with throw-away tensors;
one-element tensors get their own chunks (Dynamo specialises size 1); tensors with no element need nothing.
Should compilation fail (``FailOnRecompileLimitHit``, an Inductor error ...), it fails before the chunk's
kernels run; that chunk and the rest of the step run eagerly by the same functions, so a step is never half
written, and ``step`` returns the reason (the dispatcher warns and uses the core path from then on).

Inside ``torch.compile(optimizer.step)`` nothing is compiled here: :func:`render_step` writes the plan's whole
step as one straight-line function that Dynamo traces into the caller's graph, the per-step scalars computed
from each tensor's step tensor in that graph (``ValleyOptimizer._traced_step``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import torch

from backends.kernels.plan import GRAD, PARAM, Pass, Plan
from backends.kernels.trace import BINARY, COMPARE, SCALAR, Constant, operand_code
from backends.torch import _state

#: Tensors per compiled call.
CHUNK = 4
_FLOATS = (torch.float32, torch.float64)
_functions: Dict[Any, Any] = {}
_made = 0
_compiled: Dict[Any, Callable[..., Any]] = {}
_padding: Dict[Any, List[torch.Tensor]] = {}


def unsupported_reason(entries) -> Optional[str]:
    """None when the compiled path can run these ``(param, grad)`` entries, else why not."""
    if len({p.dtype for p, _ in entries}) > 1:
        return "parameters of several dtypes in one group"
    if len({p.device for p, _ in entries}) > 1:
        return "parameters on several devices"
    for p, g in entries:
        if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(g) is not torch.Tensor:
            return "tensor subclasses (DTensor ...) use the core path"
        if p.dtype not in _FLOATS or g.dtype != p.dtype:
            return f"dtype {p.dtype} (grad {g.dtype}): the compiled path handles float32/float64"
        if not (p.is_contiguous() and g.is_contiguous()):
            return "non-contiguous parameter or gradient"
    return None


def render(plan: Plan, step: Pass, name: str) -> str:
    """Python source of ``name(arrays, scalars, totals)``: one pass over ``len(arrays[0])`` tensors.

    ``arrays``: per array of the pass (its loads and stores, in ``arrays_of`` order), a list of flat tensors;
    ``scalars``: the per-step scalars (1-D tensor); ``totals``: per tensor, the sums of earlier passes.
    Returns, per tensor, the list of this pass's sums.
    """
    names = arrays_of(step)
    index = {symbol: i for i, symbol in enumerate(plan.step_scalars)}

    def operand(o: Any, kind: str) -> str:
        if isinstance(o, Constant):
            return repr(o.value)
        if plan.kinds.get(o) == SCALAR:
            return f"scalars[{index[o]}]"
        return operand_code(o, plan.kinds, kind, str)

    def statement(s: Any) -> str:
        return _statement_code(s, [operand(o, s.kind) for o in s.operands], where="torch.where")

    totals = {target: j for j, target in enumerate(t for p in plan.passes for t, _ in p.sums)}
    body = [f"{symbol} = arrays[{names.index(array)}][i]" for symbol, array in step.loads]
    body += [f"{target} = totals[i][{totals[target]}]" for target in step.totals]
    body += [statement(s) for s in (*step.uniforms, *step.statements)]
    body += [f"arrays[{names.index(array)}][i].copy_({symbol})" for array, symbol in step.stores]
    body.append(f"sums.append([{', '.join(f'torch.sum({operand})' for _, operand in step.sums)}])")
    lines = [f"def {name}(arrays, scalars, totals):", "    sums = []", "    for i in range(len(arrays[0])):"]
    lines += ["        " + line for line in body]
    lines.append("    return sums")
    return "\n".join(lines)


def arrays_of(step: Pass) -> List[str]:
    """The arrays a pass reads or writes, in a fixed order."""
    return list(dict.fromkeys([array for _, array in step.loads] + [array for array, _ in step.stores]))


def _new_function(plan: Plan, index: int) -> Callable[..., Any]:
    """A new Python function for a pass (a new code object, so a new Dynamo cache when compiled)."""
    global _made
    _made += 1
    name = f"valley_pass_{_made}"
    namespace: Dict[str, Any] = {"torch": torch}
    exec(compile(render(plan, plan.passes[index], name), f"<plan {plan.name} pass {index}>", "exec"), namespace)  # noqa: S102
    return namespace[name]


def _function(plan: Plan, index: int) -> Callable[..., Any]:
    """The pass as a Python function (run eagerly after a compilation failure)."""
    key = (id(plan), index)
    if key not in _functions:
        _functions[key] = (plan, _new_function(plan, index))  # the plan kept alive: its id is not reused
    return _functions[key][1]


def _kernel(plan: Plan, index: int, key: tuple) -> Callable[..., Any]:
    """``torch.compile`` of a pass for one static configuration (its own code object and Dynamo cache)."""
    key = (id(plan), index, *key)
    if key not in _compiled:
        _compiled[key] = torch.compile(_new_function(plan, index), dynamic=True, fullgraph=True)
        _function(plan, index)  # keeps the plan alive: its id is not reused
    return _compiled[key]


def _pad(dtype: torch.dtype, device: torch.device, size: int, count: int, array: str) -> List[torch.Tensor]:
    """Throw-away flat zero tensors that fill the last chunk (separate allocations: aliasing changes the graph)."""
    pads = _padding.setdefault((dtype, device, size, array), [])
    while len(pads) < count:
        pads.append(torch.zeros(size, dtype=dtype, device=device))
    return pads[:count]


def _is_compilation_error(error: BaseException) -> bool:
    from torch._dynamo import exc

    return isinstance(error, (exc.FailOnRecompileLimitHit, exc.TorchDynamoException))


def step(plan: Plan, hyperparameters: Dict[str, Any], entries, states) -> Optional[str]:
    """One step of ``(param, grad)`` entries (state initialised); advances ``"step"``.

    Returns None, or (when a pass could not be compiled and the step was completed eagerly) why.
    """
    batches: Dict[tuple, List[Dict[str, torch.Tensor]]] = {}
    for p, g in entries:
        arrays = {GRAD: g, PARAM: p.detach(), **{role: states[p][key] for role, key in plan.buffers}}
        batches.setdefault((_state.steps_taken(states[p]), p.dtype), []).append(arrays)
    failure = run(plan, hyperparameters, batches)
    _state.advance([states[p] for p, _ in entries])
    return failure


def run(
    plan: Plan, hyperparameters: Dict[str, Any], batches: Dict[tuple, List[Dict[str, torch.Tensor]]]
) -> Optional[str]:
    """Runs the plan's passes on batches ``(steps taken, dtype) -> [arrays by role]`` (``Plan.roles``, as
    ``backends.torch.fused.run`` takes them: ``E`` hands both the same batches); one dtype and device in all.

    Returns None, or (when a pass could not be compiled and the step was completed eagerly) why.
    """
    from torch.fx.experimental import _config

    failure: Optional[str] = None
    for (steps_taken, dtype), batch in batches.items():
        device = batch[0][GRAD].device
        values = plan.step_scalar_values(hyperparameters, steps_taken, str(dtype).replace("torch.", ""))
        scalars = torch.tensor(values or [0.0], dtype=dtype).to(device, non_blocking=True)
        for single in (False, True):
            items = [item for item in batch if item[GRAD].numel() and (item[GRAD].numel() == 1) == single]
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK]
                arrays = {role: [item[role].view(-1) for item in chunk] for role in plan.roles}
                arrays.update({f"w{j}": [torch.empty_like(a) for a in arrays[GRAD]] for j in range(plan.workspaces)})
                for name, column in arrays.items():
                    column += _pad(dtype, device, 1 if single else 2, CHUNK - len(chunk), name)
                totals: List[List[torch.Tensor]] = [[] for _ in range(CHUNK)]
                for index, sweep in enumerate(plan.passes):
                    arguments = ([arrays[a] for a in arrays_of(sweep)], scalars, totals)
                    sums = None
                    if failure is None:
                        try:
                            # No duck sizing: equal sizes of different tensors must not become a guard.
                            with _config.patch(use_duck_shape=False):  # type: ignore[attr-defined]  # set by torch
                                sums = _kernel(plan, index, (dtype, device, single))(*arguments)
                        except Exception as error:  # noqa: BLE001 - only compilation errors, raised before any write
                            if not _is_compilation_error(error):
                                raise
                            failure = f"torch.compile failed: {type(error).__name__}: {error}".split("\n")[0]
                    if sums is None:  # eagerly, by the same function: the rest of the step from where it failed
                        sums = _function(plan, index)(*arguments)
                    totals = [before + new for before, new in zip(totals, sums)]
    return failure


# -- the whole step, traced inside a torch.compile'd optimizer step ------------------------------------------


def render_step(plan: Plan, sources: Dict[str, str], name: str) -> str:
    """Python source of ``name(group, params, grads, tensors)``: one whole step of ``plan`` for every tensor of a
    param group, written to be traced by Dynamo inside ``torch.compile(optimizer.step)`` (one graph).

    ``tensors`` holds, per parameter, its ``"step"`` (a 0-d int tensor: the steps taken) and then its buffers
    in ``plan.buffers`` order. ``sources``: for each hyperparameter symbol of the plan, the expression that reads
    it from ``group`` (``group["lr"]``: a tensor ``lr`` stays a tensor, so a schedule never recompiles).

    The per-step scalars are the plan's scalar program evaluated from each tensor's own step with torch's
    operators (Python floats stay Python floats, the counter is a tensor): the core's own typing on torch, and no
    host read. The passes become one straight-line function per tensor: every value is a local, the sums are
    ``torch.sum``, and the stores happen after every value is computed (as the core's functional update).
    """
    width = 1 + len(plan.buffers)
    lines = [f"def {name}(group, params, grads, tensors):"]
    lines += [f"    {symbol} = _scalar({sources[symbol]})" for symbol, _ in plan.hyper_inputs]
    lines += [
        "    for i in range(len(params)):",
        "        p = params[i]",
        "        T = _state_dtype(p)",
        f"        step = tensors[i * {width}]",
        "        param = p.detach().to(T)",
        "        grad = grads[i].to(T)",
    ]
    lines += [f"        {role} = tensors[i * {width} + {j + 1}]" for j, (role, _) in enumerate(plan.buffers)]
    # Loads need no code: inputs are the locals above, values of earlier passes (workspaces, new values) are
    # locals already, and nothing is stored before the end.
    lines += [f"        {symbol} = step" for symbol in plan.counter_symbols]
    lines += ["        " + _scalar_line(s) for s in plan.scalar_statements]
    stores: List[tuple] = []
    for sweep in plan.passes:
        lines += ["        " + _array_line(plan, s) for s in (*sweep.uniforms, *sweep.statements)]
        lines += [f"        {target} = torch.sum({operand})" for target, operand in sweep.sums]
        stores += [(array, symbol) for array, symbol in sweep.stores if not array.startswith("w")]
    for array, symbol in stores:
        target = "p.detach()" if array == PARAM else array
        lines.append(f"        {target}.copy_({symbol})")
    lines.append("        step.add_(1)")
    return "\n".join(lines)


def _scalar_line(s: Any) -> str:
    """One statement of the per-step scalar program, on Python floats and 0-d tensors alike."""
    ops = [repr(o.value) if isinstance(o, Constant) else o for o in s.operands]
    if s.op in BINARY:
        return f"{s.target} = {ops[0]} {BINARY[s.op]} {ops[1]}"
    if s.op in COMPARE:
        return f"{s.target} = {ops[0]} {COMPARE[s.op]} {ops[1]}"
    if s.op == "neg":
        return f"{s.target} = -{ops[0]}"
    if s.op in ("sqrt", "astype", "where"):
        return f"{s.target} = _{s.op}({', '.join(ops)}{', T' if s.op == 'astype' else ''})"
    raise ValueError(f"{s.op} is not a per-step scalar operation")  # pragma: no cover


def _array_line(plan: Plan, s: Any) -> str:
    """One per-element or per-tensor statement (the operators of :func:`render`, operands by name)."""
    ops = [repr(o.value) if isinstance(o, Constant) else operand_code(o, plan.kinds, s.kind, str) for o in s.operands]
    return _statement_code(s, ops, where="_where")


def _statement_code(s: Any, ops: List[str], where: str) -> str:
    """The Python line of one array statement of the plan, given its operands' code (``where``: the function
    that selects, ``torch.where`` or the traced step's ``_where``)."""
    if s.op in BINARY:
        return f"{s.target} = {ops[0]} {BINARY[s.op]} {ops[1]}"
    if s.op in COMPARE:
        return f"{s.target} = {ops[0]} {COMPARE[s.op]} {ops[1]}"
    if s.op == "where":
        return f"{s.target} = {where}({ops[0]}, {ops[1]}, {ops[2]})"
    if s.op == "neg":
        return f"{s.target} = -{ops[0]}"
    return f"{s.target} = torch.sqrt({ops[0]})"


def _scalar(x: Any) -> Any:
    """A hyperparameter as a scalar: a one-element tensor as a 0-d view (it must not broadcast a 0-d parameter)."""
    return x.reshape(()) if isinstance(x, torch.Tensor) else x


def _sqrt(x: Any) -> Any:
    return math.sqrt(x) if isinstance(x, float) else torch.sqrt(x)


def _astype(x: Any, dtype: torch.dtype) -> Any:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=dtype)


def _where(condition: Any, if_true: Any, if_false: Any) -> Any:
    if isinstance(condition, torch.Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


_steps: Dict[Any, Any] = {}


def step_function(plan: Plan, sources: Dict[str, str]) -> Callable[..., Any]:
    """:func:`render_step` of ``plan`` as a Python function (cached: the same function for the same plan)."""
    key = (id(plan), tuple(sorted(sources.items())))
    if key not in _steps:
        name = f"valley_step_{len(_steps) + 1}"
        namespace: Dict[str, Any] = {
            "torch": torch,
            "_scalar": _scalar,
            "_sqrt": _sqrt,
            "_astype": _astype,
            "_where": _where,
            "_state_dtype": _state.state_dtype,
        }
        code = compile(render_step(plan, sources, name), f"<plan {plan.name} step>", "exec")
        exec(code, namespace)  # noqa: S102
        _steps[key] = (plan, namespace[name])  # the plan kept alive: its id is not reused
    return _steps[key][1]
