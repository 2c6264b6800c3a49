"""Torch parity beyond the table's records (``tests/torch/test_torch_table.py``): per-group hyperparameters,
parameters without a gradient, and the param-group helper against the core's masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_helpers import assert_close, gradient_sequence, initial_params, run_core

import valley_core as vc
from backends.torch import ALTO, core_masks, lamb_param_groups

STEPS = 220


@pytest.fixture(scope="module")
def grads():
    return gradient_sequence(STEPS)


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
