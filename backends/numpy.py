"""The NumPy reference adapter: a small stateful optimizer for plain NumPy scripts.

    >>> import numpy as np
    >>> from backends.numpy import ALTO
    >>> w = np.array([3.0, -2.0])
    >>> opt = ALTO([w], lr=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)
    >>> for _ in range(300):
    ...     _ = opt.step([2 * w])          # the gradient of ||w||^2; w is updated in place
    >>> bool(np.abs(w).max() < 0.1)
    True

The maths is ``valley_core``'s; this module only keeps the state, writes the new values into the caller's
arrays, and validates inputs and checkpoints.

Precision (the policy of every backend, ``docs/algorithm.md``): float32 and float64 parameters keep state and
compute in their own dtype; 16-bit parameters (float16) keep float32 state, the step runs on float32 copies
of the parameters and gradients, and the new values are rounded to the parameter's dtype (to nearest). In
float16 ``eps = 1e-8`` would be 0 and ``v`` would underflow, so one EAdam step could give ``-inf``.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import valley_core as vc
from valley_core.base import GradientTransformation
from valley_core.serialization import VERSION_KEY, checkpoint_version, step_count


class Optimizer:
    """Runs a ``valley_core`` transform over a list of NumPy arrays, updating them in place.

    Args:
        params: float arrays (writeable); they are updated in place by ``step``.
        transform: a ``valley_core`` transform, e.g. ``valley_core.alto(lr=1e-3)``.
        skip_nonfinite: if True, a step whose gradients contain NaN or Inf is skipped (parameters and
            state untouched) and ``step`` returns False. If False (default), no check is made.
    """

    def __init__(
        self, params: Sequence[np.ndarray], transform: GradientTransformation, *, skip_nonfinite: bool = False
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("params is empty: give at least one array to optimize")
        for index, p in enumerate(params):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"params[{index}] is a {type(p).__name__}, expected a numpy.ndarray")
            if not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"params[{index}] has dtype {p.dtype}; only floating arrays can be optimized")
            if not p.flags.writeable:
                raise ValueError(f"params[{index}] is read-only; the optimizer updates parameters in place")
        self.params: List[np.ndarray] = params
        self.transform = transform
        self.skip_nonfinite = bool(skip_nonfinite)
        self._working_dtypes = [working_dtype(p.dtype) for p in params]
        self.state = transform.init(self._working_copies(params), xp=_numpy_namespace())
        #: The valley version that wrote the last checkpoint loaded ("0.1.0" for one that does not say); None
        #: before any load.
        self.checkpoint_version: Optional[str] = None

    @property
    def steps_taken(self) -> Optional[int]:
        """The number of steps taken: the core state's step count (``valley_core.serialization.step_count``;
        the adapter keeps no counter of its own), or None for a transform whose state keeps none."""
        return step_count(self.state)

    def _working_copies(self, arrays: Sequence[np.ndarray]) -> Tuple[np.ndarray, ...]:
        """The arrays in the dtypes the update runs in (float32 copies of 16-bit ones, the others as they are)."""
        return tuple(a if a.dtype == w else a.astype(w) for a, w in zip(arrays, self._working_dtypes))

    def _check_grads(self, grads: Sequence[Any]) -> tuple:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        checked = []
        for index, (g, p) in enumerate(zip(grads, self.params)):
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{index}] is a {type(g).__name__}, expected a numpy.ndarray")
            if g.shape != p.shape:
                raise ValueError(f"grads[{index}] has shape {g.shape}, its parameter has shape {p.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{index}] has dtype {g.dtype}, its parameter has dtype {p.dtype}")
            checked.append(g)
        return tuple(checked)

    def step(self, grads: Sequence[np.ndarray]) -> bool:
        """Applies one update to the parameters in place. Returns False if the step was skipped."""
        grads = self._check_grads(grads)
        if self.skip_nonfinite and not all(np.isfinite(g).all() for g in grads):
            return False
        params = self._working_copies(self.params)
        updates, state = self.transform.update(self._working_copies(grads), self.state, params, xp=_numpy_namespace())
        new_params = vc.apply_updates(params, updates)
        # Everything is computed before anything is written: an exception above leaves no partial state.
        for p, new in zip(self.params, new_params):
            p[...] = new  # rounds a float32 working copy to a 16-bit parameter's dtype (to nearest)
        self.state = state
        return True

    def state_dict(self) -> Dict[str, Any]:
        """A checkpoint: the transform's name, copies of every state array (the step count is the state's) and
        ``"valley_version"``, the version of valley that wrote it."""
        return {
            "optimizer": self.transform.name,
            "state": {key: np.array(value, copy=True) for key, value in vc.state_to_dict(self.state).items()},
            VERSION_KEY: vc.__version__,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a checkpoint; raises ``ValueError`` naming every mismatch, changing nothing on error.

        Everything is checked (keys, optimizer name, every array's name, shape and dtype, the step counts)
        and converted before the optimizer's state is replaced. A checkpoint of valley 0.1.0 also has
        ``steps_taken`` (the adapter's own count then): it must be an integer equal to the state's count.
        """
        if not isinstance(state_dict, Mapping) or "state" not in state_dict:
            raise ValueError("state_dict must be a dict with keys 'optimizer' and 'state'")
        name = state_dict.get("optimizer")
        if name != self.transform.name:
            raise ValueError(f"state_dict is for optimizer {name!r}, this optimizer is {self.transform.name!r}")
        version = checkpoint_version(state_dict, "load_state_dict")
        if not isinstance(state_dict["state"], Mapping):
            raise ValueError(f"state_dict['state'] is a {type(state_dict['state']).__name__}, expected a dict")
        state = vc.state_from_dict(
            self.state, state_dict["state"], convert=lambda value, like: np.array(value, dtype=like.dtype, copy=True)
        )
        check_legacy_steps_taken(state_dict, step_count(state))
        self.state = state
        self.checkpoint_version = version


def check_legacy_steps_taken(state_dict: Mapping[str, Any], count: Optional[int]) -> None:
    """Checks the ``steps_taken`` of a valley 0.1.0 checkpoint, if it has one, against the state's count.

    valley 0.1.0's NumPy and CuPy adapters kept a step count beside the core's counters; their checkpoints
    still load, and the value must be an integer (Python, NumPy, or a 0-d integer array) >= 0 equal to the
    count of the state it came with.
    """
    if "steps_taken" not in state_dict:
        return
    value = state_dict["steps_taken"]
    if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"state_dict['steps_taken']={value!r} violates steps_taken is an integer >= 0")
    if count is not None and int(value) != count:
        raise ValueError(f"state_dict['steps_taken']={value!r} does not match the state's step count {count}")


def working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a parameter's state and update use: float32 for 16-bit floats, the parameter's dtype otherwise."""
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def _numpy_namespace() -> Any:
    import array_api_compat.numpy

    return array_api_compat.numpy


def _optimizer_class(name: str, factory: Callable[..., GradientTransformation]) -> type:
    def __init__(self, params: Sequence[np.ndarray], *, skip_nonfinite: bool = False, **hyperparameters: Any):
        Optimizer.__init__(self, params, factory(**hyperparameters), skip_nonfinite=skip_nonfinite)

    doc = (
        f"NumPy {name}: ``{name}(params, **hyperparameters)`` with the hyperparameters of "
        f"``valley_core.{factory.__name__}``.\n\n{factory.__doc__}"
    )
    return type(name, (Optimizer,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


ALTO = _optimizer_class("ALTO", vc.alto)
ALTOVanilla = _optimizer_class("ALTOVanilla", vc.alto_vanilla)
Lamb = _optimizer_class("Lamb", vc.lamb)
EAdam = _optimizer_class("EAdam", vc.eadam)
Adam = _optimizer_class("Adam", vc.adam)
EAdamW = _optimizer_class("EAdamW", vc.eadamw)
AdamW = _optimizer_class("AdamW", vc.adamw)
ESGD = _optimizer_class("ESGD", vc.esgd)
SGD = _optimizer_class("SGD", vc.sgd)
AdamCM = _optimizer_class("AdamCM", vc.adam_cm)

__all__ = ["ALTO", "ALTOVanilla", "Adam", "AdamCM", "AdamW", "EAdam", "EAdamW", "ESGD", "Lamb", "Optimizer", "SGD"]
