"""The daemon and `anubis run` plan the same runs from the same state (issue 24, item 1): both
ask `delivery.planner`, on SQLite and PostgreSQL. The one difference is on purpose and
explicit: `anubis run` starts nothing beside a running run of the same flow (its runs bypass
the run queue), where the sensor lets one more wait in the queue for new students."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import update

from anubis_dagster.cli import runner
from anubis_dagster.core.breaker import BreakerPhase, BreakerState
from anubis_dagster.db import breaker as store
from anubis_dagster.db.models import Integration, Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.delivery.breaker import api_names
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_order
from anubis_dagster_tests.harness import Harness
from anubis_sandboxes.kroton import KrotonSandbox

Planned = set[tuple[str, str, bool]]  # (job, integration, breaker probe)


@pytest.fixture
def harness(anubis_env: str) -> Harness:
    return Harness(anubis_env)


def sensor_plans(harness: Harness, instance: dg.DagsterInstance) -> Planned:
    """The runs the daemon's due_work_sensor asks for now (a first tick: no cursor)."""
    sensor = harness.defs.resolve_sensor_def("due_work_sensor")
    context = dg.build_sensor_context(instance=instance, resources={"app_db": AppDatabase()})
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return set()
    assert isinstance(result, dg.SensorResult)
    return {
        (str(r.job_name), str(r.partition_key), r.tags.get("anubis/breaker_probe") == "true")
        for r in result.run_requests or []
    }


def cli_plans(instance: dg.DagsterInstance) -> Planned:
    """The runs `anubis run` would start now."""
    return {(r.job_name, r.key, r.probe) for r in runner.plan_due_work(instance).runs}


def deliver_run(
    harness: Harness, instance: dg.DagsterInstance, key: str, status: dg.DagsterRunStatus
) -> dg.DagsterRun:
    return instance.create_run_for_job(
        job_def=harness.defs.resolve_job_def("deliver_job"),
        status=status,
        tags={"dagster/partition": key},
        run_config=partition_run_config("delivery_request", key),
    )


def assert_same(harness: Harness, instance: dg.DagsterInstance, expected: Planned) -> None:
    assert sensor_plans(harness, instance) == expected
    assert cli_plans(instance) == expected


def test_nothing_new_students_paused_and_failed_runs_plan_alike(harness: Harness) -> None:
    assert_same(harness, dg.DagsterInstance.ephemeral(), set())
    harness.ingest([make_order(1), make_order(2, offer=ESTACIO_OFFER)])
    both = {("deliver_job", "kroton", False), ("deliver_job", "estacio", False)}
    assert_same(harness, dg.DagsterInstance.ephemeral(), both)

    # a run waiting in the queue: nothing more for that integration, from either
    queued = dg.DagsterInstance.ephemeral()
    deliver_run(harness, queued, "kroton", dg.DagsterRunStatus.NOT_STARTED)
    assert_same(harness, queued, {("deliver_job", "estacio", False)})

    # the latest run failed a moment ago: new students back off, in both
    failed = dg.DagsterInstance.ephemeral()
    run = deliver_run(harness, failed, "estacio", dg.DagsterRunStatus.NOT_STARTED)
    failed.report_run_failed(run, "could not start")
    assert_same(harness, failed, {("deliver_job", "kroton", False)})

    # paused: neither plans a run for it
    with session_scope(harness.db_url) as session:
        session.execute(
            update(Integration)
            .where(Integration.key == "estacio")
            .values(paused_at=datetime.now(UTC), pause_reason="asked by the partner")
        )
    assert_same(harness, dg.DagsterInstance.ephemeral(), {("deliver_job", "kroton", False)})
    assert runner.plan_due_work(dg.DagsterInstance.ephemeral()).paused == [
        ("estacio", "asked by the partner")
    ]


def test_retries_are_paced_by_the_last_run_whoever_launched_it(harness: Harness) -> None:
    harness.ingest([make_order(1)])
    with session_scope(harness.db_url) as session:
        session.execute(update(Subscription).values(attempts=1))  # only retries are due
    assert_same(harness, dg.DagsterInstance.ephemeral(), {("deliver_job", "kroton", False)})
    # a run of the flow ended a moment ago (the daemon's or `anubis run`'s): wait `interval`
    recent = dg.DagsterInstance.ephemeral()
    run = deliver_run(harness, recent, "kroton", dg.DagsterRunStatus.NOT_STARTED)
    recent.report_run_canceled(run)
    assert_same(harness, recent, set())
    held = runner.plan_due_work(recent).held_until
    assert held is not None and 50 < held - datetime.now(UTC).timestamp() <= 60  # interval: 1


def test_a_running_run_is_the_one_difference_and_it_is_explicit(harness: Harness) -> None:
    harness.ingest([make_order(1)])
    instance = dg.DagsterInstance.ephemeral()
    deliver_run(harness, instance, "kroton", dg.DagsterRunStatus.STARTED)
    # the daemon lets one run wait in the queue behind the running one, for new students
    assert sensor_plans(harness, instance) == {("deliver_job", "kroton", False)}
    # `anubis run` would run it at once beside the other (no queue here): it does not
    plan = runner.plan_due_work(instance)
    assert plan.runs == [] and plan.waiting == ["kroton:deliver"]


def test_an_open_breaker_plans_the_same_probe(harness: Harness) -> None:
    harness.ingest([make_order(1)])
    api = api_names(adapter_class("kroton"))[0]
    now = datetime.now(UTC)

    def opened(probe_at: datetime) -> None:
        store.update(
            harness.db_url,
            api,
            lambda _: BreakerState(
                phase=BreakerPhase.OPEN, opened_at=now, next_probe_at=probe_at, probe_seconds=30
            ),
        )

    opened(now + timedelta(minutes=5))  # down, no probe due: no run, and both say why
    assert_same(harness, dg.DagsterInstance.ephemeral(), set())
    assert "Kroton is down since" in runner.plan_due_work(dg.DagsterInstance.ephemeral()).down[0]
    opened(now - timedelta(seconds=1))  # a probe is due: one probe run, from either
    assert_same(harness, dg.DagsterInstance.ephemeral(), {("deliver_job", "kroton", True)})


def test_anubis_run_starts_what_the_sensor_asks_for(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    """Not only the plan: the runs `anubis run` executes are the sensor's requests."""
    harness.ingest([make_order(1), make_order(2)])
    instance = dg.DagsterInstance.ephemeral()
    asked = sensor_plans(harness, instance)
    assert asked == {("deliver_job", "kroton", False)}
    result = runner.PassResult()
    lines: list[str] = []
    runner.run_due_work(harness.defs, instance, result, echo=lines.append)
    started = {
        (r.job_name, r.tags["dagster/partition"], r.tags.get("anubis/breaker_probe") == "true")
        for r in instance.get_runs()
    }
    assert started == asked, lines
    assert all(ok for _, _, ok in result.runs), lines
    run = instance.get_runs()[0]
    assert run.tags["anubis/slot"] == "kroton:deliver"  # the sensor's tags, queue slot included
    assert run.tags["anubis/trigger"] == "anubis run"


def test_an_intake_run_in_flight_holds_both_back(harness: Harness) -> None:
    """The daemon's intake rule, one intake run at a time, holds for `anubis run` too: a run
    in flight (say, the daemon's) will move the watermark; a second would read the same range."""
    harness.source.load([make_order(1)])
    instance = dg.DagsterInstance.ephemeral()
    instance.create_run_for_job(
        job_def=harness.defs.resolve_job_def("intake_job"), status=dg.DagsterRunStatus.STARTED
    )
    sensor = harness.defs.resolve_sensor_def("paid_orders_sensor")
    tick = sensor(dg.build_sensor_context(instance=instance, resources=harness.defs.resources))
    assert isinstance(tick, dg.SkipReason) and "STARTED" in str(tick.skip_message)
    result = runner.PassResult()
    lines: list[str] = []
    runner.run_intake(harness.defs, instance, result, settle_seconds=0, echo=lines.append)
    assert result.runs == [] and "not starting another" in lines[0]
