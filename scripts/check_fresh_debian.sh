#!/usr/bin/env bash
# Fresh-container check of ./run.sh (issue 18): on a Debian/Ubuntu image WITHOUT Qt's xcb
# libraries, setup must report or install them and the studio must open.
#
#   docker run --rm -v "$PWD":/src -w /src debian:12 bash scripts/check_fresh_debian.sh
#
# It runs as root (as a container does), so the preflight may install with apt-get. Steps:
#   1. install only python3 + venv + xvfb (NOT libxcb-cursor0 / -icccm4 / -keysyms1 ...);
#   2. run the Qt preflight's check (it never installs): it must name the missing packages in
#      one line; then ./run.sh, as root, installs them;
#   3. open the studio under Xvfb for a few seconds with the xcb platform and check it drew a
#      window (xwininfo), with no "Could not load the Qt platform plugin" message.
# Exit status 0 = every step passed. Prints one "PASS"/"FAIL" line per step.
set -u
cd "$(dirname "$0")/.."
fail=0
step() { if "$@"; then echo "PASS: $STEP"; else echo "FAIL: $STEP"; fail=1; fi; }

export DEBIAN_FRONTEND=noninteractive
STEP="base packages (python3, venv, xvfb, x11-utils; no xcb extras)"
step bash -c 'apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip xvfb x11-utils >/dev/null'

STEP="the xcb libraries are really missing at first"
step bash -c '! dpkg -s libxcb-cursor0 >/dev/null 2>&1'

STEP="scripts/setup.sh (what ./run.sh runs first) installs the Python side"
step bash scripts/setup.sh

STEP="the preflight names what is missing in one line when it may not install"
step bash -c 'out=$(QT_QPA_PLATFORM=xcb .venv/bin/python -c "
from app import qt_preflight; r = qt_preflight.check(); print(r.message); raise SystemExit(0 if not r.ok else 1)"); echo "$out"; echo "$out" | grep -q "libxcb-cursor0" && [ "$(echo "$out" | wc -l)" -eq 1 ]'

STEP="the studio opens under Xvfb (the preflight installs what it lacks as root)"
step bash -c 'Xvfb :99 -screen 0 1600x1000x24 >/dev/null 2>&1 & xpid=$!; sleep 2;
  DISPLAY=:99 timeout 60 ./run.sh >/tmp/studio.log 2>&1 & spid=$!; sleep 40;
  DISPLAY=:99 xwininfo -root -tree | grep -q "Reelgraph"; ok=$?;
  kill $spid $xpid 2>/dev/null; cat /tmp/studio.log | tail -5;
  ! grep -q "Could not load the Qt platform plugin" /tmp/studio.log && [ $ok -eq 0 ]'

STEP="the xcb libraries are installed now"
step bash -c 'dpkg -s libxcb-cursor0 >/dev/null 2>&1'
exit $fail
