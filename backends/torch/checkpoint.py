"""Checkpoints of the torch optimizers: ``state_dict`` / ``load_state_dict`` of the ``ValleyOptimizer`` classes
and of ``E``, as plain functions of the optimizer (no import of either class).

Both check the WHOLE checkpoint before anything is installed and raise ``ValueError`` naming every mismatch;
both record and read the version that wrote it (``valley_core.serialization``); both check a parameter's saved
state against the parameter (its step count, :func:`saved_step`; its buffers' shapes; DTensor or not) and
convert it to the parameter's device and state dtype.
"""

from __future__ import annotations

import re
from collections import defaultdict
from copy import deepcopy
from itertools import chain
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import valley_core as vc
from backends.torch import _state, compact_state
from backends.torch.compact_state import FLOAT32
from backends.torch.hyperparameters import checkpoint_group
from valley_core.serialization import UNVERSIONED, VERSION_KEY, checkpoint_version


# ------------------------------------------------------------------------------------------------- shared
def saved_step(step: Any) -> Any:
    """A saved step count as an int when it is one (a 0-d tensor, as torch's optimizers store it, or an int);
    anything else unchanged (the caller names the problem)."""
    if isinstance(step, torch.Tensor) and step.numel() == 1 and float(step) == int(step):
        return int(step)
    return step


def _run_load_pre_hooks(optimizer: torch.optim.Optimizer, state_dict: Dict[str, Any]) -> Dict[str, Any]:
    for pre_hook in optimizer._optimizer_load_state_dict_pre_hooks.values():
        result = pre_hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    return state_dict


def _run_load_post_hooks(optimizer: torch.optim.Optimizer) -> None:
    for post_hook in optimizer._optimizer_load_state_dict_post_hooks.values():
        post_hook(optimizer)


# ----------------------------------------------------------------------------- the ValleyOptimizer classes
def checked_state(
    optimizer: Any, group: Dict[str, Any], p: torch.Tensor, saved: Any, index: int = -1
) -> Dict[str, Any]:
    """One parameter's saved state, checked by ``valley_core.state_from_dict`` (keys, shapes, dtypes) against
    the chain's ``init``, converted to the parameter's device and state dtype; raises ``ValueError``.

    valley 0.1.0 stored every core counter (``"AdamState.count"`` ...) beside ``"step"``; they are accepted
    when they equal ``"step"`` (as they always did) and dropped.
    """
    if not isinstance(saved, dict):
        raise ValueError(f"state must be a dict, got {type(saved).__name__}")
    codec = compact_state.of_group(group)
    if codec.compact or {compact_state.format_of(saved[k]) for k in compact_state.buffer_keys(saved)} - {FLOAT32.name}:
        return _checked_compact_state(optimizer, group, p, saved, codec, index)
    problems: List[str] = []
    step = saved_step(saved.get("step"))
    if isinstance(step, bool) or not isinstance(step, int):
        problems.append(f"step must be an int, got {step!r}")
    template = optimizer.transform_for(group, 1).init(
        (_state.meta_like(p, _state.state_dtype(p)),), xp=_state.namespace()
    )
    expected = vc.state_to_dict(template)
    flat: Dict[str, Any] = {}
    for key, stored in saved.items():
        if key == "step":
            continue
        if key in expected:  # a 0.1.0 counter
            if not isinstance(stored, torch.Tensor) or stored.numel() != 1 or int(stored) != step:
                problems.append(f"{key}={stored!r} differs from step={step}")
            continue
        # To the state dtype: never rounded down to a 16-bit parameter's.
        if all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (stored, expected.get(f"{key}.0"))):
            stored = stored.to(expected[f"{key}.0"].dtype)
        if _state.is_dtensor(p) and isinstance(stored, torch.Tensor) and not _state.is_dtensor(stored):
            problems.append(
                f"{key} is a plain tensor for a DTensor parameter (save and load FSDP2 checkpoints with "
                "torch.distributed.checkpoint)"
            )
        flat[f"{key}.0"] = stored
    flat.update({key: torch.tensor(0, dtype=torch.int32) for key in expected if _state.split_key(key)[1] is None})
    try:
        vc.state_from_dict(template, flat)
    except ValueError as error:  # the core's message, in this optimizer's per-parameter key names
        problems.insert(0, re.sub(r"\.0\b", "", str(error).replace("state does not match this optimizer: ", "")))
    if problems:
        raise ValueError("; ".join(problems))
    assert isinstance(step, int)  # else a problem was raised above
    state = {k[: -len(".0")]: v.to(device=p.device, copy=True) for k, v in flat.items() if k.endswith(".0")}
    return {**state, "step": _state.step_tensor(step)}


def _checked_compact_state(
    optimizer: Any, group: Dict[str, Any], p: torch.Tensor, saved: Dict[str, Any], codec: Any, index: int
) -> Dict[str, Any]:
    """:func:`checked_state` of a state stored in a compact format or loaded into one: checked on its float32
    decoding; installed as stored when its format is the group's ``state_dtype`` (bit for bit), else converted
    (``Codec.convert``, seeded by ``index``, ``p``'s position)."""
    keys = compact_state.buffer_keys(saved)
    problems = [reason for reason in map(lambda key: compact_state.check_stored(saved, key), keys) if reason]
    owners = [(k, compact_state.scale_owner(k)) for k in saved]
    problems += [f"{k} has no buffer" for k, owner in owners if owner is not None and owner not in saved]
    if problems:
        raise ValueError("; ".join(problems))
    plain = FLOAT32.convert(saved, index, _state.state_dtype(p))
    checked = checked_state(optimizer, {**group, "state_dtype": FLOAT32.name}, p, plain)
    if all(compact_state.stored_format(saved, k) == codec.name for k in keys) and set(keys) == set(checked) - {"step"}:
        stored = {k: v for k, v in saved.items() if k in checked or compact_state.scale_owner(k) in checked}
        return {
            **{k: v.to(device=p.device, copy=True) for k, v in stored.items() if k != "step"},
            "step": checked["step"],
        }
    return codec.convert(checked, index)


def load(optimizer: Any, state_dict: Dict[str, Any]) -> None:
    """``ValleyOptimizer.load_state_dict``: checks ALL of the checkpoint, then installs it (see there)."""
    name = type(optimizer).__name__
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError(f"{name}.load_state_dict expects a dict with keys 'state' and 'param_groups'")
    state_dict = state_dict.copy()
    version = checkpoint_version(state_dict, f"{name}.load_state_dict")
    state_dict.pop(VERSION_KEY, None)
    state_dict = _run_load_pre_hooks(optimizer, state_dict)
    groups = optimizer.param_groups
    saved_groups = deepcopy(state_dict["param_groups"])
    if len(groups) != len(saved_groups):
        raise ValueError(
            f"{name}.load_state_dict: the state dict has {len(saved_groups)} param groups, "
            f"this optimizer has {len(groups)}"
        )
    problems: List[str] = []
    # The checkpoint's hyperparameters are restored (as in torch.optim), and they decide the state's layout
    # (AdamCM's buffer size, say); where they are invalid, this optimizer's own group is used to check it.
    # The group that is validated is the group that is installed: every hyperparameter must be in the
    # checkpoint (a group of another class lacks some), none is filled in from this optimizer's defaults.
    layout_groups: List[Dict[str, Any]] = []
    factory = type(optimizer).factory
    for index, (group, saved) in enumerate(zip(groups, saved_groups)):
        layout_groups.append(group)
        if not isinstance(saved, dict) or len(group["params"]) != len(saved.get("params", ())):
            count = len(saved["params"]) if isinstance(saved, dict) and "params" in saved else "no"
            problems.append(
                f"param group {index} has {count} parameters in the state dict, {len(group['params'])} here"
            )
            continue
        try:
            saved = saved_groups[index] = checkpoint_group(factory, saved, f"param group {index}")
            missing = [key for key in optimizer.hyperparameter_defaults() if key not in saved]
            if missing:
                raise ValueError(
                    f"param group {index}: missing hyperparameters {missing} (a checkpoint of another optimizer?)"
                )
        except (TypeError, ValueError) as error:
            problems.append(str(error))
            continue
        try:
            optimizer._validate_group(saved, f"param group {index}")
            layout_groups[-1] = saved
        except ValueError as error:
            problems.append(str(error))
    if any("parameters in the state dict" in problem for problem in problems):
        raise ValueError(f"state dict does not match this {name}: " + "; ".join(problems))
    id_map = dict(
        zip(chain.from_iterable(g["params"] for g in saved_groups), chain.from_iterable(g["params"] for g in groups))
    )
    group_of = {id(p): (i, layout) for i, (g, layout) in enumerate(zip(groups, layout_groups)) for p in g["params"]}
    new_state: defaultdict = defaultdict(dict)
    positions = optimizer.tensor_indices()
    for saved_id, value in state_dict["state"].items():
        if saved_id not in id_map:
            problems.append(f"state for parameter id {saved_id!r}, which no param group lists")
            continue
        p = id_map[saved_id]
        index, merged = group_of[id(p)]
        try:
            new_state[p] = checked_state(optimizer, merged, p, value, positions[id(p)])
        except ValueError as error:
            problems.append(f"parameter {saved_id} (group {index}, shape {tuple(p.shape)}): {error}")
    if problems:
        raise ValueError(f"state dict does not match this {name}: " + "; ".join(problems))
    for group, saved in zip(groups, saved_groups):
        saved["params"] = group["params"]
        if "param_names" in group:
            saved.setdefault("param_names", group["param_names"])
    optimizer.__setstate__({"state": new_state, "param_groups": saved_groups})
    optimizer.checkpoint_version = version
    _run_load_post_hooks(optimizer)


# ------------------------------------------------------------------------------------------------------ E
#: E's entries in ``optimizer.state[p]``: the carry (the state dtype of ``p``) and the steps taken (0-d int32).
CARRY, STEP = "e_carry", "e_step"


def core_carry() -> str:
    """The E adaptor's carry key in the core's state (the layout of valley <= 0.1.x's E checkpoints and pickles)."""
    template = vc.e_adaptor(0.0, 0.0).init((torch.empty(0, device="meta"),), xp=_state.namespace())
    ((key,),) = [tuple(_state.per_tensor_entries(vc.state_to_dict(template), 1)[0][0])]
    return key


def save_e(e: Any) -> Dict[str, Any]:
    """``E.state_dict``: the base optimizer's state dict, E's settings and the version (see there)."""
    for pre_hook in e._optimizer_state_dict_pre_hooks.values():
        pre_hook(e)
    state_dict = dict(e.base_optimizer.state_dict())
    state_dict["e_adaptor"] = {"alpha": e.alpha, "e_beta": e.e_beta, "allow_unstable": e.allow_unstable}
    state_dict[VERSION_KEY] = vc.__version__
    for post_hook in e._optimizer_state_dict_post_hooks.values():
        result = post_hook(e, state_dict)
        if result is not None:
            state_dict = result
    return state_dict


def load_e(e: Any, state_dict: Any, checked: Callable[..., float]) -> None:
    """``E.load_state_dict`` (see there); ``checked(alpha, e_beta, allow_unstable)``: E's hyperparameter check."""
    if isinstance(state_dict, dict):
        state_dict = _run_load_pre_hooks(e, state_dict.copy())
    if (
        not isinstance(state_dict, dict)
        or not isinstance(state_dict.get("state"), dict)
        or not isinstance(state_dict.get("param_groups"), (list, tuple))
    ):
        raise ValueError(
            "E.load_state_dict expects an optimizer state dict: a dict with keys 'state' and 'param_groups'"
        )
    version = checkpoint_version(state_dict, "E.load_state_dict")
    saved = state_dict.get("e_adaptor")
    if saved is not None and not isinstance(saved, dict):
        raise ValueError(f"E.load_state_dict: 'e_adaptor' must be a dict, got {type(saved).__name__}")
    hyperparameters = None
    if saved is not None:
        try:  # valley 0.1.0 wrote the coefficient as "beta1"
            beta = saved["e_beta"] if "e_beta" in saved else saved["beta1"]
            hyperparameters = (saved["alpha"], checked(saved["alpha"], beta, saved.get("allow_unstable", False)))
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"E.load_state_dict: invalid 'e_adaptor' hyperparameters: {error}") from None
    id_map = _id_map(e.param_groups, state_dict["param_groups"])
    problems: List[str] = []
    states = dict(state_dict["state"])
    if saved is not None and "state" in saved:
        if version != UNVERSIONED:
            problems.append(
                f"'e_adaptor' holds 'state' (valley {UNVERSIONED}'s layout) in a checkpoint of valley {version}"
            )
        else:
            states = _from_legacy_layout(saved["state"], states, list(id_map), problems)
    ours: Dict[torch.Tensor, Tuple[torch.Tensor, int]] = {}
    base_states: Dict[Any, Any] = {}
    for key, entry in states.items():
        p = id_map.get(key)
        if p is None or not isinstance(entry, dict):
            base_states[key] = entry  # not a parameter's state: the base's business (torch passes it through)
            continue
        rest = {k: v for k, v in entry.items() if k not in (CARRY, STEP)}
        if rest:
            base_states[key] = rest
        if CARRY in entry or STEP in entry:
            problem = _problem_with(entry, p)
            if problem is None:
                ours[p] = (entry[CARRY], int(entry[STEP]))
            else:
                problems.append(f"parameter {key!r} (shape {tuple(p.shape)}): {problem}")
    if problems:
        raise ValueError("E.load_state_dict: the adaptor's state does not match: " + "; ".join(problems))
    if saved is None and not ours:
        raise ValueError(
            f"E.load_state_dict: the state dict has no 'e_adaptor' entry and no parameter's state holds "
            f"'{CARRY}'; it was not saved by backends.torch.E (a base optimizer's or the authors' E state dict "
            "lacks the adaptor's state)"
        )
    base_part = {key: value for key, value in state_dict.items() if key != "e_adaptor"}
    base_part["state"] = base_states
    e.base_optimizer.load_state_dict(base_part)
    e.param_groups = e.base_optimizer.param_groups
    states_now = e.state
    for p, (carry, step) in ours.items():
        carry = carry.to(device=p.device, dtype=_state.state_dtype(p), copy=True)
        states_now[p].update({CARRY: carry, STEP: _state.step_tensor(step)})
    if hyperparameters is not None:
        e._alpha, e._e_beta = hyperparameters
        e._allow_unstable = saved.get("allow_unstable", False)  # type: ignore[union-attr]  # saved is a dict here
    e.checkpoint_version = version
    _run_load_post_hooks(e)


def _id_map(groups: Any, saved_groups: Any) -> Dict[Any, torch.Tensor]:
    """Saved parameter id (or DCP parameter name) -> parameter, by position in the groups, as torch maps them."""
    if len(saved_groups) != len(groups):
        raise ValueError(
            f"E.load_state_dict: the state dict has {len(saved_groups)} param groups, the optimizer {len(groups)}"
        )
    for index, (saved, group) in enumerate(zip(saved_groups, groups)):
        ids = saved.get("params") if isinstance(saved, dict) else None
        if not isinstance(ids, (list, tuple)) or len(ids) != len(group["params"]):
            count = len(ids) if isinstance(ids, (list, tuple)) else "no"
            raise ValueError(
                f"E.load_state_dict: param group {index} has {count} parameters in the state dict, "
                f"{len(group['params'])} in the optimizer"
            )
    saved_ids = list(chain.from_iterable(saved["params"] for saved in saved_groups))
    try:
        distinct = len(set(saved_ids)) == len(saved_ids)
    except TypeError:  # an unhashable id
        distinct = False
    if not distinct:
        raise ValueError("E.load_state_dict: the param groups' 'params' must be distinct parameter ids or names")
    return dict(zip(saved_ids, chain.from_iterable(group["params"] for group in groups)))


def _problem_with(entry: Dict[str, Any], p: torch.Tensor) -> Optional[str]:
    """What is wrong with E's entries in one parameter's saved state, or None."""
    if CARRY not in entry or STEP not in entry:
        present = sorted(k for k in (CARRY, STEP) if k in entry)
        return f"'{CARRY}' and '{STEP}' come together, the state has only {present}"
    carry, step = entry[CARRY], saved_step(entry[STEP])
    if not isinstance(carry, torch.Tensor) or not carry.is_floating_point():
        return f"{CARRY} must be a floating-point tensor, got {type(carry).__name__}"
    if tuple(carry.shape) != tuple(p.shape):
        return f"{CARRY} has shape {tuple(carry.shape)}, the parameter {tuple(p.shape)}"
    if _state.is_dtensor(p) != _state.is_dtensor(carry):
        return (
            f"{CARRY} is a {type(carry).__name__} for a {type(p).__name__} parameter (save and load FSDP2 "
            "checkpoints with torch.distributed.checkpoint, which reshards them)"
        )
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"{STEP} must be a non-negative int, got {entry[STEP]!r}"
    return None


def _from_legacy_layout(legacy: Any, states: Dict[Any, Any], order: List[Any], problems: List[str]) -> Dict[Any, Any]:
    """``states`` with the carries of valley 0.1.x's layout (``{position: {<carry's core key>, "step"}}`` under
    ``"e_adaptor"``) moved into the parameters' states as E's entries; mismatches go to ``problems``."""
    core_key = core_carry()
    if not isinstance(legacy, dict):
        problems.append(f"'e_adaptor' state must be a dict, got {type(legacy).__name__}")
        return states
    states = dict(states)
    for index, entry in legacy.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(order):
            problems.append(f"state for parameter index {index!r}, but the optimizer has {len(order)} parameters")
            continue
        if not isinstance(entry, dict) or set(entry) != {core_key, "step"}:
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            problems.append(f"parameter {index}: keys {found}, expected ['{core_key}', 'step']")
            continue
        merged = dict(states.get(order[index]) or {})
        if CARRY in merged or STEP in merged:
            problems.append(f"parameter {index}: E's state is in both layouts ('e_adaptor' and the parameter's state)")
            continue
        merged.update({CARRY: entry[core_key], STEP: entry["step"]})
        states[order[index]] = merged
    return states
