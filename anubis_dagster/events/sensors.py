"""The publisher's Dagster side: one sensor drains the event outbox to Kafka.

Why a sensor that publishes in its tick, not a job a schedule launches: the work is small,
bounded (a few batches, a deadline well inside the 60 s tick) and safe to cut anywhere (at
least once, rows marked after the brokers' acknowledgement), so a run per minute would add
a run worker's start-up and a run's records to the event log every minute, for ever, to do
a few seconds of work. The tick cursor carries the back-off after failures and whether the
lag alert is out, so an alert is sent once when the lag crosses the threshold and once when
it recovers. With publishing off (the default) the tick only prunes the outbox.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import dagster as dg

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.events.publisher import OutboxPublisher, backoff_seconds, prune
from anubis_dagster.resources import AppDatabase, prepare_database
from anubis_dagster.settings import get_settings

#: publishing stops this long after the tick starts (a tick has 60 s)
TICK_BUDGET_SECONDS = 40.0


@dataclass
class PublisherState:
    failures: int = 0  # failed ticks in a row
    retry_at: float = 0.0  # epoch seconds: no publishing before
    lag_alerted: bool = False

    @classmethod
    def parse(cls, cursor: str | None) -> PublisherState:
        try:
            return cls(**json.loads(cursor)) if cursor else cls()
        except (TypeError, ValueError):
            return cls()

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def lag_alert(lag_seconds: float, waiting: int, threshold: float, errors: list[str]) -> Alert:
    lines = [
        f"oldest unpublished event: {lag_seconds:.0f} s old (threshold {threshold:.0f} s)",
        f"events waiting in the outbox: {waiting}",
    ]
    if errors:
        lines.append(f"last broker error: {errors[-1]}")
    return Alert("Events to Kafka are late", lines, level="warning")


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Event outbox → Kafka (ANUBIS_EVENTS_ENABLED); prunes the outbox.",
)
def publish_events_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabase
) -> dg.SkipReason:
    """Publishes the outcomes other services react to (CRM, BI, the marketplaces' "your place
    is confirmed"), so they never read Anubis's database."""
    settings = get_settings()
    url = app_db.resolved_url
    prepare_database(url)
    state = PublisherState.parse(context.cursor)
    if not settings.anubis_events_enabled:
        pruned = prune(
            url, retention_days=settings.anubis_events_retention_days, published_only=False
        )
        return dg.SkipReason(f"publishing off (ANUBIS_EVENTS_ENABLED); {pruned} old events pruned")
    now = time.time()
    if now < state.retry_at:
        return dg.SkipReason(f"backing off after {state.failures} failed ticks")
    publisher = OutboxPublisher.from_settings(url, settings)
    report = publisher.drain(
        max_batches=settings.anubis_events_max_batches_per_tick,
        deadline=time.monotonic() + TICK_BUDGET_SECONDS,
    )
    if report.failed:
        state.failures += 1
        state.retry_at = now + backoff_seconds(state.failures)
        context.log.warning(f"events: {report.failed} not delivered: {'; '.join(report.errors)}")
    else:
        state.failures, state.retry_at = 0, 0.0
    lag = report.lag_seconds()
    threshold = settings.anubis_events_lag_alert_seconds
    if lag > threshold and not state.lag_alerted:
        send_alert(lag_alert(lag, report.waiting, threshold, report.errors))
        state.lag_alerted = True
    elif lag <= threshold and state.lag_alerted:
        send_alert(Alert("Events to Kafka caught up", [f"waiting: {report.waiting}"]))
        state.lag_alerted = False
    report.pruned = prune(
        url, retention_days=settings.anubis_events_retention_days, published_only=True
    )
    context.update_cursor(state.to_json())
    return dg.SkipReason(
        f"{report.published} published, {report.failed} failed, {report.waiting} waiting "
        f"(lag {lag:.0f} s), {report.pruned} pruned"
    )
