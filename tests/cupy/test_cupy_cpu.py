"""backends.cupy without a GPU, beyond the table's generic tests (``test_cupy_parity.py``): the import, the
no-CUDA error, the independent transcription, checkpoints (interchangeable with backends.numpy, host copies,
mismatches refused, 0.1.0's), input checks, skipping non-finite steps, the example and the docstring."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import valley_core as vc
from backends import cupy as vcp
from backends import numpy as vnp
from tests.core.helpers import CORRUPT_CHECKPOINTS, assert_takes_the_step_0_1_0_took
from tests.cupy import problem

SHAPES = [(3, 4), (5,), (), (2, 1, 3)]


def _problem(steps=25, seed=0):
    return problem(steps, seed, shapes=SHAPES)


def _cpu(name, params, **hyperparameters):
    return vcp.OPTIMIZERS[name](params, array_module="numpy", **hyperparameters)


def test_import_does_not_import_cupy():
    code = "import sys, backends.cupy; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.skipif(vcp.cuda_available(), reason="CUDA is available here; the no-CUDA error cannot happen")
def test_constructing_without_cuda_raises_a_clear_runtime_error():
    for cls in vcp.OPTIMIZERS.values():
        with pytest.raises(RuntimeError, match=r"CUDA is not available|CuPy, which is not installed"):
            cls([np.ones(3)])


def test_constructing_without_cupy_installed_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes ``import cupy`` raise ImportError
    with pytest.raises(RuntimeError, match=r"needs CuPy, which is not installed \(pip install cupy-cuda12x"):
        vcp.ALTO([np.ones(3)])
    assert vcp.cuda_available() is False


def test_step_updates_the_callers_arrays_in_place():
    params, grads = _problem(3)
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    opt = _cpu("alto", params)
    opt.step(grads[0])
    assert [id(p) for p in opt.params] == ids
    assert all(not np.array_equal(p, b) for p, b in zip(params, before))


def test_checkpoints_are_interchangeable_with_the_numpy_backend():
    params, grads = _problem(12, seed=2)
    reference = [p.copy() for p in params]
    ref_opt = vnp.ALTO(reference, lr=1e-2)
    for step in grads:
        ref_opt.step(step)

    half = [p.copy() for p in params]
    numpy_opt = vnp.ALTO(half, lr=1e-2)
    for step in grads[:6]:
        numpy_opt.step(step)
    cupy_opt = _cpu("alto", half, lr=1e-2)
    cupy_opt.load_state_dict(numpy_opt.state_dict())
    for step in grads[6:9]:
        cupy_opt.step(step)
    back = vnp.ALTO(half, lr=1e-2)
    back.load_state_dict(cupy_opt.state_dict())
    for step in grads[9:]:
        back.step(step)
    for a, b in zip(half, reference):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_state_dict_is_a_host_copy():
    params, grads = _problem(3)
    opt = _cpu("eadam", params)
    opt.step(grads[0])
    checkpoint = opt.state_dict()
    before = {k: v.copy() for k, v in checkpoint["state"].items()}
    opt.step(grads[1])
    for key, value in checkpoint["state"].items():
        assert isinstance(value, np.ndarray)
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("corrupt,pattern", CORRUPT_CHECKPOINTS)
def test_mismatched_checkpoint_raises_and_changes_nothing(corrupt, pattern):
    params, grads = _problem(6)
    source = _cpu("alto", [p.copy() for p in params])
    for step in grads[:5]:
        source.step(step)
    checkpoint = source.state_dict()
    corrupt(checkpoint)
    target = _cpu("alto", [p.copy() for p in params])
    target.step(grads[0])
    snapshot = {k: v.copy() for k, v in target.state_dict()["state"].items()}
    with pytest.raises(ValueError, match=pattern):
        target.load_state_dict(checkpoint)
    for key, value in target.state_dict()["state"].items():
        np.testing.assert_array_equal(value, snapshot[key], err_msg=key)
    assert target.steps_taken == 1


def test_hyperparameters_beyond_the_records_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match=r"betas=\(0\.9, 0\.99, 0\.5\) violates betas is a sequence of 2"):
        _cpu("lamb", [np.ones(3)], betas=(0.9, 0.99, 0.5))
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentum'"):
        _cpu("esgd", [np.ones(3)], momentum=0.9)
    with pytest.raises(ValueError, match=r"array_module='jax' violates array_module is 'cupy' or 'numpy'"):
        vcp.ALTO([np.ones(3)], array_module="jax")


def test_bad_parameters_and_gradients_are_rejected_before_anything_changes():
    with pytest.raises(ValueError, match="params is empty"):
        _cpu("alto", [])
    with pytest.raises(TypeError, match=r"params\[0\] has dtype float16; backends.cupy optimizes float32 and float64"):
        _cpu("alto", [np.ones(3, dtype=np.float16)])
    with pytest.raises(TypeError, match=r"params\[0\] is a list, expected a numpy.ndarray"):
        _cpu("alto", [[1.0, 2.0]])
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        _cpu("alto", [frozen])
    params, grads = _problem(2)
    opt = _cpu("alto", params)
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match=r"got 1 gradients for 4 parameters"):
        opt.step(grads[0][:1])
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\), its parameter has shape \(5,\)"):
        opt.step([grads[0][0], np.zeros(4), *grads[0][2:]])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32, its parameter has dtype float64"):
        opt.step([grads[0][0].astype(np.float32), *grads[0][1:]])
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert opt.steps_taken == 0


def test_skip_nonfinite_skips_atomically():
    params, grads = _problem(3)
    opt = _cpu("alto", params, skip_nonfinite=True)
    opt.step(grads[0])
    before = [p.copy() for p in params]
    snapshot = {k: v.copy() for k, v in opt.state_dict()["state"].items()}
    bad = [g.copy() for g in grads[1]]
    bad[1][2] = np.inf
    assert opt.step(bad) is False
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for key, value in opt.state_dict()["state"].items():
        np.testing.assert_array_equal(value, snapshot[key])
    assert opt.step(grads[1]) is True and opt.steps_taken == 2


def test_example_mlp_gradients_and_training_in_cpu_mode(capsys):
    from examples import cupy_mlp

    rng = np.random.default_rng(0)
    params = [p.astype(np.float64) for p in cupy_mlp.init_params(np, rng, (6, 5, 3))]
    x, y = rng.normal(size=(4, 6)), np.array([0, 2, 1, 2])
    _, grads = cupy_mlp.forward_backward(np, params, x, y)
    for p, g in zip(params, grads):  # central differences on a few entries
        for index in list(np.ndindex(p.shape))[:4]:
            original = p[index]
            p[index] = original + 1e-6
            up = float(cupy_mlp.forward_backward(np, params, x, y)[0])
            p[index] = original - 1e-6
            down = float(cupy_mlp.forward_backward(np, params, x, y)[0])
            p[index] = original
            assert abs((up - down) / 2e-6 - g[index]) < 1e-6
    assert cupy_mlp.main(["--array-module", "numpy", "--epochs", "3"]) == 0
    output = capsys.readouterr().out
    assert "NOT a GPU run" in output
    assert float(output.split("final test accuracy ")[1].split()[0]) > 0.9


@pytest.mark.skipif(vcp.cuda_available(), reason="CUDA is available here")
def test_example_mlp_without_cuda_exits_with_the_clear_error(capsys):
    from examples import cupy_mlp

    assert cupy_mlp.main(["--epochs", "1"]) == 1
    error = capsys.readouterr().err
    assert "CUDA is not available" in error or "CuPy, which is not installed" in error


def test_docstring_example_runs():
    import doctest

    from backends.cupy import _optimizer

    assert doctest.testmod(_optimizer).failed == 0


@pytest.mark.parametrize("backend", ["numpy", "cupy_cpu_mode"])
def test_a_zero_initialised_tensor_trains_under_the_default_trust_ratio(backend):
    # Issue 13.7: the same zero-norm policy as the core (ratio 1 where a norm is zero) on the stateful adapters.
    def trained(**kwargs):
        params = [np.zeros(4), np.ones(3)]
        if backend == "numpy":
            opt = vnp.ALTO(params, lr=1e-2, **kwargs)
        else:
            opt = vcp.ALTO(params, lr=1e-2, array_module="numpy", **kwargs)
        rng = np.random.default_rng(0)
        for _ in range(10):
            opt.step([rng.normal(size=4), rng.normal(size=3)])
        return float(np.abs(params[0]).max())

    assert trained() > 1e-3
    assert trained(zero_norm_ratio=None) < 1e-9  # the paper's formula, still available


@pytest.mark.parametrize(
    "name,make",
    [
        (
            "cupy.ALTO",
            lambda p: vcp.ALTO(p, lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3, array_module="numpy"),
        ),
        ("cupy.EAdamW", lambda p: vcp.EAdamW(p, lr=1e-2, alpha=0.5, array_module="numpy")),
    ],
)
def test_checkpoints_of_0_1_0_load_and_take_the_step_that_code_took(name, make):
    """valley 0.1.0's CuPy ``state_dict()`` (with ``steps_taken`` beside the core's counts), written by that
    code (``tests/core/data/make_legacy_fixtures.py``): the next step gives the parameters it computed."""
    opt = assert_takes_the_step_0_1_0_took(name, make)
    assert sorted(opt.state_dict()) == ["optimizer", "state", "valley_version"]
    assert opt.state_dict()["valley_version"] == vc.__version__


def test_the_step_count_is_the_core_states_and_lives_on_the_host():
    """No counter beside the core's (0.1.0 kept ``_count`` and ``steps_taken``): the step that drives the bias
    corrections is read from the state's counters, which are host arrays (no device read per step)."""
    params, grads = _problem(4)
    opt = _cpu("alto", [p.copy() for p in params])
    assert not {"_count", "steps_taken"} & set(vars(opt))
    checkpoint = opt.state_dict()
    for key in checkpoint["state"]:
        if key.endswith(".count"):
            checkpoint["state"][key] = np.array(7, dtype=np.int32)
    opt.load_state_dict(checkpoint)
    assert opt.steps_taken == 7
    assert all(type(v) is np.ndarray for k, v in vc.state_to_dict(opt.state).items() if k.endswith(".count"))
    reference = vnp.ALTO([p.copy() for p in params])
    reference.load_state_dict(opt.state_dict())
    opt.step(grads[0])
    reference.step(grads[0])
    for a, b in zip(opt.params, reference.params):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    assert opt.steps_taken == reference.steps_taken == 8
