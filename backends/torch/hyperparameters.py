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

A factory is an "E-optimizer" here when its own validation ties ``betas[0]`` to ``alpha`` by the paper's stability
rule ``|alpha| < 1/(1 - beta1)``: then ``betas[0]`` is the E adaptor's ``beta1`` (the core's convention for
``alto``, ``eadam``, ``esgd`` ...). Taking both ``alpha`` and ``betas`` is not enough: a user's chain such as
``my_eadam(lr, alpha, e_beta, betas=(b1, b2), eps)`` keeps its own keys (:func:`takes_e_betas`). The paper's
spelling ``betas=(b1, b2, b3)`` (``(b1, b2)`` for ESGD) is accepted wherever hyperparameters enter (constructor,
``add_param_group``, checkpoints of valley 0.1.0, which stored it) and stored in the torch keys above.

Torch-side group settings that are not the factory's arguments: ``state_dtype`` (``compact_state``) and
``maximize`` (the gradient is negated once, where the step reads it: see ``backends.kernels.plan.derive``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

import torch

from backends.torch.compact_state import FLOAT32
from valley_core.validation import check_betas

_MASKS = ("weight_decay_mask", "trust_ratio_mask")
E_BETA = "e_beta"
#: Group settings of the torch adapter that are not arguments of the factory.
TORCH_SETTINGS = {"state_dtype": FLOAT32.name, "maximize": False}
_DEFAULTS: Dict[Any, Dict[str, Any]] = {}
_MOMENT_KEYS: Dict[Any, Optional[str]] = {}


def takes_e_betas(factory: Callable[..., Any]) -> bool:
    """Whether ``betas[0]`` of ``factory`` is the E adaptor's ``beta1`` (the core's convention for E-optimizers).

    Decided by the factory's own validation, not by its parameter names: with ``alpha=1`` it must accept
    ``betas[0]=0.5`` (bound 2) and refuse ``betas[0]=0`` (bound 1) by the stability rule
    ``|alpha| < 1/(1 - beta1)``, which ties E's ``beta1`` to ``alpha`` and nothing else. A factory that does not
    run that rule on ``betas[0]`` (a user's chain whose E coefficient is a separate argument) keeps its keys.
    """
    parameters = inspect.signature(factory).parameters
    if "alpha" not in parameters or "betas" not in parameters:
        return False
    default = parameters["betas"].default
    if not (isinstance(default, tuple) and len(default) >= 2):
        return False

    def accepts(beta1: float) -> bool:
        try:
            factory(alpha=1.0, betas=(beta1, *default[1:]))
        except Exception:  # noqa: BLE001 - any refusal counts: the probe asks only whether the factory accepts
            return False
        return True

    return accepts(0.5) and not accepts(0.0)


def moment_key(factory: Callable[..., Any]) -> Optional[str]:
    """``"betas"`` or ``"momentum"``: the torch key of an E-optimizer's moment coefficients (None otherwise)."""
    if factory not in _MOMENT_KEYS:
        key = None
        if takes_e_betas(factory):
            default = inspect.signature(factory).parameters["betas"].default
            key = "momentum" if len(default) == 2 else "betas"
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
        defaults.update(TORCH_SETTINGS)  # torch-side settings: the state's storage (compact_state.py), maximize
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
ADDED_AFTER_0_1_0 = {"zero_norm_ratio": None, "state_dtype": FLOAT32.name, "maximize": False}


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


def factory_kwargs(
    factory: Callable[..., Any], group: Dict[str, Any], count: int, keep_tensors: bool = False
) -> Dict[str, Any]:
    """The factory's keyword arguments for a param group of ``count`` tensors: the one mapping from torch group
    keys to core hyperparameters (the core path, the plans and their per-step scalars all use it).

    ``keep_tensors``: a tensor hyperparameter is passed as the tensor itself (0-d, the core accepts those), not
    the float it holds now: for a core chain that a compiled step holds, so that an LR scheduler's in-place
    updates reach it."""
    names = _DEFAULTS.get(factory) or hyperparameter_defaults(factory)
    key = moment_key(factory)
    # Torch-side keys; ``e_beta`` only where it was made from an E-optimizer's betas (a user's factory may take
    # an argument of that name itself).
    torch_side = {"trust_ratio", *TORCH_SETTINGS, *((E_BETA,) if key is not None else ())}
    kwargs = {name: _host_value(name, group[name], keep_tensors) for name in names if name not in torch_side}
    if "trust_ratio" in names:
        kwargs["trust_ratio_mask"] = (group.get("trust_ratio", True),) * count
    if key is not None:
        moments = kwargs.pop(key)
        moments = tuple(moments) if key == "betas" and isinstance(moments, (tuple, list)) else (moments,)
        kwargs["betas"] = (group[E_BETA], *moments)
    return kwargs


def check_tensor(name: str, value: Any) -> None:
    """A tensor hyperparameter must hold one element (torch's rule and wording, ``"Tensor lr must be 1-element"``).

    Raises:
        ValueError: for a tensor of any other size.
    """
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"Tensor {name} must be 1-element (got shape {tuple(value.shape)})")


def _host_value(name: str, value: Any, keep_tensors: bool = False) -> Any:
    """A one-element tensor hyperparameter (``lr=torch.tensor(1e-2)``) as the float it holds now (one host read
    per step on an accelerator), or as a 0-d view of it (``keep_tensors``); everything else as it is."""
    check_tensor(name, value)
    if isinstance(value, torch.Tensor) and keep_tensors:
        return value.reshape(())
    if isinstance(value, torch.Tensor) and not value.requires_grad:
        return value.item()
    return value


class _Source(str):
    """An expression that reads a hyperparameter from a param group (``group["betas"][0]``)."""


def hyperparameter_sources(factory: Callable[..., Any], group: Dict[str, Any], paths) -> Dict[str, str]:
    """For each ``(symbol, path)`` of a plan's hyperparameters (``("h_betas_1", "betas.1")``: a path into the
    factory's arguments), the Python expression that reads its value from ``group`` at run time.

    Derived through :func:`factory_kwargs` (the one mapping between group keys and factory arguments) applied to
    a group whose numbers are replaced by their expressions, so a compiled step reads every value from the group
    when it runs (a tensor ``lr`` stays a tensor) instead of holding the values it was traced with.
    """
    marked: Dict[str, Any] = {}
    for key, value in group.items():
        if isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
            marked[key] = tuple(_Source(f"group[{key!r}][{i}]") for i in range(len(value)))
        elif _is_number(value):
            marked[key] = _Source(f"group[{key!r}]")
        else:
            marked[key] = value
    kwargs = factory_kwargs(factory, marked, 1)
    sources = {}
    for symbol, path in paths:
        name, _, index = path.partition(".")
        value = kwargs[name][int(index)] if index else kwargs[name]
        sources[symbol] = value if isinstance(value, _Source) else repr(float(value))
    return sources


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or isinstance(value, torch.Tensor)


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


#: torch.optim's implementation flags, and what a valley optimizer offers instead (``implementation=``).
TORCH_FLAGS = {
    "foreach": "implementation= picks the multi-tensor kernels ('fused': generated C++ on the CPU, 'compiled': "
    "torch.compile of the plan, 'auto': the first that runs)",
    "fused": "use implementation='fused' (generated C++ kernels, CPU) or implementation='auto'",
    "capturable": "compile the step instead: torch.compile(optimizer.step) keeps the step count and the per-step "
    "scalars on the device (implementation='auto' or 'compiled')",
    "differentiable": "differentiate through the core's functional update instead (valley_core's factory: "
    "transform.update on torch tensors, implementation='core' computes the same)",
}


def refuse_torch_flags(owner: str, kwargs: Dict[str, Any]) -> None:
    """Removes torch.optim's ``foreach``/``fused``/``capturable``/``differentiable`` from ``kwargs``: ``None`` and
    ``False`` (torch's defaults) are accepted and mean nothing here; anything else raises.

    Raises:
        ValueError: one line naming the flag and what to use instead.
    """
    for flag, instead in TORCH_FLAGS.items():
        if flag in kwargs:
            value = kwargs.pop(flag)
            if value is not None and value is not False:
                raise ValueError(f"{owner}({flag}={value!r}) is not supported: {instead}")
