"""Leases: a run claims rows before working on them (`claimed_by`/`claimed_until`, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL and the write lock on SQLite), so two runs never work on
the same subscription, and a crashed run's claims expire after the lease. Apart from the steps:
what makes two runs safe side by side reads in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from anubis_dagster.clients.errors import SendCancelled
from anubis_dagster.clients.http import AttemptSubject
from anubis_dagster.core.clock import utcnow
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.settings import get_settings

CLAIM_CHUNK = 5  # rows claimed at a time: small, so a slow partner holds few leases


def claim_due(
    db_url: str,
    integration_id: int,
    statuses: frozenset[Status],
    *,
    run_id: str,
    limit: int,
    subscription_ids: list[int] | None = None,
    exclude_ids: set[int] | None = None,
    lease_seconds: float | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Claim up to `limit` due rows for this run and return their ids."""
    if limit <= 0 or not statuses:
        return []
    now = now or utcnow()
    if lease_seconds is None:
        lease_seconds = get_settings().anubis_lease_seconds
    lease = timedelta(seconds=lease_seconds)
    s = Subscription
    conditions = [
        s.integration_id == integration_id,
        s.status.in_([st.value for st in statuses]),
        or_(s.claimed_until.is_(None), s.claimed_until < now, s.claimed_by == run_id),
    ]
    if exclude_ids:
        conditions.append(s.id.not_in(exclude_ids))
    if subscription_ids:
        conditions.append(s.id.in_(subscription_ids))  # explicit ids: now, whatever the schedule
    else:
        conditions.append(or_(s.scheduled_to.is_(None), s.scheduled_to <= now))
    query = (
        select(s.id)
        .where(and_(*conditions))
        .order_by(s.scheduled_to.is_not(None), s.scheduled_to, s.id)
        .limit(limit)
    )
    if get_engine(db_url).dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=s)
    with session_scope(db_url) as session:
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(s).where(s.id.in_(ids)).values(claimed_by=run_id, claimed_until=now + lease)
            )
    return ids


def release_claims(db_url: str, run_id: str) -> int:
    """Drop every claim of a run (its op failed); returns how many rows were released."""
    with session_scope(db_url) as session:
        result = session.execute(
            update(Subscription)
            .where(Subscription.claimed_by == run_id)
            .values(claimed_by=None, claimed_until=None)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _release(subscription: Subscription) -> None:
    subscription.claimed_by = None
    subscription.claimed_until = None


class Claims:
    """One run's claims on one integration's subscriptions: taken a few at a time while its
    budget lasts, held while a subscription is worked on, renewed by the fence right before a
    write leaves, released at the end."""

    def __init__(
        self,
        *,
        db_url: str,
        integration_id: int,
        run_id: str,
        lease_seconds: float,
        budget: int,
        subscription_ids: list[int],
        log: Callable[[str], None],
    ) -> None:
        self.db_url = db_url
        self.integration_id = integration_id
        self.run_id = run_id
        self.lease_seconds = lease_seconds
        #: subscriptions this run may still claim; 0 stops the claiming
        self.budget = budget
        self.subscription_ids = subscription_ids
        self.log = log

    def due_ids(self, statuses: frozenset[Status]) -> Iterator[int]:
        """Claim due rows a few at a time and yield their ids (holding no session)."""
        seen: set[int] = set()
        while self.budget > 0:
            ids = claim_due(
                self.db_url,
                self.integration_id,
                statuses,
                run_id=self.run_id,
                limit=min(CLAIM_CHUNK, self.budget),
                subscription_ids=self.subscription_ids or None,
                exclude_ids=seen,
                lease_seconds=self.lease_seconds,
            )
            if not ids:
                return
            for subscription_id in ids:
                seen.add(subscription_id)
                self.budget -= 1
                yield subscription_id

    @contextmanager
    def working_on(self, subscription_id: int) -> Iterator[tuple[Session, Subscription] | None]:
        """One claimed subscription in its own session: committed and released at the end, rolled
        back (and released at lease expiry) if the work raises. None if the claim was lost."""
        with session_scope(self.db_url) as session:
            subscription = session.get(Subscription, subscription_id)
            if subscription is None or subscription.claimed_by != self.run_id:
                yield None
                return
            # hold no transaction (no lock) while the partner is called: attempt rows are
            # written by other sessions meanwhile; the outcome commits at the end
            session.commit()
            yield session, subscription
            if not self._still_ours(session, subscription_id):
                # our lease ran out during a long call and another run took the row: its
                # work wins; ours is dropped (any send was fenced by `fence`)
                session.rollback()
                self.log(f"subscription #{subscription_id}: claim lost; outcome not recorded")
                return
            _release(subscription)

    def _still_ours(self, session: Session, subscription_id: int) -> bool:
        query = select(Subscription.claimed_by).where(Subscription.id == subscription_id)
        if get_engine(self.db_url).dialect.name == "postgresql":
            query = query.with_for_update()
        return session.scalar(query) == self.run_id

    def fence(self, subscription: AttemptSubject) -> None:
        """Right before a write leaves (after the quota wait and the token): in one statement,
        renew this run's claim and set the "being sent" marker, or refuse to send if the claim
        ran out (a quota wait can outlast a lease) and another run may be sending already. A
        process killed before this point sent nothing and leaves no marker."""
        now = utcnow()
        with session_scope(self.db_url) as session:
            renewed = session.execute(
                update(Subscription)
                .where(Subscription.id == subscription.id, Subscription.claimed_by == self.run_id)
                .values(
                    claimed_until=now + timedelta(seconds=self.lease_seconds),
                    sending_since=func.coalesce(Subscription.sending_since, now),
                )
            )
            if not renewed.rowcount:  # type: ignore[attr-defined]
                raise SendCancelled(f"subscription #{subscription.id}: claim lost before sending")
