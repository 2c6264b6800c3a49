"""Shared fixtures. ``xp`` runs a test on every array namespace that is installed."""

from __future__ import annotations

import importlib

import pytest

NAMESPACES = ("numpy", "array_api_strict", "torch")


def _load(name: str):
    if name == "numpy":
        import array_api_compat.numpy as xp
    elif name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict")
    else:
        pytest.importorskip("torch")
        xp = importlib.import_module("array_api_compat.torch")
    return xp


@pytest.fixture(params=NAMESPACES)
def xp(request):
    """An array-API namespace: numpy, array-api-strict, torch (skipped when not installed)."""
    return _load(request.param)
