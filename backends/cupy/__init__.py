"""The CuPy adapter: stateful optimizers for raw CuPy training loops, with kernels generated from the core.

    >>> import cupy as cp                                  # doctest: +SKIP
    >>> from backends.cupy import ALTO                     # doctest: +SKIP
    >>> w = cp.array([3.0, -2.0])                          # doctest: +SKIP
    >>> opt = ALTO([w], lr=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)  # doctest: +SKIP
    >>> for _ in range(300):                               # doctest: +SKIP
    ...     _ = opt.step([2 * w])                          # the gradient of ||w||^2; w is updated in place

How it is built (see ``docs/cupy.md``):

- the hyperparameters are validated and the state is laid out by the ``valley_core`` factories;
- a step runs the execution plan derived from the factory's chain (``backends.kernels.plan``): one CuPy
  ``RawKernel`` per pass for up to 16 tensors, generated from the plan's statements, the norms' sums
  accumulated on the device, so a step never waits for the GPU;
- ``array_module="numpy"`` runs exactly the same plan on NumPy arrays (interpreted by NumPy): it is how the
  CPU test suite checks this adapter against the core.

Importing this module imports neither CuPy nor CUDA. Constructing an optimizer (with the default
``array_module="cupy"``) raises ``RuntimeError`` when CuPy is not installed or CUDA is not available.
"""

from __future__ import annotations

import valley_core as vc
from backends.cupy._engine import import_cupy
from backends.cupy._optimizer import Optimizer, optimizer_class

ALTO = optimizer_class("ALTO", vc.alto, __name__)
ALTOVanilla = optimizer_class("ALTOVanilla", vc.alto_vanilla, __name__)
Lamb = optimizer_class("Lamb", vc.lamb, __name__)
EAdam = optimizer_class("EAdam", vc.eadam, __name__)
EAdamW = optimizer_class("EAdamW", vc.eadamw, __name__)
ESGD = optimizer_class("ESGD", vc.esgd, __name__)

#: The optimizers of this backend by core name (used by benchmarks/gpu_check.py and the tests).
OPTIMIZERS = {info.name: globals()[info.class_name] for info in vc.REGISTRY.values() if info.class_name in globals()}


def cuda_available() -> bool:
    """True if CuPy is installed and sees a CUDA device (never raises)."""
    try:
        import_cupy()
    except RuntimeError:
        return False
    return True


__all__ = ["ALTO", "ALTOVanilla", "EAdam", "EAdamW", "ESGD", "Lamb", "OPTIMIZERS", "Optimizer", "cuda_available"]
