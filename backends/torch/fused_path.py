"""The fused CPU path: one call into ``backends.kernels.cpu`` steps all the tensors of a group.

Nothing here defines an update rule. The kernels are generated from the traced core programs
(``backends.kernels.programs``: ``valley_core.elementwise.alto_direction`` and friends, the core's
``trust_ratio``), their scalars come from ``backends.kernels.scalars.step_scalars`` (the core's
``bias_corrections`` and schedules); this module only maps the optimizer's state to the kernels' arrays.

Scope: ALTO, ALTOVanilla, Lamb, EAdam, EAdamW, ESGD on plain (non-DTensor) dense contiguous float32, float64,
bfloat16 or float16 CPU tensors (state float32 for the last two, as on the core path), gradients of the
parameter's dtype. Anything else takes another path (see
``backends.torch.optimizer``). Tensors at different steps (some had no gradient at times) are stepped in
separate calls with their own scalars; tensors with no element need no kernel. The kernel cannot fail once
called (it is built, or the build fails, before anything is written), so a step is never half written.

The parity suite (``tests/torch/test_torch_fused_path.py``) checks parameters and every state buffer against the
core in float64 over 200+ steps for every optimizer, 0-d, 1-element and multi-block tensors included.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from backends.kernels import cpu
from backends.kernels.scalars import step_scalars
from backends.torch import _state

#: The kernel of each core factory (by name).
KERNELS = {
    "alto": "lamb_e1",
    "alto_vanilla": "lamb_e1",
    "lamb": "lamb_e0",
    "eadam": "adam_l2",
    "eadamw": "adam_decoupled",
    "esgd": "heavy_ball",
}
#: The optimizer state key of each kernel array (``grad`` and ``param`` are the tensors themselves).
STATE_KEYS = {
    "carry": "EState.carry",
    "first": "AdamState.first",
    "second": "AdamState.second",
    "momentum": "TraceState.momentum",
}
_BUFFER_KEYS = frozenset(STATE_KEYS.values())
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_FULL_PRECISION = (torch.float32, torch.float64)


def tensor_reason(p: torch.Tensor, g: torch.Tensor, buffers, low_precision: bool = True) -> Optional[str]:
    """None when the fused kernels can step ``p`` (gradient ``g``, state ``buffers``), else why not.

    ``low_precision``: whether bfloat16/float16 parameters (float32 state) are accepted.
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
    state_dtype = _state.state_dtype(p)
    for buffer in buffers:
        if buffer.dtype != state_dtype or not buffer.is_contiguous():
            return f"a state buffer is {buffer.dtype}{'' if buffer.is_contiguous() else ', non-contiguous'}"
    return None


def dtype_name(dtype: torch.dtype) -> str:
    """The kernels' name of a parameter dtype (float32, float64, bfloat16, float16)."""
    return _DTYPES[dtype]


def unsupported_reason(optimizer, group: Dict[str, Any], entries) -> Optional[str]:
    """None when the fused path can run this group, else why not (checked before anything is written)."""
    name = getattr(type(optimizer).factory, "__name__", "")
    if name not in KERNELS:
        return f"no fused kernel for valley_core.{name}"
    for p, g in entries:
        state = optimizer.state.get(p, {})
        reason = tensor_reason(p, g, [state[key] for key in _BUFFER_KEYS if key in state])
        if reason is not None:
            return reason
    if entries and not library_supports(entries):
        return "float16 kernels need a C++ compiler with _Float16"
    return None


def library_supports(entries) -> bool:
    """Whether the built kernels cover every dtype of ``entries`` (only float16 may be missing); True when the
    kernels cannot be built (that is reported where the build is attempted)."""
    if all(p.dtype != torch.float16 for p, _ in entries):
        return True
    try:
        return library().supports("float16")
    except cpu.KernelUnavailable:
        return True


def library() -> cpu.Library:
    """The built kernels (raises ``backends.kernels.cpu.KernelUnavailable``)."""
    return cpu.load()


def step_group(optimizer, group: Dict[str, Any], entries) -> None:
    """One step of a group on the fused path (state already initialised by the optimizer)."""
    lib = library()  # builds before anything is written; raises KernelUnavailable
    factory_name = type(optimizer).factory.__name__
    kernel = KERNELS[factory_name]
    roles = cpu.ROLES[kernel]
    hyperparameters = optimizer._factory_kwargs(group, 1)
    trust = bool(group.get("trust_ratio", True))
    threads = torch.get_num_threads()
    shared_keys = optimizer.shared_state_keys(group)
    # Tensors at different steps (some had no gradient at times) or of different dtypes in separate calls.
    batches: Dict[tuple, list] = {}
    for p, g in entries:
        if p.numel():
            state = optimizer.state[p]
            batches.setdefault((state["step"], p.dtype), []).append((p, g, state))
    lamb = kernel.startswith("lamb")
    for (step, dtype), items in batches.items():
        dtype_name = _DTYPES[dtype]
        # The core runs on float32 working copies of low-precision parameters, so k and the scalars are float32.
        compute = _state.state_dtype(items[0][0])
        scalars = step_scalars(factory_name, hyperparameters, step + 1, _DTYPES[compute])
        sizes = [p.numel() for p, _, _ in items]
        # Transient workspaces of the Lamb family (not optimizer state), freed after the step: r of the tensors
        # up to STORE_LIMIT_BYTES (larger ones recompute it), and the norms' block sums.
        capacity = cpu.STORE_LIMIT_BYTES // compute.itemsize if lamb else 0
        work = torch.empty(min(capacity, max(sizes)), dtype=compute)
        sums = torch.empty(2 * (-(-max(sizes) // cpu.BLOCK)) if lamb else 0, dtype=torch.float64)
        columns: List[List[int]] = []
        for role in roles:
            if role == "grad":
                columns.append([g.data_ptr() for _, g, _ in items])
            elif role == "param":
                columns.append([p.data_ptr() for p, _, _ in items])
            else:
                columns.append([state[STATE_KEYS[role]].data_ptr() for _, _, state in items])
        lib.run(
            kernel, dtype_name, columns, sizes, work.data_ptr(), work.numel(), sums.data_ptr(), scalars, trust, threads
        )
    _state.advance_counters(
        optimizer, shared_keys, [[state for _, _, state in items] for items in batches.values()], entries
    )
