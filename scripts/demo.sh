#!/usr/bin/env bash
# The demo: fresh embedded data, generated orders from the four marketplaces, one full pass.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export ANUBIS_HOME="${ANUBIS_HOME:-$PWD/.anubis}"
export DAGSTER_HOME="${DAGSTER_HOME:-$ANUBIS_HOME/dagster_home}"
mkdir -p "$ANUBIS_HOME/demo" "$DAGSTER_HOME"
cp -n dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null || true
# the demo starts from scratch each time (its Dagster runs are kept, for the UI)
rm -f "$ANUBIS_HOME"/anubis.db* "$ANUBIS_HOME"/orders.db*

echo "== generating demo orders"
$BIN/anubis orders generate --count 60 --seed 42 --out "$ANUBIS_HOME/demo/orders.jsonl"
$BIN/anubis orders load "$ANUBIS_HOME/demo/orders.jsonl"

echo "== one full pass (intake, then due work)"
$BIN/anubis run --settle-seconds 0

echo "== what became of the orders"
$BIN/anubis status --by-origin
echo
echo "Open the Dagster UI on the same data with: make ui"
