"""The alerts a delivery run sends when it ends. Built from counts, subscription ids and masked
examples only: no personal data can be in them.

What is worth reading, and what is not:
- a delivery run in which students failed (a retry scheduled, a dead letter, held unknown) and
  no registration succeeded: ⚠️, always (a green run whose every student failed must not look
  routine; a partner that cannot be reached fails the run instead, see `delivery.step_ops`). A
  partner's refusal is its answer, not a failure: counted apart ("refused by the partner"), and
  listed by `anubis student --needs-attention`;
- subscriptions whose retries ran out (dead letter) or whose registration is held as unknown:
  🚨, one message each, with what to do;
- the partner's quota held the run back: ⚠️;
- the routine "finished" summary: ℹ️, only with `ANUBIS_RUN_SUMMARIES=true`; the daily digest
  (`alerts.digest`) reports the same numbers once a day per integration.

It lives with the other messages people read (`alerts/`), not in `delivery/`: `delivery.step_ops`
hands it the run's step reports as plain dicts, so it imports nothing of the delivery machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.settings import get_settings

SHOWN_IDS = 20
SHOWN_EXAMPLES = 3


def subscriptions_alert(
    ids: Sequence[int],
    *,
    headline: str,
    now: str,
    advice: str,
    run_id: str,
) -> Alert:
    """One 🚨 message about subscriptions that need a person (dead letters, held unknown)."""
    shown = ", ".join(f"#{i}" for i in ids[:SHOWN_IDS]) + (" …" if len(ids) > SHOWN_IDS else "")
    return Alert(
        f"{len(ids)} {headline}", [f"now {now}: {shown}", advice], "critical", run_id=run_id
    )


def delivery_counts(reports: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(failed, registered) of a delivery run's steps; None for a run that registers nothing
    (a check run). Deferred, previewed or untouched students count as neither."""
    if not any(report["step"] == "register" for report in reports):
        return None
    failed = sum(int(report.get("failed", 0)) for report in reports)
    registered = sum(int(report.get("registered", 0)) for report in reports)
    return failed, registered


def run_alerts(
    *,
    job: str,
    integration: str,
    run_id: str,
    started_at: datetime,
    reports: list[dict[str, Any]],
    summaries: bool | None = None,
) -> list[Alert]:
    """What to post when a delivery/check run of `integration` ends (see the module doc).
    `summaries` defaults to `ANUBIS_RUN_SUMMARIES`."""
    if summaries is None:
        summaries = get_settings().anubis_run_summaries
    processed = sum(r["processed"] for r in reports)
    if processed == 0:
        return []  # a run with nothing to do says nothing
    alerts = []
    counts = delivery_counts(reports)
    none_succeeded = counts is not None and counts[0] > 0 and counts[1] == 0
    if any(r.get("stopped") for r in reports):
        none_succeeded = False  # the partner is down: its circuit breaker's one alert says so
    if none_succeeded or summaries:
        alerts.append(_summary(job, integration, run_id, started_at, reports, counts))

    alerts.extend(_person_alerts(integration, run_id, reports))
    quota = _quota_alert(integration, run_id, reports)
    if quota is not None:
        alerts.append(quota)
    return alerts


def _person_alerts(integration: str, run_id: str, reports: list[dict[str, Any]]) -> list[Alert]:
    """Dead letters and held-unknown registrations each get their own 🚨: a person must act on
    them, and the two actions differ."""
    alerts = []
    dead = [i for r in reports for i in r["dead_lettered"]]
    if dead:
        alerts.append(
            subscriptions_alert(
                dead,
                headline=f"subscriptions of {integration} exhausted their retries",
                now="`failed` (dead letter)",
                advice="fix the cause, then requeue them from the Launchpad "
                "(requeue_failed_since or requeue_ids)",
                run_id=run_id,
            )
        )
    held = [i for r in reports for i in r.get("held_for_review", [])]
    if held:
        alerts.append(
            subscriptions_alert(
                held,
                headline=f"registrations to {integration} have an unknown outcome",
                now="`unknown` (held, not sent again)",
                advice=f"ask {integration} whether they arrived; requeue those that did not "
                "(requeue_ids in the Launchpad)",
                run_id=run_id,
            )
        )
    return alerts


def _quota_alert(integration: str, run_id: str, reports: list[dict[str, Any]]) -> Alert | None:
    """A saturated quota slows every run without failing any: only this ⚠️ makes it visible."""
    waited = sum(float(r["stats"].get("quota_wait_seconds", 0)) for r in reports)
    refused = sum(int(r["stats"].get("http_429", 0)) for r in reports)
    if waited < get_settings().anubis_quota_alert_seconds and not refused:
        return None
    return Alert(
        f"{integration} quota saturated",
        [f"waited {waited:.0f} s for the quota", f"{refused} answers 429 from {integration}"],
        "warning",
        run_id,
    )


def _summary(
    job: str,
    integration: str,
    run_id: str,
    started_at: datetime,
    reports: list[dict[str, Any]],
    counts: tuple[int, int] | None,
) -> Alert:
    """The run's counts by step and outcome: ⚠️ when students failed and no registration
    succeeded (with a few masked examples of why), ℹ️ otherwise."""
    finished = datetime.now(UTC)
    lines = [
        f"started {started_at:%H:%M:%S} UTC, finished {finished:%H:%M:%S} UTC "
        f"({(finished - started_at).total_seconds():.0f} s)"
    ]
    for report in reports:
        if report["processed"]:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report["outcomes"].items()))
            lines.append(f"{report['step']}: {report['processed']} ({outcomes})")
    calls = sum(int(r["stats"].get("calls", 0)) for r in reports)
    lines.append(f"{calls} calls to {integration}")
    if counts is None:
        return Alert(f"{job} [{integration}] finished", lines, "info", run_id)
    failed, registered = counts
    refused = sum(int(report.get("refused", 0)) for report in reports)
    partner_said_no = f", {refused} refused by the partner" if refused else ""
    lines.insert(1, f"{registered} registered, {failed} failed{partner_said_no}")
    if failed and not registered:
        examples = [e for r in reports if r.get("failed") for e in r.get("examples", [])]
        lines.extend(f"e.g. {example}" for example in examples[:SHOWN_EXAMPLES])
        title = f"{job} [{integration}]: no registration succeeded, {failed} failed"
        return Alert(title, lines, "warning", run_id)
    return Alert(f"{job} [{integration}] finished", lines, "info", run_id)
