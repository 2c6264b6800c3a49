"""valley_core imports no framework."""

import subprocess
import sys


def test_importing_valley_core_imports_no_framework():
    code = (
        "import sys, valley_core, valley_core.transforms, backends, backends.numpy; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tensorflow', 'keras', 'cupy', 'jax'}); "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"valley_core imported: {result.stdout.strip()}"
