"""Pausing one integration (the `pause_integration` job, `anubis pause`/`resume`) and dry runs
that change nothing, against the Kroton sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

from anubis_dagster.cli import main
from anubis_dagster.db.models import Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink

REASON = "Kroton asked us to stop until 14h"


@pytest.fixture
def harness(kroton: KrotonSandbox, anubis_env: str) -> Harness:
    return Harness(anubis_env)


def set_pause(harness: Harness, key: str, paused: bool) -> dg.ExecuteInProcessResult:
    config = {"paused": paused, "reason": REASON if paused else ""}
    return harness.defs.resolve_job_def("pause_integration").execute_in_process(
        partition_key=key,
        instance=harness.instance,
        run_config=partition_run_config("set_pause", key, config),
    )


def pause_alerts(sink: WebhookSink) -> list[str]:
    return [t for t in sink.received if "sending paused" in t or "sending resumed" in t]


def test_a_paused_integration_gets_no_due_runs_and_resuming_sends_what_waited(
    harness: Harness, kroton: KrotonSandbox, sink: WebhookSink
) -> None:
    sensor = harness.defs.resolve_sensor_def("due_work_sensor")
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> Any:
        context = dg.build_sensor_context(instance=instance, resources={"app_db": AppDatabase()})
        return sensor(context)

    harness.ingest([make_order(1), make_order(2, offer=ESTACIO_OFFER)])
    paused = set_pause(harness, "kroton", True)
    run = harness.instance.get_run_by_id(paused.run_id)
    assert run is not None
    assert run.tags["anubis/integration"] == "kroton" and run.tags["anubis/action"] == "pause"
    assert set_pause(harness, "kroton", True).success  # again: no second alert

    result = tick()
    assert isinstance(result, dg.SensorResult)
    assert [(r.job_name, r.partition_key) for r in result.run_requests or []] == [
        ("deliver_job", "estacio")
    ]
    # with Estácio's run waiting, the tick skips, and says Kroton is paused and why
    job = harness.defs.resolve_job_def("deliver_job")
    instance.create_run_for_job(
        job_def=job,
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"dagster/partition": "estacio"},
        run_config=partition_run_config("delivery_request", "estacio"),
    )
    skip = tick()
    assert isinstance(skip, dg.SkipReason)
    assert f"paused: kroton ({REASON})" in str(skip.skip_message)

    # intake goes on while paused: nothing is lost
    harness.ingest([make_order(3)])
    assert harness.statuses() == {1: "to_sync", 2: "to_sync_lgpd", 3: "to_sync"}
    # a deliver run launched by hand (or retried, re-executed) while paused sends nothing
    assert harness.deliver("kroton").success
    assert harness.statuses() == {1: "to_sync", 2: "to_sync_lgpd", 3: "to_sync"}
    assert kroton.requests_log() == []

    resumed = set_pause(harness, "kroton", False)
    run = harness.instance.get_run_by_id(resumed.run_id)
    assert run is not None and run.tags["anubis/action"] == "resume"
    result = tick()
    assert isinstance(result, dg.SensorResult)
    asked = [(r.job_name, r.partition_key) for r in result.run_requests or []]
    assert ("deliver_job", "kroton") in asked
    assert harness.deliver("kroton").success
    statuses = harness.statuses()
    assert {statuses[1], statuses[3]} <= {"awaiting_register", "registered"}

    alerts = pause_alerts(sink)
    assert len(alerts) == 2, alerts
    assert "kroton: sending paused" in alerts[0] and REASON in alerts[0]
    assert "kroton: sending resumed" in alerts[1]


def test_anubis_pause_run_status_and_resume(
    kroton: KrotonSandbox,
    anubis_env: str,
    sink: WebhookSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["pause", "kroton", "--reason", REASON]) == 0
    assert main(["pause", "kroton"]) == 0  # already paused: no change, no alert
    assert "no change" in capsys.readouterr().out
    assert main(["pause", "nope"]) == 1
    orders = tmp_path / "orders.jsonl"
    orders.write_text("\n".join(json.dumps(make_order(i)) for i in (1, 2)) + "\n")
    assert main(["orders", "load", str(orders)]) == 0
    assert main(["run", "--settle-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "intake_job" in out and "kroton: paused" in out
    assert "deliver_job[kroton]" not in out
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "PAUSED: kroton" in status and REASON in status
    assert "to_sync" in status  # ingested, waiting
    assert kroton.requests_log() == []

    assert main(["resume", "kroton"]) == 0
    assert main(["run", "--settle-seconds", "0"]) == 0
    assert "deliver_job[kroton]" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "PAUSED" not in capsys.readouterr().out
    assert len(pause_alerts(sink)) == 2


OTHER_COURSE = {
    **KROTON_OFFER,
    "course": {**KROTON_OFFER["course"], "name": "Direito"},
}


def snapshot(db_url: str) -> tuple[list[tuple[Any, ...]], int]:
    """Every subscription's state and the number of event rows."""
    with session_scope(db_url) as session:
        s = Subscription
        rows = session.execute(
            select(s.id, s.status, s.attempts, s.scheduled_to, s.updated_at).order_by(s.id)
        ).all()
        events = session.scalar(select(func.count()).select_from(SubscriptionEvent))
    return [tuple(r) for r in rows], int(events or 0)


def test_a_dry_run_reports_requeues_and_retries_and_changes_nothing(
    harness: Harness, kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # order 1 dead-lettered (the catalog keeps failing); order 2 waits 6 h for a retry
    kroton.configure(error_rate=1.0, fault_endpoints="catalog_search")
    harness.ingest([make_order(1)])
    harness.deliver_until_settled()
    assert harness.statuses() == {1: "failed"}
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "6h")
    harness.ingest([make_order(2, offer=OTHER_COURSE)])
    harness.deliver()
    assert harness.statuses()[2] == "course_failed" and not harness.due("kroton")
    kroton.configure(error_rate=0.0)
    dead = harness.subscription(1).id
    before = snapshot(harness.db_url)
    sent = len(kroton.requests_log())

    result = harness.deliver(
        dry_run=True,
        requeue_ids=[dead, 999],
        requeue_failed_since="2000-01-01T00:00:00",
        retry_now=True,
    )
    assert result.success
    assert snapshot(harness.db_url) == before
    assert len(kroton.requests_log()) == sent
    metadata = op_metadata(result, "delivery_request")
    assert metadata["would_requeue"] == [dead]
    assert metadata["would_retry_now"] == 1
    assert metadata["not_requeued"] == [
        {"id": 999, "reason": "not a subscription of this integration"}
    ]
    assert "requeued" not in metadata and "retried_now" not in metadata
    run = harness.instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["anubis/action"] == "dry_run"

    # the same config for real does it
    real = harness.deliver(requeue_ids=[dead], retry_now=True)
    assert real.success
    assert op_metadata(real, "delivery_request")["requeued"] == [dead]
    assert harness.statuses()[1] in ("awaiting_register", "registered")
