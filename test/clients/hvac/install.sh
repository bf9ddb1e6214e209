#!/usr/bin/env bash
# The official Python Vault client `hvac` (PyPI, pinned in requirements.txt) in a private venv, for
# test/vault/hvac.test.ts. Idempotent: with the same pins it only checks the venv (< 1 s).
#
#   bash test/clients/hvac/install.sh      -> <repo>/.cache/hvac/venv (KMSGW_CACHE_DIR replaces <repo>/.cache)
#
# Needs python3 >= 3.9 with the venv module (Debian: python3-venv). Fails with a message, never skips.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
DIR="${KMSGW_CACHE_DIR:-$REPO/.cache}/hvac"
VENV="$DIR/venv"
MARKER="$VENV/.kmsgw-pins"
die() { echo "test/clients/hvac/install.sh: ERROR: $*" >&2; exit 1; }

mkdir -p "$DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.install.lock"
  flock 9
fi
if [ -x "$VENV/bin/python" ] && [ -f "$MARKER" ] && cmp -s "$MARKER" "$HERE/requirements.txt" &&
  "$VENV/bin/python" -c 'import hvac' >/dev/null 2>&1; then
  exit 0
fi
PY="${KMSGW_HVAC_PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "no $PY on PATH (set KMSGW_HVAC_PYTHON)"
rm -rf "$VENV"
"$PY" -m venv "$VENV" || die "$PY -m venv failed (Debian: apt-get install python3-venv)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$HERE/requirements.txt" ||
  die "pip install of the pinned hvac failed (is PyPI reachable?)"
"$VENV/bin/python" -c 'import hvac' || die "hvac does not import in $VENV"
cp "$HERE/requirements.txt" "$MARKER"
echo "test/clients/hvac/install.sh: hvac $("$VENV/bin/python" -c 'import hvac, importlib.metadata as m; print(m.version("hvac"))') in $VENV"
