"""One intake run's work as plain Python: read a range of paid orders chunk by chunk, ingest
each chunk and commit it together with the intake watermark (`intake_job`'s op is a thin shell
over `ingest_orders`).

Chunk → commit → watermark: the watermark moves in the same transaction as the chunk it
covers, and only while every chunk so far was written or quarantined, so the next run (the
sensor's or `anubis run`'s, both plan from the committed watermark) starts where this one really
got to, whatever happens to it afterwards. Explicit `order_ids` (an operator re-ingesting a few
orders) never move the watermark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from anubis_dagster.core.drift import Drift
from anubis_dagster.intake.drift import alert_drifts
from anubis_dagster.intake.orders_source import OrderKey, OrderRow, OrdersSource
from anubis_dagster.intake.report import IntakeReport
from anubis_dagster.intake.routes import load_routes
from anubis_dagster.intake.service import ingest
from anubis_dagster.intake.watermark import advance_watermark
from anubis_dagster.intake.write import SMALL_WRITE_UNIT, WRITE_UNIT
from anubis_dagster.integrations.base import initial_status_for

#: orders written (and committed with the watermark) together: a few statements each
CHUNK_SIZE = 1000

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass
class IntakeOutcome:
    """What one intake run did: the merged report of its chunks and the drifts it alerted."""

    report: IntakeReport = field(default_factory=IntakeReport)
    drifts: list[Drift] = field(default_factory=list)  # order-shape drifts (`core.drift`)


def ingest_orders(
    session: SessionFactory,
    source: OrdersSource,
    *,
    after: OrderKey | None,
    until: OrderKey | None,
    order_ids: Sequence[int] = (),
    run_id: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> IntakeOutcome:
    """Ingest `order_ids`, or the range (after, until] chunk by chunk with the watermark.

    Raises `OrdersTableMissing` when the orders table is not there, ValueError when neither a
    range nor ids are given. Rows that could be neither written nor quarantined are counted in
    `report.errors`; the watermark stays before them."""
    if not order_ids and until is None:
        raise ValueError("an intake run needs `until` (a range) or `order_ids`")
    run = _IntakeRun(session, source, run_id)
    if order_ids:
        run.chunk(source.read_ids(list(order_ids)), watermark=None)
        return run.outcome
    assert until is not None
    committed = True  # every chunk so far written or quarantined: the watermark follows
    chunk_after = after
    for rows in source.read_range(after, until, chunk_size=chunk_size):
        last = OrderKey(rows[-1].updated_at, rows[-1].id)
        written = run.chunk(rows, watermark=(chunk_after, last) if committed else None)
        committed = committed and written
        chunk_after = last
    if committed:  # the range may end past its last row (an order moved on meanwhile)
        with session() as s:
            advance_watermark(s, source.watermark_name, after=chunk_after, until=until)
    return run.outcome


class _IntakeRun:
    """The routes and running totals of one intake run."""

    def __init__(self, session: SessionFactory, source: OrdersSource, run_id: str | None):
        self.session = session
        self.source = source
        self.run_id = run_id
        self.today = datetime.now(UTC).date()
        self.outcome = IntakeOutcome()
        with session() as s:
            self.routes = load_routes(s, initial_status_for)
        self.write_unit = SMALL_WRITE_UNIT  # grows while the database takes every row (`write.py`)

    def chunk(
        self, rows: list[OrderRow], *, watermark: tuple[OrderKey | None, OrderKey] | None
    ) -> bool:
        """Ingest one chunk; if every row was written or quarantined, move the watermark to
        (after, until] in the same transaction. True: the chunk committed without errors."""
        with self.session() as s:
            report = ingest(
                s,
                rows,
                self.routes,
                today=self.today,
                run_id=self.run_id,
                write_unit=self.write_unit,
            )
            if watermark is not None and not report.errors:
                after, until = watermark
                advance_watermark(s, self.source.watermark_name, after=after, until=until)
        if report.refused_writes:
            self.write_unit = SMALL_WRITE_UNIT
        else:
            self.write_unit = min(2 * self.write_unit, WRITE_UNIT)
        self.outcome.report.merge(report)
        self.outcome.drifts += alert_drifts(self.session, report, run_id=self.run_id)
        return not report.errors
