"""A small array-API namespace over ``keras.ops``, so that ``valley_core`` runs on Keras tensors.

array-api-compat does not know TensorFlow (or Keras) tensors, so the core cannot resolve their namespace by
itself. The core accepts an explicit namespace (``xp=``); this module provides one. It maps the array-API
names the core uses onto ``keras.ops`` and therefore works on every Keras backend (TensorFlow, PyTorch,
JAX), inside ``tf.function``/XLA and ``jax.jit`` as well as eagerly.

Only names are translated here; there is no arithmetic. The array-API functions whose name and meaning
coincide with ``keras.ops`` (``where``, ``maximum``, ``mean``, ``stack``, ``abs``, ...) are forwarded as
they are, so a new core transform that uses them runs without a change to this module.

    >>> import numpy as np
    >>> import valley_core as vc
    >>> from backends.keras.namespace import keras_namespace as xp
    >>> opt = vc.alto(lr=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)
    >>> params = (xp.asarray(np.array([3.0, -2.0]), dtype=xp.float32),)
    >>> state = opt.init(params, xp=xp)
    >>> updates, state = opt.update(tuple(2 * p for p in params), state, params, xp=xp)
    >>> params = vc.apply_updates(params, updates)
"""

from __future__ import annotations

import builtins  # the class attribute ``bool`` (a dtype name) hides the builtin in annotations
from types import SimpleNamespace
from typing import Any

from keras import ops

__all__ = ["KerasNamespace", "keras_namespace"]


class KerasNamespace:
    """The subset of the array API that ``valley_core`` needs, expressed with ``keras.ops``.

    Attributes:
        int32, int64, float16, bfloat16, float32, float64, bool: dtype names (``keras.ops.cast`` takes
            strings).
        linalg: ``linalg.vector_norm`` of a whole tensor.
    """

    int32 = "int32"
    int64 = "int64"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"
    float64 = "float64"
    bool = "bool"

    def __init__(self) -> None:
        self.linalg = SimpleNamespace(vector_norm=self._vector_norm)

    @staticmethod
    def asarray(obj: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        """``keras.ops.convert_to_tensor``; ``device`` is ignored (Keras places tensors itself)."""
        return ops.convert_to_tensor(obj, dtype=dtype)

    @staticmethod
    def astype(x: Any, dtype: Any, copy: builtins.bool = True) -> Any:
        """``keras.ops.cast``."""
        return ops.cast(x, dtype)

    @staticmethod
    def zeros_like(x: Any, dtype: Any = None, device: Any = None) -> Any:
        return ops.zeros_like(x, dtype=dtype)

    @staticmethod
    def zeros(shape: Any, dtype: Any = None, device: Any = None) -> Any:
        return ops.zeros(shape, dtype=dtype)

    @staticmethod
    def sum(x: Any, axis: Any = None, dtype: Any = None, keepdims: builtins.bool = False) -> Any:
        result = ops.sum(x, axis=axis, keepdims=keepdims)
        return result if dtype is None else ops.cast(result, dtype)

    @staticmethod
    def _vector_norm(x: Any, axis: Any = None, keepdims: builtins.bool = False, ord: Any = 2) -> Any:
        if ord != 2:
            raise NotImplementedError("the Keras namespace implements only the 2-norm")
        return ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=keepdims))

    def __getattr__(self, name: str) -> Any:
        # Array-API functions that keras.ops spells the same way (sqrt, where, maximum, mean, stack, ...).
        try:
            return getattr(ops, name)
        except AttributeError:
            raise AttributeError(f"the Keras array namespace has no {name!r} (keras.ops lacks it)") from None


#: The namespace instance the Keras optimizers pass to ``valley_core`` as ``xp=``.
keras_namespace = KerasNamespace()
