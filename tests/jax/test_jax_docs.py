"""The examples in ``backends.jax``'s docstrings and ``examples/jax_quickstart.py`` run and learn."""

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import backends.jax
import backends.jax.optimizers

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", [backends.jax, backends.jax.optimizers], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


def test_quickstart_learns_and_resumes():
    done = subprocess.run(
        [sys.executable, "examples/jax_quickstart.py", "--epochs", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    accuracies = dict(re.findall(r"^\s*(.+?): test accuracy ([0-9.]+)", done.stdout, re.MULTILINE))
    assert set(accuracies) == {"valley ALTO", "E(optax.adamw)", "optax.adamw", "ALTO resumed"}, done.stdout
    assert all(float(value) > 0.8 for value in accuracies.values()), accuracies
