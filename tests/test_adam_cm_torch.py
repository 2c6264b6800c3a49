"""``backends.torch.AdamCM`` against the float64 core (and the reference transcription), on CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import valley_core as vc  # noqa: E402
from tests.core.helpers import relative_error, run_core  # noqa: E402
from tests.test_adam_cm import SHAPES, AdamCMTranscription, _grads, _params  # noqa: E402

HP = dict(
    lr=1e-2,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-3,
    top_c=3,
    decay=0.7,
    kappa=1.0,
    synced=True,
    critical_test=0.0,
)


def _torch_run(grads, steps=None, **hp):
    from backends.torch import AdamCM

    params = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in _params()]
    optimizer = AdamCM(params, **hp)
    for step in grads[:steps]:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("synced", [True, False])
def test_torch_adapter_matches_the_core_params_and_state(synced):
    hp = dict(HP, synced=synced)
    grads = _grads(40)
    params, optimizer = _torch_run(grads, **hp)
    core_params, core_state = run_core(vc.adam_cm(**hp), _params(), grads, np)
    flat = vc.state_to_dict(core_state)
    for i, (p, expected) in enumerate(zip(params, core_params)):
        assert relative_error(p.detach(), expected) <= 1e-13, f"param {i}"
        state = optimizer.state[p]
        assert state["step"] == 40
        for field in ("first", "second", "buffer", "priorities"):
            key = f"CriticalMomentaState.{field}"
            assert relative_error(state[key], flat[f"{key}.{i}"]) <= 1e-13, f"{key} of param {i}"
    assert optimizer.state[params[2]]["CriticalMomentaState.buffer"].shape == (3, 2, 3)


def test_torch_adapter_matches_the_reference_transcription():
    grads = _grads(40)
    params, _ = _torch_run(grads, **HP)
    oracle = AdamCMTranscription(_params(), **HP)
    for step in grads:
        oracle.step(step)
    for p, expected in zip(params, oracle.params):
        assert relative_error(p.detach(), expected) <= 1e-10


def test_torch_kappa_zero_is_torch_adamw():
    grads = _grads(25)
    params, _ = _torch_run(grads, lr=1e-2, weight_decay=1e-2, kappa=0.0)
    reference = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in _params()]
    adamw = torch.optim.AdamW(reference, lr=1e-2, weight_decay=1e-2, eps=1e-8)
    for step in grads:
        for p, g in zip(reference, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        adamw.step()
    for mine, theirs in zip(params, reference):
        # torch adds eps to sqrt(v)/sqrt(1-beta2^k), the core to sqrt(v/(1-beta2^k)): round-off apart
        assert relative_error(mine.detach(), theirs.detach().numpy()) <= 1e-9


def test_torch_state_dict_resume_equals_an_uninterrupted_run():
    from backends.torch import AdamCM

    grads = _grads(30)
    straight, _ = _torch_run(grads, **HP)
    params, first = _torch_run(grads, steps=11, **HP)
    checkpoint = first.state_dict()
    resumed = AdamCM(params, **HP)
    resumed.load_state_dict(checkpoint)
    for step in grads[11:]:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        resumed.step()
    for a, b in zip(straight, params):
        assert torch.equal(a, b)
    other = AdamCM([torch.nn.Parameter(torch.tensor(p)) for p in _params()], **dict(HP, top_c=4))
    other.load_state_dict(checkpoint)  # as torch.optim: the checkpoint's hyperparameters are restored
    assert other.param_groups[0]["top_c"] == 3
    corrupt = first.state_dict()
    corrupt["state"][0]["CriticalMomentaState.buffer"] = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"CriticalMomentaState\.buffer: shape \(4, 3\) does not match the optimizer's \(3, 3\)"
    ):
        other.load_state_dict(corrupt)


def test_torch_adapter_validates_with_the_core_rules():
    from backends.torch import AdamCM

    with pytest.raises(ValueError, match=r"top_c=0 violates top_c is an integer >= 1"):
        AdamCM([torch.nn.Parameter(torch.zeros(2))], top_c=0)
    assert len(SHAPES) == 3
