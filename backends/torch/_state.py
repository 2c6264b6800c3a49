"""Helpers shared by the torch adapters: the array namespace, state dtypes, and per-tensor state keys.

The core names every state array ``"<StateClass>.<field>.<i>"`` (per tensor) or ``"<StateClass>.<field>"``
(shared scalars such as step counts), see ``valley_core.serialization``. The torch adapters keep the state
of each parameter under the per-tensor name without its index (``"AdamState.first"``), plus the shared
scalars, in ``optimizer.state[p]`` (the usual torch layout), and rebuild the core's state tuple from those
entries at every step.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import valley_core as vc

#: Floating dtypes whose optimizer state is kept in float32.
LOW_PRECISION = (torch.float16, torch.bfloat16)

_PER_TENSOR = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)$")


def namespace() -> Any:
    """The array-API namespace of torch (``array_api_compat.torch``)."""
    import array_api_compat.torch as xp

    return xp


def split_key(key: str) -> Tuple[str, Optional[int]]:
    """``"AdamState.first.3" -> ("AdamState.first", 3)``; ``"AdamState.count" -> ("AdamState.count", None)``.

    Field names are Python identifiers, so a key that ends in ``.<digits>`` is always a per-tensor entry.
    """
    match = _PER_TENSOR.match(key)
    if match is None:
        return key, None
    return match.group("base"), int(match.group("index"))


#: The dtype of ``state["step"]``: the core's counters are int32.
STEP_DTYPE = torch.int32


def step_tensor(steps: int, current: Any = None) -> torch.Tensor:
    """``state["step"]`` holding ``steps``: ``current`` written in place when it is a tensor (so that a compiled
    step, which holds it, sees the new count), else a new 0-d int32 CPU tensor (torch's own optimizers keep their
    step on the CPU unless they are compiled or capturable)."""
    if isinstance(current, torch.Tensor):
        return current.fill_(steps)
    return torch.tensor(steps, dtype=STEP_DTYPE)


def steps_taken(state: Dict[str, Any]) -> int:
    """``state["step"]`` as an int (a 0-d tensor, or an int in states written before steps were tensors)."""
    return int(state["step"])


def advance(states, key: str = "step") -> None:
    """Adds one to the step count ``key`` of every state in ``states`` (one call for all of them)."""
    steps = [state[key] for state in states]
    tensors = [step for step in steps if isinstance(step, torch.Tensor)]
    if tensors:
        torch._foreach_add_(tensors, 1)
    for state in states:
        if not isinstance(state[key], torch.Tensor):
            state[key] = step_tensor(state[key] + 1)


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """float32 for bfloat16/float16 parameters, the parameter's dtype otherwise."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def working_copy(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` itself when it already has ``dtype``, else a converted copy."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def is_dtensor(tensor: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (FSDP2 parameters)."""
    try:
        from torch.distributed.tensor import DTensor
    except Exception:  # pragma: no cover - torch without distributed
        return False
    return isinstance(tensor, DTensor)


def meta_like(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A meta tensor with ``tensor``'s (global) shape: a template that allocates nothing."""
    return torch.empty(tuple(tensor.shape), dtype=dtype, device="meta")


def check_dense_float(
    optimizer_name: str, group_index: int, param_index: int, param: torch.Tensor, grad: torch.Tensor
) -> None:
    """Raises a clear error for sparse gradients and non-floating or complex parameters."""
    where = f"param group {group_index}, parameter {param_index} (shape {tuple(param.shape)})"
    if grad.is_sparse or grad.layout != torch.strided:
        raise RuntimeError(
            f"{optimizer_name} does not support sparse gradients ({where} has a {grad.layout} gradient); "
            "use dense gradients (for example nn.Embedding(..., sparse=False)) or torch.optim.SparseAdam"
        )
    if param.is_complex() or not param.is_floating_point():
        raise TypeError(
            f"{optimizer_name} optimizes real floating-point parameters only; {where} has dtype "
            f"{param.dtype} (for complex parameters optimize torch.view_as_real(p))"
        )
    if tuple(grad.shape) != tuple(param.shape):
        raise ValueError(f"{optimizer_name}: the gradient of {where} has shape {tuple(grad.shape)}")


def all_finite(grads) -> bool:
    """True when every gradient is free of NaN and Inf (one host synchronisation for all tensors)."""
    flags = []
    for grad in grads:
        flag = torch.isfinite(grad).all()
        if is_dtensor(flag):
            flag = flag.full_tensor()  # type: ignore[attr-defined]  # a DTensor
        flags.append(flag.reshape(1))
    if not flags:
        return True
    return bool(torch.cat([f.to("cpu") for f in flags]).all())


def core_update(
    transform: Any, grads: tuple, params: Any, read: Callable[[int, str], Any], counter: Any, xp: Any, template=None
):
    """The core executor's update of tensors at the same step (the classes' eager and traced core steps, ``E``'s):
    the core chain's state made from tensor ``i``'s buffers ``read(i, key)`` (``key`` the core's name without its
    index) and ``counter`` for every step counter (``template``: ``transform.init`` of such tensors, or None);
    returns the updates and, per tensor, its new buffers by key."""
    if template is None:
        template = transform.init(tuple(meta_like(g, g.dtype) for g in grads), xp=xp)
    flat = {}
    for key in vc.state_to_dict(template):
        base, index = split_key(key)
        flat[key] = counter if index is None else read(index, base)
    updates, new_state = transform.update(grads, vc.state_from_dict(template, flat), params, xp=xp)
    return updates, per_tensor_entries(vc.state_to_dict(new_state), len(grads))[0]


def per_tensor_entries(flat: Dict[str, Any], count: int) -> Tuple[list, Dict[str, Any]]:
    """Splits a flat core state over ``count`` tensors into per-tensor dicts and the shared scalars."""
    per_tensor: List[Dict[str, Any]] = [dict() for _ in range(count)]
    shared: Dict[str, Any] = {}
    for key, value in flat.items():
        base, index = split_key(key)
        if index is None:
            shared[key] = value
        else:
            per_tensor[index][base] = value
    return per_tensor, shared


class _ReplicatedNorms:
    """``linalg`` of :class:`DTensorNamespace`: norms of DTensors come back replicated on every rank."""

    def __init__(self, base: Any) -> None:
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def vector_norm(self, x: Any, **kwargs: Any) -> Any:
        norm = self._base.vector_norm(x, **kwargs)
        if is_dtensor(norm):
            from torch.distributed.tensor import Replicate

            # A norm of a sharded tensor is a Partial placement; redistributing it all-reduces the shards'
            # contributions, so every rank holds the norm of the FULL tensor.
            norm = norm.redistribute(norm.device_mesh, [Replicate()] * norm.device_mesh.ndim)
        return norm


class DTensorNamespace:
    """``array_api_compat.torch`` with full-tensor norms for DTensors (FSDP2 parameters).

    Passed as ``xp=`` to the core (the core's documented way to run on a namespace it does not resolve
    itself), so that ``valley_core.reductions.l2_norm`` of a sharded parameter is the norm of the whole
    parameter, as the trust ratio requires, and not of the local shard.
    """

    def __init__(self) -> None:
        self._base = namespace()
        self.linalg = _ReplicatedNorms(self._base.linalg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def namespace_for(tensors) -> Any:
    """:class:`DTensorNamespace` when any tensor is a DTensor, ``array_api_compat.torch`` otherwise."""
    return DTensorNamespace() if any(is_dtensor(t) for t in tensors) else namespace()


def parameter_list(owner: str, params: Any) -> list:
    """A param group's parameters as a list; refuses the same tensor listed twice (whose two updates would be
    applied to one storage: the executors would disagree, and the state would count two steps as one)."""
    if isinstance(params, torch.Tensor):
        params = [params]
    elif isinstance(params, set):
        raise TypeError(f"{owner}: optimizer parameters must be an ordered collection (a list), not a set")
    else:
        params = list(params)
    seen: Dict[int, int] = {}
    for index, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(
                f"{owner}: parameter {index} (shape {tuple(p.shape)}) is the same tensor as parameter {seen[id(p)]}; "
                "list each parameter once"
            )
        seen[id(p)] = index
    return params
