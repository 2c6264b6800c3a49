"""``import backends.keras`` without the framework of Keras' backend says what to install or which
``KERAS_BACKEND`` to set (issue 26, item 16), in subprocesses where that framework cannot be imported.

The framework is hidden by wrapping the import finders so that they do not find it, which is what Python
sees for a package that is not installed (``No module named 'tensorflow'``); ``KERAS_HOME`` points at an
empty folder so that no ``keras.json`` picks the backend.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("keras")

from tests.keras._harness import ROOT  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import sys

    HIDDEN = sys.argv[1]

    # Every finder finds nothing under HIDDEN: Python then behaves as if HIDDEN were not installed
    # (import raises "No module named ...", importlib.util.find_spec returns None).
    class NotInstalled:

        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == HIDDEN:
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, attribute):
            return getattr(self.finder, attribute)

    sys.meta_path[:] = [NotInstalled(finder) for finder in sys.meta_path]
    try:
        import backends.keras
    except ImportError as error:
        print("ERROR", type(error).__name__, error)
        raise SystemExit(0)
    import keras
    import numpy as np

    weight = keras.Variable(np.ones(3, dtype="float32"))
    backends.keras.ALTO(learning_rate=0.1).apply_gradients([(keras.ops.ones((3,)), weight)])
    print("IMPORTED", keras.backend.backend(), bool(np.all(keras.ops.convert_to_numpy(weight) < 1)))
    """
)


def import_without(hidden, backend, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update({"KERAS_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, hidden], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_without_tensorflow_and_no_backend_set_the_error_says_what_to_do(tmp_path):
    line = import_without("tensorflow", None, tmp_path)
    assert line.startswith("ERROR ModuleNotFoundError backends.keras: Keras imports its backend, tensorflow"), line
    assert "KERAS_BACKEND is not set" in line
    assert "No module named 'tensorflow'" in line
    assert 'pip install "valley-optim[keras-tf]"' in line
    assert "KERAS_BACKEND=torch or KERAS_BACKEND=jax" in line


@pytest.mark.parametrize("backend", ["jax"])  # torch works the same (tried), at twice the start-up time
def test_without_tensorflow_another_backend_imports_and_trains(backend, tmp_path):
    pytest.importorskip(backend)
    assert import_without("tensorflow", backend, tmp_path) == f"IMPORTED {backend} True"


def test_a_missing_torch_backend_names_its_extra(tmp_path):
    line = import_without("torch", "torch", tmp_path)
    assert line.startswith("ERROR ModuleNotFoundError backends.keras: Keras imports its backend, torch"), line
    assert "(KERAS_BACKEND=torch)" in line
    assert 'pip install "valley-optim[keras,torch]"' in line
    assert "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax" in line


def test_without_keras_the_error_names_the_extra(tmp_path):
    line = import_without("keras", "jax", tmp_path)
    assert line.startswith("ERROR ModuleNotFoundError backends.keras needs Keras 3"), line
    assert 'pip install "valley-optim[keras-tf]"' in line
