"""Pausing one integration's sending, without touching the others.

Why: stopping `due_work_sensor` pauses every integration, and `enabled: false` in the
integrations file makes intake stop routing orders to it (they become unrouted, and are not
routed again when it comes back). A pause is the operator's, kept in the app DB
(`integrations.paused_at`), never overwritten by the integrations file: intake goes on
ingesting the integration's orders, while the due sensor and `anubis run` start no deliver or
check run for it. Resuming lets them pick up everything that waited.

Setting the pause that is already set changes nothing and alerts nobody, so a pause launched
twice sends one alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import Integration

#: the reason is the operator's free text; it goes to the UI, the log and a chat channel
MAX_REASON_LENGTH = 300


class UnknownIntegration(LookupError):
    pass


@dataclass(frozen=True)
class PauseChange:
    key: str
    paused: bool
    reason: str
    changed: bool  # False: it already was in that state (no alert)
    since: datetime | None  # when the current pause began (None: not paused)

    def describe(self) -> str:
        state = "paused" if self.paused else "running"
        return f"{self.key} is {state}" + ("" if self.changed else " (no change: it already was)")


def set_paused(
    session: Session, key: str, paused: bool, reason: str = "", now: datetime | None = None
) -> PauseChange:
    """Pause or resume integration `key`; the reason is masked before it is stored."""
    integration = session.scalars(select(Integration).where(Integration.key == key)).first()
    if integration is None:
        raise UnknownIntegration(f"no integration {key!r} (see the integrations file)")
    reason = mask_text(reason.strip())[:MAX_REASON_LENGTH]
    was_paused = integration.paused_at is not None
    if paused and not was_paused:
        integration.paused_at = now or datetime.now(UTC)
        integration.pause_reason = reason or None
    elif not paused and was_paused:
        integration.paused_at = None
        integration.pause_reason = None
    session.flush()
    return PauseChange(
        key=key,
        paused=paused,
        reason=reason if paused != was_paused else (integration.pause_reason or ""),
        changed=paused != was_paused,
        since=integration.paused_at,
    )


def paused_integrations(session: Session) -> dict[str, tuple[datetime, str]]:
    """key → (paused since, reason) of every paused integration."""
    rows = session.execute(
        select(Integration.key, Integration.paused_at, Integration.pause_reason)
        .where(Integration.paused_at.is_not(None))
        .order_by(Integration.key)
    )
    return {key: (since, reason or "") for key, since, reason in rows if since is not None}


def pause_alert(change: PauseChange, run_id: str | None = None) -> Alert:
    """The one alert of a pause or a resume: the team must know sending stopped, and when it
    started again."""
    if change.paused:
        return Alert(
            title=f"{change.key}: sending paused",
            lines=[
                f"reason: {change.reason or '(none given)'}",
                "new paid orders are still ingested and wait; resume to send them",
            ],
            level="warning",
            run_id=run_id,
        )
    return Alert(
        title=f"{change.key}: sending resumed",
        lines=["the students that waited are sent at the due-work sensor's next tick"],
        level="info",
        run_id=run_id,
    )
