"""Runs groups of checks in a subprocess (one TensorFlow start-up for many checks) and reads them back.

A worker module (``tests/keras/_worker_*.py``) calls ``Checks.run(name, fn)`` for each check and
``Checks.emit()`` at the end; the test module runs the worker once (``run_worker``) and asserts every
expected check by name, so a check that did not run fails instead of passing silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "VALLEY-CHECKS:"


class Checks:
    """Collects named results in a worker process."""

    def __init__(self) -> None:
        self.results: Dict[str, Dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[], Optional[str]]) -> None:
        try:
            detail = fn()
            self.results[name] = {"status": "ok", "detail": detail or ""}
        except Exception:  # noqa: BLE001 - reported to the parent test
            self.results[name] = {"status": "failed", "detail": traceback.format_exc()}

    def skip(self, name: str, reason: str) -> None:
        self.results[name] = {"status": "skipped", "detail": reason}

    def emit(self) -> None:
        sys.stdout.flush()
        print(MARKER + json.dumps(self.results), flush=True)


def run_worker(
    module: str, backend: str = "tensorflow", timeout: float = 400, env: Optional[Dict[str, str]] = None
) -> Dict[str, Dict[str, Any]]:
    """Runs ``tests.keras.<module>`` with ``KERAS_BACKEND=backend``; returns its results by check name."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONHASHSEED": "0",
            "PYTHONPATH": str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", ""),
        }
    )
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", f"tests.keras.{module}"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    pytest.fail(
        f"worker {module} (KERAS_BACKEND={backend}) produced no results, exit code {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )


def assert_check(results: Dict[str, Dict[str, Any]], name: str) -> None:
    """Fails, skips or passes the current test according to the worker's result for ``name``."""
    if name not in results:
        pytest.fail(f"check {name!r} did not run; ran: {sorted(results)}")
    result = results[name]
    if result["status"] == "skipped":
        pytest.skip(result["detail"])
    assert result["status"] == "ok", result["detail"]


def relative_error(actual: Any, expected: Any) -> float:
    """``||actual - expected|| / ||expected||`` in float64 (the absolute error when ``expected`` is 0)."""
    import numpy as np

    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.linalg.norm(expected)
    difference = np.linalg.norm(actual - expected)
    return float(difference / scale) if scale > 0 else float(difference)
