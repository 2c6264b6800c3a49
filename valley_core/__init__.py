"""valley_core: the one array-API definition of the E adaptor, ALTO and their base optimizers.

Pure functions over sequences of arrays of one array-API namespace (NumPy, array-api-strict, PyTorch via
array-api-compat, or a shim passed as ``xp=``). No framework is imported here.

    >>> import numpy as np
    >>> import valley_core as vc
    >>> opt = vc.alto(lr=1e-2, alpha=-1.0, betas=(0.5, 0.9, 0.99))
    >>> params = (np.ones(3),)
    >>> state = opt.init(params)
    >>> updates, state = opt.update((np.ones(3),), state, params)
    >>> params = vc.apply_updates(params, updates)
"""

from valley_core import elementwise, reductions, schedules
from valley_core.base import EmptyState, GradientTransformation, apply_updates, chain
from valley_core.defaults import LARGE_BATCH_THRESHOLD, defaults_for_batch_size
from valley_core.optimizers import (
    adam,
    adam_cm,
    adamw,
    alto,
    alto_vanilla,
    eadam,
    eadam_cm,
    eadamw,
    esgd,
    lamb,
    sgd,
)
from valley_core.registry import OPTIMIZERS, REGISTRY, OptimizerInfo, e_optimizer_of, info_for
from valley_core.schedules import exponential_decay, inverse_sqrt
from valley_core.serialization import state_from_dict, state_to_dict
from valley_core.transforms import (
    AdamState,
    EState,
    LearningRateState,
    TraceState,
    WeightDecayState,
    add_decayed_weights,
    e_adaptor,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_trust_ratio,
    trace,
)
from valley_core.transforms.critical_momenta import CriticalMomentaState, scale_by_adam_critical_momenta
from valley_core.validation import stability_bound, validate_hyperparameters

__version__ = "0.3.0"  # the distribution's version too (pyproject.toml reads it); see CHANGELOG.md

__all__ = [
    "AdamState",
    "EState",
    "EmptyState",
    "GradientTransformation",
    "LARGE_BATCH_THRESHOLD",
    "LearningRateState",
    "OPTIMIZERS",
    "OptimizerInfo",
    "REGISTRY",
    "TraceState",
    "WeightDecayState",
    "adam",
    "adamw",
    "add_decayed_weights",
    "alto",
    "alto_vanilla",
    "apply_updates",
    "chain",
    "defaults_for_batch_size",
    "e_adaptor",
    "e_optimizer_of",
    "eadam",
    "eadamw",
    "elementwise",
    "esgd",
    "exponential_decay",
    "info_for",
    "inverse_sqrt",
    "lamb",
    "reductions",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_trust_ratio",
    "schedules",
    "sgd",
    "stability_bound",
    "state_from_dict",
    "state_to_dict",
    "trace",
    "validate_hyperparameters",
    "CriticalMomentaState",
    "adam_cm",
    "eadam_cm",
    "scale_by_adam_critical_momenta",
]
