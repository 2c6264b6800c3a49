"""Regression tests for defects a careful user met in the torch adapter (issue 13), one section per defect.

Oracles: torch's own optimizers and schedulers, straight transcriptions, and an uninterrupted run of the same
optimizer; never the code under test's own output alone.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle
import warnings

import pytest
import torch
from torch_helpers import (
    assert_close,
    assert_load_refused,
    initial_params,
)

from backends.torch import ALTO, ESGD, E, EAdam, EAdamW, Lamb


def _params(dtype=torch.float64):
    return [torch.nn.Parameter(p.clone()) for p in initial_params(dtype=dtype)]


def _quadratic_steps(params, optimizer, steps, scheduler=None):
    """Minimises sum((p - 1)^2) over ``steps``; returns the losses."""
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(((p - 1.0) ** 2).sum() for p in params)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss))
    return losses


# ------------------------------------------------------------------------------------------------------------
# 1. Momentum-cycling schedulers cycle the first-moment coefficient, never E's beta1.


def _one_cycle(optimizer):
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=40)


def test_eadam_at_alpha_zero_under_one_cycle_equals_torch_adam_under_one_cycle():
    ours, theirs = _params(), _params()
    eadam = EAdam(ours, lr=0.01, alpha=0.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, implementation="core")
    adam = torch.optim.Adam(theirs, lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    _quadratic_steps(ours, eadam, 40, _one_cycle(eadam))
    _quadratic_steps(theirs, adam, 40, _one_cycle(adam))
    for p, q in zip(ours, theirs):
        assert_close(p, q, rtol=1e-10, atol=1e-12, what="EAdam(alpha=0) vs torch Adam under OneCycleLR")
    assert eadam.param_groups[0]["betas"] == adam.param_groups[0]["betas"]


def test_esgd_at_alpha_zero_under_cyclic_lr_equals_torch_sgd_with_momentum():
    ours, theirs = _params(), _params()
    esgd = ESGD(ours, lr=0.01, alpha=0.0, momentum=0.9, implementation="core")
    sgd = torch.optim.SGD(theirs, lr=0.01, momentum=0.9)

    def cyclic(optimizer):
        return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.001, max_lr=0.02, step_size_up=5)

    _quadratic_steps(ours, esgd, 30, cyclic(esgd))
    _quadratic_steps(theirs, sgd, 30, cyclic(sgd))
    for p, q in zip(ours, theirs):
        assert_close(p, q, rtol=1e-10, atol=1e-12, what="ESGD(alpha=0) vs torch SGD under CyclicLR")


@pytest.mark.parametrize("cls", [ALTO, EAdam, EAdamW, ESGD])
def test_one_cycle_never_touches_the_e_adaptor_coefficient(cls):
    params = _params()
    optimizer = cls(params, lr=0.01, alpha=-8.0, e_beta=0.99)  # valid: |alpha| < 1/(1 - 0.99) = 100
    scheduler = _one_cycle(optimizer)
    _quadratic_steps(params, optimizer, 40, scheduler)  # used to die mid-run with the stability ValueError
    assert optimizer.param_groups[0]["e_beta"] == 0.99


def test_betas_in_the_papers_order_are_the_same_optimizer():
    first, second = _params(), _params()
    paper = ALTO(first, lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999))
    torch_style = ALTO(second, lr=0.01, alpha=-0.5, e_beta=0.5, betas=(0.9, 0.999))
    assert paper.param_groups[0]["betas"] == (0.9, 0.999) and paper.param_groups[0]["e_beta"] == 0.5
    _quadratic_steps(first, paper, 10)
    _quadratic_steps(second, torch_style, 10)
    for p, q in zip(first, second):
        assert torch.equal(p, q)
    with pytest.raises(TypeError, match="e_beta"):
        ALTO(_params(), betas=(0.5, 0.9, 0.999), e_beta=0.5)


def test_a_checkpoint_of_the_previous_layout_loads_and_continues_identically():
    params = _params()
    optimizer = ALTO(params, lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)
    _quadratic_steps(params, optimizer, 3)
    reference = copy.deepcopy(optimizer.state_dict())
    legacy = copy.deepcopy(reference)
    for group in legacy["param_groups"]:  # the 0.1.0 layout: E's beta1 first in `betas`
        group["betas"] = (group.pop("e_beta"), *group["betas"])
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = ALTO(resumed_params, lr=0.01)
    resumed.load_state_dict(legacy)
    assert resumed.param_groups[0]["e_beta"] == 0.5 and resumed.param_groups[0]["betas"] == (0.9, 0.999)
    _quadratic_steps(params, optimizer, 2)
    _quadratic_steps(resumed_params, resumed, 2)
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)


# ------------------------------------------------------------------------------------------------------------
# 2. load_state_dict refuses what it cannot install whole; it never installs a group it did not validate.


def _trained(cls, **kwargs):
    params = _params()
    optimizer = cls(params, **kwargs)
    _quadratic_steps(params, optimizer, 3)
    return params, optimizer


def _assert_refused_and_intact(optimizer, params, state_dict, match):
    assert_load_refused(optimizer, state_dict, match)
    _quadratic_steps(params, optimizer, 1)  # still a working optimizer


def test_state_of_another_valley_class_is_refused_at_load():
    params, alto = _trained(ALTO, lr=0.01, alpha=-0.5, e_beta=0.5)
    _, eadam = _trained(EAdam, lr=0.01)
    _assert_refused_and_intact(alto, params, eadam.state_dict(), r"param group 0: missing hyperparameters \[.*norm_eps")


def test_a_stateless_adamw_checkpoint_is_refused_by_lamb():
    params, lamb = _trained(Lamb, lr=0.01)
    adamw = torch.optim.AdamW(_params(), lr=1e-3)  # no step yet: no state, only groups
    _assert_refused_and_intact(lamb, params, adamw.state_dict(), r"param group 0: missing hyperparameters \[.*trust")


def test_the_authors_alto_checkpoint_is_refused():
    authors = pytest.importorskip("ALTO", reason="e-optimizer-adaptor (the authors' ALTO) is not installed")
    params, alto = _trained(ALTO, lr=0.01, alpha=-0.5, e_beta=0.5)
    theirs_params = _params()
    theirs = authors.ALTO(theirs_params, lr=0.01, betas=(0.99, 0.9, 0.99), alp=-5.0, weight_decay=1e-4)
    _quadratic_steps(theirs_params, theirs, 2)
    _assert_refused_and_intact(alto, params, theirs.state_dict(), "param group 0: missing hyperparameters")


def test_a_group_with_a_deleted_key_is_refused():
    params, alto = _trained(ALTO, lr=0.01, alpha=-0.5, e_beta=0.5)
    state_dict = copy.deepcopy(alto.state_dict())
    del state_dict["param_groups"][0]["norm_eps"]
    _assert_refused_and_intact(alto, params, state_dict, r"param group 0: missing hyperparameters \['norm_eps'\]")


# ------------------------------------------------------------------------------------------------------------
# 5. deepcopy, pickle and torch.save of an optimizer give a working optimizer; E runs its state-dict hooks.


def _continue_both(make):
    params = _params()
    optimizer = make(params)
    _quadratic_steps(params, optimizer, 3)
    return params, optimizer


def _copies(params, optimizer):
    """(params, optimizer) pairs restored by deepcopy, pickle and torch.save (params travel with the optimizer)."""
    yield "deepcopy", copy.deepcopy((params, optimizer))
    yield "pickle", pickle.loads(pickle.dumps((params, optimizer)))
    buffer = io.BytesIO()
    torch.save((params, optimizer), buffer)
    buffer.seek(0)
    yield "torch.save", torch.load(buffer, weights_only=False)


MAKERS = {
    "alto": lambda ps: ALTO(ps, lr=0.01, alpha=-0.5, e_beta=0.5, skip_nonfinite=True),
    "eadam_core": lambda ps: EAdam(ps, lr=0.01, implementation="core"),
    "e_adam": lambda ps: E(torch.optim.Adam(ps, lr=0.01), alpha=-0.5, e_beta=0.5, skip_nonfinite=True),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_copied_optimizers_step_exactly_like_the_original(name):
    params, optimizer = _continue_both(MAKERS[name])
    for how, (copied_params, copied) in _copies(params, optimizer):
        assert copied.skip_nonfinite == optimizer.skip_nonfinite, how
        _quadratic_steps(copied_params, copied, 2)
        reference_params, reference = copy.deepcopy((params, optimizer))
        _quadratic_steps(reference_params, reference, 2)
        for p, q in zip(copied_params, reference_params):
            assert torch.equal(p, q), how


def test_e_runs_the_state_dict_hooks_registered_on_it():
    params = _params()
    optimizer = E(torch.optim.SGD(params, lr=0.01), alpha=-0.5, e_beta=0.5)
    _quadratic_steps(params, optimizer, 2)
    calls = []
    optimizer.register_state_dict_pre_hook(lambda opt: calls.append("save-pre"))
    optimizer.register_state_dict_post_hook(lambda opt, sd: calls.append("save-post"))
    optimizer.register_load_state_dict_pre_hook(lambda opt, sd: calls.append("load-pre"))
    optimizer.register_load_state_dict_post_hook(lambda opt: calls.append("load-post"))
    optimizer.load_state_dict(optimizer.state_dict())
    assert calls == ["save-pre", "save-post", "load-pre", "load-post"]


# ------------------------------------------------------------------------------------------------------------
# 6. torch conventions: tensor learning rates, a real signature, 0-d tensor steps in checkpoints.


def test_a_tensor_learning_rate_is_accepted_and_equals_the_float():
    first, second = _params(), _params()
    with_float = ALTO(first, lr=0.01, alpha=-0.5, e_beta=0.5)
    with_tensor = ALTO(second, lr=torch.tensor(0.01, dtype=torch.float64), alpha=-0.5, e_beta=0.5)
    _quadratic_steps(first, with_float, 5)
    _quadratic_steps(second, with_tensor, 5)
    for p, q in zip(first, second):
        assert_close(p, q, rtol=1e-14, atol=0, what="tensor lr")


@pytest.mark.parametrize("cls", [ALTO, EAdam, ESGD, Lamb])
def test_the_signature_names_every_hyperparameter(cls):
    parameters = inspect.signature(cls).parameters
    assert list(parameters)[0] == "params"
    assert parameters["lr"].default == cls.hyperparameter_defaults()["lr"]
    for name in cls.hyperparameter_defaults():
        assert name in parameters, name
    assert parameters["implementation"].default == "auto"
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters.values())


def test_a_checkpoint_with_tensor_steps_loads():
    params, optimizer = _trained(ALTO, lr=0.01, alpha=-0.5, e_beta=0.5)
    state_dict = copy.deepcopy(optimizer.state_dict())
    for entry in state_dict["state"].values():
        entry["step"] = torch.tensor(float(entry["step"]))  # what torch's own optimizers write
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = ALTO(resumed_params, lr=0.01)
    resumed.load_state_dict(state_dict)
    _quadratic_steps(params, optimizer, 2)
    _quadratic_steps(resumed_params, resumed, 2)
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)


# ------------------------------------------------------------------------------------------------------------
# 7. A zero-initialised tensor trains under the default trust ratio.


@pytest.mark.parametrize("implementation", ["core", "auto"])
@pytest.mark.parametrize("cls", [ALTO, Lamb])
def test_a_zero_initialised_bias_trains_under_the_defaults(cls, implementation):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    torch.nn.init.zeros_(model.bias)
    optimizer = cls(model.parameters(), lr=1e-2, implementation=implementation)
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    # A ratio of 1 where ||theta|| = 0 gives a first move of lr * ||r||, about lr per coordinate: far above the
    # paper formula's lr * norm_eps (1e-12).
    assert float(model.bias.abs().max()) > 1e-3


def test_the_papers_exact_trust_ratio_is_still_available():
    bias = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = ALTO([bias], lr=1e-2, zero_norm_ratio=None, implementation="core")
    for _ in range(5):
        bias.grad = torch.ones(3, dtype=torch.float64)
        optimizer.step()
    assert float(bias.abs().max()) < 1e-9  # phi = ||theta|| + norm_eps: a zero tensor barely moves


# ------------------------------------------------------------------------------------------------------------
# 11. E's alpha and e_beta are validated whenever they change.


def test_e_refuses_an_unstable_or_non_finite_alpha_assigned_later():
    params = _params()
    optimizer = E(torch.optim.SGD(params, lr=0.01), alpha=0.5, e_beta=0.01)
    with pytest.raises(ValueError, match=r"alpha=50.0 violates \|alpha\| < 1/\(1-beta1\)"):
        optimizer.alpha = 50.0
    with pytest.raises(ValueError, match="alpha=nan"):
        optimizer.alpha = float("nan")
    with pytest.raises(ValueError, match="beta1=1.5"):
        optimizer.e_beta = 1.5
    assert optimizer.alpha == 0.5 and optimizer.e_beta == 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _quadratic_steps(params, optimizer, 2)
    assert all(torch.isfinite(p).all() for p in params)
