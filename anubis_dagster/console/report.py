"""Metrics the business reads, per integration so numbers never mix (`anubis report`).

The seeds' operating guide answers these with SQL: daily volume by marketplace, success rate,
retry rate, dead letters, time from paid to registered, calls per registration, and conversion
from registered to enrolled by modality and by campus. Here they are computed from the app DB
for the subscriptions created in the last N days, aggregated in the database (group-by counts
and percentiles), so a year of a large app DB costs a few queries and no memory.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, cast, func, select, text
from sqlalchemy.orm import Session

from anubis_dagster.core.offer import campus_label, modality_label
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.integrations.status_check import NO_STATUS_CHECK, has_status_check

#: reached the university: registered there, or further along
DELIVERED = frozenset({"awaiting_register", "registered", "enrolled", "dropped"})
#: ended without reaching it because the partner said no: a business answer (its code and
#: message are the reason), not a failure of the integration
REFUSED = frozenset({"register_failed", "empty_course"})
#: ended without reaching it by a failure: a dead letter, or held for review
FAILED = frozenset({"failed", "unknown"})
#: ended without reaching it (refused, dead letter, held for review)
NOT_DELIVERED = REFUSED | FAILED
#: not deliverable at all: our intake's decisions
REJECTED = frozenset({"invalid", "duplicate"})
#: of the delivered, those whose outcome at the university is known
CONVERSION_BASE = frozenset({"registered", "enrolled", "dropped"})
#: the paid → registered percentiles the report shows
LATENCY_PERCENTILES = (50, 95)
#: a figure that cannot exist (a conversion no one can know), as the metrics asset says it
NA = "n/a"


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
    # paid → registered (seconds) of the delivered: how many, and the percentiles computed
    latency_count: int = 0
    latency_percentiles: dict[float, float | None] = field(default_factory=dict)
    by_modality: dict[str, Conversion] = field(default_factory=lambda: defaultdict(Conversion))
    by_campus: dict[str, Conversion] = field(default_factory=lambda: defaultdict(Conversion))
    #: the partner is asked what became of registered students; without a status check the
    #: conversion is never known (`integrations.status_check`), shown n/a, never 0%
    followed: bool = True

    @property
    def delivered(self) -> int:
        return sum(self.statuses[s] for s in DELIVERED)

    @property
    def ended_undelivered(self) -> int:
        return sum(self.statuses[s] for s in NOT_DELIVERED)

    @property
    def refused(self) -> int:
        return sum(self.statuses[s] for s in REFUSED)

    @property
    def success_rate(self) -> float | None:
        """Of the students whose delivery ended and that the partner did not refuse, the share
        that reached the university. A refusal is the partner's answer about the student's data
        or offer, not a failure of the integration: `refusal_rate` measures it apart."""
        ended = self.delivered + self.ended_undelivered - self.refused
        return self.delivered / ended if ended else None

    @property
    def refusal_rate(self) -> float | None:
        """Of the students whose delivery ended, the share the partner refused."""
        ended = self.delivered + self.ended_undelivered
        return self.refused / ended if ended else None

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
        """The nearest-rank percentile of paid → registered (seconds); None when no delivered
        student has a send time. Only the percentiles `build_report` was asked for."""
        if percentile not in self.latency_percentiles:
            if not self.latency_count:
                return None
            raise KeyError(f"p{percentile:g} was not computed (build_report(percentiles=…))")
        return self.latency_percentiles[percentile]


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
    percentiles: Sequence[float] = LATENCY_PERCENTILES,
) -> list[IntegrationReport]:
    """One report per integration (or only `integration`'s), over the subscriptions created in
    the last `days`. The health checks and the metrics assets read their numbers here too.

    Every figure is aggregated in the database (a year of a large app DB never comes into
    Python): counts by status, day and origin; the paid → registered percentiles
    (`percentiles`) with `percentile_disc` on PostgreSQL, which is the nearest rank, and on
    SQLite by counting and then fetching the one row at that rank; conversion by the offer's
    modality and campus columns, named here as before."""
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    integrations = select(Integration.id, Integration.key, Integration.type)
    if integration is not None:
        integrations = integrations.where(Integration.key == integration)
    keys = {i: (key, kind) for i, key, kind in session.execute(integrations)}
    reports = {
        i: IntegrationReport(key, since, followed=has_status_check(kind) is not False)
        for i, (key, kind) in keys.items()
    }
    if not reports:
        return []
    s = Subscription
    window = [s.created_at >= since, s.integration_id.in_(list(keys))]
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        # for this transaction only: compiling these few scans cost PostgreSQL's JIT 1–3 s
        # each at cutover size, more than it saved; and the percentiles' sort and the group-bys
        # of a year spilled to disk at the default 4 MB (64 MB: 10–20% faster, BENCHMARKS.md)
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))
    _volume(session, reports, window)
    _latencies(session, reports, window, percentiles, postgres)
    _conversion(session, reports, window)
    _retries_and_calls(session, reports, window, since)
    return sorted(reports.values(), key=lambda r: r.integration)


def _volume(session: Session, reports: dict[int, IntegrationReport], window: list[Any]) -> None:
    """Counts by status, UTC day and origin. Volume, statuses and dead letters are Anubis's own:
    a legacy import (its failures included) would show as one day's spike; the conversion
    counts imported students."""
    s = Subscription
    day = utc_day(session, s.created_at)
    for integration_id, status, on, origin, count in session.execute(
        select(s.integration_id, s.status, day, s.origin, func.count())
        .where(*window, s.legacy_status.is_(None))
        .group_by(s.integration_id, s.status, day, s.origin)
    ):
        report = reports[integration_id]
        report.subscriptions += count
        report.statuses[status] += count
        report.volume[(as_date(on), origin or "-")] += count


def _retries_and_calls(
    session: Session, reports: dict[int, IntegrationReport], window: list[Any], since: datetime
) -> None:
    """Students retried at least once, and the calls made to each IES for the window's
    students.

    Both are counts of events of the window's subscriptions. A year's window holds nearly
    every subscription, and joining millions of attempt rows to it cost 2.5–3 s at cutover
    size (BENCHMARKS.md), so when the subscriptions before the window are the fewer, the
    count is every event of these integrations (an index-only scan) less the events of those
    older subscriptions. An event carries its subscription's integration (a run works for one
    integration), which is what makes the two ways count the same rows."""
    s = Subscription
    ids = list(reports)
    inside = sum(r.subscriptions for r in reports.values())
    older = [s.integration_id.in_(ids), s.created_at < since]
    n_older = session.scalar(
        select(func.count()).select_from(select(s.id).where(*older).limit(inside + 1).subquery())
    )
    if int(n_older or 0) < inside:
        every = _event_counts(session, None, ids)
        minus = _event_counts(session, older, ids)
        counts = {key: every[key] - minus.get(key, 0) for key in every}
    else:
        counts = _event_counts(session, window, ids)
    for (integration_id, kind), count in counts.items():
        report = reports[integration_id]
        if kind == "retry":
            report.retried = int(count)
        else:
            report.calls = int(count)


def _event_counts(
    session: Session, subscriptions: list[Any] | None, ids: list[int]
) -> dict[tuple[int, str], int]:
    """{(integration id, "retry" | "attempt"): count} for the subscriptions matching
    `subscriptions` (None: every subscription): the students with at least one retry, and
    the attempts (calls) made for them."""
    s, e = Subscription, SubscriptionEvent
    counts: dict[tuple[int, str], int] = {}
    for kind, measure in (
        ("retry", func.count(func.distinct(e.subscription_id))),
        ("attempt", func.count()),
    ):
        query = select(e.integration_id, measure).where(
            e.kind == kind, e.subscription_id.is_not(None), e.integration_id.in_(ids)
        )
        if subscriptions is not None:
            query = query.join(s, s.id == e.subscription_id).where(*subscriptions)
        for integration_id, count in session.execute(query.group_by(e.integration_id)):
            if integration_id is not None:  # filtered above; for the type checker
                counts[(integration_id, kind)] = int(count)
    return counts


def utc_day(session: Session, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, as SQL (read it back with `as_date`)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)  # SQLite keeps UTC text


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _latencies(
    session: Session,
    reports: dict[int, IntegrationReport],
    window: list[Any],
    percentiles: Sequence[float],
    postgres: bool,
) -> None:
    """Paid → registered, in seconds, of the delivered subscriptions that have `sent_at`:
    its count and its nearest-rank percentiles, exact to the microsecond on both backends.
    Students imported from a legacy service are left out: the legacy sent them, and they carry
    no order time of ours to measure from."""
    s = Subscription
    paid = func.coalesce(s.order_updated_at, s.created_at)
    delivered = [
        *window,
        s.sent_at.is_not(None),
        s.status.in_(sorted(DELIVERED)),
        s.legacy_status.is_(None),
    ]
    if postgres:
        # float8 of the exact numeric epoch: the same double as Python's total_seconds()
        seconds = func.greatest(0, cast(func.extract("epoch", s.sent_at - paid), Float))
        aggregates = [func.percentile_disc(p / 100).within_group(seconds) for p in percentiles]
        for integration_id, count, *values in session.execute(
            select(s.integration_id, func.count(), *aggregates)
            .where(*delivered)
            .group_by(s.integration_id)
        ):
            report = reports[integration_id]
            report.latency_count = int(count)
            for p, value in zip(percentiles, values, strict=True):
                report.latency_percentiles[p] = None if value is None else float(value)
        return
    # SQLite stores `YYYY-MM-DD HH:MM:SS.ffffff`; its date functions keep milliseconds only,
    # so the microseconds are read from the text (integer arithmetic, exact)
    micros = func.max(0, _sqlite_epoch_us(s.sent_at) - _sqlite_epoch_us(paid))
    counts = session.execute(
        select(s.integration_id, func.count()).where(*delivered).group_by(s.integration_id)
    ).all()
    for integration_id, count in counts:
        report = reports[integration_id]
        report.latency_count = int(count)
        for p in percentiles:
            rank = max(1, math.ceil(p / 100 * count))
            value = session.scalar(
                select(micros)
                .where(*delivered, s.integration_id == integration_id)
                .order_by(micros)
                .limit(1)
                .offset(rank - 1)
            )
            report.latency_percentiles[p] = None if value is None else int(value) / 1_000_000


def _sqlite_epoch_us(column: Any) -> Any:
    seconds = cast(func.strftime("%s", column), Integer)
    return seconds * 1_000_000 + cast(func.substr(column, 21, 6), Integer)


def _conversion(session: Session, reports: dict[int, IntegrationReport], window: list[Any]) -> None:
    """Registered → enrolled by modality and campus: counted in the database by the offer
    columns intake writes with the payload (`core/offer.py`), then named and bucketed. Reading
    the three fields out of a year of JSON payloads instead took 23–48 s at cutover size."""
    s = Subscription
    enrolled = s.status == "enrolled"
    offer = [s.offer_kind, s.offer_campus_name, s.offer_campus_city]
    rows = session.execute(
        select(s.integration_id, enrolled, *offer, func.count())
        .where(*window, s.status.in_(sorted(CONVERSION_BASE)))
        .group_by(s.integration_id, enrolled, *offer)
    )
    for row in rows:
        integration_id, is_enrolled, kind, campus_name, city, count = tuple(row)
        report = reports[integration_id]
        modality, campus = modality_label(kind), campus_label(campus_name, city)
        for bucket in (report.by_modality[modality], report.by_campus[campus]):
            bucket.registered += count
            bucket.enrolled += count if is_enrolled else 0


def format_report(reports: list[IntegrationReport], days: int) -> str:
    """Plain-text tables, one block per integration."""
    blocks = []
    for r in reports:
        head = (
            f"== {r.integration}: {r.subscriptions} subscriptions created in the last {days} days"
        )
        summary = [
            ("delivered to the university", str(r.delivered)),
            ("success rate (refusals apart)", _pct(r.success_rate)),
            ("refused by the partner", f"{r.refused} ({_pct(r.refusal_rate)})"),
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
        if not r.followed:
            parts.append(f"conversion {NA}: {r.integration} {NO_STATUS_CHECK}")
        for title, table in (("modality", r.by_modality), ("campus", r.by_campus)):
            if table:
                parts.append(_conversion_table(r, title, table))
        blocks.append("\n\n".join(parts))
    return "\n\n".join(blocks) if blocks else "no integrations"


def _conversion_table(report: IntegrationReport, title: str, table: dict[str, Conversion]) -> str:
    """Registered → enrolled by `title`; enrolled and conversion n/a when nobody asks the
    partner (a 0 enrolled there is not a measure)."""
    rows = [
        (
            name,
            str(c.registered),
            str(c.enrolled) if report.followed else NA,
            _pct(c.rate) if report.followed else NA,
        )
        for name, c in sorted(table.items())
    ]
    return format_table(rows, (title, "registered", "enrolled", "conversion"))


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
