"""Shared fixtures. ``xp`` runs a test on every array namespace that is installed."""

from __future__ import annotations

import importlib

import pytest

NAMESPACES = ("numpy", "array_api_strict", "torch", "jax")


def _load(name: str):
    if name == "numpy":
        import array_api_compat.numpy as xp
    elif name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict")
    elif name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)  # the core tests compare float64 with NumPy
        import jax.numpy as xp
    else:
        pytest.importorskip("torch")
        xp = importlib.import_module("array_api_compat.torch")
    return xp


@pytest.fixture(params=NAMESPACES)
def xp(request):
    """An array-API namespace: numpy, array-api-strict, torch, jax.numpy (skipped when not installed)."""
    return _load(request.param)
