"""The drift alarm's shell: a chunk's counts through `core.drift`, each drift claimed once per
reason per day in `alert_states` (so every run and process shares the dedup), then alerted."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from anubis_dagster.alerts.once import claim_daily
from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.core.drift import Drift, DriftThresholds, find_drifts
from anubis_dagster.intake.report import IntakeReport
from anubis_dagster.settings import get_settings


def drift_thresholds() -> DriftThresholds:
    settings = get_settings()
    return DriftThresholds(settings.anubis_drift_min_share, settings.anubis_drift_min_orders)


def alert_drifts(
    session_factory: Callable[[], AbstractContextManager[Session]],
    chunk: IntakeReport,
    *,
    run_id: str | None,
    thresholds: DriftThresholds | None = None,
    now: datetime | None = None,
) -> list[Drift]:
    """Alert the drifts of one intake chunk not alerted yet today; the ones alerted."""
    drifts = find_drifts(
        chunk.invalid_by_reason,
        chunk.decided,
        chunk.unrouted_by_reason,
        chunk.readable,
        thresholds or drift_thresholds(),
    )
    if not drifts:
        return []
    now = now or datetime.now(UTC)
    with session_factory() as session:
        claimed = [
            d for d in drifts if claim_daily(session, d.scope, d.key, now.date(), d.message(), now)
        ]
    for drift in claimed:
        send_alert(_alert(drift, run_id))
    return claimed


def _alert(drift: Drift, run_id: str | None) -> Alert:
    what = (
        "these orders became `invalid` subscriptions and are not sent"
        if drift.kind == "invalid"
        else "no integration filter matched these orders: they were not ingested"
    )
    return Alert(
        "Order shape changed?",
        [
            drift.message(),
            f"{drift.share:.0%} of the chunk; {what}",
            "a marketplace deploy may have changed the order's shape: check the field above at "
            "the source; corrected orders (their updated_at moves) are validated again",
            "alerted once per reason per day (ANUBIS_DRIFT_MIN_SHARE, ANUBIS_DRIFT_MIN_ORDERS)",
        ],
        level="critical",
        run_id=run_id,
    )
