"""Metrics the business reads, per integration so numbers never mix (`anubis report`).

The seeds' operating guide answers these with SQL: daily volume by marketplace, success rate,
retry rate, dead letters, time from paid to registered, calls per registration, and conversion
from registered to enrolled by modality and by campus. Here they are computed from the app DB
for the subscriptions created in the last N days. Plain Python over one query per table.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.core.orders import get_path
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent

#: reached the university: registered there, or further along
DELIVERED = frozenset({"awaiting_register", "registered", "enrolled", "dropped"})
#: ended without reaching it (refused, dead letter, no course, held for review)
NOT_DELIVERED = frozenset({"register_failed", "failed", "empty_course", "unknown"})
#: not deliverable at all: our intake's decisions
REJECTED = frozenset({"invalid", "duplicate"})
#: of the delivered, those whose outcome at the university is known
CONVERSION_BASE = frozenset({"registered", "enrolled", "dropped"})


@dataclass
class Conversion:
    registered: int = 0  # delivered and followed (registered, enrolled, dropped)
    enrolled: int = 0

    @property
    def rate(self) -> float | None:
        return self.enrolled / self.registered if self.registered else None


@dataclass
class IntegrationReport:
    integration: str
    since: datetime
    subscriptions: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    volume: Counter[tuple[date, str]] = field(default_factory=Counter)  # (day, origin) → n
    retried: int = 0  # subscriptions that needed at least one scheduled retry
    calls: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, paid → registered
    by_modality: dict[str, Conversion] = field(default_factory=lambda: defaultdict(Conversion))
    by_campus: dict[str, Conversion] = field(default_factory=lambda: defaultdict(Conversion))

    @property
    def delivered(self) -> int:
        return sum(self.statuses[s] for s in DELIVERED)

    @property
    def ended_undelivered(self) -> int:
        return sum(self.statuses[s] for s in NOT_DELIVERED)

    @property
    def success_rate(self) -> float | None:
        """Of the students whose delivery ended, the share that reached the university."""
        ended = self.delivered + self.ended_undelivered
        return self.delivered / ended if ended else None

    @property
    def retry_rate(self) -> float | None:
        tried = self.subscriptions - sum(self.statuses[s] for s in REJECTED)
        return self.retried / tried if tried else None

    @property
    def dead_letters(self) -> int:
        return self.statuses["failed"]

    @property
    def calls_per_registration(self) -> float | None:
        return self.calls / self.delivered if self.delivered else None

    def latency(self, percentile: float) -> float | None:
        return nearest_rank(self.latencies, percentile)


def nearest_rank(values: Iterable[float], percentile: float) -> float | None:
    """The nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


def build_report(
    session: Session,
    *,
    days: int = 30,
    now: datetime | None = None,
    integration: str | None = None,
) -> list[IntegrationReport]:
    """One report per integration (or only `integration`'s), over the subscriptions created in
    the last `days`. The health checks and the metrics assets read their numbers here too."""
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    integrations = select(Integration.id, Integration.key)
    if integration is not None:
        integrations = integrations.where(Integration.key == integration)
    keys = dict(session.execute(integrations).all())
    reports = {i: IntegrationReport(key, since) for i, key in keys.items()}
    mine = Subscription.integration_id.in_(list(keys))
    rows = session.execute(
        select(
            Subscription.id,
            Subscription.integration_id,
            Subscription.status,
            Subscription.origin,
            Subscription.created_at,
            Subscription.order_updated_at,
            Subscription.sent_at,
            Subscription.payload,
        ).where(Subscription.created_at >= since, mine)
    ).all()
    for row in rows:
        _count(reports[row.integration_id], row)
    retried = session.execute(
        select(
            Subscription.integration_id,
            func.count(func.distinct(SubscriptionEvent.subscription_id)),
        )
        .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
        .where(SubscriptionEvent.kind == "retry", Subscription.created_at >= since, mine)
        .group_by(Subscription.integration_id)
    ).all()
    for integration_id, count in retried:
        reports[integration_id].retried = int(count)
    calls = session.execute(
        select(SubscriptionEvent.integration_id, func.count())
        .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
        .where(SubscriptionEvent.kind == "attempt", Subscription.created_at >= since, mine)
        .group_by(SubscriptionEvent.integration_id)
    ).all()
    for called, count in calls:
        if called is not None and called in reports:
            reports[called].calls = int(count)
    return sorted(reports.values(), key=lambda r: r.integration)


def _count(report: IntegrationReport, row: Any) -> None:
    report.subscriptions += 1
    report.statuses[row.status] += 1
    report.volume[(row.created_at.date(), row.origin or "-")] += 1
    paid = row.order_updated_at or row.created_at
    if row.sent_at is not None and row.status in DELIVERED:
        report.latencies.append(max(0.0, (row.sent_at - paid).total_seconds()))
    if row.status in CONVERSION_BASE:
        payload = row.payload or {}
        modality = str(get_path(payload, "offer.course.kind") or "unknown")
        campus_name = get_path(payload, "offer.course.campus.name")
        city = get_path(payload, "offer.course.campus.city")
        campus = (
            f"{campus_name} ({city})" if campus_name and city else str(campus_name or "unknown")
        )
        for bucket in (report.by_modality[modality], report.by_campus[campus]):
            bucket.registered += 1
            bucket.enrolled += row.status == "enrolled"


def format_report(reports: list[IntegrationReport], days: int) -> str:
    """Plain-text tables, one block per integration."""
    blocks = []
    for r in reports:
        head = (
            f"== {r.integration}: {r.subscriptions} subscriptions created in the last {days} days"
        )
        summary = [
            ("delivered to the university", str(r.delivered)),
            ("success rate", _pct(r.success_rate)),
            ("retry rate", _pct(r.retry_rate)),
            ("dead letters (failed)", str(r.dead_letters)),
            ("held for review (unknown)", str(r.statuses["unknown"])),
            ("paid → registered p50", _duration(r.latency(50))),
            ("paid → registered p95", _duration(r.latency(95))),
            ("calls per registration", _num(r.calls_per_registration)),
        ]
        volume = [
            (f"{day:%Y-%m-%d}", origin, str(n)) for (day, origin), n in sorted(r.volume.items())
        ]
        parts = [head, format_table(summary, ("metric", "value"))]
        if volume:
            parts.append(format_table(volume, ("day", "origin", "subscriptions")))
        for title, table in (("modality", r.by_modality), ("campus", r.by_campus)):
            if table:
                rows = [
                    (name, str(c.registered), str(c.enrolled), _pct(c.rate))
                    for name, c in sorted(table.items())
                ]
                parts.append(format_table(rows, (title, "registered", "enrolled", "conversion")))
        blocks.append("\n\n".join(parts))
    return "\n\n".join(blocks) if blocks else "no integrations"


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Left-aligned columns, the last one right-aligned (numbers)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        last = len(values) - 1
        return "  ".join(
            v.rjust(w) if i == last else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
