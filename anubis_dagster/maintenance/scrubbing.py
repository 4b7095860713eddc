"""Scrubbing the places personal data lands (`personal_data.PLACES`): the rows of given
subscriptions, or every row older than a cutoff, batch by batch; and the report of a
retention pass. The rules of what is due are `maintenance/pii.py`'s (module docstring there);
this is how the rows are found and emptied.

A place with a `cursor` (append-only: age grows with id) is walked from a saved position, so
each run reads only what aged since the last one. Every step is idempotent, and a dry run
counts the same rows without writing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from anubis_dagster.db.models import Cursor
from anubis_dagster.maintenance.personal_data import (
    PLACES,
    Place,
    Subject,
    pending,
    place,
    scrub_values,
)

DEFAULT_BATCH_SIZE = 500

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass
class RetentionReport:
    """What a retention pass did (or, in a dry run, would do), per place."""

    dry_run: bool = False
    subscriptions_anonymized: int = 0
    subscriptions_expired: int = 0
    #: rows scrubbed per place of `personal_data.PLACES` (with their subscription, or by age)
    places: dict[str, int] = field(default_factory=lambda: {p.name: 0 for p in PLACES})
    batches: int = 0

    @property
    def follow_ups_cleared(self) -> int:
        return self.places["follow_ups"]

    @property
    def event_payloads_dropped(self) -> int:
        return self.places["subscription_events"]

    def add(self, name: str, count: int) -> None:
        self.places[name] = self.places.get(name, 0) + count

    def as_metadata(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "subscriptions_anonymized": self.subscriptions_anonymized,
            "subscriptions_expired": self.subscriptions_expired,
            # the names the first version of this job reported
            "follow_ups_cleared": self.follow_ups_cleared,
            "event_payloads_dropped": self.event_payloads_dropped,
            **{f"rows_scrubbed:{name}": count for name, count in self.places.items()},
            "batches": self.batches,
        }


def scrub(session: Session, p: Place, where: ColumnElement[bool], *, dry_run: bool) -> int:
    """Scrub the rows of `p` matching `where` that still hold data; the count either way."""
    if p.rewrites is not None:
        count = session.scalar(select(func.count()).select_from(p.model).where(pending(p, where)))
        if not dry_run:
            session.execute(
                update(p.model)
                .where(where, p.rewrites())
                .values(**scrub_values(p))
                .execution_options(synchronize_session=False)
            )
        return int(count or 0)
    condition = pending(p, where)
    if dry_run:
        return int(session.scalar(select(func.count()).select_from(p.model).where(condition)) or 0)
    result = session.execute(
        update(p.model)
        .where(condition)
        .values(**scrub_values(p))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def scrub_subject(
    session: Session, subject: Subject, *, dry_run: bool, report: RetentionReport
) -> None:
    """Every place's rows of these subscriptions/orders."""
    for p in PLACES:
        report.add(p.name, scrub(session, p, p.of_subject(subject), dry_run=dry_run))


def scrub_aged(
    session_factory: SessionFactory,
    p: Place,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
    dry_run: bool = False,
    not_of: Any = None,
) -> RetentionReport:
    """Scrub the rows of one place older than `cutoff`, whatever their subscription's status.

    A place with a `cursor` (append-only: age grows with id) is walked from a saved position
    and the walk stops at the first young row, so each run reads only what aged since the
    last one, however long the table grows; losing the position only costs one full walk.
    Other places are walked by id over their old rows that still hold data.
    """
    report = report or RetentionReport(dry_run=dry_run)
    model_id = p.model.id  # type: ignore[attr-defined]
    after: int | None = None
    while True:
        with session_factory() as session:
            position = session.get(Cursor, p.cursor) if p.cursor else None
            if after is None:
                after = int(position.value) if position is not None else 0
            old = _aged_ids(session, p, cutoff, after, batch_size)
            done = len(old) < batch_size
            if old:
                where = model_id.between(old[0], old[-1]) if p.cursor else model_id.in_(old)
                if not_of is not None:
                    where = and_(where, not_of)
                report.add(p.name, scrub(session, p, where, dry_run=dry_run))
                after = old[-1]
                report.batches += 1
                if p.cursor and not dry_run:
                    if position is None:
                        session.add(Cursor(name=p.cursor, value=str(after)))
                    else:
                        position.value = str(after)
            if done:
                return report


def _aged_ids(
    session: Session, p: Place, cutoff: datetime, after: int, batch_size: int
) -> list[int]:
    """The ids of the next batch of `p`'s rows older than `cutoff`, after id `after`: with a
    cursor, up to the first young row (append-only: the rest are younger still); without, the
    old rows that still hold data."""
    model_id = p.model.id  # type: ignore[attr-defined]
    if not p.cursor:
        return list(
            session.scalars(
                select(model_id)
                .where(p.aged(cutoff), p.holds_data(), model_id > after)
                .order_by(model_id)
                .limit(batch_size)
            )
        )
    rows = session.execute(
        select(model_id, p.aged(cutoff).label("old"))
        .where(model_id > after)
        .order_by(model_id)
        .limit(batch_size)
    ).all()
    old: list[int] = []
    for row in rows:
        if not row.old:
            break
        old.append(row.id)
    return old


def purge_event_payloads(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Drop `request`, `response` and `error_message` of every event created before `cutoff`."""
    return scrub_aged(
        session_factory,
        place("subscription_events"),
        cutoff,
        batch_size=batch_size,
        report=report,
        dry_run=dry_run,
    )
