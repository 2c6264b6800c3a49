#!/usr/bin/env bash
# The main job: `valley demo`, the study's decisive comparison reduced: ALTO vs Lamb at full batch on MNIST-1D
# (5 paired seeds, the paired difference with its interval, the generalisation-gap plot; sets up .venv on first use).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" demo,torch
exec "$root/.venv/bin/valley" demo "$@"
