"""Parity of every torch optimizer with valley_core (float64, 200+ steps, parameters AND every state tensor),
and with the float64 transcription of the paper in ``tests/core/transcription.py`` (an independent oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_helpers import assert_close, assert_matches_core, gradient_sequence, initial_params, run_core, run_optimizer

import valley_core as vc
from backends.torch import ALTO, ESGD, ALTOVanilla, E, EAdam, EAdamW, Lamb, core_masks, lamb_param_groups
from tests.core import transcription

STEPS = 220

CASES = {
    "alto_explore": (ALTO, vc.alto, dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)),
    "alto_exploit": (
        ALTO,
        vc.alto,
        dict(lr=0.02, alpha=0.5, betas=(0.01, 0.9, 0.99), weight_decay=1e-4, trust_eps=1e-3, norm_eps=1e-3),
    ),
    "alto_vanilla": (
        ALTOVanilla,
        vc.alto_vanilla,
        dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2),
    ),
    "lamb": (Lamb, vc.lamb, dict(lr=0.02, betas=(0.9, 0.999), weight_decay=1e-2)),
    "eadam": (EAdam, vc.eadam, dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=1e-2)),
    "eadamw": (EAdamW, vc.eadamw, dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)),
    "esgd": (ESGD, vc.esgd, dict(lr=1e-3, alpha=-0.3, betas=(0.5, 0.9), weight_decay=1e-2)),
    "alto_schedules": (
        ALTO,
        vc.alto,
        dict(
            lr=vc.inverse_sqrt(0.02),
            alpha=vc.inverse_sqrt(-0.5),
            betas=(0.5, 0.9, 0.999),
            weight_decay=vc.exponential_decay(1e-2, 0.99),
        ),
    ),
}


@pytest.fixture(scope="module")
def grads():
    return gradient_sequence(STEPS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_parameters_and_every_state_tensor_equal_the_core(case, grads):
    cls, factory, kwargs = CASES[case]
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation="core", **kwargs), grads)
    core_params, core_state = run_core(factory(**kwargs), grads)
    assert_matches_core(optimizer, params, core_params, core_state)
    assert all(optimizer.state[p]["step"] == STEPS for p in params)


def _carry_from_two_buffers(a, g_prev, beta1):
    """The one-buffer carry b_{k+1} = beta1 a_k - (1 - beta1) g_k, from the transcription's two buffers."""
    return beta1 * a - (1 - beta1) * g_prev


@pytest.mark.parametrize("bias_correction", [True, False])
def test_alto_equals_the_transcription_of_the_paper(bias_correction, grads):
    kwargs = dict(
        lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), eps=1e-6, weight_decay=1e-2, trust_eps=1e-6, norm_eps=1e-10
    )
    cls = ALTO if bias_correction else ALTOVanilla
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation="core", **kwargs), grads)
    theta, buffers = transcription.alto(
        [p.numpy() for p in initial_params()],
        [[g.numpy() for g in gs] for gs in grads],
        bias_correction=bias_correction,
        **kwargs,
    )
    for index, p in enumerate(params):
        assert_close(p, theta[index], rtol=1e-10, what=f"param {index}")
        state = optimizer.state[p]
        assert_close(state["AdamState.first"], buffers["m"][index], rtol=1e-10, what="m")
        assert_close(state["AdamState.second"], buffers["v"][index], rtol=1e-10, what="v")
        carry = _carry_from_two_buffers(buffers["a"][index], buffers["g_prev"][index], 0.5)
        assert_close(state["EState.carry"], carry, rtol=1e-10, atol=1e-12, what="carry")


@pytest.mark.parametrize("decoupled", [False, True])
def test_eadam_and_eadamw_equal_the_transcription(decoupled, grads):
    kwargs = dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    cls = EAdamW if decoupled else EAdam
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation="core", **kwargs), grads)
    theta, buffers = transcription.eadam(
        [p.numpy() for p in initial_params()], [[g.numpy() for g in gs] for gs in grads], decoupled=decoupled, **kwargs
    )
    for index, p in enumerate(params):
        assert_close(p, theta[index], rtol=1e-10, what=f"param {index}")
        assert_close(optimizer.state[p]["AdamState.second"], buffers["v"][index], rtol=1e-10, what="v")


def test_esgd_equals_the_transcription(grads):
    kwargs = dict(lr=1e-3, alpha=-0.3, betas=(0.5, 0.9), weight_decay=1e-2)
    params, optimizer = run_optimizer(lambda ps: ESGD(ps, implementation="core", **kwargs), grads)
    theta, buffers = transcription.esgd(
        [p.numpy() for p in initial_params()], [[g.numpy() for g in gs] for gs in grads], **kwargs
    )
    for index, p in enumerate(params):
        assert_close(p, theta[index], rtol=1e-10, what=f"param {index}")
        assert_close(optimizer.state[p]["TraceState.momentum"], buffers["m"][index], rtol=1e-10, what="m")


@pytest.mark.parametrize(
    "base, core",
    [
        (
            lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8),
            vc.eadam(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), eps=1e-8, weight_decay=0.0),
        ),
        (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9), vc.esgd(lr=1e-3, alpha=-0.5, betas=(0.5, 0.9))),
    ],
    ids=["adam", "sgd"],
)
def test_e_wrapper_equals_the_core_e_optimizer(base, core, grads):
    params, optimizer = run_optimizer(lambda ps: E(base(ps), alpha=-0.5, beta1=0.5), grads)
    core_params, core_state = run_core(core, grads)
    for index, (p, q) in enumerate(zip(params, core_params)):
        assert_close(p, q, rtol=1e-10, what=f"param {index}")
    carries = vc.state_to_dict(core_state)
    for index, p in enumerate(params):
        assert_close(optimizer.state[p]["e_carry"], carries[f"EState.carry.{index}"], what="carry")


def test_per_group_hyperparameters_equal_the_core_on_each_group(grads):
    params = [torch.nn.Parameter(p.clone()) for p in initial_params()]
    first = dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)
    second = dict(lr=0.005, alpha=0.3, betas=(0.1, 0.8, 0.99), weight_decay=0.0)
    optimizer = ALTO(
        [{"params": params[:2], **first}, {"params": params[2:], **second, "trust_ratio": False}], implementation="core"
    )
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        optimizer.step()
    core_a, _ = run_core(vc.alto(**first), [gs[:2] for gs in grads], params=initial_params()[:2])
    core_b, _ = run_core(
        vc.alto(**second, trust_ratio_mask=(False,)), [gs[2:] for gs in grads], params=initial_params()[2:]
    )
    for p, q in zip(params, list(core_a) + list(core_b)):
        assert_close(p, q)


def test_parameters_without_gradient_are_left_alone(grads):
    params = [torch.nn.Parameter(p.clone()) for p in initial_params()]
    optimizer = ALTO(params, lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), implementation="core")
    for k, gs in enumerate(grads[:20]):
        for index, (p, g) in enumerate(zip(params, gs)):
            p.grad = None if (index == 1 and k % 2) else g.clone()
        optimizer.step()
    assert optimizer.state[params[0]]["step"] == 20
    assert optimizer.state[params[1]]["step"] == 10
    core, _ = run_core(
        vc.alto(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999)),
        [[gs[1]] for gs in grads[:20:2]],
        params=[initial_params()[1]],
    )
    assert_close(params[1], core[0])


def test_param_group_helper_matches_core_masks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4),
        torch.nn.LayerNorm(4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 2, bias=False),
        torch.nn.BatchNorm1d(2),
    ).double()
    groups = lamb_param_groups(model, weight_decay=1e-2, lr=0.02)
    assert [len(g["params"]) for g in groups] == [2, 5]
    assert [g["trust_ratio"] for g in groups] == [True, False]
    ordered = [p for g in groups for p in g["params"]]
    masks = core_masks(model)
    by_id = dict(zip((id(p) for p in model.parameters()), zip(masks["weight_decay_mask"], masks["trust_ratio_mask"])))
    decay_mask = tuple(by_id[id(p)][0] for p in ordered)
    trust_mask = tuple(by_id[id(p)][1] for p in ordered)
    assert decay_mask == (True, True, False, False, False, False, False)
    start = [p.detach().clone() for p in ordered]
    optimizer = ALTO(groups, alpha=-0.5, betas=(0.5, 0.9, 0.999), implementation="core")
    rng = np.random.default_rng(3)
    sequence = [[torch.tensor(rng.normal(size=tuple(p.shape))) for p in ordered] for _ in range(30)]
    for gs in sequence:
        for p, g in zip(ordered, gs):
            p.grad = g.clone()
        optimizer.step()
    core, _ = run_core(
        vc.alto(
            lr=0.02,
            alpha=-0.5,
            betas=(0.5, 0.9, 0.999),
            weight_decay=1e-2,
            weight_decay_mask=decay_mask,
            trust_ratio_mask=trust_mask,
        ),
        sequence,
        params=start,
    )
    for p, q in zip(ordered, core):
        assert_close(p, q)
