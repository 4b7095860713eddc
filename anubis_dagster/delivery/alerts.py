"""The alerts a delivery run sends when it ends: a summary (started, finished, counts by
outcome, like the current services post), one message for the subscriptions whose retries ran
out in this run, and one when the partner's quota held the run back. Built from counts and
subscription ids only: no personal data can be in them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.settings import get_settings

QUOTA_ALERT_SECONDS = get_settings().anubis_quota_alert_seconds


def run_alerts(
    *,
    job: str,
    integration: str,
    run_id: str,
    started_at: datetime,
    reports: list[dict[str, Any]],
) -> list[Alert]:
    processed = sum(r["processed"] for r in reports)
    if processed == 0:
        return []  # a run with nothing to do says nothing
    finished = datetime.now(UTC)
    lines = [
        f"started {started_at:%H:%M:%S} UTC, finished {finished:%H:%M:%S} UTC "
        f"({(finished - started_at).total_seconds():.0f} s)"
    ]
    for report in reports:
        if report["processed"]:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report["outcomes"].items()))
            lines.append(f"{report['step']}: {report['processed']} ({counts})")
    calls = sum(int(r["stats"].get("calls", 0)) for r in reports)
    lines.append(f"{calls} calls to {integration}")
    alerts = [Alert(f"{job} [{integration}] finished", lines, "info", run_id)]

    dead = [i for r in reports for i in r["dead_lettered"]]
    if dead:
        shown = ", ".join(f"#{i}" for i in dead[:20]) + (" …" if len(dead) > 20 else "")
        alerts.append(
            Alert(
                f"{len(dead)} subscriptions of {integration} exhausted their retries",
                [
                    f"now `failed` (dead letter): {shown}",
                    "fix the cause, then requeue them from the Launchpad (requeue_failed_since)",
                ],
                "critical",
                run_id,
            )
        )
    held = [i for r in reports for i in r.get("held_for_review", [])]
    if held:
        shown = ", ".join(f"#{i}" for i in held[:20]) + (" …" if len(held) > 20 else "")
        alerts.append(
            Alert(
                f"{len(held)} registrations to {integration} have an unknown outcome",
                [
                    f"now `unknown` (held, not sent again): {shown}",
                    f"ask {integration} whether they arrived; requeue those that did not "
                    "(requeue_ids in the Launchpad)",
                ],
                "critical",
                run_id,
            )
        )
    waited = sum(float(r["stats"].get("quota_wait_seconds", 0)) for r in reports)
    refused = sum(int(r["stats"].get("http_429", 0)) for r in reports)
    if waited >= QUOTA_ALERT_SECONDS or refused:
        alerts.append(
            Alert(
                f"{integration} quota saturated",
                [
                    f"waited {waited:.0f} s for the quota",
                    f"{refused} answers 429 from {integration}",
                ],
                "warning",
                run_id,
            )
        )
    return alerts
