"""One webhook alert per change of a health check, and at most one per day per anomaly.

The last state of every check is kept in the app DB (`alert_states`), so a check that stays
ERROR for a week alerts once, when it turned ERROR, and once more when it recovers, whichever
process or run evaluated it. A check's first evaluation has nothing to change from: it alerts
only when it is bad, and says it is a first evaluation (not "was OK"). Each alert links to the
check's page in the UI, where its history is, not to the health run (green: it did its job).

The change is claimed with a conditional write (the row still holds the state we read;
RETURNING says whether it did: psycopg reports no rowcount for these), so two health runs
evaluating at once cannot both alert.
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


@dataclass(frozen=True)
class Change:
    """A check's level moved since it was last evaluated: from `previous`, or, when `previous`
    is None, this is its first evaluation (and it is bad)."""

    previous: Level | None


def changed_state(session: Session, outcome: CheckOutcome, now: datetime) -> Change | None:
    """Record `outcome`'s level; the change when it is worth an alert (a first evaluation
    only when the check is bad), else None."""
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
            return Change(None) if outcome.level is not Level.OK else None
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
    return Change(previous) if claimed is not None else None


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


def check_path(scope: str, name: str) -> str:
    """The UI page of check `name` of asset `health/<scope>`: its latest result and history."""
    return f"/assets/health/{scope}?view=checks&checkDetail={name}"


def change_alert(outcome: CheckOutcome, change: Change, run_id: str | None) -> Alert:
    """The message of a check that turned WARN or ERROR, or recovered, or that is bad on its
    first evaluation."""
    level = outcome.level.value.upper()
    if change.previous is None:
        title = f"Health {level}: {outcome.scope} · {outcome.name} (first evaluation)"
        was = "first evaluation, no earlier state"
    elif outcome.level is Level.OK:
        title = f"Health recovered: {outcome.scope} · {outcome.name} is OK again"
        was = f"was {change.previous.value.upper()}"
    else:
        title = f"Health {level}: {outcome.scope} · {outcome.name}"
        was = f"was {change.previous.value.upper()}"
    lines = [
        f"integration: {outcome.scope}",
        f"check: {outcome.name} ({was})",
        f"measured: {outcome.measured}",
        f"threshold: {outcome.threshold}",
        outcome.summary,
    ]
    severity = {Level.OK: "info", Level.WARN: "warning", Level.ERROR: "critical"}[outcome.level]
    return Alert(
        title=title,
        lines=lines,
        level=severity,
        run_id=run_id,
        ui_path=check_path(outcome.scope, outcome.name),
        link_text="Open the check in Dagster",
    )


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
