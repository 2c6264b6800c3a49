"""The one mapping between a torch optimizer's param-group keys and its ``valley_core`` factory's arguments.

torch conventions decide the group keys; the core's conventions decide the factory's arguments:

===========================  ===================================  =====================================
core factory argument        torch group key(s)                   why
===========================  ===================================  =====================================
``betas=(b1, b2, b3)``       ``e_beta=b1``, ``betas=(b2, b3)``    torch's ``OneCycleLR``/``CyclicLR``
(E-optimizers with m and v)                                       cycle ``betas[0]`` as the first-moment
                                                                  coefficient (as for ``torch.optim.Adam``)
``betas=(b1, b2)`` (ESGD)    ``e_beta=b1``, ``momentum=b2``       ... and ``momentum`` for SGD-like ones
``weight_decay_mask``,       ``trust_ratio`` (bool per group);    a mask per tensor becomes a setting per
``trust_ratio_mask``         ``weight_decay=0`` in a group        group (``lamb_param_groups``)
a 0-d tensor (``lr``)        read as a float at each step          torch accepts tensor learning rates
===========================  ===================================  =====================================

A factory is an "E-optimizer" here when it takes both ``alpha`` and ``betas`` (the core's convention puts the
E adaptor's ``beta1`` first in ``betas``). The paper's spelling ``betas=(b1, b2, b3)`` (``(b1, b2)`` for ESGD)
is accepted wherever hyperparameters enter (constructor, ``add_param_group``, checkpoints of valley 0.1.0,
which stored it) and stored in the torch keys above.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

import torch

from valley_core.validation import check_betas

_MASKS = ("weight_decay_mask", "trust_ratio_mask")
E_BETA = "e_beta"
_DEFAULTS: Dict[Any, Dict[str, Any]] = {}
_MOMENT_KEYS: Dict[Any, Optional[str]] = {}


def moment_key(factory: Callable[..., Any]) -> Optional[str]:
    """``"betas"`` or ``"momentum"``: the torch key of an E-optimizer's moment coefficients (None otherwise)."""
    if factory not in _MOMENT_KEYS:
        parameters = inspect.signature(factory).parameters
        key = None
        if "alpha" in parameters and "betas" in parameters:
            default = parameters["betas"].default
            key = "momentum" if isinstance(default, tuple) and len(default) == 2 else "betas"
        _MOMENT_KEYS[factory] = key
    return _MOMENT_KEYS[factory]


def hyperparameter_defaults(factory: Callable[..., Any]) -> Dict[str, Any]:
    """The torch hyperparameters of ``factory`` with their defaults, in the factory's order.

    The masks become the group switch ``trust_ratio`` (True); an E-optimizer's ``betas`` become ``betas``
    (or ``momentum``) for the moments, and ``e_beta``, last, for the E adaptor.
    """
    if factory not in _DEFAULTS:
        parameters = inspect.signature(factory).parameters
        key = moment_key(factory)
        defaults: Dict[str, Any] = {}
        for name, p in parameters.items():
            if name in _MASKS:
                continue
            if name == "betas" and key is not None:
                _, *moments = p.default
                defaults[key] = tuple(moments) if key == "betas" else moments[0]
            else:
                defaults[name] = p.default
        if "trust_ratio_mask" in parameters:
            defaults["trust_ratio"] = True
        if key is not None:
            defaults[E_BETA] = parameters["betas"].default[0]
        defaults["state_dtype"] = "float32"  # a torch-side setting: the storage of the state (compact_state.py)
        _DEFAULTS[factory] = defaults
    return dict(_DEFAULTS[factory])


def to_torch_keys(factory: Callable[..., Any], values: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``values`` with an E-optimizer's betas in the paper's order (``(b1, b2, b3)``; ``(b1, b2)`` for ESGD)
    stored in the torch keys. Other entries are returned as they are.

    Raises:
        ValueError: ``betas`` of neither form (the core's validator names the rule).
        TypeError: E's coefficient given twice (``betas`` in the paper's order and ``e_beta``).
    """
    key = moment_key(factory)
    if key is None or "betas" not in values:
        return dict(values)
    betas = values["betas"]
    if key == "betas" and not (isinstance(betas, (tuple, list)) and len(betas) == 3):
        check_betas(betas, ("beta2", "beta3"))  # torch's (beta2, beta3), or a ValueError naming the rule
        return dict(values)
    e_beta, *moments = check_betas(betas, ("beta1", "beta2", "beta3") if key == "betas" else ("beta1", "beta2"))
    if E_BETA in values or (key == "momentum" and "momentum" in values):
        raise TypeError(
            f"{where}: betas={tuple(betas)!r} in the paper's order already holds the E adaptor's coefficient; "
            f"give either it or {E_BETA}" + (" and momentum" if key == "momentum" else "")
        )
    converted = {name: value for name, value in values.items() if name != "betas"}
    converted[E_BETA] = e_beta
    converted[key] = tuple(moments) if key == "betas" else moments[0]
    return converted


#: Hyperparameters added after valley 0.1.0, with the value that reproduces 0.1.0's behaviour: a checkpoint
#: group without them is a 0.1.0 group and gets these (``None``: the paper's trust ratio everywhere, as 0.1.0).
ADDED_AFTER_0_1_0 = {"zero_norm_ratio": None, "state_dtype": "float32"}


def checkpoint_group(factory: Callable[..., Any], group: Dict[str, Any], where: str) -> Dict[str, Any]:
    """A saved param group in this release's torch keys: the paper-order ``betas`` of valley 0.1.0 converted
    (:func:`to_torch_keys`) and the hyperparameters added since 0.1.0 set to 0.1.0's behaviour. Nothing else is
    filled in: a group that lacks any other hyperparameter is refused by the caller."""
    converted = to_torch_keys(factory, group, where)
    defaults = hyperparameter_defaults(factory)
    for name, old_value in ADDED_AFTER_0_1_0.items():
        if name in defaults and name not in converted:
            converted[name] = old_value
    return converted


def factory_kwargs(factory: Callable[..., Any], group: Dict[str, Any], count: int) -> Dict[str, Any]:
    """The factory's keyword arguments for a param group of ``count`` tensors: the one mapping from torch group
    keys to core hyperparameters (the core path, the plans and their per-step scalars all use it)."""
    names = _DEFAULTS.get(factory) or hyperparameter_defaults(factory)
    kwargs = {name: _host_value(group[name]) for name in names if name not in ("trust_ratio", E_BETA, "state_dtype")}
    if "trust_ratio" in names:
        kwargs["trust_ratio_mask"] = (group.get("trust_ratio", True),) * count
    key = moment_key(factory)
    if key is not None:
        moments = kwargs.pop(key)
        moments = tuple(moments) if key == "betas" and isinstance(moments, (tuple, list)) else (moments,)
        kwargs["betas"] = (group[E_BETA], *moments)
    return kwargs


def _host_value(value: Any) -> Any:
    """A 0-d tensor hyperparameter (``lr=torch.tensor(1e-2)``) as the float it holds now (one host read per
    step on an accelerator); everything else as it is."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad:
        return value.item()
    return value


def signature(factory: Callable[..., Any]) -> inspect.Signature:
    """``(params, <hyperparameters with defaults>, *, implementation='auto', skip_nonfinite=False)``: what IDEs,
    ``inspect`` and LightningCLI see for a torch optimizer class of ``factory``."""
    Parameter = inspect.Parameter
    parameters = [Parameter("params", Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        Parameter(name, Parameter.POSITIONAL_OR_KEYWORD, default=value)
        for name, value in hyperparameter_defaults(factory).items()
    ]
    parameters += [
        Parameter("implementation", Parameter.KEYWORD_ONLY, default="auto"),
        Parameter("skip_nonfinite", Parameter.KEYWORD_ONLY, default=False),
    ]
    return inspect.Signature(parameters)
