"""Keras 3 adapter: ``keras.optimizers.Optimizer`` subclasses that execute the ``valley_core`` definition.

    >>> import keras
    >>> from backends.keras import ALTO
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=ALTO(learning_rate=1e-3, weight_decay_exclude_names=["bias"],
    ...                              trust_ratio_exclude_names=["bias"]), loss="mse")

Works on every Keras backend (TensorFlow, PyTorch, JAX); see ``docs/keras.md``. Importing this package
imports Keras (and therefore its configured backend); importing ``backends`` alone does not.
"""

from backends.keras.namespace import KerasNamespace, keras_namespace
from backends.keras.optimizers import ALTO, ESGD, PACKAGE, AdamCM, ALTOVanilla, EAdam, EAdamW, Lamb, ValleyOptimizer

__all__ = [
    "ALTO",
    "ALTOVanilla",
    "AdamCM",
    "EAdam",
    "EAdamW",
    "ESGD",
    "KerasNamespace",
    "Lamb",
    "PACKAGE",
    "ValleyOptimizer",
    "keras_namespace",
]
