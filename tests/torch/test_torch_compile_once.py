"""Issue 23 item 4: ``torch.compile(optimizer.step)`` and a compiled training step compile once.

Over 50 steps with an LR scheduler driving a tensor ``lr`` (torch's recipe for compiled optimizers), Dynamo makes
ONE graph of ``optimizer.step`` (``fullgraph=True``) and never recompiles (``error_on_recompile``). The step count
is a tensor in ``optimizer.state[p]["step"]`` and the per-step scalars are computed from it inside the graph.
The oracle for the values is the same optimizer run eagerly on the core path (the core chain op by op).
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from backends.torch import ALTO, EAdamW, Lamb

STEPS = 50
CLASSES = {
    "ALTO": (ALTO, dict(alpha=-0.5, betas=(0.5, 0.9, 0.99), weight_decay=1e-2)),
    "Lamb": (Lamb, dict(weight_decay=1e-2)),
    "EAdamW": (EAdamW, dict(alpha=0.5, betas=(0.1, 0.9, 0.99), weight_decay=1e-2)),
}
#: Inductor for ALTO (the generated kernels' values); Dynamo's graphs and guards, which decide recompilation, are
#: the same with any backend, so the other cases use "aot_eager" (Inductor's C++ build takes minutes on 2 cores).
BACKENDS = {"ALTO": "inductor", "Lamb": "aot_eager", "EAdamW": "aot_eager"}


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()


def _data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    return x, torch.sin(x.sum(dim=1, keepdim=True))


def _schedule(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.7)


def _eager_reference(cls, kwargs):
    """The same training on the core path, eagerly, with a float ``lr`` under the same schedule."""
    model = _model()
    optimizer = cls(model.parameters(), lr=0.02, implementation="core", **kwargs)
    schedule = _schedule(optimizer)
    x, y = _data()
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        schedule.step()
    return model


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
@pytest.mark.parametrize("name", list(CLASSES))
def test_compiled_optimizer_step_compiles_once_under_an_lr_schedule(name, fresh_dynamo):
    cls, kwargs = CLASSES[name]
    model = _model()
    optimizer = cls(model.parameters(), lr=torch.tensor(0.02, dtype=torch.float64), **kwargs)
    step = torch.compile(optimizer.step, fullgraph=True, backend=BACKENDS[name])
    schedule = _schedule(optimizer)  # after compiling: the scheduler wraps optimizer.step (torch's recipe)
    x, y = _data()
    for k in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            step()
        schedule.step()
    assert counters["stats"]["unique_graphs"] == 1
    assert all(isinstance(s["step"], torch.Tensor) and int(s["step"]) == STEPS for s in optimizer.state.values())
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(0.02 * 0.7**7)
    for p, q in zip(model.parameters(), _eager_reference(cls, kwargs).parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-10, atol=1e-12)


def test_a_compiled_training_step_compiles_once(fresh_dynamo):
    """Forward, backward and ``optimizer.step`` in one compiled function (the backward is a graph break of
    Dynamo's, not ours): the graphs made by the first call are all there ever are."""
    cls, kwargs = CLASSES["ALTO"]
    model = _model()
    optimizer = cls(model.parameters(), lr=torch.tensor(0.02, dtype=torch.float64), **kwargs)
    x, y = _data()

    @torch.compile(backend="aot_eager")
    def train_step():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    schedule = _schedule(optimizer)
    train_step()
    schedule.step()
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(STEPS - 1):
            train_step()
            schedule.step()
    assert counters["stats"]["unique_graphs"] == graphs
    for p, q in zip(model.parameters(), _eager_reference(cls, kwargs).parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["AdamCM", "ALTO core"])
def test_the_core_path_compiles_once_too(name, fresh_dynamo):
    """A chain without a plan (Adam+CM) and ``implementation="core"`` trace the core chain itself, built when
    Dynamo calls ``_init_group``; a tensor ``lr`` changed in place reaches it without recompiling."""
    from torch_helpers import gradient_sequence, initial_params

    from backends.torch import AdamCM

    cls, implementation, kwargs = {
        "AdamCM": (AdamCM, "auto", {}),
        "ALTO core": (ALTO, "core", CLASSES["ALTO"][1]),
    }[name]
    lr = torch.tensor(0.02, dtype=torch.float64)
    reference_params = [torch.nn.Parameter(p.clone()) for p in initial_params()]
    reference = cls(reference_params, lr=lr, implementation="core", **kwargs)
    params = [torch.nn.Parameter(p.clone()) for p in initial_params()]
    optimizer = cls(params, lr=lr, implementation=implementation, **kwargs)
    step = torch.compile(optimizer.step, fullgraph=True, backend="aot_eager")
    for k, grads in enumerate(gradient_sequence(12)):
        for p, q, g in zip(params, reference_params, grads):
            p.grad, q.grad = g.clone(), g.clone()
        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            step()
        reference.step()
        lr.mul_(0.95)  # what an LR scheduler does to a tensor lr
    assert counters["stats"]["unique_graphs"] == 1
    for p, q in zip(params, reference_params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-14)
    for p, q in zip(params, reference_params):
        for key, value in reference.state[q].items():
            torch.testing.assert_close(optimizer.state[p][key], value, rtol=1e-12, atol=1e-14)


def test_an_invalid_hyperparameter_under_torch_compile_raises_the_cores_value_error(fresh_dynamo):
    """Checked where Dynamo runs ``_init_group``; the step then runs eagerly and raises as it does outside
    ``torch.compile`` (a ValueError naming the rule, nothing written), not an internal Dynamo error."""
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = ALTO([p], lr=0.01)
    step = torch.compile(optimizer.step, backend="eager")
    p.grad = torch.ones(3)
    step()
    before = (p.detach().clone(), {k: v.clone() for k, v in optimizer.state[p].items()})
    optimizer.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"ALTO param group 0: lr=-1.0 violates lr >= 0"):
        step()
    assert torch.equal(p.detach(), before[0])
    assert all(torch.equal(v, before[1][k]) for k, v in optimizer.state[p].items())


def test_a_one_element_lr_and_a_0d_parameter_under_torch_compile(fresh_dynamo):
    """A tensor ``lr`` of shape (1,) (torch accepts any one-element tensor) must not broadcast a 0-d parameter."""
    start = [torch.tensor(1.5, dtype=torch.float64), torch.linspace(-1, 1, 3, dtype=torch.float64)]
    runs = []
    for compiled in (False, True):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        implementation = "auto" if compiled else "core"  # compiled: the plan's traced step
        optimizer = ALTO(params, lr=torch.tensor([0.01], dtype=torch.float64), implementation=implementation)
        step = torch.compile(optimizer.step, backend="eager", fullgraph=True) if compiled else optimizer.step
        for k in range(3):
            for p in params:
                p.grad = torch.cos(p.detach() * (k + 1))
            step()
        runs.append(params)
    for p, q in zip(*runs):
        assert p.shape == q.shape
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-14)
