#!/usr/bin/env bash
# The whole test suite (sets up .venv with every test dependency on first use).
# Usage: scripts/test.sh [PYTEST ARGS...]     scripts/test.sh --setup-only   (only set up .venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# keras-tf: Keras with TensorFlow (its default backend); jax: the optax adapter and Keras' JAX backend;
# integrations: transformers, Lightning and accelerate for tests/integrations.
"$root/scripts/bootstrap.sh" dev,torch,keras-tf,jax,demo,cupy,integrations
if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi
cd "$root"
exec "$root/.venv/bin/python" -m pytest --timeout=900 "$@"
