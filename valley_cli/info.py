"""``valley info``: versions, whether each backend can run here (and why not), the fused CPU kernels, the GPU.

A backend "can run" when one optimizer step runs on this machine (CuPy's needs a usable CUDA device; the
others run on the CPU). Importing TensorFlow writes start-up log lines from C++ straight to the process'
standard error (``TF_CPP_MIN_LOG_LEVEL`` does not silence all of them); they are dropped while the probes
import, so the report is the only output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import sys
from typing import Any, Callable, Dict, Iterator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


@contextlib.contextmanager
def native_stderr_dropped() -> Iterator[None]:
    """Sends file descriptor 2 to ``os.devnull`` for the duration (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _probe(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - report any import failure
        return f"not installed ({_first_line(error)})"
    return f"installed ({getattr(module, '__version__', '?')})"


def _run_numpy(module: Any) -> str:
    import numpy as np

    weight = np.ones(2)
    module.ALTO([weight], lr=0.1).step([np.ones(2)])
    return "CPU"


def _run_torch(module: Any) -> str:
    import torch

    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.ones(2)
    module.ALTO([weight], lr=0.1).step()
    return f"CPU; CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none visible'}"


def _run_keras(module: Any) -> str:
    import keras
    import numpy as np

    weight = keras.Variable(np.ones(2, dtype="float32"))
    module.ALTO(learning_rate=0.1).apply_gradients([(keras.ops.ones((2,)), weight)])
    return f"Keras {keras.__version__} on its {keras.backend.backend()} backend"


def _run_jax(module: Any) -> str:
    import jax
    import jax.numpy as jnp

    params = {"weight": jnp.ones(2)}
    optimizer = module.alto(learning_rate=0.1)
    updates, _ = optimizer.update({"weight": jnp.ones(2)}, optimizer.init(params), params)
    jax.block_until_ready(updates)
    return f"JAX {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device(s))"


def _run_cupy(module: Any) -> str:
    from backends.cupy._engine import import_cupy  # raises RuntimeError saying what is missing

    cupy = import_cupy()
    return f"CUDA devices: {cupy.cuda.runtime.getDeviceCount()}"


#: backend module -> one optimizer step on this machine; returns where it ran, raises if it cannot run.
RUN_CHECKS: Dict[str, Callable[[Any], str]] = {
    "backends.numpy": _run_numpy,
    "backends.torch": _run_torch,
    "backends.keras": _run_keras,
    "backends.jax": _run_jax,
    "backends.cupy": _run_cupy,
}


def backend_status(module_name: str) -> str:
    """``can run (where)`` or ``cannot run: why`` for one backend module."""
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - report why, whatever it is
        return f"cannot run: it does not import ({_first_line(error)})"
    try:
        where = RUN_CHECKS[module_name](module)
    except Exception as error:  # noqa: BLE001 - report why, whatever it is
        return f"cannot run: {_first_line(error)}"
    return f"can run ({where})"


def _gpu() -> str:
    found = []
    try:
        import torch

        if torch.cuda.is_available():
            found.append(f"torch CUDA: {torch.cuda.get_device_name(0)}")
    except Exception:  # noqa: BLE001
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append("cupy CUDA: yes")
    except Exception:  # noqa: BLE001
        pass
    return "; ".join(found) if found else "none visible"


def _fused_kernels() -> str:
    """Whether ``backends.kernels.cpu`` builds (or finds in its cache) the fused CPU kernels, and where."""
    try:
        import valley_core as vc
        from backends.kernels import cpu
        from backends.kernels.plan import derive

        library = cpu.load([(derive(vc.alto, {}), "valley_step", None)])
    except Exception as error:  # noqa: BLE001 - report why, whatever it is
        return f"not available ({_first_line(error)})"
    return f"ok ({library.path}{'' if library.openmp else ', without OpenMP: one thread'})"


def _plans() -> dict:
    """One line per named core optimizer: its plan's passes, or why it has none."""
    import valley_core as vc
    from backends.kernels.plan import Unplannable, derive

    lines = {}
    for name, factory in vc.OPTIMIZERS.items():
        try:
            plan = derive(factory, {})
            lines[name] = f"{len(plan.passes)} pass(es), {plan.reductions} sum(s), state {[k for _, k in plan.buffers]}"
        except Unplannable as error:
            lines[name] = f"core path only: {error}"
    return lines


def run(args: argparse.Namespace) -> int:
    import valley_core

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's Python-side logging
    with native_stderr_dropped():
        frameworks = {
            label: _probe(label)
            for label in ("numpy", "array_api_compat", "torch", "tensorflow", "keras", "jax", "optax", "cupy")
        }
        backends = {name: backend_status(name) for name in RUN_CHECKS}
        kernels = _fused_kernels()
        gpu = _gpu()
    print(f"valley_core {valley_core.__version__}  python {platform.python_version()}  {platform.platform()}")
    for label, status in frameworks.items():
        print(f"  {label:18s} {status}")
    for name, status in backends.items():
        print(f"  {name:18s} {status}")
    print(f"  fused CPU kernels  {kernels}")
    print("  execution plans (backends.kernels.plan; what cannot be planned runs on the core path):")
    for name, line in _plans().items():
        print(f"    {name:16s} {line}")
    print(f"  GPU                {gpu}")
    return 0
