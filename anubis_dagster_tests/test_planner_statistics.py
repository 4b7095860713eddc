"""Intake analyses `subscriptions` for PostgreSQL's planner when its statistics are missing or
stale (a first import, autovacuum off or not yet round), so chunk lookups keep using the
unique index instead of reading every row of the integration."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.db.statistics import GROWTH, MIN_ROWS, is_stale, refresh_if_stale
from anubis_dagster_tests.factories import make_order
from anubis_dagster_tests.test_intake_bulk import intake


@pytest.fixture
def url(db_url: str) -> str:
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
    return db_url


@pytest.mark.parametrize(
    ("reltuples", "rows_now", "changed", "stale"),
    [
        (-1, 0, 0, False),  # never analysed, empty: any plan is fast
        (-1, MIN_ROWS - 1, 5000, False),
        (-1, MIN_ROWS, 0, True),  # never analysed and holds rows (counters may lag)
        (5000, 0, GROWTH * 5000 - 1, False),  # estimates scale with the table's size
        (5000, 0, GROWTH * 5000, True),  # outgrown
        (10, 0, MIN_ROWS - 1, False),  # small changes to a small table
        (10, 0, MIN_ROWS, True),
    ],
)
def test_statistics_are_stale_when_missing_or_outgrown(
    reltuples: float, rows_now: int, changed: int, stale: bool
) -> None:
    assert is_stale(reltuples, rows_now, changed) is stale


def _reltuples(url: str) -> float:
    with get_engine(url).connect() as connection:
        query = text("SELECT reltuples FROM pg_class WHERE relname = 'subscriptions'")
        return float(connection.scalar(query))


def test_intake_analyses_a_table_it_filled_before_the_next_chunk(url: str) -> None:
    orders = [make_order(i) for i in range(1, MIN_ROWS + 51)]
    intake(url, orders[:MIN_ROWS])  # a first chunk into a never-analysed table
    if get_engine(url).dialect.name != "postgresql":
        with session_scope(url) as session:
            assert refresh_if_stale(session, "subscriptions") is False  # SQLite: nothing to do
        return
    assert _reltuples(url) < 0  # never analysed
    intake(url, orders[MIN_ROWS:])  # the next chunk analyses first
    assert _reltuples(url) >= MIN_ROWS - 100  # about the rows the first chunk created
    with session_scope(url) as session:
        assert refresh_if_stale(session, "subscriptions") is False  # fresh now: no second one


def test_an_analysis_that_would_wait_for_a_vacuum_is_left_for_later(url: str) -> None:
    """ANALYZE needs the lock a VACUUM holds (an anti-wraparound one does not give way): intake
    waits at most `LOCK_TIMEOUT_MS` for it, goes on, and its session keeps its own settings."""
    import time

    if get_engine(url).dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    intake(url, [make_order(i) for i in range(1, MIN_ROWS + 1)])
    with get_engine(url).connect() as vacuum:  # another session holding VACUUM's lock
        vacuum.execute(text("LOCK TABLE subscriptions IN SHARE UPDATE EXCLUSIVE MODE"))
        with session_scope(url) as session:
            # without the lock timeout ANALYZE would wait for ever: cut it at 10 s instead
            session.execute(text("SET LOCAL statement_timeout = '10s'"))
            started = time.monotonic()
            assert refresh_if_stale(session, "subscriptions") is False
            assert time.monotonic() - started < 5  # the lock timeout, not the statement's
            assert session.scalar(text("SELECT current_setting('lock_timeout')")) == "0"
            assert session.scalar(text("SELECT count(*) FROM subscriptions")) == MIN_ROWS
        vacuum.rollback()
    assert _reltuples(url) < 0  # not analysed: the next chunk will
    with session_scope(url) as session:
        assert refresh_if_stale(session, "subscriptions") is True
