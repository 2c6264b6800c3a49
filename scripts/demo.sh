#!/usr/bin/env bash
# The main job: `valley demo` on scikit-learn's bundled digits (sets up .venv on first use).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" demo,torch
exec "$root/.venv/bin/valley" demo "$@"
