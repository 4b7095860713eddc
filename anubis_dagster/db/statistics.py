"""Planner statistics for tables intake fills in bulk.

PostgreSQL's planner reads a never-analysed table as a few hundred rows. Intake's lookups
(`order_id = ANY(…)` for a chunk of 1,000 orders) then choose a bitmap scan of every row of the
integration and filter it: measured at 100k subscriptions, 80–190 ms per lookup instead of a
few, so a first import slows down as the table grows. Autovacuum analyses tables in
production, but not before its next round (a minute) and not at all where it is off; the
PostgreSQL manual's advice for bulk loads is to `ANALYZE` afterwards. `refresh_if_stale` does
that, cheaply enough to ask before every chunk: one catalog query, and an `ANALYZE` only when
the table was never analysed and holds rows, or changed by more than `GROWTH` times what it
held when it last was. (The planner scales what it learnt by the table's size now, so an
analysis at 1,000 rows still serves at 100,000 for these lookups; each costs about 150 ms at
50,000 rows, and a first import of 100,000 orders now pays for three.)
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

#: below this many rows any plan is fast; no ANALYZE for them
MIN_ROWS = 1000
#: analysed again once changed by this many times the rows it held when last analysed
GROWTH = 4
#: how long an ANALYZE may wait for the table's lock before it is left for a later chunk
LOCK_TIMEOUT_MS = 200
log = logging.getLogger(__name__)


def is_stale(reltuples: float, rows_now: int, changed: int) -> bool:
    """Whether the planner's picture of a table is too far from the table: never analysed
    (`reltuples` < 0) while it holds `MIN_ROWS` or more, or `changed` rows (inserted, updated,
    deleted since the last analysis) beyond `GROWTH` times what it held then."""
    if reltuples < 0:
        return rows_now >= MIN_ROWS
    return changed >= max(MIN_ROWS, GROWTH * reltuples)


def refresh_if_stale(session: Session, table: str) -> bool:
    """`ANALYZE table` in the session's transaction when its statistics are stale (PostgreSQL;
    SQLite's planner prefers the unique index without statistics). True when it analysed."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    row = session.execute(
        text(
            "SELECT c.reltuples, COALESCE(s.n_mod_since_analyze, 0) FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = to_regclass(:table)"
        ),
        {"table": table},
    ).first()
    if row is None:
        return False
    reltuples, changed = float(row[0]), int(row[1])
    rows_now = 0
    if reltuples < 0:  # counted up to MIN_ROWS: the activity counters lag by seconds
        rows_now = int(
            session.scalar(
                text(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {MIN_ROWS}) AS t")  # nosec B608: a model's table name (it resolved through to_regclass), an int constant
            )
            or 0
        )
    if not is_stale(reltuples, rows_now, changed):
        return False
    known = "never analysed" if reltuples < 0 else f"{reltuples:.0f} rows when last analysed"
    log.info("analysing %s for the planner (%s)", table, known)
    # ANALYZE waits for a VACUUM of the table (same lock); an anti-wraparound one does not
    # give way and may last minutes: rather leave it to a later chunk than hold intake up
    lock_timeout = session.scalar(text("SELECT current_setting('lock_timeout')"))
    try:
        with session.begin_nested():
            session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
            session.execute(text(f"ANALYZE {table}"))
    except OperationalError as exc:
        log.info("%s not analysed now: %s", table, type(exc.orig).__name__)
        return False
    finally:  # SET LOCAL outlives the released savepoint: back to the session's setting
        reset = text("SELECT set_config('lock_timeout', :value, true)")
        session.execute(reset, {"value": lock_timeout})
    return True
