"""Adam with critical momenta (Adam+CM): Adam driven by ``m_k + mean(buffer of critical momenta)``.

The buffer is a fixed-size stack of ``top_c`` past momenta per tensor, each with a priority (the gradient
norm when it was stored, decayed every step). All data-dependent choices (is the buffer full, which entry
has the lowest priority, does the current gradient norm beat it) are array operations (``where``,
``argmin``, comparisons), with no Python branch on an array value, so the same code runs on every array-API
namespace and can be traced (it runs under XLA through the Keras adapter, ``tests/keras/_parity.py``);
nothing is a Python-side heap and nothing is written in place.

This is a transcription of ``Adam_CM`` from the authors' code (chandar-lab/CMOptimizer,
``cmoptimizer/optim.py`` and ``cmoptimizer/prioritydict.py``); ``scale_by_adam_critical_momenta`` lists
what it reproduces and every place it deviates.
"""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import Any, NamedTuple, Sequence, Tuple

from valley_core import elementwise, reductions
from valley_core._namespace import device_of, resolve_namespace, scalar_zero
from valley_core.base import GradientTransformation, check_state_buffers, per_tensor, step_index
from valley_core.transforms.adam import scale_by_adam

#: The ``critical_test`` values the core implements (see ``scale_by_adam_critical_momenta``).
PRIORITY_REPLACEMENT = 0.0
OVERWRITE_FIRST_SLOT = 1.0


@per_tensor(
    "first",
    "second",
    "buffer",
    "priorities",
    nonnegative=("second",),
    float32_only="Adam+CM's slot priorities decide which momenta are kept, and rounding them would change those "
    "choices",
)
class CriticalMomentaState(NamedTuple):
    """State of Adam+CM; memory is ``(2 + top_c)`` times the parameters plus ``top_c`` scalars per tensor.

    Attributes:
        count: steps taken (0-d int array). The buffer holds ``min(count, top_c)`` entries.
        first: ``m`` (one per tensor), the EMA of the gradients (not of the aggregate).
        second: ``v`` (one per tensor), the EMA of the squared aggregate ``(m + mean(buffer))^2``.
        buffer: one array of shape ``(top_c, *tensor.shape)`` per tensor: the stored momenta, filled in slot
            order; unused slots are zero.
        priorities: one array of shape ``(top_c,)`` per tensor: the decayed gradient norm of each slot
            (zero for unused slots). With ``synced=True`` every tensor's priorities are the same.
    """

    count: Any
    first: Tuple[Any, ...]
    second: Tuple[Any, ...]
    buffer: Tuple[Any, ...]
    priorities: Tuple[Any, ...]


# --- element-wise arithmetic (the per-element part of a step; a backend may fuse it) -------------------


def critical_momenta_moments(
    grad: Any,
    first: Any,
    second: Any,
    buffer_mean: Any,
    first_step: Any,
    *,
    beta1: float,
    beta2: float,
    kappa: float,
    xp: Any,
) -> Tuple[Any, Any, Any]:
    """``(m_k, v_k, c_k)`` for one tensor, ``c_k = m_k + kappa * mean(buffer)`` the aggregate.

    On the first step (``first_step`` true) ``m`` is left unchanged (zero), as in the reference, so that
    ``c_1 = 0`` and ``v_1 = beta2 v_0 = 0``: the first step does not move the parameters.
    """
    first = xp.where(first_step, first, beta1 * first + (1.0 - beta1) * grad)
    aggregate = first + kappa * buffer_mean
    return first, beta2 * second + (1.0 - beta2) * (aggregate * aggregate), aggregate


def store_in_buffer(
    buffer: Any, priorities: Any, value: Any, key: Any, write: Any, decay: float, xp: Any
) -> Tuple[Any, Any]:
    """Writes ``value`` (priority ``key``) into the slots where ``write`` is true, then decays every priority.

    Args:
        buffer: ``(top_c, *shape)``.
        priorities: ``(top_c,)``.
        value: ``shape``, the momentum (on the first step, the gradient) to store.
        key: 0-d, its priority (the gradient norm of this step).
        write: ``(top_c,)`` bools, true in at most one slot.
        decay: the factor every priority is multiplied by after the write.
    """
    mask = xp.reshape(write, (int(buffer.shape[0]),) + (1,) * len(value.shape))
    buffer = xp.where(mask, xp.expand_dims(value, axis=0), buffer)
    return buffer, xp.where(write, key, priorities) * decay


# --- reductions and selection ----------------------------------------------------------------------------


def _on_device_of(like: Any) -> dict:
    device = device_of(like)
    return {} if device is None else {"device": device}


def _slot_indices(top_c: int, like: Any, xp: Any) -> Any:
    """``[0, 1, ..., top_c - 1]`` as int64 on ``like``'s device (``asarray``: every namespace has it)."""
    return xp.asarray(list(range(top_c)), dtype=xp.int64, **_on_device_of(like))


def select_slot(priorities: Any, key: Any, count: Any, slot_indices: Any, critical_test: float, xp: Any) -> Any:
    """The ``(top_c,)`` mask of the slot this step writes (all false when nothing is written).

    Before the buffer is full (``count < top_c``) the next free slot, ``count``, is written. Once full:
    with ``critical_test = 0`` the lowest-priority slot (its first occurrence, as ``torch.argmin``) if
    ``key`` is strictly greater than that priority, else none; with ``critical_test = 1`` slot 0, always
    (what the reference's random branch does when it always fires, see ``scale_by_adam_critical_momenta``).
    """
    top_c = int(priorities.shape[0])
    count = xp.astype(count, xp.int64)
    full = count >= top_c
    if critical_test == PRIORITY_REPLACEMENT:
        smallest = xp.astype(xp.argmin(priorities), xp.int64)
        admitted = xp.logical_or(xp.logical_not(full), key > xp.min(priorities))
        return xp.logical_and(slot_indices == xp.where(full, smallest, count), admitted)
    return slot_indices == xp.where(full, count * 0, count)


def gradient_norms(grads: Sequence[Any], synced: bool, xp: Any) -> Tuple[Any, ...]:
    """The priority key of each tensor: its own norm, or (``synced``) the SUM of every tensor's norm."""
    norms = tuple(reductions.l2_norm(g, xp) for g in grads)
    if not synced:
        return norms
    total = reduce(add, norms)
    return (total,) * len(norms)


# --- the transform -----------------------------------------------------------------------------------------


def scale_by_adam_critical_momenta(
    beta1: float,
    beta2: float,
    eps: float,
    top_c: int = 5,
    decay: float = 0.7,
    kappa: float = 1.0,
    synced: bool = True,
    critical_test: float = 0.0,
) -> GradientTransformation:
    """Replaces ``g_k`` by the Adam+CM direction (the reference's ``Adam_CM`` without lr and weight decay).

    Maths (``k`` the 1-based step; ``C`` the buffer, ``|C|`` its number of entries, ``p`` its priorities)::

        k = 1:  C = [(g_1, ||g_1||)];  m_1 = 0, v_1 = 0, r_1 = 0     (the first step does not move)
        k > 1:  m_k = beta1 m_{k-1} + (1 - beta1) g_k
                c_k = m_k + kappa * (1/|C|) sum_{j in C} C_j         (the buffer BEFORE this step's insertion)
                insert (m_k, ||g_k||) into C: append while |C| < top_c; once full, replace the entry of
                    lowest priority if ||g_k|| > min(p), else keep C as it is
                v_k = beta2 v_{k-1} + (1 - beta2) c_k^2
                r_k = (c_k / (1 - beta1^k)) / (sqrt(v_k / (1 - beta2^k)) + eps)
        every k, after the insertion:  p <- decay * p

    ``||g_k||`` is, with ``synced=True`` (the reference's default), the SUM over tensors of each tensor's
    L2 norm (not the global L2 norm), the same key for every tensor; with ``synced=False`` each tensor's own
    norm. Memory: ``top_c`` stored momenta per tensor on top of Adam's two moments, i.e. ``(2 + top_c)``
    times the parameters (the reference keeps one more: a running sum of the buffer).

    What is reproduced exactly (transcribed from chandar-lab/CMOptimizer, ``Adam_CM.step`` and
    ``TensorList``): the first step stores the raw GRADIENT ``g_1`` (later steps store momenta), leaves
    ``m`` and ``v`` at zero and does not move the parameters, yet counts as step 1 for the bias corrections
    (so ``m_2 = (1 - beta1) g_2`` is divided by ``1 - beta1^2``); the aggregate ``m_k + mean(C)`` uses the
    buffer before the insertion and replaces ``m_k`` both in the step and in ``v_k`` (while the stored
    ``m_k`` stays the plain EMA); priorities are the undecayed norm at insertion, decayed by ``decay``
    every step including the step of insertion, and compared with a strict ``>``; ties for the lowest
    priority go to the first slot (``torch.argmin``).

    Deviations from the reference:
        * ``kappa``: in the reference only ``kappa > 0`` matters (an on/off switch; the aggregate is always
          ``m + mean(C)``), and ``kappa = 0`` raises (``KeyError`` in ``decay()``). Here ``kappa = 0``
          gives Adam exactly (the ``scale_by_adam`` transform, no buffer allocated, Adam's own first step)
          and ``kappa > 0`` scales the buffer mean, ``c_k = m_k + kappa mean(C)``: ``kappa = 1`` (the
          default) is the reference; other positive values are an extension.
        * ``critical_test``: the reference draws ``np.random.uniform()`` each step once the buffer is full;
          with probability ``1 - critical_test`` it applies the priority rule above, otherwise it stores
          ``m_k`` unconditionally in the slot its last ``argmin`` pointed at (slot 0 if it never ran). Only
          the two deterministic ends are implemented: ``0.0`` (the current default, priority rule) and
          ``1.0`` (always overwrite slot 0 once full; this is also what the earlier reference default
          ``critical_test=True`` did, because ``uniform() >= True`` never holds). Values in between are
          rejected by the validator.
        * The buffer mean is recomputed as ``sum(C) / |C|`` each step instead of kept as a running sum
          (``aggr_sum``), which differs from it by floating-point round-off only.
        * The denominator is ``sqrt(v / (1 - beta2^k)) + eps`` (as ``scale_by_adam``) rather than
          ``sqrt(v) / sqrt(1 - beta2^k) + eps``; equal up to round-off.
        * Validation (in ``valley_core.validation``, through the named optimizers): ``top_c >= 1`` (the
          reference accepts ``topC=0`` and then fails in ``decay()``) and ``0 <= decay <= 1`` (the
          reference's check, ``not 0 <= decay and not 1 > decay``, can never fire).
        * Not implemented: ``amsgrad``, ``buffer_dtype`` (the buffer has the parameter's dtype), per-group
          hyperparameters (the core sees one group: every tensor it is given), the ``offline_grad``
          counters. A tensor is always part of the step (the reference skips tensors whose ``grad`` is None).

    Args:
        beta1: EMA coefficient of ``m``.
        beta2: EMA coefficient of ``v``.
        eps: added to ``sqrt(v^)``.
        top_c: buffer capacity (``topC`` in the reference), an integer >= 1.
        decay: priority decay per step, in ``[0, 1]``.
        kappa: weight of the buffer mean (``0``: Adam).
        synced: the priority key is the sum of all tensors' norms (True) or each tensor's norm (False).
        critical_test: ``0.0`` (priority replacement) or ``1.0`` (overwrite slot 0), see above.

    References:
        Malviya et al., "Promoting Exploration in Memory-Augmented Adam using Critical Momenta", TMLR 2024;
        code: https://github.com/chandar-lab/CMOptimizer.
    """
    if kappa == 0:
        return scale_by_adam(beta1, beta2, eps)._replace(name="scale_by_adam_critical_momenta")
    top_c = int(top_c)

    def init(params: Sequence[Any], *, xp: Any = None) -> CriticalMomentaState:
        xp = resolve_namespace(params, xp)
        buffers = tuple(xp.zeros((top_c, *p.shape), dtype=p.dtype, **_on_device_of(p)) for p in params)
        priorities = tuple(xp.zeros((top_c,), dtype=p.dtype, **_on_device_of(p)) for p in params)
        return CriticalMomentaState(
            scalar_zero(xp, params[0]),
            tuple(xp.zeros_like(p) for p in params),
            tuple(xp.zeros_like(p) for p in params),
            buffers,
            priorities,
        )

    def update(grads: Sequence[Any], state: CriticalMomentaState, params: Any = None, *, xp: Any = None):
        check_state_buffers("scale_by_adam_critical_momenta", grads, state.first)
        xp = resolve_namespace(grads, xp)
        count = state.count
        first_step = count == 0
        keys = gradient_norms(grads, synced, xp)
        slot_indices = _slot_indices(top_c, grads[0], xp)
        directions, firsts, seconds, buffers, priorities = [], [], [], [], []
        for g, m, v, buffer, p, key in zip(grads, state.first, state.second, state.buffer, state.priorities, keys):
            # |C| before this step's insertion is min(count, top_c); on the first step C is empty (mean 0).
            size = xp.astype(count, g.dtype)
            full = xp.astype(count >= top_c, g.dtype)
            size = size - (size - top_c) * full + xp.astype(first_step, g.dtype)
            buffer_mean = xp.sum(buffer, axis=0) / size
            m, v, aggregate = critical_momenta_moments(
                g, m, v, buffer_mean, first_step, beta1=beta1, beta2=beta2, kappa=kappa, xp=xp
            )
            write = select_slot(p, key, count, slot_indices, critical_test, xp)
            buffer, p = store_in_buffer(buffer, p, xp.where(first_step, g, m), key, write, decay, xp)
            correction1, correction2 = elementwise.bias_corrections(beta1, beta2, step_index(count, g, xp), True)
            directions.append(elementwise.adam_direction(aggregate, v, eps, correction1, correction2, xp))
            firsts.append(m)
            seconds.append(v)
            buffers.append(buffer)
            priorities.append(p)
        return tuple(directions), CriticalMomentaState(
            count + 1, tuple(firsts), tuple(seconds), tuple(buffers), tuple(priorities)
        )

    return GradientTransformation(init, update, "scale_by_adam_critical_momenta")
