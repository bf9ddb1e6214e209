#!/usr/bin/env bash
# Start LocalStack (KMS and S3) as a background host process and wait until both answer.
#
#   bash localstack/start.sh [port] [state-dir]
#
# port       default $KMSGW_LOCALSTACK_PORT or 4566
# state-dir  default <cache>/localstack/run-<port>; holds localstack.pid, localstack.log, fs/, cert/
# Env: KMSGW_CACHE_DIR (see install.sh), KMSGW_LOCALSTACK_START_TIMEOUT (seconds, default 90).
#
# Exit 0 when KMS and S3 are ready (ListKeys and ListBuckets answered), also when this state dir's
# LocalStack already runs healthy on the port, or when something else already serves LocalStack KMS
# and S3 there (left alone).
# Otherwise exit non-zero with the last 40 log lines on stderr. Run install.sh first.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"
PY="$VENV/bin/python"
TIMEOUT="${KMSGW_LOCALSTACK_START_TIMEOUT:-90}"
PIDFILE="$STATE/localstack.pid"
LOG="$STATE/localstack.log"
say() { echo "localstack/start.sh: $*"; }
fail() {
  echo "localstack/start.sh: ERROR: $*" >&2
  if [ -s "$LOG" ]; then echo "--- last 40 lines of $LOG ---" >&2; tail -n 40 "$LOG" >&2; fi
  exit 1
}

case "$PORT" in ''|*[!0-9]*) fail "port must be a number, got '$PORT'";; esac
[ -x "$PY" ] || fail "no LocalStack venv at $VENV; run: bash localstack/install.sh"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
PIDFILE="$STATE/localstack.pid"
LOG="$STATE/localstack.log"

# A pid counts as ours only while it is alive AND still a LocalStack runtime (guards against pid reuse).
is_ours() {
  local st; st="$(ps -p "$1" -o stat= 2>/dev/null | tr -d " ")" || return 1
  [ -n "$st" ] && [ "${st#Z}" = "$st" ] && ps -p "$1" -o args= 2>/dev/null | grep -q 'localstack\.runtime\.main'
}

# probe: 0 = KMS and S3 healthy, 2 = port answers but not LocalStack-with-KMS-and-S3, 3 = nothing listening,
# 4 = a LocalStack without one of them (SERVICES lacks it, e.g. started by an older start.sh with kms only).
NEEDED="kms s3"  # also SERVICES below
probe() {
  "$PY" - "$PORT" $NEEDED <<'PY'
import json, socket, sys, urllib.request
port, needed = int(sys.argv[1]), sys.argv[2:]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_localstack/health", timeout=2) as r:
        services = json.load(r).get("services", {})
    if all(services.get(s) in ("available", "running") for s in needed):
        sys.exit(0)
    sys.exit(4 if any(services.get(s) == "disabled" for s in needed) else 2)
except Exception:
    pass
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", port)); sys.exit(2)
except OSError:
    sys.exit(3)
PY
}

# Poll health until ready, the pid dies, or the deadline; then warm KMS and S3 (the first request of a
# service loads its provider) with one ListKeys and one ListBuckets. Prints "health <s>, KMS warm <s>, S3 warm <s>".
wait_ready() {
  "$PY" - "$PORT" "$1" "$TIMEOUT" $NEEDED <<'PY'
import json, os, sys, time, urllib.request
port, pid, timeout, needed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
t0 = time.monotonic(); deadline = t0 + timeout
def alive():  # a zombie counts as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_localstack/health", timeout=2) as r:
            services = json.load(r).get("services", {})
            if all(services.get(s) in ("available", "running") for s in needed):
                break
            missing = [s for s in needed if services.get(s) == "disabled"]
            if missing:  # not in its SERVICES: waiting would not help
                print(f"LocalStack (pid {pid}) runs without {', '.join(missing)}", file=sys.stderr); sys.exit(1)
    except Exception:
        pass
    if not alive():
        print(f"LocalStack (pid {pid}) exited during start-up", file=sys.stderr); sys.exit(1)
    if time.monotonic() > deadline:
        print(f"LocalStack not healthy after {timeout:g} s", file=sys.stderr); sys.exit(1)
    time.sleep(0.1)
t1 = time.monotonic()
import boto3
from botocore.config import Config
def client(service):
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 3}, connect_timeout=5,
                                      read_timeout=max(5, deadline - time.monotonic())))
try:
    client("kms").list_keys()
except Exception as e:
    print(f"KMS warm-up (ListKeys) failed: {e}", file=sys.stderr); sys.exit(1)
t2 = time.monotonic()
try:
    client("s3").list_buckets()
except Exception as e:
    print(f"S3 warm-up (ListBuckets) failed: {e}", file=sys.stderr); sys.exit(1)
print(f"health {t1 - t0:.1f} s, KMS warm {t2 - t0:.1f} s, S3 warm {time.monotonic() - t0:.1f} s")
PY
}

if [ -f "$PIDFILE" ]; then
  OLD="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$OLD" ] && is_ours "$OLD"; then
    # Ours and alive: healthy -> done; still starting -> wait for it like a fresh start.
    set +e; probe; rc=$?; set -e
    if [ $rc -eq 0 ]; then say "already running on 127.0.0.1:$PORT (pid $OLD)"; exit 0; fi
    [ $rc -eq 4 ] && fail "LocalStack pid $OLD on port $PORT runs without S3 (started by an older start.sh?); stop it: bash localstack/stop.sh $PORT $STATE"
    say "pid $OLD is alive but not healthy yet; waiting up to ${TIMEOUT} s"
    timing="$(wait_ready "$OLD")" || fail "LocalStack pid $OLD on port $PORT did not become ready"
    say "ready on http://127.0.0.1:$PORT (pid $OLD, $timing)"; exit 0
  fi
  rm -f "$PIDFILE"
fi

set +e; probe; rc=$?; set -e
case $rc in
  0) say "LocalStack KMS and S3 already serve 127.0.0.1:$PORT (not started from $STATE; leaving it alone)"; exit 0;;
  2) fail "port $PORT is in use by something that is not LocalStack with KMS and S3";;
  4) fail "port $PORT is in use by a LocalStack without S3 (SERVICES=kms only, started by an older start.sh?); stop it";;
esac

# Per-instance certificate copy and prebuilt service catalog (see install.sh).
[ -s "$LS_DIR/cert/server.pem" ] || fail "no certificate at $LS_DIR/cert/server.pem; run: bash localstack/install.sh"
mkdir -p "$STATE/cert" "$STATE/fs/usr/lib/localstack"
cp "$LS_DIR/cert/server.pem" "$STATE/cert/server.pem"
for f in "$LS_DIR"/catalog/usr/lib/localstack/service-catalog-*.dill; do
  [ -e "$f" ] && [ ! -e "$STATE/fs/usr/lib/localstack/$(basename "$f")" ] && cp "$f" "$STATE/fs/usr/lib/localstack/"
done

export SERVICES="${NEEDED// /,}"            # kms,s3; s3 is for the S3 key store (keystore.url s3://...)
export DNS_ADDRESS=0                       # no DNS server (it would want port 53)
export SKIP_SSL_CERT_DOWNLOAD=1            # no certificate download from LocalStack's CDN
export CUSTOM_SSL_CERT_PATH="$STATE/cert/server.pem"
export DISABLE_EVENTS=1                    # no analytics
export OVERRIDE_IN_DOCKER=0                # a /.dockerenv must not make it use /var/lib/localstack and 0.0.0.0
export FILESYSTEM_ROOT="$STATE/fs"         # host-mode root for cache, tmp, logs
export GATEWAY_LISTEN="127.0.0.1:$PORT"
# twisted (LocalStack's default server) ignores the IPv4 host of GATEWAY_LISTEN and binds 0.0.0.0:$PORT.
# hypercorn binds 127.0.0.1 properly but hangs on SIGTERM about every other stop -> not used.
export GATEWAY_SERVER=twisted
export PERSISTENCE=0
# Unimplemented KMS operations make LocalStack fetch a catalog from api.localstack.cloud without a
# timeout; a closed local port makes that fail at once. Also keeps it off the network in general.
export OUTBOUND_HTTP_PROXY=http://127.0.0.1:9
export OUTBOUND_HTTPS_PROXY=http://127.0.0.1:9
export LOCALSTACK_AUTH_TOKEN= LOCALSTACK_API_KEY=
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN

mkdir -p "$FILESYSTEM_ROOT"
echo "=== localstack/start.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) port $PORT ===" >>"$LOG"
# Own session (setsid) so terminal signals aimed at the caller do not hit it; all fds redirected so a
# caller that captures our output is not held open by the server.
if command -v setsid >/dev/null 2>&1; then
  nohup setsid "$PY" -m localstack.runtime.main >>"$LOG" 2>&1 </dev/null &
else
  nohup "$PY" -m localstack.runtime.main >>"$LOG" 2>&1 </dev/null &
fi
PID=$!
disown "$PID" 2>/dev/null || true   # no "Killed" job notices from this shell
echo "$PID" >"$PIDFILE"
say "starting LocalStack on 127.0.0.1:$PORT (pid $PID, log $LOG)"
if ! timing="$(wait_ready "$PID" 2>&1)"; then
  # Do not leave a half-started server behind: the caller treats a failed start as "nothing to stop".
  bash "$HERE/stop.sh" "$PORT" "$STATE" >/dev/null 2>&1 || true
  fail "$timing"
fi
say "ready on http://127.0.0.1:$PORT (pid $PID, $timing)"
