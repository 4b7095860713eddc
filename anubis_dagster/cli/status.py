"""`anubis status`: subscription counts by integration (and origin) and status, and the
attempts of the last days (`ATTEMPT_DAYS`) by outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent

#: the days of attempts `anubis status` counts by default (`--attempt-days`; 0: all of them)
ATTEMPT_DAYS = 7


def status_counts(session: Session, *, by_origin: bool = False) -> list[tuple[str, ...]]:
    """Counted by integration id (from an index alone), then named: joining each of a million
    rows to its integration first cost twice as much (issue 20)."""
    s = Subscription
    grouped: list[Any] = [s.integration_id, s.status]
    if by_origin:
        grouped.insert(1, s.origin)
    counted = select(*grouped, func.count().label("n")).group_by(*grouped).subquery()
    columns: list[Any] = [Integration.key, counted.c.status]
    if by_origin:
        columns.insert(1, counted.c.origin)
    query = (
        select(*columns, counted.c.n)
        .join(Integration, Integration.id == counted.c.integration_id)
        .order_by(*columns)
    )
    return [tuple(str(v) if v is not None else "-" for v in row) for row in session.execute(query)]


def attempt_counts(
    session: Session, *, days: int = ATTEMPT_DAYS, now: datetime | None = None
) -> list[tuple[str, ...]]:
    """Outbound HTTP attempts by integration, operation and outcome (every attempt has a row)
    made in the last `days` days (0: every attempt ever made), counted from a partial index of
    the attempts, then named.

    A window because the whole count grows with the history: 2.6 million attempt rows at
    cutover size cost ~0.6 s however they are counted, while the last week's are a few tens of
    thousands of entries of `ix_subscription_events_attempts_recent` (ordered by time). Counts
    kept as attempts are written would have been another way; they would need every writer
    (and retention, which deletes rows) to keep them true, and make one row per integration,
    operation and outcome a point every delivery run waits on."""
    e = SubscriptionEvent
    grouped: list[Any] = [e.integration_id, e.operation_name, e.outcome]
    where = [e.kind == "attempt"]
    if days:
        where.append(e.created_at >= (now or datetime.now(UTC)) - timedelta(days=days))
    counted = select(*grouped, func.count().label("n")).where(*where).group_by(*grouped).subquery()
    columns: list[Any] = [Integration.key, counted.c.operation_name, counted.c.outcome]
    query = (
        select(*columns, counted.c.n)
        .join(Integration, Integration.id == counted.c.integration_id)
        .order_by(*columns)
    )
    return [tuple(str(v) if v is not None else "-" for v in row) for row in session.execute(query)]


def attempts_heading(days: int) -> str:
    """What the attempt table covers, printed above it."""
    return f"attempts in the last {days} days" if days else "every attempt"


def format_table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(w) if i == len(values) - 1 else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    out = [line(headers), line(tuple("-" * w for w in widths))]
    out.extend(line(r) for r in rows)
    total = sum(int(r[-1]) for r in rows)
    out.append(f"total: {total}")
    return "\n".join(out)
