"""The circuit breakers of the partner APIs in `partner_breakers`, shared by every process
(issue 21; the rule itself: `core/breaker.py`).

Each change is applied with the API's row locked (`SELECT … FOR UPDATE` on PostgreSQL, the
database write lock on SQLite), so two processes recording failures at once count both, and
exactly one of them sees the breaker open (or close): that one sends the alert. A closed
breaker with no streak is not written at all by a success (most calls cost one primary-key
read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from anubis_dagster.core.breaker import BreakerPhase, BreakerState
from anubis_dagster.db.models import PartnerBreaker
from anubis_dagster.db.session import session_scope


def _state(row: PartnerBreaker | None) -> BreakerState:
    if row is None:
        return BreakerState()
    return BreakerState(
        phase=BreakerPhase(row.phase),
        streak=row.streak,
        streak_ids=tuple(int(i) for i in row.streak_ids or ()),
        streak_started_at=row.streak_started_at,
        opened_at=row.opened_at,
        next_probe_at=row.next_probe_at,
        probe_seconds=row.probe_seconds,
        last_success_at=row.last_success_at,
    )


def _write(row: PartnerBreaker, state: BreakerState) -> None:
    row.phase = state.phase.value
    row.streak = state.streak
    row.streak_ids = list(state.streak_ids)
    row.streak_started_at = state.streak_started_at
    row.opened_at = state.opened_at
    row.next_probe_at = state.next_probe_at
    row.probe_seconds = state.probe_seconds
    row.last_success_at = state.last_success_at
    row.updated_at = datetime.now(UTC)


@dataclass(frozen=True)
class Change:
    """One locked update: the state before and after, and the integration that opened it."""

    before: BreakerState
    after: BreakerState
    integration_id: int | None

    @property
    def opened(self) -> bool:
        return not self.before.open and self.after.open

    @property
    def closed(self) -> bool:
        return self.before.open and not self.after.open


def read(db_url: str, api: str) -> BreakerState:
    with session_scope(db_url) as session:
        return _state(session.get(PartnerBreaker, api))


def read_all(session: Session, apis: list[str]) -> dict[str, BreakerState]:
    rows = session.scalars(select(PartnerBreaker).where(PartnerBreaker.api.in_(apis)))
    return {row.api: _state(row) for row in rows}


def opener(session: Session, api: str) -> int | None:
    return session.scalar(select(PartnerBreaker.integration_id).where(PartnerBreaker.api == api))


def update(
    db_url: str,
    api: str,
    change: Callable[[BreakerState], BreakerState],
    *,
    integration_id: int | None = None,
) -> Change:
    """Apply `change` to the API's state with its row locked; returns before and after."""
    with session_scope(db_url) as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(
            insert(PartnerBreaker)
            .values(api=api, phase="closed", streak=0, streak_ids=[], probe_seconds=0.0)
            .on_conflict_do_nothing(index_elements=["api"])
        )
        query = select(PartnerBreaker).where(PartnerBreaker.api == api)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        row = session.scalars(query).one()
        before = _state(row)
        after = change(before)
        if after != before:
            _write(row, after)
            if not before.open and after.open:
                row.integration_id = integration_id
        return Change(before, after, row.integration_id)


def reset(db_url: str, api: str) -> None:
    """Close the breaker by hand (tests, an operator who knows better)."""
    update(db_url, api, lambda _state: BreakerState())
