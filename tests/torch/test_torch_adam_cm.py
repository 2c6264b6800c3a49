"""``backends.torch.AdamCM`` beyond the table's generic tests (``test_torch_table.py``: parity with the core,
every state tensor, resume): the reference transcription, kappa = 0 is ``torch.optim.AdamW``, its checkpoint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.core.helpers import relative_error  # noqa: E402
from tests.core.test_adam_cm import AdamCMTranscription, _grads, _params, _reference_hyperparameters  # noqa: E402
from tests.optimizers import BY_ID, cases  # noqa: E402


def _torch_run(grads, steps=None, **hp):
    from backends.torch import AdamCM

    params = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in _params()]
    optimizer = AdamCM(params, **hp)
    for step in grads[:steps]:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("case", cases("torch", where=lambda c: c.name == "adam_cm"))
def test_torch_adapter_matches_the_reference_transcription(case):
    grads = _grads(40)
    params, optimizer = _torch_run(grads, **case.kwargs("torch"))
    oracle = AdamCMTranscription(_params(), **_reference_hyperparameters(case))
    for step in grads:
        oracle.step(step)
    for p, expected in zip(params, oracle.params):
        assert relative_error(p.detach(), expected) <= 1e-10
    top_c = case.hyperparameters["top_c"]
    assert optimizer.state[params[2]]["CriticalMomentaState.buffer"].shape == (top_c, 2, 3)


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


def test_torch_checkpoint_restores_hyperparameters_and_refuses_a_mismatched_buffer():
    from backends.torch import AdamCM

    hp = BY_ID["adam_cm"].kwargs("torch")
    _, first = _torch_run(_grads(11), **hp)
    other = AdamCM([torch.nn.Parameter(torch.tensor(p)) for p in _params()], **dict(hp, top_c=4))
    other.load_state_dict(first.state_dict())  # as torch.optim: the checkpoint's hyperparameters are restored
    assert other.param_groups[0]["top_c"] == hp["top_c"] == 3
    corrupt = first.state_dict()
    corrupt["state"][0]["CriticalMomentaState.buffer"] = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"CriticalMomentaState\.buffer: shape \(4, 3\) does not match the optimizer's \(3, 3\)"
    ):
        other.load_state_dict(corrupt)
