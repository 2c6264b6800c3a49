"""TensorFlow-backend checks that need their own process: float64 parity (eager and XLA)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tests.keras._harness import Checks  # noqa: E402
from tests.keras._parity import add_parity_checks  # noqa: E402

if __name__ == "__main__":
    checks = Checks()
    add_parity_checks(checks, modes=("eager", "jit"))
    checks.emit()
