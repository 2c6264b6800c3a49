"""The fused CPU path beyond the table's parity (``tests/torch/test_torch_table.py``): threads, mixed dtypes and
steps in one group, empty tensors, what it refuses, a missing compiler, and ``E(base)``'s fused adaptor.

See ``backends/torch/fused.py`` and ``backends/kernels/cpu.py``; the kernels are built once per machine (about a
second) into a cache.
"""

from __future__ import annotations

import pytest
import torch
from torch_helpers import (
    assert_close,
    assert_same_state,
    build,
    clone_state,
    gradient_sequence,
    initial_params,
    optimizer_state_as_core_dict,
    run_optimizer,
)

from backends.torch import ALTO
from tests.optimizers import BY_ID

ALTO_CASE = BY_ID["alto_decay"]
SHAPES = [(), (4, 3), (1,), (3, 4099), (5,), (1, 1), (2, 3, 2)]


def test_results_do_not_depend_on_the_number_of_threads():
    """Norms are summed per block of 4096 elements and the block sums in block order, whatever the threads."""
    shapes = [(5, 4096 + 7), (3,), (2, 9000)]
    grads = gradient_sequence(20, shapes=shapes, seed=6)
    start = initial_params(shapes, seed=7)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            params, optimizer = run_optimizer(lambda ps: build(ALTO_CASE, ps, "fused"), grads, params=start)
            results.append((params, clone_state(optimizer)))
    finally:
        torch.set_num_threads(threads)
    for params, _ in results[1:]:
        for p, q in zip(params, results[0][0]):
            assert torch.equal(p, q)


def test_mixed_dtypes_and_tensors_at_different_steps_in_one_group():
    """A tensor without a gradient at some steps falls behind (its own step count and bias corrections), and a
    float32 tensor sits beside float64 ones: each batch gets its own scalars and kernel."""
    shapes = [(4, 3), (5,), (6,)]
    grads = gradient_sequence(30, shapes=shapes, seed=8)
    start = initial_params(shapes, seed=9)
    fused = [torch.nn.Parameter(p.clone()) for p in start]
    core = [torch.nn.Parameter(p.clone()) for p in start]
    fused[2].data = fused[2].data.float()
    core[2].data = core[2].data.float()
    optimizers = [build(ALTO_CASE, fused, "fused"), build(ALTO_CASE, core, "core")]
    for k, grads_k in enumerate(grads):
        for params, optimizer in zip((fused, core), optimizers):
            for index, (p, g) in enumerate(zip(params, grads_k)):
                p.grad = None if (index == 1 and k % 3 == 0) else g.clone().to(p.dtype)
            optimizer.step()
    for p, q in zip(fused, core):
        if p.dtype == torch.float64:
            assert_close(p, q, rtol=1e-12, atol=1e-14, what="float64 param")
        else:
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    assert [optimizers[0].state[p]["step"] for p in fused] == [30, 20, 30]
    for p, q in zip(fused, core):
        for key, value in optimizers[1].state[q].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(optimizers[0].state[p][key], value, rtol=2e-6, atol=1e-12)
            else:
                assert optimizers[0].state[p][key] == value


def test_empty_tensors_are_counted_but_not_touched():
    params = [
        torch.nn.Parameter(torch.zeros(0, 3, dtype=torch.float64)),
        torch.nn.Parameter(torch.ones(3, dtype=torch.float64)),
    ]
    optimizer = build(ALTO_CASE, params, "fused")
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    assert all(optimizer.state[p]["step"] == 3 for p in params)
    assert int(optimizer_state_as_core_dict(optimizer, params)["AdamState.count"]) == 3


def test_what_the_fused_path_cannot_run_is_refused_before_anything_changes():
    strided = torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64).t())
    strided.grad = torch.ones(3, 4, dtype=torch.float64)
    optimizer = ALTO([strided], implementation="fused")
    with pytest.raises(RuntimeError, match=r"implementation='fused'\) cannot run this group: non-contiguous"):
        optimizer.step()
    assert torch.equal(strided, torch.ones(3, 4, dtype=torch.float64))
    assert not optimizer.state[strided]
    ALTO([strided], implementation="auto").step()  # auto: the core path


def test_a_missing_compiler_is_a_clear_error_for_fused_and_a_warning_for_auto(monkeypatch):
    monkeypatch.setenv("VALLEY_CXX", "/nonexistent/valley-test-c++")
    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    params[0].grad = torch.full((3,), 0.5, dtype=torch.float64)
    optimizer = ALTO(params, implementation="fused")
    before = clone_state(optimizer)
    with pytest.raises(RuntimeError, match="fused CPU kernels could not be built: VALLEY_CXX=.*not an executable"):
        optimizer.step()
    assert torch.equal(params[0], torch.ones(3, dtype=torch.float64))
    assert_same_state(before, clone_state(optimizer))

    auto = ALTO(params, implementation="auto", lr=0.1)
    with pytest.warns(RuntimeWarning, match="fused CPU kernels could not be built"):
        auto.step()
    assert not torch.equal(params[0], torch.ones(3, dtype=torch.float64))  # stepped by another path


# ------------------------------------------------------------------------------------- E(base_optimizer)
def test_e_wrapper_keeps_its_state_when_the_base_optimizer_fails():
    """The fused adaptor writes the next carry to a new tensor, committed only after the base optimizer's step."""
    from backends.torch import E

    class Failing(torch.optim.SGD):
        def step(self, closure=None):
            raise RuntimeError("base optimizer failed")

    params = [torch.nn.Parameter(torch.ones(5000, dtype=torch.float64))]
    optimizer = E(Failing(params, lr=0.1), alpha=-0.5, beta1=0.5, implementation="fused")
    params[0].grad = torch.full((5000,), 0.25, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="base optimizer failed"):
        optimizer.step()
    assert not optimizer.state[params[0]]
    assert torch.equal(params[0].grad, torch.full((5000,), 0.25, dtype=torch.float64))


def test_e_wrapper_fused_refuses_what_it_cannot_run():
    from backends.torch import E

    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))]
    params[0].grad = torch.ones(3, dtype=torch.bfloat16)
    optimizer = E(torch.optim.SGD(params, lr=0.1), implementation="fused")
    with pytest.raises(RuntimeError, match=r"E\(implementation='fused'\) cannot adapt .* dtype torch.bfloat16"):
        optimizer.step()
    assert not optimizer.state[params[0]]
    E(torch.optim.SGD(params, lr=0.1)).step()  # "auto": op by op for bfloat16
