"""``E(base_optimizer)``: the E adaptor in front of ANY torch optimizer.

For every parameter with a gradient, the base optimizer sees the adapted gradient instead of ``g_k``::

    a_k  = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1}),   a_0 = 0, g_0 = 0   (not bias-corrected)
    g~_k = g_k + alpha a_k

computed by ``valley_core.elementwise.e_adaptor_step`` in the core's one-buffer form (one carry buffer per
parameter instead of ``a`` and ``g_{k-1}``).

What ``step()`` does with ``p.grad``, exactly: for each parameter with a gradient it computes ``g~`` into
another tensor, sets ``p.grad = g~`` for the duration of ``base_optimizer.step()``, and then puts the user's
original gradient tensor back (``p.grad is`` the same object, with the same values, as before the call). So
gradient accumulation, clipping after the step, logging of ``p.grad`` and ``GradScaler`` all see the true
gradient. Cost: one gradient-sized tensor per parameter: on the fused CPU path a scratch buffer kept between
steps (reused, not optimizer state, not in ``state_dict``), elsewhere a temporary one per step. E's carry
changes only once the base optimizer's step has returned.

Differences from the authors' ``E`` (``e-optimizer-adaptor``): the adaptor's state is saved and restored by
``state_dict()``/``load_state_dict()`` (theirs is lost on checkpoint), ``p.grad`` is left as the user's
(theirs overwrites it), one buffer instead of two, no special case for models with few parameters, no
noise or clipping options, and ``|alpha| < 1/(1 - beta1)`` is enforced unless ``allow_unstable=True``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Union

import torch

import valley_core as vc
from backends.kernels.plan import Plan, Unplannable, derive
from backends.torch import _state, fused
from backends.torch.dispatch import Dispatcher
from valley_core.base import GradientTransformation
from valley_core.schedules import ScalarOrSchedule
from valley_core.transforms import EState
from valley_core.validation import validate_hyperparameters

_CARRY = "EState.carry"
#: The two kernels of E's plan: the adapted gradient before the base optimizer's step, the carry after it.
_UPDATE, _COMMIT = "valley_update", "valley_commit"
#: The plans of ``e_adaptor``: one for a number ``alpha`` (a per-step input), one per schedule.
_PLANS: Dict[Any, Union[Plan, Unplannable]] = {}


def e_adaptor(alpha: ScalarOrSchedule = 0.5, beta1: float = 0.01) -> GradientTransformation:
    """The core chain ``E`` runs: ``valley_core.e_adaptor`` alone (its plan writes the update, not the parameter)."""
    return vc.chain(vc.e_adaptor(alpha, beta1), name="e_adaptor")


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
        skip_nonfinite: skip the whole step (base optimizer included) when a gradient is not finite.
        implementation: where the adaptor's arithmetic runs: ``"auto"`` (default: the fused CPU kernel
            generated from ``valley_core.elementwise.e_adaptor_step``, ``backends.kernels.cpu``, for plain
            contiguous float32/float64 CPU tensors, op by op elsewhere), ``"core"`` (op by op) or ``"fused"``
            (the kernel, or ``RuntimeError``). Both give the same values bit for bit (tested).

    ``alpha``, ``e_beta`` and ``allow_unstable`` are attributes; assigning one re-checks the stability rule and
    raises ``ValueError`` (keeping the old value) when it is broken. ``copy.deepcopy``, ``pickle`` and
    ``torch.save`` of an ``E`` give a working optimizer; its state-dict hooks run as torch's do.

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
        dispatcher = Dispatcher("E", implementation, ("auto", "core", "fused"), "adapt these parameters")
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
        #: Fused path: the adapted gradient of each parameter, reused at every step (not optimizer state).
        self._scratch: Dict[torch.Tensor, torch.Tensor] = {}
        self.skipped_steps = 0
        self._initialising = True
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        self._initialising = False
        # Share the base optimizer's groups (the same list and dicts): lr changes and schedulers apply to both.
        self.param_groups = base_optimizer.param_groups

    # ------------------------------------------------------------------ hyperparameters, checked when assigned
    @property
    def alpha(self) -> ScalarOrSchedule:
        """The exploration coefficient (a float or a schedule ``k -> alpha_k``)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: ScalarOrSchedule) -> None:
        _checked(value, self._e_beta, self._allow_unstable)
        self._alpha = value

    @property
    def e_beta(self) -> float:
        """The E adaptor's EMA coefficient (the paper's ``beta1``)."""
        return self._e_beta

    @e_beta.setter
    def e_beta(self, value: float) -> None:
        self._e_beta = _checked(self._alpha, value, self._allow_unstable)

    #: The paper's name of ``e_beta``.
    beta1 = e_beta

    @property
    def allow_unstable(self) -> bool:
        """Whether the rule ``|alpha| < 1/(1 - beta1)`` is skipped."""
        return self._allow_unstable

    @allow_unstable.setter
    def allow_unstable(self, value: bool) -> None:
        _checked(self._alpha, self._e_beta, value)
        self._allow_unstable = value

    def __getstate__(self) -> Dict[str, Any]:
        """Everything ``E`` holds (torch's ``__getstate__`` keeps only defaults, state and groups), so that
        ``copy.deepcopy``, ``pickle`` and ``torch.save`` give a working ``E``. The fused path's scratch buffers
        are not state and are rebuilt."""
        own = {key: value for key, value in self.__dict__.items() if not key.endswith("_hooks")}  # as torch does
        return {**own, "_scratch": {}}

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
        plan = self._plan()
        entries = [(p, p.grad) for p in params]
        # Decided (and refused, if it must be) before anything is written.
        path = self.dispatcher.choose(plan, entries, self.state, low_precision=False) if params else "core"
        hyperparameters = {"alpha": self._alpha, "beta1": self._e_beta}
        lib = None
        if path == "fused":
            assert isinstance(plan, Plan)  # the dispatcher picks "fused" for a plan only
            lib = fused.library(plan, ((_UPDATE, frozenset({"update"})), (_COMMIT, frozenset({"b0"}))))
        originals: Dict[torch.Tensor, torch.Tensor] = {}
        new_state: Dict[torch.Tensor, Dict[str, Any]] = {}
        batches: Dict[tuple, list] = {}
        by_step: Dict[tuple, list] = defaultdict(list)
        for p in params:
            state = self.state[p]
            dtype = _state.state_dtype(p)
            carry = state[_CARRY] if state else torch.zeros_like(p.detach(), dtype=dtype)
            step = state["step"] if state else 0
            grad = p.grad
            assert grad is not None  # _params_with_grad
            originals[p] = grad
            new_state[p] = {_CARRY: carry, "step": step + 1}
            if path == "fused":
                # The adapted gradient goes to a scratch buffer kept between steps (fresh memory at every step is
                # page-faulted: slower than the step itself for large tensors); the carry is updated in place after
                # the base optimizer's step (the second kernel).
                adapted = self._scratch.get(p)
                if adapted is None or adapted.shape != grad.shape or adapted.dtype != grad.dtype:
                    adapted = self._scratch[p] = torch.empty_like(grad)
                batches.setdefault((step, p.dtype), []).append({"grad": grad, "update": adapted, "b0": carry})
                p.grad = adapted
            else:
                by_step[step, dtype].append(p)
        for (step, dtype), group in by_step.items():  # the core path: the chain's update, op by op
            transform = e_adaptor(self._alpha, self._e_beta)
            grads = tuple(_state.working_copy(originals[p], dtype) for p in group)
            counter = torch.tensor(step, dtype=torch.int32, device=group[0].device)
            carries = tuple(new_state[p][_CARRY] for p in group)
            adapted_grads, (inner,) = transform.update(grads, (EState(counter, carries),), xp=_state.namespace())
            for p, adapted, carry in zip(group, adapted_grads, inner.carry):
                new_state[p][_CARRY] = carry
                p.grad = adapted.to(originals[p].dtype)
        if batches:
            fused.run(plan, hyperparameters, batches, _UPDATE, lib)  # type: ignore[arg-type]  # a Plan when fused
        try:
            self.base_optimizer.step()
        finally:
            for p, grad in originals.items():
                p.grad = grad
        if batches:
            fused.run(plan, hyperparameters, batches, _COMMIT, lib)  # type: ignore[arg-type]  # a Plan when fused
        for p, state in new_state.items():
            self.state[p] = state
        return loss

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
    def _index_of(self) -> Dict[int, torch.Tensor]:
        params = [p for group in self.param_groups for p in group["params"]]
        return dict(enumerate(params))

    def state_dict(self) -> Dict[str, Any]:
        """The base optimizer's state dict plus an ``"e_adaptor"`` entry with the adaptor's own state.

        ``"e_adaptor"``: ``{"alpha", "e_beta", "allow_unstable", "state": {param index: {"EState.carry": tensor,
        "step": int}}}`` with the same parameter indices as the base optimizer's ``"state"``. The state-dict
        hooks registered on ``E`` run as torch's ``Optimizer.state_dict`` runs them.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict = dict(self.base_optimizer.state_dict())
        index = {id(p): i for i, p in self._index_of().items()}
        state_dict["e_adaptor"] = {
            "alpha": self._alpha,
            "e_beta": self._e_beta,
            "allow_unstable": self._allow_unstable,
            "state": {index[id(p)]: {_CARRY: s[_CARRY], "step": s["step"]} for p, s in self.state.items() if s},
        }
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores the adaptor's state and then the base optimizer's.

        The adaptor's part is checked first (hyperparameters, parameter indices, keys, shapes); on any
        mismatch a ``ValueError`` names it and nothing is changed. Then the base optimizer loads its part
        (its own checks apply); if it raises, the adaptor's state is left unchanged too.
        """
        if isinstance(state_dict, dict):
            state_dict = state_dict.copy()
            for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
                result = pre_hook(self, state_dict)
                if result is not None:
                    state_dict = result
        if not isinstance(state_dict, dict) or "e_adaptor" not in state_dict:
            raise ValueError(
                "E.load_state_dict: the state dict has no 'e_adaptor' entry; it was not saved by "
                "backends.torch.E (a base optimizer's or the authors' E state dict lacks the "
                "adaptor's state)"
            )
        saved = state_dict["e_adaptor"]
        problems: List[str] = []
        try:  # valley 0.1.0 wrote the coefficient as "beta1"
            e_beta = _checked(
                saved["alpha"],
                saved["e_beta"] if "e_beta" in saved else saved["beta1"],
                saved.get("allow_unstable", False),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"E.load_state_dict: invalid 'e_adaptor' hyperparameters: {error}") from None
        params = self._index_of()
        for index, entry in saved.get("state", {}).items():
            if index not in params:
                problems.append(f"state for parameter index {index!r}, but the optimizer has {len(params)} parameters")
                continue
            p = params[index]
            if not isinstance(entry, dict) or set(entry) != {_CARRY, "step"}:
                keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                problems.append(f"parameter {index}: keys {keys}, expected ['{_CARRY}', 'step']")
                continue
            carry = entry[_CARRY]
            if not isinstance(carry, torch.Tensor) or tuple(carry.shape) != tuple(p.shape):
                shape = tuple(carry.shape) if isinstance(carry, torch.Tensor) else type(carry).__name__
                problems.append(f"parameter {index}: {_CARRY} has shape {shape}, the parameter {tuple(p.shape)}")
            step = entry["step"]
            if isinstance(step, torch.Tensor) and step.numel() == 1 and float(step) == int(step):
                step = int(step)
            if isinstance(step, bool) or not isinstance(step, int):
                problems.append(f"parameter {index}: step must be an int, got {entry['step']!r}")
        if problems:
            raise ValueError("E.load_state_dict: the adaptor's state does not match: " + "; ".join(problems))
        base_part = {key: value for key, value in state_dict.items() if key != "e_adaptor"}
        self.base_optimizer.load_state_dict(base_part)
        self.param_groups = self.base_optimizer.param_groups
        self.state.clear()
        for index, entry in saved.get("state", {}).items():
            p = params[index]
            self.state[p] = {
                _CARRY: entry[_CARRY].to(device=p.device, dtype=_state.state_dtype(p), copy=True),
                "step": int(entry["step"]),
            }
        self._alpha, self._e_beta = saved["alpha"], e_beta
        self._allow_unstable = saved.get("allow_unstable", False)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)


def _checked(alpha: Any, e_beta: Any, allow_unstable: Any) -> float:
    """``e_beta`` as a float after ``valley_core.validation`` checked alpha, e_beta and the stability rule."""
    if not isinstance(allow_unstable, bool):
        raise ValueError(f"allow_unstable={allow_unstable!r} violates allow_unstable is a bool")
    (checked,) = validate_hyperparameters(
        alpha=alpha, betas=(e_beta,), beta_names=("beta1",), allow_unstable=allow_unstable
    )
    return checked
