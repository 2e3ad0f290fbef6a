#!/usr/bin/env bash
# Set up (first time only) and open the Reelgraph studio with the default workflow.
#   ./run.sh              the studio (needs a display; QT_QPA_PLATFORM=offscreen for none). It first
#                         checks Qt's system libraries (app/qt_preflight.py): installs them as
#                         root, else prints the one sudo apt-get line to run
#   ./run.sh --headless   run workflows/text_to_video.json headless into ./output
#   ./run.sh run WF ...   any main.py command
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if [ "${1:-}" = "--headless" ]; then
  shift
  exec .venv/bin/python main.py run workflows/text_to_video.json --out output "$@"
fi
exec .venv/bin/python main.py "$@"
