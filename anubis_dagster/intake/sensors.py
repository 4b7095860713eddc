"""paid_orders_sensor: asks for an intake run for each new batch of paid orders."""

import dagster as dg

from anubis_dagster.intake.jobs import intake_job
from anubis_dagster.intake.orders_source import OrderKey
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.resources import OrdersSourceResource


@dg.sensor(
    job=intake_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New paid orders → intake runs (cursor on updated_at, id).",
)
def paid_orders_sensor(
    context: dg.SensorEvaluationContext, orders: OrdersSourceResource
) -> dg.SensorResult | dg.SkipReason:
    """One indexed range query per tick; the work itself happens in the runs it asks for."""
    cursor = OrderKey.from_json(context.cursor)
    batches = plan_batches(orders.get(), cursor)
    if not batches:
        return dg.SkipReason("no new paid orders")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=batch.run_key,
                run_config=batch.run_config(),
                tags={"anubis/job": "intake", "anubis/orders": str(batch.size)},
            )
            for batch in batches
        ],
        cursor=batches[-1].until.to_json(),
    )
