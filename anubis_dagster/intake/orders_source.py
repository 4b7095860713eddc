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

The production path never creates the relation: only the demo and sandbox tools
(`anubis orders load`/`generate`, `make demo`) do. A missing relation is one clear error naming
`ANUBIS_ORDERS_TABLE` (`OrdersTableMissing`; `check_orders_source` for `anubis doctor`).
Payloads are read as text and parsed by intake, so a row that is not JSON is a poison order
for intake to quarantine, not an exception that stops the read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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
    Text,
    and_,
    cast,
    inspect,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from anubis_dagster.core.field_rules import MAX_ID
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import UTCDateTime
from anubis_dagster.db.session import anubis_home, get_engine, normalize_url
from anubis_dagster.settings import get_settings

ORDERS_URL_ENV = "ANUBIS_ORDERS_DATABASE_URL"
ORDERS_TABLE_ENV = "ANUBIS_ORDERS_TABLE"
#: columns intake reads; a relation without them cannot be the orders source
REQUIRED_COLUMNS = ("id", "checkout_step", "updated_at", "payload")

T = TypeVar("T")


class OrdersTableMissing(RuntimeError):
    """The configured orders relation does not exist (intake never creates it)."""


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def missing_table_message(url: str, table: str) -> str:
    return (
        f"{ORDERS_TABLE_ENV}: the orders table or view '{table}' does not exist in "
        f"{_safe_url(url)} ({ORDERS_URL_ENV}); create it (see the orders source contract) or "
        f"point {ORDERS_TABLE_ENV} at the platform's view. Intake never creates it; only the demo "
        "commands (`anubis orders load`/`generate`, `make demo`) do."
    )


def default_orders_url() -> str:
    url = get_settings().orders_database_url()
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
        self.table = orders_table(table or get_settings().anubis_orders_table)

    @property
    def engine(self) -> Engine:
        return get_engine(self.url)

    @property
    def watermark_name(self) -> str:
        """This source's key in the app DB's `cursors` (the committed intake position): the
        table plus a digest of the URL without its password, so two sources never share one."""
        digest = hashlib.sha256(f"{_safe_url(self.url)}|{self.table.name}".encode()).hexdigest()
        return f"intake/{self.table.name[:40]}/{digest[:16]}"

    def ensure_table(self) -> None:
        """Create the orders table (demo and sandbox tools only; never the production path)."""
        self.table.metadata.create_all(self.engine, tables=[self.table])

    def exists(self) -> bool:
        return bool(inspect(self.engine).has_table(self.table.name))

    def _query(self, read: Callable[[], T]) -> T:
        """Run a read; a missing relation becomes `OrdersTableMissing` naming the variable."""
        try:
            return read()
        except DBAPIError:
            if not self.exists():
                raise OrdersTableMissing(missing_table_message(self.url, self.table.name)) from None
            raise

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

        def read() -> list[OrderKey]:
            with self.engine.connect() as connection:
                return [OrderKey(_utc(u), int(i)) for u, i in connection.execute(query)]

        return self._query(read)

    def read_range(
        self, after: OrderKey | None, until: OrderKey, *, chunk_size: int = 500
    ) -> Iterator[list[OrderRow]]:
        """Paid orders with after < key <= until, in chunks (bounded memory for any range)."""
        t = self.table.c
        cursor = after
        while True:
            query = (
                select(t.id, t.updated_at, self._payload_text())
                .where(
                    self._after(cursor),
                    tuple_(t.updated_at, t.id)
                    <= tuple_(literal(until.updated_at, UTCDateTime()), until.id),
                )
                .order_by(t.updated_at, t.id)
                .limit(chunk_size)
            )

            def read(query: Any = query) -> list[OrderRow]:
                with self.engine.connect() as connection:
                    return [OrderRow(int(i), _utc(u), p) for i, u, p in connection.execute(query)]

            rows = self._query(read)
            if not rows:
                return
            yield rows
            cursor = OrderKey(rows[-1].updated_at, rows[-1].id)

    def read_ids(self, order_ids: Iterable[int]) -> list[OrderRow]:
        t = self.table.c
        query = select(t.id, t.updated_at, self._payload_text()).where(t.id.in_(list(order_ids)))

        def read() -> list[OrderRow]:
            with self.engine.connect() as connection:
                return [OrderRow(int(i), _utc(u), p) for i, u, p in connection.execute(query)]

        return self._query(read)

    def _payload_text(self) -> Any:
        """The payload as the text the database holds: intake parses it, so a row that is not
        JSON is an invalid order for intake to quarantine, not an error that stops the read."""
        return cast(self.table.c.payload, Text).label("payload")

    def load(self, orders: Iterable[dict[str, Any]], *, batch_size: int = 1000) -> int:
        """Insert or update orders (by id) in the platform's shape, all in one transaction (all
        or nothing); returns how many distinct orders. Demo and test tool: creates the table.
        An id given twice keeps its last version (PostgreSQL refuses one statement that
        updates a row twice)."""
        self.ensure_table()
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        rows: dict[int, dict[str, Any]] = {}
        for order in orders:
            rows[int(order["id"])] = {
                "id": int(order["id"]),
                "origin": order.get("origin"),
                "checkout_step": order.get("checkout_step") or "unknown",
                "created_at": parse_timestamp(order.get("created_at") or order["updated_at"]),
                "updated_at": parse_timestamp(order["updated_at"]),
                "payload": order,
            }
        values = list(rows.values())
        with self.engine.begin() as connection:
            for start in range(0, len(values), batch_size):
                statement = insert(self.table).values(values[start : start + batch_size])
                statement = statement.on_conflict_do_update(
                    index_elements=["id"],
                    set_={
                        c: statement.excluded[c]
                        for c in ("origin", "checkout_step", "created_at", "updated_at", "payload")
                    },
                )
                connection.execute(statement)
        return len(values)


def check_orders_source(url: str | None = None, table: str | None = None) -> list[str]:
    """Problems of the configured orders source, each naming the variable to fix (empty list:
    fine). For `anubis doctor`: it connects and inspects, and never creates anything."""
    table = table if table is not None else get_settings().anubis_orders_table
    if not table.strip():
        return [f"{ORDERS_TABLE_ENV}: is empty; name the orders table or view"]
    try:
        url = normalize_url(url or default_orders_url())
        parsed = make_url(url)
    except ArgumentError:
        return [f"{ORDERS_URL_ENV}: is not a database URL (e.g. postgresql://user@host/db)"]
    database = parsed.database or ""
    sqlite_file = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if sqlite_file and not Path(database).exists():  # connecting would create the file
        return [
            f"{ORDERS_URL_ENV}: the SQLite file {database} does not exist "
            f"(so neither does the orders table '{table}'; {ORDERS_TABLE_ENV})"
        ]
    try:
        inspector = inspect(get_engine(url))
        if not inspector.has_table(table):
            return [missing_table_message(url, table)]
        columns = {c["name"] for c in inspector.get_columns(table)}
    except Exception as exc:  # unreachable server, bad credentials, missing driver…
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        return [
            f"{ORDERS_URL_ENV}: cannot read {_safe_url(url)}: "
            f"{type(exc).__name__}: {mask_text(first)[:200]}"
        ]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [
            f"{ORDERS_TABLE_ENV}: '{table}' lacks the column(s) {', '.join(missing)} of the "
            "orders source contract"
        ]
    return []


@dataclass
class OrdersFile:
    """A JSON Lines file of orders, checked line by line before anything is loaded."""

    orders: list[dict[str, Any]]  # distinct orders, in file order
    errors: list[str]  # "FILE:LINE: field: what is wrong" (never the value)
    repeated: int = 0  # identical lines, loaded once


_COLUMN_TEXT = {"origin": 40, "checkout_step": 40}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null"
    return "a list" if isinstance(value, list) else "an object"


def _check_timestamp(order: dict[str, Any], name: str, required: bool) -> str | None:
    value = order.get(name)
    if value is None:
        return f"{name}: required" if required else None
    if not isinstance(value, str):
        return f"{name}: must be an ISO 8601 timestamp, not {_describe(value)}"
    try:
        parse_timestamp(value)
    except ValueError:
        return f"{name}: must be an ISO 8601 timestamp"
    return None


def _line_problems(order: Any) -> list[str]:
    if not isinstance(order, dict):
        return [f"order: must be a JSON object, not {_describe(order)}"]
    problems = []
    order_id = order.get("id")
    if order_id is None:
        problems.append("id: required")
    elif isinstance(order_id, bool) or not isinstance(order_id, int):
        problems.append(f"id: must be an integer, not {_describe(order_id)}")
    elif not 1 <= order_id <= MAX_ID:
        problems.append(f"id: must be between 1 and {MAX_ID}")
    for name, required in (("updated_at", True), ("created_at", False)):
        if message := _check_timestamp(order, name, required):
            problems.append(message)
    for name, limit in _COLUMN_TEXT.items():
        value = order.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"{name}: must be text, not {_describe(value)}")
        elif len(value) > limit or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
            problems.append(f"{name}: must be text of at most {limit} plain characters")
    return problems


def read_orders_file(path: Path) -> OrdersFile:
    """Check every line of a JSON Lines file of orders: valid JSON objects, integer ids within
    bigint (JSON `true` or `2.7` is an error, never order 1 or 2), timestamps, the columns'
    bounds; an identical repeated line counts once; two different lines with one id is an
    error naming both lines. Errors name the line and the field, never the value."""
    result = OrdersFile(orders=[], errors=[])
    seen: dict[int, tuple[int, dict[str, Any]]] = {}
    conflicting: set[int] = set()
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                order = json.loads(line, parse_constant=_reject_constant)
            except RecursionError:
                result.errors.append(f"{where}: order: nested too deeply")
                continue
            except ValueError as exc:
                message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                result.errors.append(f"{where}: not valid JSON ({message})")
                continue
            problems = _line_problems(order)
            if problems:
                result.errors.extend(f"{where}: {problem}" for problem in problems)
                continue
            previous = seen.get(order["id"])
            if previous is not None:
                if previous[1] == order:
                    result.repeated += 1
                else:
                    conflicting.add(order["id"])
                    result.errors.append(
                        f"{where}: id: order {order['id']} is also on line {previous[0]}, "
                        "with different content"
                    )
                continue
            seen[order["id"]] = (number, order)
            result.orders.append(order)
    # a conflicting id makes both lines bad: neither version is loaded with --skip-bad
    if conflicting:
        result.orders = [o for o in result.orders if o["id"] not in conflicting]
    return result


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Orders from a JSON Lines file; any bad line raises ValueError naming its line."""
    checked = read_orders_file(path)
    if checked.errors:
        raise ValueError("\n".join(checked.errors))
    yield from checked.orders
