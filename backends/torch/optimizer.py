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

Implementations (``implementation=``):

- ``"core"``: the reference. Each step rebuilds the core's state tuple from ``self.state`` and calls the
  core transform's ``update`` on the torch tensors (through ``array_api_compat.torch``). Works for every
  factory, dense CPU/CUDA tensors of any float dtype, and FSDP2 DTensor parameters (DTensor's own
  ``vector_norm`` all-reduces, so trust ratios use the norms of the full tensors).
- ``"fused"``: ``backends.torch.fused_path``: multi-tensor C++ kernels generated from the core's traced
  element-wise functions (``backends.kernels.cpu``), one call per group and step, OpenMP threads
  (``torch.get_num_threads()``). CPU only; ALTO, ALTOVanilla, Lamb, EAdam, EAdamW, ESGD on plain contiguous
  float32/float64 tensors, and bfloat16/float16 ones with float32 state (as on the core path). Built with the
  host C++ compiler on first use (about a second, then cached).
  ``tests/torch/test_torch_fused_path.py`` proves it equal to the core (every optimizer, parameters and every
  state tensor, float64, 210 steps; bit for bit with the NumPy core where a step has no norm).
- ``"compiled"``: ``backends.torch.fast_path``: ``torch.compile`` of the core's element-wise functions
  (``valley_core.elementwise.alto_direction`` ...) and reductions, two fused passes per tensor (``r`` kept in
  a transient workspace), several tensors per compiled call; for EAdam, EAdamW and ESGD one compiled function
  per chunk. ALTO, ALTOVanilla, Lamb, EAdam, EAdamW and ESGD on plain float32/float64 tensors (CPU or CUDA);
  ``tests/torch/test_torch_fast_path.py`` proves it equal to the core (parameters and every state tensor,
  float64, 200+ steps, 0-d and 1-element tensors included).
- ``"auto"`` (default): ``"fused"`` where it can run (CPU), else ``"compiled"`` where it can run (CUDA, or a CPU
  whose fused kernels could not be built), else ``"core"``. If the fused kernels cannot be built (no C++
  compiler), a ``RuntimeWarning`` says why, before anything is written. If compilation fails (Dynamo's
  recompile limit ...), the step is completed eagerly by the same functions (never half written), a
  ``RuntimeWarning`` is issued and later steps use the core path; ``"compiled"`` and ``"fused"`` raise instead
  (``"fused"`` before writing anything, ``"compiled"`` after completing the step).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from copy import deepcopy
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

import valley_core as vc
from backends.torch import _state
from valley_core.base import GradientTransformation

_MASKS = ("weight_decay_mask", "trust_ratio_mask")
IMPLEMENTATIONS = ("auto", "core", "compiled", "fused")
# Per factory: its defaults; the hyperparameter settings (``_group_key``) most recently validated, and the shared
# state keys of recent settings. Validation and layout depend only on the factory and the setting, so they are
# worked out once per setting rather than at every step. Bounded: an LR scheduler makes a new setting at every
# step, and those must not accumulate.
_DEFAULTS: Dict[Any, Dict[str, Any]] = {}
_CACHE_SIZE = 64
_VALID_GROUPS: Dict[Any, Dict[tuple, None]] = {}
_SHARED_KEYS: Dict[Any, Dict[tuple, frozenset]] = {}


def _layout_value(value: Any) -> Any:
    """``value`` with every float replaced by the type ``float`` (tuples element by element)."""
    if isinstance(value, float):
        return float
    if isinstance(value, tuple):
        return tuple(_layout_value(item) for item in value)
    return value


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
    (``"EState.carry"``, ``"AdamState.first"``, ``"AdamState.second"``, ...), the core's step counters
    (0-d int32 tensors) and ``"step"`` (a Python int). Buffers of bfloat16/float16 parameters are float32.
    """

    #: The ``valley_core`` factory this class runs (a function returning a ``GradientTransformation``).
    factory: Callable[..., GradientTransformation]

    def __init__(
        self,
        params: Iterable[Any],
        *args: Any,
        implementation: str = "auto",
        skip_nonfinite: bool = False,
        **kwargs: Any,
    ) -> None:
        names = self.hyperparameter_names()
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__} takes at most {len(names)} positional hyperparameters "
                f"({', '.join(names)}), got {len(args)}"
            )
        given = dict(zip(names, args))
        for name, value in kwargs.items():
            if name in given:
                raise TypeError(f"{type(self).__name__} got multiple values for hyperparameter {name!r}")
            given[name] = value
        defaults = self.hyperparameter_defaults()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown hyperparameters {unknown}; it takes {sorted(defaults)}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation={implementation!r} violates implementation in {IMPLEMENTATIONS}")
        if not isinstance(skip_nonfinite, bool):
            raise ValueError(f"skip_nonfinite={skip_nonfinite!r} violates skip_nonfinite is a bool")
        defaults.update(given)
        self.implementation = implementation
        self.skip_nonfinite = skip_nonfinite
        #: Steps skipped because a gradient was not finite (``skip_nonfinite=True``).
        self.skipped_steps = 0
        self._fast_path_failed: Optional[str] = None
        self._fused_failed: Optional[str] = None
        super().__init__(params, defaults)

    # ----------------------------------------------------------------------------------- hyperparameters
    @classmethod
    def hyperparameter_names(cls) -> Tuple[str, ...]:
        """The factory's hyperparameters in order (masks replaced by the ``trust_ratio`` group switch)."""
        return tuple(cls.hyperparameter_defaults())

    @classmethod
    def hyperparameter_defaults(cls) -> Dict[str, Any]:
        """The factory's defaults (``trust_ratio=True`` for optimizers with a trust ratio)."""
        cached = _DEFAULTS.get(cls.factory)
        if cached is None:
            parameters = inspect.signature(cls.factory).parameters
            cached = {name: p.default for name, p in parameters.items() if name not in _MASKS}
            if "trust_ratio_mask" in parameters:
                cached["trust_ratio"] = True
            _DEFAULTS[cls.factory] = cached
        return dict(cached)

    def _factory_kwargs(self, group: Dict[str, Any], count: int) -> Dict[str, Any]:
        names = _DEFAULTS.get(type(self).factory) or self.hyperparameter_defaults()
        kwargs = {name: group[name] for name in names if name != "trust_ratio"}
        if "trust_ratio" in group and "trust_ratio" in names:
            kwargs["trust_ratio_mask"] = (group["trust_ratio"],) * count
        return kwargs

    def _group_key(self, group: Dict[str, Any]) -> Optional[tuple]:
        """The group's hyperparameters as a hashable key (None if a value is not hashable): what validation and
        the state layout depend on, so that they are worked out once per setting and not at every step."""
        key = tuple(
            (name, group.get(name)) for name in _DEFAULTS.get(type(self).factory) or self.hyperparameter_defaults()
        )
        if any(isinstance(value, torch.Tensor) for _, value in key):
            return None  # a tensor can change in place under the same identity
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def transform_for(self, group: Dict[str, Any], count: int = 1) -> GradientTransformation:
        """The core transform of ``group`` over ``count`` tensors (validates the group's hyperparameters)."""
        return type(self).factory(**self._factory_kwargs(group, count))

    def _validate_group(self, group: Dict[str, Any], where: str) -> None:
        key = self._group_key(group)
        validated = _VALID_GROUPS.setdefault(type(self).factory, {})
        if key is not None and key in validated:
            return
        self._check_group(group, where)
        if key is not None:
            _remember(validated, key, None)

    def _check_group(self, group: Dict[str, Any], where: str) -> None:
        if "trust_ratio" in self.hyperparameter_defaults():
            value = group.get("trust_ratio")
            if not isinstance(value, bool):
                raise ValueError(f"{where}: trust_ratio={value!r} violates trust_ratio is a bool")
        try:
            self.transform_for(group)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a param group after validating its hyperparameters with ``valley_core.validation``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._validate_group(merged, f"{type(self).__name__} param group {len(self.param_groups)}")
        super().add_param_group(param_group)

    # ------------------------------------------------------------------------------------------- stepping
    def _collect(self) -> List[Tuple[int, Dict[str, Any], List[Tuple[torch.Tensor, torch.Tensor]]]]:
        work = []
        for group_index, group in enumerate(self.param_groups):
            entries = []
            for param_index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                _state.check_dense_float(type(self).__name__, group_index, param_index, p, p.grad)
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
        work = self._collect()
        if self.skip_nonfinite and not _state.all_finite(g for _, _, entries in work for _, g in entries):
            self.skipped_steps += 1
            return loss
        # Every group's path is decided (and refused, if it must be) before any state is created or written.
        paths = [self._path_for(group, entries) for _, group, entries in work]
        for (_, group, entries), path in zip(work, paths):
            for p, _ in entries:
                if not self.state[p]:
                    self._init_state(group, p)
            if path == "fused":
                from backends.torch import fused_path

                fused_path.step_group(self, group, entries)
            elif path == "compiled":
                from backends.torch import fast_path

                failure = fast_path.step_group(self, group, entries)
                if failure is not None:
                    self._fast_path_unavailable(failure, completed=True)
            else:
                self._core_step(group, entries)
        return loss

    def _path_for(self, group: Dict[str, Any], entries) -> str:
        """``"fused"``, ``"compiled"`` or ``"core"`` for this group (decided before anything is written)."""
        if self.implementation == "core":
            return "core"
        if self.implementation in ("fused", "auto") and self._fused_failed is None:
            from backends.kernels.cpu import KernelUnavailable
            from backends.torch import fused_path

            reason = fused_path.unsupported_reason(self, group, entries)
            if reason is None:
                try:
                    fused_path.library()
                    return "fused"
                except KernelUnavailable as error:
                    reason = f"the fused CPU kernels could not be built: {error}"
                    if self.implementation == "auto":
                        self._fused_unavailable(reason)
            if self.implementation == "fused":
                raise RuntimeError(f"{type(self).__name__}(implementation='fused') cannot run this group: {reason}")
        if self._fast_path_failed is not None:
            return "core"
        from backends.torch import fast_path

        reason = fast_path.unsupported_reason(self, group, entries)
        if reason is not None and self.implementation == "compiled":
            raise RuntimeError(f"{type(self).__name__}(implementation='compiled') cannot run this group: {reason}")
        return "compiled" if reason is None else "core"

    def _fused_unavailable(self, reason: str) -> None:
        import warnings

        warnings.warn(
            f"{type(self).__name__}: {reason}; using the compiled or core path instead", RuntimeWarning, stacklevel=5
        )
        self._fused_failed = reason

    def _fast_path_unavailable(self, reason: str, completed: bool) -> None:
        """A compilation failed (before writing anything); the step was completed eagerly by the same maths.

        ``"auto"`` warns and uses the core path from the next step on; ``"compiled"`` raises (the step that
        failed to compile is complete: parameters and state are consistent).
        """
        if self.implementation == "compiled":
            raise RuntimeError(
                f"{type(self).__name__}(implementation='compiled'): {reason} (this step was "
                "completed eagerly by the same functions; parameters and state are consistent)"
            )
        import warnings

        warnings.warn(
            f"{type(self).__name__}: the compiled fast path is unavailable ({reason}); this step was "
            "completed eagerly and later steps use the core path",
            RuntimeWarning,
            stacklevel=4,
        )
        self._fast_path_failed = reason

    def _init_state(self, group: Dict[str, Any], p: torch.Tensor) -> None:
        xp = _state.namespace()
        dtype = _state.state_dtype(p)
        like = p.detach() if p.dtype == dtype else p.detach().to(dtype)
        init_state = self.transform_for(group, 1).init((like,), xp=xp)
        per_tensor, shared = _state.per_tensor_entries(vc.state_to_dict(init_state), 1)
        state = self.state[p]
        state.update(per_tensor[0])
        state.update(shared)
        state["step"] = 0

    def _core_step(self, group: Dict[str, Any], entries) -> None:
        """The reference path: the core transform's ``update`` on the torch tensors of a group."""
        by_step: Dict[int, list] = defaultdict(list)
        for p, g in entries:
            by_step[self.state[p]["step"]].append((p, g))
        xp = _state.namespace_for(p for p, _ in entries)
        for step, items in by_step.items():
            count = len(items)
            transform = self.transform_for(group, count)
            dtypes = [_state.state_dtype(p) for p, _ in items]
            params = tuple(_state.working_copy(p.detach(), d) for (p, _), d in zip(items, dtypes))
            grads = tuple(_state.working_copy(g, d) for (_, g), d in zip(items, dtypes))
            template = transform.init(tuple(_state.meta_like(p, d) for (p, _), d in zip(items, dtypes)), xp=xp)
            flat = {}
            for key in vc.state_to_dict(template):
                base, index = _state.split_key(key)
                flat[key] = self.state[items[0 if index is None else index][0]][base]
            state = vc.state_from_dict(template, flat)
            updates, new_state = transform.update(grads, state, params, xp=xp)
            new_params = vc.apply_updates(params, updates)
            per_tensor, shared = _state.per_tensor_entries(vc.state_to_dict(new_state), count)
            for (p, _), new, entries_of_p in zip(items, new_params, per_tensor):
                p.detach().copy_(new)
                target = self.state[p]
                target.update(entries_of_p)
                target.update(shared)
                target["step"] = step + 1

    def shared_state_keys(self, group: Dict[str, Any]) -> frozenset:
        """The keys of ``self.state[p]`` that hold the core's shared scalars (step counters), for ``group``.

        Decided by the core's state names (``"AdamState.count"`` has no tensor index), never by shape: the
        buffers of a 0-d parameter are 0-d tensors too.
        """
        key = self._group_key(group)
        if key is not None:
            # The layout comes from the factory's structure and its non-float settings (AdamCM's top_c ...), never
            # from a float's value (no transform's init reads one): an LR scheduler's new lr reuses the entry.
            key = tuple((name, _layout_value(value)) for name, value in key)
        cache = _SHARED_KEYS.setdefault(type(self).factory, {})
        if key is not None and key in cache:
            return cache[key]
        xp = _state.namespace()
        template = self.transform_for(group, 1).init((torch.empty((), device="meta"),), xp=xp)
        _, shared = _state.per_tensor_entries(vc.state_to_dict(template), 1)
        if key is not None:
            _remember(cache, key, frozenset(shared))
        return frozenset(shared)

    # ----------------------------------------------------------------------------------- checkpoints
    def _expected_state(self, group: Dict[str, Any], p: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Template entries (meta tensors) of one parameter's state, by key."""
        xp = _state.namespace()
        template = self.transform_for(group, 1).init((_state.meta_like(p, _state.state_dtype(p)),), xp=xp)
        per_tensor, shared = _state.per_tensor_entries(vc.state_to_dict(template), 1)
        return {**per_tensor[0], **shared}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a checkpoint after checking ALL of it; on any mismatch raises and changes nothing.

        Checked: the number of groups and of parameters per group, every group's hyperparameters
        (``valley_core.validation``), and for every parameter the set of state keys and the shape of each
        buffer. Buffers are moved to the parameter's device and to its state dtype (float32 for
        bfloat16/float16 parameters, never rounded down to the parameter's dtype).

        Raises:
            ValueError: naming every mismatch.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict expects a dict with keys 'state' and 'param_groups'")
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} param groups, "
                f"this optimizer has {len(groups)}"
            )
        problems: List[str] = []
        # The checkpoint's hyperparameters are restored (as in torch.optim), and they decide the state's layout
        # (AdamCM's buffer size, say); where they are invalid, this optimizer's own group is used to check it.
        layout_groups: List[Dict[str, Any]] = []
        for index, (group, saved) in enumerate(zip(groups, saved_groups)):
            layout_groups.append(group)
            if len(group["params"]) != len(saved["params"]):
                problems.append(
                    f"param group {index} has {len(saved['params'])} parameters in the state dict, "
                    f"{len(group['params'])} here"
                )
                continue
            merged = {**self.defaults, **{k: v for k, v in saved.items() if k != "params"}}
            try:
                self._validate_group(merged, f"param group {index}")
                layout_groups[-1] = merged
            except ValueError as error:
                problems.append(str(error))
        if any("parameters in the state dict" in problem for problem in problems):
            raise ValueError(f"state dict does not match this {name}: " + "; ".join(problems))
        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups), chain.from_iterable(g["params"] for g in groups)
            )
        )
        group_of = {id(p): (i, layout) for i, (g, layout) in enumerate(zip(groups, layout_groups)) for p in g["params"]}
        for saved_id, value in state_dict["state"].items():
            if saved_id not in id_map:
                problems.append(f"state for parameter id {saved_id!r}, which no param group lists")
                continue
            p = id_map[saved_id]
            if not isinstance(value, dict):
                problems.append(f"parameter {saved_id}: state must be a dict, got {type(value).__name__}")
                continue
            index, merged = group_of[id(p)]
            expected = self._expected_state(merged, p)
            missing = sorted(set(expected) - set(value) - {"step"})
            unexpected = sorted(set(value) - set(expected) - {"step"})
            if "step" not in value:
                missing.append("step")
            if missing:
                problems.append(f"parameter {saved_id} (group {index}): missing keys {missing}")
            if unexpected:
                problems.append(f"parameter {saved_id} (group {index}): unexpected keys {unexpected}")
            for key in sorted(set(expected) & set(value)):
                like, stored = expected[key], value[key]
                if not isinstance(stored, torch.Tensor):
                    problems.append(f"parameter {saved_id}: {key} is a {type(stored).__name__}, expected a tensor")
                elif tuple(stored.shape) != tuple(like.shape):
                    problems.append(
                        f"parameter {saved_id} (shape {tuple(p.shape)}): {key} has shape "
                        f"{tuple(stored.shape)}, expected {tuple(like.shape)}"
                    )
                elif stored.is_floating_point() != like.is_floating_point():
                    problems.append(f"parameter {saved_id}: {key} has dtype {stored.dtype}, expected {like.dtype}")
                elif _state.is_dtensor(p) and like.dim() > 0 and not _state.is_dtensor(stored):
                    problems.append(
                        f"parameter {saved_id}: {key} is a plain tensor for a DTensor parameter "
                        "(save and load FSDP2 checkpoints with torch.distributed.checkpoint)"
                    )
            if "step" in value and (isinstance(value["step"], bool) or not isinstance(value["step"], int)):
                problems.append(f"parameter {saved_id}: step must be an int, got {value['step']!r}")
        if problems:
            raise ValueError(f"state dict does not match this {name}: " + "; ".join(problems))

        new_state: defaultdict = defaultdict(dict)
        for saved_id, value in state_dict["state"].items():
            p = id_map[saved_id]
            expected = self._expected_state(group_of[id(p)][1], p)
            converted = {"step": int(value["step"])}
            for key, like in expected.items():
                dtype = like.dtype
                converted[key] = value[key].to(device=p.device, dtype=dtype, copy=True)
            new_state[p] = converted
        new_groups = []
        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            new_groups.append(saved)
        self.__setstate__({"state": new_state, "param_groups": new_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def state_bytes(self) -> int:
        """Bytes held by the optimizer's per-parameter buffers (step counters included)."""
        total = 0
        for state in self.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    local = value.to_local() if _state.is_dtensor(value) else value
                    total += local.numel() * local.element_size()
        return total


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
    }
    return type(name, (ValleyOptimizer,), namespace)


def _signature_preview(factory: Callable[..., Any]) -> List[str]:
    return [f"{n}={p.default!r}" for n, p in list(inspect.signature(factory).parameters.items())[:3]]


_COMMON_DOC = """

Torch specifics (all optimizers of ``backends.torch``): per-group hyperparameters, ``closure``,
``zero_grad``; ``implementation="auto" | "core" | "compiled" | "fused"``; ``skip_nonfinite=True`` skips a step with
non-finite gradients atomically; sparse gradients raise ``RuntimeError``; state of bfloat16/float16
parameters is float32 (the parameter itself is rounded to its dtype after each step: there is no master copy);
``load_state_dict`` checks the whole checkpoint first and changes nothing on a mismatch.
See :class:`backends.torch.optimizer.ValleyOptimizer`.
"""
