#!/usr/bin/env bash
# The main job: `valley demo`, ALTO vs Lamb vs AdamW vs SGD at batch 4096 on MNIST-1D (sets up .venv on first use).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" demo,torch
exec "$root/.venv/bin/valley" demo "$@"
