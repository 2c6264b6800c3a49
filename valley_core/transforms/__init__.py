"""One transform per concern; each is a pure ``GradientTransformation``."""

from valley_core.transforms.adam import AdamState, scale_by_adam
from valley_core.transforms.e_adaptor import EState, e_adaptor
from valley_core.transforms.learning_rate import LearningRateState, scale_by_learning_rate
from valley_core.transforms.momentum import TraceState, trace
from valley_core.transforms.trust_ratio import scale_by_trust_ratio
from valley_core.transforms.weight_decay import WeightDecayState, add_decayed_weights

__all__ = [
    "AdamState",
    "EState",
    "LearningRateState",
    "TraceState",
    "WeightDecayState",
    "add_decayed_weights",
    "e_adaptor",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_trust_ratio",
    "trace",
]
