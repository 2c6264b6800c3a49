"""``torch.compile(model)`` training with our optimizers, and the CUDA checks (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from torch_helpers import (
    assert_close,
    gradient_sequence,
    initial_params,
    optimizer_state_as_core_dict,
    run_core,
    run_optimizer,
)

import valley_core as vc
from backends.torch import ALTO, E, EAdamW

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))


def _train(model, optimizer, steps=25):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(64, 4, generator=generator)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_compiled_model_trains_like_the_eager_model():
    eager = _model()
    eager_losses = _train(
        eager, ALTO(eager.parameters(), lr=2e-2, alpha=-0.5, betas=(0.5, 0.9, 0.99), implementation="core")
    )
    model = _model()
    compiled = torch.compile(model)
    losses = _train(
        compiled, ALTO(model.parameters(), lr=2e-2, alpha=-0.5, betas=(0.5, 0.9, 0.99), implementation="core")
    )
    assert losses[-1] < 0.9 * losses[0]
    # Compiled kernels may round differently from eager ones: same trajectory to float32 tolerance.
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-3, atol=1e-5)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-3, atol=1e-4)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["core", "compiled"])
def test_cuda_alto_equals_the_core_on_cpu(implementation):
    kwargs = dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)
    grads = gradient_sequence(200)
    cuda_grads = [[g.cuda() for g in gs] for gs in grads]
    params, optimizer = run_optimizer(
        lambda ps: ALTO(ps, implementation=implementation, **kwargs),
        cuda_grads,
        params=[p.cuda() for p in initial_params()],
    )
    core_params, core_state = run_core(vc.alto(**kwargs), grads)
    for p, q in zip(params, core_params):
        assert_close(p.cpu(), q, rtol=1e-10, atol=1e-12)
    expected = vc.state_to_dict(core_state)
    for key, value in optimizer_state_as_core_dict(optimizer, params).items():
        assert value.device.type == "cuda"
        assert_close(value.cpu(), expected[key], rtol=1e-10, atol=1e-12, what=key)


@requires_cuda
@pytest.mark.gpu
def test_cuda_bfloat16_autocast_grad_scaler_and_e_wrapper():
    model = _model().cuda()
    optimizer = E(torch.optim.AdamW(model.parameters(), lr=1e-2), alpha=-0.5, beta1=0.5)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(64, 4, device="cuda")
    y = torch.sin(x.sum(dim=1, keepdim=True))
    for _ in range(20):
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert torch.isfinite(loss)
    params = [torch.nn.Parameter(torch.randn(8, 8, device="cuda", dtype=torch.bfloat16)) for _ in range(2)]
    bf16 = EAdamW(params, lr=1e-2, implementation="auto")
    for p in params:
        p.grad = torch.randn_like(p)
    bf16.step()
    assert all(bf16.state[p]["AdamState.first"].dtype == torch.float32 for p in params)
