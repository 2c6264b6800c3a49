#!/usr/bin/env bash
# Create or reuse the local virtual environment .venv and install the project with the given extras.
# Usage: scripts/bootstrap.sh EXTRAS      e.g. scripts/bootstrap.sh demo,torch
# Re-installs only when pyproject.toml / constraints.txt / the extras changed (stamp file).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-demo}"
venv="$root/.venv"
python_bin="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python_bin" -m venv "$venv"
fi
stamp="$venv/.valley-installed-$(echo "$extras" | tr ',' '-')"
digest="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "valley: installing the project with extras [$extras] into .venv (first run only)" >&2
    # Quiet pip; drop its notes about index locations a machine-wide pip.conf names but that do not exist.
    { "$venv/bin/python" -m pip install --quiet --upgrade pip 2>&1 || exit 1; } | { grep -v "^WARNING: Location" || true; } >&2
    # This project was installed as "valley" before it became "valley-optim" (the PyPI name valley belongs
    # to an unrelated library); remove the old name from this project's own .venv so only one owns `valley`.
    "$venv/bin/python" -m pip uninstall --quiet --yes valley >/dev/null 2>&1 || true
    { "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[$extras]" 2>&1 || exit 1; } \
        | { grep -v "^WARNING: Location" || true; } >&2
    echo "$digest" > "$stamp"
fi
