"""Intake: paid orders → validated, routed, idempotent subscriptions.

Plain Python (no Dagster) so the rules are tested directly; `intake.ops` is a thin wrapper.
For each order: route it through the integrations' filters; for each integration it matches,
create the subscription once (unique on integration and order) in the adapter's first status,
or `invalid` with field-level reasons, or `duplicate` when another active subscription already
holds the student's CPF for that integration. Every decision writes an event row. An order
that matches no integration is counted as unrouted. Each order is written in its own savepoint,
so one bad row (or a database hiccup on it) never loses the rest of the batch.
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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_cpf
from anubis_dagster.core.orders import cpf_digits
from anubis_dagster.core.routing import first_match
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import Problem, validate_order
from anubis_dagster.db.models import Integration, IntegrationFilter, Subscription
from anubis_dagster.db.transitions import create_subscription, transition
from anubis_dagster.intake.orders_source import OrderRow

OPERATION = "intake"
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

    def count(self, integration: str, origin: Any, status: str) -> None:
        self.by_outcome[f"{integration}/{origin or 'unknown'}/{status}"] += 1

    def merge(self, other: IntakeReport) -> None:
        self.orders += other.orders
        self.created += other.created
        self.unchanged += other.unchanged
        self.revalidated += other.revalidated
        self.errors += other.errors
        self.by_outcome.update(other.by_outcome)
        self.unrouted.extend(other.unrouted)
        self.error_orders.extend(other.error_orders)


def _problems_text(problems: list[Problem]) -> str:
    return "; ".join(f"{p.field}: {p.message}" for p in problems)


def _parse_payload(payload: Any) -> Any:
    if isinstance(payload, str | bytes):
        try:
            return json.loads(payload)
        except ValueError:
            return None
    return payload


class _Batch:
    """State shared by the orders of one chunk: existing rows and CPFs held, fetched once."""

    def __init__(self, session: Session, routes: list[Route], rows: list[OrderRow]) -> None:
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
        cpfs = {cpf_digits(_parse_payload(row.payload)) for row in rows} - {""}
        self.cpf_holders: dict[tuple[int, str], int] = {}
        if cpfs:
            held = session.execute(
                select(Subscription.integration_id, Subscription.active_cpf, Subscription.id).where(
                    Subscription.integration_id.in_(integration_ids),
                    Subscription.active_cpf.in_(cpfs),
                )
            )
            self.cpf_holders = {(i, c): sid for i, c, sid in held if c is not None}


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
    batch = _Batch(session, routes, rows)
    for row in rows:
        order = _parse_payload(row.payload)
        matched = [
            (route, match)
            for route in routes
            if isinstance(order, dict) and (match := first_match(route.filters, order))
        ]
        if not matched:
            reason = (
                "order payload is not a JSON object"
                if not isinstance(order, dict)
                else "no integration filter matches the order"
            )
            report.unrouted.append({"order_id": row.id, "reason": reason})
            continue
        for route, (filter_id, filter_) in matched:
            try:
                with session.begin_nested():
                    _ingest_one(batch, report, route, filter_id, filter_, row, order, today, run_id)
            except SQLAlchemyError as exc:
                # A database hiccup on this order: the savepoint is rolled back, the rest of the
                # batch goes on, and the op fails at the end so the run can be re-executed.
                report.errors += 1
                report.error_orders.append(row.id)
                log.warning("intake of order %s failed: %s", row.id, type(exc).__name__)
    return report


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
    cpf = cpf_digits(order)
    origin = order.get("origin")
    required = tuple(filter_.get("required_fields") or ())
    existing = batch.existing.get((route.integration_id, row.id))

    if existing is not None:
        if not _needs_revalidation(existing, row.updated_at):
            report.unchanged += 1
            report.count(route.key, origin, "unchanged")
            return
        # the order was corrected at the source after being refused: look again
        existing.payload = order
        existing.order_updated_at = row.updated_at
        existing.cpf = cpf or None
        problems = validate_order(order, today=today, required_fields=required)
        target, error = _decide(batch, route, cpf, problems)
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
        report.revalidated += 1
        report.count(route.key, origin, target.value)
        return

    problems = validate_order(order, today=today, required_fields=required)
    target, error = _decide(batch, route, cpf, problems)
    subscription = create_subscription(
        session,
        integration_id=route.integration_id,
        integration_filter_id=filter_id,
        order=order,
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
