"""paid_orders_sensor: asks for an intake run from the intake watermark runs committed.

The position that matters is the one an intake run committed in the app DB (`intake.watermark`),
not the sensor's cursor: each tick plans from the committed watermark, so a run that never
launched, failed or was cancelled leaves its orders to the next tick. The tick asks for at most
one run, and none while an intake run is queued or in flight (the run in flight will move the
watermark). Its run key names the range and the attempt, so asking again for a range whose run
failed makes a new run instead of being deduplicated. The cursor only remembers the last
request (for that attempt count) and whether the missing-table alert was sent.

Each tick is cheap: one run-storage query by job and status, one primary-key read in the app DB
and one range scan of the orders index.
"""

# No `from __future__ import annotations` here: Dagster reads sensor annotations at runtime.

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import dagster as dg

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.intake.jobs import INTAKE_MAX_RUNTIME_SECONDS, intake_job
from anubis_dagster.intake.orders_source import OrdersTableMissing
from anubis_dagster.intake.planning import IntakeBatch, plan_run
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster.resources import AppDatabase

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
#: a run created but never launched (the launch failed and could not even record it) stops
#: holding the next request back after this long
NOT_STARTED_GRACE_SECONDS = 120
#: past its max runtime plus this, a run is left to run monitoring and no longer waited for
ABANDONED_AFTER_SECONDS = INTAKE_MAX_RUNTIME_SECONDS + 600
#: after this many failed attempts at one range, wait between attempts (doubling, capped)
BACKOFF_AFTER_ATTEMPTS = 3
MAX_BACKOFF_SECONDS = 900


@dataclass
class SensorState:
    """What the cursor remembers: the last request (range and attempt) and whether the missing
    orders table was alerted. Never a position: that is the committed watermark."""

    after: str = ""
    until: str = ""
    attempt: int = 0
    requested_at: float = 0.0
    missing_table_alerted: bool = False

    @classmethod
    def parse(cls, cursor: str | None) -> "SensorState":
        try:
            data = json.loads(cursor or "{}")
            fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            return cls(**fields)
        except (ValueError, TypeError):  # an older cursor (a bare position): start afresh
            return cls()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _age_seconds(record: dg.RunRecord, now: float) -> float:
    created = record.create_timestamp
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return now - created.timestamp()


def intake_run_in_flight(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """An intake run that is queued or running now (and not abandoned), if any."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=intake_job.name, statuses=IN_FLIGHT), limit=5
    )
    now = datetime.now(UTC).timestamp()
    for record in records:
        age = _age_seconds(record, now)
        status = record.dagster_run.status
        if status == dg.DagsterRunStatus.NOT_STARTED and age > NOT_STARTED_GRACE_SECONDS:
            continue
        if age > ABANDONED_AFTER_SECONDS:
            continue
        return record.dagster_run
    return None


@dg.sensor(
    job=intake_job,
    # every daemon sensor loop (5 s; an interval of 5 skips every other loop, as the previous
    # tick started a moment after its loop): this tick is on the paid → registered path
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New paid orders → one intake run at a time, from the committed watermark.",
)
def paid_orders_sensor(
    context: dg.SensorEvaluationContext, orders: OrdersSourceResource, app_db: AppDatabase
) -> dg.SensorResult | dg.SkipReason:
    """One run-storage query, one watermark read and one indexed range query per tick; the work
    itself happens in the run it asks for."""
    state = SensorState.parse(context.cursor)
    running = intake_run_in_flight(context.instance)
    if running is not None:
        return dg.SkipReason(
            f"intake run {running.run_id[:8]} is {running.status.value}; the next run starts "
            "from what it commits"
        )
    source = orders.get()
    try:
        with app_db.session() as session:
            committed = read_watermark(session, source.watermark_name)
        batch = plan_run(source, committed)
    except OrdersTableMissing as exc:
        if not state.missing_table_alerted:  # one alert, not one per tick
            send_alert(Alert("Intake cannot read paid orders", [str(exc)], level="critical"))
            state.missing_table_alerted = True
        return dg.SensorResult(skip_reason=dg.SkipReason(str(exc)), cursor=state.to_json())
    state.missing_table_alerted = False
    if batch is None:
        return dg.SensorResult(
            skip_reason=dg.SkipReason("no new paid orders"), cursor=state.to_json()
        )

    return _request_batch(state, batch)


def _request_batch(state: SensorState, batch: IntakeBatch) -> dg.SensorResult | dg.SkipReason:
    """Asking again for a range whose run did not finish is how a failed range is retried, so
    the attempt goes into the run key (a new run, not a deduplicated one) and, past a few,
    the asks back off."""
    after = batch.after.to_json() if batch.after else ""
    until = batch.until.to_json()
    # the same range again means its last run failed, was cancelled or never launched
    attempt = state.attempt + 1 if (state.after, state.until) == (after, until) else 0
    now = time.time()
    if attempt >= BACKOFF_AFTER_ATTEMPTS:
        wait = min(MAX_BACKOFF_SECONDS, 30 * 2 ** (attempt - BACKOFF_AFTER_ATTEMPTS))
        if now - state.requested_at < wait:
            return dg.SkipReason(
                f"the last {attempt} intake runs of this range did not finish; next try in "
                f"{wait - (now - state.requested_at):.0f}s"
            )
    run_key = batch.run_key + (f"#attempt{attempt}" if attempt else "")
    next_state = SensorState(after=after, until=until, attempt=attempt, requested_at=now)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                run_config=batch.run_config(),
                tags={
                    "anubis/job": "intake",
                    "anubis/orders": str(batch.size),
                    "anubis/attempt": str(attempt),
                },
            )
        ],
        cursor=next_state.to_json(),
    )
