"""Runs every claim once in quick mode (numpy backend, seed 0); the tests assert on the evidence."""

from __future__ import annotations

import pytest

from proofs_check.cli import CLAIMS


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory):
    """``{claim name: ClaimResult}`` from one quick run of every claim, plus the output folder."""
    import importlib

    from proofs_check.common import Context

    out = tmp_path_factory.mktemp("proofs_quick")
    ctx = Context(backend="numpy", quick=True, seed=0, out_dir=str(out))
    results = {name: importlib.import_module(module).run(ctx) for name, module in CLAIMS.items()}
    return results, out
