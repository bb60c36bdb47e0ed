#!/usr/bin/env bash
# Installs what tests/test_browser.py needs: Debian's chromium + chromium-driver and the selenium package.
# Idempotent: installs only what is missing. Never downloads a browser from anywhere but apt.
# Usage: scripts/ci_browser_deps.sh [PYTHON]   (default: .venv/bin/python if present, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${1:-${PYTHON:-}}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      echo "ci_browser_deps: chromium/chromedriver missing and not root (no sudo): cannot install" >&2; exit 1
    fi
  fi
  echo "ci_browser_deps: installing chromium and chromium-driver with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
fi

if ! "$PYTHON" -c "import selenium" >/dev/null 2>&1; then
  echo "ci_browser_deps: installing selenium into $PYTHON"
  "$PYTHON" -m pip install --quiet "selenium>=4.20"
fi

echo "ci_browser_deps: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1);" \
  "selenium $("$PYTHON" -c 'import selenium; print(selenium.__version__)')"
