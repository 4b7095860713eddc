#!/usr/bin/env bash
# The demo: fresh embedded data (SQLite), the IES sandboxes, generated paid orders from the four
# marketplaces, then Anubis end to end: intake, Kroton course sync + registration + checks,
# Estácio consent + registration, alerts to a local webhook sink.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export ANUBIS_HOME="${ANUBIS_HOME:-$PWD/.anubis}"
export DAGSTER_HOME="${DAGSTER_HOME:-$ANUBIS_HOME/dagster_home}"
mkdir -p "$ANUBIS_HOME/demo" "$DAGSTER_HOME"
cp -n dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null || true
# shellcheck source=scripts/sandbox.env
source scripts/sandbox.env

# fresh sandboxes (the demo's students are new to them), left running for `make ui`: they keep
# the consents and registrations this demo gives them (`make stop-sandboxes` stops them)
scripts/sandboxes.sh start

# the demo starts from scratch each time (its Dagster runs are kept, for the UI)
rm -f "$ANUBIS_HOME"/anubis.db* "$ANUBIS_HOME"/orders.db* "$ANUBIS_HOME"/alerts.log

echo "== demo orders: 60 paid orders from the four marketplaces, some invalid on purpose"
# paid in the last two hours (60 orders are at most two hours apart), so that the health
# checks and the paid → registered figures read like a real day, not like a backlog of weeks
$BIN/anubis-sandbox orders --count 60 --seed 42 --out "$ANUBIS_HOME/demo/orders.jsonl" \
  --start-time "$(date -u -d '2 hours ago' +%Y-%m-%dT%H:%M:%S+00:00)"
$BIN/anubis orders load "$ANUBIS_HOME/demo/orders.jsonl"
$BIN/anubis names import

echo "== Anubis: intake, then due work, until the sandboxes settle (about a minute)"
$BIN/anubis run --settle-seconds 0 --watch 75

echo
echo "== what became of the orders (anubis status --by-origin)"
$BIN/anubis status --by-origin
echo
echo "== the daily digest, sent now (anubis digest; the schedule sends it at ANUBIS_DIGEST_HOUR)"
$BIN/anubis digest
echo
echo "== alerts received by the webhook sink ($ANUBIS_HOME/alerts.log)"
grep -c -- '^---$' "$ANUBIS_HOME/alerts.log" 2>/dev/null | sed 's/$/ messages; the last one:/' || true
awk 'BEGIN{RS="---\n"} {last=$0} END{printf "%s", last}' "$ANUBIS_HOME/alerts.log" 2>/dev/null || true
echo
echo "The sandboxes keep running, with what this demo gave them (make stop-sandboxes stops them)."
echo "Open the Dagster UI on the same data (the same sandboxes) with: make ui"
