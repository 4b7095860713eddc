"""The daily digest of one integration: the seeds' "jobs executed with statistics", once a day
instead of one message per run.

Numbers for a window (the last 24 hours by default), from the app DB's event rows and the
Dagster runs tagged with the integration: runs (by action, and how many failed),
registrations sent, accepted, refused and held as unknown, scheduled retries and dead letters.
Plain functions over one grouped query each; the job in `alerts.jobs` posts the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Integration, SubscriptionEvent
from anubis_dagster.db.transitions import ATTEMPT, RETRY, TRANSITION

#: the step that sends registrations (`StepReport.step`, the event rows' operation)
REGISTER = "register"
ACCEPTED = (Status.AWAITING_REGISTER.value, Status.REGISTERED.value)


@dataclass
class Digest:
    integration: str
    start: datetime
    end: datetime
    runs: Counter[str] = field(default_factory=Counter)  # action → runs
    failed_runs: int = 0
    sent: int = 0  # registration requests that left (attempt rows)
    accepted: int = 0  # registrations the partner took
    refused: int = 0  # refused for good by the partner (register_failed)
    unknown: int = 0  # held: the partner may have it and cannot be asked
    retries: int = 0  # scheduled retries (an attempt that failed and will be tried again)
    dead_letters: int = 0  # retries exhausted: `failed`

    @property
    def quiet(self) -> bool:
        return not (sum(self.runs.values()) or self.sent or self.retries or self.dead_letters)

    @property
    def level(self) -> str:
        """⚠️ when something needs a person: failed runs, dead letters, unknown outcomes, or
        registrations sent and none taken."""
        troubled = self.failed_runs or self.dead_letters or self.unknown
        return "warning" if troubled or (self.sent and not self.accepted) else "info"

    def alert(self) -> Alert:
        runs = ", ".join(f"{action} {n}" for action, n in sorted(self.runs.items())) or "none"
        lines = [
            f"{self.start:%Y-%m-%d %H:%M} → {self.end:%Y-%m-%d %H:%M} UTC",
            f"runs: {sum(self.runs.values())} ({runs}), {self.failed_runs} failed",
            f"registrations: {self.sent} sent, {self.accepted} accepted, {self.refused} refused, "
            f"{self.unknown} unknown outcome",
            f"scheduled retries: {self.retries}, dead letters: {self.dead_letters}",
        ]
        if self.dead_letters or self.unknown:
            lines.append(
                "dead letters and unknown outcomes wait for a person: `anubis student #ID`, "
                "then requeue from the Launchpad"
            )
        return Alert(f"Daily digest: {self.integration}", lines, self.level)


def app_db_numbers(
    session: Session, integration_key: str, start: datetime, end: datetime, digest: Digest
) -> Digest:
    """Fill `digest` with the registration, retry and dead-letter counts of the window."""
    integration_id = session.scalar(
        select(Integration.id).where(Integration.key == integration_key)
    )
    e = SubscriptionEvent
    window = (e.integration_id == integration_id, e.created_at >= start, e.created_at < end)
    digest.sent = int(
        session.scalar(
            select(func.count()).where(*window, e.kind == ATTEMPT, e.operation_name == REGISTER)
        )
        or 0
    )
    digest.retries = int(session.scalar(select(func.count()).where(*window, e.kind == RETRY)) or 0)
    moves = dict(
        session.execute(
            select(e.status, func.count())
            .where(*window, e.kind == TRANSITION)
            .where(e.status.in_([*ACCEPTED, "register_failed", "unknown", "failed"]))
            .where((e.operation_name == REGISTER) | e.status.in_(["unknown", "failed"]))
            .group_by(e.status)
        ).all()
    )
    digest.accepted = sum(int(moves.get(status, 0)) for status in ACCEPTED)
    digest.refused = int(moves.get(Status.REGISTER_FAILED.value, 0))
    digest.unknown = int(moves.get(Status.UNKNOWN.value, 0))
    digest.dead_letters = int(moves.get(Status.FAILED.value, 0))
    return digest
