"""Resolution of the array namespace at the boundary of the core.

The core never imports a framework. It asks ``array_api_compat`` which namespace a list of arrays belongs to,
or uses the namespace the caller passes explicitly (``xp=``). The explicit form is how a namespace that
array-api-compat does not know (a Keras/TensorFlow shim, say) runs the same code.
"""

from __future__ import annotations

from typing import Any, Sequence


def resolve_namespace(arrays: Sequence[Any], xp: Any = None) -> Any:
    """Returns ``xp`` if given, else the array-API namespace shared by ``arrays``.

    Raises:
        TypeError: if ``arrays`` is empty and no ``xp`` was given, or if the arrays come from several
            namespaces.
    """
    if xp is not None:
        return xp
    if len(arrays) == 0:
        raise TypeError("cannot infer the array namespace of an empty parameter list; pass xp= explicitly")
    import array_api_compat

    return array_api_compat.array_namespace(*arrays)


def device_of(array: Any) -> Any:
    """The device of ``array`` in the array-API sense, or ``None`` for namespaces without devices."""
    try:
        import array_api_compat

        return array_api_compat.device(array)
    except Exception:  # a shim namespace unknown to array-api-compat
        return getattr(array, "device", None)


def scalar_zero(xp: Any, like: Any, dtype: Any = None) -> Any:
    """A 0-d integer array on the device of ``like``: the step counter of a transform."""
    dtype = xp.int32 if dtype is None else dtype
    device = device_of(like)
    if device is None:
        return xp.asarray(0, dtype=dtype)
    return xp.asarray(0, dtype=dtype, device=device)
