#!/usr/bin/env bash
# Start (or stop) the IES sandboxes and the webhook sink in the background.
#   scripts/sandboxes.sh start | stop
# The sandboxes are not named here: `anubis-sandbox list` gives, for every integration type in
# the integrations file that has a sandbox, its port and the flags the demo starts it with.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN="${ANUBIS_HOME:-$PWD/.anubis}/run"
mkdir -p "$RUN"

start() {
  stop >/dev/null 2>&1 || true
  local ports=(8790) summary=()
  while read -r kind port flags; do
    # shellcheck disable=SC2086  # the flags are words
    "$BIN/anubis-sandbox" serve "$kind" --port "$port" $flags >"$RUN/$kind.log" 2>&1 &
    echo $! >"$RUN/$kind.pid"
    ports+=("$port")
    summary+=("$kind :$port")
  done < <("$BIN/anubis-sandbox" list)
  "$BIN/anubis-sandbox" webhook-sink --port 8790 >"$RUN/alerts.out" 2>&1 &
  echo $! >"$RUN/sink.pid"
  for port in "${ports[@]}"; do
    for _ in $(seq 1 50); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.2
    done
  done
  echo "sandboxes: ${summary[*]}, webhook sink :8790 (logs in $RUN)"
}

stop() {
  for pidfile in "$RUN"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

"${1:-start}"
