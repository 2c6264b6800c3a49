"""The `valley` command line: the subcommand table and `valley info`."""

import os
import re
import subprocess
import sys

import pytest

import valley_core
from valley_cli.main import SUBCOMMANDS, build_parser


@pytest.fixture(scope="module")
def info_run():
    """``valley info`` in a fresh process (so that TensorFlow starts there), without TF_CPP_MIN_LOG_LEVEL set."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "valley_cli", "info"], capture_output=True, text=True, env=env, timeout=600
    )


def test_info_reports_versions_backends_and_gpu(info_run):
    assert info_run.returncode == 0, info_run.stderr
    out = info_run.stdout
    assert out.startswith(f"valley_core {valley_core.__version__}  python ")
    for name in (
        "numpy",
        "torch",
        "jax",
        "optax",
        "backends.numpy",
        "backends.torch",
        "backends.keras",
        "backends.jax",
        "backends.cupy",
        "GPU",
    ):
        assert f"  {name}" in out
    assert "  fused CPU kernels  ok (" in out and "valley-kernels-" in out  # g++ is on every machine we run on


def test_info_says_whether_each_backend_can_run_here_and_why_not(info_run):
    lines = {line.split()[0]: line.split(None, 1)[1] for line in info_run.stdout.splitlines()[1:] if line.strip()}
    assert lines["backends.numpy"] == "can run (CPU)"
    assert lines["backends.torch"].startswith("can run (CPU")
    assert lines["backends.keras"].startswith("can run (Keras 3.")
    assert lines["backends.jax"].startswith("can run (JAX ") and "cpu" in lines["backends.jax"]
    from backends.cupy import cuda_available

    if cuda_available():
        assert lines["backends.cupy"].startswith("can run (CUDA devices: ")
    else:  # this machine: CuPy may import, but there is no usable CUDA device or driver
        assert lines["backends.cupy"].startswith("cannot run: ") and "CUDA" in lines["backends.cupy"]


def test_info_output_has_no_tensorflow_start_up_log_lines(info_run):
    assert info_run.stderr == ""
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cpu_feature_guard", info_run.stdout, re.MULTILINE)


def test_every_subcommand_is_listed_in_help():
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "valley_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
