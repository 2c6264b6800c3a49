"""``torch.optim.Optimizer`` subclasses that execute a ``valley_core`` optimizer.

One generic class, :class:`ValleyOptimizer`, runs any ``valley_core`` factory (``vc.alto``, ``vc.eadam`` ...)
over the parameters of each param group. The named optimizers are one line each::

    ALTO = optimizer_class("ALTO", vc.alto, doc=...)

so that a new core optimizer (``vc.adam_cm``, say) becomes a torch optimizer with
``AdamCM = optimizer_class("AdamCM", vc.adam_cm)``.

Hyperparameters: the factory's keyword arguments (same names and defaults), per param group, validated by
``valley_core.validation`` when the optimizer is built, when a group is added, when a state dict is loaded
and whenever a group's values change (an LR scheduler, say). The per-tensor masks of the core
(``weight_decay_mask``, ``trust_ratio_mask``) become per-group settings: ``weight_decay=0`` in a group, and
the boolean group key ``trust_ratio`` for optimizers that have a trust ratio.

Execution: the group's hyperparameters are mapped to the factory's keyword arguments in ONE place
(:func:`factory_kwargs`); the factory's chain gives the execution plan (``backends.kernels.plan``); the
dispatcher (``backends.torch.dispatch``, shared with ``E``) picks the executor (``"core"``, ``"fused"``,
``"compiled"``, or ``"auto"``: the first that can run), which gets the plan, the hyperparameters and the state,
not the optimizer. The parity suites prove them equal to the core.

State (``self.state[p]``): the core's per-tensor buffers under their core names without the index and ONE step
counter, ``"step"`` (a 0-d int32 tensor, as torch's optimizers keep theirs, so that a compiled step reads it
without recompiling): the core's counters all equal it and are made from it when the core runs. Checkpoints:
``backends.torch.checkpoint`` (they record ``"valley_version"``; those of valley 0.1.0 load).

``torch.compile(optimizer.step)``: Dynamo runs :meth:`ValleyOptimizer._init_group` eagerly (its protocol for
torch's optimizers) and traces the plan's whole step (``backends.torch.compiled.render_step``): one graph,
per-step scalars computed from the step tensors in the graph (see :meth:`ValleyOptimizer._traced_step`).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

import valley_core as vc
from backends.kernels.plan import Plan, Unplannable, derive
from backends.torch import _state, checkpoint, compact_state, compiled, fused
from backends.torch.dispatch import Dispatcher
from backends.torch.hyperparameters import (
    factory_kwargs,
    hyperparameter_defaults,
    hyperparameter_sources,
    refuse_torch_flags,
    signature,
    to_torch_keys,
)
from valley_core.base import GradientTransformation
from valley_core.serialization import VERSION_KEY

#: Per factory: the settings most recently validated; the plans of recent structures. Bounded: an LR scheduler
#: makes a new setting at every step, and those must not accumulate.
_CACHE_SIZE = 64
_VALID_GROUPS: Dict[Any, Dict[tuple, None]] = {}
_PLANS: Dict[Any, Dict[tuple, Union[Plan, Unplannable]]] = {}


def _typed(value: Any, floats: bool = True) -> Any:
    """A hashable key for ``value`` that tells ``1``, ``1.0`` and ``True`` apart (their ``==`` does not).

    ``floats=False`` keeps only the type of real numbers (a 0-d tensor counts as a float): the plan depends on
    structure, not on values.
    """
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_typed(item, floats) for item in value))
    if not floats and (isinstance(value, float) or (isinstance(value, torch.Tensor) and value.dim() == 0)):
        return float
    return (type(value), value)


def _remember(cache: Dict[tuple, Any], key: tuple, value: Any) -> None:
    """Stores ``key`` in a small insertion-ordered cache, dropping the oldest entry beyond ``_CACHE_SIZE``."""
    cache[key] = value
    if len(cache) > _CACHE_SIZE:
        del cache[next(iter(cache))]


class ValleyOptimizer(torch.optim.Optimizer):
    """Runs the ``valley_core`` optimizer ``factory`` as a ``torch.optim.Optimizer``.

    Subclasses set ``factory`` (usually through :func:`optimizer_class`). Positional and keyword
    hyperparameters are the factory's, in the factory's order, with the factory's defaults.

    Args:
        params: an iterable of tensors or of param-group dicts (as for any torch optimizer).
        *args: hyperparameters by position (``lr`` first).
        implementation: ``"auto"``, ``"core"``, ``"compiled"`` or ``"fused"`` (see the module docstring).
        skip_nonfinite: if True, a step where any gradient holds NaN or Inf is skipped as a whole:
            parameters and state are untouched, ``step`` returns the closure's loss as usual, and
            ``skipped_steps`` counts it. Costs one host synchronisation per step. Default False.
        **kwargs: hyperparameters by name; for optimizers with a trust ratio also ``trust_ratio`` (bool,
            default True: the paper applies it to every tensor).

    State (``self.state[p]``): the core's per-tensor buffers under their core names without the index
    (``"EState.carry"``, ``"AdamState.first"``, ``"AdamState.second"``, ...) and one step counter, ``"step"``
    (a 0-d int32 tensor; the core's counters are made from it). Buffers of bfloat16/float16 parameters are
    float32. ``maximize=True`` (a group setting) ascends the loss; torch's ``foreach``/``fused``/``capturable``/
    ``differentiable`` are refused with what to use instead.
    A parameter listed twice is refused (``ValueError``).
    """

    #: The ``valley_core`` factory this class runs (a function returning a ``GradientTransformation``).
    factory: Callable[..., GradientTransformation]
    #: The valley version that wrote the last checkpoint loaded (``"0.1.0"`` for one that does not say); None
    #: before any load. A class attribute too, so that pickles of earlier versions have it.
    checkpoint_version: Optional[str] = None
    #: Per param group, the traced step of its plan (set by :meth:`_init_group` while Dynamo traces; never pickled).
    _programs: Sequence[Optional[Callable[..., None]]] = ()

    def __init__(
        self,
        params: Iterable[Any],
        *args: Any,
        implementation: str = "auto",
        skip_nonfinite: bool = False,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        refuse_torch_flags(name, kwargs)
        names = self.hyperparameter_names()
        if len(args) > len(names):
            raise TypeError(
                f"{name} takes at most {len(names)} positional hyperparameters ({', '.join(names)}), got {len(args)}"
            )
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key in given:
                raise TypeError(f"{name} got multiple values for hyperparameter {key!r}")
            given[key] = value
        given = to_torch_keys(type(self).factory, given, name)
        defaults = self.hyperparameter_defaults()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise TypeError(f"{name} got unknown hyperparameters {unknown}; it takes {sorted(defaults)}")
        dispatcher = Dispatcher(name, implementation)
        if not isinstance(skip_nonfinite, bool):
            raise ValueError(f"skip_nonfinite={skip_nonfinite!r} violates skip_nonfinite is a bool")
        defaults.update(given)
        # Every hyperparameter is checked before ``params`` is read (torch's error-input protocol builds optimizers
        # with params=None and expects the hyperparameter's ValueError).
        self._validate_group(defaults, name)
        self.implementation = implementation
        self.dispatcher = dispatcher
        self.skip_nonfinite = skip_nonfinite
        #: Steps skipped because a gradient was not finite (``skip_nonfinite=True``).
        self.skipped_steps = 0
        self.checkpoint_version = None
        super().__init__(params, defaults)

    # ----------------------------------------------------------------------------------- hyperparameters
    @classmethod
    def hyperparameter_names(cls) -> Tuple[str, ...]:
        """The factory's hyperparameters in order (masks replaced by the ``trust_ratio`` group switch)."""
        return tuple(cls.hyperparameter_defaults())

    @classmethod
    def hyperparameter_defaults(cls) -> Dict[str, Any]:
        """The factory's defaults (``trust_ratio=True`` for optimizers with a trust ratio)."""
        return hyperparameter_defaults(cls.factory)

    def _group_key(self, group: Dict[str, Any], floats: bool = True) -> Optional[tuple]:
        """The group's hyperparameters as a hashable key that tells ``1`` from ``True`` (None if a value is not
        hashable): what validation (``floats=True``) and the plan (``floats=False``) depend on, so that they are
        worked out once per setting and not at every step."""
        key = tuple((name, _typed(group.get(name), floats)) for name in self.hyperparameter_defaults())
        if floats and any(isinstance(value, torch.Tensor) for _, value in group.items() if not isinstance(value, list)):
            return None  # a tensor can change in place under the same identity: validated at every step
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def plan_for(self, group: Dict[str, Any]) -> Union[Plan, Unplannable]:
        """The execution plan of the group's chain (``backends.kernels.plan``), or why there is none."""
        key = self._group_key(group, floats=False)
        plans = _PLANS.setdefault(type(self).factory, {})
        if key is not None and key in plans:
            return plans[key]
        try:
            plan: Union[Plan, Unplannable] = derive(
                type(self).factory, factory_kwargs(type(self).factory, group, 1), maximize=group.get("maximize", False)
            )
        except Unplannable as error:
            plan = error
        if key is not None:
            _remember(plans, key, plan)
        return plan

    def transform_for(self, group: Dict[str, Any], count: int = 1) -> GradientTransformation:
        """The core transform of ``group`` over ``count`` tensors (validates the group's hyperparameters)."""
        return type(self).factory(**factory_kwargs(type(self).factory, group, count))

    def _validate_group(self, group: Dict[str, Any], where: str) -> None:
        key = self._group_key(group)
        validated = _VALID_GROUPS.setdefault(type(self).factory, {})
        if key is not None and key in validated:
            return
        self._check_group(group, where)
        if key is not None:
            _remember(validated, key, None)

    def _check_group(self, group: Dict[str, Any], where: str) -> None:
        switches = [key for key in ("trust_ratio", "maximize") if key in self.hyperparameter_defaults()]
        for key in switches:
            value = group.get(key)
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {key}={value!r} violates {key} is a bool")
        try:
            codec = compact_state.of_group(group)
            self.transform_for(group)
            codec.check_supported(self.buffer_keys(group))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a param group after validating its hyperparameters with ``valley_core.validation``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        where = f"{type(self).__name__} param group {len(self.param_groups)}"
        param_group = to_torch_keys(type(self).factory, param_group, where)
        param_group["params"] = _state.parameter_list(type(self).__name__, param_group["params"])
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._validate_group(merged, where)
        super().add_param_group(param_group)

    def __getstate__(self) -> Dict[str, Any]:
        """torch's state (defaults, state, groups) and this class's own settings, so that ``copy.deepcopy``,
        ``pickle`` and ``torch.save(optimizer)`` give a working optimizer."""
        return {**super().__getstate__(), **_pickled_attributes(self)}

    # ------------------------------------------------------------------------------------------- stepping
    def _collect(self) -> List[Tuple[int, Dict[str, Any], List[Tuple[torch.Tensor, torch.Tensor]]]]:
        work = []
        for group_index, group in enumerate(self.param_groups):
            entries = []
            for param_index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                _state.check_dense_float(type(self).__name__, group_index, param_index, p, p.grad)
                reason = compact_state.of_group(group).param_reason(p.dtype)
                if reason:
                    raise TypeError(
                        f"{type(self).__name__} param group {group_index}, parameter {param_index}: {reason}"
                    )
                entries.append((p, p.grad))
            if entries:
                self._validate_group(group, f"{type(self).__name__} param group {group_index}")
                work.append((group_index, group, entries))
        return work

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Performs one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional, as in torch.optim).

        Returns:
            The closure's loss, or None.

        Raises:
            RuntimeError: for a sparse gradient (before anything is modified).
            ValueError: for a hyperparameter that violates a rule (before anything is modified).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            return self._traced_step(loss)
        return self._eager_step(loss)

    def _eager_step(self, loss: Any) -> Any:
        """The step outside ``torch.compile``: the dispatcher's executor per group (see the module docstring)."""
        work = self._collect()
        if self.skip_nonfinite and not _state.all_finite(g for _, _, entries in work for _, g in entries):
            self.skipped_steps += 1
            return loss
        # Every group's executor is decided (and refused, if it must be) before any state is created or written.
        plans = [self.plan_for(group) for _, group, _ in work]
        paths = [
            self.dispatcher.choose(plan, entries, self.state, codec=compact_state.of_group(group))
            for plan, (_, group, entries) in zip(plans, work)
        ]
        # Positions of the parameters (compact stores are seeded by them), computed once per step.
        indices = self.tensor_indices() if any(compact_state.of_group(g).compact for _, g, _ in work) else {}
        for (_, group, entries), plan, path in zip(work, plans, paths):
            for p, _ in entries:
                if not self.state[p]:
                    self._init_state(group, p, indices)
            if path == "core":
                self.core_step(group, entries, indices)
                continue
            assert isinstance(plan, Plan)
            kwargs = factory_kwargs(type(self).factory, group, 1)
            if path == "fused":
                fused.step(plan, kwargs, entries, self.state, compact_state.of_group(group), indices)
            else:
                failure = compiled.step(plan, kwargs, entries, self.state)
                if failure is not None:
                    self.dispatcher.give_up(
                        "compiled",
                        f"{failure} (this step was completed eagerly by the same functions; parameters and state are "
                        "consistent)",
                        "later steps use the core path",
                    )
        return loss

    # ----------------------------------------------------------------------------------- torch.compile
    def _traced_step(self, loss: Any) -> Any:
        """The step while Dynamo traces ``optimizer.step`` (``torch.compile``): one graph, compiled once.

        ``_init_group`` runs eagerly (Dynamo calls it outside the trace, as for torch's own optimizers): it checks
        the group, creates missing state, and lists the group's tensors, so the traced code sees initialised
        state from the first call on. The step count is a tensor and every per-step scalar is computed from it
        in the graph (``backends.torch.compiled.render_step``); hyperparameters are read from the group when the
        step runs (a tensor ``lr`` driven by an LR scheduler never recompiles). ``implementation="core"`` and
        chains without a plan (Adam+CM) trace the core chain itself (:meth:`_core_program`). Groups that cannot
        be traced (compact state, ``skip_nonfinite``, ``implementation="fused"``, DTensors) run the eager step
        instead, outside the graph (a graph break).
        """
        lists = []
        traceable = True
        for group in self.param_groups:
            params: List[torch.Tensor] = []
            grads: List[torch.Tensor] = []
            tensors: List[torch.Tensor] = []
            traceable = self._init_group(group, params, grads, tensors) and traceable
            lists.append((params, grads, tensors))
        if not traceable:
            return _eager_outside_the_graph(self, loss)
        for group, (params, grads, tensors), program in zip(self.param_groups, lists, self._programs):
            if params and program is not None:
                program(group, params, grads, tensors)
        return loss

    def _init_group(
        self, group: Dict[str, Any], params: List[torch.Tensor], grads: List[torch.Tensor], tensors: List[torch.Tensor]
    ) -> bool:
        """Run eagerly by Dynamo (``torch._dynamo.variables.optimizer``) while it traces :meth:`step`: checks the
        group, initialises missing state and fills the lists with the group's parameters that have a gradient,
        their gradients, and per parameter its ``"step"`` then its buffers (the plan's order). Returns whether the
        group can be traced (its program is then ``self._programs[index]``); nothing is written when it cannot.
        """
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        programs = self.__dict__.setdefault("_programs", [])
        programs[len(programs) :] = [None] * (len(self.param_groups) - len(programs))
        entries = [(p, p.grad) for p in group["params"] if p.grad is not None]
        try:
            for param_index, (p, g) in enumerate(entries):
                _state.check_dense_float(type(self).__name__, index, param_index, p, g)
            if entries:
                self._validate_group(group, f"{type(self).__name__} param group {index}")
        except (ValueError, TypeError, RuntimeError):
            return False  # the eager step raises it, as outside torch.compile, before anything is written
        plan = self.plan_for(group)
        if (
            self.implementation == "fused"
            or self.skip_nonfinite
            or compact_state.of_group(group).compact
            or any(_state.is_dtensor(p) for p, _ in entries)
        ):
            return False
        for p, _ in entries:
            if not self.state[p]:
                self._init_state(group, p, {})
        if isinstance(plan, Plan) and self.implementation != "core":
            sources = hyperparameter_sources(type(self).factory, group, plan.hyper_inputs)
            programs[index] = compiled.step_function(plan, sources)
            keys: Sequence[str] = [key for _, key in plan.buffers]
        else:
            programs[index], keys = self._core_program(group, [p for p, _ in entries])
        for p, g in entries:
            params.append(p)
            grads.append(g)
            tensors.append(self.state[p]["step"])
            tensors.extend(self.state[p][key] for key in keys)
        return True

    def _core_program(self, group: Dict[str, Any], params: List[torch.Tensor]) -> Tuple[Callable[..., None], list]:
        """The core chain's update as a function Dynamo traces (the reference executor under ``torch.compile``;
        chains without a plan, such as Adam+CM). As on the eager core path, one update runs over the tensors at
        the same step (a chain may couple tensors: Adam+CM's synced priorities); they step together from then
        on (a parameter whose gradient appears or disappears changes what Dynamo guards, and retraces). The
        chains are built here, eagerly (the factory's validation cannot be traced), with tensor hyperparameters
        passed as the tensors themselves. Returns the function and the buffer keys in the order it reads them."""
        xp = _state.namespace()
        keys = list(self.buffer_keys(group))
        maximize = group.get("maximize", False)
        width = 1 + len(keys)
        by_step: Dict[int, List[int]] = defaultdict(list)
        for i, p in enumerate(params):
            by_step[_state.steps_taken(self.state[p])].append(i)
        calls = []
        for positions in by_step.values():
            kwargs = factory_kwargs(type(self).factory, group, len(positions), keep_tensors=True)
            transform = type(self).factory(**kwargs)
            like = tuple(_state.meta_like(params[i], _state.state_dtype(params[i])) for i in positions)
            calls.append((positions, transform, transform.init(like, xp=xp)))  # structure, shapes, dtypes

        def program(group: Dict[str, Any], params: List[torch.Tensor], grads: List[torch.Tensor], tensors) -> None:
            for positions, transform, template in calls:
                dtypes = [_state.state_dtype(params[i]) for i in positions]
                values = tuple(params[i].detach().to(d) for i, d in zip(positions, dtypes))
                gradients = tuple(grads[i].to(d) for i, d in zip(positions, dtypes))
                if maximize:
                    gradients = tuple(-g for g in gradients)
                buffers = [[tensors[i * width + 1 + k] for k in range(len(keys))] for i in positions]
                updates, new = _state.core_update(
                    transform,
                    gradients,
                    values,
                    lambda j, key: buffers[j][keys.index(key)],
                    tensors[positions[0] * width],
                    xp,
                    template,
                )
                for j, i in enumerate(positions):
                    params[i].detach().copy_(values[j] + updates[j])
                    for k, key in enumerate(keys):
                        tensors[i * width + 1 + k].copy_(new[j][key])
                    tensors[i * width].add_(1)

        return program, keys

    def _init_state(self, group: Dict[str, Any], p: torch.Tensor, indices: Dict[int, int]) -> None:
        like = p.detach() if p.dtype == _state.state_dtype(p) else p.detach().to(_state.state_dtype(p))
        init_state = self.transform_for(group, 1).init((like,), xp=_state.namespace())
        per_tensor, _ = _state.per_tensor_entries(vc.state_to_dict(init_state), 1)
        self._store(group, p, per_tensor[0], 0, indices)
        self.state[p]["step"] = _state.step_tensor(0)

    def tensor_indices(self) -> Dict[int, int]:
        """``id(p) -> p``'s position among the parameters, group by group (``state_dict``'s order)."""
        return {id(p): i for i, p in enumerate(q for group in self.param_groups for q in group["params"])}

    def _store(
        self, group: Dict[str, Any], p: torch.Tensor, buffers: Dict[str, Any], step: int, indices: Dict[int, int]
    ) -> None:
        """Writes ``p``'s new state buffers in the group's ``state_dtype`` (``backends.torch.compact_state``);
        ``indices``: :meth:`tensor_indices` (needed for compact formats only)."""
        codec = compact_state.of_group(group)
        codec.store(self.state[p], buffers, step, indices[id(p)] if codec.compact else -1)

    def buffer_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        """The core's per-tensor buffers of ``group``'s chain (``"AdamState.first"`` ...)."""
        template = self.transform_for(group, 1).init((torch.empty((), device="meta"),), xp=_state.namespace())
        return tuple(_state.per_tensor_entries(vc.state_to_dict(template), 1)[0][0])

    def counter_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        """The core's step counters of ``group``'s chain (``"AdamState.count"`` ...): all equal ``"step"``."""
        template = self.transform_for(group, 1).init((torch.empty((), device="meta"),), xp=_state.namespace())
        return tuple(_state.per_tensor_entries(vc.state_to_dict(template), 1)[1])

    def core_step(self, group: Dict[str, Any], entries, indices: Dict[int, int]) -> None:
        """The reference executor: the core chain's ``update`` on the torch tensors of a group (``indices``:
        :meth:`tensor_indices`, for compact state)."""
        by_step: Dict[int, list] = defaultdict(list)
        for p, g in entries:
            by_step[_state.steps_taken(self.state[p])].append((p, g))
        xp = _state.namespace_for(p for p, _ in entries)
        for step, items in by_step.items():
            transform = self.transform_for(group, len(items))
            dtypes = [_state.state_dtype(p) for p, _ in items]
            params = tuple(_state.working_copy(p.detach(), d) for (p, _), d in zip(items, dtypes))
            grads = tuple(_state.working_copy(g, d) for (_, g), d in zip(items, dtypes))
            if group.get("maximize", False):  # the one negation of the core path (the plans have theirs)
                grads = tuple(-g for g in grads)
            counter = torch.tensor(step, dtype=torch.int32, device=items[0][0].device)
            states = [self.state[p] for p, _ in items]
            updates, per_tensor = _state.core_update(
                transform, grads, params, lambda i, key: compact_state.decode(states[i], key, dtypes[i]), counter, xp
            )
            new_params = vc.apply_updates(params, updates)
            for (p, _), new, entries_of_p in zip(items, new_params, per_tensor):
                p.detach().copy_(new)
                self._store(group, p, entries_of_p, step + 1, indices)
                self.state[p]["step"] = _state.step_tensor(step + 1, self.state[p].get("step"))

    # ----------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """torch's ``state_dict`` (``"state"`` per parameter, ``"param_groups"``) and ``"valley_version"``: the
        version of valley that wrote it (``valley_core.__version__``), so that a checkpoint says which layout
        it holds. torch's DCP keeps only ``"state"`` and ``"param_groups"``: such a checkpoint loads as one
        that does not say (see :meth:`load_state_dict`)."""
        state_dict = super().state_dict()
        state_dict[VERSION_KEY] = vc.__version__
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a checkpoint after checking ALL of it; on any mismatch raises and changes nothing.

        Checked: the number of groups and of parameters per group, every group's hyperparameters
        (``valley_core.validation``), and for every parameter the set of state keys and the shape of each
        buffer. Buffers are moved to the parameter's device and to its state dtype (float32 for
        bfloat16/float16 parameters, never rounded down to the parameter's dtype).

        Raises:
            ValueError: naming every mismatch.
        """
        checkpoint.load(self, state_dict)


@torch.compiler.disable
def _eager_outside_the_graph(optimizer: ValleyOptimizer, loss: Any) -> Any:
    """:meth:`ValleyOptimizer._eager_step` run outside Dynamo's graph (a graph break), for what cannot be traced."""
    with torch.no_grad():
        return optimizer._eager_step(loss)


def _pickled_attributes(optimizer: Any) -> Dict[str, Any]:
    """What ``torch.optim.Optimizer.__getstate__`` leaves out of a valley optimizer: its own settings."""
    return {name: optimizer.__dict__[name] for name in _OWN_ATTRIBUTES if name in optimizer.__dict__}


_OWN_ATTRIBUTES = ("implementation", "dispatcher", "skip_nonfinite", "skipped_steps", "checkpoint_version")


def optimizer_class(
    name: str, factory: Callable[..., GradientTransformation], doc: Optional[str] = None, module: str = __name__
) -> type:
    """A :class:`ValleyOptimizer` subclass running ``factory``: one line per optimizer.

    Example:
        >>> import valley_core as vc
        >>> MyLamb = optimizer_class("MyLamb", vc.lamb)
        >>> MyLamb.hyperparameter_names()[:3]
        ('lr', 'betas', 'eps')
    """
    header = (
        f"PyTorch ``{name}``: ``{name}(params, {', '.join(_signature_preview(factory))}, ...)``, the "
        f"hyperparameters of ``valley_core.{factory.__name__}`` (per param group).\n\n"
    )
    body = doc if doc is not None else (factory.__doc__ or "")
    namespace = {
        "factory": staticmethod(factory),
        "__doc__": header + inspect.cleandoc(body) + _COMMON_DOC,
        "__module__": module,
        "__signature__": signature(factory),
        "__init__": _init_with_signature(signature(factory)),
    }
    return type(name, (ValleyOptimizer,), namespace)


def _init_with_signature(sig: inspect.Signature) -> Callable[..., None]:
    """A per-class ``__init__`` whose signature names the hyperparameters: tools that read ``__init__`` rather than
    the class (jsonargparse, so LightningCLI's ``--optimizer.lr``) see them too."""

    def __init__(self: ValleyOptimizer, *args: Any, **kwargs: Any) -> None:
        ValleyOptimizer.__init__(self, *args, **kwargs)

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = sig.replace(parameters=[self_parameter, *sig.parameters.values()])  # type: ignore[attr-defined]
    return __init__


def _signature_preview(factory: Callable[..., Any]) -> List[str]:
    return [f"{name}={value!r}" for name, value in list(hyperparameter_defaults(factory).items())[:3]]


_COMMON_DOC = """

Torch specifics (all optimizers of ``backends.torch``): per-group hyperparameters, ``closure``,
``zero_grad``; ``implementation="auto" | "core" | "compiled" | "fused"``; ``skip_nonfinite=True`` skips a step with
non-finite gradients atomically; sparse gradients raise ``RuntimeError``; state of bfloat16/float16
parameters is float32 (the parameter itself is rounded to its dtype after each step: there is no master copy);
``load_state_dict`` checks the whole checkpoint first and changes nothing on a mismatch.
See :class:`backends.torch.valley_optimizer.ValleyOptimizer`.
"""
