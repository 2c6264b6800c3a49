"""The element-wise programs of each optimizer family, composed only of ``valley_core`` functions.

Each program is the element-wise part of one step for ONE tensor, written as calls into
``valley_core.elementwise`` (and ``valley_core.reductions.trust_ratio``, ``valley_core.apply_updates``) in
the order the core's transforms apply them. ``backends.kernels.trace`` records a program once; the recording
becomes a CuPy ``ElementwiseKernel`` (``backends.cupy``), the loop body of the fused CPU kernels
(``backends.kernels.cpu``, used by ``backends.torch``), or is run by NumPy (CuPy's CPU mode). No arithmetic is
written here: only which core function feeds which.

Families (``chain`` order of ``valley_core.optimizers``):

- ``lamb_direction``: [e_adaptor] -> scale_by_adam -> [add_decayed_weights]; writes ``direction`` (``r``)
  and updates ``carry``, ``first``, ``second`` in place (ALTO, ALTO vanilla, Lamb). With the adaptor and
  the decay it is ``valley_core.elementwise.alto_direction``, the core's own fusion unit.
- ``apply_trust_ratio`` / ``apply_plain``: ``theta + (-lr) * (ratio * r)`` (or without the ratio), the rest of
  the Lamb family's step after the two norms.
- ``adam_step``: [add_decayed_weights (L2)] -> e_adaptor -> scale_by_adam -> [add_decayed_weights
  (decoupled)] -> scale_by_learning_rate -> apply, in place (EAdam, EAdamW).
- ``heavy_ball_step``: add_decayed_weights (L2) -> e_adaptor -> trace -> scale_by_learning_rate -> apply,
  in place (ESGD).
- ``e_adaptor``: the E adaptor alone (``backends.torch.E``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict

import valley_core as vc
from backends.kernels.trace import Program, trace
from valley_core import elementwise, reductions


def _apply(param: Any, update: Any) -> Any:
    """``valley_core.apply_updates`` for one tensor."""
    return vc.apply_updates((param,), (update,))[0]


def lamb_direction(
    *,
    grad,
    param,
    first,
    second,
    carry=None,
    alpha=None,
    beta1=None,
    beta2,
    beta3,
    eps,
    correction2,
    correction3,
    weight_decay=None,
    xp,
    adaptor: bool,
    decay: bool,
) -> Dict[str, Any]:
    """``r = m^/(sqrt(v^)+eps) [+ lambda theta]`` from ``u = E(g)`` (or ``g``), with the new moments."""
    if adaptor and decay:
        direction, carry, first, second = elementwise.alto_direction(
            grad,
            carry,
            first,
            second,
            param,
            alpha=alpha,
            beta1=beta1,
            beta2=beta2,
            beta3=beta3,
            eps=eps,
            correction2=correction2,
            correction3=correction3,
            weight_decay=weight_decay,
            xp=xp,
        )
        return {"direction": direction, "carry": carry, "first": first, "second": second}
    update = grad
    outputs: Dict[str, Any] = {}
    if adaptor:
        update, outputs["carry"] = elementwise.e_adaptor_step(update, carry, alpha, beta1)
    first, second = elementwise.adam_moments(update, first, second, beta2, beta3)
    direction = elementwise.adam_direction(first, second, eps, correction2, correction3, xp)
    if decay:
        direction = elementwise.add_decay(direction, param, weight_decay)
    outputs.update(direction=direction, first=first, second=second)
    return outputs


def apply_trust_ratio(*, direction, param_norm, direction_norm, param, lr, trust_eps, norm_eps, xp) -> Dict[str, Any]:
    """``theta + (-lr) (ratio r)`` with the core's trust ratio of the two norms (0-d arrays)."""
    ratio = reductions.trust_ratio(param_norm, direction_norm, trust_eps, norm_eps)
    return {"param": _apply(param, elementwise.scale(elementwise.scale(direction, ratio), -lr))}


def apply_plain(*, direction, param, lr, xp) -> Dict[str, Any]:
    """``theta + (-lr) r`` (a tensor the trust-ratio mask leaves out)."""
    return {"param": _apply(param, elementwise.scale(direction, -lr))}


def adam_step(
    *,
    grad,
    param,
    carry,
    first,
    second,
    alpha,
    beta1,
    beta2,
    beta3,
    eps,
    correction2,
    correction3,
    weight_decay,
    lr,
    xp,
    l2: bool,
    decoupled: bool,
) -> Dict[str, Any]:
    """One whole EAdam (``l2``) or EAdamW (``decoupled``) step for one tensor."""
    update = elementwise.add_decay(grad, param, weight_decay) if l2 else grad
    update, carry = elementwise.e_adaptor_step(update, carry, alpha, beta1)
    first, second = elementwise.adam_moments(update, first, second, beta2, beta3)
    direction = elementwise.adam_direction(first, second, eps, correction2, correction3, xp)
    if decoupled:
        direction = elementwise.add_decay(direction, param, weight_decay)
    return {"param": _apply(param, elementwise.scale(direction, -lr)), "carry": carry, "first": first, "second": second}


def heavy_ball_step(*, grad, param, carry, momentum, alpha, beta1, beta2, weight_decay, lr, xp) -> Dict[str, Any]:
    """One whole ESGD step for one tensor."""
    update = elementwise.add_decay(grad, param, weight_decay)
    update, carry = elementwise.e_adaptor_step(update, carry, alpha, beta1)
    momentum = elementwise.heavy_ball(update, momentum, beta2)
    return {"param": _apply(param, elementwise.scale(momentum, -lr)), "carry": carry, "momentum": momentum}


def e_adaptor(*, grad, carry, alpha, beta1, xp) -> Dict[str, Any]:
    """The E adaptor alone (``backends.torch.E`` in front of any optimizer): the adapted gradient and the next
    carry (the wrapper writes the carry only once the base optimizer has stepped)."""
    adapted, new_carry = elementwise.e_adaptor_step(grad, carry, alpha, beta1)
    return {"adapted": adapted, "new_carry": new_carry}


@lru_cache(maxsize=None)
def program(kind: str, **flags: bool) -> Program:
    """The traced program ``kind`` (one of the functions above) for the given static flags."""
    if kind == "lamb_direction":
        adaptor, decay = flags["adaptor"], flags["decay"]
        scalars = (
            (("alpha", "beta1") if adaptor else ())
            + ("beta2", "beta3", "eps", "correction2", "correction3")
            + (("weight_decay",) if decay else ())
        )
        name = f"valley_lamb_direction_e{int(adaptor)}_d{int(decay)}"
        return trace(
            lamb_direction,
            name,
            arrays_in=("grad", "param"),
            arrays_inout=(("carry",) if adaptor else ()) + ("first", "second"),
            arrays_out=("direction",),
            scalars=scalars,
            static=flags,
        )
    if kind == "apply_trust_ratio":
        return trace(
            apply_trust_ratio,
            "valley_apply_trust_ratio",
            arrays_in=("direction", "param_norm", "direction_norm"),
            arrays_inout=("param",),
            scalars=("lr", "trust_eps", "norm_eps"),
        )
    if kind == "apply_plain":
        return trace(
            apply_plain, "valley_apply_plain", arrays_in=("direction",), arrays_inout=("param",), scalars=("lr",)
        )
    if kind == "adam_step":
        name = f"valley_adam_step_l{int(flags['l2'])}_d{int(flags['decoupled'])}"
        return trace(
            adam_step,
            name,
            arrays_in=("grad",),
            arrays_inout=("param", "carry", "first", "second"),
            scalars=("alpha", "beta1", "beta2", "beta3", "eps", "correction2", "correction3", "weight_decay", "lr"),
            static=flags,
        )
    if kind == "heavy_ball_step":
        return trace(
            heavy_ball_step,
            "valley_heavy_ball_step",
            arrays_in=("grad",),
            arrays_inout=("param", "carry", "momentum"),
            scalars=("alpha", "beta1", "beta2", "weight_decay", "lr"),
        )
    if kind == "e_adaptor":
        return trace(
            e_adaptor,
            "valley_e_adaptor",
            arrays_in=("grad", "carry"),
            arrays_out=("adapted", "new_carry"),
            scalars=("alpha", "beta1"),
        )
    raise ValueError(f"unknown program {kind!r}")


def lamb_apply_from_moments(
    *,
    first,
    second,
    param,
    param_norm=None,
    direction_norm=None,
    eps,
    correction2,
    correction3,
    weight_decay=None,
    lr,
    trust_eps=None,
    norm_eps=None,
    xp,
    decay: bool,
    trust: bool,
) -> Dict[str, Any]:
    """The Lamb family's update from the new moments: ``r`` recomputed, then ``theta + (-lr)(ratio r)``.

    Used by the multi-tensor path, whose first pass stores ``b, m, v`` and the two norms but not ``r``;
    recomputing ``r = m^/(sqrt(v^)+eps) [+ lambda theta]`` from the stored ``m, v`` repeats the first pass's
    arithmetic exactly.
    """
    direction = elementwise.adam_direction(first, second, eps, correction2, correction3, xp)
    if decay:
        direction = elementwise.add_decay(direction, param, weight_decay)
    if trust:
        direction = elementwise.scale(
            direction, reductions.trust_ratio(param_norm, direction_norm, trust_eps, norm_eps)
        )
    return {"param": _apply(param, elementwise.scale(direction, -lr))}


@lru_cache(maxsize=None)
def apply_from_moments_program(decay: bool, trust: bool) -> Program:
    """The traced ``lamb_apply_from_moments`` for the given flags."""
    scalars = ("eps", "correction2", "correction3") + (("weight_decay",) if decay else ()) + ("lr",)
    scalars += ("trust_eps", "norm_eps") if trust else ()
    arrays_in = ("first", "second") + (("param_norm", "direction_norm") if trust else ())
    return trace(
        lamb_apply_from_moments,
        f"valley_lamb_apply_d{int(decay)}_t{int(trust)}",
        arrays_in=arrays_in,
        arrays_inout=("param",),
        scalars=scalars,
        static={"decay": decay, "trust": trust},
    )
