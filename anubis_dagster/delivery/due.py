"""Is there work due for an integration? Cheap indexed queries for sensors and `anubis run`."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import IESAdapter


def deliver_statuses(adapter: type[IESAdapter]) -> frozenset[Status]:
    return adapter.prepare_statuses | {Status.TO_REGISTER}


def has_due(
    session: Session,
    integration_id: int,
    statuses: frozenset[Status],
    now: datetime | None = None,
) -> bool:
    """Whether any subscription in `statuses` is due and unclaimed (uses ix_subscriptions_due)."""
    if not statuses:
        return False
    now = now or datetime.now(UTC)
    s = Subscription
    query = (
        select(s.id)
        .where(
            s.integration_id == integration_id,
            s.status.in_([st.value for st in statuses]),
            or_(s.scheduled_to.is_(None), s.scheduled_to <= now),
            or_(s.claimed_until.is_(None), s.claimed_until < now),
        )
        .limit(1)
    )
    return session.scalar(query) is not None


def next_due_at(
    session: Session, integration_id: int, statuses: frozenset[Status]
) -> datetime | None:
    """When the earliest scheduled work of these statuses becomes due (None: no such work)."""
    if not statuses:
        return None
    s = Subscription
    return session.scalar(
        select(s.scheduled_to)
        .where(
            s.integration_id == integration_id,
            s.status.in_([st.value for st in statuses]),
            s.scheduled_to.is_not(None),
        )
        .order_by(s.scheduled_to)
        .limit(1)
    )
