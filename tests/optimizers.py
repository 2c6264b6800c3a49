"""The one table of optimizer configurations every backend's tests run over (issue 27; torch's ``optim_db``).

One ``OptimizerCase`` per core optimizer x configuration. Each backend's generic tests take the records whose
``backends[<backend>]`` names the feature they test (``cases("torch", "fused")``) and check them against the
float64 NumPy core, the record's oracle, its base at ``alpha = 0``, a resumed run, its invalid inputs; a
backend that lacks a record's optimizer is named in ``refused`` with the substring of its refusal.

Adding an optimizer (or a configuration): add its factory to ``valley_core.OPTIMIZERS`` and ONE record below
with the features each backend claims for it. See ``docs/testing.md`` for which tests then pick it up.

Features (a backend's claim for a record):
    numpy: ``core`` (golden/oracle parity, alpha = 0, resume, invalid inputs), ``converges`` (downhill on a
        quadratic, Rosenbrock solved).
    torch: ``core``, ``fused``, ``compiled`` (the implementation= paths, parity with the core, resume),
        ``fused_bitwise`` (bit for bit with the NumPy core: no norms), ``fused_recompute`` (large tensors
        recompute r), ``low_precision`` (bfloat16/float16 with float32 state), ``scalars`` (0-d and 1-element
        tensors on the compiled path), ``torch.optim`` (at alpha = 0 the torch built-in of the base), ``E``
        (``E(torch.optim.<base>)`` equals the record), ``authors`` (the authors' ALTO where they agree).
    jax: ``core`` (jit float64 parity), ``optax`` (at alpha = 0 optax's built-in of the base).
    keras: ``core`` (float64 parity eager and XLA, the oracle), ``keras.optimizers`` (at alpha = 0 Keras' built-in
        of the base).
    cupy: ``core`` (parity, float32, resume on the NumPy mode, the host-compiled stand-in and a CUDA device; the plan).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

import valley_core as vc
from tests.core import transcription

#: rtol, atol per dtype; "float64/compiled" (dtype/feature) overrides the dtype's entry for that feature.
TOLERANCES = {"float64": (1e-12, 1e-14), "float64/compiled": (1e-11, 1e-13), "float32": (1e-5, 1e-6)}
TOLERANCES["float64/keras"] = (1e-9, 0.0)  # Keras keeps its learning rate in a float32 variable


@dataclass(frozen=True)
class OptimizerCase:
    """One optimizer x configuration.

    Attributes:
        id: unique name of the configuration (the pytest id).
        name: the core factory, a key of ``valley_core.OPTIMIZERS``.
        hyperparameters: the core factory's keyword arguments (masks as callables of the parameter list, so
            that any problem's shapes fit).
        backends: backend -> the features it claims for this record (see the module's docstring).
        tolerances: per dtype (and dtype/feature) ``(rtol, atol)`` of the parity tests.
        oracle: ``"transcription"`` when ``tests/core/transcription.py`` covers the record (``oracle_run``),
            else None (its reference lives with its own tests, e.g. Adam+CM's reference port).
        base: the core configuration (name, hyperparameters) this record equals at ``alpha = 0`` (E records).
        invalid: (hyperparameter overrides, regex of the ``ValueError``) that every backend must refuse
            before writing anything.
        refused: backend -> substring of the refusal a backend gives for this record.
        backend_hyperparameters: backend -> the backend's keyword arguments where they are not the core's
            (e.g. torch's ``trust_ratio`` group switch for a constant mask).
    """

    id: str
    name: str
    hyperparameters: Dict[str, Any]
    backends: Dict[str, FrozenSet[str]]
    tolerances: Dict[str, Tuple[float, float]] = field(default_factory=lambda: dict(TOLERANCES))
    oracle: Optional[str] = None
    base: Optional[Tuple[str, Dict[str, Any]]] = None
    invalid: Tuple[Tuple[Dict[str, Any], str], ...] = ()
    refused: Dict[str, str] = field(default_factory=dict)
    backend_hyperparameters: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:  # pytest ids and failure messages
        return f"OptimizerCase({self.id})"

    def make(self, **overrides: Any) -> vc.GradientTransformation:
        """The core transform of this record (``overrides`` replace hyperparameters)."""
        return vc.OPTIMIZERS[self.name](**{**self.hyperparameters, **overrides})

    def kwargs(self, backend: str) -> Dict[str, Any]:
        """The keyword arguments for ``backend`` (the core's unless ``backend_hyperparameters`` has them)."""
        return dict(self.backend_hyperparameters.get(backend, self.hyperparameters))

    def tolerance(self, dtype: str = "float64", feature: Optional[str] = None) -> Tuple[float, float]:
        return self.tolerances.get(f"{dtype}/{feature}", self.tolerances[dtype])

    def at_alpha_zero(self) -> "OptimizerCase":
        """This record with ``alpha = 0`` (E records only): equal to ``base``."""
        return replace(self, id=f"{self.id}@alpha0", hyperparameters={**self.hyperparameters, "alpha": 0.0})


def _full(name: str, hyperparameters: Dict[str, Any]) -> Dict[str, Any]:
    """The factory's defaults completed by ``hyperparameters``."""
    parameters = inspect.signature(vc.OPTIMIZERS[name]).parameters
    return {**{k: p.default for k, p in parameters.items()}, **hyperparameters}


def _base(name: str, hyperparameters: Dict[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The base configuration an E record equals at alpha = 0 (``valley_core.REGISTRY``'s base and options): E's
    beta1 dropped, the other betas the base's (SGD's momentum), the rest passed on."""
    info = vc.REGISTRY[name]
    if info.base is None:
        return None
    hp = {k: v for k, v in _full(name, hyperparameters).items() if k not in ("alpha", "allow_unstable")}
    betas = hp.pop("betas")
    hp.update(info.base_options)
    if info.base == "sgd":
        return "sgd", {**hp, "momentum": betas[1]}
    return info.base, {**hp, "betas": tuple(betas[1:])}


def _mask(mask: Any, params: Sequence[Any]) -> Optional[List[bool]]:
    return None if mask is None else list(mask(params) if callable(mask) else mask)


def oracle_run(case: OptimizerCase, params: Sequence[np.ndarray], grads: Sequence[Sequence[np.ndarray]]):
    """The record run by the straight float64 transcription: (params, state in the core's flat naming)."""
    assert case.oracle == "transcription", case.id
    name, hp = (case.name, _full(case.name, case.hyperparameters))
    alpha, betas = hp.get("alpha", 0.0), hp.get("betas")
    if name in ("lamb", "adam", "adamw"):
        betas = (0.5, *betas)  # beta1 is unused at alpha = 0
    if name == "sgd":
        betas = (0.5, hp["momentum"])
    common = dict(lr=hp["lr"], alpha=alpha, betas=betas, weight_decay=hp["weight_decay"])
    if name in ("alto", "alto_vanilla", "lamb"):
        theta, buffers = transcription.alto(
            params,
            grads,
            eps=hp["eps"],
            trust_eps=hp["trust_eps"],
            norm_eps=hp["norm_eps"],
            bias_correction=hp.get("bias_correction", name != "alto_vanilla"),
            weight_decay_mask=_mask(hp["weight_decay_mask"], params),
            trust_ratio_mask=_mask(hp["trust_ratio_mask"], params),
            **common,
        )
    elif name in ("eadam", "adam", "eadamw", "adamw"):
        decoupled = name.endswith("w")
        theta, buffers = transcription.eadam(
            params,
            grads,
            eps=hp["eps"],
            decoupled=decoupled,
            bias_correction=hp["bias_correction"],
            weight_decay_mask=_mask(hp.get("weight_decay_mask"), params),
            **common,
        )
    else:
        theta, buffers = transcription.esgd(params, grads, **common)
    flat = {}
    for i in range(len(params)):
        if vc.REGISTRY[name].base:  # the one-buffer carry after step k is b_{k+1} = beta1 a_k - (1 - beta1) g_k
            flat[f"EState.carry.{i}"] = betas[0] * buffers["a"][i] - (1 - betas[0]) * buffers["g_prev"][i]
        if "v" in buffers:
            flat[f"AdamState.first.{i}"], flat[f"AdamState.second.{i}"] = buffers["m"][i], buffers["v"][i]
        else:
            flat[f"TraceState.momentum.{i}"] = buffers["m"][i]
    return theta, flat


def _case(
    id: str,
    name: str,
    hyperparameters: Dict[str, Any],
    numpy: str = "core",
    torch: str = "core",
    jax: str = "core",
    keras: str = "",
    cupy: str = "",
    **extra: Any,
) -> OptimizerCase:
    """A record; features as space-separated strings ("" = the backend does not run it)."""
    claims = dict(numpy=numpy, torch=torch, jax=jax, keras=keras, cupy=cupy)
    backends = {b: frozenset(f.split()) for b, f in claims.items() if f}
    oracle = None if name.endswith("_cm") else "transcription"
    return OptimizerCase(id, name, hyperparameters, backends, oracle=oracle, base=_base(name, hyperparameters), **extra)


def _every_other(params: Sequence[Any]) -> List[bool]:
    return [i % 2 == 0 for i in range(len(params))]


def _all_but_first(params: Sequence[Any]) -> List[bool]:
    return [i != 0 for i in range(len(params))]


def _none(params: Sequence[Any]) -> List[bool]:
    return [False] * len(params)


_STABILITY = ({"alpha": -500.0}, r"alpha=-500\.0 violates \|alpha\| < 1/\(1-beta1\)")
_LR = ({"lr": -1.0}, r"lr=-1\.0 violates lr >= 0")
_BETAS = (_STABILITY, _LR)
_BIAS_CORRECTION = ({"bias_correction": 1}, r"bias_correction=1 violates bias_correction is a bool")
_EPS = ({"eps": -1.0}, r"eps=-1\.0 violates eps >= 0")
_TRUST_EPS = ({"trust_eps": float("nan")}, r"trust_eps=nan violates trust_eps is finite")
_DECAY = ({"weight_decay": -0.1}, r"weight_decay=-0\.1 violates weight_decay >= 0")
_TORCH_CONSTANT_MASK = {"trust_ratio": False}
_isqrt, _exp = vc.inverse_sqrt, vc.exponential_decay

CASES: List[OptimizerCase] = [
    # The behaviour set: no weight decay, tuned to converge on Rosenbrock (numpy "converges").
    _case("alto_explore", "alto", dict(lr=_isqrt(0.02), alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.0),
          numpy="core converges", invalid=(*_BETAS, _BIAS_CORRECTION)),
    _case("alto_exploit", "alto", dict(lr=_isqrt(0.02), alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=0.0),
          numpy="core converges"),
    _case("alto_vanilla", "alto_vanilla",
          dict(lr=_isqrt(0.02), alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.0),
          numpy="core converges", cupy="core", invalid=(*_BETAS, _EPS)),
    _case("lamb", "lamb", dict(lr=_isqrt(0.02), betas=(0.9, 0.999), weight_decay=0.0), numpy="core converges",
          jax="core optax", invalid=(_LR, _TRUST_EPS)),
    _case("eadam", "eadam", dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999)),
          numpy="core converges", torch="core torch.optim", jax="core optax", keras="keras.optimizers",
          invalid=(*_BETAS, _EPS)),
    _case("eadam_explore", "eadam", dict(lr=0.005, alpha=-0.5, betas=(0.5, 0.9, 0.999)),
          numpy="core converges", torch="core E", cupy="core"),
    _case("adam", "adam", dict(lr=0.01), numpy="core converges", invalid=(_LR,)),
    _case("eadamw", "eadamw", dict(lr=0.005, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.0),
          numpy="core converges", invalid=(*_BETAS, _DECAY)),
    _case("adamw", "adamw", dict(lr=0.01, weight_decay=0.0), numpy="core converges"),
    _case("esgd", "esgd", dict(lr=1e-3, alpha=0.5, betas=(0.01, 0.9)), numpy="core converges",
          keras="keras.optimizers", invalid=_BETAS),
    _case("esgd_explore", "esgd", dict(lr=1e-3, alpha=-0.3, betas=(0.5, 0.5)), numpy="core converges",
          torch="core E"),
    _case("sgd", "sgd", dict(lr=1e-3, momentum=0.9), numpy="core converges"),
    # ALTO and Lamb with weight decay, masks, schedules, the paper's two regimes.
    _case("alto_decay", "alto", dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2),
          torch="core fused compiled fused_recompute low_precision scalars", jax="core optax", keras="core",
          cupy="core"),
    _case("alto_large_batch", "alto", dict(lr=1e-2, alpha=-5.0, betas=(0.99, 0.9, 0.99), weight_decay=1e-4),
          torch="core fused authors", cupy="core"),
    _case("alto_small_batch", "alto", dict(lr=1e-3, alpha=0.5, betas=(0.01, 0.9, 0.99), weight_decay=1e-2),
          torch="core authors", keras="core", cupy="core"),
    _case("alto_exploit_eps", "alto",
          dict(lr=0.02, alpha=0.5, betas=(0.01, 0.9, 0.99), weight_decay=1e-4, trust_eps=1e-3, norm_eps=1e-3)),
    _case("alto_no_trust_ratio", "alto",
          dict(lr=0.02, alpha=0.5, betas=(0.01, 0.9, 0.99), weight_decay=1e-2, trust_ratio_mask=_none),
          torch="core fused compiled fused_recompute",
          backend_hyperparameters={"torch": dict(lr=0.02, alpha=0.5, betas=(0.01, 0.9, 0.99), weight_decay=1e-2,
                                                 **_TORCH_CONSTANT_MASK)}),
    _case("alto_masks", "alto",
          dict(lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-2, weight_decay_mask=_every_other,
               trust_ratio_mask=_all_but_first),
          torch="core", keras="core", cupy="core"),
    _case("alto_schedules", "alto",
          dict(lr=_isqrt(1e-2), alpha=_isqrt(-2.0), betas=(0.9, 0.9, 0.99), weight_decay=_exp(1e-2, 0.99)),
          torch="core fused", keras="core", cupy="core"),
    _case("alto_default", "alto", {}, cupy="core"),
    _case("alto_vanilla_decay", "alto_vanilla",
          dict(lr=1e-2, alpha=-3.0, betas=(0.9, 0.8, 0.95), weight_decay=1e-3), keras="core"),
    _case("alto_vanilla_schedules", "alto_vanilla",
          dict(lr=_isqrt(0.02), alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=_exp(1e-2, 0.99)),
          torch="core fused compiled"),
    _case("lamb_decay", "lamb", dict(lr=0.02, betas=(0.9, 0.999), weight_decay=1e-2, trust_eps=1e-3, norm_eps=1e-3),
          torch="core fused compiled fused_recompute low_precision scalars", jax="core optax", keras="core",
          cupy="core"),
    _case("lamb_masks_no_bc", "lamb",
          dict(lr=1e-2, bias_correction=False, weight_decay_mask=_all_but_first, trust_ratio_mask=_every_other),
          torch="core", cupy="core"),
    # Adam and SGD families: L2 and decoupled decay, schedules, no bias correction, no momentum.
    _case("eadam_l2", "eadam", dict(lr=1e-2, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=1e-3),
          torch="core fused fused_bitwise compiled scalars low_precision torch.optim", keras="core", cupy="core"),
    _case("adam_l2", "adam", dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=1e-3), torch="core fused", cupy="core"),
    _case("eadam_schedules_no_bc", "eadam",
          dict(lr=_isqrt(0.01), alpha=_exp(0.5, 0.99), betas=(0.1, 0.9, 0.99), bias_correction=False),
          torch="core fused compiled scalars", cupy="core"),
    _case("eadamw_decay", "eadamw", dict(lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.999), weight_decay=1e-2),
          torch="core fused fused_bitwise low_precision", jax="core optax", keras="core", cupy="core"),
    _case("eadamw_exploit", "eadamw", dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=0.1),
          torch="core fused torch.optim E", keras="keras.optimizers"),
    _case("eadamw_schedules", "eadamw",
          dict(lr=_isqrt(0.01), alpha=_exp(0.5, 0.99), betas=(0.01, 0.9, 0.999), weight_decay=0.1),
          torch="core compiled scalars"),
    _case("eadamw_mask", "eadamw",
          dict(lr=0.005, weight_decay=_exp(1e-2, 0.99), weight_decay_mask=_all_but_first), torch="core", cupy="core"),
    _case("adamw_decay", "adamw", dict(lr=1e-2, weight_decay=1e-2), torch="core fused", cupy="core"),
    _case("esgd_decay", "esgd", dict(lr=1e-3, alpha=0.5, betas=(0.01, 0.9), weight_decay=1e-3),
          torch="core torch.optim", keras="core", cupy="core"),
    _case("esgd_explore_decay", "esgd", dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9), weight_decay=1e-3),
          torch="core fused fused_bitwise compiled scalars low_precision", cupy="core"),
    _case("esgd_no_momentum", "esgd", dict(lr=1e-3, alpha=-5.0, betas=(0.9, 0.0)), keras="keras.optimizers"),
    _case("sgd_decay", "sgd", dict(lr=1e-3, momentum=0.9, weight_decay=1e-3), torch="core fused", cupy="core"),
    # Adam+CM (its reference port is in tests/core/test_adam_cm.py).
    _case("adam_cm", "adam_cm", dict(lr=1e-2, top_c=3, weight_decay=1e-3), torch="core",
          invalid=(({"top_c": 0}, r"top_c=0 violates top_c is an integer >= 1"),),
          refused={"torch/fused": "cannot be planned", "torch/compiled": "cannot be planned",
                   "cupy": "cannot be planned", "keras": "synced=True violates"}),
    _case("adam_cm_unsynced_overwrite", "adam_cm", dict(lr=1e-2, top_c=2, synced=False, critical_test=1.0),
          torch="core", keras="core", refused={"cupy": "cannot be planned"}),
    _case("eadam_cm", "eadam_cm", dict(lr=1e-2, alpha=-0.5, betas=(0.5, 0.9, 0.999), top_c=4),
          refused={"cupy": "cannot be planned", "torch/fused": "cannot be planned"}),
    # Keras: Lamb's form (no epsilons, no decay) for keras.optimizers.Lamb at alpha = 0; Adam+CM unsynced, with
    # a learning rate a float32 variable holds exactly.
    _case("alto_no_eps", "alto",
          dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.99), eps=1e-6, weight_decay=0.0, trust_eps=0.0, norm_eps=0.0),
          torch="", jax="", keras="keras.optimizers"),
    _case("adam_cm_unsynced", "adam_cm", dict(lr=2.0**-7, top_c=3, decay=0.7, weight_decay=1e-3, synced=False),
          torch="core", keras="core", refused={"cupy": "cannot be planned"},
          invalid=(({"top_c": 0}, r"top_c=0 violates top_c is an integer >= 1"),)),
    # Adam+CM configurations for its reference port (tests/core/test_adam_cm.py): buffer sizes, decays, kappa.
    _case("adam_cm_reference", "adam_cm", dict(lr=1e-2, top_c=5, decay=0.7), torch="", jax=""),
    _case("adam_cm_small_buffer", "adam_cm", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, top_c=3, decay=0.9),
          torch="", jax=""),
    _case("adam_cm_unsynced_eps", "adam_cm", dict(lr=1e-2, eps=1e-6, top_c=4, decay=0.7, synced=False),
          torch="", jax=""),
    _case("adam_cm_overwrite_slot_zero", "adam_cm",
          dict(lr=1e-2, weight_decay=1e-3, top_c=3, decay=0.7, critical_test=1.0), torch="", jax=""),
    _case("adam_cm_one_slot_no_decay", "adam_cm", dict(lr=1e-2, top_c=1, decay=1.0, synced=False), torch="", jax=""),
    _case("adam_cm_kappa_half", "adam_cm", dict(lr=1e-2, top_c=5, decay=0.99, kappa=0.5), torch="", jax=""),
    _case("eadam_cm_small_buffer", "eadam_cm",
          dict(lr=1e-2, alpha=-1.5, betas=(0.5, 0.8, 0.99), weight_decay=1e-2, top_c=3, decay=0.9), torch="", jax=""),
]  # fmt: skip
BY_ID: Dict[str, OptimizerCase] = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "record ids must be unique"


def cases(backend: str, feature: str = "core", where: Callable[[OptimizerCase], bool] = lambda c: True):
    """The records ``backend`` claims ``feature`` for (as pytest params with the record's id)."""
    import pytest

    return [pytest.param(c, id=c.id) for c in CASES if feature in c.backends.get(backend, ()) and where(c)]


def claims(backend: str, *features: str):
    """(record, feature) for every feature of ``features`` a record claims on ``backend`` (id "record-feature")."""
    import pytest

    return [pytest.param(c, f, id=f"{c.id}-{f}") for f in features for c in CASES if f in c.backends.get(backend, ())]


def refused(backend: str):
    """(record, what, substring) for every refusal of ``backend`` or of a feature of it ("torch/fused")."""
    import pytest

    return [
        pytest.param(c, what, message, id=f"{c.id}-{what}")
        for c in CASES
        for what, message in c.refused.items()
        if what.split("/")[0] == backend
    ]
