#!/usr/bin/env bash
# The whole test suite (sets up .venv with every test dependency on first use).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" dev,torch,keras,demo,cupy
cd "$root"
exec "$root/.venv/bin/python" -m pytest --timeout=900 "$@"
