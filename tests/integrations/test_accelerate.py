"""accelerate: ``prepare`` (model, ALTO, loader, OneCycleLR), ``save_state`` / ``load_state``: resume == uninterrupted.

A 64-64-10 MLP on scikit-learn's digits for 14 steps; the resumed run builds new objects, prepares them,
loads the state saved after step 7, skips the batches already seen, and must end with the parameters of the
run that never stopped.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
accelerate = pytest.importorskip("accelerate")
pytest.importorskip("sklearn")

from backends.torch import ALTO, lamb_param_groups  # noqa: E402
from tests.integrations._lightning_digits import BATCH  # noqa: E402

STEPS, SAVE_AT = 14, 7


def _objects():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = STEPS * BATCH
    data = torch.utils.data.TensorDataset(
        torch.tensor(x[:n] / 16.0, dtype=torch.float32), torch.tensor(y[:n], dtype=torch.long)
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = ALTO(lamb_param_groups(model, weight_decay=1e-4), lr=0.1, alpha=-1.0, e_beta=0.9, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=STEPS)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)
    return model, optimizer, loader, scheduler


def _train(accelerator, model, optimizer, loader, scheduler, losses, stop_after=None):
    for step, (x, y) in enumerate(loader):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if stop_after is not None and step + 1 == stop_after:
            return


def test_prepare_save_state_load_state_resume_equals_uninterrupted(tmp_path):
    accelerator = accelerate.Accelerator(cpu=True)
    prepared = accelerator.prepare(*_objects())
    losses: list = []
    _train(accelerator, *prepared, losses)
    assert len(losses) == STEPS and losses[-1] < 0.8 * losses[0], losses
    uninterrupted = [p.detach().clone() for p in prepared[0].parameters()]

    first = accelerate.Accelerator(cpu=True)
    model, optimizer, loader, scheduler = first.prepare(*_objects())
    first_losses: list = []
    _train(first, model, optimizer, loader, scheduler, first_losses, stop_after=SAVE_AT)
    first.save_state(str(tmp_path / "state"))

    second = accelerate.Accelerator(cpu=True)
    model, optimizer, loader, scheduler = second.prepare(*_objects())
    second.load_state(str(tmp_path / "state"))
    assert optimizer.optimizer.state and scheduler.scheduler.last_epoch == SAVE_AT
    resumed_losses: list = []
    _train(second, model, optimizer, second.skip_first_batches(loader, SAVE_AT), scheduler, resumed_losses)

    assert first_losses + resumed_losses == losses
    for a, b in zip(uninterrupted, model.parameters()):
        assert torch.equal(a, b)
