"""An integration's health numbers and the thresholds that make them a warning or an error.

Thresholds come from the seeds: seed 003's monitoring matrix (pending > 100 / 500, retry queue
> 50 / 200, dead letters > 10 / 50, error rate > 5% / 15%) and seed 001's operating guide
(success rate healthy above 90%, investigate below 80%; paid to registered within 24 h, a
student not registered after 48 h is a support case). Seed 001 names the retry rate without a
number: 20% / 50% is our choice. The refusal rate (issue 23) is ours too: partners' business
refusals are measured apart from failures, so a partner saying no to bad data never reads as an
outage. What an operator reads (`Threshold.source`) says where each number comes from in plain
words, never the seeds' names.

The business numbers (success, refusal and retry rates, dead letters) are the report's
(`console/report.py`), over the same window as the metrics asset, so one name is one number
wherever it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, type_coerce
from sqlalchemy.orm import Session

from anubis_dagster.clients.probes import Level
from anubis_dagster.console.report import IntegrationReport, build_report
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent, UTCDateTime

#: the window of the business numbers in health checks and the metrics asset
METRICS_DAYS = 7
#: attempt outcomes that are not errors of the integration (a 4xx or a refusal is the partner
#: answering no to our data, counted in statuses and in the refusal rate; in-flight attempts
#: have no outcome yet)
NOT_ERRORS = ("ok", "http_4xx", "refused", "in_flight")
#: not delivered yet and still being worked on: the backlog (reported delivered from
#: `awaiting_register` on, as in the report)
#: operation names of the health probes' requests (`clients.probes`)
PROBE_OPERATION_PREFIX = "health_"
BACKLOG = ("to_sync_lgpd", "sync_lgpd_failed", "to_sync", "course_failed", "to_register")


@dataclass(frozen=True)
class Threshold:
    warn: float
    error: float
    below: bool = False  # True when a low value is the bad one (success rate)
    unit: str = ""  # "%" (a 0..1 share), "h" (seconds shown in hours) or "" (a count)
    source: str = ""

    def level(self, value: float | None) -> Level:
        """None (nothing to measure yet, e.g. no delivery ended) passes."""
        if value is None:
            return Level.OK
        worse = (lambda limit: value < limit) if self.below else (lambda limit: value > limit)
        return Level.ERROR if worse(self.error) else Level.WARN if worse(self.warn) else Level.OK

    def show(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.unit == "%":
            return f"{value * 100:.1f}%"
        if self.unit == "h":
            return f"{value / 3600:.1f} h"
        return f"{value:g}"

    def describe(self) -> str:
        word = "below" if self.below else "above"
        return f"WARN {word} {self.show(self.warn)}, ERROR {word} {self.show(self.error)}"


#: where the operating guide's numbers come from, for the checks' descriptions
_GUIDE = "the operating guide Anubis was specified with"
_MATRIX = "the monitoring matrix Anubis was specified with"

THRESHOLDS: dict[str, Threshold] = {
    "success_rate": Threshold(
        0.90,
        0.80,
        below=True,
        unit="%",
        source=f"From {_GUIDE}: above 90% is healthy, below 80% needs investigating. Students "
        "the partner refused are left out: `refusal_rate` counts them.",
    ),
    "refusal_rate": Threshold(
        0.25,
        0.50,
        unit="%",
        source="Our choice: a refusal is the partner's answer about a student's data or offer "
        "(its code and message are in the lookup), not a failure of the integration; when a "
        "quarter of the students are refused, our data or the partner's offers have likely "
        "drifted apart, and half means nearly everyone is refused.",
    ),
    "error_rate": Threshold(
        0.05,
        0.15,
        unit="%",
        source=f"From {_MATRIX}. Refusals and other 4xx answers are not errors.",
    ),
    "retry_rate": Threshold(
        0.20,
        0.50,
        unit="%",
        source=f"Our choice: {_GUIDE} names the retry rate without a number.",
    ),
    "pending": Threshold(100, 500, source=f"From {_MATRIX}."),
    "retry_queue": Threshold(50, 200, source=f"From {_MATRIX}."),
    "backlog_age": Threshold(
        24 * 3600,
        48 * 3600,
        unit="h",
        source=f"From {_GUIDE}: a student is registered within 24 h of payment; one not "
        "registered after 48 h is a support case.",
    ),
    "dead_letters": Threshold(10, 50, source=f"From {_MATRIX}."),
}

#: what each number is, for the check's description (the integration's key is prefixed)
MEANINGS: dict[str, str] = {
    "success_rate": f"share of the deliveries that ended in the last {METRICS_DAYS} days "
    "(subscriptions created then), the partner's refusals apart, that reached the university",
    "refusal_rate": f"share of the deliveries that ended in the last {METRICS_DAYS} days "
    "(subscriptions created then) that the partner refused (`register_failed`, "
    "`empty_course`)",
    "error_rate": "share of the requests to the partner in the last 24 h that failed "
    "(5xx, timeouts, lost or unreadable answers, 429, refused credentials, no connection; "
    "health probes not counted)",
    "retry_rate": f"share of the students of the last {METRICS_DAYS} days (not rejected at "
    "intake) that needed a scheduled retry",
    "pending": "students waiting for their first delivery attempt",
    "retry_queue": "students waiting for a scheduled retry",
    "backlog_age": "age of the oldest student not yet delivered, from payment",
    "dead_letters": f"students of the last {METRICS_DAYS} days whose retries ran out (status "
    "`failed`, to be reviewed and requeued)",
}


@dataclass(frozen=True)
class Health:
    """The numbers the threshold checks read, for one integration."""

    report: IntegrationReport  # the business numbers over METRICS_DAYS
    pending: int
    retry_queue: int
    backlog_age: float | None  # seconds; None when nothing is waiting
    attempts_24h: int
    errors_24h: int

    @property
    def error_rate(self) -> float | None:
        return self.errors_24h / self.attempts_24h if self.attempts_24h else None

    def value(self, metric: str) -> float | None:
        values: dict[str, float | None] = {
            "success_rate": self.report.success_rate,
            "refusal_rate": self.report.refusal_rate,
            "error_rate": self.error_rate,
            "retry_rate": self.report.retry_rate,
            "pending": self.pending,
            "retry_queue": self.retry_queue,
            "backlog_age": self.backlog_age,
            "dead_letters": self.report.dead_letters,
        }
        return values[metric]

    def level(self, metric: str) -> Level:
        return THRESHOLDS[metric].level(self.value(metric))


def integration_health(session: Session, integration: Integration, now: datetime) -> Health:
    s = Subscription
    report = build_report(session, days=METRICS_DAYS, now=now, integration=integration.key)[0]
    # counted in the database: a backlog of many thousands never comes into Python
    waiting, retry_queue, oldest = session.execute(
        select(
            func.count(),
            func.count().filter(s.attempts > 0),
            type_coerce(func.min(func.coalesce(s.order_updated_at, s.created_at)), UTCDateTime),
        ).where(s.integration_id == integration.id, s.status.in_(BACKLOG))
    ).one()
    e = SubscriptionEvent
    attempts, errors = session.execute(
        select(func.count(), func.count().filter(e.outcome.not_in(NOT_ERRORS))).where(
            e.integration_id == integration.id,
            e.kind == "attempt",
            e.created_at >= now - timedelta(hours=24),
            # the probes' own requests: an outage is the connectivity checks' news, once
            e.operation_name.not_like(f"{PROBE_OPERATION_PREFIX}%"),
        )
    ).one()
    return Health(
        report=report,
        pending=int(waiting) - int(retry_queue),
        retry_queue=int(retry_queue),
        backlog_age=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        attempts_24h=int(attempts or 0),
        errors_24h=int(errors or 0),
    )
