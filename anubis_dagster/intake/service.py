"""Intake: paid orders → validated, routed, idempotent subscriptions.

Plain Python (no Dagster) so the rules are tested directly; `intake.jobs` is a thin wrapper.
For each order: route it through the integrations' filters (`routes.py`); for each integration
it matches, create the subscription once (unique on integration and order) in the adapter's
first status, or `invalid` with field-level reasons, or `duplicate` when another active
subscription already holds the student's CPF for that integration (`decide.py`). Every decision
writes an event row. An order that matches no integration is counted as unrouted.

Set-based: a chunk is read from the database with three lookups (subscriptions that exist, CPFs
held, open quarantine rows: `batch.py`), decided in Python (`decide.py`), and written with a few
statements, a unit per savepoint, bisected when the database refuses a row (`write.py`), so the
cost per order is Python's, not a round trip's. Poison orders are quarantined, never allowed to
stop intake (`quarantine.py`). What became of the chunk is its `IntakeReport` (`report.py`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.routing import first_match
from anubis_dagster.db.models import Integration, Subscription
from anubis_dagster.db.statistics import refresh_if_stale
from anubis_dagster.intake.batch import Batch
from anubis_dagster.intake.candidates import Candidate, Document, parse_payload
from anubis_dagster.intake.orders_source import OrderRow
from anubis_dagster.intake.quarantine import UNREADABLE, quarantine, quarantine_unreadable
from anubis_dagster.intake.report import IntakeReport
from anubis_dagster.intake.routes import Route
from anubis_dagster.intake.write import WRITE_UNIT, write_candidates

UNROUTED = "no integration filter matches the order"


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while inside (reference counting still frees
    everything intake drops: its documents and decisions hold no cycles). A chunk allocates a
    hundred containers per order, which set off dozens of collections per chunk, and in a
    process that has lived long (a worker running many runs, the benchmark) the full ones walk
    the whole heap, far more often when hostile orders are mixed in (measured in BENCHMARKS.md,
    "Intake, third pass"). Whatever cycles a chunk leaves are collected by
    the collector's next run after it. The switch is the process's: other threads run
    without the collector for the chunk's length too (a fraction of a second)."""
    if not gc.isenabled():  # paused by the caller (or by another thread in here)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def ingest(
    session: Session,
    rows: Iterable[OrderRow],
    routes: list[Route],
    *,
    today: date,
    run_id: str | None = None,
    ignore_go_live: frozenset[int] = frozenset(),
    write_unit: int = WRITE_UNIT,
) -> IntakeReport:
    """Ingest one chunk of orders (the caller commits). Safe to run twice on the same rows.
    `ignore_go_live`: integration ids whose go-live point does not apply (an operator's
    takeover of a range, `legacy/go_live.py`); `write_unit`: decisions per savepoint
    (`write.WRITE_UNIT`)."""
    with _cyclic_gc_paused():
        routes = _with_go_live(session, routes, ignore_go_live)
        return _ingest(session, rows, routes, today=today, run_id=run_id, unit=write_unit)


def _with_go_live(session: Session, routes: list[Route], ignore: frozenset[int]) -> list[Route]:
    """The routes with their integrations' go-live points as committed now, read in the chunk's
    own transaction: on PostgreSQL `FOR SHARE`, so `anubis go-live` (which updates the row)
    waits for chunks in flight and chunks after it see its point; SQLite's chunk already holds
    the write lock. One query per chunk."""
    if not routes:
        return routes
    points = dict(
        session.execute(
            select(Integration.id, Integration.go_live_at)
            .where(Integration.id.in_([r.integration_id for r in routes]))
            .with_for_update(read=True)
        ).all()
    )
    return [
        replace(r, go_live_at=None if r.integration_id in ignore else points.get(r.integration_id))
        for r in routes
    ]


def _ingest(
    session: Session,
    rows: Iterable[OrderRow],
    routes: list[Route],
    *,
    today: date,
    run_id: str | None,
    unit: int,
) -> IntakeReport:
    rows = list(rows)
    report = IntakeReport(orders=len(rows))
    if not rows:
        return report
    orders: dict[int, dict[str, Any]] = {}
    unreadable: list[tuple[OrderRow, str]] = []
    for row in rows:
        order, reason = parse_payload(row.payload)
        if order is None:
            unreadable.append((row, reason or "unreadable"))
        else:
            orders[row.id] = order
    report.readable = len(orders)
    # a first import grows the table faster than autovacuum analyses it
    refresh_if_stale(session, Subscription.__tablename__)
    batch = Batch(session, routes, rows)
    quarantine_unreadable(batch, report, unreadable, run_id)
    candidates: list[Candidate] = []
    for row in rows:
        order = orders.get(row.id)
        if order is None:
            continue
        batch.resolve(row.id, "")  # readable now
        try:
            matched = [
                (route, match) for route in routes if (match := first_match(route.filters, order))
            ]
        except Exception as exc:  # routing must not stop the batch either
            reason = f"the order could not be routed ({type(exc).__name__})"
            quarantine(batch, report, row, "", UNREADABLE, reason, run_id)
            continue
        if not matched:
            report.unrouted.append({"order_id": row.id, "reason": UNROUTED})
            report.unrouted_by_reason[UNROUTED] += 1
            continue
        document = Document(order, row.payload)
        for route, (filter_id, filter_) in matched:
            fields = route.fields_of(filter_id, filter_)
            candidates.append(Candidate(row, document, route, filter_id, fields))
    batch.load_cpf_holders(candidates)
    write_candidates(batch, report, candidates, today=today, run_id=run_id, unit=unit)
    batch.close()
    return report
