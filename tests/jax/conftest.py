"""JAX tests run in float64 (``jax_enable_x64``) so that parity with the NumPy core is checked to round-off.

Tests that need float32 create float32 arrays explicitly. Keras' JAX backend runs in its own subprocess.
"""

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)
