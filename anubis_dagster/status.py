"""`anubis status`: subscription counts by integration (and origin) and status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent


def status_counts(session: Session, *, by_origin: bool = False) -> list[tuple[str, ...]]:
    columns: list[Any] = [Integration.key, Subscription.status]
    if by_origin:
        columns.insert(1, Subscription.origin)
    query = (
        select(*columns, func.count())
        .join(Integration, Integration.id == Subscription.integration_id)
        .group_by(*columns)
        .order_by(*columns)
    )
    return [tuple(str(v) if v is not None else "-" for v in row) for row in session.execute(query)]


def attempt_counts(session: Session) -> list[tuple[str, ...]]:
    """Outbound HTTP attempts by integration, operation and outcome (every attempt has a row)."""
    e = SubscriptionEvent
    columns: list[Any] = [Integration.key, e.operation_name, e.outcome]
    query = (
        select(*columns, func.count())
        .join(Integration, Integration.id == e.integration_id)
        .where(e.kind == "attempt")
        .group_by(*columns)
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
