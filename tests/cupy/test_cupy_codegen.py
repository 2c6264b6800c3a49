"""The plans and the kernels generated from them, checked on the CPU.

1. the plan of every record of ``tests/optimizers.py`` that backends.cupy claims, interpreted by NumPy
   (``backends.cupy._engine.interpret``, the CPU mode), equals one step of the core chain on NumPy arrays: bit
   for bit where the step has no reduction, to round-off where it sums norms (the plan sums in float64, the
   core's ``vector_norm`` in the array's type); float64 and float32;
2. what the tracer cannot record (a data-dependent branch, a foreign value, state not shaped like the
   parameter) is refused with the reason;
3. the CUDA source of every pass of every record's plan compiles for a GPU with ``nvcc -ptx`` (when
   the CUDA toolkit is installed), with single-precision ``sqrt`` for float32 and the warp-level sums.

The rendered element bodies are run on the host by ``tests/cupy/test_cupy_parity.py`` (its stand-in engine
compiles the CUDA source with ``-DVALLEY_HOST_EMULATION``) and, as C++, by ``tests/torch/test_torch_fused_path.py``.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import valley_core as vc
from backends.cupy import _multi_tensor
from backends.cupy._engine import interpret
from backends.kernels.plan import GRAD, PARAM, Unplannable, derive
from backends.kernels.trace import NotTraceable, Recorder, Symbol
from tests.optimizers import cases


def _single_tensor(case):
    """(factory, hyperparameters) of a record for one tensor: a mask becomes that tensor's one flag."""
    hp = case.kwargs("cupy")
    hp.update({k: tuple(v([None]) if callable(v) else v) for k, v in hp.items() if k.endswith("_mask")})
    return vc.OPTIMIZERS[case.name], hp


#: Every record backends.cupy claims (every plannable core optimizer, with masks and schedules).
PLANS = {c.values[0].id: _single_tensor(c.values[0]) for c in cases("cupy")}
SIZE = 257


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(PLANS))
def test_a_plan_interpreted_by_numpy_equals_the_cores_step(name, dtype):
    factory, hyperparameters = PLANS[name]
    plan = derive(factory, hyperparameters)
    rng = np.random.default_rng(0)
    param = rng.normal(size=SIZE).astype(dtype)
    transform = factory(**hyperparameters)
    state = transform.init((param,))
    # Three steps of the core, so that the state is not zero, then one more step compared.
    for k in range(3):
        grad = rng.normal(size=SIZE).astype(dtype)
        updates, state = transform.update((grad,), state, (param,))
        param = vc.apply_updates((param,), updates)[0]
    grad = rng.normal(size=SIZE).astype(dtype)
    flat = {key: np.array(value, copy=True) for key, value in vc.state_to_dict(state).items()}
    arrays = {GRAD: grad, PARAM: param.copy(), **{role: flat[f"{key}.0"] for role, key in plan.buffers}}
    interpret(plan, arrays, plan.step_scalar_values(hyperparameters, 3, np.dtype(dtype).name), np)
    updates, new_state = transform.update((grad,), state, (param,))
    expected = {PARAM: vc.apply_updates((param,), updates)[0]}
    new_flat = vc.state_to_dict(new_state)
    expected.update({role: new_flat[f"{key}.0"] for role, key in plan.buffers})
    for role, want in expected.items():
        assert arrays[role].dtype == dtype, role
        if plan.reductions:
            np.testing.assert_allclose(arrays[role], want, rtol=1e-5 if dtype == np.float32 else 1e-13, err_msg=role)
        else:
            np.testing.assert_array_equal(arrays[role], want, err_msg=role)


def test_what_cannot_be_traced_is_refused_with_the_reason():
    recorder = Recorder()
    x = recorder.symbol("x", "array")
    with pytest.raises(NotTraceable, match="truth value of the traced value x"):
        bool(x)
    with pytest.raises(NotTraceable, match="cannot record a str"):
        x * "2"
    with pytest.raises(NotTraceable, match=r"'\*\*' on an array"):
        x**2.0
    assert isinstance(x + 1.0, Symbol)

    def branching(lr=0.1):
        base = vc.scale_by_learning_rate(lr)

        def update(grads, state, params=None, *, xp=None):
            if grads[0]:  # a data-dependent branch
                pass
            return base.update(grads, state, params, xp=xp)

        return base._replace(update=update)

    with pytest.raises(Unplannable, match="branching cannot be planned: the code takes the truth value"):
        derive(branching, {})
    with pytest.raises(Unplannable, match="adam_cm cannot be planned: its state holds arrays not shaped like"):
        derive(vc.adam_cm, {})


def test_every_pass_of_every_plan_compiles_for_a_gpu_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed: the device compile check needs it, not a GPU")
    sources = []
    for name, (factory, hyperparameters) in sorted(PLANS.items()):
        plan = derive(factory, hyperparameters)
        for variant, passes in (("stored", plan.passes), ("recompute", plan.recompute or ())):
            for index, step in enumerate(passes):
                for ctype in ("float", "double"):
                    kernel = f"{name}_{variant}_{index}_{ctype}"
                    sources.append((kernel, _multi_tensor.pass_source(plan, index, step, kernel, ctype)[0]))
    source = tmp_path / "kernels.cu"
    source.write_text("\n".join(f"namespace {name}_ns {{\n{code}\n}}" for name, code in sources))
    completed = subprocess.run(
        [nvcc, "-ptx", "-arch=compute_80", str(source), "-o", str(tmp_path / "k.ptx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ptx = (tmp_path / "k.ptx").read_text()
    assert ptx.count(".entry") == len(sources)
    assert "sqrt.rn.f32" in ptx and "sqrt.rn.f64" in ptx and "atom.global.add.f64" in ptx
