"""Param groups for the usual Lamb/ALTO practice: no weight decay (and, by choice, no trust ratio) for
biases and normalization layers.

The paper applies weight decay and the trust ratio to every tensor. Common practice (and the authors'
``create_ALTO_optimizer``) excludes biases and normalization parameters from weight decay; the authors' code
then also skips the trust ratio for them, because it applies the trust ratio only when ``weight_decay != 0``.
Here both are explicit per-group settings.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Dict, List, Sequence, Tuple, Type

import torch
from torch import nn

#: Module types whose parameters are "normalization" parameters.
NORM_TYPES: Tuple[Type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
        nn.LocalResponseNorm,
    )
    if t is not None
)


def is_no_decay(
    module_name: str,
    module: nn.Module,
    param_name: str,
    *,
    norm_types: Sequence[type] = NORM_TYPES,
    name_patterns: Sequence[str] = ("*bias",),
) -> bool:
    """True for parameters of normalization modules and for names that match a pattern (``fnmatch``)."""
    full_name = f"{module_name}.{param_name}" if module_name else param_name
    if isinstance(module, tuple(norm_types)):
        return True
    return any(fnmatch.fnmatchcase(full_name, pattern) for pattern in name_patterns)


def split_parameters(
    model: nn.Module, *, norm_types: Sequence[type] = NORM_TYPES, name_patterns: Sequence[str] = ("*bias",)
) -> Tuple[List[Tuple[str, torch.Tensor]], List[Tuple[str, torch.Tensor]]]:
    """``(decay, no_decay)`` lists of ``(name, parameter)`` for the trainable parameters of ``model``.

    A parameter shared by several modules is listed once (where ``named_modules`` first meets it).
    """
    decay: List[Tuple[str, torch.Tensor]] = []
    no_decay: List[Tuple[str, torch.Tensor]] = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            target = (
                no_decay
                if is_no_decay(module_name, module, param_name, norm_types=norm_types, name_patterns=name_patterns)
                else decay
            )
            target.append((full_name, param))
    return decay, no_decay


def lamb_param_groups(
    model: nn.Module,
    weight_decay: float = 1e-4,
    *,
    trust_ratio_for_no_decay: bool = False,
    norm_types: Sequence[type] = NORM_TYPES,
    name_patterns: Sequence[str] = ("*bias",),
    **group_options: Any,
) -> List[Dict[str, Any]]:
    """Two param groups: decayed weights (trust ratio on) and biases/norms (no decay, trust ratio switchable).

    Args:
        model: the module whose trainable parameters are split.
        weight_decay: decay of the first group (the second gets 0).
        trust_ratio_for_no_decay: the ``trust_ratio`` switch of the second group. False (default) matches the
            authors' code; True matches the paper (trust ratio on every tensor).
        norm_types: module types whose parameters get no decay (BatchNorm/InstanceNorm, LayerNorm, GroupNorm,
            RMSNorm by default).
        name_patterns: ``fnmatch`` patterns on the full parameter name that get no decay (``"*bias"``).
        **group_options: other hyperparameters copied into both groups (``lr=...``).

    Returns:
        A list for any optimizer of ``backends.torch`` (or ``torch.optim``: ``trust_ratio`` is an extra key
        that torch optimizers keep but ignore). Empty groups are left out.

    Example:
        >>> import torch
        >>> from backends.torch import ALTO, lamb_param_groups
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> groups = lamb_param_groups(model, weight_decay=1e-2)
        >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
        ([1, 3], [0.01, 0.0])
        >>> optimizer = ALTO(groups, lr=1e-3)
    """
    decay, no_decay = split_parameters(model, norm_types=norm_types, name_patterns=name_patterns)
    groups = []
    if decay:
        groups.append(
            {"params": [p for _, p in decay], "weight_decay": weight_decay, "trust_ratio": True, **group_options}
        )
    if no_decay:
        groups.append(
            {
                "params": [p for _, p in no_decay],
                "weight_decay": 0.0,
                "trust_ratio": trust_ratio_for_no_decay,
                **group_options,
            }
        )
    return groups


def core_masks(
    model: nn.Module,
    *,
    trust_ratio_for_no_decay: bool = False,
    norm_types: Sequence[type] = NORM_TYPES,
    name_patterns: Sequence[str] = ("*bias",),
) -> Dict[str, Tuple[bool, ...]]:
    """The same split as ``valley_core`` masks, in ``model.parameters()`` order.

    Returns ``{"weight_decay_mask": ..., "trust_ratio_mask": ...}`` for ``valley_core.alto(**masks)``.
    """
    _, no_decay = split_parameters(model, norm_types=norm_types, name_patterns=name_patterns)
    excluded = {id(p) for _, p in no_decay}
    params = [p for p in model.parameters() if p.requires_grad]
    decay_mask = tuple(id(p) not in excluded for p in params)
    trust_mask = tuple(True if d else trust_ratio_for_no_decay for d in decay_mask)
    return {"weight_decay_mask": decay_mask, "trust_ratio_mask": trust_mask}
