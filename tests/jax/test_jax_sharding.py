"""Parameters sharded over two CPU devices give the unsharded result: trust-ratio norms are of the full tensor.

JAX fixes its device count when it starts, so the check runs in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (``tests/jax/_sharded_worker.py``). The weight matrix is
split by rows whose scales differ by 100x between the two shards, so per-shard norms would change the result.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "tests.jax._sharded_worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("name", ["alto", "lamb", "eadamw", "adam_cm"])
def test_sharded_equals_unsharded(report, name):
    result = report[name]
    assert result["moved"] > 1e-3
    assert result["relative_difference"] <= 1e-12, result
    assert result["w_devices"] == 2, result  # the parameters stayed sharded
    assert result["compiles"] == 1, result
