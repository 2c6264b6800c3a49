"""The stateful CuPy optimizer: state layout, validation, checkpoints and the order of kernel launches.

The maths is ``valley_core``'s: hyperparameters are validated by the core's factories, the state has the
layout of the core's ``init`` (so checkpoints are interchangeable with ``backends.numpy``), and a step runs
the plan derived from the factory's chain (``backends.kernels.plan``), one plan per combination of the
per-tensor masks; no optimizer is named here.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import valley_core as vc
from backends.cupy._engine import SUPPORTED_DTYPES, make_engine
from backends.kernels.plan import GRAD, PARAM, Plan, Unplannable, derive
from backends.numpy import check_legacy_steps_taken
from valley_core.base import GradientTransformation, per_tensor_fields
from valley_core.serialization import VERSION_KEY, checkpoint_version, step_count
from valley_core.transforms.weight_decay import resolve_mask


class _Spec:
    """Shape and dtype of a tensor, without its data: what the core's ``init`` sees when building the layout."""

    def __init__(self, shape: Tuple[int, ...], dtype: Any) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)


class _LayoutNamespace:
    """The ``xp`` given to the core's ``init``: it records shapes instead of allocating device memory."""

    int32 = np.int32

    @staticmethod
    def zeros_like(array: Any) -> _Spec:
        return _Spec(array.shape, array.dtype)

    @staticmethod
    def asarray(value: Any, dtype: Any = None) -> np.ndarray:
        return np.asarray(value, dtype=dtype)


def _is_counter(like: Any) -> bool:
    """Step counters are the state's integer arrays (buffers have the parameters' float dtypes)."""
    return np.issubdtype(np.dtype(str(like.dtype)), np.integer)


def _host(value: Any) -> Any:
    """A NumPy view of a host or CuPy value (``.get()`` copies a CuPy array to the host)."""
    return value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value


def _advanced(state: Any) -> Any:
    """The state with every step counter (a host 0-d array, see ``Optimizer``) one step further."""
    if hasattr(state, "_fields"):
        fields = per_tensor_fields(state) or ()
        return state._replace(**{f: np.asarray(getattr(state, f) + 1) for f in state._fields if f not in fields})
    return tuple(_advanced(inner) for inner in state)


class Optimizer:
    """Runs one of the core's named optimizers over a list of CuPy arrays, updating them in place.

    Use the named subclasses (``ALTO``, ``ALTOVanilla``, ``Lamb``, ``EAdam``, ``EAdamW``, ``ESGD``).

    Args:
        params: CuPy arrays (float32 or float64), updated in place by ``step``.
        factory: the core factory (``valley_core.alto`` ...), called with ``hyperparameters`` for validation
            and for the state layout.
        hyperparameters: keyword arguments of ``factory``.
        skip_nonfinite: if True, a step whose gradients contain NaN or Inf is skipped (parameters and state
            untouched) and ``step`` returns False. This costs one host synchronisation per step.
        array_module: ``"cupy"`` (default). ``"numpy"`` runs the same code on NumPy arrays on the CPU, the
            plan interpreted by NumPy instead of compiled: a test mode, not a fast path.
        multi_tensor: kept for compatibility (a bool): every step now launches one kernel per pass for up to 16
            C-contiguous tensors (``backends.cupy._multi_tensor``); a non-contiguous tensor is run by CuPy's
            operators. Not yet run on a GPU: ``benchmarks/gpu_check.py`` checks and times it.

    Raises:
        RuntimeError: (``array_module="cupy"``) if CuPy is not installed or CUDA is not available.
        ValueError, TypeError: invalid hyperparameters (the core's messages) or parameters; a chain the plan
            cannot express (``Unplannable``, a ``ValueError``) says why.

    Example:
        The CPU mode runs anywhere (on a GPU, drop ``array_module`` and use ``cupy`` arrays):

        >>> import numpy as np
        >>> from backends.cupy import ALTO
        >>> w = np.array([3.0, -2.0])
        >>> opt = ALTO([w], lr=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0,
        ...            array_module="numpy")
        >>> for _ in range(300):
        ...     _ = opt.step([2 * w])          # the gradient of ||w||^2; w is updated in place
        >>> bool(np.abs(w).max() < 0.1)
        True

    References:
        Zhao et al., "Exploring Landscapes for Better Minima along Valleys", NeurIPS 2025 (the algorithms);
        ``docs/cupy.md`` (how the kernels are generated from ``valley_core``).
    """

    def __init__(
        self,
        params: Sequence[Any],
        factory: Callable[..., GradientTransformation],
        hyperparameters: Dict[str, Any],
        *,
        skip_nonfinite: bool = False,
        array_module: str = "cupy",
        multi_tensor: bool = False,
    ) -> None:
        if not isinstance(multi_tensor, bool):
            raise ValueError(f"multi_tensor={multi_tensor!r} violates multi_tensor is a bool")
        self.multi_tensor = multi_tensor
        self._engine = make_engine(array_module)
        self.transform = factory(**hyperparameters)  # validates with valley_core.validation
        bound = inspect.signature(factory).bind(**hyperparameters)
        bound.apply_defaults()
        self.hyperparameters: Dict[str, Any] = dict(bound.arguments)
        self.params: List[Any] = self._check_params(params)
        self.skip_nonfinite = bool(skip_nonfinite)
        self._plans = self._plan_per_tensor(factory)
        template = self.transform.init(tuple(_Spec(p.shape, p.dtype) for p in self.params), xp=_LayoutNamespace())
        self.state = vc.state_from_dict(template, vc.state_to_dict(template), convert=self._initial)
        #: The valley version that wrote the last checkpoint loaded ("0.1.0" for one that does not say); None
        #: before any load.
        self.checkpoint_version: Optional[str] = None

    def _initial(self, value: Any, like: Any) -> Any:
        """A state array of the layout template, allocated: counters as they are (0), buffers zeros."""
        return self._placed(value, like) if _is_counter(like) else self._engine.zeros(like.shape, like.dtype)

    def _placed(self, value: Any, like: Any) -> Any:
        """A state array where it lives: buffers on the device; the core's step counters on the host (0-d
        NumPy arrays), so that a step reads its count without waiting for the GPU."""
        if _is_counter(like):
            return np.array(_host(value), dtype=np.dtype(str(like.dtype)), copy=True)
        return self._engine.from_host(value, like)

    @property
    def steps_taken(self) -> int:
        """The number of steps taken: the core state's step count (the adapter keeps no counter of its own)."""
        count = step_count(self.state)
        return 0 if count is None else count

    def _plan_per_tensor(self, factory: Callable[..., GradientTransformation]) -> List[Plan]:
        """The plan of each tensor: the factory's, with each per-tensor mask (``*_mask``) at that tensor's value."""
        masks = {n: resolve_mask(v, self.params, n) for n, v in self.hyperparameters.items() if n.endswith("_mask")}
        plans: Dict[tuple, Plan] = {}
        result = []
        for index in range(len(self.params)):
            flags = tuple((name, (values[index],)) for name, values in masks.items())
            if flags not in plans:
                try:
                    plans[flags] = derive(factory, {**self.hyperparameters, **dict(flags)})
                except Unplannable as error:
                    raise ValueError(f"backends.cupy cannot run it: {error}") from None
            result.append(plans[flags])
        return result

    # -- validation -------------------------------------------------------------------------------------
    def _check_params(self, params: Sequence[Any]) -> List[Any]:
        params = list(params)
        if not params:
            raise ValueError("params is empty: give at least one array to optimize")
        expected = self._engine.array_type
        for index, p in enumerate(params):
            if not isinstance(p, expected):
                raise TypeError(f"params[{index}] is a {type(p).__name__}, expected a {self._engine.array_type_name}")
            if str(p.dtype) not in SUPPORTED_DTYPES:
                raise TypeError(
                    f"params[{index}] has dtype {p.dtype}; backends.cupy optimizes float32 and float64 arrays"
                )
            if not self._engine.same_device(p, params[0]):
                raise ValueError(f"params[{index}] is on another device than params[0]")
            self._engine.check_param(index, p)
        return params

    def _check_grads(self, grads: Sequence[Any]) -> Tuple[Any, ...]:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        expected = self._engine.array_type
        for index, (g, p) in enumerate(zip(grads, self.params)):
            if not isinstance(g, expected):
                raise TypeError(f"grads[{index}] is a {type(g).__name__}, expected a {self._engine.array_type_name}")
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"grads[{index}] has shape {tuple(g.shape)}, its parameter has shape {tuple(p.shape)}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{index}] has dtype {g.dtype}, its parameter has dtype {p.dtype}")
            if not self._engine.same_device(g, p):
                raise ValueError(f"grads[{index}] is on another device than its parameter")
        return tuple(grads)

    # -- the step ---------------------------------------------------------------------------------------
    def step(self, grads: Sequence[Any]) -> bool:
        """Applies one update to the parameters in place. Returns False if the step was skipped.

        Every check (count, shapes, dtypes, devices, finiteness with ``skip_nonfinite``) runs before anything
        is written. On the GPU the step is a sequence of asynchronous kernel launches (one per pass of the
        plan for up to 16 tensors).
        """
        grads = self._check_grads(grads)
        if self.skip_nonfinite and not self._engine.all_finite(grads):
            return False
        flat = vc.state_to_dict(self.state)  # the state's own arrays, written in place
        batches: Dict[Tuple[int, str], List[Dict[str, Any]]] = {}
        for index, (g, p, plan) in enumerate(zip(grads, self.params, self._plans)):
            arrays = {GRAD: g, PARAM: p, **{role: flat[f"{key}.{index}"] for role, key in plan.buffers}}
            batches.setdefault((id(plan), str(p.dtype)), []).append(arrays)
        plans = {id(plan): plan for plan in self._plans}
        count = self.steps_taken  # the core's counters, on the host: no synchronisation
        for (plan_id, dtype), tensors in batches.items():
            plan = plans[plan_id]
            self._engine.run(plan, tensors, plan.step_scalar_values(self.hyperparameters, count, dtype))
        self.state = _advanced(self.state)
        return True

    # -- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """A checkpoint: the optimizer's name and host (NumPy) copies of every state array.

        The keys are the core's (``valley_core.state_to_dict``), so a checkpoint of ``backends.numpy``'s
        optimizer of the same name loads here and the other way round. The step count is the state's;
        ``"valley_version"`` is the version of valley that wrote it.
        """
        return {
            "optimizer": self.transform.name,
            "state": {key: self._host_copy(value) for key, value in vc.state_to_dict(self.state).items()},
            VERSION_KEY: vc.__version__,
        }

    def _host_copy(self, value: Any) -> np.ndarray:
        return np.array(value, copy=True) if _is_counter(value) else self._engine.to_host(value)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a checkpoint (NumPy or CuPy arrays); raises ``ValueError`` naming every mismatch.

        Every check (keys, shapes, dtypes through ``valley_core.state_from_dict``, equal step counts, and a
        valley 0.1.0 checkpoint's ``steps_taken`` against them) runs before anything is replaced.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict:
            raise ValueError("state_dict must be a dict with keys 'optimizer' and 'state'")
        name = state_dict.get("optimizer")
        if name != self.transform.name:
            raise ValueError(f"state_dict is for optimizer {name!r}, this optimizer is {self.transform.name!r}")
        version = checkpoint_version(state_dict, "load_state_dict")
        state = vc.state_from_dict(self.state, state_dict["state"], convert=self._placed)
        check_legacy_steps_taken(state_dict, step_count(state))  # one host read per checkpoint, not per step
        self.state = state
        self.checkpoint_version = version


def optimizer_class(name: str, factory: Callable[..., GradientTransformation], module: str) -> type:
    """A named subclass ``name(params, *, skip_nonfinite=False, array_module="cupy", multi_tensor=False, **hp)``."""

    def __init__(
        self,
        params: Sequence[Any],
        *,
        skip_nonfinite: bool = False,
        array_module: str = "cupy",
        multi_tensor: bool = False,
        **hyperparameters: Any,
    ) -> None:
        Optimizer.__init__(
            self,
            params,
            factory,
            hyperparameters,
            skip_nonfinite=skip_nonfinite,
            array_module=array_module,
            multi_tensor=multi_tensor,
        )

    doc = (
        f"CuPy {name}: ``{name}(params, **hyperparameters)`` with the hyperparameters of "
        f"``valley_core.{factory.__name__}``, run by CUDA kernels generated from its plan.\n\n"
        f"See ``Optimizer`` for ``skip_nonfinite``, ``array_module`` and ``multi_tensor``.\n\n"
        f"{factory.__doc__}"
    )
    return type(name, (Optimizer,), {"__init__": __init__, "__doc__": doc, "__module__": module})
