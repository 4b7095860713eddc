"""What is due: the one definition of work an integration has waiting, used by the due sensor,
`anubis run`, the benchmarks and the tests.

Due = a subscription in a status one of the integration's flows works on (deliver: the
adapter's prepare statuses and `to_register`; check: its check statuses), whose `scheduled_to`
has come (or was never set: new students), and that no live run has claimed (`claimed_until`
past). Cheap indexed queries (ix_subscriptions_open, partial: the open statuses only).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select, union_all
from sqlalchemy.orm import Session

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import IESAdapter


class Flow(StrEnum):
    """The two flows a due run works on; each has its job (`deliver_job`, `check_job`)."""

    DELIVER = "deliver"
    CHECK = "check"

    @property
    def job_name(self) -> str:
        return f"{self.value}_job"


def flow_statuses(adapter: type[IESAdapter], flow: Flow) -> frozenset[Status]:
    """The statuses `flow` works on for this adapter (empty: the adapter has no such flow)."""
    if flow is Flow.CHECK:
        return adapter.check_statuses
    return deliver_statuses(adapter)


def deliver_statuses(adapter: type[IESAdapter]) -> frozenset[Status]:
    return adapter.prepare_statuses | {Status.TO_REGISTER}


def all_statuses(adapter: type[IESAdapter]) -> frozenset[Status]:
    """Every status some flow of this adapter works on."""
    return frozenset().union(*(flow_statuses(adapter, flow) for flow in Flow))


#: the bound parameter every due statement compares `scheduled_to` and `claimed_until` with
NOW_PARAM = "due_now"


@lru_cache(maxsize=256)
def _due_ids(
    integration_id: int,
    statuses: frozenset[Status],
    limit: int,
    *,
    fresh_only: bool = False,
) -> Any:
    """The ids of due, unclaimed subscriptions (at most `limit`), as one statement whose time
    is the bound parameter `NOW_PARAM`.

    One branch per status and per "never scheduled" / "time has come", each ordered by
    `scheduled_to` so it reads the (partial, open statuses) index in order and stops at its
    limit. Asked as one `status IN (…) AND (scheduled_to IS NULL OR …)`, PostgreSQL's
    planner cannot see that, e.g., the registered students of one integration all have a
    `scheduled_to` while another's have none, expects a six-figure count of matches at 1M rows
    and scans the table for them (measured at 1.1–3.8 s per query, BENCHMARKS.md).

    Built once per shape and kept (the time is a parameter): building the union in Python
    cost the due sensor's tick ~5 ms a statement, ten times what PostgreSQL takes to answer
    it at 1M subscriptions."""
    s = Subscription
    now = bindparam(NOW_PARAM, type_=s.scheduled_to.type)
    branches = []
    for status in sorted(statuses):
        for when in (s.scheduled_to.is_(None), s.scheduled_to <= now):
            clauses: list[ColumnElement[bool]] = [
                s.integration_id == integration_id,
                s.status == status.value,
                when,
                or_(s.claimed_until.is_(None), s.claimed_until < now),
            ]
            if fresh_only:
                clauses.append(s.attempts == 0)
            branch = select(s.id).where(*clauses).order_by(s.scheduled_to).limit(limit)
            branches.append(select(branch.subquery().c.id))
    return union_all(*branches).subquery()


@lru_cache(maxsize=256)
def _has_due_statement(integration_id: int, statuses: frozenset[Status]) -> Any:
    due = _due_ids(integration_id, statuses, 1)
    return select(due.c.id).limit(1)


@lru_cache(maxsize=256)
def _count_due_statement(
    integration_id: int, statuses: frozenset[Status], limit: int, fresh_only: bool
) -> Any:
    due = _due_ids(integration_id, statuses, limit, fresh_only=fresh_only)
    return select(func.count()).select_from(select(due.c.id).limit(limit).subquery())


def has_due(
    session: Session,
    integration_id: int,
    statuses: frozenset[Status],
    now: datetime | None = None,
) -> bool:
    """Whether any subscription in `statuses` is due and unclaimed."""
    if not statuses:
        return False
    statement = _has_due_statement(integration_id, statuses)
    return session.scalar(statement, {NOW_PARAM: _now(now)}) is not None


def count_due(
    session: Session,
    integration_id: int,
    statuses: frozenset[Status],
    *,
    limit: int,
    fresh_only: bool = False,
    now: datetime | None = None,
) -> int:
    """How many subscriptions are due (at most `limit`); `fresh_only`: never attempted ones."""
    if not statuses:
        return 0
    statement = _count_due_statement(integration_id, statuses, limit, fresh_only)
    return int(session.scalar(statement, {NOW_PARAM: _now(now)}) or 0)


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


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)
