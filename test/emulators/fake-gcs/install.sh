#!/usr/bin/env bash
# Install fake-gcs-server (the Cloud Storage emulator the GCS key-store tests use) with `go install`.
# Idempotent: when the pinned version is already installed it only checks that (< 0.1 s) and exits.
#
#   bash test/emulators/fake-gcs/install.sh
#
# Installs <repo>/.cache/bin/fake-gcs-server (KMSGW_CACHE_DIR replaces <repo>/.cache). Needs Go and the
# Go module proxy (or a warm module cache) on a cold install (~3 min on 2 cores; nearly all of it compiling).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
BIN_DIR="${KMSGW_CACHE_DIR:-$REPO/.cache}/bin"
BIN="$BIN_DIR/fake-gcs-server"
MODULE=github.com/fsouza/fake-gcs-server
VERSION=v1.56.1
# Written after a successful install: the binary's version, readable without Go.
MARKER="$BIN_DIR/.fake-gcs-server.version"
say() { echo "fake-gcs/install.sh: $*"; }
die() { echo "fake-gcs/install.sh: ERROR: $*" >&2; exit 1; }

installed() { [ -x "$BIN" ] && [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$MODULE@$VERSION" ]; }

if installed; then
  say "fake-gcs-server $VERSION already installed ($BIN)"
  exit 0
fi

mkdir -p "$BIN_DIR"
# Serialise concurrent installs (a CI step and a globalSetup racing) where flock exists.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$BIN_DIR/.fake-gcs-server.lock"
  flock 9
  if installed; then
    say "fake-gcs-server $VERSION already installed ($BIN)"
    exit 0
  fi
fi

command -v go >/dev/null 2>&1 ||
  die "Go is not on PATH; it is needed once to build fake-gcs-server $VERSION (v1.56.1 needs Go >= 1.26, or an older Go with GOTOOLCHAIN=auto, which fetches it; https://go.dev/dl/)"

# Build into a scratch GOBIN and move the binary into place, so a half-written binary is never run.
TMP_BIN="$(mktemp -d "$BIN_DIR/.fake-gcs-server.XXXXXX")"
trap 'rm -rf "$TMP_BIN"' EXIT
say "go install $MODULE@$VERSION ($(go version | cut -d' ' -f3); cold: ~3 min)"
t0=$SECONDS
GOBIN="$TMP_BIN" GOFLAGS="${GOFLAGS:-} -trimpath" go install "$MODULE@$VERSION" ||
  die "go install $MODULE@$VERSION failed (see go's output above: Go older than 1.26 with GOTOOLCHAIN=local? module proxy unreachable? GOPROXY=$(go env GOPROXY))"
[ -x "$TMP_BIN/fake-gcs-server" ] || die "go install left no fake-gcs-server in $TMP_BIN"
rm -f "$MARKER"
mv -f "$TMP_BIN/fake-gcs-server" "$BIN"
echo "$MODULE@$VERSION" >"$MARKER"
say "installed fake-gcs-server $VERSION in $BIN ($((SECONDS - t0)) s)"
