"""``valley info``: versions, which backends import, whether the fused CPU kernels build, whether a GPU is visible."""

from __future__ import annotations

import argparse
import importlib
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def _probe(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - report any import failure
        return f"not available ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return f"ok ({getattr(module, '__version__', '?')})"


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
        from backends.kernels import cpu

        library = cpu.load()
    except Exception as error:  # noqa: BLE001 - report why, whatever it is
        return f"not available ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return f"ok ({library.path}{'' if library.openmp else ', without OpenMP: one thread'})"


def run(args: argparse.Namespace) -> int:
    import valley_core

    print(f"valley_core {valley_core.__version__}  python {platform.python_version()}  {platform.platform()}")
    for label, module in (
        ("numpy", "numpy"),
        ("array_api_compat", "array_api_compat"),
        ("torch", "torch"),
        ("tensorflow", "tensorflow"),
        ("keras", "keras"),
        ("cupy", "cupy"),
    ):
        print(f"  {label:18s} {_probe(module)}")
    for backend in ("backends.numpy", "backends.torch", "backends.keras", "backends.cupy"):
        print(f"  {backend:18s} {'imports' if _probe(backend).startswith('ok') else _probe(backend)}")
    print(f"  fused CPU kernels  {_fused_kernels()}")
    print(f"  GPU                {_gpu()}")
    return 0
