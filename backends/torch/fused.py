"""The fused CPU executor: one call of a kernel generated from the plan steps all the tensors of a batch.

Nothing here knows an optimizer. The kernel is ``backends.kernels.cpu``'s C++ of the plan
(``backends.kernels.plan``: the core chain's own statements), its scalars the plan's per-step scalars; this
module maps the state to the kernel's arrays (``Plan.roles``: ``grad``, ``param`` or ``update``, then the
state buffers by their core keys).

Scope: plain (non-DTensor) dense contiguous float32, float64, bfloat16 or float16 CPU tensors (state float32
for the last two, as on the core path), gradients of the parameter's dtype. Tensors at different steps (some
had no gradient at times) are stepped in separate calls with their own scalars; tensors with no element need
no kernel. The kernel cannot fail once called (it is built, or the build fails, before anything is written).
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch

from backends.kernels import cpu
from backends.kernels.plan import GRAD, PARAM, UPDATE, Plan
from backends.torch import _state, compact_state
from backends.torch.compact_state import Codec

_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_FULL_PRECISION = (torch.float32, torch.float64)
#: The kernel of every plan is named so; each plan has its own library.
KERNEL = "valley_step"


def tensor_reason(
    p: torch.Tensor, g: torch.Tensor, buffers, low_precision: bool = True, codec: Codec = compact_state.FLOAT32
) -> Optional[str]:
    """None when the fused kernels can step ``p`` (gradient ``g``, state ``buffers``), else why not.

    ``low_precision``: whether bfloat16/float16 parameters (float32 state) are accepted. ``codec``: the storage
    of the buffers (``backends.torch.compact_state``).
    """
    if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(g) is not torch.Tensor:
        return "tensor subclasses (DTensor ...) use the core path"
    if p.device.type != "cpu" or g.device.type != "cpu":
        return f"parameter on {p.device}, gradient on {g.device}: the fused kernels run on the CPU"
    accepted = _DTYPES if low_precision else _FULL_PRECISION
    if p.dtype not in accepted or g.dtype != p.dtype:
        names = "float32/float64/bfloat16/float16" if low_precision else "float32/float64"
        return (
            f"dtype {p.dtype} (grad {g.dtype}): the fused path handles {names} parameters with gradients of their dtype"
        )
    if not (p.is_contiguous() and g.is_contiguous()):
        return "non-contiguous parameter or gradient"
    state_dtype = _state.state_dtype(p)  # float32 for compact formats: ValleyOptimizer refuses float64 with them
    for buffer in buffers:
        if not buffer.is_contiguous():
            return f"a state buffer is {buffer.dtype}, non-contiguous"
        if not codec.holds(buffer, state_dtype):
            # e.g. a group's state_dtype changed between steps: the core path reads any format and stores the new one
            return f"a state buffer is {buffer.dtype}, not state_dtype={codec.name!r} (the core path converts it)"
    return None


def compact_formats(plan: Plan, codec: Codec) -> Tuple[Tuple[str, str], ...]:
    """``(role, code)`` of each state buffer of ``plan`` in ``codec``'s format (empty for float32)."""
    return tuple((role, code) for role, key in plan.buffers for code in [codec.kernel_code(key)] if code)


def plan_reason(plan: Plan, codec: Codec) -> Optional[str]:
    """Why the fused kernels cannot keep this plan's state in ``codec``'s format (None if they can): a pass that
    reads a buffer an earlier pass wrote would read the encoded value, where the core reads the exact one."""
    if not codec.compact:
        return None
    written: set = set()
    for step in plan.passes:
        reread = written & {array for _, array in step.loads}
        if reread:
            return f"state_dtype={codec.name!r}: a pass of {plan.name}'s plan reads {sorted(reread)} after writing it"
        written |= {array for array, _ in step.stores if array.startswith("b")}
    return None


def unsupported_reason(
    plan: Plan,
    entries,
    states: Dict[Any, Dict[str, Any]],
    low_precision: bool = True,
    codec: Codec = compact_state.FLOAT32,
) -> Optional[str]:
    """None when the fused path can run these ``(param, grad)`` entries, else why not (before anything is written)."""
    keys = [key for _, key in plan.buffers]
    reason = plan_reason(plan, codec)
    if reason is not None:
        return reason
    for p, g in entries:
        state = states.get(p) or {}
        reason = tensor_reason(p, g, [state[key] for key in keys if key in state], low_precision, codec)
        if reason is not None:
            return reason
    if any(p.dtype == torch.float16 for p, _ in entries):
        try:
            if not library(plan).supports(KERNEL, "float16"):
                return "float16 kernels need a C++ compiler with _Float16"
        except cpu.KernelUnavailable:
            pass  # reported where the build is attempted
    return None


def library(
    plan: Plan,
    variants: Sequence[Tuple[str, Optional[FrozenSet[str]]]] = ((KERNEL, None),),
    codec: Codec = compact_state.FLOAT32,
) -> cpu.Library:
    """The built kernels of ``plan`` (raises ``backends.kernels.cpu.KernelUnavailable``); ``codec``: the storage
    of the state buffers (compact kernels decode and encode them, ``backends.torch.compact_state``)."""
    formats = compact_formats(plan, codec)
    if formats:
        return cpu.load([(plan, name, stores, formats) for name, stores in variants])
    return cpu.load([(plan, name, stores) for name, stores in variants])


def run(
    plan: Plan,
    hyperparameters: Dict[str, Any],
    batches: Dict[Tuple[int, torch.dtype], List[Dict[str, torch.Tensor]]],
    kernel: str = KERNEL,
    lib: Optional[cpu.Library] = None,
    columns_after: Sequence[str] = (),
) -> None:
    """Runs ``kernel`` of the plan on batches ``(steps taken, parameter dtype) -> [arrays by role]``.

    ``arrays by role``: a tensor for every role of ``Plan.roles`` (``grad``, ``param``/``update``, ``b0`` ...),
    and of ``columns_after`` (a compact kernel's scales and seeds, ``backends.kernels.cpu.compact_columns``).
    A compact kernel (``columns_after`` given) keeps every value that crosses a reduction in the workspace.
    """
    lib = lib or library(plan)
    threads = torch.get_num_threads()
    for (steps_taken, dtype), items in batches.items():
        items = [item for item in items if item[GRAD].numel()]
        if not items:
            continue
        # The core runs on float32 working copies of low-precision parameters, so k and the scalars are float32.
        compute = torch.float32 if dtype in _state.LOW_PRECISION else dtype
        scalars = plan.step_scalar_values(hyperparameters, steps_taken, _DTYPES[compute])
        sizes = [item[GRAD].numel() for item in items]
        # Transient workspaces (not optimizer state), freed after the step: the values that cross a reduction
        # for tensors up to STORE_LIMIT_BYTES (larger ones recompute them, where the plan allows), the block sums.
        capacity = max(sizes)
        if plan.recompute is not None and not columns_after:
            capacity = min(capacity, cpu.STORE_LIMIT_BYTES // compute.itemsize)
        work = torch.empty(plan.workspaces * capacity, dtype=compute)
        sums = torch.empty(plan.reductions * (-(-max(sizes) // cpu.BLOCK)), dtype=torch.float64)
        columns = [[item[role].data_ptr() for item in items] for role in (*plan.roles, *columns_after)]
        lib.run(kernel, _DTYPES[dtype], columns, sizes, work.data_ptr(), capacity, sums.data_ptr(), scalars, threads)


def step(
    plan: Plan,
    hyperparameters: Dict[str, Any],
    entries,
    states,
    codec: Codec = compact_state.FLOAT32,
    indices: Optional[Dict[int, int]] = None,
) -> None:
    """One step of ``(param, grad)`` entries whose state ``states[param]`` is initialised; advances ``"step"``.

    ``codec``: the storage of the state (``backends.torch.compact_state``); ``indices``: ``id(p) ->`` the
    parameter's position among the optimizer's parameters (the compact stores' random bits depend on it).
    """
    lib = library(plan, codec=codec)  # builds before anything is written; raises KernelUnavailable
    formats = dict(compact_formats(plan, codec))
    columns_after = cpu.compact_columns(plan, formats)
    seed_keys = cpu.compact_seed_keys(plan, formats)
    batches: Dict[Tuple[int, torch.dtype], List[Dict[str, torch.Tensor]]] = {}
    seeds: List[int] = []
    ordered = []
    for p, g in entries:
        state = states[p]
        arrays = {GRAD: g, PARAM: p.detach(), **{role: state[key] for role, key in plan.buffers}}
        if formats:
            assert indices is not None
            for role, key in plan.buffers:
                if formats[role] != "bf16":
                    arrays[f"{role}.scale"] = state[key + compact_state.SCALE]
            seeds += compact_state.seeds(_state.steps_taken(state) + 1, indices[id(p)], seed_keys)
        batches.setdefault((_state.steps_taken(state), p.dtype), []).append(arrays)
        ordered.append(arrays)
    if formats:  # one tensor of every entry's seeds (as int32 bits), each entry a view of its row
        signed = [s - (1 << 32) if s >= 1 << 31 else s for s in seeds]
        table = torch.tensor(signed, dtype=torch.int32).view(len(ordered), len(seed_keys))
        for arrays, row in zip(ordered, table):
            arrays["seeds"] = row
    run(plan, hyperparameters, batches, lib=lib, columns_after=columns_after)
    _state.advance([states[p] for p, _ in entries])


__all__ = ["KERNEL", "UPDATE", "library", "run", "step", "tensor_reason", "unsupported_reason"]
