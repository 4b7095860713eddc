"""The bulk writer of subscriptions and their event rows: a batch of any size in a few
statements, `COPY` on PostgreSQL and one `executemany` per table on SQLite.

Intake creates subscriptions by the thousand (and the legacy import by the hundred thousand),
so the rules of `db.transitions` also come as column values (`subscription_values`,
`event_values`, `transition_values`) that `write_rows` writes here instead of one ORM flush per
row. Writing on the driver's cursor bypasses SQLAlchemy and so the cursor hook of
`db.redact_writes`: every value is redacted here the same way (`_converters`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from sqlalchemy import JSON, ColumnElement, Table, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from anubis_dagster.core.redaction import redact, redacted_json
from anubis_dagster.db import outbox
from anubis_dagster.db.models import Subscription, SubscriptionEvent, UTCDateTime

#: `column IN (values)` as a batch's lookups write it (`one_of_for`)
OneOf = Callable[[Any, list[Any]], ColumnElement[bool]]


def one_of_for(session: Session) -> OneOf:
    """`column IN (values)` for a batch's worth of values, to read what a batch will write
    over. PostgreSQL: `= ANY(array)`, one parameter; with 500 `IN` parameters psycopg spends
    longer parsing the statement in Python than the server spends answering it."""
    if session.get_bind().dialect.name != "postgresql":
        return lambda column, values: column.in_(values)
    return lambda column, values: (
        column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    )


def allocate_subscription_ids(session: Session, count: int, *, above: int = 0) -> list[int]:
    """`count` fresh subscription ids, taken before the rows are written so that event rows
    (and a duplicate's "held by #id") can be built in Python. PostgreSQL: from the column's
    sequence. SQLite: after the current maximum and after `above` (ids the caller holds for
    rows not written yet), which is what SQLite itself would hand out; safe because Anubis
    opens SQLite transactions with BEGIN IMMEDIATE (the write lock is held from the
    transaction's first statement, before this read)."""
    if count <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        query = text(
            "SELECT nextval(pg_get_serial_sequence('subscriptions', 'id')) "
            "FROM generate_series(1, :count)"
        )
        return sorted(int(i) for i in session.scalars(query, {"count": count}))
    start = max(session.scalar(select(func.coalesce(func.max(Subscription.id), 0))) or 0, above)
    return list(range(int(start) + 1, int(start) + 1 + count))


#: PostgreSQL: a batch of new subscriptions that conflicts with another transaction's is
#: copied here, then inserted with `ON CONFLICT DO NOTHING` (COPY cannot skip a row)
STAGING_TABLE = "anubis_subscriptions_staging"
ORDER_CONSTRAINT = "uq_subscriptions_integration_order"  # one subscription per order


class RenderedJson:
    """The redacted JSON text of each document a caller may write more than once (intake
    writes a chunk again in parts after the database refused one of its rows), rendered once.
    Keyed by identity, and holding the document so that its id is not reused while the cache
    lives; the documents must not change meanwhile."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Any, str]] = {}

    def text(self, value: Any) -> str:
        entry = self._texts.get(id(value))
        if entry is not None and entry[0] is value:
            return entry[1]
        text = _json_text(value)
        if isinstance(value, dict | list):
            self._texts[id(value)] = (value, text)
        return text


def write_rows(
    session: Session,
    *,
    subscriptions: list[dict[str, Any]],
    updates: list[dict[str, Any]],
    events: list[dict[str, Any]],
    rendered: RenderedJson | None = None,
) -> set[int]:
    """Write a batch built from `subscription_values` (with `id`, `created_at`, `updated_at`
    added), `transition_values` (with `id` and the changed order columns) and `event_values`
    with a few statements whatever its size: on PostgreSQL `COPY`, on SQLite one
    `executemany` per table. Rows of one list must have the same keys.

    Returns the ids of the subscriptions inserted. On PostgreSQL a subscription another
    transaction inserted meanwhile for the same (integration, order) is skipped (`ON CONFLICT
    DO NOTHING`), and so is its event; on SQLite that cannot happen (the write lock is held
    since the caller read what exists). Any other refusal raises: the caller isolates the row.
    `rendered` keeps the JSON text of documents written again.
    """
    table = cast(Table, Subscription.__table__)
    event_table = cast(Table, SubscriptionEvent.__table__)
    postgres = session.get_bind().dialect.name == "postgresql"
    inserted: set[int] = set()
    if subscriptions:
        if postgres:
            inserted = _copy_subscriptions(session, subscriptions, rendered)
        else:
            _insert_many(session, table, subscriptions, rendered)
            inserted = {row["id"] for row in subscriptions}
    # the outbox rows of statuses other services hear about (none of intake's own), before
    # the updates: the previous status is read from the table
    outbox.bulk_event_rows(
        session,
        created=(row for row in subscriptions if row["id"] in inserted),
        updated=updates,
        events=events,
    )
    update_rows(session, updates)
    updated = {row["id"] for row in updates}
    events = [
        e for e in events if e["subscription_id"] in inserted or e["subscription_id"] in updated
    ]
    if events:
        if postgres:
            _copy(session, event_table, events, rendered=rendered)
        else:
            _insert_many(session, event_table, events, rendered)
    return inserted


def update_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Update subscriptions by id in one `executemany`: each row is `id` and the columns it
    changes (the same keys in every row)."""
    if not rows:
        return
    table = cast(Table, Subscription.__table__)
    columns = [name for name in rows[0] if name != "id"]
    changes = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({name: bindparam(f"_{name}") for name in columns})
    )
    session.execute(changes, [{f"_{name}": value for name, value in row.items()} for row in rows])


def _copy_subscriptions(
    session: Session, rows: list[dict[str, Any]], rendered: RenderedJson | None
) -> set[int]:
    """COPY new subscriptions straight into the table, in a savepoint. COPY cannot skip a row:
    if a unique constraint refuses one (another transaction inserted one of these
    (integration, order) pairs since the caller looked: two intakes of the same orders at
    once), the batch goes again through a staging table and `INSERT … ON CONFLICT DO
    NOTHING` on the order's constraint, which the common case does not pay for (three
    statements and the rows written twice). A refusal that remains there (a CPF another
    transaction holds) raises, as any other."""
    table = cast(Table, Subscription.__table__)
    try:
        with session.begin_nested():
            _copy(session, table, rows, rendered=rendered)
        return {row["id"] for row in rows}
    except IntegrityError as exc:
        # the order's constraint or a CPF's: which one PostgreSQL checks first varies
        if not isinstance(exc.orig, psycopg.errors.UniqueViolation):
            raise
    columns = ", ".join(rows[0])
    session.execute(
        text(
            # dropped at commit: a temp table kept by a pooled connection would hold a
            # dependency on the id sequence, and a migration could not drop or alter it
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} "
            "(LIKE subscriptions INCLUDING DEFAULTS) ON COMMIT DROP"
        )
    )
    _copy(session, table, rows, into=STAGING_TABLE, rendered=rendered)
    ids = session.scalars(
        text(
            f"INSERT INTO subscriptions ({columns}) SELECT {columns} FROM {STAGING_TABLE} "  # nosec B608: constant names (staging table, columns of the model)
            f"ORDER BY id ON CONFLICT ON CONSTRAINT {ORDER_CONSTRAINT} DO NOTHING RETURNING id"
        )
    )
    inserted = set(ids)
    session.execute(text(f"DELETE FROM {STAGING_TABLE}"))  # the next batch of this transaction  # nosec B608: constant names (staging table, columns of the model)
    return inserted


def _copy(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    into: str | None = None,
    rendered: RenderedJson | None = None,
) -> None:
    """`COPY` rows of `table` (or of a table shaped like it, `into`) in the session's
    transaction, each value as `_converters` makes it. The driver's errors are raised as
    SQLAlchemy raises those of any other statement (`IntegrityError`, `ProgrammingError`…,
    the driver's in `orig`)."""
    names = list(rows[0])
    pairs = list(zip(_converters(table, names, rendered), names, strict=True))
    driver = session.connection().connection.driver_connection
    assert driver is not None
    statement = f"COPY {into or table.name} ({', '.join(names)}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([f(row[n]) for f, n in pairs])
    except psycopg.Error as exc:
        context = _COPY_LINE.search(exc.diag.context or "")
        refused = (
            RefusedRow(table.name, int(context.group(2)) - 1)
            if context is not None and context.group(1) == (into or table.name)
            else None
        )
        raise _bulk_write_error(statement, exc, psycopg.Error, refused) from exc


_COPY_LINE = re.compile(r"^COPY (\w+), line (\d+)", re.MULTILINE)  # in a COPY error's context


@dataclass(frozen=True)
class RefusedRow:
    """Which row of a bulk write the database refused: its table and its index in the rows
    `write_rows` was given for that table."""

    table: str
    index: int


_REFUSED_ROW = "anubis_refused_row"  # the attribute of the raised error that carries it


def _bulk_write_error(
    statement: str, exc: Exception, driver_error: type[Exception], refused: RefusedRow | None
) -> StatementError:
    """The driver's error as SQLAlchemy would raise it (bound values hidden), carrying the
    refused row when the database named it. Made here, not in the writer's frame: an error
    held by a local of a frame its own traceback holds is a reference cycle, which keeps the
    whole chunk's rows alive until the cyclic collector runs (and intake pauses it)."""
    error = DBAPIError.instance(statement, None, exc, driver_error, hide_parameters=True)
    if refused is not None:
        setattr(error, _REFUSED_ROW, refused)
    return error


def refused_row(error: BaseException) -> RefusedRow | None:
    """The row the database refused in a bulk write of `write_rows`, when it said which (a
    COPY error's context names its line; a SQLite `executemany` stops at the refused row,
    after writing the rows before it). Carried on the SQLAlchemy error `write_rows` raises."""
    found = getattr(error, _REFUSED_ROW, None)
    return found if isinstance(found, RefusedRow) else None


def _insert_many(
    session: Session, table: Table, rows: list[dict[str, Any]], rendered: RenderedJson | None
) -> None:
    """SQLite: one `executemany` of the rows on the driver's cursor, each value as
    `_converters` makes it for SQLite. Through SQLAlchemy the same statement spent more time
    in per-row parameter processing (and in the cursor hook's redaction of every JSON text)
    than SQLite spent writing. Errors are raised as SQLAlchemy raises them."""
    names = list(rows[0])
    dialect = session.get_bind().dialect
    pairs = list(zip(_converters(table, names, rendered, dialect), names, strict=True))
    statement = (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # nosec B608: the model's table and column names; values are bound (?)
    )
    driver = session.connection().connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.executemany(statement, ([f(row[n]) for f, n in pairs] for row in rows))
    except sqlite3.Error as exc:
        refused = _rows_written_before(driver, table, rows)
        raise _bulk_write_error(statement, exc, sqlite3.Error, refused) from exc
    finally:
        cursor.close()


def _rows_written_before(
    driver: sqlite3.Connection, table: Table, rows: list[dict[str, Any]]
) -> RefusedRow | None:
    """After SQLite's `executemany` failed: how many of `rows` went in before the refused one
    (the statement failed, not the transaction), which makes it the next one. None when the
    rows carry no id, or when the database itself is failing (then the error stands alone)."""
    if "id" not in rows[0]:
        return None
    ids = [row["id"] for row in rows]
    marks = ", ".join("?" * len(ids))
    count = f"SELECT count(*) FROM {table.name} WHERE id IN ({marks})"  # nosec B608: the model's table name; ids are bound (?)
    try:
        written = driver.execute(count, ids).fetchone()[0]
    except sqlite3.Error:
        return None
    return RefusedRow(table.name, int(written))


def _converters(
    table: Table, names: list[str], rendered: RenderedJson | None, dialect: Any = None
) -> list[Callable[[Any], Any]]:
    """How each value of a bulk write reaches the database, bypassing SQLAlchemy and so the
    cursor hook of `db.redact_writes`: every value is redacted here the same way, text with
    `redact`, JSON documents with `redact_data` (`redacted_json`; a JSON column's None is JSON
    `null`, as SQLAlchemy's JSON type stores it). With a `dialect` (SQLite), other values
    take their column type's own form (datetimes as SQLite's text); psycopg's COPY formats
    them itself."""
    json_text = rendered.text if rendered is not None else _json_text
    converters: list[Callable[[Any], Any]] = []
    for name in names:
        column_type = table.c[name].type
        # the dialect's own type (SQLite's DATETIME writes the text SQLAlchemy reads and
        # compares with): the generic type has no processor, and sqlite3's would format it
        process = (
            column_type.dialect_impl(dialect).bind_processor(dialect)
            if dialect is not None
            else None
        )
        if isinstance(column_type, JSON):
            converters.append(json_text)
        elif dialect is not None and isinstance(column_type, UTCDateTime):
            converters.append(_last_one(_sqlite_utc_text))
        elif process is not None:
            converters.append(process)
        else:
            converters.append(_redacted_values())
    return converters


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """The text `UTCDateTime` and SQLite's DATETIME processor together store (naive UTC,
    `%Y-%m-%d %H:%M:%S.%f`), written by `isoformat` in C: four datetimes per order through
    SQLAlchemy's processors in Python were a measurable share of a SQLite first pass."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json_text(value: Any) -> str:
    if value is None or value == {}:  # most events' request and response, every new ies_data
        return "null" if value is None else "{}"
    return redacted_json(value)


def _last_one(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert`, answering again without work when given the same object as the last call:
    a batch's `created_at`, `updated_at` and `scheduled_to` are one `now` for every row."""
    last: list[Any] = [_UNSET, None]

    def converted(value: Any) -> Any:
        if value is last[0]:
            return last[1]
        last[0], last[1] = value, convert(value)
        return last[1]

    return converted


_UNSET = object()


def _redacted_values(limit: int = 1024) -> Callable[[Any], Any]:
    """How one column's values reach a bulk write: text redacted (`redact`), the redacted form
    of each text remembered (up to `limit`): most columns repeat a few values on every row (a
    status, the kind, the operation, the run id). Lives as long as the write: secrets
    registered later are seen by the next one."""
    seen: dict[str, str] = {}

    def converted(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found = seen.get(value)
        if found is None:
            found = redact(value)
            if len(seen) < limit:
                seen[value] = found
        return found

    return converted
