"""The wheel installs right: built from this checkout, installed into a fresh venv, imported from there.

``pip wheel . --no-deps --no-build-isolation`` (hatchling from the test venv: no download) builds the wheel;
a fresh venv without pip gets it through ``pip --python``. Its dependencies (numpy, torch, jax ...) are not
installed again: a ``.pth`` line puts the test venv's site-packages on the fresh venv's path, after its own,
so ``valley_core`` and ``backends`` must come from the wheel (checked by their ``__file__``); a line of a
``.pth`` does not run the test venv's own ``.pth`` files, so the editable install of this checkout stays out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import valley_core

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(out)])
    (built,) = out.glob("*.whl")
    return built


def test_wheel_has_the_distribution_name_the_packages_and_py_typed(wheel):
    assert wheel.name.startswith(f"valley_optim-{valley_core.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("valley_core", "backends", "backends/jax", "backends/torch", "proofs_check", "valley_cli"):
        assert f"{package}/__init__.py" in names, package
    assert "valley_core/py.typed" in names and "backends/py.typed" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Name: valley-optim" in metadata
    for extra in ("torch", "keras", "keras-tf", "jax", "integrations"):
        assert f"Provides-Extra: {extra}" in metadata, extra
    requirements = [line.replace('"', "'") for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "Requires-Dist: tensorflow-cpu>=2.16; extra == 'keras-tf'" in requirements
    assert "Requires-Dist: keras>=3.3; extra == 'keras'" in requirements
    assert not any("tensorflow" in line and line.endswith("extra == 'keras'") for line in requirements)


def test_wheel_imports_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = (
        "import json, importlib.metadata, valley_core, backends.torch, backends.jax, backends.numpy;"
        "print(json.dumps({'core': valley_core.__file__, 'jax': backends.jax.__file__,"
        " 'version': importlib.metadata.version('valley-optim')}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = json.loads(_run([str(python), "-c", script], cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert found["version"] == valley_core.__version__
    for key in ("core", "jax"):
        assert Path(found[key]).is_relative_to(site), found
    console = venv / ("Scripts/valley.exe" if os.name == "nt" else "bin/valley")
    assert "demo" in _run([str(console), "--help"], cwd=tmp_path, env=env)
