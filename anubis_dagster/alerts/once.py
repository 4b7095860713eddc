"""Say it once: the last state of each alerting rule, kept in the app DB (`alert_states`), so
that whichever process or run evaluates a rule, a state alerts when it begins and not on every
evaluation after; and a once-a-day claim for rules that alert at most daily.

Every claim is a conditional write (the row still holds the state we read; RETURNING says
whether it did: psycopg reports no rowcount for these), so two runs evaluating at once cannot
both alert. The rules themselves (health checks, anomalies, order drift) live with their areas;
this is the one place their "already said" lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from anubis_dagster.db.models import AlertState


@dataclass(frozen=True)
class StateChange:
    """A rule's state moved: from `previous`, or None when this is its first recorded state."""

    previous: str | None


def _insert_first(
    session: Session, scope: str, name: str, state: str, detail: str, now: datetime
) -> bool:
    """Create the rule's row; False when another process created it first."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = session.execute(
        insert(AlertState)
        .values(scope=scope, name=name, state=state, detail=detail, changed_at=now)
        .on_conflict_do_nothing(index_elements=["scope", "name"])
        .returning(AlertState.state)
    ).first()
    return created is not None


def _move(
    session: Session, scope: str, name: str, previous: str, state: str, detail: str, now: datetime
) -> bool:
    """Move the rule from `previous` to `state`; False when another process moved it first."""
    claimed = session.execute(
        update(AlertState)
        .where(AlertState.scope == scope, AlertState.name == name, AlertState.state == previous)
        .values(state=state, detail=detail, changed_at=now)
        .returning(AlertState.state)
    ).first()
    return claimed is not None


def claim_state(
    session: Session, scope: str, name: str, state: str, detail: str, now: datetime
) -> StateChange | None:
    """Record `state` for the rule; the change when this process claimed it (the first state,
    or a different one from the last), None when nothing changed or another process claimed
    the change. `detail` is kept either way (masked by the caller)."""
    row = session.get(AlertState, (scope, name))
    if row is None:
        if _insert_first(session, scope, name, state, detail, now):
            return StateChange(None)
        row = session.get(AlertState, (scope, name), populate_existing=True)
        assert row is not None
    previous = row.state
    if previous == state:
        session.execute(
            update(AlertState)
            .where(AlertState.scope == scope, AlertState.name == name)
            .values(detail=detail)
        )
        return None
    return (
        StateChange(previous) if _move(session, scope, name, previous, state, detail, now) else None
    )


def claim_daily(
    session: Session, scope: str, name: str, day: date, detail: str, now: datetime
) -> bool:
    """True the first time `name` is claimed for `day` (then alert); False after that."""
    stamp = day.isoformat()
    row = session.get(AlertState, (scope, name))
    if row is not None and row.state == stamp:
        return False
    if row is None:
        return _insert_first(session, scope, name, stamp, detail, now)
    return _move(session, scope, name, row.state, stamp, detail, now)


def known_states(session: Session, scope: str) -> dict[str, str]:
    """name → last recorded state (for tests and the UI's metadata)."""
    rows = session.execute(
        select(AlertState.name, AlertState.state).where(AlertState.scope == scope)
    ).all()
    return {name: state for name, state in rows}
