"""The event outbox (issue 25): rows written with the status changes they announce, and the
queries the publisher and `anubis events tail` run on them.

Writers: `db.transitions` calls `add_event` (one subscription, the ORM path) and
`bulk_event_rows` (intake's bulk writer) whenever the new status is in `core.events.EVENT_TYPES`;
nothing else writes here. Readers: `events.publisher` takes the oldest unpublished rows in
`id` order, marks those the broker acknowledged, and prunes published rows after the retention.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from anubis_dagster.core.events import StatusChange, event_payload, event_type
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import Integration, OutboxEvent, Subscription, utcnow


def outbox_values(
    change: StatusChange, *, now: datetime, imported: bool = False
) -> dict[str, Any] | None:
    """Column values of the outbox row a move into `change.status` writes; None when it
    publishes nothing. `imported`: a row created by the legacy import."""
    type_ = event_type(change.status, imported=imported)
    if type_ is None:
        return None
    event_id = str(uuid.uuid4())
    return {
        "event_id": event_id,
        "event_type": type_,
        "subscription_id": int(change.subscription_id),
        "created_at": now,
        "publish_attempts": 0,
        "payload": event_payload(change, event_id=event_id, type_=type_, occurred_at=now),
    }


def add_event(
    session: Session,
    subscription: Subscription,
    *,
    previous_status: str | None,
    operation: str,
    now: datetime | None = None,
) -> OutboxEvent | None:
    """The outbox row for `subscription`'s new status (already set on it), in the session's
    transaction; None when the status publishes nothing."""
    if event_type(subscription.status) is None:
        return None
    if subscription.id is None:
        session.flush()  # the id the event names
    change = StatusChange(
        subscription_id=subscription.id,
        order_id=subscription.order_id,
        integration_id=subscription.integration_id,
        origin=subscription.origin,
        status=subscription.status,
        previous_status=previous_status,
        reason=operation,
        partner_id=subscription.external_id,
    )
    values = outbox_values(change, now=now or utcnow())
    assert values is not None
    row = OutboxEvent(**values)
    session.add(row)
    return row


def bulk_event_rows(
    session: Session,
    *,
    created: Iterable[dict[str, Any]],
    updated: Iterable[dict[str, Any]],
    events: list[dict[str, Any]],
    now: datetime | None = None,
) -> int:
    """Outbox rows for a bulk write (`transitions.write_rows`): `created` are new subscriptions'
    values, `updated` the changed columns of existing ones, read BEFORE the update is applied
    (the previous status comes from the table). Only rows whose new status publishes an event
    cost anything: intake's statuses publish none, so its hot path pays one dict lookup a row.
    `events` are the batch's event rows: their `operation_name` is the event's `reason`."""
    now = now or utcnow()
    created = [v for v in created if event_type(v["status"], imported=_imported(v)) is not None]
    changes = {u["id"]: u for u in updated if event_type(u.get("status", "")) is not None}
    if not created and not changes:
        return 0
    operations = {e["subscription_id"]: e["operation_name"] for e in events}
    rows = _created_rows(created, operations, now=now)
    if changes:
        rows += _updated_rows(session, changes, operations, now=now)
    if rows:
        session.execute(insert(OutboxEvent), rows)
    return len(rows)


def _created_rows(
    created: list[dict[str, Any]], operations: dict[Any, str], *, now: datetime
) -> list[dict[str, Any]]:
    """New subscriptions carry everything the event needs, so they cost no read."""
    rows: list[dict[str, Any]] = []
    for values in created:
        change = StatusChange(
            subscription_id=values["id"],
            order_id=values["order_id"],
            integration_id=values["integration_id"],
            origin=values.get("origin"),
            status=values["status"],
            previous_status=None,
            reason=operations.get(values["id"], "create"),
            partner_id=values.get("external_id"),
        )
        row = outbox_values(change, now=now, imported=_imported(values))
        if row is not None:
            rows.append(row)
    return rows


def _updated_rows(
    session: Session,
    changes: dict[Any, dict[str, Any]],
    operations: dict[Any, str],
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """Updates carry only the changed columns: the previous status and the event's other
    fields come from one read of the table, done before the update lands."""
    columns = (
        Subscription.id,
        Subscription.status,
        Subscription.order_id,
        Subscription.integration_id,
        Subscription.origin,
        Subscription.external_id,
    )
    rows: list[dict[str, Any]] = []
    for sid, status, order_id, integration_id, origin, partner in session.execute(
        select(*columns).where(Subscription.id.in_(list(changes)))
    ):
        change = StatusChange(
            subscription_id=sid,
            order_id=order_id,
            integration_id=integration_id,
            origin=origin,
            status=changes[sid]["status"],
            previous_status=status,
            reason=operations.get(sid, "update"),
            partner_id=changes[sid].get("external_id", partner),
        )
        row = outbox_values(change, now=now)
        if row is not None:
            rows.append(row)
    return rows


# --- the publisher's side ---------------------------------------------------------------------


def pending(session: Session, limit: int) -> list[OutboxEvent]:
    """The oldest unpublished events, in outbox order (at most `limit`)."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def integration_keys(session: Session) -> dict[int, str]:
    """Integration id → key (`kroton`): what consumers know an integration by."""
    return {i: k for i, k in session.execute(select(Integration.id, Integration.key))}


def mark_published(session: Session, ids: list[int], *, now: datetime | None = None) -> int:
    """Mark the events the broker acknowledged; a row marked already is left alone."""
    if not ids:
        return 0
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(ids), OutboxEvent.published_at.is_(None))
        .values(published_at=now or utcnow(), last_error=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def record_failure(session: Session, ids: list[int], error: str) -> None:
    """Count a failed delivery of these events, with the broker's reason (masked)."""
    if not ids:
        return
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(ids))
        .values(
            publish_attempts=OutboxEvent.publish_attempts + 1,
            last_error=mask_text(error)[:500],
        )
        .execution_options(synchronize_session=False)
    )


def oldest_unpublished(session: Session) -> datetime | None:
    """When the oldest event still waiting was written (None: nothing waits)."""
    first = session.scalar(
        select(func.min(OutboxEvent.id)).where(OutboxEvent.published_at.is_(None))
    )
    if first is None:
        return None
    return session.scalar(select(OutboxEvent.created_at).where(OutboxEvent.id == first))


def unpublished_count(session: Session) -> int:
    query = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
    return int(session.scalar(query) or 0)


def prune(session: Session, *, before: datetime, limit: int, published_only: bool = True) -> int:
    """Delete up to `limit` events written before `before`: published ones, or (publishing
    off: nobody will send them) any. Bounded, so a large backlog goes over several ticks."""
    query = select(OutboxEvent.id).where(OutboxEvent.created_at < before)
    if published_only:
        query = query.where(OutboxEvent.published_at.is_not(None))
    ids = list(session.scalars(query.order_by(OutboxEvent.id).limit(limit)))
    if not ids:
        return 0
    session.execute(
        delete(OutboxEvent)
        .where(OutboxEvent.id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    return len(ids)


def latest(session: Session, count: int) -> list[OutboxEvent]:
    """The `count` newest events, newest last (`anubis events tail`)."""
    query = select(OutboxEvent).order_by(OutboxEvent.id.desc()).limit(count)
    return list(reversed(list(session.scalars(query))))


def _imported(values: dict[str, Any]) -> bool:
    """A new row of the legacy import: it carries the legacy's own status."""
    return values.get("legacy_status") is not None
