"""Checkpoints: resume equals the uninterrupted run; a mismatched state dict fails clearly and changes nothing."""

from __future__ import annotations

import io

import pytest
import torch
from torch_helpers import (
    assert_load_refused,
    assert_same_state,
    clone_state,
    gradient_sequence,
    initial_params,
    run_optimizer,
)

import valley_core as vc
from backends.torch import ALTO, ESGD, E, EAdam, Lamb

STEPS = 60
ALTO_ARGS = dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)


def _save_load(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _train(params, optimizer, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone().to(p.dtype)
        optimizer.step()


MAKERS = {
    "alto_core": lambda ps: ALTO(ps, implementation="core", **ALTO_ARGS),
    "alto_compiled": lambda ps: ALTO(ps, implementation="compiled", **ALTO_ARGS),
    "esgd": lambda ps: ESGD(ps, lr=1e-3, alpha=-0.3, betas=(0.5, 0.9), implementation="core"),
    "e_adam": lambda ps: E(torch.optim.Adam(ps, lr=1e-2), alpha=-0.5, beta1=0.5),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_resume_from_state_dict_equals_the_uninterrupted_run(name):
    make = MAKERS[name]
    grads = gradient_sequence(2 * STEPS)
    uninterrupted, reference = run_optimizer(make, grads)

    first_half, optimizer = run_optimizer(make, grads[:STEPS])
    checkpoint = _save_load({"params": [p.detach().clone() for p in first_half], "optimizer": optimizer.state_dict()})
    resumed = [torch.nn.Parameter(p) for p in checkpoint["params"]]
    fresh = make(resumed)
    fresh.load_state_dict(checkpoint["optimizer"])
    _train(resumed, fresh, grads[STEPS:])
    for p, q in zip(resumed, uninterrupted):
        assert torch.equal(p, q)
    for p, q in zip(resumed, uninterrupted):
        for key, value in reference.state[q].items():
            other = fresh.state[p][key]
            assert torch.equal(torch.as_tensor(other), torch.as_tensor(value)), key


def _trained_alto(params=None):
    params = params or [torch.nn.Parameter(p) for p in initial_params()]
    optimizer = ALTO(params, implementation="core", **ALTO_ARGS)
    _train(params, optimizer, gradient_sequence(3))
    return params, optimizer


def test_state_of_another_optimizer_is_rejected():
    params, optimizer = _trained_alto()
    adamw_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    adamw = torch.optim.AdamW(adamw_params, lr=1e-3)
    _train(adamw_params, adamw, gradient_sequence(2))
    assert_load_refused(optimizer, adamw.state_dict(), r"missing keys \[.*EState.carry.*unexpected keys")


def test_lamb_state_is_rejected_by_alto():
    params, optimizer = _trained_alto()
    lamb_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    lamb = Lamb(lamb_params, implementation="core")
    _train(lamb_params, lamb, gradient_sequence(2))
    assert_load_refused(optimizer, lamb.state_dict(), r"missing keys \['EState.carry'\]")


def test_state_of_other_shapes_is_rejected():
    _, optimizer = _trained_alto()
    other_params = [torch.nn.Parameter(torch.zeros(s)) for s in [(3, 4), (5,), (2, 3, 2)]]
    other = ALTO(other_params, implementation="core", **ALTO_ARGS)
    for p in other_params:
        p.grad = torch.ones_like(p)
    other.step()
    assert_load_refused(
        optimizer,
        other.state_dict(),
        r"parameter 0 \(group 0, shape \(4, 3\)\): AdamState.first: shape \(3, 4\) does not match the "
        r"optimizer's \(4, 3\)",
    )


def test_other_group_structure_and_invalid_hyperparameters_are_rejected():
    params, optimizer = _trained_alto()
    state_dict = optimizer.state_dict()
    assert_load_refused(
        optimizer,
        {**state_dict, "param_groups": state_dict["param_groups"] * 2},
        "2 param groups, this optimizer has 1",
    )
    group = state_dict["param_groups"][0]
    bad_groups = [{**group, "alpha": -5.0, "e_beta": 0.1, "betas": (0.9, 0.99)}]
    assert_load_refused(
        optimizer, {**state_dict, "param_groups": bad_groups}, r"alpha=-5.0 violates \|alpha\| < 1/\(1-beta1\)"
    )
    # The same in valley 0.1.0's layout (E's beta1 first in betas), which is migrated before it is checked.
    old_layout = {key: value for key, value in group.items() if key != "e_beta"}
    bad_groups = [{**old_layout, "alpha": -5.0, "betas": (0.1, 0.9, 0.99)}]
    assert_load_refused(
        optimizer, {**state_dict, "param_groups": bad_groups}, r"alpha=-5.0 violates \|alpha\| < 1/\(1-beta1\)"
    )
    assert_load_refused(optimizer, {"state": {}}, "expects a dict with keys 'state' and 'param_groups'")


def test_e_wrapper_rejects_a_carry_of_another_shape_and_changes_nothing():
    params = [torch.nn.Parameter(p) for p in initial_params()]
    optimizer = E(torch.optim.Adam(params, lr=1e-2), alpha=-0.5, beta1=0.5)
    _train(params, optimizer, gradient_sequence(3))
    before = clone_state(optimizer)
    state_dict = optimizer.state_dict()
    state_dict["state"][0] = {**state_dict["state"][0], "e_carry": torch.zeros(7)}  # torch shares the live dicts
    with pytest.raises(ValueError, match=r"e_carry|shape"):
        optimizer.load_state_dict(state_dict)
    assert_same_state(before, optimizer.state)


def test_e_wrapper_state_dict_holds_the_adaptor_state():
    params = [torch.nn.Parameter(p) for p in initial_params()]
    optimizer = E(torch.optim.SGD(params, lr=1e-2), alpha=-0.5, beta1=0.5)
    _train(params, optimizer, gradient_sequence(3))
    state_dict = optimizer.state_dict()
    assert set(state_dict) == {"state", "param_groups", "e_adaptor", "valley_version"}
    assert sorted(state_dict["state"]) == [0, 1, 2]
    assert state_dict["state"][1]["e_step"] == 3 and state_dict["state"][1]["e_carry"].shape == (5,)


def test_low_precision_state_stays_float32_through_a_checkpoint():
    params = [torch.nn.Parameter(p.to(torch.bfloat16)) for p in initial_params()]
    optimizer = EAdam(params, lr=1e-2, implementation="core")
    _train(params, optimizer, gradient_sequence(3))
    fresh = EAdam(params, lr=1e-2, implementation="core")
    fresh.load_state_dict(_save_load(optimizer.state_dict()))
    for p in params:
        assert fresh.state[p]["AdamState.second"].dtype == torch.float32
        assert torch.equal(fresh.state[p]["AdamState.second"], optimizer.state[p]["AdamState.second"])


# ------------------------------------------------------------------ versions and the step tensor (issue 23, 26)
def test_a_checkpoint_records_the_valley_version_and_one_without_it_loads_as_0_1_0():
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = ALTO(params)
    params[0].grad = torch.ones(3)
    optimizer.step()
    saved = optimizer.state_dict()
    assert saved["valley_version"] == vc.__version__
    fresh = ALTO([torch.nn.Parameter(torch.ones(3))])
    assert fresh.checkpoint_version is None
    fresh.load_state_dict(saved)
    assert fresh.checkpoint_version == vc.__version__
    without = {key: value for key, value in saved.items() if key != "valley_version"}
    fresh.load_state_dict(without)
    assert fresh.checkpoint_version == "0.1.0"
    with pytest.raises(ValueError, match="valley_version=2 is not a version string"):
        fresh.load_state_dict({**saved, "valley_version": 2})


def test_a_checkpoint_with_an_int_step_loads_as_a_tensor_and_gives_the_same_next_step():
    """Checkpoints written before steps were tensors (valley 0.1.0 and 0.2.0 development) store ``"step"`` as an
    int; they load, the step becomes a tensor, and the next step equals the uninterrupted run's."""
    grads = gradient_sequence(6)
    params, uninterrupted = run_optimizer(lambda ps: ALTO(ps, **ALTO_ARGS), grads)
    _, first = run_optimizer(lambda ps: ALTO(ps, **ALTO_ARGS), grads[:5])
    saved = first.state_dict()
    for entry in saved["state"].values():
        entry["step"] = int(entry["step"])  # today's layout before this change
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in first.param_groups[0]["params"]]
    resumed = ALTO(resumed_params, **ALTO_ARGS)
    resumed.load_state_dict(saved)
    assert all(isinstance(s["step"], torch.Tensor) and s["step"].dtype == torch.int32 for s in resumed.state.values())
    for p, g in zip(resumed_params, grads[5]):
        p.grad = g.clone()
    resumed.step()
    for p, q in zip(resumed_params, params):
        assert torch.equal(p, q)
    assert all(int(s["step"]) == 6 for s in resumed.state.values())
