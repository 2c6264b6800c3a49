"""ALTO on a 2x4 mesh of 8 CPU devices: sharded state, unsharded results, orbax resume (issue 23 item 2).

JAX fixes its device count when it starts, so the runs happen in one subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (``tests/jax/_mesh_worker.py``), which prints a JSON
report. Kernels are sharded ``P('data', 'model')`` and ``P('model', 'data')``, biases (zero-initialised) over
one axis. Three ways to run it, each compared with the same run on one device:

- ``jax.jit`` with explicit in/out shardings, the state's derived from the parameters' with
  ``optax.tree_utils.tree_map_params`` (the recipe in docs/jax.md);
- ``flax.nnx.Optimizer``, the state's shardings taken from the parameters' ``sharding_names`` metadata;
- orbax: params and state saved at step 4, restored into fresh shardings, trained on; equal to the
  uninterrupted run bit for bit.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "tests.jax._mesh_worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-12), ("float32", 1e-6)])
def test_jit_with_explicit_shardings_equals_the_unsharded_run(report, dtype, tolerance):
    result = report[f"jit/{dtype}"]
    assert result["moved"] > 1e-2
    assert result["relative_difference"] <= tolerance, result
    assert result["kernel_devices"] == 8, result
    assert result["traces"] == 1, result  # one trace, so one compilation, for the 8 steps


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_state_leaf_is_sharded_like_its_parameter(report, dtype):
    """ALTO's carry, m and v of each of the 5 parameters (15 leaves): the parameter's sharding, after eager
    ``init`` on sharded parameters and after training under jit."""
    result = report[f"jit/{dtype}"]
    assert result["eager_init"] == {"compared": 15, "equal": 15}, result
    assert result["after_training"] == {"compared": 15, "equal": 15}, result


def test_nnx_optimizer_shards_the_state_like_the_parameters_and_equals_the_unsharded_run(report):
    result = report["nnx/float64"]
    assert result["state_leaves"] == {"compared": 15, "equal": 15}, result
    assert result["kernel_devices"] == 8, result
    assert result["relative_difference"] <= 1e-12, result
    assert result["traces"] == 1, result


def test_orbax_restores_the_sharded_state_and_the_resumed_run_equals_the_uninterrupted_one(report):
    result = report["jit/float64"]
    restored = result["restored"]
    assert restored["same_values"] and restored["same_structure"], restored
    assert restored["shardings"] == {"compared": 15, "equal": 15}, restored
    assert result["resumed_versus_uninterrupted"] == 0.0, result
