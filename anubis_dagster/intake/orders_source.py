"""The marketplaces' paid orders, read from a SQL table or view.

Contract (document it to whoever owns the view): a relation named `orders` (or
`ANUBIS_ORDERS_TABLE`) with

- `id` bigint primary key: the platform's order id
- `origin` text: quero_bolsa, ead_com, guia_da_carreira or mundo_vestibular
- `checkout_step` text: `paid` once paid
- `created_at`, `updated_at` timestamps with time zone (UTC); `updated_at` must move forward
  whenever the order changes
- `payload` json (or text holding JSON): the whole order in the platform's shape (reference §1)

and an index on `(checkout_step, updated_at, id)`: the sensor's tick is a range scan on it, so
its cost does not grow with the table. The embedded default is a local SQLite file that
`anubis orders load FILE` fills from JSON Lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    and_,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from anubis_dagster.db.models import UTCDateTime
from anubis_dagster.db.session import anubis_home, get_engine, normalize_url

ORDERS_URL_ENV = "ANUBIS_ORDERS_DATABASE_URL"
ORDERS_TABLE_ENV = "ANUBIS_ORDERS_TABLE"


def default_orders_url() -> str:
    url = os.environ.get(ORDERS_URL_ENV)
    return normalize_url(url) if url else f"sqlite:///{anubis_home() / 'orders.db'}"


def orders_table(name: str = "orders", metadata: MetaData | None = None) -> Table:
    return Table(
        name,
        metadata or MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("origin", String(40)),
        Column("checkout_step", String(40), nullable=False),
        Column("created_at", UTCDateTime),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("payload", JSON, nullable=False),
        Index(f"ix_{name}_step_updated_id", "checkout_step", "updated_at", "id"),
    )


@dataclass(frozen=True, order=True)
class OrderKey:
    """A position in the paid-orders stream: orders are read in (updated_at, id) order."""

    updated_at: datetime
    id: int

    def to_json(self) -> str:
        return json.dumps({"updated_at": self.updated_at.isoformat(), "id": self.id})

    @classmethod
    def from_json(cls, text: str | None) -> OrderKey | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(_utc(datetime.fromisoformat(data["updated_at"])), int(data["id"]))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


@dataclass(frozen=True)
class OrderRow:
    id: int
    updated_at: datetime
    payload: Any  # the order document; may be malformed


class OrdersSource:
    """Reads paid orders in (updated_at, id) order from the orders relation."""

    def __init__(self, url: str | None = None, table: str | None = None) -> None:
        self.url = normalize_url(url or default_orders_url())
        self.table = orders_table(table or os.environ.get(ORDERS_TABLE_ENV, "orders"))

    @property
    def engine(self) -> Engine:
        return get_engine(self.url)

    def ensure_table(self) -> None:
        """Create the orders table (embedded/demo databases only; never on the platform's)."""
        self.table.metadata.create_all(self.engine, tables=[self.table])

    def _after(self, after: OrderKey | None) -> ColumnElement[bool]:
        """Paid orders after `after`. A row-value comparison, so the index scan starts at the
        cursor (an OR of two conditions is only a filter, and re-reads from the start)."""
        t = self.table.c
        if after is None:
            return t.checkout_step == "paid"
        return and_(
            t.checkout_step == "paid",
            tuple_(t.updated_at, t.id) > tuple_(literal(after.updated_at, UTCDateTime()), after.id),
        )

    def next_keys(self, after: OrderKey | None, *, horizon: datetime, limit: int) -> list[OrderKey]:
        """Keys of the next paid orders after `after`, up to `horizon` (index-only scan)."""
        t = self.table.c
        query = (
            select(t.updated_at, t.id)
            .where(self._after(after), t.updated_at <= horizon)
            .order_by(t.updated_at, t.id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [OrderKey(_utc(u), int(i)) for u, i in connection.execute(query)]

    def read_range(
        self, after: OrderKey | None, until: OrderKey, *, chunk_size: int = 500
    ) -> Iterator[list[OrderRow]]:
        """Paid orders with after < key <= until, in chunks (bounded memory for any range)."""
        t = self.table.c
        cursor = after
        while True:
            query = (
                select(t.id, t.updated_at, t.payload)
                .where(
                    self._after(cursor),
                    tuple_(t.updated_at, t.id)
                    <= tuple_(literal(until.updated_at, UTCDateTime()), until.id),
                )
                .order_by(t.updated_at, t.id)
                .limit(chunk_size)
            )
            with self.engine.connect() as connection:
                rows = [
                    OrderRow(int(i), _utc(u), payload)
                    for i, u, payload in connection.execute(query)
                ]
            if not rows:
                return
            yield rows
            cursor = OrderKey(rows[-1].updated_at, rows[-1].id)

    def read_ids(self, order_ids: Iterable[int]) -> list[OrderRow]:
        t = self.table.c
        query = select(t.id, t.updated_at, t.payload).where(t.id.in_(list(order_ids)))
        with self.engine.connect() as connection:
            return [OrderRow(int(i), _utc(u), p) for i, u, p in connection.execute(query)]

    def load(self, orders: Iterable[dict[str, Any]], *, batch_size: int = 1000) -> int:
        """Insert or update orders (by id) in the platform's shape; returns how many."""
        self.ensure_table()
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        count = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            if not batch:
                return
            statement = insert(self.table).values(batch)
            statement = statement.on_conflict_do_update(
                index_elements=["id"],
                set_={
                    c: statement.excluded[c]
                    for c in ("origin", "checkout_step", "created_at", "updated_at", "payload")
                },
            )
            with self.engine.begin() as connection:
                connection.execute(statement)
            batch.clear()

        for order in orders:
            batch.append(
                {
                    "id": int(order["id"]),
                    "origin": order.get("origin"),
                    "checkout_step": order.get("checkout_step") or "unknown",
                    "created_at": parse_timestamp(order.get("created_at") or order["updated_at"]),
                    "updated_at": parse_timestamp(order["updated_at"]),
                    "payload": order,
                }
            )
            count += 1
            if len(batch) >= batch_size:
                flush()
        flush()
        return count


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Orders from a JSON Lines file; a bad line stops the load with its line number."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                order = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(order, dict) or "id" not in order or "updated_at" not in order:
                raise ValueError(f"{path}:{number}: an order needs at least id and updated_at")
            yield order
