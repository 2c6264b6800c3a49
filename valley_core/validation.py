"""The one hyperparameter validator shared by the core and every adapter.

Every rule raises ``ValueError`` whose message names the parameter, its value and the rule, for example::

    alpha=-5.0 violates |alpha| < 1/(1-beta1) = 1.11 for beta1=0.1

Schedules (callables) are checked through their value at step 1; what they do later is the caller's
responsibility (documented in ``valley_core.schedules``).

A scalar hyperparameter may also be a 0-d real array (the element-wise functions accept those). Its value is
checked like a float when it can be read. A *symbolic* value is left to whoever traces it: an object with
``shape == ()`` whose ``float()`` fails (an array ``jax.jit`` is tracing, a symbol of
``backends.kernels.trace``) has no value yet and is accepted unchecked, betas included; the tracer checks the
real values where they are concrete (``backends.jax`` at construction and ``init``, ``backends.kernels.plan``
by an ordinary call of the factory before tracing it).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

from valley_core.schedules import ScalarOrSchedule


def _read_scalar_array(name: str, value: Any) -> Optional[float]:
    """The value of a 0-d real array as a float, or ``None`` while it is being traced (no value yet)."""
    if tuple(value.shape) != () or getattr(getattr(value, "dtype", None), "kind", "f") not in "fiu":
        raise ValueError(
            f"{name}={value!r} violates {name} is a real number (got {type(value).__name__} of shape "
            f"{tuple(value.shape)} and dtype {getattr(value, 'dtype', None)})"
        )
    try:
        return float(value)
    except Exception:  # noqa: BLE001 - a traced array: its value exists only when the program runs
        return None


def _as_real_or_traced(name: str, value: Any) -> Optional[float]:
    """``_as_real`` that also takes a 0-d real array; ``None`` for a traced one (checked by its adapter)."""
    if not isinstance(value, (bool, numbers.Real)) and hasattr(value, "shape"):
        read = _read_scalar_array(name, value)
        return None if read is None else _as_real(name, read)
    return _as_real(name, value)


def _as_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} violates {name} is a real number (got {type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} violates {name} is finite")
    return value


def _value_at_step_one(name: str, value: ScalarOrSchedule) -> Optional[float]:
    if callable(value):
        try:
            first = value(1)
        except Exception as error:  # noqa: BLE001 - reported with the parameter's name
            raise ValueError(f"{name} schedule could not be evaluated at step 1: {error}") from error
        return _as_real(f"{name}(1)", float(first))
    return _as_real_or_traced(name, value)


def check_nonnegative(name: str, value: ScalarOrSchedule) -> None:
    """``value >= 0`` and finite (a schedule: its value at step 1; a traced array: not checked)."""
    real = _value_at_step_one(name, value)
    if real is not None and real < 0:
        raise ValueError(f"{name}={real!r} violates {name} >= 0")


def check_real(name: str, value: ScalarOrSchedule) -> Optional[float]:
    """A finite real number (a schedule: its value at step 1). Returns that value (``None``: traced)."""
    return _value_at_step_one(name, value)


def check_beta(name: str, value: Any) -> Any:
    """``0 <= value < 1``. Returns the value as a float (a symbolic value as given, unchecked)."""
    real = _as_real_or_traced(name, value)
    if real is None:
        return value
    if not 0.0 <= real < 1.0:
        raise ValueError(f"{name}={real!r} violates 0 <= {name} < 1")
    return real


def check_betas(betas: Any, names: Sequence[str]) -> tuple:
    """``betas`` is a sequence of ``len(names)`` coefficients, each in ``[0, 1)``."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != len(names):
        raise ValueError(f"betas={betas!r} violates betas is a sequence of {len(names)} numbers ({', '.join(names)})")
    return tuple(check_beta(name, beta) for name, beta in zip(names, betas))


def stability_bound(beta1: float) -> float:
    """``1 / (1 - beta1)``: the largest |alpha| the paper's stability remark allows."""
    return 1.0 / (1.0 - beta1)


def check_stability(alpha: ScalarOrSchedule, beta1: float, allow_unstable: bool = False) -> None:
    """The paper's stability remark, ``|alpha| < 1/(1-beta1)``, unless ``allow_unstable`` (research use)."""
    if not isinstance(allow_unstable, bool):
        raise ValueError(f"allow_unstable={allow_unstable!r} violates allow_unstable is a bool")
    real = check_real("alpha", alpha)
    if allow_unstable or real is None:
        return
    bound = stability_bound(beta1)
    if not abs(real) < bound:
        raise ValueError(
            f"alpha={real!r} violates |alpha| < 1/(1-beta1) = {bound:.3g} for beta1={beta1!r} "
            "(pass allow_unstable=True to run it anyway)"
        )


def check_zero_norm_ratio(value: Any) -> None:
    """``zero_norm_ratio``: None (the paper's trust ratio everywhere) or a finite real >= 0."""
    if value is None:
        return
    real = _as_real_or_traced("zero_norm_ratio", value)  # optax.inject_hyperparams passes 0-d arrays
    if real is not None and not (math.isfinite(real) and real >= 0):
        raise ValueError(f"zero_norm_ratio={real!r} violates zero_norm_ratio is None or a finite real >= 0")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} violates {name} is a bool")


def check_top_c(value: Any) -> int:
    """The capacity of Adam+CM's buffer: an integer ``>= 1``. Returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"top_c={value!r} violates top_c is an integer >= 1")
    return int(value)


def check_unit_interval(name: str, value: Any) -> float:
    """``0 <= value <= 1`` (closed, unlike ``check_beta``). Returns the value as a float."""
    real = _as_real(name, value)
    if not 0.0 <= real <= 1.0:
        raise ValueError(f"{name}={real!r} violates 0 <= {name} <= 1")
    return real


def check_critical_test(value: Any) -> float:
    """Adam+CM's ``critical_test``: ``0.0`` or ``1.0`` (the reference's random mix of the two is not implemented)."""
    real = _as_real("critical_test", value)
    if real not in (0.0, 1.0):
        raise ValueError(
            f"critical_test={real!r} violates critical_test is 0.0 (priority replacement) or 1.0 "
            "(overwrite slot 0); the reference's random mix of the two is not implemented"
        )
    return real


def validate_hyperparameters(
    *,
    lr: ScalarOrSchedule | None = None,
    alpha: ScalarOrSchedule | None = None,
    betas: Any = None,
    beta_names: Sequence[str] = (),
    eps: float | None = None,
    weight_decay: ScalarOrSchedule | None = None,
    trust_eps: float | None = None,
    norm_eps: float | None = None,
    bias_correction: Any = None,
    allow_unstable: bool = False,
    top_c: Any = None,
    decay: Any = None,
    kappa: Any = None,
    critical_test: Any = None,
    synced: Any = None,
) -> tuple:
    """Checks every hyperparameter an optimizer takes; the entry point used by the core and all adapters.

    ``None`` means "this optimizer does not take it". ``betas`` is checked against ``beta_names``; when
    both ``alpha`` and a ``beta1`` are given, the stability rule is checked too. Returns the betas as floats.
    """
    checked_betas: tuple = ()
    if betas is not None:
        checked_betas = check_betas(betas, beta_names)
    if lr is not None:
        check_nonnegative("lr", lr)
    if alpha is not None:
        check_real("alpha", alpha)
        beta1 = checked_betas[list(beta_names).index("beta1")] if "beta1" in beta_names else None
        if isinstance(beta1, float):  # a symbolic beta1: its tracer checked the real one
            check_stability(alpha, beta1, allow_unstable)
    for name, value in (("eps", eps), ("weight_decay", weight_decay), ("trust_eps", trust_eps), ("norm_eps", norm_eps)):
        if value is not None:
            check_nonnegative(name, value)
    if bias_correction is not None:
        check_bool("bias_correction", bias_correction)
    if top_c is not None:
        check_top_c(top_c)
    if decay is not None:
        check_unit_interval("decay", decay)
    if kappa is not None and _as_real("kappa", kappa) < 0:
        raise ValueError(f"kappa={float(kappa)!r} violates kappa >= 0")
    if critical_test is not None:
        check_critical_test(critical_test)
    if synced is not None:
        check_bool("synced", synced)
    return checked_betas
