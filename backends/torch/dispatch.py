"""The one dispatcher: which executor runs a step, for the ``ValleyOptimizer`` classes and for ``E``.

Executors (each consumes a ``backends.kernels.plan.Plan`` and knows no optimizer; table: ``docs/torch.md``,
"Implementations"): ``core`` (the core chain's ``update`` on torch tensors, ``_state.core_update``: the reference,
everything), ``fused`` (C++ generated from the plan, ``backends.torch.fused``: plain contiguous CPU tensors) and
``compiled`` (``torch.compile`` of the plan's passes, ``backends.torch.compiled``: float32/float64, the CUDA path).

``implementation="auto"`` takes the first that can run a group (fused, compiled, core); an explicit choice
runs that executor or raises ``RuntimeError`` with the reason. Every decision is taken before anything is
written. When an executor fails under ``"auto"`` (no C++ compiler, a compilation error), a
``RuntimeWarning`` says why, once, and the next executor is used from then on.

Under ``torch.compile(optimizer.step)`` the dispatcher is not consulted: the classes trace the plan's step (or the
core chain for ``"core"`` and chains without a plan) into the caller's graph (``ValleyOptimizer._traced_step``).
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Union

from backends.kernels.cpu import KernelUnavailable
from backends.kernels.plan import Plan, Unplannable
from backends.torch import compiled, fused
from backends.torch.compact_state import FLOAT32, Codec

IMPLEMENTATIONS = ("auto", "core", "compiled", "fused")


class Dispatcher:
    """Picks the executor of each step for one optimizer and remembers the executors that failed.

    Args:
        owner: the optimizer's name, for messages.
        implementation: one of :data:`IMPLEMENTATIONS` (every optimizer offers them all).
        what: what a refusal says cannot be done (``"run this group"``).
    """

    def __init__(self, owner: str, implementation: str, what: str = "run this group") -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation={implementation!r} violates implementation in {IMPLEMENTATIONS}")
        self.owner = owner
        self.implementation = implementation
        self.what = what
        #: Executors no longer used (``"auto"``), with the reason.
        self.failed: Dict[str, str] = {}

    def choose(
        self, plan: Union[Plan, Unplannable], entries, states, low_precision: bool = True, codec: Codec = FLOAT32
    ) -> str:
        """``"fused"``, ``"compiled"`` or ``"core"`` for ``(param, grad)`` entries whose state is ``states[p]``.

        ``codec``: the storage of the state buffers (``backends.torch.compact_state``).

        Raises:
            RuntimeError: an explicit ``implementation`` that cannot run these entries (nothing written yet).
        """
        wanted = self.implementation
        if wanted == "core":
            return "core"
        if isinstance(plan, Unplannable):
            self._refuse(wanted, str(plan))
            return "core"
        if wanted in ("fused", "auto") and "fused" not in self.failed:
            reason = fused.unsupported_reason(plan, entries, states, low_precision, codec)
            if reason is None:
                try:
                    fused.library(plan, codec=codec)
                    return "fused"
                except KernelUnavailable as error:
                    reason = f"the fused CPU kernels could not be built: {error}"
                    if wanted == "auto":
                        self.give_up("fused", reason, "using the compiled or core path instead")
            if wanted == "fused":
                self._refuse(wanted, reason)
        if "compiled" not in self.failed:
            reason = compiled.unsupported_reason(entries)
            if reason is None and not codec.compiled:
                reason = f"state_dtype={codec.name!r}: the compiled path runs float32 state (the core path runs it)"
            if reason is None:
                return "compiled"
            self._refuse(wanted, reason)
        return "core"

    def _refuse(self, wanted: str, reason: Optional[str]) -> None:
        if wanted != "auto":
            raise RuntimeError(f"{self.owner}(implementation={wanted!r}) cannot {self.what}: {reason}")

    def give_up(self, executor: str, reason: str, instead: str) -> None:
        """Stops using ``executor`` (``"auto"``), with a ``RuntimeWarning``; raises for an explicit choice."""
        if self.implementation == executor:
            raise RuntimeError(f"{self.owner}(implementation={executor!r}): {reason}")
        warnings.warn(f"{self.owner}: {reason}; {instead}", RuntimeWarning, stacklevel=4)
        self.failed[executor] = reason
