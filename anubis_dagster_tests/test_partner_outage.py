"""A partner-wide outage is never the students' (issue 21): against the sandboxes' outage mode
(every call but the token endpoint answers 503), on SQLite and PostgreSQL.

The circuit breaker of the partner API opens within a handful of calls, the students of the
streak get their attempts back, no run sends anything while it is open (the due sensor says
why), the health check is red, one alert says the partner is down; after the outage a probe
(one read) closes it, one alert says it is back, and every student is registered once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

from anubis_dagster.core.breaker import BreakerRule
from anubis_dagster.db import breaker as store
from anubis_dagster.db.models import Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.health import service as health
from anubis_dagster.integrations.kroton.adapter import KrotonAdapter
from anubis_dagster.resources import AppDatabase
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_order
from anubis_dagster_tests.harness import Harness, op_metadata, sandbox_requests
from anubis_dagster_tests.test_estacio_e2e import estacio  # noqa: F401  (fixture)
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox, KrotonSandboxSettings
from anubis_sandboxes.webhook_sink import WebhookSink

STUDENTS = 20
PROBE_SECONDS = 1.0


@pytest.fixture
def catalog(kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[KrotonSandbox]:
    """Kroton's catalog on a server of its own (it is another service, the Elasticsearch
    middleware): the outage of the registration API leaves it answering."""
    sandbox = KrotonSandbox(KrotonSandboxSettings(processing_delay=0.2))
    monkeypatch.setenv("CATALOG_KROTON_BASE_URL", sandbox.start())
    monkeypatch.setenv("ANUBIS_BREAKER_PROBE_SECONDS", str(PROBE_SECONDS))
    yield sandbox
    sandbox.stop()


def posts(sandbox: KrotonSandbox, endpoint: str) -> int:
    return sum(1 for r in sandbox.requests_log() if r["endpoint"] == endpoint)


def outage_calls(sandbox: KrotonSandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests_log() if r["endpoint"] != "token"]


def attempts_charged(db_url: str) -> int:
    with session_scope(db_url) as session:
        return int(session.scalar(select(func.sum(Subscription.attempts))) or 0)


def alerts(sink: WebhookSink, words: str) -> list[str]:
    return [text for text in sink.received if words in text]


def tick(harness: Harness) -> Any:
    sensor = harness.defs.resolve_sensor_def("due_work_sensor")
    context = dg.build_sensor_context(
        instance=harness.instance, resources={"app_db": AppDatabase()}
    )
    return sensor(context)


def wait_for_probe(db_url: str) -> None:
    state = store.read(db_url, "kroton")
    assert state.next_probe_at is not None
    time.sleep(max(0.0, (state.next_probe_at - datetime.now(UTC)).total_seconds()) + 0.05)


def test_an_outage_longer_than_the_retry_schedule_costs_no_attempt_and_alerts_twice(
    kroton: KrotonSandbox, catalog: KrotonSandbox, anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, STUDENTS + 1)])
    kroton.configure(outage="5xx")
    rule = BreakerRule()

    # more runs than the retry schedule has steps (8 in the tests), each one due at once
    first = harness.deliver()
    assert first.success, "an open breaker stops the batch; the run does not fail"
    register = op_metadata(first, "register")
    assert "circuit breaker open" in str(register["stopped"])
    # the breaker opened at the failures-th call: one POST each, for as many students
    assert posts(kroton, "register") == rule.failures
    state = store.read(anubis_env, "kroton")
    assert state.open and len(state.streak_ids) == rule.failures
    for _ in range(10):
        assert harness.deliver().success
    wait_for_probe(anubis_env)
    assert harness.deliver().success  # the probe: one read, still 503, the wait doubles
    calls = [r for r in kroton.requests_log() if r["endpoint"] != "token"]
    probes = calls[rule.failures :]
    # probes while open: lookups by CPF (reads, one try each), never a registration, at
    # doubling intervals (the runs above took long enough for some to come due)
    assert probes and {(r["endpoint"], r["method"]) for r in probes} == {
        ("inscriptions_by_cpf", "GET")
    }
    later = store.read(anubis_env, "kroton")
    assert later.open and later.probe_seconds == PROBE_SECONDS * 2 ** len(probes)

    # while open: nobody charged, failed, held or dead-lettered; unknown sends stay unknown
    assert attempts_charged(anubis_env) == 0
    statuses = harness.status_counts()
    assert statuses == {"to_register": STUDENTS}, statuses
    with session_scope(anubis_env) as session:
        marked = session.scalar(select(func.count()).where(Subscription.sending_since.is_not(None)))
        given_back = session.scalar(
            select(func.count()).where(SubscriptionEvent.outcome == "attempt_given_back")
        )
    assert marked == rule.failures  # each 503 to a registration may have acted: unknown
    assert given_back == rule.failures - 1  # the last one was never charged
    # no run is started while open, and the sensor says why; the health check is red
    skipped = tick(harness)
    assert isinstance(skipped, dg.SkipReason), skipped
    assert "Kroton is down since" in str(skipped.skip_message)
    check = health.breaker_outcome(anubis_env, "kroton", KrotonAdapter)
    assert check.level.value == "error" and "Kroton is down" in check.summary
    down = alerts(sink, "is down since")
    assert len(down) == 1 and f"{STUDENTS} students waiting" in down[0], sink.received
    assert not alerts(sink, "no registration succeeded")

    # recovery: the next probe closes it, the backlog drains, each student registered once
    kroton.configure(outage="")
    wait_for_probe(anubis_env)
    probe_run = tick(harness)
    assert isinstance(probe_run, dg.SensorResult) and len(probe_run.run_requests) == 1
    assert probe_run.run_requests[0].tags["anubis/breaker_probe"] == "true"
    harness.deliver_until_settled()
    assert not store.read(anubis_env, "kroton").open
    statuses = harness.status_counts()
    assert set(statuses) <= {"awaiting_register", "registered"}, statuses
    assert sum(statuses.values()) == STUDENTS
    stats = kroton.stats()
    assert stats["duplicates_refused"] == 0
    assert set(stats["registrations_per_cpf"].values()) == {1}
    assert len(stats["registrations_per_cpf"]) == STUDENTS
    assert attempts_charged(anubis_env) == 0
    back = alerts(sink, "is back after")
    assert len(back) == 1 and back[0].count("Kroton") == 1, sink.received
    assert len(alerts(sink, "is down since")) == 1
    # one attempt row per request the two servers received (the probes included)
    assert harness.attempt_rows() == sandbox_requests(kroton) + sandbox_requests(catalog)


def test_random_faults_do_not_open_it_and_a_single_students_failures_do_not_either(
    kroton: KrotonSandbox, catalog: KrotonSandbox, anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, 41)])
    # 20% 5xx and 10% lost answers on every endpoint but the token
    kroton.configure(error_rate=0.2, lost_answer_rate=0.1, seed=7)
    harness.deliver_until_settled(max_runs=40)
    assert not store.read(anubis_env, "kroton").open
    assert not alerts(sink, "is down since")
    statuses = harness.status_counts()
    assert set(statuses) <= {"awaiting_register", "registered"}, statuses
    assert kroton.stats()["duplicates_refused"] == 0


@pytest.mark.parametrize("mode", ["5xx", "hang"])
def test_a_full_kroton_outage_costs_a_handful_of_calls_before_the_breaker_opens(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink, mode: str
) -> None:
    """API and catalog on one server, both down, students fresh (course sync first): the
    catalog's breaker opens after `failures` calls (reads: 3 quick tries per student), and
    nothing else is sent. The numbers are BENCHMARKS.md's "calls before the breaker opens"."""
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, STUDENTS + 1)])
    kroton.configure(outage=mode)
    started = time.perf_counter()
    assert harness.deliver().success
    elapsed = time.perf_counter() - started
    state = store.read(anubis_env, "kroton-catalog")
    # a held request is logged when the sandbox lets it go (hang_seconds after it came)
    deadline = time.monotonic() + kroton.settings.hang_seconds + 1
    while len(calls := outage_calls(kroton)) < state.streak and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.open and len(calls) == BreakerRule().failures
    assert {r["endpoint"] for r in calls} == {"catalog_search"}
    assert len(state.streak_ids) == BreakerRule().failures // 3  # 3 tries per student
    for _ in range(3):
        assert harness.deliver().success  # stopped at once: nothing more sent
    assert len(outage_calls(kroton)) == len(calls)
    # the streak's students wait in `course_failed` (the catalog's retry status), uncharged
    assert attempts_charged(anubis_env) == 0
    assert set(harness.status_counts()) == {"to_sync", "course_failed"}
    assert len(alerts(sink, "Kroton (kroton-catalog) is down since")) == 1
    print(
        f"\nbreaker[{mode}]: {len(calls)} calls, {len(state.streak_ids)} students, {elapsed:.1f} s"
    )


def test_a_full_estacio_outage_opens_the_breaker_of_its_first_api(
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
    sink: WebhookSink,
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(i, offer=ESTACIO_OFFER) for i in range(1, STUDENTS + 1)])
    estacio.configure(outage="5xx")
    assert harness.deliver("estacio").success
    calls = estacio.requests_log()
    state = store.read(anubis_env, "onetrust")  # consent comes first
    assert state.open and len(calls) == BreakerRule().failures
    assert {r["endpoint"] for r in calls} == {"consent"}
    assert attempts_charged(anubis_env) == 0
    assert len(alerts(sink, "Estácio (onetrust) is down since")) == 1
    print(f"\nbreaker[estacio]: {len(calls)} calls, {len(state.streak_ids)} students")


def test_students_whose_retries_ran_out_in_the_streak_are_put_back(
    kroton: KrotonSandbox,
    catalog: KrotonSandbox,
    anubis_env: str,
    sink: WebhookSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A short schedule (2 tries): the first students of the outage exhaust their retries before
    the breaker has seen enough calls. When it opens they are put back, uncharged, not held."""
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s")
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, 6)])
    kroton.configure(outage="5xx")
    for _ in range(3):
        assert harness.deliver().success
    assert store.read(anubis_env, "kroton").open
    statuses = harness.status_counts()
    assert statuses == {"to_register": 5}, statuses
    assert attempts_charged(anubis_env) == 0
    with session_scope(anubis_env) as session:
        put_back = session.scalar(
            select(func.count()).where(
                SubscriptionEvent.operation_name == "requeue",
                SubscriptionEvent.kind == "transition",
            )
        )
    assert put_back == 2  # students 1 and 2 were held as their retries ran out (calls 6-11)
    assert not alerts(sink, "unknown outcome") and not alerts(sink, "exhausted their retries")
    assert len(alerts(sink, "is down since")) == 1


def test_the_probe_is_not_withheld_by_the_shadow_gate_after_a_shadow_run(
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a cutover from a shadow run, the oldest open student may be one the gate withholds
    (imported, or of the shadow period): the probe changes nothing at the partner, so it goes
    out anyway, and the breaker closes once the partner is back (it used to stay open)."""
    from datetime import timedelta

    from sqlalchemy import update

    from anubis_dagster.db.models import Integration
    from anubis_dagster.legacy.operations import run_import
    from anubis_dagster.legacy.readers import CsvLegacyReader
    from anubis_dagster_tests.factories import make_cpf

    monkeypatch.setenv("ANUBIS_BREAKER_PROBE_SECONDS", "0.5")
    harness = Harness(anubis_env)
    path = tmp_path / "legacy.csv"
    path.write_text(
        "order_id,cpf,integration,status,partner_id,sent_at\n"
        f",{make_cpf(90)},estacio,registered,E90,2026-11-01T10:00:00Z\n",
        encoding="utf-8",
    )
    run_import(anubis_env, "estacio", CsvLegacyReader(path, "estacio"), tty=False)
    with session_scope(anubis_env) as session:  # a shadow run happened and ended
        session.execute(
            update(Integration)
            .where(Integration.key == "estacio")
            .values(shadow_ended_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    harness.ingest([make_order(i, offer=ESTACIO_OFFER) for i in range(1, 21)])
    estacio.configure(outage="5xx")
    assert harness.deliver("estacio").success
    assert store.read(anubis_env, "onetrust").open
    estacio.configure(outage="")
    for _ in range(3):
        state = store.read(anubis_env, "onetrust")
        if not state.open:
            break
        assert state.next_probe_at is not None
        time.sleep(max(0.0, (state.next_probe_at - datetime.now(UTC)).total_seconds()) + 0.1)
        harness.deliver("estacio")
    assert not store.read(anubis_env, "onetrust").open
