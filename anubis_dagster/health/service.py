"""Health and metrics of one integration, as plain functions the assets call.

`evaluate_integration` runs the adapter's connectivity probes and reads the threshold numbers;
`alert_changes` sends one webhook alert per check whose level changed; `business_metrics` and
`alert_anomalies` do the same for the metrics asset. Nothing here needs Dagster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.alerts.once import claim_daily
from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.clients.probes import Level, Probe, ProbeResult
from anubis_dagster.console.report import IntegrationReport, as_date, utc_day
from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.delivery.breaker import open_breakers, why_stopped
from anubis_dagster.health import anomalies
from anubis_dagster.health.alerting import (
    Change,
    CheckOutcome,
    change_alert,
    changed_state,
)
from anubis_dagster.health.metrics import (
    MEANINGS,
    METRICS_DAYS,
    THRESHOLDS,
    Health,
    integration_health,
)
from anubis_dagster.integrations.base import IESAdapter
from anubis_dagster.integrations.partner_api import PartnerClients
from anubis_dagster.integrations.status_check import NO_STATUS_CHECK

Send = Callable[[Alert], bool]


BREAKER_CHECK = "circuit_breaker"


def breaker_outcome(db_url: str, key: str, adapter: type[IESAdapter]) -> CheckOutcome:
    """ERROR while any of the integration's partner APIs has its circuit breaker open."""
    with session_scope(db_url) as session:
        broken = open_breakers(session, adapter)
    if not broken:
        summary = f"{key}: every partner API's circuit breaker is closed"
        return CheckOutcome(key, BREAKER_CHECK, Level.OK, "closed", "closed", summary)
    reasons = "; ".join(why_stopped(adapter, api, s) for api, s in sorted(broken.items()))
    return CheckOutcome(key, BREAKER_CHECK, Level.ERROR, "open", "closed", mask_text(reasons))


def probe_description(key: str, probe: Probe) -> str:
    return f"{key}: {probe.description}"


def threshold_description(key: str, metric: str) -> str:
    threshold = THRESHOLDS[metric]
    return f"{key}: {MEANINGS[metric]}. {threshold.describe()}. {threshold.source}"


def threshold_summary(key: str, metric: str, shown: str) -> str:
    return f"{key} {metric}: {shown} ({THRESHOLDS[metric].describe()})"


@dataclass
class IntegrationHealth:
    outcomes: list[CheckOutcome] = field(default_factory=list)
    probe_metadata: dict[str, Any] = field(default_factory=dict)
    health: Health | None = None


def evaluate_integration(
    db_url: str,
    key: str,
    probes: Sequence[Probe],
    clients: PartnerClients,
    now: datetime,
) -> IntegrationHealth:
    """Every check of integration `key`: its probes (one request each, on the integration's
    ready clients; none when the API's variables are unset), then its thresholds."""
    result = IntegrationHealth()
    for probe in probes:
        try:
            found = clients.unprobed(probe.api) or probe.run(clients)
        except Exception as exc:  # a bug in a probe must not hide the other checks
            found = ProbeResult(Level.ERROR, f"the probe failed: {type(exc).__name__}: {exc}")
        result.outcomes.append(
            CheckOutcome(
                key,
                probe.name,
                found.level,
                mask_text(found.summary)[:300],
                "answers and accepts our credentials in one request",
                mask_text(found.summary),
            )
        )
        for name, value in found.metadata.items():
            result.probe_metadata[f"{probe.name}_{name}"] = value
    with session_scope(db_url) as session:
        integration = session.scalars(select(Integration).where(Integration.key == key)).one()
        health = integration_health(session, integration, now)
    result.health = health
    for metric, threshold in THRESHOLDS.items():
        value = health.value(metric)
        shown, level = threshold.show(value), threshold.level(value)
        summary = threshold_summary(key, metric, shown)
        result.outcomes.append(
            CheckOutcome(key, metric, level, shown, threshold.describe(), summary)
        )
    return result


def alert_changes(
    db_url: str,
    outcomes: Iterable[CheckOutcome],
    run_id: str | None,
    now: datetime,
    send: Send = send_alert,
) -> int:
    """One alert per check whose level changed since it was last evaluated; how many."""
    sent = 0
    for outcome in outcomes:
        try:
            with session_scope(db_url) as session:
                change = changed_state(session, outcome, now)
        except Exception as exc:  # the app DB is down: alert without memory, and say so
            change = Change(None) if outcome.level is not Level.OK else None
            outcome = CheckOutcome(
                outcome.scope,
                outcome.name,
                outcome.level,
                outcome.measured,
                outcome.threshold,
                f"{outcome.summary} (its state could not be recorded, {type(exc).__name__}: "
                "this alert repeats until the app DB answers)",
            )
        if change is not None:
            send(change_alert(outcome, change, run_id))
            sent += 1
    return sent


# --- metrics -----------------------------------------------------------------------------------
#: a figure that cannot exist, or that nothing measured yet: said in words, never plotted as 0
NA = "n/a"


def in_percent(share: float | None) -> float | str:
    """A 0..1 share in percent, to 0.1 (as the checks show it); n/a when there is none."""
    return NA if share is None else round(share * 100, 1)


def in_hours(seconds: float | None) -> float | str:
    """Seconds in hours, to 0.01 (36 s); n/a when there is none."""
    return NA if seconds is None else round(seconds / 3600, 2)


def business_metrics(
    report: IntegrationReport, volume_24h: dict[str, int], followed: bool = True
) -> dict[str, float | int | str]:
    """The numbers the metrics asset records (and the UI plots), one key per number, in the
    units an operator reads: percents (`_pct`), hours (`_h`). A figure that cannot exist, or
    that nothing measured yet, is the text `n/a` (not a plotted 0). `followed`: the
    integration has a status check; without one, whether a student enrolled is never known,
    and the conversion is n/a."""
    per_registration = report.calls_per_registration
    values: dict[str, float | int | str] = {
        "subscriptions": report.subscriptions,
        "delivered": report.delivered,
        "refused": report.refused,
        "success_rate_pct": in_percent(report.success_rate),
        "refusal_rate_pct": in_percent(report.refusal_rate),
        "retry_rate_pct": in_percent(report.retry_rate),
        "dead_letters": report.dead_letters,
        "held_for_review": report.statuses["unknown"],
        "paid_to_registered_p50_h": in_hours(report.latency(50)),
        "paid_to_registered_p95_h": in_hours(report.latency(95)),
        "calls_per_registration": NA if per_registration is None else round(per_registration, 2),
        "volume_24h": sum(volume_24h.values()),
    }
    for origin, count in sorted(volume_24h.items()):
        values[f"volume_24h_{origin}"] = count
    if not followed:
        values["conversion_rate_pct"] = f"{NA}: {report.integration} {NO_STATUS_CHECK}"
        return values
    registered = sum(c.registered for c in report.by_modality.values())
    enrolled = sum(c.enrolled for c in report.by_modality.values())
    values["conversion_rate_pct"] = in_percent(enrolled / registered if registered else None)
    for modality, conversion in sorted(report.by_modality.items()):
        values[f"conversion_{_slug(modality)}_pct"] = in_percent(conversion.rate)
    return values


def conversion_table(report: IntegrationReport, followed: bool = True) -> str:
    """Markdown: registered → enrolled by modality and by campus (the seeds' SQL, no SQL)."""
    parts = [] if followed else [f"Conversion n/a: {report.integration} {NO_STATUS_CHECK}."]
    for title, table in (("modality", report.by_modality), ("campus", report.by_campus)):
        rows = [f"| {title} | registered | enrolled | conversion |", "|---|---:|---:|---:|"]
        for name, c in sorted(table.items()):
            rate = NA if c.rate is None or not followed else f"{c.rate * 100:.1f}%"
            enrolled = str(c.enrolled) if followed else NA
            rows.append(f"| {mask_text(name)} | {c.registered} | {enrolled} | {rate} |")
        parts.append("\n".join(rows) if table else f"no registered students by {title} yet")
    return "\n\n".join(parts)


def volume_by_origin(db_url: str, integration_id: int, now: datetime) -> dict[str, int]:
    s = Subscription
    counts: dict[str, int] = {}
    with session_scope(db_url) as session:
        rows = session.execute(
            select(s.origin, func.count())
            .where(s.integration_id == integration_id, s.created_at >= now - timedelta(hours=24))
            .group_by(s.origin)
        ).all()
    for origin, count in rows:
        counts[origin or "unknown"] = counts.get(origin or "unknown", 0) + int(count)
    return counts


def invalid_share_by_day(
    db_url: str, integration_id: int, now: datetime, days: int = METRICS_DAYS
) -> dict[str, float]:
    """Day (UTC) → share of the subscriptions intake created that day that are `invalid`, over
    the last `days` days with any (issue 21: an order-shape drift shows as a jump)."""
    since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Subscription.created_at, Subscription.status).where(
                Subscription.integration_id == integration_id, Subscription.created_at >= since
            )
        ).all()
    totals: dict[str, list[int]] = {}
    for created_at, status in rows:
        counts = totals.setdefault(created_at.date().isoformat(), [0, 0])
        counts[0] += 1
        counts[1] += status == Status.INVALID.value
    return {day: round(invalid / total, 4) for day, (total, invalid) in sorted(totals.items())}


def find_anomalies(db_url: str, integration_id: int, now: datetime) -> list[anomalies.Anomaly]:
    """Volume and retries of the last days against their usual (see `health.anomalies`); the
    daily counts are made in the database."""
    since = datetime.combine(
        now.date() - timedelta(days=anomalies.BASELINE_DAYS + 1), datetime.min.time(), now.tzinfo
    )
    s, e = Subscription, SubscriptionEvent
    with session_scope(db_url) as session:
        created = _daily_counts(
            session,
            s.created_at,
            s.integration_id == integration_id,
            s.created_at >= since,
        )
        retries = _daily_counts(
            session,
            e.created_at,
            e.integration_id == integration_id,
            e.kind == "retry",
            e.created_at >= since,
        )
    today = now.date()
    found = [
        anomalies.volume_anomaly(created, today),
        anomalies.retry_anomaly(retries, today),
    ]
    return [a for a in found if a is not None]


def _daily_counts(session: Session, moment: Any, *where: Any) -> Counter[date]:
    day = utc_day(session, moment)
    rows = session.execute(select(day, func.count()).where(*where).group_by(day)).all()
    return Counter({as_date(on): int(count) for on, count in rows})


def alert_anomalies(
    db_url: str,
    key: str,
    found: Iterable[anomalies.Anomaly],
    run_id: str | None,
    now: datetime,
    send: Send = send_alert,
) -> int:
    """At most one alert per anomaly kind, integration and day; how many were sent."""
    sent = 0
    for anomaly in found:
        with session_scope(db_url) as session:
            first = claim_daily(
                session, key, f"anomaly:{anomaly.name}", now.date(), anomaly.message, now
            )
        if first:
            title = {"volume": "Anomalous volume", "retries": "Excessive retries"}[anomaly.name]
            lines = [
                f"integration: {key}",
                f"check: {anomaly.name} (against the usual of the last days)",
                f"measured: {anomaly.measured}",
                f"threshold: {anomaly.expected}",
                anomaly.message,
            ]
            alert = Alert(f"{title}: {key}", lines, level="warning", run_id=run_id)
            alert.ui_path, alert.link_text = f"/assets/metrics/{key}", "Open the metrics in Dagster"
            send(alert)
            sent += 1
    return sent


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_") or "unknown"
