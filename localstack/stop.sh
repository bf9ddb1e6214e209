#!/usr/bin/env bash
# Stop the LocalStack that start.sh started for a port / state dir: SIGTERM, then SIGKILL after a grace.
#
#   bash localstack/stop.sh [port] [state-dir]
#
# Same defaults as start.sh. Env: KMSGW_LOCALSTACK_STOP_GRACE (seconds, default 10).
# Only the pid in <state-dir>/localstack.pid is signalled, and only while it is a LocalStack runtime.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"
PIDFILE="$STATE/localstack.pid"
GRACE="${KMSGW_LOCALSTACK_STOP_GRACE:-10}"
say() { echo "localstack/stop.sh: $*"; }
# Alive = exists and is not a zombie (a zombie is dead; its parent, maybe init, has not reaped it yet).
alive() { local st; st="$(ps -p "$1" -o stat= 2>/dev/null | tr -d " ")" || return 1; [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }

[ -f "$PIDFILE" ] || { say "no pid file $PIDFILE; nothing to stop"; exit 0; }
PID="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -z "$PID" ] || ! alive "$PID"; then
  say "pid ${PID:-?} not running"; rm -f "$PIDFILE"; exit 0
fi
if ! ps -p "$PID" -o args= 2>/dev/null | grep -q 'localstack\.runtime\.main'; then
  say "pid $PID is not a LocalStack runtime (stale pid file); not signalling it"; rm -f "$PIDFILE"; exit 0
fi

start=$(date +%s%N)
kill -TERM "$PID" 2>/dev/null
deadline=$(( $(date +%s) + GRACE ))
while alive "$PID"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "pid $PID still alive after ${GRACE} s; SIGKILL"
    kill -KILL "$PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do alive "$PID" || break; sleep 0.1; done
    break
  fi
  sleep 0.05
done
rm -f "$PIDFILE"
say "stopped pid $PID in $(( ($(date +%s%N) - start) / 1000000 )) ms"
