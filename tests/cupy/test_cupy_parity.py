"""Every record of ``tests/optimizers.py`` that backends.cupy claims, on its three engines, against the core.

Engines: ``numpy`` (the CPU mode: the plan interpreted by NumPy), ``stand-in`` (the CuPy engine with the CUDA
source compiled for the host, ``fake_cupy.py``) and ``cuda`` (a real device; skipped without one, and
``benchmarks/gpu_check.py`` records the same parity on a GPU machine). Parameters and every state buffer
against the float64 NumPy core; float32 stays float32 and close to the float32 core; resume == uninterrupted;
alpha = 0 == the base; invalid inputs and the records the backend refuses, with their messages.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import valley_core as vc
from backends import cupy as vcp
from tests.cupy import core_run, fake_cupy, make, problem
from tests.optimizers import CASES, cases, oracle_run, refused

NUMPY = SimpleNamespace(kind="numpy", name="numpy", options=dict(array_module="numpy"), put=np.array, get=np.asarray)


@pytest.fixture(params=["numpy", "stand-in", "cuda"])
def engine(request, monkeypatch):
    """How arrays reach the optimizer and come back, and the options that select the engine."""
    if request.param == "numpy":
        return NUMPY
    if request.param == "stand-in":
        fake_cupy.install(monkeypatch)
        return SimpleNamespace(kind="stand-in", name="cupy", options={}, put=fake_cupy._on_device, get=np.asarray)
    if not vcp.cuda_available():
        pytest.skip("needs CuPy with a CUDA device (none here)")
    import cupy

    return SimpleNamespace(kind="cuda", name="cupy", options={}, put=cupy.array, get=cupy.asnumpy)


def run(case, engine, params, grads, **options):
    device = [engine.put(p) for p in params]
    opt = make(case.name, device, case.kwargs("cupy"), **engine.options, **options)
    assert opt._engine.name == engine.name
    for step in grads:
        assert opt.step([engine.put(g) for g in step]) is True
    return device, opt


@pytest.mark.parametrize("case", cases("cupy"))
def test_parity_with_the_float64_core_params_and_every_state_buffer(case, engine):
    params, grads = problem()
    expected_params, expected_state = core_run(case.make(), params, grads)
    device, opt = run(case, engine, params, grads)
    if engine.kind == "stand-in":  # every step ran the kernels
        assert fake_cupy.FakeRawKernel.launches == fake_cupy.kernel_launches(opt) * len(grads)
    rtol, atol = case.tolerance("float64", "compiled" if engine.kind == "cuda" else None)
    for actual, want in zip(device, expected_params):
        np.testing.assert_allclose(engine.get(actual), want, rtol=rtol, atol=atol)
    checkpoint = opt.state_dict()["state"]
    assert checkpoint.keys() == expected_state.keys()
    for key, want in expected_state.items():
        assert type(checkpoint[key]) is np.ndarray  # host copies
        np.testing.assert_allclose(checkpoint[key], np.asarray(want), rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("case", cases("cupy"))
def test_float32_stays_float32_and_close_to_the_float32_core(case, engine):
    params, grads = problem(12, seed=4, dtype=np.float32)
    expected, _ = core_run(case.make(), params, grads)
    device, opt = run(case, engine, params, grads)
    rtol, atol = (1e-4, 1e-5) if engine.kind == "cuda" else case.tolerance("float32")  # the device contracts FMAs
    for actual, want in zip(device, expected):
        assert actual.dtype == np.float32
        np.testing.assert_allclose(engine.get(actual), want, rtol=2 * rtol, atol=2 * atol)
    assert all(v.dtype == np.float32 for k, v in opt.state_dict()["state"].items() if not k.endswith("count"))


@pytest.mark.parametrize("case", cases("cupy"))
def test_resume_from_state_dict_equals_the_uninterrupted_run(case, engine):
    params, grads = problem(10, seed=1)
    straight, _ = run(case, engine, params, grads)
    resumed, first = run(case, engine, params, grads[:4])
    second = make(case.name, resumed, case.kwargs("cupy"), **engine.options)
    second.load_state_dict(first.state_dict())
    for step in grads[4:]:
        second.step([engine.put(g) for g in step])
    assert second.steps_taken == len(grads)
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(engine.get(a), engine.get(b))


@pytest.mark.parametrize("case", cases("cupy", where=lambda c: c.base is not None))
def test_alpha_zero_equals_the_base(case):
    params, grads = problem(10, seed=5)
    explored, _ = run(case.at_alpha_zero(), NUMPY, params, grads)
    base_params = [p.copy() for p in params]
    base = make(case.base[0], base_params, case.base[1], array_module="numpy")
    for step in grads:
        base.step(step)
    for a, b in zip(explored, base_params):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("case", [c for c in CASES if c.invalid], ids=lambda c: c.id)
def test_invalid_hyperparameters_are_refused_with_the_core_message(case):
    for overrides, message in case.invalid:
        params = [np.ones(3)]
        with pytest.raises(ValueError, match=message):
            make(case.name, params, {**case.kwargs("cupy"), **overrides}, array_module="numpy")
        np.testing.assert_array_equal(params[0], 1.0)


@pytest.mark.parametrize("case, what, message", refused("cupy"))
def test_a_refused_record_says_why(case, what, message):
    with pytest.raises(ValueError, match=message):
        make(case.name, [np.ones(3)], case.kwargs("cupy"), array_module="numpy")


def test_every_core_optimizer_is_claimed_or_refused():
    claimed = {c.name for c in CASES if "core" in c.backends.get("cupy", ())}
    refusals = {c.name for c in CASES if "cupy" in c.refused}
    assert set(vcp.OPTIMIZERS) <= claimed
    assert claimed | refusals == set(vc.OPTIMIZERS), set(vc.OPTIMIZERS) - claimed - refusals


@pytest.mark.parametrize("case", cases("cupy", where=lambda c: c.oracle == "transcription"))
def test_cpu_mode_matches_the_independent_transcription(case):
    params, grads = problem(25, seed=3)
    expected, expected_state = oracle_run(case, params, grads)
    actual, opt = run(case, NUMPY, params, grads)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    state = opt.state_dict()["state"]
    for key, want in expected_state.items():
        np.testing.assert_allclose(state[key], want, rtol=1e-9, atol=1e-12, err_msg=key)


def test_a_cpu_mode_checkpoint_continues_on_the_engine_and_inputs_are_checked(engine):
    params, grads = problem(10, seed=2)
    cpu_params = [p.copy() for p in params]
    cpu = vcp.ALTO(cpu_params, array_module="numpy", lr=1e-2)
    for step in grads[:5]:
        cpu.step(step)
    device = [engine.put(p) for p in cpu_params]
    other = vcp.ALTO(device, lr=1e-2, **engine.options)
    other.load_state_dict(cpu.state_dict())
    for step in grads[5:]:
        cpu.step(step)
        other.step([engine.put(g) for g in step])
    for a, b in zip(device, cpu_params):
        np.testing.assert_allclose(engine.get(a), b, rtol=1e-11, atol=1e-13)
    if engine.kind != "numpy":
        with pytest.raises(TypeError, match=r"params\[0\] is a ndarray, expected a cupy.ndarray"):
            vcp.ALTO([np.ones(3)])
        with pytest.raises(TypeError, match=r"grads\[0\] is a ndarray, expected a cupy.ndarray"):
            other.step([np.asarray(g) for g in grads[0]])
    skipping = vcp.EAdam([engine.put(np.ones(3))], skip_nonfinite=True, **engine.options)
    assert skipping.step([engine.put(np.array([1.0, np.nan, 0.0]))]) is False
    assert skipping.step([engine.put(np.array([1.0, 2.0, 0.0]))]) is True
    with pytest.raises(ValueError, match="multi_tensor=1 violates multi_tensor is a bool"):
        vcp.ALTO([engine.put(np.ones(3))], multi_tensor=1, **engine.options)


def test_stand_in_without_a_device_and_with_a_non_contiguous_gradient(monkeypatch):
    module = fake_cupy.install(monkeypatch)
    # A non-contiguous gradient: that tensor is run by CuPy's operators instead of the kernels, same result.
    square, reference = fake_cupy._on_device(np.ones((4, 4))), np.ones((4, 4))
    vcp.ALTO([square]).step([fake_cupy._on_device(np.arange(16.0).reshape(4, 4)).T])
    assert fake_cupy.FakeRawKernel.launches == 0
    expected, _ = core_run(vc.alto(), [reference], [[np.arange(16.0).reshape(4, 4).T]])
    np.testing.assert_allclose(np.asarray(square), expected[0], rtol=1e-12, atol=1e-14)
    module.cuda.runtime.getDeviceCount = lambda: 0
    with pytest.raises(RuntimeError, match=r"CUDA is not available: CuPy fake sees 0 CUDA devices"):
        vcp.ALTO([fake_cupy._on_device(np.ones(3))])
