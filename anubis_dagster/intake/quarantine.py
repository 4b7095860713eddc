"""Poison orders are quarantined, never allowed to stop intake: an order whose payload cannot
be read, or that cannot be routed, decided or written (any error), is recorded in
`intake_quarantine` with its reason (one row per order and integration: seen again, it counts
another attempt and reopens), counted in the report, and the batch (and the intake watermark)
moves past it. Only when even the quarantine row cannot be written (the database is down) does
the order count as an error, which fails the run and leaves the watermark before it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import IntakeQuarantine, utcnow
from anubis_dagster.db.upsert import upsert
from anubis_dagster.intake.batch import Batch
from anubis_dagster.intake.orders_source import OrderRow
from anubis_dagster.intake.report import IntakeReport

UNREADABLE = "unreadable"
WRITE_FAILED = "write_failed"
log = logging.getLogger(__name__)


def failure_reason(exc: Exception) -> str:
    """Why a write failed, for people: the error class and the first line of the driver's
    message (bound values are hidden by the engine), masked and cut short."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else ""
    return mask_text(f"the database refused the write ({type(exc).__name__}): {first}")[:300]


def quarantine(
    batch: Batch,
    report: IntakeReport,
    row: OrderRow,
    integration_key: str,
    kind: str,
    reason: str,
    run_id: str | None,
) -> None:
    """Record a poison order (or count it as an error when even that fails: the database is
    down, and the run must fail so the watermark stays before this order)."""
    batch.quarantined(row.id, integration_key)
    try:
        with batch.session.begin_nested():
            _upsert_quarantine(batch.session, [(row, reason)], integration_key, kind, run_id)
    except Exception as exc:
        report.errors += 1
        report.error_orders.append(row.id)
        log.warning("order %s could not be quarantined: %s", row.id, type(exc).__name__)
        return
    report.quarantined.append(
        {"order_id": row.id, "integration": integration_key or None, "kind": kind, "reason": reason}
    )


def quarantine_unreadable(
    batch: Batch, report: IntakeReport, unreadable: list[tuple[OrderRow, str]], run_id: str | None
) -> None:
    """Record a chunk's unreadable orders with one statement; if the database refuses it, one
    at a time, so that each ends quarantined or counted as an error."""
    entries = {row.id: (row, reason) for row, reason in unreadable}  # one row per statement
    if not entries:
        return
    try:
        with batch.session.begin_nested():
            _upsert_quarantine(batch.session, list(entries.values()), "", UNREADABLE, run_id)
    except Exception as exc:
        log.warning("unreadable orders quarantined one at a time: %s", type(exc).__name__)
        for row, reason in entries.values():
            quarantine(batch, report, row, "", UNREADABLE, reason, run_id)
        return
    for row, reason in entries.values():
        batch.quarantined(row.id, "")
        report.quarantined.append(
            {"order_id": row.id, "integration": None, "kind": UNREADABLE, "reason": reason}
        )


def _upsert_quarantine(
    session: Session,
    entries: Sequence[tuple[OrderRow, str]],
    integration_key: str,
    kind: str,
    run_id: str | None,
) -> None:
    """One row per (order, integration), each `(order, reason)` of `entries` (distinct orders)
    in one `INSERT … ON CONFLICT DO UPDATE`: seen again, it counts another attempt and reopens,
    with no read-then-insert race between two intake runs."""
    now = utcnow()
    values = [
        {
            "order_id": row.id,
            "integration_key": integration_key,
            "kind": kind,
            "reason": reason,
            "order_updated_at": row.updated_at,
            "dagster_run_id": run_id,
            "attempts": 1,
            "resolved_at": None,
            "created_at": now,
            "updated_at": now,
        }
        for row, reason in entries
    ]
    upsert(
        session,
        IntakeQuarantine,
        values,
        key=("order_id", "integration_key"),
        keep=("created_at",),
        set_={"attempts": IntakeQuarantine.attempts + 1, "resolved_at": None},
    )
