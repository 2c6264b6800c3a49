"""The execution plan: a user's chain of core transforms gets the fast paths with no backend change; the one
step counter per tensor and what it replaced; defects found at the seams the plan removed (issue 13.3, 13.4).

The oracle is the core chain run op by op on torch tensors (``run_core``); a 0.1.0 checkpoint is a file written
by the release's own code (``tests/torch/data/checkpoints_valley_0.1.0.pt``, made by valley 0.1.0's
``backends.torch`` at commit eadb459).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_helpers import assert_matches_core, gradient_sequence, initial_params, run_core, run_optimizer

import valley_core as vc
from backends.kernels.plan import Unplannable, derive
from backends.torch import ALTO, E, EAdam, optimizer_class

STEPS = 64
#: 0-d, 1-element, odd shapes, and a tensor over several blocks of the fused kernels (4096 elements).
SHAPES = [(), (1,), (3, 5), (7,), (2, 3, 2), (4099,)]


def e_lars(lr=1e-2, alpha=-1.0, beta1=0.9, momentum=0.9, weight_decay=1e-4, trust_eps=1e-6, norm_eps=1e-10):
    """The issue's example: E in front of LARS (heavy ball and a trust ratio), named by no backend."""
    return vc.chain(
        vc.e_adaptor(alpha, beta1),
        vc.add_decayed_weights(weight_decay),
        vc.trace(momentum),
        vc.scale_by_trust_ratio(trust_eps, norm_eps),
        vc.scale_by_learning_rate(lr),
    )


def e_adamw_trust(lr=1e-2, alpha=0.5, beta1=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-2, trust_eps=1e-3):
    """E in front of AdamW, with the trust ratio after the decoupled decay and a learning-rate schedule."""
    return vc.chain(
        vc.e_adaptor(alpha, beta1),
        vc.scale_by_adam(betas[0], betas[1], eps),
        vc.add_decayed_weights(weight_decay),
        vc.scale_by_trust_ratio(trust_eps, 1e-6),
        vc.scale_by_learning_rate(vc.inverse_sqrt(lr)),
    )


ELars = optimizer_class("ELars", e_lars)
EAdamWTrust = optimizer_class("EAdamWTrust", e_adamw_trust)
USER_CHAINS = {"e_lars": (ELars, e_lars, {}), "e_adamw_trust": (EAdamWTrust, e_adamw_trust, {"alpha": -0.5})}


@pytest.mark.parametrize("implementation", ["fused", "compiled"])
@pytest.mark.parametrize("chain", sorted(USER_CHAINS))
def test_a_users_chain_runs_on_the_fast_paths_and_equals_the_core(chain, implementation):
    cls, factory, kwargs = USER_CHAINS[chain]
    steps = STEPS if implementation == "fused" else 12  # compiling costs tens of seconds; the parity is the same
    grads = gradient_sequence(steps, shapes=SHAPES, seed=7)
    start = initial_params(SHAPES, seed=6)
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation=implementation, **kwargs), grads, params=start)
    core_params, core_state = run_core(factory(**kwargs), grads, params=start)
    assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-12, atol=1e-14)
    assert all(optimizer.state[p]["step"] == steps for p in params)


def zero_safe_lamb(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, trust_eps=1e-6, norm_eps=1e-10):
    """Lamb with the trust ratio 1 where a norm is zero, written with ``xp.where`` over the core's reductions: the
    shape a zero-norm policy in ``valley_core.reductions`` would take; every executor must follow it."""
    from valley_core import reductions
    from valley_core.base import EmptyState, GradientTransformation

    def update(grads, state, params=None, *, xp=None):
        out = []
        for r, p in zip(grads, params):
            param_norm, update_norm = reductions.l2_norm(p, xp), reductions.l2_norm(r, xp)
            ratio = reductions.trust_ratio(param_norm, update_norm, trust_eps, norm_eps)
            out.append(xp.where((param_norm > 0) * (update_norm > 0), ratio, 1.0) * r)
        return tuple(out), state

    ratio = GradientTransformation(lambda params, *, xp=None: EmptyState(), update, "zero_safe_trust_ratio")
    return vc.chain(vc.scale_by_adam(betas[0], betas[1], eps), ratio, vc.scale_by_learning_rate(lr))


@pytest.mark.parametrize("implementation", ["fused", "compiled"])
def test_a_selection_in_the_chain_reaches_every_executor(implementation):
    """A zero-initialised tensor (ratio 1) beside ordinary ones, with xp.where in the chain."""
    cls = optimizer_class("ZeroSafeLamb", zero_safe_lamb)
    shapes = [(3, 5), (7,), (4,)]
    grads = gradient_sequence(8, shapes=shapes, seed=9)
    start = initial_params(shapes, seed=8)
    start[2] = torch.zeros(4, dtype=torch.float64)
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation=implementation), grads, params=start)
    core_params, core_state = run_core(zero_safe_lamb(), grads, params=start)
    assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-12, atol=1e-14)
    assert float(params[2].detach().abs().max()) > 1e-4  # it moved by about lr, not lr * norm_eps


def test_a_users_chain_with_a_trust_ratio_has_two_passes_and_one_with_recomputation():
    plan = derive(e_lars, {})
    assert len(plan.passes) == 2 and plan.reductions == 2
    assert [key for _, key in plan.buffers] == ["EState.carry", "TraceState.momentum"]
    assert plan.recompute is not None  # r is computed again from the new momentum in the second pass


def test_what_cannot_be_planned_says_why_and_runs_on_the_core_path():
    from backends.torch import AdamCM

    with pytest.raises(Unplannable, match="adam_cm cannot be planned: its state holds arrays not shaped like"):
        derive(vc.adam_cm, {})
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    p.grad = torch.ones(3, dtype=torch.float64)
    refusing = AdamCM([p], implementation="fused")
    with pytest.raises(
        RuntimeError, match=r"AdamCM\(implementation='fused'\) cannot run this group: .*cannot be planned"
    ):
        refusing.step()
    assert not refusing.state and torch.equal(p, torch.ones(3, dtype=torch.float64))  # nothing was written
    optimizer = AdamCM([p])  # "auto" runs it on the core path
    optimizer.step()
    assert optimizer.state[p]["step"] == 1


def test_the_torch_state_keeps_one_step_counter_per_tensor():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    for implementation in ("core", "fused"):
        optimizer = ALTO([p], implementation=implementation)
        p.grad = torch.ones(3, dtype=torch.float64)
        optimizer.step()
        assert sorted(optimizer.state[p]) == ["AdamState.first", "AdamState.second", "EState.carry", "step"]


# ----------------------------------------------------------------------------------- 0.1.0 checkpoints
CHECKPOINTS = Path(__file__).parent / "data" / "checkpoints_valley_0.1.0.pt"


@pytest.mark.parametrize("implementation", ["core", "fused"])
@pytest.mark.parametrize("name", ["alto", "eadam"])
def test_a_checkpoint_of_valley_0_1_0_with_five_counters_loads_and_gives_the_same_next_steps(name, implementation):
    saved = torch.load(CHECKPOINTS, weights_only=False)[name]
    cls = {"alto": ALTO, "eadam": EAdam}[name]
    assert "AdamState.count" in saved["optimizer"]["state"][0]  # the old layout
    # Uninterrupted, 10 steps on the core path (which wrote the checkpoint after 5, in valley 0.1.0).
    params = [torch.nn.Parameter(p.clone()) for p in saved["start"]]
    uninterrupted = cls(params, implementation="core", **saved["hyperparameters"])
    for k, grads in enumerate(saved["grads"]):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        uninterrupted.step()
        if k == 4:  # today's core path reproduces the release's five steps bit for bit
            assert all(torch.equal(p, q) for p, q in zip(params, saved["params_after_5"]))
    # Resumed from the 0.1.0 checkpoint after 5.
    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved["params_after_5"]]
    resumed = cls(resumed_params, implementation=implementation, **saved["hyperparameters"])
    resumed.load_state_dict(saved["optimizer"])
    for grads in saved["grads"][5:]:
        for p, g in zip(resumed_params, grads):
            p.grad = g.clone()
        resumed.step()
    # The core path bit for bit; the fused one sums the norms in another order (its parity bound).
    tolerance = dict(rtol=0, atol=0) if implementation == "core" else dict(rtol=1e-12, atol=1e-14)
    for p, q in zip(resumed_params, params):
        torch.testing.assert_close(p, q, **tolerance)
        assert resumed.state[p].keys() == uninterrupted.state[q].keys()
        for key, value in resumed.state[p].items():
            torch.testing.assert_close(
                torch.as_tensor(value), torch.as_tensor(uninterrupted.state[q][key]), **tolerance
            )


def test_a_0_1_0_checkpoint_whose_counters_disagree_with_step_is_refused():
    saved = torch.load(CHECKPOINTS, weights_only=False)["alto"]
    saved["optimizer"]["state"][1]["AdamState.count"] = torch.tensor(4, dtype=torch.int32)
    optimizer = ALTO([torch.nn.Parameter(p.clone()) for p in saved["params_after_5"]], **saved["hyperparameters"])
    with pytest.raises(
        ValueError, match=r"parameter 1 .*AdamState.count=tensor\(4, dtype=torch.int32\) differs from step=5"
    ):
        optimizer.load_state_dict(saved["optimizer"])
    assert not optimizer.state


# ----------------------------------------------------------------------------------- issue 13.3 and 13.4
@pytest.mark.parametrize("setting", [{"bias_correction": 1}, {"trust_ratio": 1}])
def test_validation_does_not_depend_on_what_ran_before(setting):
    """Issue 13.3: the validation cache treated ``1`` and ``True`` alike, so ``bias_correction=1`` was accepted
    after an ``ALTO`` with the default ``True`` had been built (and refused in a fresh process)."""
    ALTO([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=f"{next(iter(setting))}=1 violates"):
        ALTO([torch.nn.Parameter(torch.ones(2))], **setting)


def test_the_same_parameter_listed_twice_is_refused_at_construction():
    """Issue 13.4: ``EAdam([q, q])`` stepped ``q`` twice on the fused path and once on the core path."""
    q = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"EAdam: parameter 1 \(shape \(3,\)\) is the same tensor as parameter 0"):
        EAdam([q, q])
    with pytest.raises(ValueError, match=r"ALTO: parameter 2 \(shape \(3,\)\) is the same tensor as parameter 1"):
        ALTO([{"params": [torch.nn.Parameter(torch.ones(1)), q, q]}])
    with pytest.raises(ValueError, match=r"E: parameter 1 \(shape \(3,\)\) is the same tensor as parameter 0"):
        E(torch.optim.Adam([q, q]))


# ----------------------------------------------------------------------------------- issue 26.1
def my_eadam(lr=1e-3, alpha=-0.5, e_beta=0.01, betas=(0.9, 0.999), eps=1e-8):
    """Issue 26.1's factory: E's coefficient is its own argument; ``betas`` are Adam's (m, v)."""
    return vc.chain(
        vc.e_adaptor(alpha, e_beta), vc.scale_by_adam(betas[0], betas[1], eps), vc.scale_by_learning_rate(lr)
    )


def test_a_users_chain_taking_alpha_and_betas_keeps_its_own_keys():
    """Issue 26.1: any factory taking ``alpha`` and ``betas`` was read as E's beta first in ``betas``: the class showed
    ``e_beta=0.9, momentum=0.999``, ``e_beta=0.05`` became Adam's beta1 and ``betas=(0.8, 0.99)`` raised."""
    cls = optimizer_class("MyEAdam", my_eadam)
    defaults = cls.hyperparameter_defaults()
    assert [k for k in defaults if k not in ("state_dtype", "maximize")] == ["lr", "alpha", "e_beta", "betas", "eps"]
    assert defaults["e_beta"] == 0.01 and defaults["betas"] == (0.9, 0.999) and "momentum" not in defaults
    kwargs = dict(lr=0.01, alpha=-0.5, e_beta=0.05, betas=(0.8, 0.99))
    grads = gradient_sequence(20)
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation="core", **kwargs), grads)
    assert optimizer.param_groups[0]["e_beta"] == 0.05 and optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    core_params, core_state = run_core(my_eadam(**kwargs), grads)
    assert_matches_core(optimizer, params, core_params, core_state)
    # The named E-optimizers keep the torch keys (E's beta from the paper-order betas).
    assert "e_beta" in EAdam.hyperparameter_defaults() and EAdam.hyperparameter_defaults()["betas"] == (0.9, 0.999)
