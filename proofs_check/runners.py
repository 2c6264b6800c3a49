"""One interface to step an optimizer through the chosen backend.

The checks own their problems (losses, gradients, Hessians written in NumPy); the optimizer update always
comes from ``valley_core``, run through one of the backends:

- ``numpy``: ``backends.numpy`` (``ALTO([w], ...)``, ``opt.step([grad])``), the reference adapter.
- ``torch``: ``backends.torch`` (``torch.optim.Optimizer`` subclasses, their default ``implementation="auto"``:
  the fused CPU kernels where they run, the core's update op by op elsewhere; float64
  CPU tensors) when it imports and has the class; otherwise ``valley_core`` itself on torch float64 tensors
  through array-api-compat (the core accepts torch tensors directly). Which path ran is recorded.
- ``cupy``: ``backends.cupy`` on CUDA float64 arrays; without CuPy or CUDA, :func:`check_backend` raises
  :class:`BackendUnavailable` (no fake results).

Every stepper exposes the parameters as NumPy arrays (views of the backend's storage where possible) so
that the problem code stays in NumPy.

Example:
    >>> import numpy as np
    >>> stepper = make_stepper("numpy", "esgd", [np.array([1.0])], lr=0.1, alpha=0.0)
    >>> for _ in range(50):
    ...     stepper.step([2 * stepper.params[0]])
    >>> bool(abs(stepper.params[0][0]) < 1e-3)
    True
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import valley_core as vc

BACKENDS = ("numpy", "torch", "cupy")

#: Adam's ``v`` in a state dict (``valley_core.state_to_dict``'s key prefix, from the core's state type).
_SECOND = f"{vc.AdamState.__name__}.second"


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (for example CuPy without CUDA)."""


def check_backend(backend: str) -> str:
    """Checks that ``backend`` can run and returns a one-line description of it.

    Raises:
        ValueError: for an unknown backend name.
        BackendUnavailable: when the backend's framework or device is missing.
    """
    if backend == "numpy":
        return "backends.numpy (float64 NumPy arrays)"
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as error:
            raise BackendUnavailable(f"--backend torch needs PyTorch ({error})") from None
        return "PyTorch float64 CPU tensors (backends.torch where it has the class, else valley_core on torch)"
    if backend == "cupy":
        try:
            from backends.cupy import cuda_available
        except ImportError as error:
            raise BackendUnavailable(f"--backend cupy: backends.cupy does not import ({error})") from None
        if not cuda_available():
            raise BackendUnavailable(
                "--backend cupy needs CuPy and a CUDA device; neither a CuPy install with "
                "a visible GPU was found here. No results were produced."
            )
        return "backends.cupy (float64 CuPy arrays on the GPU)"
    raise ValueError(f"backend={backend!r} violates backend in {BACKENDS}")


class Stepper:
    """Base class: ``params`` (NumPy arrays), ``step(grads)``, ``set_params(values)``, ``second_moments()``.

    Attributes:
        name: the core optimizer name (``"alto"``, ``"esgd"`` ...).
        path: which code ran the update, e.g. ``"backends.numpy.ALTO"``.
    """

    name: str
    path: str

    @property
    def params(self) -> List[np.ndarray]:
        raise NotImplementedError

    def step(self, grads: Sequence[np.ndarray]) -> None:
        """One optimizer step from NumPy gradients (one per parameter tensor)."""
        raise NotImplementedError

    def set_params(self, values: Sequence[np.ndarray]) -> None:
        """Overwrites the parameters (used for projections onto a constraint set)."""
        for p, v in zip(self.params, values):
            p[...] = v

    def second_moments(self) -> Optional[List[np.ndarray]]:
        """Adam's ``v`` per tensor (copies), or None if the optimizer keeps none."""
        return None


def _core_state_tensors(state_dict: Dict[str, Any], field: str, count: int) -> Optional[List[Any]]:
    keys = [f"{field}.{i}" for i in range(count)]
    if not all(k in state_dict for k in keys):
        return None
    return [state_dict[k] for k in keys]


class NumpyStepper(Stepper):
    """``backends.numpy`` optimizers."""

    def __init__(self, name: str, params: Sequence[np.ndarray], hyperparameters: Dict[str, Any]) -> None:
        import backends.numpy as bn

        cls = getattr(bn, vc.info_for(name).class_name)
        self.name = name
        self._params = [np.array(p, dtype=np.float64, copy=True) for p in params]
        self.optimizer = cls(self._params, **hyperparameters)
        self.path = f"backends.numpy.{cls.__name__}"

    @property
    def params(self) -> List[np.ndarray]:
        return self._params

    def step(self, grads: Sequence[np.ndarray]) -> None:
        self.optimizer.step([np.asarray(g, dtype=np.float64) for g in grads])

    def second_moments(self) -> Optional[List[np.ndarray]]:
        found = _core_state_tensors(vc.state_to_dict(self.optimizer.state), _SECOND, len(self._params))
        return None if found is None else [np.array(v, copy=True) for v in found]


class TorchBackendStepper(Stepper):
    """``backends.torch`` optimizers (their default path, ``implementation="auto"``) on float64 CPU tensors."""

    def __init__(self, name: str, params: Sequence[np.ndarray], hyperparameters: Dict[str, Any], cls: Any) -> None:
        import torch

        self.name = name
        self.tensors = [torch.tensor(np.asarray(p, dtype=np.float64), dtype=torch.float64) for p in params]
        self.optimizer = cls(self.tensors, **hyperparameters)
        self._views = [t.detach().numpy() for t in self.tensors]  # share storage with the tensors
        self.path = f"backends.torch.{cls.__name__}(implementation='auto')"

    @property
    def params(self) -> List[np.ndarray]:
        return self._views

    def step(self, grads: Sequence[np.ndarray]) -> None:
        import torch

        for t, g in zip(self.tensors, grads):
            t.grad = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64))
        self.optimizer.step()

    def second_moments(self) -> Optional[List[np.ndarray]]:
        values = [self.optimizer.state[t].get(_SECOND) for t in self.tensors]
        if any(v is None for v in values):
            return None
        return [v.detach().numpy().copy() for v in values]


class TorchCoreStepper(Stepper):
    """``valley_core`` run directly on torch float64 tensors (array-api-compat resolves the namespace)."""

    def __init__(self, name: str, params: Sequence[np.ndarray], hyperparameters: Dict[str, Any], reason: str) -> None:
        import torch

        self.name = name
        self.transform = vc.OPTIMIZERS[name](**hyperparameters)
        self.tensors = [torch.tensor(np.asarray(p, dtype=np.float64), dtype=torch.float64) for p in params]
        self.state = self.transform.init(tuple(self.tensors))
        self._views = [t.numpy() for t in self.tensors]
        self.path = f"valley_core.{name} on torch float64 tensors ({reason})"

    @property
    def params(self) -> List[np.ndarray]:
        return self._views

    def step(self, grads: Sequence[np.ndarray]) -> None:
        import torch

        grads_t = tuple(torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64)) for g in grads)
        updates, self.state = self.transform.update(grads_t, self.state, tuple(self.tensors))
        for t, new in zip(self.tensors, vc.apply_updates(tuple(self.tensors), updates)):
            t.copy_(new)

    def second_moments(self) -> Optional[List[np.ndarray]]:
        found = _core_state_tensors(vc.state_to_dict(self.state), _SECOND, len(self.tensors))
        return None if found is None else [v.numpy().copy() for v in found]


class CupyStepper(Stepper):
    """``backends.cupy`` optimizers on float64 CUDA arrays (parameters copied to the host when read)."""

    def __init__(self, name: str, params: Sequence[np.ndarray], hyperparameters: Dict[str, Any]) -> None:
        import cupy as cp

        import backends.cupy as bc

        if name not in bc.OPTIMIZERS:
            raise BackendUnavailable(f"backends.cupy has no optimizer {name!r} (it has {sorted(bc.OPTIMIZERS)})")
        self._cp = cp
        self.name = name
        self.arrays = [cp.asarray(np.asarray(p, dtype=np.float64)) for p in params]
        self.optimizer = bc.OPTIMIZERS[name](self.arrays, **hyperparameters)
        self.path = f"backends.cupy.{type(self.optimizer).__name__}"

    @property
    def params(self) -> List[np.ndarray]:
        return [self._cp.asnumpy(a) for a in self.arrays]

    def set_params(self, values: Sequence[np.ndarray]) -> None:
        for a, v in zip(self.arrays, values):
            a[...] = self._cp.asarray(v)

    def step(self, grads: Sequence[np.ndarray]) -> None:
        self.optimizer.step([self._cp.asarray(np.asarray(g, dtype=np.float64)) for g in grads])


def _base_equivalent(name: str, hyperparameters: Dict[str, Any]) -> Optional[tuple]:
    """A base optimizer as its E-optimizer with ``alpha = 0`` (the core guarantees exact equality): the E
    optimizer's ``betas`` are ``(beta1, *the base's moments)`` (SGD's ``momentum``). ``None`` if it has none."""
    e_optimizer = vc.e_optimizer_of(name)
    if e_optimizer is None:
        return None
    signature = inspect.signature(vc.OPTIMIZERS[name]).parameters
    options = {k: p.default for k, p in signature.items() if k in ("betas", "momentum")}
    options.update(hyperparameters)
    moments = (*options.pop("betas", ()), *((options.pop("momentum"),) if "momentum" in options else ()))
    return e_optimizer.name, {**options, "alpha": 0.0, "betas": (0.0, *moments)}


def make_stepper(backend: str, name: str, params: Sequence[np.ndarray], **hyperparameters: Any) -> Stepper:
    """An optimizer ``name`` (a ``valley_core`` factory name) over copies of ``params`` on ``backend``.

    Args:
        backend: ``"numpy"``, ``"torch"`` or ``"cupy"``.
        name: a ``valley_core.REGISTRY`` name (``"alto"``, ``"sgd"`` ...).
        params: initial values (float64 NumPy arrays); the stepper keeps its own copies.
        **hyperparameters: keyword arguments of the ``valley_core`` factory (floats or schedules).

    Returns:
        A :class:`Stepper`; ``stepper.path`` says which code ran.
    """
    if name not in vc.REGISTRY:
        raise ValueError(f"name={name!r} violates name in {sorted(vc.REGISTRY)}")
    if backend == "numpy":
        return NumpyStepper(name, params, hyperparameters)
    if backend == "torch":
        try:
            import backends.torch as bt
        except Exception as error:  # noqa: BLE001 - any import failure sends us to the core path
            return TorchCoreStepper(name, params, hyperparameters, f"backends.torch does not import: {error}")
        class_name = vc.info_for(name).class_name
        cls = getattr(bt, class_name, None)
        if cls is None:
            equivalent = _base_equivalent(name, hyperparameters)
            e_class = getattr(bt, vc.info_for(equivalent[0]).class_name, None) if equivalent else None
            if equivalent is not None and e_class is not None:
                stepper = TorchBackendStepper(name, params, equivalent[1], e_class)
                stepper.path += f" with alpha=0 (= {name})"
                return stepper
            return TorchCoreStepper(name, params, hyperparameters, f"backends.torch has no {class_name}")
        return TorchBackendStepper(name, params, hyperparameters, cls)
    if backend == "cupy":
        check_backend("cupy")
        import backends.cupy as bc

        equivalent = None if name in bc.OPTIMIZERS else _base_equivalent(name, hyperparameters)
        if equivalent is not None:
            on_gpu = CupyStepper(equivalent[0], params, equivalent[1])
            on_gpu.path += f" with alpha=0 (= {name})"
            return on_gpu
        return CupyStepper(name, params, hyperparameters)
    raise ValueError(f"backend={backend!r} violates backend in {BACKENDS}")
