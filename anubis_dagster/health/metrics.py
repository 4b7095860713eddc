"""Health numbers of an integration, and the thresholds that make them a warning or critical.

Thresholds come from the sister integration hub's matrix (reference §4): pending > 100 / 500,
retry queue > 50 / 200, dead letter > 10 / 50, error rate > 5% / 15%.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.core.states import FINAL_STATUSES, Status
from anubis_dagster.db.models import Subscription, SubscriptionEvent

#: metric → (warning above, critical above)
THRESHOLDS: dict[str, tuple[float, float]] = {
    "pending": (100, 500),
    "retry_queue": (50, 200),
    "dead_letter": (10, 50),
    "error_rate_24h": (0.05, 0.15),
}
#: attempt outcomes that are not errors of the integration (a 4xx is the partner refusing our
#: data, counted in statuses; in-flight attempts have no outcome yet)
NOT_ERRORS = ("ok", "http_4xx", "in_flight")


@dataclass(frozen=True)
class Health:
    by_status: dict[str, int]
    pending: int  # not final and not waiting on a retry
    retry_queue: int  # waiting on a scheduled retry
    dead_letter: int  # `failed`
    attempts_24h: int
    errors_24h: int

    @property
    def error_rate_24h(self) -> float:
        return self.errors_24h / self.attempts_24h if self.attempts_24h else 0.0

    def level(self, metric: str) -> str:
        value = float(getattr(self, metric))
        warning, critical = THRESHOLDS[metric]
        return "critical" if value > critical else "warning" if value > warning else "ok"


def integration_health(
    session: Session, integration_id: int, now: datetime | None = None
) -> Health:
    now = now or datetime.now(UTC)
    s = Subscription
    by_status = {
        status: int(count)
        for status, count in session.execute(
            select(s.status, func.count())
            .where(s.integration_id == integration_id)
            .group_by(s.status)
        )
    }
    live = [st.value for st in Status if st not in FINAL_STATUSES]
    retry_queue = int(
        session.scalar(
            select(func.count()).where(
                s.integration_id == integration_id, s.status.in_(live), s.attempts > 0
            )
        )
        or 0
    )
    pending = sum(by_status.get(st, 0) for st in live) - retry_queue
    e = SubscriptionEvent
    since = now - timedelta(hours=24)
    attempts, errors = session.execute(
        select(
            func.count(),
            func.count().filter(e.outcome.not_in(NOT_ERRORS)),
        ).where(e.integration_id == integration_id, e.kind == "attempt", e.created_at >= since)
    ).one()
    return Health(
        by_status=by_status,
        pending=pending,
        retry_queue=retry_queue,
        dead_letter=by_status.get(Status.FAILED.value, 0),
        attempts_24h=int(attempts or 0),
        errors_24h=int(errors or 0),
    )
