# Sourced by install.sh, start.sh and stop.sh: where LocalStack's venv and state live.
# Env: KMSGW_CACHE_DIR replaces <repo>/.cache; KMSGW_LOCALSTACK_PORT (default 4566).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
LS_DIR="${KMSGW_CACHE_DIR:-$REPO/.cache}/localstack"
VENV="$LS_DIR/venv"
PORT="${1:-${KMSGW_LOCALSTACK_PORT:-4566}}"
STATE="${2:-$LS_DIR/run-$PORT}"
