"""Taking a range of orders over on purpose (`anubis takeover`, the `takeover` job): "the
legacy failed these, resend them", even though they were paid before the go-live point
(`legacy/go_live.py`).

It reads the range's orders from the source again and ingests them with this integration's
point ignored: `before_go_live` subscriptions become due (or `duplicate` when another
subscription, e.g. an imported one, holds the CPF; or `invalid`), never-read orders get their
subscriptions, and the shadow run's students paid in the range are released to be sent. It is
intake itself, so it is idempotent (a second takeover finds nothing to do), and the dry run is
the same work rolled back, with the same counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.legacy.go_live import as_utc, floor_key, integration_by_key

if TYPE_CHECKING:  # intake is loaded when a takeover runs, not when this module is imported
    from anubis_dagster.intake.report import IntakeReport


@dataclass
class TakeoverReport:
    key: str
    start: datetime
    end: datetime
    dry_run: bool
    orders: int = 0
    taken_over: int = 0  # before_go_live → sent (or invalid/duplicate) for this integration
    created: int = 0  # never-read orders that got their subscription
    by_status: Counter[str] = field(default_factory=Counter)  # this integration's outcomes
    #: a shadow run's students paid in the range, released to be sent (`legacy/shadow.py`)
    released: int = 0
    #: shadowed students not released, with why (e.g. another subscription holds the CPF)
    not_released: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        verb = "would take over" if self.dry_run else "took over"
        head = (
            f"{verb} {self.key} orders from {self.start.isoformat()} to {self.end.isoformat()}: "
            f"{self.orders} orders read, {self.taken_over} held before go-live now decided "
            f"again, {self.created} new subscriptions, {self.released} shadow-run students "
            "released"
        )
        parts = [f"  {status}: {count}" for status, count in sorted(self.by_status.items())]
        parts += [
            f"  shadowed, not released ({why}): {count}"
            for why, count in sorted(self.not_released.items())
        ]
        return "\n".join([head, *parts])


def takeover(
    session_factory: Callable[[], Session],
    source: OrdersSource,
    key: str,
    start: datetime,
    end: datetime,
    *,
    dry_run: bool = False,
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
) -> TakeoverReport:
    """Take the orders paid in [start, end) over for `key`: intake of that range with `key`'s
    go-live point ignored, chunk by chunk, each chunk in its own transaction (committed, or
    rolled back in a dry run). `progress` is called with the orders done after each chunk."""
    from anubis_dagster.intake.routes import load_routes
    from anubis_dagster.intake.service import ingest
    from anubis_dagster.integrations.base import initial_status_for

    start, end = as_utc(start), as_utc(end)
    if end <= start:
        raise ValueError("--to must be after --from")
    report = TakeoverReport(key=key, start=start, end=end, dry_run=dry_run)
    with session_factory() as session:
        integration = integration_by_key(session, key)
        routes = load_routes(session, initial_status_for)
    if integration.id not in {r.integration_id for r in routes}:
        raise ValueError(f"integration {key!r} is not enabled")
    after, until = floor_key(start), floor_key(end)
    today = datetime.now(UTC).date()
    for rows in source.read_range(after, until, chunk_size=chunk_size):
        session = session_factory()
        try:
            chunk = ingest(
                session,
                rows,
                routes,
                today=today,
                run_id=run_id,
                ignore_go_live=frozenset({integration.id}),
            )
            if chunk.errors:
                raise RuntimeError(f"{chunk.errors} orders could not be written; nothing lost")
            if dry_run:
                session.rollback()
            else:
                session.commit()
        finally:
            session.close()
        _count(report, chunk, key)
        if progress is not None:
            progress(chunk.orders)
    _release_shadowed(session_factory, integration.id, key, start, end, report, run_id)
    return report


def _count(report: TakeoverReport, chunk: IntakeReport, key: str) -> None:
    """Add one chunk's intake outcomes for `key` to the report."""
    report.orders += chunk.orders
    for outcome, count in chunk.by_outcome.items():
        integration_key, _, status = outcome.split("/", 2)
        if integration_key == key and status != "unchanged":
            report.by_status[status] += count
    revalidated = _revalidated_for(chunk, key)
    report.taken_over += revalidated
    report.created += (
        sum(
            count
            for outcome, count in chunk.by_outcome.items()
            if outcome.startswith(f"{key}/") and not outcome.endswith("/unchanged")
        )
        - revalidated
    )


def _release_shadowed(
    session_factory: Callable[[], Session],
    integration_id: int,
    key: str,
    start: datetime,
    end: datetime,
    report: TakeoverReport,
    run_id: str | None,
) -> None:
    """The shadow run's students paid in [start, end) that the legacy never registered (an
    imported registration made those `duplicate`) start again, to be sent once the integration
    is live: without this, a student the legacy missed during the shadow run would stay
    `shadowed` for ever. Same transaction rule as the chunks: rolled back in a dry run."""
    from anubis_dagster.legacy.shadow import release_shadowed

    session = session_factory()
    try:
        ids = list(
            session.scalars(
                select(Subscription.id).where(
                    Subscription.integration_id == integration_id,
                    Subscription.status == Status.SHADOWED.value,
                    Subscription.order_updated_at >= start,
                    Subscription.order_updated_at < end,
                )
            )
        )
        if not ids:
            return
        released = release_shadowed(session, key, ids, run_id=run_id, dry_run=report.dry_run)
        report.released += len(released.released)
        report.not_released.update(str(item["reason"]) for item in released.skipped)
        if report.dry_run:
            session.rollback()
        else:
            session.commit()
    finally:
        session.close()


def _revalidated_for(chunk: object, key: str) -> int:
    # the intake report counts revalidations in total; a takeover's are this integration's
    # before_go_live rows (other integrations' points still apply, so they have none)
    return int(getattr(chunk, "revalidated", 0))
