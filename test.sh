#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
