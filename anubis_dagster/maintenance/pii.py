"""LGPD retention of the app DB: personal data is dropped, outcomes and counts are kept.

What goes, once a subscription has sat in a status where no more work happens
(`FINAL_STATUSES`, plus `invalid`, whose order only comes back if corrected at the source) for
longer than `ANUBIS_PII_RETENTION_DAYS` (default 365) since its last change:

- `cpf`, `first_name`, the adapter's working data (`ies_data`: addresses, consent receipts), the
  order `payload` except the keys in `KEPT_ORDER_KEYS` (order id, origin, price, dates and the
  offer: what was bought, never who bought it), the IES's answer in `follow_ups.source`, and the
  `request`/`response` of every event of the subscription.
- Independently, the `request`/`response` of **any** event older than the same number of days
  (attempts of subscriptions still in progress, token calls): nothing reads them after the
  first days, they only serve to debug an attempt.

What stays: ids (order, integration, IES inscription), status, attempts, timestamps, origin,
gender, the masked `last_error`, and every event row with its operation, status, outcome, HTTP
status and duration, so counts and histories survive.

The CPF is dropped, not hashed: a CPF has 10^9 possible values, so an unkeyed hash is reversed
in minutes and would still be personal data (LGPD art. 12), and duplicate detection never needs
it: only subscriptions that hold a CPF (`active_cpf`) block a new order, and the rows retention
touches have released theirs, except `enrolled` (and any other final status that holds a CPF).
Those keep `active_cpf` as their one remaining personal field, because the database's
`uq_subscriptions_active_cpf` constraint is what stops a second registration of the student.

Every batch is its own short transaction and every step is idempotent, so the job can be killed
and run again at any point. Rows are locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL (the
write lock on SQLite), so a concurrent intake that revalidates a corrected `invalid` order is
never overwritten; its change moves `updated_at` past `anonymized_at`, which makes the row due
again in N days.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, null, or_, select, update
from sqlalchemy.orm import Session

from anubis_dagster.core.states import FINAL_STATUSES, Status, holds_cpf
from anubis_dagster.db.models import Cursor, FollowUp, Subscription, SubscriptionEvent, utcnow
from anubis_dagster.settings import get_settings

PII_RETENTION_DAYS_ENV = "ANUBIS_PII_RETENTION_DAYS"
DEFAULT_BATCH_SIZE = 500

#: Statuses whose rows are anonymised once old: no more work happens on them without new input.
RETAINED_STATUSES = frozenset(FINAL_STATUSES | {Status.INVALID})
#: Top-level order keys that say what was bought and when, never who bought it.
KEPT_ORDER_KEYS = ("id", "origin", "checkout_step", "price", "created_at", "updated_at", "offer")
#: The event-payload purge's position (last event id whose payloads were dropped).
EVENTS_CURSOR = "retention:event_payloads"

SessionFactory = Callable[[], AbstractContextManager[Session]]


def pii_retention_days_from_env() -> int:
    """`ANUBIS_PII_RETENTION_DAYS`, through the validated settings model (an invalid value is a
    `SettingsError` naming the variable, not a traceback)."""
    return get_settings().anubis_pii_retention_days


@dataclass
class RetentionReport:
    subscriptions_anonymized: int = 0
    follow_ups_cleared: int = 0
    event_payloads_dropped: int = 0
    batches: int = 0

    def as_metadata(self) -> dict[str, int]:
        return {
            "subscriptions_anonymized": self.subscriptions_anonymized,
            "follow_ups_cleared": self.follow_ups_cleared,
            "event_payloads_dropped": self.event_payloads_dropped,
            "batches": self.batches,
        }


def kept_order(payload: Any) -> dict[str, Any]:
    """The non-personal part of an order payload (whitelist: unknown keys are dropped)."""
    if not isinstance(payload, dict):
        return {}
    return {key: payload[key] for key in KEPT_ORDER_KEYS if key in payload}


def _due_subscriptions(cutoff: datetime, batch_size: int, after: int = 0) -> Any:
    s = Subscription
    return (
        select(s.id, s.payload, s.status, s.updated_at)
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


def anonymize_subscriptions(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
) -> RetentionReport:
    """Drop the personal data of subscriptions retained since before `cutoff`, batch by batch.

    The batches walk the table forward by id (each starts after the last id of the one before),
    so a run reads every row once however large its backlog: memory is one batch, time is
    linear (restarting from the first id each batch re-read every row already done, which made
    a large backlog quadratic). A row a concurrent transaction holds (`SKIP LOCKED`) is left
    for the next run."""
    report = report or RetentionReport()
    after = 0
    while True:
        with session_factory() as session:
            rows = session.execute(_due_subscriptions(cutoff, batch_size, after)).all()
            if not rows:
                return report
            after = rows[-1].id
            now = utcnow()
            ids = [row.id for row in rows]
            # Bulk UPDATE by primary key; `updated_at` is passed as it was, so the row keeps the
            # time of its last real change (and the ORM's onupdate does not fire).
            session.execute(
                update(Subscription),
                [
                    {
                        "id": row.id,
                        "cpf": None,
                        "first_name": None,
                        "payload": kept_order(row.payload),
                        "ies_data": {},
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
            report.follow_ups_cleared += _clear_follow_ups(session, ids)
            report.event_payloads_dropped += _drop_event_payloads(
                session, SubscriptionEvent.subscription_id.in_(ids)
            )
            report.subscriptions_anonymized += len(rows)
            report.batches += 1


def _clear_follow_ups(session: Session, ids: list[int]) -> int:
    result = session.execute(
        update(FollowUp)
        .where(FollowUp.subscription_id.in_(ids))
        .values(source={}, updated_at=FollowUp.updated_at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _drop_event_payloads(session: Session, where: Any) -> int:
    e = SubscriptionEvent
    result = session.execute(
        update(e)
        .where(where, or_(e.request.is_not(None), e.response.is_not(None)))
        .values(request=null(), response=null(), updated_at=e.updated_at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def purge_event_payloads(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    report: RetentionReport | None = None,
) -> RetentionReport:
    """Drop `request`/`response` of every event created before `cutoff`.

    Events are only ever appended, so the purge walks them by id from a saved position (a row
    of `cursors`) and stops at the first event that is still young: each run reads only what
    aged since the last one, however long the table grows. Losing the position only costs one
    full walk.
    """
    report = report or RetentionReport()
    e = SubscriptionEvent
    while True:
        with session_factory() as session:
            position = session.get(Cursor, EVENTS_CURSOR)
            after = int(position.value) if position is not None else 0
            rows = session.execute(
                select(e.id, e.created_at).where(e.id > after).order_by(e.id).limit(batch_size)
            ).all()
            old = []
            for row in rows:
                if row.created_at >= cutoff:
                    break
                old.append(row.id)
            if old:
                report.event_payloads_dropped += _drop_event_payloads(
                    session, and_(e.id >= old[0], e.id <= old[-1])
                )
                if position is None:
                    session.add(Cursor(name=EVENTS_CURSOR, value=str(old[-1])))
                else:
                    position.value = str(old[-1])
                report.batches += 1
            if len(old) < batch_size:
                return report


def apply_retention(
    session_factory: SessionFactory,
    cutoff: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RetentionReport:
    """Both parts of the LGPD retention, in the order that touches each row once."""
    report = anonymize_subscriptions(session_factory, cutoff, batch_size=batch_size)
    return purge_event_payloads(session_factory, cutoff, batch_size=batch_size, report=report)
