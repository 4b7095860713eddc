"""Intake: paid orders → validated, routed, idempotent subscriptions.

Plain Python (no Dagster) so the rules are tested directly; `intake.ops` is a thin wrapper.
For each order: route it through the integrations' filters; for each integration it matches,
create the subscription once (unique on integration and order) in the adapter's first status,
or `invalid` with field-level reasons, or `duplicate` when another active subscription already
holds the student's CPF for that integration. Every decision writes an event row. An order
that matches no integration is counted as unrouted. Each order is written in its own savepoint,
so one bad row never loses the rest of the batch.

Poison orders are quarantined, never allowed to stop intake: an order whose payload is not a
JSON object, or whose write the database refuses (any error), is recorded in `intake_quarantine`
with its reason, counted in the report, and the batch (and the intake watermark) moves past it.
Only when even the quarantine row cannot be written (the database is down) does the order count
as an error, which fails the run and leaves the watermark before it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_cpf, mask_text
from anubis_dagster.core.orders import ORIGINS, digits, get_path
from anubis_dagster.core.routing import first_match
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import Problem, storable_copy, validate_order
from anubis_dagster.db.models import (
    IntakeQuarantine,
    Integration,
    IntegrationFilter,
    Subscription,
    utcnow,
)
from anubis_dagster.db.transitions import create_subscription, transition
from anubis_dagster.intake.orders_source import OrderRow

OPERATION = "intake"
UNREADABLE = "unreadable"
WRITE_FAILED = "write_failed"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """One enabled integration with its enabled filters, as intake needs it."""

    integration_id: int
    key: str
    initial_status: Status
    filters: tuple[tuple[int, Mapping[str, Any]], ...]


def load_routes(session: Session, initial_status_for: Callable[[str], Status]) -> list[Route]:
    routes = []
    integrations = session.scalars(
        select(Integration).where(Integration.enabled.is_(True)).order_by(Integration.id)
    )
    for integration in integrations:
        filters = session.scalars(
            select(IntegrationFilter)
            .where(
                IntegrationFilter.integration_id == integration.id,
                IntegrationFilter.enabled.is_(True),
            )
            .order_by(IntegrationFilter.position)
        )
        routes.append(
            Route(
                integration_id=integration.id,
                key=integration.key,
                initial_status=initial_status_for(integration.type),
                filters=tuple((f.id, f.filter) for f in filters),
            )
        )
    return routes


@dataclass
class IntakeReport:
    """What became of a batch; goes to the run's metadata and the summary alert."""

    orders: int = 0
    created: int = 0
    unchanged: int = 0
    revalidated: int = 0
    errors: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)  # "kroton/quero_bolsa/to_sync"
    unrouted: list[dict[str, Any]] = field(default_factory=list)  # order ids + reason, no PII
    error_orders: list[int] = field(default_factory=list)
    # poison orders recorded in `intake_quarantine`: order id, integration, kind, masked reason
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def count(self, integration: str, origin: Any, status: str) -> None:
        # a hostile origin (10 MB, personal data) never becomes a metadata key
        known = origin if isinstance(origin, str) and origin in ORIGINS else "unknown"
        self.by_outcome[f"{integration}/{known}/{status}"] += 1

    def merge(self, other: IntakeReport) -> None:
        self.orders += other.orders
        self.created += other.created
        self.unchanged += other.unchanged
        self.revalidated += other.revalidated
        self.errors += other.errors
        self.by_outcome.update(other.by_outcome)
        self.unrouted.extend(other.unrouted)
        self.error_orders.extend(other.error_orders)
        self.quarantined.extend(other.quarantined)


def _problems_text(problems: list[Problem]) -> str:
    # "field - message", not "field: message": masking reads "full_name: …" as a labelled name
    return "; ".join(f"{p.field} - {p.message}" for p in problems)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_payload(payload: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The order document of a row, or None and why it cannot be read. The orders source hands
    over text (a json column read as text, or a text column holding JSON) or, from tests and
    tools, an already parsed document."""
    if isinstance(payload, str | bytes | bytearray):
        try:
            payload = json.loads(payload, parse_constant=_reject_constant)
        except RecursionError:
            return None, "order payload is nested too deeply to read"
        except ValueError:  # includes UnicodeDecodeError and NaN/Infinity
            return None, "order payload is not valid JSON"
    if not isinstance(payload, dict):
        return None, "order payload is not a JSON object"
    return payload, None


def _cpf(order: Any) -> str:
    """The CPF's digits, only when the CPF is text (never the digits of `str(list)`)."""
    value = get_path(order, "base_user.cpf")
    return digits(value) if isinstance(value, str) and len(value) <= 20 else ""


def _failure_reason(exc: Exception) -> str:
    """Why a write failed, for people: the error class and the first line of the driver's
    message (bound values are hidden by the engine), masked and cut short."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else ""
    return mask_text(f"the database refused the write ({type(exc).__name__}): {first}")[:300]


class _Batch:
    """State shared by the orders of one chunk: existing rows and CPFs held, fetched once."""

    def __init__(
        self,
        session: Session,
        routes: list[Route],
        rows: list[OrderRow],
        orders: dict[int, dict[str, Any]],
    ) -> None:
        self.session = session
        ids = [row.id for row in rows]
        integration_ids = [r.integration_id for r in routes]
        self.existing: dict[tuple[int, int], Subscription] = {
            (s.integration_id, s.order_id): s
            for s in session.scalars(
                select(Subscription).where(
                    Subscription.integration_id.in_(integration_ids),
                    Subscription.order_id.in_(ids),
                )
            )
        }
        cpfs = {c for order in orders.values() if len(c := _cpf(order)) == 11}
        self.cpf_holders: dict[tuple[int, str], int] = {}
        if cpfs:
            held = session.execute(
                select(Subscription.integration_id, Subscription.active_cpf, Subscription.id).where(
                    Subscription.integration_id.in_(integration_ids),
                    Subscription.active_cpf.in_(cpfs),
                )
            )
            self.cpf_holders = {(i, c): sid for i, c, sid in held if c is not None}
        # open quarantine rows of these orders: resolved when the order now goes through
        self.quarantine: dict[tuple[int, str], IntakeQuarantine] = {
            (q.order_id, q.integration_key): q
            for q in session.scalars(
                select(IntakeQuarantine).where(
                    IntakeQuarantine.order_id.in_(ids), IntakeQuarantine.resolved_at.is_(None)
                )
            )
        }

    def resolve(self, order_id: int, integration_key: str) -> None:
        entry = self.quarantine.pop((order_id, integration_key), None)
        if entry is not None:
            entry.resolved_at = utcnow()


def ingest(
    session: Session,
    rows: Iterable[OrderRow],
    routes: list[Route],
    *,
    today: date,
    run_id: str | None = None,
) -> IntakeReport:
    """Ingest one chunk of orders (the caller commits). Safe to run twice on the same rows."""
    rows = list(rows)
    report = IntakeReport(orders=len(rows))
    if not rows:
        return report
    orders: dict[int, dict[str, Any]] = {}
    for row in rows:
        order, reason = parse_payload(row.payload)
        if order is None:
            _quarantine(session, report, row, "", UNREADABLE, reason or "unreadable", run_id)
        else:
            orders[row.id] = order
    batch = _Batch(session, routes, rows, orders)
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
            _quarantine(session, report, row, "", UNREADABLE, reason, run_id)
            continue
        if not matched:
            report.unrouted.append(
                {"order_id": row.id, "reason": "no integration filter matches the order"}
            )
            continue
        for route, (filter_id, filter_) in matched:
            try:
                with session.begin_nested():
                    _ingest_one(batch, report, route, filter_id, filter_, row, order, today, run_id)
            except Exception as exc:  # any error of this one order: quarantine it, go on
                batch.existing.pop((route.integration_id, row.id), None)
                log.warning(
                    "intake of order %s for %s failed: %s", row.id, route.key, type(exc).__name__
                )
                _quarantine(
                    session, report, row, route.key, WRITE_FAILED, _failure_reason(exc), run_id
                )
    return report


def _quarantine(
    session: Session,
    report: IntakeReport,
    row: OrderRow,
    integration_key: str,
    kind: str,
    reason: str,
    run_id: str | None,
) -> None:
    """Record a poison order (or count it as an error when even that fails: the database is
    down, and the run must fail so the watermark stays before this order)."""
    try:
        with session.begin_nested():
            _upsert_quarantine(session, row, integration_key, kind, reason, run_id)
    except Exception as exc:
        report.errors += 1
        report.error_orders.append(row.id)
        log.warning("order %s could not be quarantined: %s", row.id, type(exc).__name__)
        return
    report.quarantined.append(
        {"order_id": row.id, "integration": integration_key or None, "kind": kind, "reason": reason}
    )


def _upsert_quarantine(
    session: Session,
    row: OrderRow,
    integration_key: str,
    kind: str,
    reason: str,
    run_id: str | None,
) -> None:
    """One row per (order, integration): seen again, it counts another attempt and reopens."""
    entry = session.scalars(
        select(IntakeQuarantine).where(
            IntakeQuarantine.order_id == row.id,
            IntakeQuarantine.integration_key == integration_key,
        )
    ).first()
    if entry is None:
        entry = IntakeQuarantine(order_id=row.id, integration_key=integration_key, attempts=0)
        session.add(entry)
    entry.kind = kind
    entry.reason = reason
    entry.order_updated_at = row.updated_at
    entry.dagster_run_id = run_id
    entry.attempts = (entry.attempts or 0) + 1
    entry.resolved_at = None
    entry.updated_at = utcnow()
    session.flush()


def _ingest_one(
    batch: _Batch,
    report: IntakeReport,
    route: Route,
    filter_id: int,
    filter_: Mapping[str, Any],
    row: OrderRow,
    order: dict[str, Any],
    today: date,
    run_id: str | None,
) -> None:
    session = batch.session
    cpf = _cpf(order)
    origin = order.get("origin")
    required = tuple(filter_.get("required_fields") or ())
    existing = batch.existing.get((route.integration_id, row.id))

    if existing is not None:
        if not _needs_revalidation(existing, row.updated_at):
            report.unchanged += 1
            report.count(route.key, origin, "unchanged")
            return
        # the order was corrected at the source after being refused: look again
        problems = validate_order(order, today=today, required_fields=required)
        target, error = _decide(batch, route, cpf, problems)
        existing.payload = storable_copy(order) if problems else order
        existing.order_updated_at = row.updated_at
        existing.cpf = cpf if len(cpf) == 11 else None
        transition(
            session,
            existing,
            target,
            operation=OPERATION,
            run_id=run_id,
            error=error or "order corrected at the source; validated again",
            response={"problems": [p.as_dict() for p in problems]} if problems else None,
        )
        _hold_cpf(batch, route, cpf, existing)
        batch.resolve(row.id, route.key)
        report.revalidated += 1
        report.count(route.key, origin, target.value)
        return

    problems = validate_order(order, today=today, required_fields=required)
    target, error = _decide(batch, route, cpf, problems)
    subscription = create_subscription(
        session,
        integration_id=route.integration_id,
        integration_filter_id=filter_id,
        # an invalid order is kept bounded (any backend stores it); the original is at the source
        order=storable_copy(order) if problems else order,
        order_id=row.id,
        cpf=cpf if len(cpf) == 11 else None,
        status=target,
        operation=OPERATION,
        run_id=run_id,
        error=error,
        response={"problems": [p.as_dict() for p in problems]} if problems else None,
        order_updated_at=row.updated_at,
        scheduled_to=datetime.now(UTC) if target is route.initial_status else None,  # due now
    )
    batch.existing[(route.integration_id, row.id)] = subscription
    _hold_cpf(batch, route, cpf, subscription)
    batch.resolve(row.id, route.key)
    report.created += 1
    report.count(route.key, origin, target.value)


def _needs_revalidation(existing: Subscription, updated_at: datetime) -> bool:
    if existing.status != Status.INVALID.value:
        return False
    return existing.order_updated_at is None or updated_at > existing.order_updated_at


def _decide(
    batch: _Batch, route: Route, cpf: str, problems: list[Problem]
) -> tuple[Status, str | None]:
    if problems:
        return Status.INVALID, _problems_text(problems)
    holder = batch.cpf_holders.get((route.integration_id, cpf))
    if holder is not None:
        return (
            Status.DUPLICATE,
            f"CPF {mask_cpf(cpf)} already has active subscription #{holder} for {route.key}",
        )
    return route.initial_status, None


def _hold_cpf(batch: _Batch, route: Route, cpf: str, subscription: Subscription) -> None:
    if subscription.active_cpf:
        batch.cpf_holders[(route.integration_id, cpf)] = subscription.id
