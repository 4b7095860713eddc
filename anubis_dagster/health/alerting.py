"""One webhook alert per change of a health check, and at most one per day per anomaly.

The last state of every check is kept in the app DB (`alert_states`), so a check that stays
ERROR for a week alerts once, when it turned ERROR, and once more when it recovers, whichever
process or run evaluated it. The change is claimed with a conditional write (the row still holds
the state we read; RETURNING says whether it did: psycopg reports no rowcount for these), so
two health runs evaluating at once cannot both alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Update, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.clients.probes import Level
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import AlertState


@dataclass(frozen=True)
class CheckOutcome:
    """One evaluated check, ready for the UI and for an alert."""

    scope: str  # the integration key, or `platform`
    name: str  # the check's name
    level: Level
    measured: str  # the value as shown, e.g. "72.0%", or what a probe found
    threshold: str  # e.g. "WARN below 90%, ERROR below 80%", or what passing means
    summary: str  # one sentence for the UI, masked


def changed_state(session: Session, outcome: CheckOutcome, now: datetime) -> Level | None:
    """Record `outcome`'s level; the previous level when this is a change worth an alert
    (a first sight of a failing check counts as a change from OK), else None."""
    detail = mask_text(f"{outcome.measured} ({outcome.threshold})")[:500]
    row = session.get(AlertState, (outcome.scope, outcome.name))
    if row is None:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        created = session.execute(
            insert(AlertState)
            .values(
                scope=outcome.scope,
                name=outcome.name,
                state=outcome.level.value,
                detail=detail,
                changed_at=now,
            )
            .on_conflict_do_nothing(index_elements=["scope", "name"])
            .returning(AlertState.state)
        ).first()
        if created is not None:
            return Level.OK if outcome.level is not Level.OK else None
        row = session.get(AlertState, (outcome.scope, outcome.name), populate_existing=True)
        assert row is not None
    previous = Level(row.state)
    if previous is outcome.level:
        session.execute(_update(outcome).values(detail=detail))
        return None
    claimed = session.execute(
        _update(outcome)
        .where(AlertState.state == previous.value)
        .values(state=outcome.level.value, detail=detail, changed_at=now)
        .returning(AlertState.state)
    ).first()
    return previous if claimed is not None else None


def claim_daily(
    session: Session, scope: str, name: str, day: date, detail: str, now: datetime
) -> bool:
    """True the first time `name` is claimed for `day` (then alert); False after that."""
    stamp = day.isoformat()
    row = session.get(AlertState, (scope, name))
    if row is not None and row.state == stamp:
        return False
    if row is None:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        created = session.execute(
            insert(AlertState)
            .values(scope=scope, name=name, state=stamp, detail=detail, changed_at=now)
            .on_conflict_do_nothing(index_elements=["scope", "name"])
            .returning(AlertState.state)
        ).first()
        return created is not None
    claimed = session.execute(
        update(AlertState)
        .where(AlertState.scope == scope, AlertState.name == name, AlertState.state == row.state)
        .values(state=stamp, detail=detail, changed_at=now)
        .returning(AlertState.state)
    ).first()
    return claimed is not None


def change_alert(outcome: CheckOutcome, previous: Level, run_id: str | None) -> Alert:
    """The message of a check that turned WARN or ERROR, or recovered."""
    if outcome.level is Level.OK:
        title = f"Health recovered: {outcome.scope} · {outcome.name} is OK again"
        level = "info"
    else:
        title = f"Health {outcome.level.value.upper()}: {outcome.scope} · {outcome.name}"
        level = "critical" if outcome.level is Level.ERROR else "warning"
    lines = [
        f"integration: {outcome.scope}",
        f"check: {outcome.name} (was {previous.value.upper()})",
        f"measured: {outcome.measured}",
        f"threshold: {outcome.threshold}",
        outcome.summary,
    ]
    return Alert(title=title, lines=lines, level=level, run_id=run_id)


def known_states(session: Session, scope: str) -> dict[str, str]:
    """name → last recorded state (for tests and the UI's metadata)."""
    rows = session.execute(
        select(AlertState.name, AlertState.state).where(AlertState.scope == scope)
    ).all()
    return {name: state for name, state in rows}


def _update(outcome: CheckOutcome) -> Update:
    return update(AlertState).where(
        AlertState.scope == outcome.scope, AlertState.name == outcome.name
    )
