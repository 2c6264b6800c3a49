"""The one list of named optimizers: each factory with the names the rest of the project knows it by.

Backends, the CLI, the study and ``proofs_check`` iterate over ``REGISTRY`` (or look a record up with
``info_for``) instead of keeping their own lists of names. Adding an optimizer means adding its factory to
``valley_core.optimizers`` and one record here.

    >>> import valley_core as vc
    >>> info = vc.info_for(vc.alto)
    >>> info.display_name, info.class_name, vc.REGISTRY[info.base].display_name
    ('ALTO', 'ALTO', 'Lamb')
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Union

from valley_core import optimizers as _o
from valley_core.base import GradientTransformation


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    """One named optimizer.

    Attributes:
        name: the factory's name (``"alto"``), the key of ``REGISTRY`` and ``OPTIMIZERS``.
        factory: the core factory (``valley_core.alto``).
        display_name: how reports, the CLI and the study's arms name it (``"ALTO"``).
        class_name: its class in ``backends.torch`` / ``backends.keras`` / ``backends.cupy`` (``"ALTO"``); for
            a base valley has no class of, the framework's built-in (``torch.optim.AdamW``).
        base: for an E-optimizer, the ``name`` of the optimizer it is at ``alpha = 0`` (``"lamb"``); ``None``
            for a base.
        base_options: the base's arguments that make ``alpha = 0`` equal to it (``alto_vanilla`` is
            ``lamb(bias_correction=False)``); the E-optimizer's ``betas[1:]`` are the base's ``betas`` (SGD's
            ``momentum``).
    """

    name: str
    factory: Callable[..., GradientTransformation]
    display_name: str
    class_name: str
    base: Optional[str] = None
    base_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


_RECORDS = (
    OptimizerInfo("alto", _o.alto, "ALTO", "ALTO", "lamb"),
    OptimizerInfo("alto_vanilla", _o.alto_vanilla, "ALTOVanilla", "ALTOVanilla", "lamb", {"bias_correction": False}),
    OptimizerInfo("lamb", _o.lamb, "Lamb", "Lamb"),
    OptimizerInfo("eadam", _o.eadam, "EAdam", "EAdam", "adam"),
    OptimizerInfo("adam", _o.adam, "Adam", "Adam"),
    OptimizerInfo("eadamw", _o.eadamw, "EAdamW", "EAdamW", "adamw"),
    OptimizerInfo("adamw", _o.adamw, "AdamW", "AdamW"),
    OptimizerInfo("esgd", _o.esgd, "ESGD", "ESGD", "sgd"),
    OptimizerInfo("sgd", _o.sgd, "SGD", "SGD"),
    OptimizerInfo("adam_cm", _o.adam_cm, "Adam+CM", "AdamCM"),
    OptimizerInfo("eadam_cm", _o.eadam_cm, "EAdam+CM", "EAdamCM", "adam_cm"),
)

#: Every named optimizer by ``name``, in a fixed order (E-optimizers next to their bases).
REGISTRY: Mapping[str, OptimizerInfo] = MappingProxyType({info.name: info for info in _RECORDS})

#: Every named optimizer's factory by name (the CLI, the adapters and the test table use it).
OPTIMIZERS: Dict[str, Callable[..., GradientTransformation]] = {info.name: info.factory for info in _RECORDS}

_LOOKUP: Dict[Any, OptimizerInfo] = {
    key: info for info in _RECORDS for key in (info.factory, info.name, info.display_name, info.class_name)
}


def info_for(key: Union[Callable[..., Any], str]) -> OptimizerInfo:
    """The record of a core factory (``vc.alto``) or of any of its names (``"alto"``, ``"ALTO"``).

    Raises:
        KeyError: naming ``key`` and the known names.
    """
    try:
        return _LOOKUP[key]
    except (KeyError, TypeError):
        raise KeyError(f"{key!r} is not a valley_core optimizer (known: {', '.join(REGISTRY)})") from None


def e_optimizer_of(base: Union[Callable[..., Any], str]) -> Optional[OptimizerInfo]:
    """The E-optimizer whose ``alpha = 0`` is ``base`` at its defaults (``lamb -> alto``), or ``None``."""
    name = info_for(base).name
    return next((i for i in _RECORDS if i.base == name and not i.base_options), None)
