"""Keras 3 optimizers that execute the ``valley_core`` definition.

Each optimizer is a ``keras.optimizers.Optimizer`` subclass (``build``, ``update_step``, ``get_config``)
whose ``update_step`` calls the ``valley_core`` transform of the same name on one variable at a time,
through the array namespace of ``backends.keras.namespace`` (``keras.ops``). There is no arithmetic of the
update in this module: it creates the optimizer variables that hold the core's state, reads them, calls the
core, and writes the core's results back.

How the Keras concepts map onto the core:

* ``learning_rate`` (a float, a ``keras.optimizers.schedules.LearningRateSchedule`` or a callable) is
  evaluated by Keras for every step and fed to the core's ``scale_by_learning_rate`` as its schedule.
* The core's step counters are ``optimizer.iterations`` (the number of updates applied so far), so they
  are not stored twice; every other piece of state (``EState.carry``, ``AdamState.first`` ...) is one
  optimizer variable per model variable, named after the state field (``dense_kernel_adam_first``).
* ``weight_decay`` is the core's: inside ``r`` and scaled by the trust ratio for ALTO/Lamb, L2 on the
  gradient for EAdam/ESGD, decoupled for EAdamW. Keras' own decoupled decay never runs.
  ``exclude_from_weight_decay(var_list=..., var_names=...)`` maps onto the core's ``weight_decay_mask``
  (for the optimizers whose decay is L2 on the gradient, an excluded variable gets ``weight_decay=0``).
* ``exclude_from_trust_ratio(var_list=..., var_names=...)`` (ALTO, ALTOVanilla, Lamb) maps onto the core's
  ``trust_ratio_mask``. The paper applies the trust ratio to every tensor, which is the default; a tensor
  that starts at zero (a bias) then moves by about ``learning_rate * norm_eps`` per step, so excluding
  ``"bias"`` is usually what you want (see ``docs/keras.md``).
* Sparse gradients (``tf.IndexedSlices`` from an ``Embedding``, ``tf.SparseTensor``, JAX's ``BCOO``) are
  densified once, where ``update_step`` receives them, for every optimizer (the core's update is dense).
* A float16/bfloat16 variable keeps float32 optimizer variables; the step runs on float32 copies and the
  result is rounded to the variable's dtype (the precision policy of every backend, ``docs/algorithm.md``).
* Everything else Keras provides (clipping, EMA, gradient accumulation, ``LossScaleOptimizer``,
  ``tf.distribute``, saving) is Keras' own machinery and runs unchanged.

Adding an optimizer is one class statement naming its ``valley_core`` factory (see ``ValleyOptimizer``).
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import re
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, cast

import keras
import numpy as np
from keras import ops

import valley_core as vc
from backends.keras.namespace import keras_namespace

__all__ = ["ALTO", "ALTOVanilla", "AdamCM", "EAdam", "EAdamW", "ESGD", "Lamb", "ValleyOptimizer"]

#: The package name under which the optimizers are registered for Keras serialization ("valley>ALTO").
PACKAGE = "valley"

# Core factory parameters that the adapter fills in itself rather than taking from the user.
_ADAPTER_OWNED = ("lr", "weight_decay_mask", "trust_ratio_mask")
# Constructor keywords that keras.optimizers.Optimizer itself takes (weight_decay is the core's here).
_KERAS_KEYWORDS = (
    "name",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


class _StepLearningRate:
    """A ``valley_core`` learning-rate schedule that returns the rate Keras computes for the current step.

    The core takes the learning rate as a schedule ``k -> lr_k``; Keras evaluates ``learning_rate`` (a float
    variable, a schedule of ``iterations`` or a callable) into ``optimizer.learning_rate``, which is the
    value Keras passes to ``update_step`` (Keras' own optimizers read it again the same way, e.g. for their
    decoupled weight decay). Reading it here keeps no per-step state: no binding that replicas updated from
    several threads could see, and nothing that ``torch.compile`` (``jit_compile=True`` on Keras' torch
    backend) cannot trace. The validator evaluates schedules at the Python step ``1``; it gets the value
    validated at construction (the core itself always passes its step index as a 0-d tensor).
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer, outside_step: float) -> None:
        self._optimizer = optimizer
        self._outside_step = outside_step

    def __call__(self, k: Any) -> Any:
        if isinstance(k, numbers.Number):
            return self._outside_step
        return ops.cast(self._optimizer.learning_rate, k.dtype)


class _Runtime:
    """Plain holder for the per-optimizer Python objects (kept out of Keras' attribute tracking)."""

    def __init__(self) -> None:
        self.transforms: Dict[Tuple[bool, bool], vc.GradientTransformation] = {}
        self.templates: Dict[Tuple[bool, bool], Any] = {}
        self.variable_keys: List[Optional[Tuple[bool, bool]]] = []


# --- state <-> optimizer variables -------------------------------------------------------------------

Label = Tuple[str, str, Optional[int]]


def _flatten(state: Any) -> List[Tuple[Label, Any]]:
    """Every array of a (chained) core state with a label ``(state class, field, tensor index or None)``."""
    if hasattr(state, "_fields"):
        leaves: List[Tuple[Label, Any]] = []
        for field in state._fields:
            value = getattr(state, field)
            if isinstance(value, tuple):
                leaves.extend(((type(state).__name__, field, j), item) for j, item in enumerate(value))
            else:
                leaves.append(((type(state).__name__, field, None), value))
        return leaves
    return [leaf for inner in state for leaf in _flatten(inner)]


def _unflatten(template: Any, values: Iterator[Any]) -> Any:
    """The inverse of ``_flatten``: a state shaped like ``template`` filled from ``values`` in order."""
    if hasattr(template, "_fields"):
        fields = {}
        for field in template._fields:
            value = getattr(template, field)
            fields[field] = tuple(next(values) for _ in value) if isinstance(value, tuple) else next(values)
        return type(template)(**fields)
    return tuple(_unflatten(inner, values) for inner in template)


def _is_step_counter(label: Label, value: Any) -> bool:
    """The core's ``count`` fields: 0-d integer step counters, all equal to ``optimizer.iterations``."""
    _, field, index = label
    return (
        field == "count"
        and index is None
        and np.ndim(value) == 0
        and np.issubdtype(np.asarray(value).dtype, np.integer)
    )


def _slot_name(label: Label, seen: Dict[str, int]) -> str:
    state_class, field, _ = label
    prefix = state_class[: -len("State")] if state_class.endswith("State") else state_class
    name = f"{prefix.lower()}_{field}"
    seen[name] = seen.get(name, 0) + 1
    return name if seen[name] == 1 else f"{name}_{seen[name]}"


def _numpy_dtype(dtype: Any) -> np.dtype:
    name = keras.backend.standardize_dtype(dtype)
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # a Keras dependency; provides bfloat16 for NumPy

        return np.dtype(getattr(ml_dtypes, name))


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of a variable's state and update: float32 for 16-bit floats (float16, bfloat16), else its own.

    The policy of every backend (``docs/algorithm.md``): in 16 bits ``eps = 1e-8`` is 0 and ``v`` underflows.
    Keras' own optimizers keep the state in the variable's dtype instead; under a mixed-precision policy
    the variables are float32, so the two agree there.
    """
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def _constant_initializer(value: np.ndarray) -> Callable[..., Any]:
    def initializer(shape: Any, dtype: Any = None) -> Any:
        return ops.convert_to_tensor(np.reshape(value, shape), dtype=dtype)

    return initializer


def _reference_name(variable: Any) -> str:
    """The prefix of a variable's optimizer variables, as Keras' ``add_variable_from_reference`` forms it."""
    if hasattr(variable, "path"):
        return str(variable.path).replace("/", "_")
    return str(variable.name).replace("/", "_").replace(":", "_")


def _state_layout(variable: Any, shape: Tuple[int, ...]) -> Any:
    """The ``keras.distribution`` layout of a state buffer of ``shape`` for ``variable``.

    The variable's own layout for its shape; for a stack of copies of it (AdamCM's critical momenta), the
    variable's with whole (replicated) leading axes; for anything else (AdamCM's priorities), replicated
    on the variable's mesh, explicitly, so that no ``LayoutMap`` key meant for parameters applies to it.
    ``None`` (the distribution decides) for a variable without a layout.
    """
    layout = getattr(variable, "_layout", None)
    if layout is None:
        return None
    reference = tuple(variable.shape)
    if tuple(shape) == reference:
        return layout
    extra = len(shape) - len(reference)
    stacked = extra > 0 and tuple(shape[extra:]) == reference
    if isinstance(layout, keras.distribution.TensorLayout):
        axes = (None,) * extra + tuple(layout.axes) if stacked else (None,) * len(shape)
        return keras.distribution.TensorLayout(axes, layout.device_mesh)
    spec = getattr(layout, "spec", None)
    if spec is not None and hasattr(layout, "mesh"):  # a jax.sharding.NamedSharding given as the layout
        import jax

        spec = (None,) * extra + tuple(spec) if stacked else ()
        return jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec(*spec))
    return None


def _dense(gradient: Any) -> Any:
    """The gradient as a dense tensor of the backend: the one place where sparse gradients are densified.

    TensorFlow gives ``tf.IndexedSlices`` for an ``Embedding`` (or any gather) and may give
    ``tf.SparseTensor``; JAX may give a ``BCOO``. The core's arithmetic is dense (the E adaptor, Adam's
    moments and every norm touch each element), so every optimizer densifies here, before the core runs.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            return tf.convert_to_tensor(gradient)
    return ops.convert_to_tensor(gradient, sparse=False)


def _read(variable: Any) -> Any:
    """A Keras (or TensorFlow) variable's current value as a plain tensor of the backend.

    The core's arithmetic then runs on the backend's own operators. On a ``keras.Variable`` the operators
    go through ``keras.ops``, whose TensorFlow ``add`` turns ``a + b`` into ``tf.nn.bias_add`` when ``b``
    looks like a bias, which fails for a zero-size variable of shape ``(0, 3)`` ("Biases must be 1D"); and
    ``keras.ops`` functions do not accept the bare ``tf.Variable`` that ``update_step`` may receive.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(variable)
    return ops.convert_to_tensor(variable)


def _learning_rate_for_validation(learning_rate: Any) -> float:
    """A float the core's validator can check (a schedule's value at Keras step 0; 0.0 if not computable)."""
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        return cast(float, learning_rate)
    try:
        if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return float(ops.convert_to_numpy(learning_rate(0)))
        if callable(learning_rate):
            return float(ops.convert_to_numpy(learning_rate()))
    except Exception:  # noqa: BLE001 - a schedule that needs a trace; the core checks the float forms only
        return 0.0
    return learning_rate  # something else: let the core's validator name it


# --- the generic optimizer -----------------------------------------------------------------------------


class ValleyOptimizer(keras.optimizers.Optimizer):
    """A Keras optimizer that runs a ``valley_core`` factory's transform (the base of every class here).

    A subclass names its factory and inherits everything else; the constructor's keywords are the
    factory's hyperparameters (with ``lr`` spelled ``learning_rate``, and the same defaults) plus Keras'
    own optimizer keywords::

        @keras.saving.register_keras_serializable(package=PACKAGE)
        class AdamCM(ValleyOptimizer):
            '''... the algorithm in a few lines of maths ...'''
            core_factory = staticmethod(vc.adam_cm)

    Args:
        learning_rate: a float, a ``keras.optimizers.schedules.LearningRateSchedule`` or a callable taking
            no arguments, as in every Keras optimizer.
        **hyperparameters: the ``valley_core`` factory's hyperparameters (``alpha``, ``betas``, ``eps``,
            ``weight_decay`` ...), validated by the core at construction: an invalid value raises the
            core's ``ValueError``.
        weight_decay_exclude_names: strings; a variable whose name contains one of them gets no weight
            decay (the same as calling ``exclude_from_weight_decay(var_names=...)``, but saved in the
            config so that ``keras.models.load_model`` restores it).
        trust_ratio_exclude_names: the same for the trust ratio (ALTO, ALTOVanilla, Lamb only).
        name, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum, ema_overwrite_frequency,
            loss_scale_factor, gradient_accumulation_steps: as in ``keras.optimizers.Optimizer``.

    Attributes:
        hyperparameters: a read-only mapping of the core hyperparameters (``weight_decay`` included; the
            Keras attribute ``weight_decay`` stays ``None`` because Keras' decoupled decay is off).
    """

    #: The ``valley_core`` factory this class runs (a subclass sets it with ``staticmethod``).
    core_factory: Optional[Callable[..., vc.GradientTransformation]] = None
    # Set by __init_subclass__ from the factory's signature (declared here for type checkers).
    _core_defaults: Mapping[str, Any]
    _core_masks: frozenset
    _default_learning_rate: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        factory = cls.__dict__.get("core_factory")
        if factory is None:
            return
        factory = factory.__func__ if isinstance(factory, staticmethod) else factory
        parameters = inspect.signature(factory).parameters
        cls._core_defaults = MappingProxyType(
            {name: p.default for name, p in parameters.items() if name not in _ADAPTER_OWNED}
        )
        cls._core_masks = frozenset(name for name in ("weight_decay_mask", "trust_ratio_mask") if name in parameters)
        cls._default_learning_rate = parameters["lr"].default
        keyword = inspect.Parameter.KEYWORD_ONLY
        signature = [
            inspect.Parameter(
                "learning_rate", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=cls._default_learning_rate
            )
        ]
        signature += [inspect.Parameter(name, keyword, default=default) for name, default in cls._core_defaults.items()]
        signature += [inspect.Parameter("weight_decay_exclude_names", keyword, default=None)]
        if "trust_ratio_mask" in cls._core_masks:
            signature += [inspect.Parameter("trust_ratio_exclude_names", keyword, default=None)]
        signature += [inspect.Parameter("keras_kwargs", inspect.Parameter.VAR_KEYWORD)]
        cls.__signature__ = inspect.Signature(signature)

    def __init__(self, learning_rate: Any = None, **kwargs: Any) -> None:
        factory = type(self).core_factory
        if factory is None:
            raise TypeError(f"{type(self).__name__} has no core_factory; use a subclass such as ALTO")
        if learning_rate is None:
            learning_rate = self._default_learning_rate
        if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, (bool, float)):
            learning_rate = float(learning_rate)  # Keras takes only a Python float (1, np.float32(0.1) ...)
        hyperparameters = dict(self._core_defaults)
        for name in list(kwargs):
            if name in self._core_defaults:
                hyperparameters[name] = kwargs.pop(name)
        if "betas" in hyperparameters and isinstance(hyperparameters["betas"], list):
            hyperparameters["betas"] = tuple(hyperparameters["betas"])  # from a JSON config
        weight_decay_names = kwargs.pop("weight_decay_exclude_names", None)
        trust_ratio_names = kwargs.pop("trust_ratio_exclude_names", None)
        if trust_ratio_names and "trust_ratio_mask" not in self._core_masks:
            raise ValueError(f"{type(self).__name__} has no trust ratio; trust_ratio_exclude_names does not apply")
        validation_rate = _learning_rate_for_validation(learning_rate)
        factory(lr=validation_rate, **hyperparameters)  # the core's validator: raises its ValueError

        if kwargs.get("weight_decay") is not None:  # only reachable if the factory takes no weight_decay
            raise ValueError(f"{type(self).__name__} takes no weight_decay")
        kwargs.pop("weight_decay", None)
        # Keras' decoupled weight decay stays off: the decay is part of the core's update.
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        self._core_hyperparameters = MappingProxyType(hyperparameters)
        self._step_learning_rate = _StepLearningRate(self, validation_rate)
        self._runtime = _Runtime()
        self._weight_decay_exclude_names: Tuple[str, ...] = ()
        self._trust_ratio_exclude_names: Tuple[str, ...] = ()
        self._trust_ratio_exclude_ids: frozenset = frozenset()
        self._trust_ratio_exclude_pattern: Optional[re.Pattern] = None
        if weight_decay_names:
            self.exclude_from_weight_decay(var_names=list(weight_decay_names))
        if trust_ratio_names:
            self.exclude_from_trust_ratio(var_names=list(trust_ratio_names))

    @property
    def hyperparameters(self) -> Mapping[str, Any]:
        """The ``valley_core`` hyperparameters this optimizer was built with (read-only)."""
        return self._core_hyperparameters

    # --- masks ---------------------------------------------------------------------------------------

    def exclude_from_weight_decay(
        self, var_list: Optional[Sequence[Any]] = None, var_names: Optional[Sequence[str]] = None
    ) -> None:
        """Excludes variables from weight decay (before ``build``); maps onto the core's mask.

        Args:
            var_list: variables to exclude (not saved in the config).
            var_names: substrings; a variable whose name contains one is excluded (saved in the config).
        """
        if self.built:
            raise ValueError("exclude_from_weight_decay() can only be called before the optimizer is built")
        names = tuple(var_names or ())
        super().exclude_from_weight_decay(var_list=var_list, var_names=list(names) or None)
        self._weight_decay_exclude_names = names

    def exclude_from_trust_ratio(
        self, var_list: Optional[Sequence[Any]] = None, var_names: Optional[Sequence[str]] = None
    ) -> None:
        """Excludes variables from the layer-wise trust ratio (before ``build``; ALTO, ALTOVanilla, Lamb).

        An excluded variable is updated by ``-learning_rate * r`` (Adam's step plus the weight decay term)
        instead of ``-learning_rate * r * phi / (||r|| + trust_eps * phi)``.

        Args:
            var_list: variables to exclude (not saved in the config).
            var_names: substrings; a variable whose name contains one is excluded (saved in the config).
        """
        if "trust_ratio_mask" not in self._core_masks:
            raise ValueError(f"{type(self).__name__} has no trust ratio to exclude variables from")
        if self.built:
            raise ValueError("exclude_from_trust_ratio() can only be called before the optimizer is built")
        names = tuple(var_names or ())
        self._trust_ratio_exclude_names = names
        self._trust_ratio_exclude_ids = frozenset(self._var_key(v) for v in (var_list or ()))
        self._trust_ratio_exclude_pattern = re.compile("|".join(map(re.escape, names))) if names else None

    def _use_trust_ratio(self, variable: Any) -> bool:
        if "trust_ratio_mask" not in self._core_masks:
            return True
        if self._var_key(variable) in self._trust_ratio_exclude_ids:
            return False
        pattern = self._trust_ratio_exclude_pattern
        return pattern is None or pattern.search(variable.name) is None

    def _apply_weight_decay(self, variables: Any) -> None:
        # Keras' decoupled decay (``variable -= lr * weight_decay * variable`` before update_step) must not
        # run on top of the core's decay; the base class reads ``self.weight_decay``, which we keep None.
        if self.weight_decay is not None:
            raise ValueError(
                f"{type(self).__name__}: set weight_decay in the constructor (it is applied inside the "
                "valley_core update); the Keras attribute optimizer.weight_decay must stay None"
            )

    # --- the core transform for one variable -----------------------------------------------------------

    def _transform(self, key: Tuple[bool, bool]) -> vc.GradientTransformation:
        """The core transform for a variable with (weight decay, trust ratio) switched on or off."""
        runtime = self._runtime
        if key not in runtime.transforms:
            use_decay, use_trust = key
            hyperparameters = dict(self._core_hyperparameters)
            if "weight_decay_mask" in self._core_masks:
                hyperparameters["weight_decay_mask"] = (use_decay,)
            elif not use_decay and "weight_decay" in hyperparameters:
                hyperparameters["weight_decay"] = 0.0  # L2 decay on the gradient: u + 0 * theta == u
            if "trust_ratio_mask" in self._core_masks:
                hyperparameters["trust_ratio_mask"] = (use_trust,)
            factory = self.core_factory
            assert factory is not None  # __init__ refuses a class without one
            runtime.transforms[key] = factory(lr=self._step_learning_rate, **hyperparameters)
        return runtime.transforms[key]

    def build(self, var_list: Sequence[Any]) -> None:
        """Creates one optimizer variable per piece of the core's per-variable state.

        The structure, shapes, dtypes and initial values come from the core's own ``init`` run on a NumPy
        placeholder of each variable's shape; the step counters are ``self.iterations``.
        """
        if self.built:
            return
        super().build(var_list)
        import array_api_compat.numpy as xp_numpy

        runtime = self._runtime
        slots: List[Optional[List[Any]]] = []
        for variable in var_list:
            if self._overwrite_variable_with_gradient(variable):
                runtime.variable_keys.append(None)
                slots.append(None)
                continue
            key = (self._use_weight_decay(variable), self._use_trust_ratio(variable))
            transform = self._transform(key)
            dtype = _numpy_dtype(variable.dtype)
            working = _working_dtype(dtype)
            template = transform.init((np.zeros(tuple(variable.shape), dtype=working),), xp=xp_numpy)
            runtime.templates[key] = template
            runtime.variable_keys.append(key)
            seen: Dict[str, int] = {}
            variable_slots: List[Any] = []
            for label, value in _flatten(template):
                if _is_step_counter(label, value):
                    variable_slots.append(None)
                    continue
                value = np.asarray(value)
                name = _slot_name(label, seen)
                initializer = "zeros" if not np.any(value) else _constant_initializer(value)
                variable_slots.append(self._add_state_variable(variable, name, value.shape, value.dtype, initializer))
            slots.append(variable_slots)
        self._state_slots = slots

    def _add_state_variable(
        self, variable: Any, name: str, shape: Tuple[int, ...], dtype: np.dtype, initializer: Any
    ) -> Any:
        """One optimizer variable of the core's state for ``variable``, created from it so that it is placed
        and sharded like it.

        A buffer with the variable's shape and dtype is Keras' own ``add_variable_from_reference`` (the
        variable's layout under ``keras.distribution``; colocation under ``tf.distribute``). A float32 buffer
        of a 16-bit variable, a stack of copies of the variable (AdamCM's critical momenta) or a buffer of
        another shape (AdamCM's priorities) gets the same name and placement through ``add_variable``, and
        the layout ``_state_layout`` derives from the variable's.
        """
        if shape == tuple(variable.shape) and dtype == _numpy_dtype(variable.dtype):
            return self.add_variable_from_reference(variable, name=name, initializer=initializer)
        with self._colocated_with(variable):
            return self.add_variable(
                shape=shape,
                dtype=str(dtype),
                initializer=initializer,
                name=f"{_reference_name(variable)}_{name}",
                layout=_state_layout(variable, shape),
            )

    def _colocated_with(self, variable: Any) -> contextlib.AbstractContextManager[Any]:
        """TensorFlow's optimizer places a variable's state with it (as its ``add_variable_from_reference``)."""
        strategy = getattr(self, "_distribution_strategy", None)  # set by Keras' TensorFlow optimizer only
        if strategy is None:
            return contextlib.nullcontext()
        return strategy.extended.colocate_vars_with(
            variable.value if isinstance(variable, keras.Variable) else variable
        )

    def core_state(self, variable: Any) -> Any:
        """The ``valley_core`` state of one model variable, as the core's NamedTuples of the backend's tensors.

        It is the state the core's ``update`` receives for this variable on the next step (step counters
        from ``self.iterations``); ``valley_core.state_to_dict`` names its arrays (``"AdamState.first.0"``).
        """
        if not self.built:
            raise ValueError("the optimizer is not built yet: call build(variables) or apply gradients first")
        index = self._get_variable_index(variable)
        key = self._runtime.variable_keys[index]
        if key is None:
            raise ValueError(f"variable {variable.name!r} is overwritten with its gradient and has no state")
        count = ops.convert_to_tensor(self.iterations)
        return _unflatten(
            self._runtime.templates[key],
            iter([count if slot is None else _read(slot) for slot in self._state_slots[index]]),
        )

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Runs the core's ``update`` on this variable and writes the new value and state back."""
        index = self._get_variable_index(variable)
        transform = self._runtime.transforms[self._runtime.variable_keys[index]]
        slots = self._state_slots[index]
        del learning_rate  # the core's schedule reads optimizer.learning_rate, the same value (_StepLearningRate)
        working = str(_working_dtype(_numpy_dtype(variable.dtype)))
        gradient = ops.cast(_dense(gradient), working)
        param = ops.cast(_read(variable), working)
        state = self.core_state(variable)
        updates, new_state = transform.update((gradient,), state, (param,), xp=keras_namespace)
        if working == keras.backend.standardize_dtype(variable.dtype):
            self.assign_add(variable, updates[0])
        else:  # a 16-bit variable: the float32 result rounded to its dtype once
            self.assign(variable, ops.cast(vc.apply_updates((param,), updates)[0], variable.dtype))
        for slot, (_, value) in zip(slots, _flatten(new_state)):
            if slot is not None:
                self.assign(slot, value)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        for name, value in self._core_hyperparameters.items():
            config[name] = list(value) if isinstance(value, tuple) else value
        config["weight_decay_exclude_names"] = list(self._weight_decay_exclude_names)
        if "trust_ratio_mask" in self._core_masks:
            config["trust_ratio_exclude_names"] = list(self._trust_ratio_exclude_names)
        if "weight_decay" not in self._core_hyperparameters:
            config.pop("weight_decay", None)
        return config


# --- the named optimizers ------------------------------------------------------------------------------

_Optimizer = TypeVar("_Optimizer", bound=ValleyOptimizer)


def _keras_args(cls: Type[ValleyOptimizer]) -> str:
    """The Google-style ``Args:`` section of a named optimizer, generated from its core factory."""
    factory = cls.__dict__["core_factory"]
    factory = factory.__func__ if isinstance(factory, staticmethod) else factory
    lines = [
        "    Args:",
        f"        learning_rate: a float (default {cls._default_learning_rate}), a Keras ``LearningRateSchedule`` or a",
        "            callable taking no arguments.",
    ]
    lines += [
        f"        {name}: as in ``valley_core.{factory.__name__}`` (default {default!r})."
        + (" Applied inside the core's update; Keras' own decoupled decay is off." if name == "weight_decay" else "")
        for name, default in cls._core_defaults.items()
    ]
    lines += [
        "        weight_decay_exclude_names: substrings of the names of variables without weight decay (saved in",
        "            the config; ``exclude_from_weight_decay`` does the same).",
    ]
    if "trust_ratio_mask" in cls._core_masks:
        lines += [
            "        trust_ratio_exclude_names: substrings of the names of variables without the trust ratio",
            "            (saved in the config; ``exclude_from_trust_ratio`` does the same).",
        ]
    lines += [
        "        **keras_kwargs: Keras' optimizer keywords (``name``, ``clipnorm``, ``clipvalue``,",
        "            ``global_clipnorm``, ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,",
        "            ``loss_scale_factor``, ``gradient_accumulation_steps``).",
        "",
    ]
    return "\n".join(lines)


def _document(cls: Type[_Optimizer]) -> Type[_Optimizer]:
    """Inserts the generated ``Args:`` section before ``Example:``/``References:`` (or at the end)."""
    doc = cls.__doc__ or ""
    for section in ("    Example:", "    References:"):
        if section in doc:
            index = doc.index(section)
            cls.__doc__ = doc[:index] + _keras_args(cls) + "\n" + doc[index:]
            return cls
    cls.__doc__ = doc.rstrip() + "\n\n" + _keras_args(cls)
    return cls


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class ALTO(ValleyOptimizer):
    """ALTO (the paper's Algorithm 2): the E adaptor applied to Lamb; runs ``valley_core.alto``.

    The maths, per variable ("layer") ``theta``: docs/algorithm.md#the-optimizers-valley_coreoptimizerspy. Deviation
    from the paper's formula: a trust ratio of ``zero_norm_ratio`` (default 1.0) where a norm is zero
    (docs/algorithm.md#the-trust-ratio-where-a-norm-is-zero-our-one-deviation-from-the-papers-formula). How the
    authors' code differs (docs/algorithm.md#how-the-authors-code-differs-e-optimizer-adaptor-010): it clips the
    gradient to norm 1 (use ``global_clipnorm=1.0`` to match) and skips the trust ratio without weight decay. Keras
    additions: ``exclude_from_weight_decay`` / ``exclude_from_trust_ratio`` (the paper decays and trust-ratios every
    variable), a Keras learning-rate schedule. ``alpha=0`` is ``Lamb``.

    Example:
        >>> import keras, numpy as np
        >>> from backends.keras import ALTO
        >>> w = keras.Variable(np.array([3.0, -2.0], dtype="float32"))
        >>> opt = ALTO(learning_rate=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)
        >>> for _ in range(300):
        ...     _ = opt.apply_gradients([(2 * w.value, w)])   # the gradient of ||w||^2
        >>> bool(np.abs(keras.ops.convert_to_numpy(w)).max() < 0.1)
        True

    References:
        Zhao et al., "Exploring Landscapes for Better Minima along Valleys", NeurIPS 2025.
    """

    core_factory = staticmethod(vc.alto)


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class ALTOVanilla(ValleyOptimizer):
    """ALTO without bias correction (the paper's Algorithm 1, the form its convex regret theorem is proved
    for); runs ``valley_core.alto_vanilla``. The maths: docs/algorithm.md#the-optimizers-valley_coreoptimizerspy;
    the deviation and additions are ``ALTO``'s.
    """

    core_factory = staticmethod(vc.alto_vanilla)


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class Lamb(ValleyOptimizer):
    """Lamb in the paper's form (``ALTO`` with ``alpha = 0``, ``betas = (beta2, beta3)``); runs ``valley_core.lamb``.

    The maths: docs/algorithm.md#the-optimizers-valley_coreoptimizerspy; the zero-norm rule as ``ALTO``'s.
    Differences from ``keras.optimizers.Lamb``: the weight decay is inside the trust-ratio'd direction (Keras' Lamb
    has none of its own) and the trust ratio has ``trust_eps`` / ``norm_eps``. With ``weight_decay = trust_eps =
    norm_eps = 0`` and non-zero weights the two agree.
    """

    core_factory = staticmethod(vc.lamb)


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class EAdam(ValleyOptimizer):
    """EAdam: the E adaptor in front of Adam with L2 weight decay; runs ``valley_core.eadam``.

    The maths: docs/algorithm.md#the-optimizers-valley_coreoptimizerspy. Deviations from the paper: none.
    ``alpha=0`` is Adam with ``eps`` added to ``sqrt(v^)``; ``keras.optimizers.Adam`` adds its ``epsilon`` to
    ``sqrt(v)`` instead, which differs by ``eps (1/sqrt(1 - beta3^k) - 1)`` in the denominator.
    """

    core_factory = staticmethod(vc.eadam)


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class EAdamW(ValleyOptimizer):
    """EAdamW: EAdam with decoupled weight decay; runs ``valley_core.eadamw``.

    The maths: docs/algorithm.md#the-optimizers-valley_coreoptimizerspy. Deviations from the paper: none.
    ``alpha=0`` is ``keras.optimizers.AdamW`` up to round-off and Keras' placement of ``epsilon`` (see ``EAdam``).
    """

    core_factory = staticmethod(vc.eadamw)


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class ESGD(ValleyOptimizer):
    """ESGD: the E adaptor in front of heavy-ball SGD (``betas = (beta1, momentum)``); runs ``valley_core.esgd``.

    The maths: docs/algorithm.md#the-optimizers-valley_coreoptimizerspy. Deviations from the paper: none.
    ``alpha=0`` is ``keras.optimizers.SGD(momentum=betas[1])`` for a constant learning rate (Keras folds the rate into
    its momentum buffer).
    """

    core_factory = staticmethod(vc.esgd)


@keras.saving.register_keras_serializable(package=PACKAGE)
@_document
class AdamCM(ValleyOptimizer):
    """Adam+CM: Adam with a buffer of critical momenta; runs ``valley_core.adam_cm`` (the maths are there).

    Deviations from the reference (chandar-lab/CMOptimizer ``Adam_CM``): those of ``valley_core.adam_cm``,
    and one of Keras: variables are updated one at a time, so the priority key is each variable's own gradient
    norm (the reference's ``synced=False``). ``synced`` therefore defaults to False here, and ``synced=True``
    (the reference's default, the sum of every variable's gradient norm) raises ``ValueError``. For a model
    with one variable the two agree. Memory: ``top_c + 2`` copies of every variable.
    """

    core_factory = staticmethod(vc.adam_cm)

    def __init__(self, learning_rate: Any = None, **kwargs: Any) -> None:
        if kwargs.setdefault("synced", False) is not False:
            raise ValueError(
                f"synced={kwargs['synced']!r} violates synced is False in Keras (variables are "
                "updated one at a time, so the sum of every variable's gradient norm is not available)"
            )
        super().__init__(learning_rate, **kwargs)


AdamCM.__signature__ = AdamCM.__signature__.replace(
    parameters=[p.replace(default=False) if p.name == "synced" else p for p in AdamCM.__signature__.parameters.values()]
)
