"""The compiled fast path of ALTO, ALTOVanilla and Lamb: ``torch.compile`` of the core's element-wise maths.

Nothing here defines an update rule. Two kernels are compiled from ``valley_core`` functions:

- ``first_pass``: ``valley_core.elementwise.alto_direction`` (or, for Lamb, ``adam_moments`` ->
  ``adam_direction`` -> ``add_decay``), writing the new carry/m/v in place into the state buffers and ``r``
  into a workspace, and the two norms ``||theta||``, ``||r||`` (``valley_core.reductions.l2_norm``), all in
  the same loop;
- ``second_pass``: ``r`` scaled by the trust ratio (``valley_core.reductions.trust_ratio``, computed between
  the passes) and by ``-lr`` (``elementwise.scale``), added to ``theta`` in place.

So a step reads g, carry, m, v, theta and writes carry, m, v, r (first pass), then reads r, theta and writes
theta (second pass): no host synchronisation, the divisions and square roots are computed once, and the
state stays at three buffers. The workspace for ``r`` is ONE transient buffer per param group, the size of
the group's largest tensor, freed after the step (it is not optimizer state). Each
kernel is compiled once per dtype with dynamic shapes (tensors are passed as flat 1-D views), and the
hyperparameters are passed as Python floats, which torch.compile treats as graph inputs (no recompilation
when an LR scheduler changes ``lr``). Bias corrections are computed on the host by
``valley_core.elementwise.bias_corrections`` from the Python step count.

Scope: plain (non-DTensor) dense contiguous float32/float64 tensors, all on one device. Anything else
(DTensor, bfloat16/float16, non-contiguous, other optimizers) takes the core path. The parity suite
(``tests/torch/test_torch_fast_path.py``) checks parameters and every state buffer against the core in
float64 over 200+ steps.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

import valley_core as vc
from backends.torch import _state
from valley_core import elementwise, reductions
from valley_core.schedules import evaluate

#: Factories with a compiled kernel, and whether their chain starts with the E adaptor.
_HAS_E = {vc.alto: True, vc.alto_vanilla: True, vc.lamb: False}
_FLOATS = (torch.float32, torch.float64)
_compiled: Dict[str, Any] = {}


def first_pass(grad, carry, first, second, param, workspace, alpha: float, beta1: float, beta2: float,
               beta3: float, eps: float, correction2: float, correction3: float, weight_decay: float, has_e: bool):
    """The element-wise part of the step; writes carry, m, v and ``r`` (into ``workspace``) in place.

    Returns ``(||theta||, ||r||)``.
    """
    xp = _state.namespace()
    if has_e:
        direction, new_carry, new_first, new_second = elementwise.alto_direction(
            grad, carry, first, second, param, alpha=alpha, beta1=beta1, beta2=beta2, beta3=beta3, eps=eps,
            correction2=correction2, correction3=correction3, weight_decay=weight_decay, xp=xp)
        carry.copy_(new_carry)
    else:
        new_first, new_second = elementwise.adam_moments(grad, first, second, beta2, beta3)
        direction = elementwise.add_decay(
            elementwise.adam_direction(new_first, new_second, eps, correction2, correction3, xp), param,
            weight_decay)
    first.copy_(new_first)
    second.copy_(new_second)
    workspace.copy_(direction)
    return reductions.l2_norm(param, xp), reductions.l2_norm(direction, xp)


def second_pass(direction, param, ratio, lr: float):
    """``theta <- theta + (-lr) * (ratio * r)`` in place (``r`` from the first pass's workspace)."""
    update = elementwise.scale(elementwise.scale(direction, ratio), -lr)
    param.copy_(param + update)


def _placeholder(like: torch.Tensor) -> torch.Tensor:
    """An unused stand-in for the carry of optimizers without the E adaptor (Lamb)."""
    key = ("placeholder", like.dtype, like.device)
    if key not in _compiled:
        _compiled[key] = torch.zeros(2, dtype=like.dtype, device=like.device)
    return _compiled[key]


def _kernels():
    if not _compiled:
        _compiled["first"] = torch.compile(first_pass, dynamic=True, fullgraph=True)
        _compiled["second"] = torch.compile(second_pass, dynamic=True, fullgraph=True)
    return _compiled["first"], _compiled["second"]


def unsupported_reason(optimizer, group: Dict[str, Any], entries) -> Optional[str]:
    """None when the compiled path can run this group, else why not."""
    factory = type(optimizer).factory
    if factory not in _HAS_E:
        return f"no compiled kernel for valley_core.{getattr(factory, '__name__', factory)}"
    device = None
    for p, g in entries:
        if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(g) is not torch.Tensor:
            return "tensor subclasses (DTensor ...) use the core path"
        if p.dtype not in _FLOATS or g.dtype != p.dtype:
            return f"dtype {p.dtype} (grad {g.dtype}): the compiled path handles float32/float64"
        if not (p.is_contiguous() and g.is_contiguous()):
            return "non-contiguous parameter or gradient"
        if device is None:
            device = p.device
        elif p.device != device:
            return "parameters on several devices"
    return None


def ensure_compiled(optimizer, group: Dict[str, Any], entries) -> Optional[str]:
    """Compiles (on tiny tensors of the group's dtype and device) before the first real step.

    Returns None on success, else the error as text: a failed compilation must not leave a half-written
    step, so it is found out here, on throw-away tensors.
    """
    key = ("ok", entries[0][0].dtype, entries[0][0].device.type, _HAS_E[type(optimizer).factory])
    if key in _compiled:
        return None
    first, second = _kernels()
    p = entries[0][0]
    try:
        tensors = [torch.ones(8, dtype=p.dtype, device=p.device) for _ in range(6)]
        if not _HAS_E[type(optimizer).factory]:
            tensors[1] = _placeholder(p)
        norms = first(*tensors, 0.5, 0.5, 0.9, 0.99, 1e-6, 0.1, 0.01, 1e-4, _HAS_E[type(optimizer).factory])
        ratio = reductions.trust_ratio(norms[0], norms[1], 1e-6, 1e-10)
        second(tensors[5], tensors[4], ratio, 1e-3)
    except Exception as error:  # noqa: BLE001 - reported to the caller, who falls back to the core
        return f"torch.compile failed: {type(error).__name__}: {error}"
    _compiled[key] = True
    return None


def step_group(optimizer, group: Dict[str, Any], entries) -> None:
    """One step of a group on the compiled path (state already initialised by the optimizer)."""
    first, second = _kernels()
    has_e = _HAS_E[type(optimizer).factory]
    transform_args = optimizer._factory_kwargs(group, 1)
    beta1, beta2, beta3 = (group["betas"] if has_e else (0.0, *group["betas"]))
    bias_correction = transform_args.get("bias_correction", type(optimizer).factory is not vc.alto_vanilla)
    use_trust = bool(group.get("trust_ratio", True))
    eps, trust_eps, norm_eps = float(group["eps"]), float(group["trust_eps"]), float(group["norm_eps"])
    counters = []
    shared_keys = optimizer.shared_state_keys(group)
    cache: Dict[int, tuple] = {}
    # Transient workspace for r: one buffer the size of the group's largest tensor, freed after the step.
    workspace = torch.empty(max(p.numel() for p, _ in entries), dtype=entries[0][0].dtype,
                            device=entries[0][0].device)
    for p, g in entries:
        state = optimizer.state[p]
        step = state["step"]
        if step not in cache:
            k = step + 1
            correction2, correction3 = elementwise.bias_corrections(beta2, beta3, float(k), bias_correction)
            cache[step] = (float(correction2), float(correction3), float(evaluate(group["lr"], float(k))),
                           float(evaluate(group.get("alpha", 0.0), float(k))),
                           float(evaluate(group["weight_decay"], float(k))))
        correction2, correction3, lr, alpha, weight_decay = cache[step]
        flat_p = p.detach().view(-1)
        first_buffer = state["AdamState.first"].view(-1)
        second_buffer = state["AdamState.second"].view(-1)
        carry = state["EState.carry"].view(-1) if has_e else _placeholder(p)
        direction = workspace[:flat_p.numel()]
        param_norm, update_norm = first(g.view(-1), carry, first_buffer, second_buffer, flat_p, direction, alpha,
                                        beta1, beta2, beta3, eps, correction2, correction3, weight_decay, has_e)
        if use_trust:
            ratio = reductions.trust_ratio(param_norm, update_norm, trust_eps, norm_eps)
        else:
            ratio = torch.ones((), dtype=p.dtype, device=p.device)
        second(direction, flat_p, ratio, lr)
        # The core's step counters, by name: the buffers of a 0-d parameter are 0-d tensors too.
        for key in shared_keys:
            counters.append((state, key, state[key]))
        state["step"] = step + 1
    if counters:
        incremented = torch._foreach_add([value for _, _, value in counters], 1)
        for (state, key, _), value in zip(counters, incremented):
            state[key] = value
