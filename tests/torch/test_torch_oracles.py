"""External oracles: the authors' ALTO and E (``e-optimizer-adaptor``) where they agree with the paper. (torch.optim's
Adam, AdamW and SGD at ``alpha = 0`` are in ``test_torch_table.py``.) No number here comes from the code under test."""

from __future__ import annotations

import pytest
import torch
from torch_helpers import assert_close, build, gradient_sequence, run_optimizer

from backends.torch import E
from tests.optimizers import BY_ID, claims

STEPS = 200

authors = pytest.importorskip("ALTO", reason="e-optimizer-adaptor (the authors' ALTO) is not installed")


def _theirs(case, params):
    hp = case.kwargs("torch")
    return authors.ALTO(
        params,
        lr=hp["lr"],
        betas=hp["betas"],
        alp=hp["alpha"],
        eps=hp.get("eps", 1e-6),
        weight_decay=hp["weight_decay"],
    )


@pytest.mark.parametrize("implementation", ["core", "compiled"])
@pytest.mark.parametrize("case", [c.values[0] for c in claims("torch", "authors")], ids=lambda c: c.id)
def test_alto_matches_the_authors_alto_where_they_agree(case, implementation):
    # Where they agree: trust_eps = norm_eps = 0 (theirs has neither), weight_decay != 0 (theirs applies the
    # trust ratio only then), global gradient norm < 1 (theirs clips it to 1 first).
    assert case.hyperparameters["weight_decay"] != 0
    grads = gradient_sequence(STEPS, global_norm=0.5)
    theirs, their_optimizer = run_optimizer(lambda ps: _theirs(case, ps), grads)
    ours, our_optimizer = run_optimizer(lambda ps: build(case, ps, implementation, trust_eps=0.0, norm_eps=0.0), grads)
    beta1 = case.hyperparameters["betas"][0]
    for index, (p, q) in enumerate(zip(ours, theirs)):
        assert_close(p, q, rtol=1e-9, atol=1e-12, what=f"param {index}")
        their_state, our_state = their_optimizer.state[q], our_optimizer.state[p]
        assert_close(our_state["AdamState.first"], their_state["exp_avg"], rtol=1e-9, atol=1e-14, what="m")
        assert_close(our_state["AdamState.second"], their_state["exp_avg_sq"], rtol=1e-9, atol=1e-16, what="v")
        # Their two buffers (a_k, g_k) against our one carry b_{k+1} = beta1 a_k - (1 - beta1) g_k.
        carry = beta1 * their_state["exp_grad_diff"] - (1 - beta1) * their_state["prev_grad"]
        assert_close(our_state["EState.carry"], carry, rtol=1e-9, atol=1e-14, what="carry")


def test_the_authors_alto_differs_when_their_clipping_is_active():
    # A sanity check of the oracle's conditions: with a global gradient norm above 1 the trajectories differ.
    case = BY_ID["alto_large_batch"]
    grads = gradient_sequence(20, global_norm=5.0)
    theirs, _ = run_optimizer(lambda ps: _theirs(case, ps), grads)
    ours, _ = run_optimizer(lambda ps: build(case, ps, trust_eps=0.0, norm_eps=0.0), grads)
    assert max(float((p - q).detach().abs().max()) for p, q in zip(ours, theirs)) > 1e-6


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
