"""The scalars of one step of a traced program, from a core factory's hyperparameters.

Shared by every backend that runs the traced programs of ``backends.kernels.programs`` (the CuPy kernels, the
fused CPU kernel of ``backends.torch``): bias corrections by ``valley_core.elementwise.bias_corrections``,
schedules evaluated by ``valley_core.schedules.evaluate`` at the 1-based step ``k``, all as Python floats.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from valley_core import elementwise
from valley_core.base import step_index
from valley_core.schedules import evaluate

LAMB_FAMILY = "lamb"
ADAM_FAMILY = "adam"
HEAVY_BALL_FAMILY = "heavy_ball"

#: Program family of each core factory that has traced programs.
FAMILIES = {
    "alto": LAMB_FAMILY,
    "alto_vanilla": LAMB_FAMILY,
    "lamb": LAMB_FAMILY,
    "eadam": ADAM_FAMILY,
    "eadamw": ADAM_FAMILY,
    "esgd": HEAVY_BALL_FAMILY,
}


def step_scalars(
    factory_name: str, hyperparameters: Dict[str, Any], step: int, dtype: str = "float64"
) -> Dict[str, float]:
    """Every scalar the programs of ``factory_name``'s family read at step ``step`` (1-based).

    Args:
        factory_name: ``"alto"``, ``"alto_vanilla"``, ``"lamb"``, ``"eadam"``, ``"eadamw"`` or ``"esgd"``.
        hyperparameters: the factory's keyword arguments, defaults included.
        step: the step number the core's counters will hold after this step (``count + 1``).
        dtype: the tensors' dtype. The core evaluates ``k`` (``valley_core.base.step_index``), hence the bias
            corrections and schedules, in the array's dtype; so is it done here (with NumPy), so that a
            kernel sees the values the core computes on NumPy arrays.
    """
    hp = hyperparameters
    # The core's own step_index on NumPy values of the core's types (a NumPy scalar, whose ``**`` may round
    # differently from a 0-d array's).
    k = step_index(np.asarray(step - 1, dtype=np.int32), np.zeros(1, dtype=dtype), np)
    family = FAMILIES[factory_name]
    betas = tuple(float(b) for b in hp["betas"])
    scalars = {"lr": float(evaluate(hp["lr"], k)), "weight_decay": float(evaluate(hp["weight_decay"], k))}
    if "alpha" in hp:
        scalars.update(alpha=float(evaluate(hp["alpha"], k)), beta1=betas[0])
        betas = betas[1:]
    if family == HEAVY_BALL_FAMILY:
        scalars["beta2"] = betas[0]
        return scalars
    beta2, beta3 = betas
    bias_correction = hp.get("bias_correction", factory_name != "alto_vanilla")
    correction2, correction3 = elementwise.bias_corrections(beta2, beta3, k, bias_correction)
    scalars.update(
        beta2=beta2, beta3=beta3, eps=float(hp["eps"]), correction2=float(correction2), correction3=float(correction3)
    )
    if family == LAMB_FAMILY:
        scalars.update(trust_eps=float(hp["trust_eps"]), norm_eps=float(hp["norm_eps"]))
    return scalars
