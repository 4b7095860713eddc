"""Retry schedule, dead letter, requeue, retry-now, the due-work sensor and alerts, against
the Kroton sandbox over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.factories import KROTON_OFFER, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, assert_attempts_match
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink

CPF_PATTERN = re.compile(r"(?<!\d)\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?!\d)")


@pytest.fixture
def harness(kroton: KrotonSandbox, anubis_env: str) -> Harness:
    return Harness(anubis_env)


def no_personal_data(texts: list[str], cpfs: set[str]) -> None:
    blob = "\n".join(texts)
    found = {re.sub(r"\D", "", m) for m in CPF_PATTERN.findall(blob)}
    assert not (found & cpfs), "a CPF reached an alert"
    assert "@example.com.br" not in blob


def test_transient_failures_follow_the_schedule_then_dead_letter_with_one_alert(
    harness: Harness, kroton: KrotonSandbox, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s,0s")  # 3 tries in all
    # every call fails: the schedule is under test here, not an outage (whose circuit breaker
    # would charge nobody: test_partner_outage.py), so the breaker cannot open
    monkeypatch.setenv("ANUBIS_BREAKER_FAILURES", "1000")
    kroton.configure(error_rate=1.0)  # the partner is down
    harness.ingest([make_order(i) for i in range(1, 4)])
    runs = harness.deliver_until_settled()
    assert runs == 3
    assert harness.statuses() == {1: "failed", 2: "failed", 3: "failed"}
    sub = harness.subscription(1)
    assert sub.attempts == 3 and "HTTP 50" in (sub.last_error or "")
    events = harness.events(1)
    retries = [e for e in events if e.kind == "retry"]
    assert len(retries) == 2 and "next try at" in (retries[0].error_message or "")
    dead = [e for e in events if e.kind == "transition" and e.status == "failed"]
    assert "retries exhausted after 3 attempts" in (dead[0].error_message or "")
    exhausted = [t for t in sink.received if "exhausted their retries" in t]
    assert len(exhausted) == 1 and "3 subscriptions" in exhausted[0]
    no_personal_data(sink.received, {make_cpf(i) for i in range(1, 4)})
    assert_attempts_match(harness, kroton)


def test_the_schedule_spaces_retries_in_time(
    harness: Harness, kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1h,2h")
    kroton.configure(error_rate=1.0)
    harness.ingest([make_order(1)])
    before = datetime.now(UTC)
    harness.deliver()
    sub = harness.subscription(1)
    assert sub.status == "course_failed" and sub.attempts == 1
    assert sub.scheduled_to is not None
    assert timedelta(minutes=59) < sub.scheduled_to - before < timedelta(minutes=61)
    requests = len(kroton.requests_log())
    harness.deliver()  # not due yet: nothing is sent
    assert len(kroton.requests_log()) == requests
    assert not harness.due("kroton")


def test_permanent_refusals_skip_the_schedule(harness: Harness, kroton: KrotonSandbox) -> None:
    harness.ingest([make_order(1, rg=None)])
    harness.deliver()
    sub = harness.subscription(1)
    assert (sub.status, sub.attempts, sub.scheduled_to) == ("register_failed", 0, None)


#: another course of the demo catalog, so its search is not answered from the cache
OTHER_COURSE = {
    **KROTON_OFFER,
    "metadata": {**KROTON_OFFER["metadata"], "vlMensalidadeDe": 899.9},
    "course": {**KROTON_OFFER["course"], "name": "Direito"},
}


def test_requeue_by_id_and_since(
    harness: Harness, kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s")
    monkeypatch.setenv("ANUBIS_BREAKER_FAILURES", "1000")  # dead letters, not an outage
    harness.ingest([make_order(4, rg=None)])  # refused by Kroton: permanent, not a dead letter
    harness.deliver()
    # Kroton answers nothing but 5xx, to the registrations and to the questions by CPF
    kroton.configure(error_rate=1.0, fault_endpoints="register,inscriptions_by_cpf")
    harness.ingest([make_order(i) for i in range(1, 4)])
    harness.deliver_until_settled()
    # a 5xx to a registration may hide an inscription: their retries ran out unanswered, so
    # they are held (`unknown`), not declared failed
    assert set(harness.statuses().values()) == {"unknown", "register_failed"}
    assert harness.subscription(1).sending_since is not None
    kroton.configure(error_rate=0.0)
    # requeued from `unknown`: Kroton is asked by CPF before anything is sent again
    held = [harness.subscription(i).id for i in (2, 3)]
    assert harness.deliver(requeue_ids=held).success
    assert {harness.statuses()[i] for i in (2, 3)} <= {"awaiting_register", "registered"}
    assert any(r["endpoint"] == "inscriptions_by_cpf" for r in kroton.requests_log())
    # dead letters: the catalog keeps failing for a new course
    kroton.configure(error_rate=1.0, fault_endpoints="catalog_search")
    harness.ingest([make_order(i, offer=OTHER_COURSE) for i in (5, 6)])
    harness.deliver_until_settled()
    assert harness.statuses()[5] == harness.statuses()[6] == "failed"
    kroton.configure(error_rate=0.0)
    # one by id: back to the step it failed at (the course sync), and on to the partner
    one = harness.subscription(5).id
    assert harness.deliver(requeue_ids=[one]).success
    assert harness.statuses()[5] in ("awaiting_register", "registered")
    assert harness.statuses()[6] == "failed"
    requeue_event = next(e for e in harness.events(5) if e.operation_name == "requeue")
    assert requeue_event.status == "to_sync"
    # every dead letter since an hour ago (the refused one is not a dead letter, the held
    # one is not either)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert harness.deliver(requeue_failed_since=since).success
    statuses = harness.statuses()
    assert statuses[6] in ("awaiting_register", "registered")
    assert statuses[1] == "unknown"
    assert statuses[4] == "register_failed"
    assert kroton.stats()["duplicates_refused"] == 0
    assert_attempts_match(harness, kroton)


def test_retry_now_makes_scheduled_retries_due(
    harness: Harness, kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "6h")
    kroton.configure(error_rate=1.0)
    harness.ingest([make_order(1), make_order(2)])
    harness.deliver()
    assert not harness.due("kroton")
    kroton.configure(error_rate=0.0)
    assert harness.deliver(retry_now=True).success
    assert set(harness.statuses().values()) <= {"awaiting_register", "registered"}


def test_summary_and_quota_alerts_carry_no_personal_data(
    harness: Harness, kroton: KrotonSandbox, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RUN_SUMMARIES", "true")  # routine summaries are off by default
    kroton.configure(rate_limits={"api": "3/1", "catalog": "100/60"})
    harness.ingest([make_order(i) for i in range(1, 6)])
    harness.deliver_until_settled()
    summaries = [t for t in sink.received if "finished" in t]
    assert summaries and "register: 5" in "".join(summaries)
    assert any("quota saturated" in t for t in sink.received), sink.received
    assert all("/runs/" in t for t in sink.received)
    no_personal_data(sink.received, {make_cpf(i) for i in range(1, 6)})


def test_run_failure_alert_is_masked(anubis_env: str, sink: WebhookSink) -> None:
    from anubis_dagster.alerts.sensors import alert_on_run_failure, failure_alert

    cpf = make_cpf(77)

    @dg.op
    def explode() -> None:
        raise RuntimeError(f"boom for CPF {cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]} and a@b.com")

    @dg.job
    def doomed() -> None:
        explode()

    instance = dg.DagsterInstance.ephemeral()
    result = doomed.execute_in_process(instance=instance, raise_on_error=False)
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    alert = failure_alert(context)
    assert "Run failed: doomed" in alert.title
    alert_on_run_failure(context)
    assert len(sink.received) == 1
    assert "explode" in sink.received[0]
    no_personal_data(sink.received, {cpf})
    assert "a@b.com" not in sink.received[0]


def test_due_work_sensor_asks_only_when_work_is_due(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    from anubis_dagster.resources import AppDatabase

    sensor = next(s for s in harness.defs.sensors if s.name == "due_work_sensor")
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor: str | None = None):  # type: ignore[no-untyped-def]
        context = dg.build_sensor_context(
            cursor=cursor, instance=instance, resources={"app_db": AppDatabase()}
        )
        return sensor(context)

    assert isinstance(tick(), dg.SkipReason)  # nothing at all
    harness.ingest([make_order(1)])
    result = tick()
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests
    assert (request.job_name, request.partition_key) == ("deliver_job", "kroton")
    # the run it asked for is waiting to start: no second run (new students skip `interval`,
    # not this)
    job = harness.defs.resolve_job_def("deliver_job")
    instance.create_run_for_job(
        job_def=job,
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"dagster/partition": "kroton"},
        run_config=partition_run_config("delivery_request", "kroton"),
    )
    assert isinstance(tick(result.cursor), dg.SkipReason)
    # a run of the same integration still going: wait for it
    instance.create_run_for_job(
        job_def=job,
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": "kroton"},
        run_config=partition_run_config("delivery_request", "kroton"),
    )
    skip = tick()
    assert isinstance(skip, dg.SkipReason) and "in flight" in str(skip.skip_message)
    # work scheduled in the future is not due
    harness.deliver()
    assert harness.statuses()[1] in ("awaiting_register", "registered")
    fresh = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=fresh, resources={"app_db": AppDatabase()})
    result = sensor(context)
    flows = [r.job_name for r in result.run_requests] if isinstance(result, dg.SensorResult) else []
    assert "deliver_job" not in flows


@pytest.mark.slow
def test_fault_injection_suite_every_student_ends_right_exactly_once(
    harness: Harness, kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20% 5xx, 10% timeouts (half of them after Kroton acted), short-lived tokens and a
    partner quota tighter than ours (429 bursts): every student ends registered or beyond,
    none twice, and every request has its attempt row."""
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", ",".join(["0s"] * 20))
    kroton.configure(
        error_rate=0.2,
        timeout_rate=0.1,
        timeout_after_processing=True,
        hang_seconds=1.5,
        token_lifetime=1.0,
        rate_limits={"api": "10/1", "catalog": "10/1"},
        seed=11,
    )
    students = 20
    harness.ingest([make_order(i) for i in range(1, students + 1)])
    harness.deliver_until_settled(max_runs=40)
    for _ in range(40):
        if not any(s == "awaiting_register" for s in harness.statuses().values()):
            break
        harness.check()
    statuses = harness.statuses()
    assert set(statuses.values()) <= {"registered", "enrolled", "dropped"}, statuses
    assert kroton.stats()["registrations_per_cpf"] == {
        make_cpf(i): 1 for i in range(1, students + 1)
    }
    stats = kroton.stats()
    assert stats["by_outcome"].get("fault_5xx", 0) > 0
    assert stats["by_outcome"].get("fault_timeout", 0) > 0
    assert stats["tokens_issued"] > 1
    assert_attempts_match(harness, kroton)
