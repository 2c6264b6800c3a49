"""The fused kernels' on-disk cache: a corrupt cached library is rebuilt, with a warning naming it.

Regression (issue 26, item 4): a truncated ``valley-kernels-*.so`` made the OpenMP build fail to load; the error
was swallowed and a single-threaded non-OpenMP build was used from then on, without a word.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# One fused ALTO step in a fresh process; prints the loaded libraries' (path, openmp) and the warnings.
_STEP = """
import json, warnings
import torch
from backends.kernels import cpu
from backends.torch import ALTO
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    p = torch.nn.Parameter(torch.ones(64))
    opt = ALTO([p], lr=1e-2, implementation="fused")
    p.grad = torch.full_like(p, 0.5)
    opt.step()
libraries = [(str(lib.path), lib.openmp) for lib in cpu._loaded.values() if isinstance(lib, cpu.Library)]
print(json.dumps({"libraries": libraries, "warnings": [str(w.message) for w in caught]}))
"""


def _step(cache: Path) -> dict:
    env = {**os.environ, "VALLEY_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _STEP], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_truncated_cached_library_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    first = _step(tmp_path)
    if not first["libraries"] or not all(openmp for _, openmp in first["libraries"]):
        pytest.skip(f"this machine builds no OpenMP kernels: {first}")
    built = sorted(tmp_path.glob("valley-kernels-*.so"))
    assert built
    for library in built:
        library.write_bytes(library.read_bytes()[:100])  # truncated: not loadable

    second = _step(tmp_path)

    assert second["libraries"] == first["libraries"]  # the same OpenMP build, not the one-thread fallback
    assert any("cannot be loaded" in w and str(built[0]) in w for w in second["warnings"]), second["warnings"]
    assert all(path.stat().st_size > 100 for path in built)  # rebuilt in place
    assert sorted(tmp_path.glob("valley-kernels-*.so")) == built  # no non-OpenMP build beside it
