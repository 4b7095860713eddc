"""`anubis status`: subscription counts by integration (and origin) and status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent


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


def attempt_counts(session: Session) -> list[tuple[str, ...]]:
    """Outbound HTTP attempts by integration, operation and outcome (every attempt has a row),
    counted from the partial index of attempts, then named."""
    e = SubscriptionEvent
    grouped: list[Any] = [e.integration_id, e.operation_name, e.outcome]
    counted = (
        select(*grouped, func.count().label("n"))
        .where(e.kind == "attempt")
        .group_by(*grouped)
        .subquery()
    )
    columns: list[Any] = [Integration.key, counted.c.operation_name, counted.c.outcome]
    query = (
        select(*columns, counted.c.n)
        .join(Integration, Integration.id == counted.c.integration_id)
        .order_by(*columns)
    )
    return [tuple(str(v) if v is not None else "-" for v in row) for row in session.execute(query)]


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
