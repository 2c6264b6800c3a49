"""The compiled fast path: ``torch.compile`` of the core's element-wise maths (the path for CUDA tensors).

Nothing here defines an update rule. For ALTO, ALTOVanilla and Lamb two functions are compiled, each over a
chunk of :data:`CHUNK` tensors:

- :func:`first_pass`: ``valley_core.elementwise.alto_direction`` (or, for Lamb, ``adam_moments`` ->
  ``adam_direction`` -> ``add_decay``), writing the new carry/m/v in place into the state buffers and ``r``
  into a workspace, and the norms ``||theta||``, ``||r||`` (``valley_core.reductions.l2_norm``), one loop per
  tensor;
- :func:`second_pass`: the trust ratio (``valley_core.reductions.trust_ratio``) and
  ``theta <- theta + scale(scale(r, ratio), -lr)`` (``valley_core.elementwise.scale``) in place.

For EAdam, EAdamW and ESGD one function, :func:`one_pass`, runs the whole step: the traced programs'
compositions of ``backends.kernels.programs`` (``adam_step``, ``heavy_ball_step``: calls into
``valley_core.elementwise`` only), evaluated on torch tensors and compiled.

Horizontal fusion: one compiled call steps :data:`CHUNK` tensors (the last chunk of a group is padded with
throw-away tensors), so the Python and guard cost of a call is paid once per chunk and not once per tensor.
Tensors are passed as flat 1-D views with dynamic sizes; the hyperparameters of a step (``alpha``, betas,
``eps``, bias corrections, ``lr``, weight decay, trust-ratio epsilons) travel in ONE float64 tensor, built on
the host from the Python step count (``valley_core.elementwise.bias_corrections``, schedules evaluated by
``valley_core.schedules.evaluate``), so a new ``lr`` or step never recompiles. The workspaces for ``r`` are
transient (one per tensor slot of a chunk, freed after the step): not optimizer state.

Recompilation: each static configuration (dtype, device, optimizer kind, trust ratio on/off, tensors of one
element or more) gets its own code object, hence its own Dynamo cache and recompile limit, and needs one
graph. Tensors with one element are stepped in their own chunks (Dynamo specialises size 1), tensors with no
element need no kernel. Should compilation fail anyway (``FailOnRecompileLimitHit`` under ``fullgraph=True``,
an Inductor error ...), it fails before the chunk's kernels run, and that chunk and the rest of the step are
evaluated eagerly by the same Python function (the same core functions, op by op): a step is never left half
written. The optimizer then warns and uses the core path from the next step on (``implementation="auto"``),
or raises after completing the step (``implementation="compiled"``).
Only Dynamo/Inductor exceptions count as compilation failures; anything else propagates.

Scope: ALTO, ALTOVanilla, Lamb, EAdam, EAdamW and ESGD on plain (non-DTensor) dense contiguous float32/float64
tensors, all of one dtype on one device. Anything else (DTensor, bfloat16/float16, non-contiguous, other
optimizers) takes the core path. The parity suite (``tests/torch/test_torch_fast_path.py``) checks parameters
and every state buffer against the core in float64 over 200+ steps, including 0-d and 1-element tensors.
"""

from __future__ import annotations

import types
from typing import Any, Dict, List, Optional, Sequence

import torch

import valley_core as vc
from backends.kernels import programs
from backends.kernels.scalars import step_scalars
from backends.torch import _state
from valley_core import elementwise, reductions

#: Lamb-family factories (two passes), and whether their chain starts with the E adaptor.
_HAS_E = {vc.alto: True, vc.alto_vanilla: True, vc.lamb: False}
#: One-pass factories: the traced program of ``backends.kernels.programs`` that is their whole step, its flags,
#: and the state buffers it updates, in the program's argument order.
_ONE_PASS = {
    vc.eadam: (
        "adam_step",
        (("l2", True), ("decoupled", False)),
        ("EState.carry", "AdamState.first", "AdamState.second"),
    ),
    vc.eadamw: (
        "adam_step",
        (("l2", False), ("decoupled", True)),
        ("EState.carry", "AdamState.first", "AdamState.second"),
    ),
    vc.esgd: ("heavy_ball_step", (), ("EState.carry", "TraceState.momentum")),
}
_FLOATS = (torch.float32, torch.float64)
#: Tensors per compiled call.
CHUNK = 4
#: Slots of the hyperparameter tensor.
_ALPHA, _BETA1, _BETA2, _BETA3, _EPS, _C2, _C3, _DECAY, _LR, _TRUST_EPS, _NORM_EPS = range(11)
_SLOT_NAMES = (
    "alpha",
    "beta1",
    "beta2",
    "beta3",
    "eps",
    "correction2",
    "correction3",
    "weight_decay",
    "lr",
    "trust_eps",
    "norm_eps",
)

#: One kernel per tensor and pass, in program order: a tensor's update runs right after its own first pass, while
#: its data is still in cache (Inductor would otherwise fuse the chunk's first passes into one loop nest first).
_INDUCTOR_OPTIONS = {"cpp.max_horizontal_fusion_size": 1}
_compiled: Dict[Any, Any] = {}
_padding: Dict[Any, torch.Tensor] = {}


class CompilationFailed(RuntimeError):
    """A chunk could not be compiled; the step was completed eagerly (nothing is half written)."""


def first_pass(
    grads: Sequence[torch.Tensor],
    carries: Sequence[torch.Tensor],
    firsts: Sequence[torch.Tensor],
    seconds: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    workspaces: Sequence[torch.Tensor],
    hyper: torch.Tensor,
    has_e: bool,
) -> List[torch.Tensor]:
    """The element-wise part of the step for a chunk of flat tensors: writes carry (ALTO), m, v in place and
    ``r`` into ``workspaces``; returns ``[||theta_i||, ||r_i|| for each tensor]``.

    ``hyper`` holds the step's scalars (see the ``_ALPHA`` ... slots); ``carries`` is empty without the E
    adaptor (Lamb).
    """
    xp = _state.namespace()
    alpha, beta1, beta2, beta3 = hyper[_ALPHA], hyper[_BETA1], hyper[_BETA2], hyper[_BETA3]
    eps, correction2, correction3, weight_decay = hyper[_EPS], hyper[_C2], hyper[_C3], hyper[_DECAY]
    norms = []
    for index, (grad, first, second, param) in enumerate(zip(grads, firsts, seconds, params)):
        if has_e:
            carry = carries[index]
            direction, new_carry, new_first, new_second = elementwise.alto_direction(
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
            carry.copy_(new_carry)
        else:
            new_first, new_second = elementwise.adam_moments(grad, first, second, beta2, beta3)
            direction = elementwise.add_decay(
                elementwise.adam_direction(new_first, new_second, eps, correction2, correction3, xp),
                param,
                weight_decay,
            )
        first.copy_(new_first)
        second.copy_(new_second)
        workspaces[index].copy_(direction)
        norms += [reductions.l2_norm(param, xp), reductions.l2_norm(direction, xp)]
    return norms


def second_pass(
    workspaces: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    norms: Sequence[torch.Tensor],
    hyper: torch.Tensor,
    use_trust: bool,
) -> None:
    """``theta <- theta + scale(scale(r, trust ratio), -lr)`` in place for a chunk (``r`` from the first pass)."""
    lr, trust_eps, norm_eps = hyper[_LR], hyper[_TRUST_EPS], hyper[_NORM_EPS]
    for index, (direction, param) in enumerate(zip(workspaces, params)):
        if use_trust:
            ratio = reductions.trust_ratio(norms[2 * index], norms[2 * index + 1], trust_eps, norm_eps)
            direction = elementwise.scale(direction, ratio.to(param.dtype))
        param.copy_(param + elementwise.scale(direction, -lr))


def one_pass(
    grads: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    buffers: Sequence[Sequence[torch.Tensor]],
    hyper: torch.Tensor,
    kind: str,
    flags: tuple,
) -> None:
    """A whole EAdam/EAdamW (``kind="adam_step"``) or ESGD (``"heavy_ball_step"``) step for a chunk of flat
    tensors, in place: the program of ``backends.kernels.programs`` (calls into ``valley_core.elementwise`` and
    ``valley_core.apply_updates`` only) on torch tensors. ``buffers[j][i]``: the j-th state buffer of tensor i
    (carry, m, v; or carry, momentum)."""
    xp = _state.namespace()
    scalars = dict(
        alpha=hyper[_ALPHA], beta1=hyper[_BETA1], beta2=hyper[_BETA2], weight_decay=hyper[_DECAY], lr=hyper[_LR]
    )
    if kind == "adam_step":
        scalars.update(beta3=hyper[_BETA3], eps=hyper[_EPS], correction2=hyper[_C2], correction3=hyper[_C3])
        names = ("carry", "first", "second")
    else:
        names = ("carry", "momentum")
    function = getattr(programs, kind)
    for index, (grad, param) in enumerate(zip(grads, params)):
        arrays = {name: buffers[j][index] for j, name in enumerate(names)}
        outputs = function(grad=grad, param=param, **arrays, **scalars, xp=xp, **dict(flags))
        param.copy_(outputs["param"])
        for name, buffer in arrays.items():
            buffer.copy_(outputs[name])


def _kernel(function, key):
    """``torch.compile`` of ``function`` for one static configuration, on its own code object (so its own Dynamo
    cache and recompile limit)."""
    key = (function.__name__, *key)
    if key not in _compiled:
        code = function.__code__.replace(co_name=f"{function.__name__}_{len(_compiled)}")
        clone = types.FunctionType(code, function.__globals__, code.co_name)
        _compiled[key] = torch.compile(clone, dynamic=True, fullgraph=True)
    return _compiled[key]


def _pad(dtype: torch.dtype, device: torch.device, size: int, count: int) -> List[List[torch.Tensor]]:
    """``count`` sets of 6 throw-away flat tensors (g, p, m, v, r, carry) that fill the last chunk of a group.

    Separate allocations (inputs that alias each other would change the compiled graph); zeros, which the step
    keeps finite and unchanged. Their values are irrelevant.
    """
    key = (dtype, device, size)
    pads = _padding.setdefault(key, [])
    while len(pads) < count:
        pads.append([torch.zeros(size, dtype=dtype, device=device) for _ in range(6)])
    return pads[:count]


def _no_duck_shapes():
    from torch.fx.experimental import _config

    return _config.patch(use_duck_shape=False)


def _is_compilation_error(error: BaseException) -> bool:
    from torch._dynamo import exc

    return isinstance(error, (exc.FailOnRecompileLimitHit, exc.TorchDynamoException))


def unsupported_reason(optimizer, group: Dict[str, Any], entries) -> Optional[str]:
    """None when the compiled path can run this group, else why not."""
    factory = type(optimizer).factory
    if factory not in _HAS_E and factory not in _ONE_PASS:
        return f"no compiled kernel for valley_core.{getattr(factory, '__name__', factory)}"
    device = None
    if len({p.dtype for p, _ in entries}) > 1:
        return "parameters of several dtypes in one group"
    for p, g in entries:
        if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(g) is not torch.Tensor:
            return "tensor subclasses (DTensor ...) use the core path"
        if p.dtype not in _FLOATS or g.dtype != p.dtype:
            return f"dtype {p.dtype} (grad {g.dtype}): the compiled path handles float32/float64"
        if not (p.is_contiguous() and g.is_contiguous()):
            return "non-contiguous parameter or gradient"
        if device is None:
            device = p.device
        elif p.device != device:
            return "parameters on several devices"
    return None


def _hyperparameters(optimizer, group: Dict[str, Any], step: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The step's scalars (``backends.kernels.scalars.step_scalars``: the core's bias corrections and schedules)
    in one float64 tensor, by the ``_ALPHA`` ... slots (0 for a scalar the optimizer does not have)."""
    named = step_scalars(
        type(optimizer).factory.__name__,
        optimizer._factory_kwargs(group, 1),
        step + 1,
        str(dtype).replace("torch.", ""),
    )
    values = [0.0] * 11
    for slot, name in enumerate(_SLOT_NAMES):
        values[slot] = float(named.get(name, 0.0))
    return torch.tensor(values, dtype=torch.float64).to(device, non_blocking=True)


def _one_pass_chunks(
    chunks, hyper: torch.Tensor, spec, dtype, device, single: bool, failure: Optional[str], duck_shapes_off
) -> Optional[str]:
    """EAdam/EAdamW/ESGD: :func:`one_pass` compiled over each chunk (padded to :data:`CHUNK` tensors); after a
    compilation failure (raised before the chunk is written) the rest runs eagerly by the same function."""
    kind, flags, keys = spec
    key = (dtype, device, kind, flags, single)
    for chunk in chunks:
        grads = [g.view(-1) for _, g, _ in chunk]
        params = [p.detach().view(-1) for p, _, _ in chunk]
        buffers = [[state[name].view(-1) for _, _, state in chunk] for name in keys]
        missing = CHUNK - len(chunk)
        for pad in _pad(dtype, device, 1 if single else 2, missing) if missing else []:
            grads.append(pad[0])
            params.append(pad[1])
            for column, tensor in zip(buffers, pad[2:]):
                column.append(tensor)
        arguments = (grads, params, buffers, hyper, kind, flags)
        if failure is None:
            try:
                with duck_shapes_off:
                    _kernel(one_pass, key)(*arguments)
                continue
            except Exception as error:  # noqa: BLE001 - only compilation errors, raised before any write
                if not _is_compilation_error(error):
                    raise
                failure = f"torch.compile failed: {type(error).__name__}: {error}".split("\n")[0]
        one_pass(*arguments)
    return failure


def step_group(optimizer, group: Dict[str, Any], entries) -> Optional[str]:
    """One step of a group on the compiled path (state already initialised by the optimizer).

    Returns None, or (when a chunk could not be compiled and the step was completed eagerly) why.
    """
    factory = type(optimizer).factory
    spec = _ONE_PASS.get(factory)
    has_e = _HAS_E.get(factory, False)
    use_trust = bool(group.get("trust_ratio", True))
    dtype, device = entries[0][0].dtype, entries[0][0].device
    shared_keys = optimizer.shared_state_keys(group)
    # Tensors at different steps (some had no gradient at times) get their own scalars; size-1 tensors their
    # own chunks (Dynamo specialises size 1); empty tensors need no kernel.
    batches: Dict[tuple, list] = {}
    for p, g in entries:
        state = optimizer.state[p]
        numel = p.numel()
        if numel:
            batches.setdefault((state["step"], numel == 1), []).append((p, g, state))
    failure: Optional[str] = None
    # No duck sizing: equal sizes of different tensors at the first call must not become a guard (another
    # layout would recompile); each tensor's own buffers are equal by the maths, and Dynamo guards that.
    duck_shapes_off = _no_duck_shapes()
    for (step, single), items in batches.items():
        hyper = _hyperparameters(optimizer, group, step, dtype, device)
        chunks = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
        if spec is not None:
            failure = _one_pass_chunks(chunks, hyper, spec, dtype, device, single, failure, duck_shapes_off)
            continue
        key = (dtype, device, has_e, single)
        # Transient workspaces for r: slot j is as large as the j-th tensor of the largest chunk; freed after
        # the step (not optimizer state). Separate allocations: inputs that alias would change the graph.
        sizes = [max(chunk[j][0].numel() if j < len(chunk) else 1 for chunk in chunks) for j in range(CHUNK)]
        workspace = [torch.empty(size, dtype=dtype, device=device) for size in sizes]
        for chunk in chunks:
            grads = [g.view(-1) for _, g, _ in chunk]
            params = [p.detach().view(-1) for p, _, _ in chunk]
            firsts = [s["AdamState.first"].view(-1) for _, _, s in chunk]
            seconds = [s["AdamState.second"].view(-1) for _, _, s in chunk]
            carries = [s["EState.carry"].view(-1) for _, _, s in chunk] if has_e else []
            workspaces = [buffer[: p.numel()] for buffer, p in zip(workspace, params)]
            missing = CHUNK - len(chunk)
            if missing:
                for pad in _pad(dtype, device, 1 if single else 2, missing):
                    grads.append(pad[0])
                    params.append(pad[1])
                    firsts.append(pad[2])
                    seconds.append(pad[3])
                    workspaces.append(pad[4])
                    if has_e:
                        carries.append(pad[5])
            first_arguments = (grads, carries, firsts, seconds, params, workspaces, hyper, has_e)
            norms = None
            if failure is None:
                try:
                    with duck_shapes_off:
                        norms = _kernel(first_pass, key)(*first_arguments)
                        _kernel(second_pass, (*key, use_trust))(workspaces, params, norms, hyper, use_trust)
                    continue
                except Exception as error:  # noqa: BLE001 - only compilation errors, raised before any write
                    if not _is_compilation_error(error):
                        raise
                    failure = f"torch.compile failed: {type(error).__name__}: {error}".split("\n")[0]
            # Eagerly, by the same functions op by op: the rest of the step, from where compilation failed (a
            # pass that failed to compile has not run).
            if norms is None:
                norms = first_pass(*first_arguments)
            second_pass(workspaces, params, norms, hyper, use_trust)
    _state.advance_counters(
        optimizer, shared_keys, [[state for _, _, state in items] for items in batches.values()], entries
    )
    return failure
