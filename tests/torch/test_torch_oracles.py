"""External oracles: the authors' ALTO (``e-optimizer-adaptor``) where the two agree, and torch.optim's
Adam, AdamW and SGD at ``alpha = 0``. No number here comes from the code under test."""

from __future__ import annotations

import pytest
import torch
from torch_helpers import assert_close, gradient_sequence, run_optimizer

from backends.torch import ALTO, ESGD, E, EAdam, EAdamW

STEPS = 200

authors = pytest.importorskip("ALTO", reason="e-optimizer-adaptor (the authors' ALTO) is not installed")


@pytest.mark.parametrize("implementation", ["core", "compiled"])
@pytest.mark.parametrize("betas, alpha", [((0.99, 0.9, 0.99), -5.0), ((0.01, 0.9, 0.99), 0.5)])
def test_alto_matches_the_authors_alto_where_they_agree(betas, alpha, implementation):
    # Where they agree: trust_eps = norm_eps = 0 (theirs has neither), weight_decay != 0 (theirs applies the
    # trust ratio only then), global gradient norm < 1 (theirs clips it to 1 first).
    grads = gradient_sequence(STEPS, global_norm=0.5)
    theirs, their_optimizer = run_optimizer(
        lambda ps: authors.ALTO(ps, lr=1e-2, betas=betas, alp=alpha, eps=1e-6, weight_decay=1e-3), grads
    )
    ours, our_optimizer = run_optimizer(
        lambda ps: ALTO(
            ps,
            lr=1e-2,
            alpha=alpha,
            betas=betas,
            eps=1e-6,
            weight_decay=1e-3,
            trust_eps=0.0,
            norm_eps=0.0,
            implementation=implementation,
        ),
        grads,
    )
    for index, (p, q) in enumerate(zip(ours, theirs)):
        assert_close(p, q, rtol=1e-9, atol=1e-12, what=f"param {index}")
        their_state, our_state = their_optimizer.state[q], our_optimizer.state[p]
        assert_close(our_state["AdamState.first"], their_state["exp_avg"], rtol=1e-9, atol=1e-14, what="m")
        assert_close(our_state["AdamState.second"], their_state["exp_avg_sq"], rtol=1e-9, atol=1e-16, what="v")
        # Their two buffers (a_k, g_k) against our one carry b_{k+1} = beta1 a_k - (1 - beta1) g_k.
        carry = betas[0] * their_state["exp_grad_diff"] - (1 - betas[0]) * their_state["prev_grad"]
        assert_close(our_state["EState.carry"], carry, rtol=1e-9, atol=1e-14, what="carry")


def test_the_authors_alto_differs_when_their_clipping_is_active():
    # A sanity check of the oracle's conditions: with a global gradient norm above 1 the trajectories differ.
    grads = gradient_sequence(20, global_norm=5.0)
    theirs, _ = run_optimizer(
        lambda ps: authors.ALTO(ps, lr=1e-2, betas=(0.99, 0.9, 0.99), alp=-5.0, eps=1e-6, weight_decay=1e-3), grads
    )
    ours, _ = run_optimizer(
        lambda ps: ALTO(
            ps,
            lr=1e-2,
            alpha=-5.0,
            betas=(0.99, 0.9, 0.99),
            eps=1e-6,
            weight_decay=1e-3,
            trust_eps=0.0,
            norm_eps=0.0,
            implementation="core",
        ),
        grads,
    )
    assert max(float((p - q).detach().abs().max()) for p, q in zip(ours, theirs)) > 1e-6


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_eadam_at_alpha_zero_is_torch_adam(weight_decay):
    grads = gradient_sequence(STEPS)
    expected, torch_optimizer = run_optimizer(
        lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay), grads
    )
    actual, optimizer = run_optimizer(
        lambda ps: EAdam(
            ps, lr=1e-2, alpha=0.0, betas=(0.3, 0.9, 0.999), eps=1e-8, weight_decay=weight_decay, implementation="core"
        ),
        grads,
    )
    for p, q in zip(actual, expected):
        assert_close(p, q, rtol=1e-10, atol=1e-12)
        assert_close(optimizer.state[p]["AdamState.first"], torch_optimizer.state[q]["exp_avg"], rtol=1e-10)
        assert_close(optimizer.state[p]["AdamState.second"], torch_optimizer.state[q]["exp_avg_sq"], rtol=1e-10)


def test_eadamw_at_alpha_zero_is_torch_adamw():
    grads = gradient_sequence(STEPS)
    expected, _ = run_optimizer(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), grads)
    actual, _ = run_optimizer(
        lambda ps: EAdamW(ps, lr=1e-2, alpha=0.0, betas=(0.3, 0.9, 0.999), weight_decay=0.1, implementation="core"),
        grads,
    )
    for p, q in zip(actual, expected):
        assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_esgd_at_alpha_zero_is_torch_sgd_with_momentum():
    grads = gradient_sequence(STEPS)
    expected, _ = run_optimizer(lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, weight_decay=1e-2), grads)
    actual, _ = run_optimizer(
        lambda ps: ESGD(ps, lr=1e-3, alpha=0.0, betas=(0.3, 0.9), weight_decay=1e-2, implementation="core"), grads
    )
    for p, q in zip(actual, expected):
        assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_e_wrapper_at_alpha_zero_is_the_base_optimizer():
    grads = gradient_sequence(STEPS)
    expected, _ = run_optimizer(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), grads)
    actual, _ = run_optimizer(
        lambda ps: E(torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), alpha=0.0, beta1=0.9), grads
    )
    for p, q in zip(actual, expected):
        assert torch.equal(p, q)


def test_e_wrapper_matches_the_authors_e_on_their_common_ground():
    # The authors' E overwrites p.grad and keeps a and g_prev; on plain SGD the trajectories must agree.
    their_e = pytest.importorskip("E")
    grads = gradient_sequence(STEPS)
    expected, _ = run_optimizer(
        lambda ps: their_e.E(torch.optim.SGD(ps, lr=1e-3, momentum=0.9), alpha=-0.5, beta=0.5), grads
    )
    actual, _ = run_optimizer(lambda ps: E(torch.optim.SGD(ps, lr=1e-3, momentum=0.9), alpha=-0.5, beta1=0.5), grads)
    for p, q in zip(actual, expected):
        assert_close(p, q, rtol=1e-10, atol=1e-12)
