"""Runs every claim once in the tests' tiny mode (numpy backend, seed 0); the tests assert on the records."""

from __future__ import annotations

import pytest

from proofs_check.cli import CLAIMS


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory):
    """``{claim name: ClaimResult}`` from one tiny run of every claim, plus the output folder."""
    import importlib

    from proofs_check.common import Context

    out = tmp_path_factory.mktemp("proofs_tiny")
    ctx = Context(backend="numpy", quick=True, seed=0, out_dir=str(out), tiny=True)
    results = {name: importlib.import_module(module).run(ctx) for name, module in CLAIMS.items()}
    return results, out
