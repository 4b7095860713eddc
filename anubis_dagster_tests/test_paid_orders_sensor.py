"""Sensor ticks evaluated with `dg.build_sensor_context`, on a real orders table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import default_database_url as anubis_db
from anubis_dagster.db.session import session_scope
from anubis_dagster.definitions import defs as code_location
from anubis_dagster.intake import planning
from anubis_dagster.intake.orders_source import OrderKey, OrdersSource
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.intake.sensors import paid_orders_sensor
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster.resources import AppDatabase
from anubis_dagster_tests.factories import make_order
from anubis_sandboxes.webhook_sink import WebhookSink

defs = code_location()  # the lazy code location, built as Dagster builds it


@pytest.fixture
def orders_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orders.db'}"


def tick(orders_url: str, cursor: str | None, instance: dg.DagsterInstance | None = None):  # type: ignore[no-untyped-def]
    """One evaluation, with both databases from the environment (`anubis_env`)."""
    assert OrdersSource().url == OrdersSource(orders_url).url  # the resources read the settings
    context = dg.build_sensor_context(
        cursor=cursor,
        instance=instance or dg.DagsterInstance.ephemeral(),
        resources={"orders": OrdersSourceResource(), "app_db": AppDatabase()},
    )
    return paid_orders_sensor(context)


def request_of(result):  # type: ignore[no-untyped-def]
    assert isinstance(result, dg.SensorResult), result
    (request,) = result.run_requests
    config = request.run_config["ops"]["ingest_paid_orders"]["config"]
    return request, config


def launch(request: dg.RunRequest, instance: dg.DagsterInstance) -> bool:
    """Run what the sensor asked for, as the daemon would (same instance, config and tags)."""
    job = defs.resolve_job_def("intake_job")
    result = job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key or ""},
        raise_on_error=False,
    )
    return result.success


@pytest.fixture
def env_orders(anubis_env: str, tmp_path: Path) -> str:
    """The orders source the jobs read (`anubis_env` points ANUBIS_ORDERS_DATABASE_URL here)."""
    return f"sqlite:///{tmp_path / 'orders.db'}"


def test_skips_when_idle(env_orders: str) -> None:
    OrdersSource(env_orders).ensure_table()
    result = tick(env_orders, None)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert "no new paid orders" in str(result.skip_reason.skip_message)


def test_one_run_per_tick_from_the_committed_watermark(
    env_orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_INTAKE_BATCH_SIZE", "2")  # several batches, still one run
    instance = dg.DagsterInstance.ephemeral()
    source = OrdersSource(env_orders)
    source.load([make_order(i) for i in range(1, 6)])
    request, config = request_of(result := tick(env_orders, None, instance))
    assert request.tags["anubis/orders"] == "5"
    assert config["after"] == "" and json.loads(config["until"])["id"] == 5
    assert request.run_key.startswith("intake:start..")
    # not launched yet: the committed watermark has not moved, the range is asked for again
    again, _ = request_of(tick(env_orders, result.cursor, instance))
    assert again.run_key != request.run_key and again.run_key.endswith("#attempt1")
    assert launch(again, instance)
    with session_scope(anubis_db()) as session:
        assert read_watermark(session, source.watermark_name).id == 5  # type: ignore[union-attr]
    idle = tick(env_orders, result.cursor, instance)
    assert not idle.run_requests and "no new paid orders" in str(idle.skip_reason.skip_message)
    source.load([make_order(6)])
    later, later_config = request_of(tick(env_orders, idle.cursor, instance))
    assert json.loads(later_config["after"])["id"] == 5
    assert json.loads(later_config["until"])["id"] == 6
    assert later.run_key not in (request.run_key, again.run_key)


def test_a_failed_run_leaves_its_orders_to_the_next_tick(
    env_orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anubis_dagster.intake import loop

    instance = dg.DagsterInstance.ephemeral()
    OrdersSource(env_orders).load([make_order(i) for i in range(1, 4)])
    first = tick(env_orders, None, instance)
    request, _ = request_of(first)
    real = loop.ingest

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("worker died")

    monkeypatch.setattr(loop, "ingest", crash)
    assert not launch(request, instance)  # failed (its retries too)
    monkeypatch.setattr(loop, "ingest", real)
    retry = tick(env_orders, first.cursor, instance)
    retry_request, retry_config = request_of(retry)
    assert retry_config == request.run_config["ops"]["ingest_paid_orders"]["config"]
    assert retry_request.run_key == request.run_key + "#attempt1"
    assert launch(retry_request, instance)
    with session_scope(anubis_db()) as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 3
    assert not tick(env_orders, retry.cursor, instance).run_requests


def test_no_second_run_while_one_is_queued_or_in_flight(
    env_orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anubis_dagster import intake

    instance = dg.DagsterInstance.ephemeral()
    OrdersSource(env_orders).load([make_order(1)])
    first = tick(env_orders, None, instance)
    request, _ = request_of(first)
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("intake_job"),
        run_config=request.run_config,
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags=request.tags,
    )
    waiting = tick(env_orders, first.cursor, instance)
    assert isinstance(waiting, dg.SkipReason)
    assert f"intake run {run.run_id[:8]} is NOT_STARTED" in str(waiting.skip_message)
    start = dg.DagsterEvent(event_type_value="PIPELINE_START", job_name="intake_job")
    instance.report_dagster_event(start, run_id=run.run_id)  # the worker started it
    waiting = tick(env_orders, first.cursor, instance)
    assert f"intake run {run.run_id[:8]} is STARTED" in str(waiting.skip_message)
    instance.report_run_canceled(run)  # cancelled before it committed: its orders come back
    again, _ = request_of(tick(env_orders, first.cursor, instance))
    assert again.run_key == request.run_key + "#attempt1"

    # a run that was created but never launched stops holding intake back after a grace time
    stuck = instance.create_run_for_job(
        job_def=defs.resolve_job_def("intake_job"),
        run_config=request.run_config,
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    assert isinstance(tick(env_orders, first.cursor, instance), dg.SkipReason)
    monkeypatch.setattr(intake.sensors, "NOT_STARTED_GRACE_SECONDS", -1)
    assert request_of(tick(env_orders, first.cursor, instance))
    assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.NOT_STARTED


def test_a_missing_orders_table_is_one_skip_reason_and_one_alert(
    env_orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = WebhookSink()
    monkeypatch.setenv("ANUBIS_SLACK_WEBHOOK_URL", sink.start())
    monkeypatch.setenv("ANUBIS_ORDERS_TABLE", "platform_orders")
    try:
        cursor = None
        for _ in range(3):
            result = tick(env_orders, cursor, None)
            assert isinstance(result, dg.SensorResult) and not result.run_requests
            message = str(result.skip_reason.skip_message)
            assert "ANUBIS_ORDERS_TABLE: the orders table or view 'platform_orders'" in message
            cursor = result.cursor
        assert len(sink.received) == 1 and "platform_orders" in sink.received[0]
        assert not OrdersSource(env_orders).exists()  # the sensor never creates it
        OrdersSource(env_orders).load([make_order(1)])
        assert request_of(tick(env_orders, cursor, None))
    finally:
        sink.shutdown()


def test_unpaid_orders_are_not_read(env_orders: str) -> None:
    pending = make_order(1)
    pending["checkout_step"] = "checkout"
    OrdersSource(env_orders).load([pending])
    assert not tick(env_orders, None).run_requests


def test_late_arriving_rows_are_not_skipped(orders_url: str) -> None:
    """A row whose transaction commits after a later row was visible is still read: the cursor
    never passes the settle horizon (now - settle_seconds)."""
    now = datetime.now(UTC)
    source = OrdersSource(orders_url)
    source.load([make_order(1, updated_at=now - timedelta(seconds=60))])
    source.load([make_order(2, updated_at=now - timedelta(seconds=2))])  # too fresh yet
    first = planning.plan_batches(source, None, now=now, settle_seconds=10)
    assert [b.until.id for b in first] == [1]
    # order 3 commits late, stamped before order 2 but after the first tick's cursor
    source.load([make_order(3, updated_at=now - timedelta(seconds=5))])
    second = planning.plan_batches(
        source, first[-1].until, now=now + timedelta(seconds=30), settle_seconds=10
    )
    keys = source.next_keys(first[-1].until, horizon=now + timedelta(seconds=20), limit=10)
    assert [k.id for k in keys] == [3, 2]
    assert second[-1].until.id == 2


def test_the_tick_seeks_to_the_cursor_in_the_index(orders_url: str) -> None:
    """The sensor's query is a range scan of the (checkout_step, updated_at, id) index that
    starts at the cursor: its cost does not grow with the table (see BENCHMARKS.md)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    source = OrdersSource(orders_url)
    source.load([make_order(i) for i in range(1, 50)])
    t = source.table.c
    cursor = OrderKey(datetime(2026, 11, 1, 10, 0, 10, tzinfo=UTC), 10)
    query = (
        select(t.updated_at, t.id)
        .where(source._after(cursor), t.updated_at <= datetime(2027, 1, 1, tzinfo=UTC))
        .order_by(t.updated_at, t.id)
        .limit(10)
    )
    compiled = query.compile(source.engine)
    with source.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}",
            tuple(compiled.params[k] for k in compiled.positiontup),
        ).fetchall()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "COVERING INDEX ix_orders_step_updated_id" in detail
    assert "(updated_at,id)>(?,?)" in detail  # the cursor bounds the scan, not a filter after it
    assert [
        k.id for k in source.next_keys(cursor, horizon=datetime(2027, 1, 1, tzinfo=UTC), limit=3)
    ] == [11, 12, 13]


def test_order_key_round_trip() -> None:
    key = OrderKey(datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC), 42)
    assert OrderKey.from_json(key.to_json()) == key
    assert OrderKey.from_json(None) is None
