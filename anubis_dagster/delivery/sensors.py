"""due_work_sensor: asks for a deliver or check run of an integration when its work is due.

"Due" = a subscription in a status the flow works on whose `scheduled_to` has come (new ones,
retries whose time has come, checks due), not claimed by a live run. A flow of an integration
gets at most one run per the integration's `interval` (minutes), and none while one is queued
or running (dagster.yaml also caps runs per partition). The tick is a few indexed queries.

# No `from __future__ import annotations`: Dagster reads sensor annotations at runtime.
"""

import json
import time

import dagster as dg
from sqlalchemy import select

from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.due import deliver_statuses, has_due
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.resources import AppDatabase

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_in_flight(instance: dg.DagsterInstance, job_name: str, partition: str) -> bool:
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name, statuses=ACTIVE_STATUSES, tags={"dagster/partition": partition}
        ),
        limit=1,
    )
    return bool(records)


def build_due_work_sensor(
    deliver_job: dg.JobDefinition, check_job: dg.JobDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        jobs=[deliver_job, check_job],
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Due deliveries, retries and checks → one run per integration and flow.",
    )
    def due_work_sensor(
        context: dg.SensorEvaluationContext, app_db: AppDatabase
    ) -> dg.SensorResult | dg.SkipReason:
        last_asked: dict[str, float] = json.loads(context.cursor or "{}")
        now = time.time()
        requests, waiting = [], []
        with app_db.session() as session:
            integrations = list(
                session.scalars(select(Integration).where(Integration.enabled.is_(True)))
            )
            for integration in integrations:
                adapter = adapter_class(integration.type)
                for flow, job, statuses in (
                    ("deliver", deliver_job, deliver_statuses(adapter)),
                    ("check", check_job, adapter.check_statuses),
                ):
                    slot = f"{integration.key}:{flow}"
                    if now - last_asked.get(slot, 0) < integration.interval * 60:
                        continue
                    if not has_due(session, integration.id, statuses):
                        continue
                    if run_in_flight(context.instance, job.name, integration.key):
                        waiting.append(slot)
                        continue
                    requests.append(
                        dg.RunRequest(
                            job_name=job.name,
                            partition_key=integration.key,
                            run_key=f"{slot}:{int(now)}",
                            tags={"anubis/integration": integration.key, "anubis/flow": flow},
                        )
                    )
                    last_asked[slot] = now
        if not requests:
            reason = f"runs still in flight: {', '.join(waiting)}" if waiting else "nothing due"
            return dg.SkipReason(reason)
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(last_asked))

    return due_work_sensor
