"""Run output in the UI (issue 26): the compose rehearsal's processes (code server, daemon,
webserver as separate processes on the PostgreSQL instance of deploy/postgres/dagster.yaml, with
DAGSTER_COMPUTE_LOGS_DIR one directory shared by the code server and the webserver, as compose
shares the `compute-logs` volume) launch an intake run; its captured output is then read through
the webserver's GraphQL API (what the UI's stdout/stderr view asks), also after the webserver is
restarted. Marker `topology` (`pytest -m topology`; about 1 minute)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from anubis_dagster_tests.factories import KROTON_OFFER, make_order
from anubis_dagster_tests.test_topology import _admin_url, _instance, _runs
from anubis_dagster_tests.topology import Topology, running_topology, wait_for

pytestmark = [pytest.mark.topology, pytest.mark.integration, pytest.mark.slow]

LOGS_FOR_RUN = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on LogsCapturedEvent { fileKey stepKeys } } }
  }
}"""
CAPTURED_LOGS = """
query Captured($logKey: [String!]!) {
  capturedLogs(logKey: $logKey) { stdout stderr }
}"""


def _captured(topology: Topology, run_id: str) -> tuple[list[str], str]:
    """The run's first captured-log key and its stdout + stderr, as the UI fetches them."""
    events = topology.graphql(LOGS_FOR_RUN, {"runId": run_id})["logsForRun"]["events"]
    keys = [e["fileKey"] for e in events if e["__typename"] == "LogsCapturedEvent"]
    assert keys, f"no LogsCapturedEvent for run {run_id}: {events}"
    log_key = [run_id, "compute_logs", keys[0]]
    logs: dict[str, Any] = topology.graphql(CAPTURED_LOGS, {"logKey": log_key})["capturedLogs"]
    return log_key, (logs["stdout"] or "") + (logs["stderr"] or "")


def test_run_output_is_visible_from_the_webserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_topology(tmp_path, _admin_url()) as topology:
        instance = _instance(topology, monkeypatch)
        since = datetime.now(UTC).timestamp()
        now = datetime.now(UTC)
        topology.load_orders(
            [make_order(i, offer=KROTON_OFFER, updated_at=now) for i in range(1, 4)]
        )

        def intake_succeeded() -> str | None:
            for record in _runs(instance, "intake_job", since=since):
                if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
                    return record.dagster_run.run_id
            return None

        run_id = wait_for(intake_succeeded, 180, "an intake run to succeed", 1)
        log_key, text = wait_for(
            lambda: (found := _captured(topology, run_id)) and "intake: " in found[1] and found,
            60,
            "the intake run's output through the webserver",
            1,
        )
        # the op's own report line, written by the run worker (a process of the code server)
        assert "intake: 3 orders" in text, text[-2000:]
        # in the shared directory, not in a process's own $DAGSTER_HOME
        written = Path(topology.env["DAGSTER_COMPUTE_LOGS_DIR"]) / run_id
        assert written.is_dir() and any(written.rglob("*.err")), list(written.rglob("*"))
        print(f"captured log {log_key}:\n{text[-1500:]}")

        # a restarted webserver (a new container, the same volume) still shows it
        topology.processes["webserver"].kill_group()
        topology.start_webserver()
        wait_for(topology.location_loaded, 120, "the restarted webserver", 1)
        assert _captured(topology, run_id)[1] == text
