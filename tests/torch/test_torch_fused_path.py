"""The fused CPU path equals the core: parameters and every state tensor, float64, 200+ steps, every optimizer.

This is the proof that allows ``implementation="fused"`` (and ``"auto"`` on the CPU) to exist; see
``backends/torch/fused.py`` and ``backends/kernels/cpu.py``. The oracle is the core transform run op by
op on torch tensors (``run_core``); the kernels are built once per machine (about a second) into a cache.
"""

from __future__ import annotations

import pytest
import torch
from torch_helpers import (
    assert_close,
    assert_matches_core,
    assert_same_state,
    clone_state,
    gradient_sequence,
    initial_params,
    lamb_family_cases,
    optimizer_state_as_core_dict,
    run_core,
    run_optimizer,
)

import valley_core as vc
from backends.torch import ALTO, ESGD, EAdam, EAdamW

STEPS = 210

CASES = {
    **lamb_family_cases(),
    "alto_paper_large_batch": (ALTO, vc.alto, dict(lr=0.01, alpha=-5.0, betas=(0.99, 0.9, 0.99), weight_decay=1e-4)),
    "eadam": (EAdam, vc.eadam, dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)),
    "eadam_schedules": (
        EAdam,
        vc.eadam,
        dict(
            lr=vc.inverse_sqrt(0.01),
            alpha=vc.exponential_decay(0.5, 0.99),
            betas=(0.1, 0.9, 0.99),
            bias_correction=False,
        ),
    ),
    "eadamw": (EAdamW, vc.eadamw, dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=0.1)),
    "esgd": (ESGD, vc.esgd, dict(lr=0.01, alpha=-0.5, betas=(0.5, 0.9), weight_decay=1e-3)),
}
#: 0-d and 1-element tensors, a tensor over several blocks of the kernel (4096 elements) with a partial last
#: block, and small ones.
SHAPES = [(), (4, 3), (1,), (3, 4099), (5,), (1, 1), (2, 3, 2)]


def _core_kwargs(kwargs, count):
    kwargs = dict(kwargs)
    if "trust_ratio" in kwargs:
        kwargs["trust_ratio_mask"] = (kwargs.pop("trust_ratio"),) * count
    return kwargs


def _check_against_core(optimizer, params, factory, kwargs, grads, start, rtol=1e-12, atol=1e-14):
    core_params, core_state = run_core(factory(**_core_kwargs(kwargs, len(params))), grads, params=start)
    assert_matches_core(optimizer, params, core_params, core_state, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_path_equals_the_core(case):
    cls, factory, kwargs = CASES[case]
    grads = gradient_sequence(STEPS, shapes=SHAPES, seed=3)
    start = initial_params(SHAPES, seed=2)
    params, optimizer = run_optimizer(lambda ps: cls(ps, implementation="fused", **kwargs), grads, params=start)
    _check_against_core(optimizer, params, factory, kwargs, grads, start)
    assert all(optimizer.state[p]["step"] == STEPS for p in params)


@pytest.mark.parametrize("case", ["alto", "alto_no_trust_ratio", "lamb"])
def test_fused_path_equals_the_core_when_large_tensors_recompute_r(case, monkeypatch):
    """Tensors above ``STORE_LIMIT_BYTES`` (2 MiB) recompute ``r`` in the second pass instead of storing it; the
    limit is lowered so that the (3, 4099) tensor takes that branch and the small ones keep storing ``r``."""
    from backends.kernels import cpu

    monkeypatch.setattr(cpu, "STORE_LIMIT_BYTES", 100 * 8)
    test_fused_path_equals_the_core(case)


@pytest.mark.parametrize("case", ["eadam", "eadamw", "esgd"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_steps_without_a_norm_are_bit_for_bit_the_core_on_numpy(case, dtype):
    """No reduction in these steps, and no fused multiply-add in the kernels: every element is rounded as the
    core's op-by-op evaluation on NumPy rounds it. (The core on torch tensors is not the reference here: torch's
    vectorised kernels round a few elements of large tensors differently from NumPy.)"""
    import numpy as np

    cls, factory, kwargs = CASES[case]
    grads = gradient_sequence(40, shapes=SHAPES, seed=3, dtype=dtype)
    start = initial_params(SHAPES, seed=2, dtype=dtype)
    params, optimizer = run_optimizer(
        lambda ps: cls(ps, implementation="fused", **kwargs), grads, params=start, dtype=dtype
    )
    transform = factory(**kwargs)
    core_params = tuple(p.numpy().copy() for p in start)
    state = transform.init(core_params)
    for grads_k in grads:
        updates, state = transform.update(tuple(g.numpy() for g in grads_k), state, core_params)
        core_params = vc.apply_updates(core_params, updates)
    for index, (p, q) in enumerate(zip(params, core_params)):
        assert p.detach().numpy().dtype == q.dtype
        assert np.array_equal(p.detach().numpy(), q), f"param {index}"
    actual = optimizer_state_as_core_dict(optimizer, params)
    for key, value in vc.state_to_dict(state).items():
        assert np.array_equal(actual[key].numpy(), np.asarray(value)), key


def test_float32_stays_within_round_off_of_the_core():
    for case in ("alto", "eadamw"):
        cls, factory, kwargs = CASES[case]
        grads = gradient_sequence(60, shapes=SHAPES, seed=3, dtype=torch.float32)
        start = initial_params(SHAPES, seed=2, dtype=torch.float32)
        params, optimizer = run_optimizer(
            lambda ps: cls(ps, implementation="fused", **kwargs), grads, params=start, dtype=torch.float32
        )
        core_params, _ = run_core(factory(**kwargs), grads, params=start, dtype=torch.float32)
        for p, q in zip(params, core_params):
            torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)


def test_results_do_not_depend_on_the_number_of_threads():
    """Norms are summed per block of 4096 elements and the block sums in block order, whatever the threads."""
    cls, _, kwargs = CASES["alto"]
    shapes = [(5, 4096 + 7), (3,), (2, 9000)]
    grads = gradient_sequence(20, shapes=shapes, seed=6)
    start = initial_params(shapes, seed=7)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            params, optimizer = run_optimizer(lambda ps: cls(ps, implementation="fused", **kwargs), grads, params=start)
            results.append((params, clone_state(optimizer)))
    finally:
        torch.set_num_threads(threads)
    for params, _ in results[1:]:
        for p, q in zip(params, results[0][0]):
            assert torch.equal(p, q)


def test_mixed_dtypes_and_tensors_at_different_steps_in_one_group():
    """A tensor without a gradient at some steps falls behind (its own step count and bias corrections), and a
    float32 tensor sits beside float64 ones: each batch gets its own scalars and kernel."""
    cls, factory, kwargs = CASES["alto"]
    shapes = [(4, 3), (5,), (6,)]
    grads = gradient_sequence(30, shapes=shapes, seed=8)
    start = initial_params(shapes, seed=9)
    fused = [torch.nn.Parameter(p.clone()) for p in start]
    core = [torch.nn.Parameter(p.clone()) for p in start]
    fused[2].data = fused[2].data.float()
    core[2].data = core[2].data.float()
    optimizers = [cls(fused, implementation="fused", **kwargs), cls(core, implementation="core", **kwargs)]
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
    cls, _, kwargs = CASES["alto"]
    params = [
        torch.nn.Parameter(torch.zeros(0, 3, dtype=torch.float64)),
        torch.nn.Parameter(torch.ones(3, dtype=torch.float64)),
    ]
    optimizer = cls(params, implementation="fused", **kwargs)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    assert all(optimizer.state[p]["step"] == 3 for p in params)
    assert int(optimizer_state_as_core_dict(optimizer, params)["AdamState.count"]) == 3


def test_resume_from_a_state_dict_equals_the_uninterrupted_run():
    cls, _, kwargs = CASES["alto"]
    grads = gradient_sequence(40, shapes=SHAPES, seed=3)
    start = initial_params(SHAPES, seed=2)
    full, _ = run_optimizer(lambda ps: cls(ps, implementation="fused", **kwargs), grads, params=start)
    first, optimizer = run_optimizer(lambda ps: cls(ps, implementation="fused", **kwargs), grads[:25], params=start)
    saved = optimizer.state_dict()
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    again = cls(resumed, implementation="fused", **kwargs)
    again.load_state_dict(saved)
    for grads_k in grads[25:]:
        for p, g in zip(resumed, grads_k):
            p.grad = g.clone()
        again.step()
    for p, q in zip(resumed, full):
        assert torch.equal(p, q)


def test_what_the_fused_path_cannot_run_is_refused_before_anything_changes():
    strided = torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64).t())
    strided.grad = torch.ones(3, 4, dtype=torch.float64)
    optimizer = ALTO([strided], implementation="fused")
    with pytest.raises(RuntimeError, match=r"implementation='fused'\) cannot run this group: non-contiguous"):
        optimizer.step()
    assert torch.equal(strided, torch.ones(3, 4, dtype=torch.float64))
    assert not optimizer.state[strided]
    ALTO([strided], implementation="auto").step()  # auto: the core path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["alto", "lamb", "eadam", "eadamw", "esgd"])
def test_low_precision_parameters_with_float32_state_match_the_core_path(case, dtype):
    """bfloat16/float16 parameters: the kernels load them into float32, keep float32 state and round the result
    to nearest even, as the core path does with float32 working copies. The trust ratio's norms are summed in
    another order, so an element now and then rounds the other way and the runs drift by a few units in the last
    place of the dtype there: at most 1 % of the elements differ, by at most 8 units of the dtype's precision
    relative to the tensor's largest value; state agrees to float32 round-off."""
    cls, _, kwargs = CASES[case]
    shapes = [(), (1,), (3, 4099), (5,)]
    grads = gradient_sequence(40, shapes=shapes, seed=3, dtype=dtype)
    start = initial_params(shapes, seed=2, dtype=dtype)
    runs = [
        run_optimizer(lambda ps: cls(ps, implementation=implementation, **kwargs), grads, params=start, dtype=dtype)
        for implementation in ("fused", "core")
    ]
    (fused, fused_opt), (core, core_opt) = runs
    ulp = torch.finfo(dtype).eps
    for p, q in zip(fused, core):
        assert p.dtype == dtype
        differing = int((p != q).sum())
        assert differing <= max(1, p.numel() // 100), f"{differing} of {p.numel()} elements differ"
        scale = float(q.detach().float().abs().max())
        assert float((p.detach().float() - q.detach().float()).abs().max()) <= 8 * ulp * scale
        for key, value in core_opt.state[q].items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert fused_opt.state[p][key].dtype == torch.float32
                torch.testing.assert_close(fused_opt.state[p][key], value, rtol=1e-3, atol=1e-6)


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
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_e_wrapper_fused_equals_its_core_path_bit_for_bit(dtype, base):
    """E's adaptor in the fused kernel and op by op (``valley_core.elementwise.e_adaptor_step``): same bits for
    the parameters, the base optimizer's state and E's carry, with a schedule for alpha and a parameter that
    misses its gradient at some steps (so that steps differ)."""
    from backends.torch import E

    shapes = [*SHAPES, (0, 3)]
    grads = gradient_sequence(30, shapes=shapes, seed=4, dtype=dtype)
    start = initial_params(shapes, seed=5, dtype=dtype)
    runs = []
    for implementation in ("fused", "core"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        inner = torch.optim.Adam(params, lr=0.01) if base == "adam" else torch.optim.SGD(params, lr=0.01, momentum=0.9)
        optimizer = E(inner, alpha=vc.exponential_decay(-0.5, 0.98), beta1=0.5, implementation=implementation)
        for k, grads_k in enumerate(grads):
            for index, (p, g) in enumerate(zip(params, grads_k)):
                p.grad = None if (index == 1 and k % 4 == 0) else g.clone()
            kept = [p.grad for p in params]
            optimizer.step()
            assert all(p.grad is g for p, g in zip(params, kept))  # the user's gradients are put back
        runs.append((params, optimizer))
    (fused, fused_opt), (core, core_opt) = runs
    for p, q in zip(fused, core):
        assert torch.equal(p, q)
    for p, q in zip(fused, core):
        assert torch.equal(fused_opt.state[p]["e_carry"], core_opt.state[q]["e_carry"])
        assert fused_opt.state[p]["e_step"] == core_opt.state[q]["e_step"]
        for key, value in core_opt.base_optimizer.state[q].items():
            assert torch.equal(torch.as_tensor(fused_opt.base_optimizer.state[p][key]), torch.as_tensor(value)), key


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
    with pytest.raises(ValueError, match="implementation='compiled' violates implementation in"):
        E(torch.optim.SGD(params, lr=0.1), implementation="compiled")
