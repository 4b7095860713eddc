"""The intake watermark: how far an intake run has *committed* the paid-orders stream.

The sensor's own cursor is optimistic: it moves when a run is requested, before anyone knows
whether the run will launch. The watermark moves only in the transaction that writes a chunk's
subscriptions (or quarantines its poison orders), so a run that never launched, failed or was
cancelled leaves its orders to the next request. One row per orders source in `cursors`.

It only moves forward, and only contiguously: a range (after, until] advances it when the
committed position is already at or past `after` (no gap is ever skipped), so an old run
re-executed by an operator never moves it back, and a run whose predecessor failed does not
jump over that predecessor's orders.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from anubis_dagster.db.models import Cursor
from anubis_dagster.intake.orders_source import OrderKey


def read_watermark(session: Session, name: str) -> OrderKey | None:
    """The committed position (None: nothing committed yet, read from the start)."""
    row = session.get(Cursor, name)
    return _parse(row.value) if row else None


def _parse(value: str | None) -> OrderKey | None:
    try:
        return OrderKey.from_json(value)
    except (ValueError, KeyError, TypeError):  # unreadable: start over (intake is idempotent)
        return None


def advance_watermark(
    session: Session, name: str, *, after: OrderKey | None, until: OrderKey
) -> bool:
    """Move the watermark to `until` after the range (after, until] was written in this
    session's transaction; True if it moved. The row is locked, so two runs cannot interleave."""
    row = session.get(Cursor, name, with_for_update=True)
    current = _parse(row.value) if row else None
    if after is not None and (current is None or current < after):
        return False  # a gap before this range is not committed yet
    if current is not None and current >= until:
        return False  # already there (a re-executed older run)
    if row is None:
        session.add(Cursor(name=name, value=until.to_json()))
    else:
        row.value = until.to_json()
    session.flush()
    return True
