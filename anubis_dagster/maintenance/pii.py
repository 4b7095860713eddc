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

Dagster's side (run storage and compute logs) is `maintenance/jobs.py`'s; how the rows of each
place are found and emptied, and the pass's report, `maintenance/scrubbing.py`'s.

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

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import and_, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from anubis_dagster.core.states import FINAL_STATUSES, Status, holds_cpf
from anubis_dagster.db.models import Subscription, SubscriptionEvent, utcnow
from anubis_dagster.db.transitions import TRANSITION, EventFields, transition_values
from anubis_dagster.maintenance.personal_data import PLACES, Place, Subject, place

# the scrubbing's names, imported from here by callers older than `maintenance.scrubbing`
from anubis_dagster.maintenance.scrubbing import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from anubis_dagster.maintenance.scrubbing import RetentionReport as RetentionReport
from anubis_dagster.maintenance.scrubbing import SessionFactory as SessionFactory
from anubis_dagster.maintenance.scrubbing import purge_event_payloads as purge_event_payloads
from anubis_dagster.maintenance.scrubbing import scrub_aged as scrub_aged
from anubis_dagster.maintenance.scrubbing import scrub_subject as scrub_subject
from anubis_dagster.settings import get_settings

PII_RETENTION_DAYS_ENV = "ANUBIS_PII_RETENTION_DAYS"
OPERATION = "retention"

#: Statuses whose rows are anonymised once old: no more work happens on them without new input.
RETAINED_STATUSES = frozenset(FINAL_STATUSES | {Status.INVALID})
#: Top-level order keys that say what was bought and when, never who bought it.
KEPT_ORDER_KEYS = ("id", "origin", "checkout_step", "price", "created_at", "updated_at", "offer")
#: The event purge's position (last event id whose personal data was dropped).
EVENTS_CURSOR = place("subscription_events").cursor or ""


def pii_retention_days_from_env() -> int:
    """`ANUBIS_PII_RETENTION_DAYS`, through the validated settings model (an invalid value is a
    `SettingsError` naming the variable, not a traceback)."""
    return get_settings().anubis_pii_retention_days


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


def _due_subscriptions(cutoff: datetime, batch_size: int, after: int, now: datetime) -> Any:
    """The next batch of finished subscriptions unchanged since before `cutoff` and not
    anonymised since their last change."""
    s = Subscription
    return (
        select(s.id, s.order_id, s.payload, s.status, s.updated_at)
        .where(
            s.id > after,
            s.status.in_([status.value for status in RETAINED_STATUSES]),
            s.updated_at < cutoff,
            or_(s.anonymized_at.is_(None), s.anonymized_at < s.updated_at),
        )
        .order_by(s.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True, of=s)
    )


def _idle_open_subscriptions(
    open_cutoff: datetime, batch_size: int, after: int, now: datetime
) -> Any:
    """The next batch of open subscriptions idle since before `open_cutoff` that no live run
    claims."""
    s = Subscription
    open_statuses = [st.value for st in Status if st not in RETAINED_STATUSES]
    return (
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
    )


#: the next batch of subscriptions a pass works on: (after this id, now) → query
BatchQuery = Callable[[int, datetime], Any]
#: what a pass writes for a batch of rows (not called in a dry run)
BatchWrite = Callable[[Session, Sequence[Any], datetime], None]


def _each_batch(
    session_factory: SessionFactory,
    due: BatchQuery,
    write: BatchWrite,
    *,
    report: RetentionReport,
    dry_run: bool,
) -> int:
    """The walk both subscription passes share: batch after batch, each in its own
    transaction, forward by id (each starts after the last id of the one before), so a run
    reads every row once however large its backlog: memory is one batch, time is linear
    (restarting from the first id each batch re-read every row already done, which made a
    large backlog quadratic). A row a concurrent transaction holds (`SKIP LOCKED`) is left for
    the next run. Each batch's places are scrubbed, then `write` (unless `dry_run`) writes
    the subscriptions. Returns how many subscriptions the batches held."""
    after, total = 0, 0
    while True:
        with session_factory() as session:
            now = utcnow()
            rows = session.execute(due(after, now)).all()
            if not rows:
                return total
            after = rows[-1].id
            subject = Subject(None, tuple(r.id for r in rows), tuple(r.order_id for r in rows))
            scrub_subject(session, subject, dry_run=dry_run, report=report)
            total += len(rows)
            report.batches += 1
            if not dry_run:
                write(session, rows, now)


def anonymize_subscriptions(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Drop the personal data of subscriptions retained since before `cutoff`, batch by batch
    (`_each_batch`)."""
    report = report or RetentionReport(dry_run=dry_run)
    report.subscriptions_anonymized += _each_batch(
        session_factory,
        partial(_due_subscriptions, cutoff, batch_size),
        _write_anonymised,
        report=report,
        dry_run=dry_run,
    )
    return report


def _write_anonymised(session: Session, rows: Sequence[Any], now: datetime) -> None:
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
    """Anonymise and close (`expired`) the open subscriptions idle since before `open_cutoff`,
    batch by batch (`_each_batch`); one claimed by a live run is left for the next pass."""
    report = report or RetentionReport(dry_run=dry_run)
    report.subscriptions_expired += _each_batch(
        session_factory,
        partial(_idle_open_subscriptions, open_cutoff, batch_size),
        partial(_write_expired, open_cutoff=open_cutoff, run_id=run_id),
        report=report,
        dry_run=dry_run,
    )
    return report


def _write_expired(
    session: Session,
    rows: Sequence[Any],
    now: datetime,
    *,
    open_cutoff: datetime,
    run_id: str | None,
) -> None:
    """Anonymise and move to `expired`, with each status change's event row (written after
    the scrub: they hold no personal data)."""
    updates = [
        {
            "id": row.id,
            **transition_values(row.status, Status.EXPIRED, cpf=None, error=None, now=now),
            **anonymised_values(row),
            "anonymized_at": now,
            "scheduled_to": None,
            "claimed_by": None,
            "claimed_until": None,
            "sending_since": None,
        }
        for row in rows
    ]
    session.execute(update(Subscription), updates)
    idle_days = (now - open_cutoff).days
    events = [
        EventFields(
            kind=TRANSITION,
            operation=OPERATION,
            run_id=run_id,
            status=Status.EXPIRED.value,
            outcome=Status.EXPIRED.value,
            error=f"no activity for {idle_days} days in {row.status}: personal data "
            "removed (retention)",
        ).values(row.id, row.integration_id)
        | {"created_at": now, "updated_at": now}
        for row in rows
    ]
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
