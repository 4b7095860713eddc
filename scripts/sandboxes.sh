#!/usr/bin/env bash
# Start (or stop) the Kroton and Estácio sandboxes and the webhook sink in the background.
#   scripts/sandboxes.sh start | stop
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN="${ANUBIS_HOME:-$PWD/.anubis}/run"
mkdir -p "$RUN"

start() {
  stop >/dev/null 2>&1 || true
  "$BIN/anubis" sandbox kroton --port 8701 --processing-delay 1 --classification-step 3 \
    --rate-limit 600/60 >"$RUN/kroton.log" 2>&1 &
  echo $! >"$RUN/kroton.pid"
  "$BIN/anubis" sandbox estacio --port 8702 --rate-limit 600/60 >"$RUN/estacio.log" 2>&1 &
  echo $! >"$RUN/estacio.pid"
  "$BIN/anubis" webhook-sink --port 8790 >"$RUN/alerts.out" 2>&1 &
  echo $! >"$RUN/sink.pid"
  for port in 8701 8702 8790; do
    for _ in $(seq 1 50); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.2
    done
  done
  echo "sandboxes: Kroton :8701, Estácio+OneTrust+CEP :8702, webhook sink :8790 (logs in $RUN)"
}

stop() {
  for name in kroton estacio sink; do
    if [ -f "$RUN/$name.pid" ]; then
      kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      rm -f "$RUN/$name.pid"
    fi
  done
}

"${1:-start}"
