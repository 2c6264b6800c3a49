"""Keras 3 adapter: ``keras.optimizers.Optimizer`` subclasses that execute the ``valley_core`` definition.

    >>> import keras
    >>> from backends.keras import ALTO
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=ALTO(learning_rate=1e-3, weight_decay_exclude_names=["bias"],
    ...                              trust_ratio_exclude_names=["bias"]), loss="mse")

Works on every Keras backend (TensorFlow, PyTorch, JAX); see ``docs/keras.md``. Importing this package
imports Keras (and therefore its configured backend); importing ``backends`` alone does not.
"""

import os as _os

# What to install for each framework Keras may be missing (its backend, or Keras itself).
_EXTRAS = {
    "tensorflow": 'pip install "valley-optim[keras-tf]"',
    "torch": 'pip install "valley-optim[keras,torch]"',
    "jax": 'pip install "valley-optim[keras,jax]"',
    "keras": 'pip install "valley-optim[keras-tf]" (or "valley-optim[keras]" for Keras\' torch or JAX backend)',
}


def _missing_framework(error: ModuleNotFoundError) -> ImportError:
    """The error for ``import keras`` failing on a missing framework: what to install or which backend to pick.

    Keras imports its backend when it is imported (TensorFlow unless ``KERAS_BACKEND`` or
    ``~/.keras/keras.json`` says otherwise), so without TensorFlow a bare ``import keras`` fails with
    ``No module named 'tensorflow'``, which says neither.
    """
    missing = (error.name or "").split(".")[0]
    if missing not in _EXTRAS:
        return error
    if missing == "keras":
        message = f"backends.keras needs Keras 3, which is not installed: {_EXTRAS['keras']}"
    else:
        chosen = _os.environ.get("KERAS_BACKEND")
        source = f"KERAS_BACKEND={chosen}" if chosen else "KERAS_BACKEND is not set: ~/.keras/keras.json or TensorFlow"
        others = " or ".join(f"KERAS_BACKEND={b}" for b in ("tensorflow", "torch", "jax") if b != missing)
        message = (
            f"backends.keras: Keras imports its backend, {missing} ({source}), which is not installed "
            f"({error}). Install it with {_EXTRAS[missing]}, or set {others} (with that framework installed) "
            "before importing Keras."
        )
    return ModuleNotFoundError(message, name=error.name)


try:
    import keras as _keras  # noqa: F401 - imports Keras' backend, where a missing framework shows
except ModuleNotFoundError as _error:
    raise _missing_framework(_error) from _error

from backends.keras.namespace import KerasNamespace, keras_namespace  # noqa: E402
from backends.keras.optimizers import (  # noqa: E402
    ALTO,
    ESGD,
    PACKAGE,
    AdamCM,
    ALTOVanilla,
    EAdam,
    EAdamW,
    Lamb,
    ValleyOptimizer,
)

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
