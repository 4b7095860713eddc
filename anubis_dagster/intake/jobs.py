"""intake_job: one batch of paid orders → subscriptions (a thin op over `intake.loop`, which
reads the range chunk by chunk and commits each chunk with the watermark)."""

# No `from __future__ import annotations` here: Dagster reads op and sensor annotations at runtime.

from collections.abc import Sequence

import dagster as dg
from pydantic import Field, PositiveInt, field_validator

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.core.drift import Drift
from anubis_dagster.intake.loop import ingest_orders
from anubis_dagster.intake.orders_source import OrderKey, OrdersTableMissing
from anubis_dagster.intake.report import IntakeReport
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.launchpad import checked_schema
from anubis_dagster.runtime.policies import retry_unexpected_errors
from anubis_dagster.runtime.run_tags import run_tags

UNROUTED_EXAMPLES = 20
QUARANTINE_ALERT_EXAMPLES = 10
#: a run past this is resolved by run monitoring; the sensor stops waiting for it too
INTAKE_MAX_RUNTIME_SECONDS = 1800


class IntakeConfig(dg.Config):
    """Which orders to ingest: the range (after, until] of the paid-orders stream, as the sensor
    asks for it, or explicit `order_ids` (an operator re-ingesting a few orders)."""

    after: str = Field(default="", description="cursor JSON of the last order before the range")
    until: str = Field(default="", description="cursor JSON of the last order in the range")
    order_ids: list[PositiveInt] = Field(
        default_factory=list, description="ingest just these orders"
    )

    @field_validator("after", "until")
    @classmethod
    def _cursor(cls, value: str) -> str:
        try:
            OrderKey.from_json(value)
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                'must be empty or a cursor such as {"updated_at": "2026-11-23T10:00:00+00:00", '
                '"id": 123}'
            ) from None
        return value


def _alert_quarantined(report: IntakeReport, run_id: str) -> None:
    """One alert per run that quarantined orders: ids and reasons (masked), never the data."""
    lines = [
        f"{len(report.quarantined)} orders could not be ingested and were quarantined; the rest "
        "of the batch went on",
        *(
            f"order {q['order_id']} ({q['integration'] or 'unreadable'}): {q['reason']}"
            for q in report.quarantined[:QUARANTINE_ALERT_EXAMPLES]
        ),
        "see `SELECT * FROM intake_quarantine WHERE resolved_at IS NULL`; fix the order at the "
        "source (its updated_at moves) or re-ingest it with intake_job's `order_ids`",
    ]
    send_alert(Alert("Intake quarantined orders", lines, level="warning", run_id=run_id))


@dg.op(
    config_schema=checked_schema(IntakeConfig),
    tags={"anubis/step": "intake"},
)
@retry_unexpected_errors
def ingest_paid_orders(
    context: dg.OpExecutionContext,
    app_db: AppDatabase,
    orders: OrdersSourceResource,
) -> dg.Output[dict[str, int]]:
    """Validate, route and upsert one batch of paid orders. Idempotent: re-executing the run
    creates nothing new, so retries and operators' re-runs are safe. A range is
    committed chunk by chunk together with the intake watermark, so the next run starts where
    this one really got to, whatever happens to it afterwards."""
    config = IntakeConfig.model_validate(context.op_config)
    until = OrderKey.from_json(config.until)
    if not config.order_ids and until is None:
        raise dg.Failure("intake_job needs `until` (a range) or `order_ids`", allow_retries=False)
    try:
        outcome = ingest_orders(
            app_db.session,
            orders.get(),
            after=OrderKey.from_json(config.after),
            until=until,
            order_ids=config.order_ids,
            run_id=context.run_id,
        )
    except OrdersTableMissing as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    report = outcome.report
    _log_report(context, report)
    metadata = _report_metadata(report, outcome.drifts)
    if report.quarantined:
        _alert_quarantined(report, context.run_id)
    if report.errors:
        raise dg.Failure(
            description=(
                f"{report.errors} orders could be neither written nor quarantined (the app "
                "database failed); the rest of the batch was ingested and the intake watermark "
                "stays before them. Re-execute this run once the database is healthy."
            ),
            metadata={**metadata, "failed_order_ids": dg.MetadataValue.json(report.error_orders)},
        )
    summary = {
        "orders": report.orders,
        "created": report.created,
        "unrouted": len(report.unrouted),
        "quarantined": len(report.quarantined),
    }
    return dg.Output(summary, metadata=metadata)


def _log_report(context: dg.OpExecutionContext, report: IntakeReport) -> None:
    """One message, not one per outcome: each log line is an event Dagster stores."""
    context.log.info(
        "\n".join(
            [
                f"intake: {report.orders} orders, {report.created} new subscriptions, "
                f"{report.unchanged} already known, {report.revalidated} validated again, "
                f"{len(report.unrouted)} unrouted, {len(report.quarantined)} quarantined, "
                f"{report.errors} errors",
                *(f"  {outcome}: {count}" for outcome, count in sorted(report.by_outcome.items())),
            ]
        )
    )


def _report_metadata(
    report: IntakeReport, drifts: Sequence[Drift]
) -> "dict[str, dg.RawMetadataValue]":  # a type only the checker knows
    """The run's figures and examples on the op's output, where the UI shows them per run."""
    return {
        "orders": report.orders,
        "created": report.created,
        "unchanged": report.unchanged,
        "revalidated": report.revalidated,
        "unrouted": len(report.unrouted),
        "quarantined": len(report.quarantined),
        "errors": report.errors,
        "by_integration_origin_status": dg.MetadataValue.json(dict(report.by_outcome)),
        "unrouted_examples": dg.MetadataValue.json(report.unrouted[:UNROUTED_EXAMPLES]),
        "quarantined_examples": dg.MetadataValue.json(report.quarantined[:UNROUTED_EXAMPLES]),
        # invalid orders per integration and reason, unrouted ones per reason; drifts alerted
        "invalid": sum(report.invalid_by_reason.values()),
        "by_reason": dg.MetadataValue.json(report.reasons_json()),
        "drift_alerts": dg.MetadataValue.json([d.message() for d in drifts]),
    }


@dg.job(
    tags={
        "anubis/job": "intake",  # the run queue's one-intake-at-a-time limit (dagster.yaml)
        "dagster/max_runtime": str(INTAKE_MAX_RUNTIME_SECONDS),
        **run_tags("intake"),
    },
    description="Paid orders → validated, routed subscriptions.",
)
def intake_job() -> None:
    ingest_paid_orders()
