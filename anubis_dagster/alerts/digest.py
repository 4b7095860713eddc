"""The daily digest of one integration: the seeds' "jobs executed with statistics", once a day
instead of one message per run.

Numbers for a window (the last 24 hours by default), from the app DB's event rows and the
Dagster runs tagged with the integration: runs (by action, and how many failed); the students
whose registration was sent, split by where each stands now (accepted, refused, unknown
outcome, dead-lettered, waiting for a retry: they add up to the students sent); the students
given a scheduled retry or dead-lettered at any step. Students, never calls.
Plain functions over one grouped query each; the job in `alerts.jobs` posts the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.transitions import ATTEMPT, RETRY, TRANSITION

#: the step that sends registrations (`StepReport.step`, the event rows' operation)
REGISTER = "register"
#: where a student sent in the window stands now, one bucket each, so the numbers add up
ACCEPTED = (
    Status.AWAITING_REGISTER.value,
    Status.REGISTERED.value,
    Status.ENROLLED.value,
    Status.DROPPED.value,
)
REFUSED = (Status.REGISTER_FAILED.value,)


@dataclass
class Digest:
    """Counts of students, never of calls: Estácio sends a registration twice when its first
    campus code is refused (MS004), yet that is one student."""

    integration: str
    start: datetime
    end: datetime
    runs: Counter[str] = field(default_factory=Counter)  # action → runs
    failed_runs: int = 0
    sent: int = 0  # students whose registration was sent in the window
    # ... and where each of them stands now (accepted + refused + unknown + failed + waiting):
    accepted: int = 0  # the partner took it (awaiting_register, registered and after)
    refused: int = 0  # the partner refused it (register_failed)
    unknown: int = 0  # held: the partner may have it and cannot be asked
    failed: int = 0  # retries ran out: `failed` (dead letter)
    waiting: int = 0  # not settled yet: a retry is scheduled
    retries: int = 0  # students given a scheduled retry in the window, any step
    dead_letters: int = 0  # students dead-lettered in the window, any step

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
            f"registrations: {self.sent} students sent = {self.accepted} accepted + "
            f"{self.refused} refused + {self.unknown} unknown outcome + {self.failed} "
            f"dead-lettered + {self.waiting} waiting for a retry",
            f"students at any step: {self.retries} given a scheduled retry, "
            f"{self.dead_letters} dead-lettered",
        ]
        if self.dead_letters or self.unknown:
            lines.append(
                "dead letters and unknown outcomes wait for a person: `anubis student "
                "--needs-attention`, then requeue from the Launchpad"
            )
        return Alert(f"Daily digest: {self.integration}", lines, self.level)


def app_db_numbers(
    session: Session, integration_key: str, start: datetime, end: datetime, digest: Digest
) -> Digest:
    """Fill `digest` with the window's students: those whose registration was sent, by where
    each stands now, and those given a retry or dead-lettered (distinct students)."""
    integration_id = session.scalar(
        select(Integration.id).where(Integration.key == integration_key)
    )
    e, s = SubscriptionEvent, Subscription
    window = (e.integration_id == integration_id, e.created_at >= start, e.created_at < end)
    sent = (
        select(e.subscription_id)
        .where(*window, e.kind == ATTEMPT, e.operation_name == REGISTER)
        .distinct()
        .scalar_subquery()
    )
    by_status = dict(
        session.execute(
            select(s.status, func.count()).where(s.id.in_(sent)).group_by(s.status)
        ).all()
    )
    digest.sent = sum(int(n) for n in by_status.values())
    digest.accepted = sum(int(by_status.get(status, 0)) for status in ACCEPTED)
    digest.refused = sum(int(by_status.get(status, 0)) for status in REFUSED)
    digest.unknown = int(by_status.get(Status.UNKNOWN.value, 0))
    digest.failed = int(by_status.get(Status.FAILED.value, 0))
    digest.waiting = digest.sent - digest.accepted - digest.refused - digest.unknown - digest.failed
    digest.retries = _students(session, *window, e.kind == RETRY)
    digest.dead_letters = _students(
        session, *window, e.kind == TRANSITION, e.status == Status.FAILED.value
    )
    return digest


def _students(session: Session, *conditions: Any) -> int:
    e = SubscriptionEvent
    return int(
        session.scalar(select(func.count(func.distinct(e.subscription_id))).where(*conditions)) or 0
    )
