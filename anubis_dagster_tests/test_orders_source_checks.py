"""The intake watermark's rules and `check_orders_source` (called by `anubis doctor`), on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.intake.orders_source import OrderKey, OrdersSource, check_orders_source
from anubis_dagster.intake.watermark import advance_watermark, read_watermark

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def key(n: int) -> OrderKey:
    return OrderKey(T0 + timedelta(seconds=n), n)


def test_the_watermark_moves_forward_and_never_over_a_gap(db_url: str) -> None:
    name = "intake/orders/test"
    with session_scope(db_url) as session:
        assert read_watermark(session, name) is None
        assert not advance_watermark(session, name, after=key(5), until=key(9))  # gap (.., 5]
        assert advance_watermark(session, name, after=None, until=key(3))
    with session_scope(db_url) as session:
        assert read_watermark(session, name) == key(3)
        assert not advance_watermark(session, name, after=key(5), until=key(9))  # (3, 5] missing
        assert advance_watermark(session, name, after=key(3), until=key(6))
        assert advance_watermark(session, name, after=key(1), until=key(8))  # overlaps: fine
        assert not advance_watermark(session, name, after=None, until=key(2))  # never back
    with session_scope(db_url) as session:
        assert read_watermark(session, name) == key(8)
    try:
        with session_scope(db_url) as session:  # rolled back with the chunk's writes
            advance_watermark(session, name, after=key(8), until=key(20))
            raise RuntimeError("the chunk failed")
    except RuntimeError:
        pass
    with session_scope(db_url) as session:
        assert read_watermark(session, name) == key(8)


def test_two_sources_have_two_watermarks(tmp_path: Path) -> None:
    a = OrdersSource(f"sqlite:///{tmp_path / 'a.db'}", "orders")
    b = OrdersSource(f"sqlite:///{tmp_path / 'b.db'}", "orders")
    c = OrdersSource(f"sqlite:///{tmp_path / 'a.db'}", "orders_view")
    names = {a.watermark_name, b.watermark_name, c.watermark_name}
    assert len(names) == 3 and all(len(n) <= 80 for n in names)
    with_password = OrdersSource("postgresql://anubis:s3cret@db/platform", "orders")
    assert "s3cret" not in with_password.watermark_name


def test_check_orders_source_names_the_variable(db_url: str, tmp_path: Path) -> None:
    table = f"orders_{uuid.uuid4().hex[:8]}"
    (missing,) = check_orders_source(db_url, table)
    assert missing.startswith(f"ANUBIS_ORDERS_TABLE: the orders table or view '{table}'")
    source = OrdersSource(db_url, table)
    source.ensure_table()
    try:
        assert check_orders_source(db_url, table) == []
    finally:
        source.table.drop(source.engine)
    with get_engine(db_url).begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (id BIGINT, payload TEXT)"))
    try:
        (columns,) = check_orders_source(db_url, table)
        assert columns.startswith(f"ANUBIS_ORDERS_TABLE: '{table}' lacks the column(s)")
        assert "checkout_step, updated_at" in columns
    finally:
        with get_engine(db_url).begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))
    assert check_orders_source(db_url, " ") == [
        "ANUBIS_ORDERS_TABLE: is empty; name the orders table or view"
    ]


def test_check_orders_source_on_bad_urls(tmp_path: Path) -> None:
    (bad,) = check_orders_source("not a url", "orders")
    assert bad.startswith("ANUBIS_ORDERS_DATABASE_URL: is not a database URL")
    nowhere = tmp_path / "nowhere.db"
    (absent,) = check_orders_source(f"sqlite:///{nowhere}", "orders")
    assert absent.startswith("ANUBIS_ORDERS_DATABASE_URL: the SQLite file")
    assert not nowhere.exists()  # checking never creates it
    (down,) = check_orders_source(
        "postgresql://anubis:s3cret@127.0.0.1:1/platform?connect_timeout=2", "orders"
    )
    assert down.startswith(
        "ANUBIS_ORDERS_DATABASE_URL: cannot read postgresql+psycopg://anubis:***@"
    )
    assert "s3cret" not in down
