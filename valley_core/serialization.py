"""Flat, named views of an optimizer state, and a validating inverse.

``state_to_dict`` names every array of a (chained) state ``"<StateClass>.<field>"`` for scalars and
``"<StateClass>.<field>.<i>"`` for per-tensor buffers, e.g. ``"AdamState.first.3"``. ``state_from_dict``
rebuilds a state of the same structure as a template, checking keys, shapes and dtypes first, so that a
mismatched checkpoint raises before anything is replaced. Every adapter uses this one pair.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from valley_core.base import per_tensor_fields

#: The key under which every adapter's checkpoint records the valley version that wrote it.
VERSION_KEY = "valley_version"
#: The version of a checkpoint that records none (valley 0.1.0 did not).
UNVERSIONED = "0.1.0"


def checkpoint_version(checkpoint: Mapping[str, Any], where: str) -> str:
    """The valley version that wrote ``checkpoint`` (:data:`UNVERSIONED` when it does not say).

    Raises:
        ValueError: the recorded version is not a string (``where`` names the caller).
    """
    version = checkpoint.get(VERSION_KEY, UNVERSIONED)
    if not isinstance(version, str):
        raise ValueError(f"{where}: {VERSION_KEY}={version!r} is not a version string")
    return version


def _entries(state: Any) -> Iterator[Tuple[str, Any]]:
    """Yields (name, state) for every transform state in a (possibly chained) state."""
    if hasattr(state, "_fields"):
        yield type(state).__name__, state
        return
    counts: Dict[str, int] = {}
    for inner in state:
        for name, leaf_state in _entries(inner):
            counts[name] = counts.get(name, 0) + 1
            yield (name if counts[name] == 1 else f"{name}#{counts[name]}"), leaf_state


def state_to_dict(state: Any) -> Dict[str, Any]:
    """Every array of ``state`` under a stable name (the arrays themselves, not copies)."""
    flat: Dict[str, Any] = {}
    for prefix, leaf_state in _entries(state):
        for field in leaf_state._fields:
            value = getattr(leaf_state, field)
            if isinstance(value, tuple):
                for index, array in enumerate(value):
                    flat[f"{prefix}.{field}.{index}"] = array
            else:
                flat[f"{prefix}.{field}"] = value
    return flat


def step_counters(state: Any) -> List[Any]:
    """The step counters of a (chained) state in the core's layout: every field that is not per-tensor."""
    counters = []
    for _, leaf_state in _entries(state):
        declared = per_tensor_fields(leaf_state)
        for field in leaf_state._fields:
            value = getattr(leaf_state, field)
            if not (field in declared if declared is not None else isinstance(value, tuple)):
                counters.append(value)
    return counters


def step_count(state: Any) -> Optional[int]:
    """The number of steps a state has taken, read from its counters (one host read each), or None for a
    state that keeps no counter. The core's counters are the only step counts: adapters read them here.

    Raises:
        ValueError: when the counters disagree (a state assembled from different checkpoints).
    """
    counts = sorted({int(counter) for counter in step_counters(state)})
    if len(counts) > 1:
        raise ValueError(f"state has inconsistent step counts {counts}")
    return counts[0] if counts else None


def _shape(array: Any) -> Tuple[int, ...]:
    return tuple(int(n) for n in array.shape)


def state_from_dict(
    template: Any, flat: Mapping[str, Any], convert: Callable[[Any, Any], Any] = lambda value, like: value
) -> Any:
    """A state with ``template``'s structure and ``flat``'s arrays.

    Args:
        template: a state of the optimizer the arrays are loaded into (gives structure, shapes, dtypes).
        flat: a mapping as produced by ``state_to_dict``.
        convert: ``convert(value, like) -> array`` turns a stored value into an array like ``like``
            (same namespace and device); it runs only after every check passed.

    Raises:
        ValueError: on missing or unexpected keys, or a shape or dtype that differs from the template,
            naming every offending key. Nothing is converted before all checks pass.
    """
    expected = state_to_dict(template)
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    problems: List[str] = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for key in sorted(set(expected) & set(flat)):
        like, value = expected[key], flat[key]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            problems.append(f"{key}: expected an array, got {type(value).__name__}")
            continue
        if _shape(value) != _shape(like):
            problems.append(f"{key}: shape {_shape(value)} does not match the optimizer's {_shape(like)}")
        elif str(value.dtype).split(".")[-1] != str(like.dtype).split(".")[-1]:
            problems.append(f"{key}: dtype {value.dtype} does not match the optimizer's {like.dtype}")
    if problems:
        raise ValueError("state does not match this optimizer: " + "; ".join(problems))
    converted = {key: convert(flat[key], like) for key, like in expected.items()}
    return _rebuild(template, converted, iter(_entries(template)))


def _rebuild(template: Any, converted: Dict[str, Any], names: Iterator[Tuple[str, Any]]) -> Any:
    if hasattr(template, "_fields"):
        prefix, _ = next(names)
        values = {}
        for field in template._fields:
            value = getattr(template, field)
            if isinstance(value, tuple):
                values[field] = tuple(converted[f"{prefix}.{field}.{i}"] for i in range(len(value)))
            else:
                values[field] = converted[f"{prefix}.{field}"]
        return type(template)(**values)
    return tuple(_rebuild(inner, converted, names) for inner in template)
