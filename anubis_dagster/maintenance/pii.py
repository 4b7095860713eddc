# 467 lines, over the house's ~400 for now: retention passes over one registry; the per-place
# scrubbing and the subscription anonymisation are its seams (issue 24).
"""LGPD retention of the app DB: personal data is dropped, outcomes and counts are kept.

Every place personal data lands is covered (issue 22), by age, whatever the status:

- **Subscriptions that reached the end of their road** (`FINAL_STATUSES`, plus `invalid`, whose
  order only comes back if corrected at the source) and unchanged for `ANUBIS_PII_RETENTION_DAYS`
  (default 365): `cpf`, `first_name`, `last_error`, the adapter's working data (`ies_data`:
  addresses, consent receipts), the order `payload` except the keys in `KEPT_ORDER_KEYS` (order
  id, origin, price, dates and the offer: what was bought, never who bought it), and every
  place of `personal_data.PLACES` for that subscription (events, follow-ups, quarantine).
- **Subscriptions still open** (an Estácio student stays `registered`: no status check closes
  it) with no activity for `ANUBIS_PII_OPEN_RETENTION_DAYS` (default 730, never below the
  first): anonymised the same way and closed as `expired`, a final status that releases the CPF
  (nothing can be sent without the data). A subscription claimed by a live run is left for the
  next week. An open subscription still being worked (checks, retries) is never idle that long.
- **Every place of `personal_data.PLACES` by the age of its rows**, whatever their
  subscription's status: attempt request/response bodies and error texts
  (`subscription_events`), follow-ups (`follow_ups.source`), `last_error`, quarantined orders'
  reasons (`intake_quarantine`), after `ANUBIS_PII_RETENTION_DAYS`.

Dagster's side (run storage and compute logs) is `maintenance/jobs.py`'s.

What stays: ids (order, integration, IES inscription), status, attempts, timestamps, origin,
gender, and every event row with its operation, status, outcome, HTTP status and duration, so
counts and histories survive.

The CPF is dropped, not hashed: a CPF has 10^9 possible values, so an unkeyed hash is reversed
in minutes and would still be personal data (LGPD art. 12), and duplicate detection never needs
it: only subscriptions that hold a CPF (`active_cpf`) block a new order, and the rows retention
touches have released theirs, except `enrolled` (and any other final status that holds a CPF).
Those keep `active_cpf` as their one remaining personal field, because the database's
`uq_subscriptions_active_cpf` constraint is what stops a second registration of the student.

Every batch is its own short transaction, walks by id (memory bounded by the batch, however
large the backlog) and every step is idempotent, so the job can be killed and run again at any
point; a dry run walks the same rows and counts them without writing. Rows are locked with `FOR
UPDATE SKIP LOCKED` on PostgreSQL (the write lock on SQLite), so a concurrent intake that
revalidates a corrected `invalid` order is never overwritten; its change moves `updated_at` past
`anonymized_at`, which makes the row due again in N days.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from anubis_dagster.core.states import FINAL_STATUSES, Status, holds_cpf
from anubis_dagster.db.models import Cursor, Subscription, SubscriptionEvent, utcnow
from anubis_dagster.db.transitions import TRANSITION, event_values, transition_values
from anubis_dagster.maintenance.personal_data import (
    PLACES,
    Place,
    Subject,
    pending,
    place,
    scrub_values,
)
from anubis_dagster.settings import get_settings

PII_RETENTION_DAYS_ENV = "ANUBIS_PII_RETENTION_DAYS"
DEFAULT_BATCH_SIZE = 500
OPERATION = "retention"

#: Statuses whose rows are anonymised once old: no more work happens on them without new input.
RETAINED_STATUSES = frozenset(FINAL_STATUSES | {Status.INVALID})
#: Top-level order keys that say what was bought and when, never who bought it.
KEPT_ORDER_KEYS = ("id", "origin", "checkout_step", "price", "created_at", "updated_at", "offer")
#: The event purge's position (last event id whose personal data was dropped).
EVENTS_CURSOR = place("subscription_events").cursor or ""

SessionFactory = Callable[[], AbstractContextManager[Session]]


def pii_retention_days_from_env() -> int:
    """`ANUBIS_PII_RETENTION_DAYS`, through the validated settings model (an invalid value is a
    `SettingsError` naming the variable, not a traceback)."""
    return get_settings().anubis_pii_retention_days


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


def kept_order(payload: Any) -> dict[str, Any]:
    """The non-personal part of an order payload (whitelist: unknown keys are dropped)."""
    if not isinstance(payload, dict):
        return {}
    return {key: payload[key] for key in KEPT_ORDER_KEYS if key in payload}


def anonymised_values(row: Any) -> dict[str, Any]:
    """The columns that hold personal data in a subscription, emptied (`row` has `payload`)."""
    return {
        "cpf": None,
        "first_name": None,
        "last_error": None,
        "payload": kept_order(row.payload),
        "ies_data": {},
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


def _due_subscriptions(cutoff: datetime, batch_size: int, after: int = 0) -> Any:
    s = Subscription
    return (
        select(s.id, s.order_id, s.payload, s.status, s.updated_at)
        .where(
            s.id > after,
            s.status.in_([status.value for status in RETAINED_STATUSES]),
            s.updated_at < cutoff,
            or_(s.anonymized_at.is_(None), s.anonymized_at < s.updated_at),
            s.id > after,
        )
        .order_by(s.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True, of=s)
    )


def anonymize_subscriptions(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Drop the personal data of subscriptions retained since before `cutoff`, batch by batch.

    The batches walk the table forward by id (each starts after the last id of the one before),
    so a run reads every row once however large its backlog: memory is one batch, time is
    linear (restarting from the first id each batch re-read every row already done, which made
    a large backlog quadratic). A row a concurrent transaction holds (`SKIP LOCKED`) is left
    for the next run."""
    report = report or RetentionReport(dry_run=dry_run)
    after = 0
    while True:
        with session_factory() as session:
            rows = session.execute(_due_subscriptions(cutoff, batch_size, after)).all()
            if not rows:
                return report
            after = rows[-1].id
            ids = [row.id for row in rows]
            subject = Subject(None, tuple(ids), tuple(row.order_id for row in rows))
            scrub_subject(session, subject, dry_run=dry_run, report=report)
            report.subscriptions_anonymized += len(rows)
            report.batches += 1
            if dry_run:
                continue
            now = utcnow()
            # Bulk UPDATE by primary key; `updated_at` is passed as it was, so the row keeps the
            # time of its last real change (and the ORM's onupdate does not fire).
            session.execute(
                update(Subscription),
                [
                    {
                        "id": row.id,
                        **anonymised_values(row),
                        "anonymized_at": now,
                        "updated_at": row.updated_at,
                    }
                    for row in rows
                ],
            )
            # A row that no longer holds a CPF must not keep one in `active_cpf` either (it is
            # already NULL by the state machine; this only repairs rows written before it).
            releasing = [row.id for row in rows if not holds_cpf(Status(row.status))]
            if releasing:
                session.execute(
                    update(Subscription)
                    .where(Subscription.id.in_(releasing), Subscription.active_cpf.is_not(None))
                    .values(active_cpf=None, updated_at=Subscription.updated_at)
                    .execution_options(synchronize_session=False)
                )


def expire_open_subscriptions(
    session_factory: SessionFactory,
    open_cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RetentionReport:
    """Anonymise and close (`expired`) the open subscriptions idle since before `open_cutoff`;
    one claimed by a live run is left for the next pass."""
    report = report or RetentionReport(dry_run=dry_run)
    s = Subscription
    open_statuses = [st.value for st in Status if st not in RETAINED_STATUSES]
    after = 0
    while True:
        with session_factory() as session:
            now = utcnow()
            rows = session.execute(
                select(s.id, s.order_id, s.payload, s.status, s.integration_id, s.updated_at)
                .where(
                    s.status.in_(open_statuses),
                    s.updated_at < open_cutoff,
                    or_(s.claimed_until.is_(None), s.claimed_until < now),
                    s.id > after,
                )
                .order_by(s.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True, of=s)
            ).all()
            if not rows:
                return report
            after = rows[-1].id
            subject = Subject(None, tuple(r.id for r in rows), tuple(r.order_id for r in rows))
            scrub_subject(session, subject, dry_run=dry_run, report=report)
            report.subscriptions_expired += len(rows)
            report.batches += 1
            if dry_run:
                continue
            idle_days = (now - open_cutoff).days
            updates = []
            for row in rows:
                values = transition_values(
                    row.status, Status.EXPIRED, cpf=None, error=None, now=now
                )
                updates.append(
                    {
                        "id": row.id,
                        **values,
                        **anonymised_values(row),
                        "anonymized_at": now,
                        "scheduled_to": None,
                        "claimed_by": None,
                        "claimed_until": None,
                        "sending_since": None,
                    }
                )
            session.execute(update(Subscription), updates)
            # the status change's event rows (after the scrub: they hold no personal data)
            events = []
            for row in rows:
                event = event_values(
                    subscription_id=row.id,
                    integration_id=row.integration_id,
                    kind=TRANSITION,
                    status=Status.EXPIRED.value,
                    operation=OPERATION,
                    run_id=run_id,
                    error=f"no activity for {idle_days} days in {row.status}: personal data "
                    "removed (retention)",
                    outcome=Status.EXPIRED.value,
                )
                events.append({**event, "created_at": now, "updated_at": now})
            session.execute(insert(SubscriptionEvent), events)


def _not_due(p: Place, cutoff: datetime, open_cutoff: datetime | None) -> Any:
    """Rows of `p` whose subscription the subscription passes do NOT anonymise (a correlated
    `NOT EXISTS`, one index lookup per row): a dry run's count by age leaves the others out, as
    the real run finds them scrubbed already. None: the place has no link to a subscription."""
    s = aliased(Subscription)
    due: Any = and_(
        s.status.in_([status.value for status in RETAINED_STATUSES]),
        s.updated_at < cutoff,
        or_(s.anonymized_at.is_(None), s.anonymized_at < s.updated_at),
    )
    if open_cutoff is not None:
        due = or_(
            due,
            and_(
                s.status.not_in([status.value for status in RETAINED_STATUSES]),
                s.updated_at < open_cutoff,
                or_(s.claimed_until.is_(None), s.claimed_until < utcnow()),
            ),
        )
    if p.subscription_id is not None:
        return ~exists().where(s.id == p.subscription_id(), due)
    if p.order_id is not None:
        return ~exists().where(s.order_id == p.order_id(), due)
    return None


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
            if p.cursor:
                rows = session.execute(
                    select(model_id, p.aged(cutoff).label("old"))
                    .where(model_id > after)
                    .order_by(model_id)
                    .limit(batch_size)
                ).all()
                old = []
                for row in rows:
                    if not row.old:
                        break
                    old.append(row.id)
                done = len(old) < batch_size
            else:
                old = list(
                    session.scalars(
                        select(model_id)
                        .where(p.aged(cutoff), p.holds_data(), model_id > after)
                        .order_by(model_id)
                        .limit(batch_size)
                    )
                )
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


def apply_retention(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    open_cutoff: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RetentionReport:
    """Every part of the LGPD retention, in the order that touches each row once: finished
    subscriptions, idle open ones (when `open_cutoff` is given), then every place by age."""
    report = RetentionReport(dry_run=dry_run)
    anonymize_subscriptions(
        session_factory, cutoff, batch_size=batch_size, report=report, dry_run=dry_run
    )
    if open_cutoff is not None:
        open_cutoff = min(open_cutoff, cutoff)
        expire_open_subscriptions(
            session_factory,
            open_cutoff,
            batch_size=batch_size,
            report=report,
            dry_run=dry_run,
            run_id=run_id,
        )
    for p in PLACES:
        scrub_aged(
            session_factory,
            p,
            cutoff,
            batch_size=batch_size,
            report=report,
            dry_run=dry_run,
            # a dry run changed nothing: its count leaves out what the passes above counted
            not_of=_not_due(p, cutoff, open_cutoff) if dry_run else None,
        )
    return report
