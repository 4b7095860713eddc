"""intake_job: one batch of paid orders → subscriptions (thin op over `intake.service`)."""

# No `from __future__ import annotations` here: Dagster reads op and sensor annotations at runtime.

from collections.abc import Iterable
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from anubis_dagster.intake.orders_source import OrderKey, OrderRow
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.intake.service import IntakeReport, ingest, load_routes
from anubis_dagster.integrations.base import initial_status_for
from anubis_dagster.policies import OP_RETRY_POLICY
from anubis_dagster.resources import AppDatabase

UNROUTED_EXAMPLES = 20


class IntakeConfig(dg.Config):
    """Which orders to ingest: the range (after, until] of the paid-orders stream, as the sensor
    asks for it, or explicit `order_ids` (an operator re-ingesting a few orders)."""

    after: str = Field(default="", description="cursor JSON of the last order before the range")
    until: str = Field(default="", description="cursor JSON of the last order in the range")
    order_ids: list[int] = Field(default_factory=list, description="ingest just these orders")


@dg.op(
    retry_policy=OP_RETRY_POLICY,
    tags={"anubis/step": "intake"},
)
def ingest_paid_orders(
    context: dg.OpExecutionContext,
    config: IntakeConfig,
    app_db: AppDatabase,
    orders: OrdersSourceResource,
) -> dg.Output[dict[str, int]]:
    """Validate, route and upsert one batch of paid orders. Idempotent: re-executing the run
    creates nothing new, so the retry policy and operators' re-runs are safe."""
    source = orders.get()
    until = OrderKey.from_json(config.until)
    chunks: Iterable[list[OrderRow]]
    if config.order_ids:
        chunks = [source.read_ids(config.order_ids)]
    elif until is not None:
        chunks = source.read_range(OrderKey.from_json(config.after), until)
    else:
        raise dg.Failure("intake_job needs `until` (a range) or `order_ids`")

    report = IntakeReport()
    today = datetime.now(UTC).date()
    with app_db.session() as session:
        routes = load_routes(session, initial_status_for)
    for rows in chunks:
        with app_db.session() as session:
            report.merge(ingest(session, rows, routes, today=today, run_id=context.run_id))

    context.log.info(
        f"intake: {report.orders} orders, {report.created} new subscriptions, "
        f"{report.unchanged} already known, {report.revalidated} validated again, "
        f"{len(report.unrouted)} unrouted, {report.errors} errors"
    )
    for outcome, count in sorted(report.by_outcome.items()):
        context.log.info(f"  {outcome}: {count}")
    metadata: dict[str, dg.RawMetadataValue] = {
        "orders": report.orders,
        "created": report.created,
        "unchanged": report.unchanged,
        "revalidated": report.revalidated,
        "unrouted": len(report.unrouted),
        "errors": report.errors,
        "by_integration_origin_status": dg.MetadataValue.json(dict(report.by_outcome)),
        "unrouted_examples": dg.MetadataValue.json(report.unrouted[:UNROUTED_EXAMPLES]),
    }
    if report.errors:
        raise dg.Failure(
            description=(
                f"{report.errors} orders could not be written (database errors); the rest of the "
                "batch was ingested. Re-execute this run once the database is healthy."
            ),
            metadata={**metadata, "failed_order_ids": dg.MetadataValue.json(report.error_orders)},
        )
    summary = {
        "orders": report.orders,
        "created": report.created,
        "unrouted": len(report.unrouted),
    }
    return dg.Output(summary, metadata=metadata)


@dg.job(tags={"anubis/job": "intake"}, description="Paid orders → validated, routed subscriptions.")
def intake_job() -> None:
    ingest_paid_orders()
