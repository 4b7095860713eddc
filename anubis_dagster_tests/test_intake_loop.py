"""`intake.loop.ingest_orders`, the intake run's work without Dagster: chunk by chunk, each
chunk committed with the watermark; explicit order ids never move it (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.db.models import Subscription
from anubis_dagster.intake.loop import ingest_orders
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster.resources import AppDatabase
from anubis_dagster_tests.factories import make_order


def subscriptions(app_db: AppDatabase) -> int:
    with app_db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Subscription)) or 0)


def test_a_range_is_ingested_in_chunks_and_the_watermark_follows(anubis_env: str) -> None:
    app_db, source = AppDatabase(), OrdersSource()
    source.load([make_order(i) for i in range(1, 6)])
    (batch,) = plan_batches(source, None, settle_seconds=0)
    seen: list[int] = []  # the watermark each session of the run started from

    @contextmanager
    def watching_session() -> Iterator[Session]:
        with app_db.session() as session:
            position = read_watermark(session, source.watermark_name)
            seen.append(position.id if position else 0)
            yield session

    outcome = ingest_orders(
        watching_session,
        source,
        after=batch.after,
        until=batch.until,
        run_id="run-1",
        chunk_size=2,
    )
    assert outcome.report.orders == 5 and outcome.report.created == 5
    # each chunk's session saw the watermark where the chunk before it had left it
    assert seen == sorted(seen) and {2, 4} <= set(seen)
    with app_db.session() as session:
        assert read_watermark(session, source.watermark_name) == batch.until
    assert subscriptions(app_db) == 5


def test_order_ids_are_ingested_without_moving_the_watermark(anubis_env: str) -> None:
    app_db, source = AppDatabase(), OrdersSource()
    source.load([make_order(i) for i in range(1, 4)])
    outcome = ingest_orders(app_db.session, source, after=None, until=None, order_ids=[2])
    assert outcome.report.created == 1
    with app_db.session() as session:
        assert read_watermark(session, source.watermark_name) is None
    with pytest.raises(ValueError, match="needs `until`"):
        ingest_orders(app_db.session, source, after=None, until=None)


def test_a_run_writes_in_smaller_units_once_the_database_refused_a_row(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run starts with small write units, doubles them after each chunk the database took
    whole (up to `WRITE_UNIT`: a clean chunk in one savepoint) and goes back to small ones
    after a refusal, so a run that meets refusals pays a small unit written again for each,
    not a whole chunk. Every order is still decided."""
    from anubis_dagster.intake import loop, write
    from anubis_dagster_tests.db_faults import refusing_orders

    app_db, source = AppDatabase(), OrdersSource()
    source.load([make_order(i) for i in range(1, 21)])
    (batch,) = plan_batches(source, None, settle_seconds=0)
    units: list[int] = []
    real_ingest = loop.ingest

    def ingest(*args: object, write_unit: int, **kwargs: object) -> object:
        units.append(write_unit)
        return real_ingest(*args, write_unit=write_unit, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "ingest", ingest)
    monkeypatch.setattr(write, "WRITE_UNIT", 3 * write.SMALL_WRITE_UNIT)  # reached in 2 doublings
    monkeypatch.setattr(loop, "WRITE_UNIT", 3 * write.SMALL_WRITE_UNIT)
    with refusing_orders(anubis_env, [13], "refused by the test"):
        outcome = ingest_orders(
            app_db.session, source, after=batch.after, until=batch.until, chunk_size=4
        )
    small = write.SMALL_WRITE_UNIT
    assert units == [small, 2 * small, 3 * small, 3 * small, small]  # chunk 4 holds order 13
    assert outcome.report.refused_writes == 1
    assert [q["order_id"] for q in outcome.report.quarantined] == [13]
    assert outcome.report.created == 19 and subscriptions(app_db) == 19
