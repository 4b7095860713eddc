"""Sensor ticks evaluated with `dg.build_sensor_context`, on a real orders table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from anubis_dagster.intake import planning
from anubis_dagster.intake.orders_source import OrderKey, OrdersSource
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.intake.sensors import paid_orders_sensor
from anubis_dagster_tests.factories import make_order


@pytest.fixture
def orders_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orders.db'}"


def tick(orders_url: str, cursor: str | None):  # type: ignore[no-untyped-def]
    context = dg.build_sensor_context(
        cursor=cursor, resources={"orders": OrdersSourceResource(url=orders_url)}
    )
    return paid_orders_sensor(context)


def test_skips_when_idle(orders_url: str) -> None:
    OrdersSource(orders_url).ensure_table()
    result = tick(orders_url, None)
    assert isinstance(result, dg.SkipReason)
    assert "no new paid orders" in str(result.skip_message)


def test_cursor_moves_and_run_keys_are_per_batch(
    orders_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planning, "BATCH_SIZE", 2)
    source = OrdersSource(orders_url)
    source.load([make_order(i) for i in range(1, 6)])
    result = tick(orders_url, None)
    assert isinstance(result, dg.SensorResult)
    sizes = [r.tags["anubis/orders"] for r in result.run_requests]
    assert sizes == ["2", "2", "1"]
    keys = [r.run_key for r in result.run_requests]
    assert len(set(keys)) == 3 and all(k.startswith("intake:") for k in keys)
    assert json.loads(result.cursor)["id"] == 5
    # consecutive batches chain: each run's range starts where the previous ended
    configs = [r.run_config["ops"]["ingest_paid_orders"]["config"] for r in result.run_requests]
    assert configs[0]["after"] == ""
    assert configs[1]["after"] == configs[0]["until"]
    # the next tick, from the new cursor, has nothing to do
    assert isinstance(tick(orders_url, result.cursor), dg.SkipReason)
    # a newly paid order moves it on, with a new run key
    source.load([make_order(6)])
    later = tick(orders_url, result.cursor)
    assert later.run_requests[0].run_key not in keys
    assert json.loads(later.cursor)["id"] == 6


def test_unpaid_orders_are_not_read(orders_url: str) -> None:
    pending = make_order(1)
    pending["checkout_step"] = "checkout"
    OrdersSource(orders_url).load([pending])
    assert isinstance(tick(orders_url, None), dg.SkipReason)


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
