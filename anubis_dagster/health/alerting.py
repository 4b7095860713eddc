"""One webhook alert per change of a health check.

The last state of every check is kept in the app DB (`alert_states`, through `alerts/once.py`,
where every rule's "already said" lives), so a check that stays
ERROR for a week alerts once, when it turned ERROR, and once more when it recovers, whichever
process or run evaluated it. A check's first evaluation has nothing to change from: it alerts
only when it is bad, and says it is a first evaluation (not "was OK"). Each alert links to the
check's page in the UI, where its history is, not to the health run (green: it did its job).

The change is claimed with a conditional write, so two health runs evaluating at once cannot
both alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from anubis_dagster.alerts.once import claim_state
from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.clients.probes import Level
from anubis_dagster.core.masking import mask_text


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
    """Record `outcome`'s level (`alerts/once.py`); the change when it is worth an alert (a
    first evaluation only when the check is bad), else None."""
    detail = mask_text(f"{outcome.measured} ({outcome.threshold})")[:500]
    change = claim_state(session, outcome.scope, outcome.name, outcome.level.value, detail, now)
    if change is None:
        return None
    if change.previous is None:
        return Change(None) if outcome.level is not Level.OK else None
    return Change(Level(change.previous))


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
