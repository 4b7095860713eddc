#!/usr/bin/env bash
# The IES sandboxes and the webhook sink, in the background.
#   scripts/sandboxes.sh start    fresh ones (any running are stopped first: their state is lost)
#   scripts/sandboxes.sh ensure   reuse those already running, start the missing ones
#   scripts/sandboxes.sh stop     stop them (`make stop-sandboxes`)
#   scripts/sandboxes.sh status   which are running
# A sandbox keeps its state in memory (consents, registrations, statuses): `make demo` starts
# fresh ones and leaves them running, so that `make ui` (`ensure`) continues the same story.
# The sandboxes are not named here: `anubis-sandbox list` gives, for every integration type in
# the integrations file that has a sandbox, its port and the flags the demo starts it with.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN="${ANUBIS_HOME:-$PWD/.anubis}/run"
SINK_PORT=8790
mkdir -p "$RUN"

# name: running when its pid file names a live process
running() {
  local pidfile="$RUN/$1.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_port() {
  for _ in $(seq 1 50); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
}

# name port command…: start it in the background (nohup: it outlives the shell that started it)
launch() {
  local name=$1 port=$2
  shift 2
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  wait_port "$port"
}

ensure() {
  local started=() reused=()
  while read -r kind port flags; do
    if running "$kind"; then
      reused+=("$kind :$port")
    else
      # shellcheck disable=SC2086  # the flags are words
      launch "$kind" "$port" "$BIN/anubis-sandbox" serve "$kind" --port "$port" $flags
      started+=("$kind :$port")
    fi
  done < <("$BIN/anubis-sandbox" list)
  if running sink; then
    reused+=("webhook sink :$SINK_PORT")
  else
    launch sink "$SINK_PORT" "$BIN/anubis-sandbox" webhook-sink --port "$SINK_PORT"
    started+=("webhook sink :$SINK_PORT")
  fi
  [ ${#started[@]} -eq 0 ] || echo "sandboxes started: ${started[*]} (logs in $RUN)"
  [ ${#reused[@]} -eq 0 ] || echo "sandboxes already running, kept with their state: ${reused[*]}"
}

start() {
  stop >/dev/null 2>&1 || true
  ensure
}

stop() {
  local pids=()
  for pidfile in "$RUN"/*.pid; do
    [ -f "$pidfile" ] || continue
    pids+=("$(cat "$pidfile")")
    kill "${pids[-1]}" 2>/dev/null || true
    rm -f "$pidfile"
  done
  # gone before returning: `start` binds the same ports next
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
}

status() {
  for pidfile in "$RUN"/*.pid; do
    [ -f "$pidfile" ] || continue
    local name
    name=$(basename "$pidfile" .pid)
    if running "$name"; then echo "$name: running"; else echo "$name: stopped"; fi
  done
}

"${1:-start}"
