"""``E(base_optimizer)``: the E adaptor in front of ANY torch optimizer (the maths: ``docs/algorithm.md``; the
user's guide: ``docs/torch.md``, sections on implementations, state and checkpoints, and gradients).

E is one more user of the execution plan: the core chain ``e_adaptor`` (its plan writes the adapted gradient,
not the parameter) run by the classes' dispatcher and executors (core, fused, compiled). What is E's own:

- ``p.grad``: for each parameter with a gradient, the adapted gradient goes to another tensor (on the fused and
  compiled paths a scratch buffer kept between steps, not state), ``p.grad`` is set to it for the duration of
  ``base_optimizer.step()``, then the user's tensor is put back (the same object, unchanged).
- State: ``E.state`` IS the base's ``state``; E's ``"e_carry"`` and ``"e_step"`` (0-d int32) sit in each
  parameter's entry beside the base's, so torch's DCP helpers save them sharded like the parameters. They are
  written only after the base's step has returned, and only if the base stepped (a base that counts skipped steps
  in ``skipped_steps`` tells E so); during the base's step they are hidden where they are all of ``state[p]``,
  so a base that initialises an empty state still does. Checkpoints: ``backends.torch.checkpoint``.
- torch's global step hooks fire once per ``E.step`` (set aside while the base steps inside E; not thread-safe
  against another optimizer stepping meanwhile); per-instance hooks of E and of the base fire once each.
- ``maximize=True`` of the base: ``-g~(g) = g~(-g)``, so E over a maximizing base is E over the minimizing base
  on ``-f`` (carry of opposite sign); E negates nothing itself.

Differences from the authors' ``E`` (``e-optimizer-adaptor``): the adaptor's state is checkpointed, ``p.grad`` is
left as the user's, one buffer instead of two, no special case for models with few parameters, no noise or
clipping options, and ``|alpha| < 1/(1 - beta1)`` is enforced unless ``allow_unstable=True``.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.optim.optimizer as torch_optimizer

import valley_core as vc
from backends.kernels.plan import GRAD, UPDATE, Plan, Unplannable, derive
from backends.torch import _state, checkpoint, compiled, fused
from backends.torch.checkpoint import CARRY, STEP
from backends.torch.dispatch import Dispatcher
from valley_core.base import GradientTransformation
from valley_core.schedules import ScalarOrSchedule
from valley_core.validation import validate_hyperparameters

#: The two kernels of E's plan: the adapted gradient before the base optimizer's step, the carry after it.
_UPDATE, _COMMIT = "valley_update", "valley_commit"
#: The plans of ``e_adaptor``: one for a number ``alpha`` (a per-step input), one per schedule.
_PLANS: Dict[Any, Union[Plan, Unplannable]] = {}


def e_adaptor(alpha: ScalarOrSchedule = 0.5, beta1: float = 0.01) -> GradientTransformation:
    """The core chain ``E`` runs: ``valley_core.e_adaptor`` alone (its plan writes the update, not the parameter)."""
    return vc.chain(vc.e_adaptor(alpha, beta1), name="e_adaptor")


def _hyperparameter(name: str, doc: str) -> Any:
    """A hyperparameter of ``E`` as an attribute: assigning it re-checks the stability rule with the other two and
    raises ``ValueError`` (keeping the old value) when it is broken."""

    def get(self: E) -> Any:
        return getattr(self, "_" + name)

    def set(self: E, value: Any) -> None:
        values = {"alpha": self._alpha, "e_beta": self._e_beta, "allow_unstable": self._allow_unstable, name: value}
        checked_beta = _checked(values["alpha"], values["e_beta"], values["allow_unstable"])
        setattr(self, "_" + name, checked_beta if name == "e_beta" else value)

    return property(get, set, doc=doc)


class E(torch.optim.Optimizer):
    """Wraps ``base_optimizer`` so that it receives ``g + alpha * EMA_beta1(g_k - g_{k-1})``.

    Maths (paper, Section 3; ``valley_core.elementwise.e_adaptor_step``)::

        a_k  = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1})
        g~_k = g_k + alpha a_k          -> base_optimizer.step() with p.grad = g~_k

    Deviations from the paper: none. ``E(torch.optim.Adam(...))`` equals ``EAdam`` up to round-off.

    Args:
        base_optimizer: any ``torch.optim.Optimizer`` (Adam, SGD, a user's own). Its ``param_groups`` are
            shared: changing ``lr`` on ``E`` changes it on the base, LR schedulers work on either.
        alpha: exploration coefficient (float, or a schedule ``k -> alpha_k``); ``< 0`` explores.
        e_beta: the paper's ``beta1``, persistence of the EMA of gradient differences, in ``[0, 1)`` (also
            accepted as ``beta1=``). Named ``e_beta`` as in every torch optimizer of valley, where ``betas``
            belongs to the moments that torch's schedulers cycle.
        allow_unstable: skip the rule ``|alpha| < 1/(1 - beta1)``.
        skip_nonfinite: skip the whole step (base optimizer included) when a gradient is not finite. A base that
            skips steps itself (``ALTO(..., skip_nonfinite=True)``) is followed without this: E's state moves only
            when the base's does (see the module docstring).
        implementation: the executor of the adaptor's plan, as for the classes (``backends.torch.dispatch``):
            ``"auto"`` (default), ``"core"``, ``"fused"`` (plain float32/float64 CPU tensors) or ``"compiled"``
            (float32/float64; the CUDA path); an explicit one that cannot run raises ``RuntimeError``.

    ``alpha``, ``e_beta`` and ``allow_unstable`` are attributes; assigning one re-checks the stability rule and
    raises ``ValueError`` (keeping the old value) when it is broken. ``copy.deepcopy``, ``pickle`` and
    ``torch.save`` of an ``E`` give a working optimizer (pickles of valley <= 0.1.x load too); its state-dict
    hooks run as torch's do.

    ``skipped_steps`` counts the steps that changed nothing (``skip_nonfinite`` or a base that skipped).

    Optimizers whose ``step`` re-evaluates the closure several times (``torch.optim.LBFGS``) are refused:
    ``E`` evaluates the closure once and adapts that gradient.

    Example:
        >>> import torch
        >>> from backends.torch import E
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
        >>> opt = E(torch.optim.SGD([w], lr=0.1), alpha=0.5, e_beta=0.01)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     _ = opt.step()
        >>> bool(w.abs().max() < 1e-3)
        True
    """

    #: The valley version that wrote the last checkpoint loaded (``"0.1.0"`` for one that does not say, such as a
    #: checkpoint of valley 0.1.x or one that went through DCP); None before any ``load_state_dict``.
    checkpoint_version: Optional[str] = None

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        alpha: ScalarOrSchedule = 0.5,
        e_beta: Optional[float] = None,
        *,
        beta1: Optional[float] = None,
        allow_unstable: bool = False,
        skip_nonfinite: bool = False,
        implementation: str = "auto",
    ) -> None:
        if e_beta is not None and beta1 is not None:
            raise TypeError("E got both e_beta and beta1 (the paper's name of the same coefficient): give one")
        e_beta = 0.01 if e_beta is None and beta1 is None else (e_beta if e_beta is not None else beta1)
        dispatcher = Dispatcher("E", implementation, what="adapt these parameters")
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"E needs a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        if isinstance(base_optimizer, torch.optim.LBFGS):
            raise TypeError("E cannot wrap torch.optim.LBFGS: it re-evaluates the closure inside step()")
        if not isinstance(skip_nonfinite, bool):
            raise ValueError(f"skip_nonfinite={skip_nonfinite!r} violates skip_nonfinite is a bool")
        checked_beta = _checked(alpha, e_beta, allow_unstable)
        for group in base_optimizer.param_groups:
            _state.parameter_list("E", group["params"])  # refuses a parameter listed twice
        self.base_optimizer = base_optimizer
        self._alpha, self._e_beta, self._allow_unstable = alpha, checked_beta, allow_unstable
        self.skip_nonfinite = skip_nonfinite
        self.implementation = implementation
        self.dispatcher = dispatcher
        #: Fused and compiled paths: the adapted gradient of each parameter, reused at every step (not state).
        self._scratch: Dict[torch.Tensor, torch.Tensor] = {}
        self.skipped_steps = 0
        self._initialising = True
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        self._initialising = False
        # Share the base optimizer's groups (the same list and dicts): lr changes and schedulers apply to both.
        self.param_groups = base_optimizer.param_groups

    # ------------------------------------------------------------------------------------------- state
    @property  # type: ignore[override]
    def state(self) -> Any:
        """The base optimizer's ``state`` (always the current one, also after ``base_optimizer.load_state_dict``):
        E's ``"e_carry"`` and ``"e_step"`` sit in each parameter's entry next to the base's own."""
        return self.base_optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        if not self.__dict__.get("_initialising", False):  # torch's __init__ assigns an empty state: not the base's
            self.base_optimizer.state = value

    # ------------------------------------------------------------------ hyperparameters, checked when assigned
    alpha = _hyperparameter("alpha", "The exploration coefficient (a float or a schedule ``k -> alpha_k``).")
    e_beta = _hyperparameter("e_beta", "The E adaptor's EMA coefficient (the paper's ``beta1``).")
    #: The paper's name of ``e_beta``.
    beta1 = e_beta
    allow_unstable = _hyperparameter("allow_unstable", "Whether the rule ``|alpha| < 1/(1 - beta1)`` is skipped.")

    def __getstate__(self) -> Dict[str, Any]:
        """Everything ``E`` holds (torch's ``__getstate__`` keeps only defaults, state and groups), so that
        ``copy.deepcopy``, ``pickle`` and ``torch.save`` give a working ``E``. The fused path's scratch buffers
        are not state and are rebuilt."""
        own = {key: value for key, value in self.__dict__.items() if not key.endswith("_hooks")}  # as torch does
        return {**own, "_scratch": {}}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Restores a pickled ``E``. Pickles of valley <= 0.1.x hold E's own ``state`` (``{p: {<the core's carry
        key>, "step"}}``, apart from the base's): it is moved into the base's state as ``"e_carry"`` / ``"e_step"``."""
        state = dict(state)
        legacy = state.pop("state", None)
        super().__setstate__(state)
        for p, entry in (legacy or {}).items():
            if isinstance(p, torch.Tensor) and entry:
                step = _state.step_tensor(int(entry["step"]))
                self.base_optimizer.state[p].update({CARRY: entry[checkpoint.core_carry()], STEP: step})

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds the group to the base optimizer (whose groups ``E`` shares)."""
        if getattr(self, "_initialising", False):
            super().add_param_group(param_group)
        else:
            self.base_optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The base optimizer's ``zero_grad``."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def _params_with_grad(self) -> List[torch.Tensor]:
        params = []
        for group_index, group in enumerate(self.param_groups):
            for param_index, p in enumerate(group["params"]):
                if p.grad is not None:
                    _state.check_dense_float("E", group_index, param_index, p, p.grad)
                    params.append(p)
        return params

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Adapts the gradients, runs ``base_optimizer.step()``, restores the user's gradients.

        Returns:
            The closure's loss (the closure is evaluated once, before adapting), or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params_with_grad()
        if self.skip_nonfinite and not _state.all_finite(p.grad for p in params):
            self.skipped_steps += 1
            return loss
        states = self.state
        stored = {p: states.get(p) or {} for p in params}  # .get: no empty entries made for parameters
        plan = self._plan()
        originals: Dict[torch.Tensor, torch.Tensor] = {p: p.grad for p in params if p.grad is not None}
        entries = list(originals.items())
        # Decided (and refused, if it must be) before anything is written; the plan names the carry as the core does.
        carries = {
            p: {key: e[CARRY] for _, key in getattr(plan, "buffers", ())} for p, e in stored.items() if CARRY in e
        }
        path = self.dispatcher.choose(plan, entries, carries, low_precision=False) if params else "core"
        compiling = torch.compiler.is_compiling()
        path = "core" if compiling and path == "compiled" else path  # torch.compile(E.step): traced into its graph
        new_state: Dict[torch.Tensor, Dict[str, Any]] = {}
        for p, entry in stored.items():
            fresh = CARRY not in entry
            carry = torch.zeros_like(p.detach(), dtype=_state.state_dtype(p)) if fresh else entry[CARRY]
            # A 0-d int32 tensor, as the classes' "step": a compiled step reads it inside the graph (a Python int
            # is a value Dynamo guards on, so every step recompiled); eager steps group tensors by its value.
            new_state[p] = {CARRY: carry, STEP: _state.step_tensor(0) if fresh else entry[STEP]}
        commit, failure = None, None
        if path == "core":
            self._core_update(new_state, originals, compiling)
        else:
            assert isinstance(plan, Plan)  # the dispatcher picks "fused" or "compiled" for a plan only
            commit, failure = self._planned_update(plan, path, new_state, originals, compiling)
        skipped_before = getattr(self.base_optimizer, "skipped_steps", None)
        # E's entries are set aside where they are all of p's state, so that the base sees an empty state[p] there.
        hidden = {
            p: {key: entry.pop(key) for key in list(entry)}
            for p, entry in stored.items()
            if entry and all(key in (CARRY, STEP) for key in entry)
        }
        try:
            with _global_step_hooks_set_aside():
                self.base_optimizer.step()
        finally:
            for p, grad in originals.items():
                p.grad = grad
            states = self.state  # the base's state (a base may have replaced the dict)
            for p, entry in hidden.items():
                states[p].update(entry)
        if getattr(self.base_optimizer, "skipped_steps", None) != skipped_before:
            self.skipped_steps += 1  # the base skipped its step: E's carry and step count stay as they were
        else:
            if commit is not None:
                commit()
            for p, entry in new_state.items():
                states[p].update(entry)
            _state.advance([states[p] for p in new_state], STEP)
        if failure is not None:  # reported once the step is complete (an explicit "compiled" raises it)
            self.dispatcher.give_up(
                "compiled",
                f"{failure} (this step was completed eagerly by the same functions)",
                "later steps use the core path",
            )
        return loss

    def _core_update(self, new_state: Dict[torch.Tensor, Dict[str, Any]], originals, compiling: bool) -> None:
        """The core executor (``_state.core_update``, as the classes' ``core_step``): ``p.grad`` set to the adapted
        gradient, the new carry in ``new_state``. Tensors at the same step update together; under
        ``torch.compile`` each tensor is its own group, its step tensor the counter (no value read on the host)."""
        transform = e_adaptor(self._alpha, self._e_beta)
        by_step: Dict[tuple, list] = defaultdict(list)
        for p, entry in new_state.items():
            by_step[(p if compiling else int(entry[STEP])), _state.state_dtype(p)].append(p)
        for (step, dtype), group in by_step.items():
            grads = tuple(_state.working_copy(originals[p], dtype) for p in group)
            device = group[0].device
            counter = new_state[group[0]][STEP] if compiling else torch.tensor(step, dtype=torch.int32, device=device)
            carries = [new_state[p][CARRY] for p in group]
            adapted, buffers = _state.core_update(
                transform, grads, None, lambda i, _: carries[i], counter, _state.namespace()
            )
            for p, update, new in zip(group, adapted, buffers):
                (new_state[p][CARRY],) = new.values()  # E's one buffer
                p.grad = update.to(originals[p].dtype)

    def _planned_update(
        self, plan: Plan, path: str, new_state: Dict[torch.Tensor, Dict[str, Any]], originals, compiling: bool
    ) -> Tuple[Optional[Callable[[], None]], Optional[str]]:
        """The fused or compiled executor of E's plan: ``p.grad`` set to the adapted gradient, written into a buffer
        kept between steps (fresh memory at every step is page-faulted: slower than the step itself for large
        tensors). The fused kernels update the carry in place after the base's step (the second kernel, returned);
        the compiled passes write a copy of it, which ``new_state`` holds (and return why compilation failed, if
        it did: the step was completed eagerly)."""
        roles = [role for role, _ in plan.buffers]
        hyperparameters = {"alpha": self._alpha, "beta1": self._e_beta}
        batches: Dict[tuple, list] = {}
        for p, entry in new_state.items():
            grad = originals[p]
            adapted = self._scratch.get(p)
            if adapted is None or adapted.shape != grad.shape or adapted.dtype != grad.dtype:
                adapted = self._scratch[p] = torch.empty_like(grad)
            if path == "compiled":
                entry[CARRY] = entry[CARRY].clone()
            step = entry[STEP] if compiling else int(entry[STEP])
            batches.setdefault((step, p.dtype), []).append(
                {GRAD: grad, UPDATE: adapted, **dict.fromkeys(roles, entry[CARRY])}
            )
            p.grad = adapted
        if path == "compiled":
            return None, compiled.run(plan, hyperparameters, batches)
        lib = fused.library(plan, ((_UPDATE, frozenset({UPDATE})), (_COMMIT, frozenset(roles))))
        fused.run(plan, hyperparameters, batches, _UPDATE, lib)
        return lambda: fused.run(plan, hyperparameters, batches, _COMMIT, lib), None

    def _plan(self) -> Union[Plan, Unplannable]:
        """The plan of ``e_adaptor(alpha, beta1)`` (one per kind of ``alpha``: a number, or each schedule)."""
        key = self.alpha if callable(self.alpha) else type(self.alpha)
        if key not in _PLANS:
            try:
                _PLANS[key] = derive(
                    e_adaptor, {"alpha": self._alpha, "beta1": self._e_beta}, writes_param=False, name="e_adaptor"
                )
            except Unplannable as error:
                _PLANS[key] = error
        return _PLANS[key]

    # ----------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """The base optimizer's state dict (each parameter's state holding E's ``"e_carry"`` and ``"e_step"``),
        plus ``"e_adaptor"`` (``{"alpha", "e_beta", "allow_unstable"}``) and ``"valley_version"``; the state-dict
        hooks registered on ``E`` run as torch's ``Optimizer.state_dict`` runs them."""
        return checkpoint.save_e(self)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores E's state (and its hyperparameters when saved), then the base optimizer's.

        Layouts read: today's (E's ``"e_carry"``/``"e_step"`` in each parameter's state; ``"e_adaptor"`` and
        ``"valley_version"`` optional, since torch's distributed-checkpoint helpers drop them: without
        ``"e_adaptor"``, E keeps the hyperparameters it was built with) and that of valley 0.1.x (no
        ``"valley_version"``; E's state under ``["e_adaptor"]["state"]`` by parameter position, as the core's
        carry and ``"step"``; the coefficient possibly named ``"beta1"``), which is converted. Parameters
        are matched by their order in ``param_groups``, as torch matches them (parameter ids, or the parameter
        names of DCP). Entries of ``"state"`` that name no parameter pass through to the base optimizer.

        E's part is checked first (hyperparameters, keys, shapes, steps); on any mismatch a ``ValueError`` names
        it and nothing is changed. Then the base optimizer loads the rest (its own checks apply); if it raises,
        nothing is changed either.
        """
        checkpoint.load_e(self, state_dict, _checked)


@contextmanager
def _global_step_hooks_set_aside() -> Iterator[None]:
    """torch's global optimizer step hooks, set aside while the base optimizer steps inside ``E.step``: torch's
    wrapper fires them for ``E``, so they fire once per step (not again for the base). The base's own per-instance
    hooks still fire. Hooks registered meanwhile are kept."""
    hooks = [
        table
        for table in (
            getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
            getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
        )
        if isinstance(table, dict)
    ]
    kept = [dict(table) for table in hooks]
    for table in hooks:
        table.clear()
    try:
        yield
    finally:
        for table, before in zip(hooks, kept):
            added = dict(table)
            table.clear()
            table.update(before)
            table.update(added)


def _checked(alpha: Any, e_beta: Any, allow_unstable: Any) -> float:
    """``e_beta`` as a float after ``valley_core.validation`` checked alpha, e_beta and the stability rule."""
    if not isinstance(allow_unstable, bool):
        raise ValueError(f"allow_unstable={allow_unstable!r} violates allow_unstable is a bool")
    (checked,) = validate_hyperparameters(
        alpha=alpha, betas=(e_beta,), beta_names=("beta1",), allow_unstable=allow_unstable
    )
    return checked
