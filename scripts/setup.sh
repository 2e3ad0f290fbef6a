#!/usr/bin/env bash
# Create .venv and install Reelgraph with its dev tools. Idempotent: re-running with an unchanged
# pyproject.toml does nothing. torch is pinned first so pip takes the local CPU wheel on machines
# that ship one, and the default (CUDA) wheel from PyPI on a GPU workstation.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$VENV/.reelgraph-installed"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install --quiet "torch==2.13.0"
  "$VENV/bin/pip" install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
