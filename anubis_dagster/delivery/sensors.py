"""due_work_sensor: asks for a deliver or check run of an integration when its work is due;
release_claims_of_failed/canceled_runs: give a dead run's subscriptions back at once.

"Due" = a subscription in a status the flow works on whose `scheduled_to` has come (new ones,
retries whose time has come, checks due), not claimed by a live run. A paused integration
(`delivery.pause`) gets no run; its name is in the tick's SkipReason. New students (never
attempted) are asked for on the next tick: the paid→sent path must not wait for the
integration's `interval`, which paces only retries and status checks. While a run of the flow
is queued, none is added; while one is running, one more may wait in the queue for new
students (dagster.yaml's `anubis/slot` limit holds it until the slot is free).

A run record never holds its integration forever: a CANCELING run counts as in flight (it may
still be sending), but a run past its `dagster/max_runtime` plus a monitoring poll is treated
as dead (run monitoring is about to fail it), so the sensor never waits on a record alone.

# No `from __future__ import annotations`: Dagster reads sensor annotations at runtime.
"""

import json
import time

import dagster as dg
from sqlalchemy import select

from anubis_dagster.core.breaker import probe_due, probe_lost
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.breaker import open_breakers, utcnow, why_stopped
from anubis_dagster.delivery.due import Flow, count_due, flow_statuses, has_due
from anubis_dagster.delivery.jobs import BATCH_LIMIT, MAX_RUNTIME_TAG, partition_tags
from anubis_dagster.delivery.service import release_claims
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.resources import AppDatabase

WAITING_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]
RUNNING_STATUSES = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
ACTIVE_STATUSES = WAITING_STATUSES + RUNNING_STATUSES
#: a run past its max runtime by more than this is not waited for (monitoring polls ~20 s)
DEAD_RUN_GRACE_SECONDS = 60
#: every daemon sensor loop (5 s): an interval of 5 would skip every other loop, because the
#: previous tick started a moment after its loop did
DUE_SENSOR_INTERVAL_SECONDS = 1
#: after a failed run, new students wait this long (doubling per failure in a row)
FAILURE_BACKOFF_SECONDS = 60
FAILURE_BACKOFF_RUNS = 5
#: dead runs are rare; their claims need not come back within seconds
RELEASE_SENSOR_INTERVAL_SECONDS = 15


def _past_max_runtime(record: dg.RunRecord, now: float) -> bool:
    limit = record.dagster_run.tags.get(MAX_RUNTIME_TAG)
    if not limit or record.start_time is None:
        return False
    try:
        return now - record.start_time > float(limit) + DEAD_RUN_GRACE_SECONDS
    except ValueError:
        return False


def runs_in_flight(
    instance: dg.DagsterInstance, job_name: str, partition: str, now: float | None = None
) -> tuple[int, int]:
    """(waiting, running) runs of this job and partition that are still alive."""
    now = time.time() if now is None else now
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name, statuses=ACTIVE_STATUSES, tags={"dagster/partition": partition}
        ),
        limit=20,
    )
    waiting = running = 0
    for record in records:
        status = record.dagster_run.status
        if status in WAITING_STATUSES:
            waiting += 1
        elif not _past_max_runtime(record, now):
            running += 1
    return waiting, running


def failure_backoff_active(
    instance: dg.DagsterInstance, job_name: str, partition: str, interval_seconds: float
) -> bool:
    """Whether new students should wait because the latest runs of this job and partition
    failed: 1, 2, 4… minutes after the last failure (capped at the integration's `interval`),
    so a run that cannot start (missing credentials, the partner down) is not relaunched, and
    alerted, on every tick, while one failed launch delays nobody for long."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, tags={"dagster/partition": partition}),
        limit=FAILURE_BACKOFF_RUNS,
    )
    failures = 0
    for record in records:
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        failures += 1
    if not failures:
        return False
    ended = records[0].end_time or records[0].update_timestamp.timestamp()
    backoff = min(interval_seconds, FAILURE_BACKOFF_SECONDS * 2 ** (failures - 1))
    return time.time() - ended < backoff


def run_in_flight(instance: dg.DagsterInstance, job_name: str, partition: str) -> bool:
    """Whether a live run of this job and partition is queued, starting, running or canceling."""
    return sum(runs_in_flight(instance, job_name, partition)) > 0


def build_due_work_sensor(
    deliver_job: dg.JobDefinition, check_job: dg.JobDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        jobs=[deliver_job, check_job],
        minimum_interval_seconds=DUE_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New students at once, due retries and checks per `interval` → one run "
        "per integration and flow.",
    )
    def due_work_sensor(
        context: dg.SensorEvaluationContext, app_db: AppDatabase
    ) -> dg.SensorResult | dg.SkipReason:
        last_asked: dict[str, float] = json.loads(context.cursor or "{}")
        now = time.time()
        requests, waiting, paused, down = [], [], [], []
        with app_db.session() as session:
            integrations = list(
                session.scalars(select(Integration).where(Integration.enabled.is_(True)))
            )
            for integration in integrations:
                if integration.paused_at is not None:
                    paused.append(
                        integration.key
                        + (f" ({integration.pause_reason})" if integration.pause_reason else "")
                    )
                    continue
                adapter = adapter_class(integration.type)
                broken = open_breakers(session, adapter)
                if broken:
                    # the partner is down (issue 21): no run, except one when a probe is due
                    if any(
                        probe_due(s, utcnow()) or probe_lost(s, utcnow()) for s in broken.values()
                    ) and not run_in_flight(context.instance, deliver_job.name, integration.key):
                        requests.append(
                            dg.RunRequest(
                                job_name=deliver_job.name,
                                partition_key=integration.key,
                                run_key=f"{integration.key}:breaker_probe:{int(now)}",
                                tags={
                                    **partition_tags(integration.key, Flow.DELIVER, adapter, 1),
                                    "anubis/breaker_probe": "true",
                                },
                            )
                        )
                        continue
                    down += [why_stopped(adapter, api, s) for api, s in sorted(broken.items())]
                    continue
                for flow, job in ((Flow.DELIVER, deliver_job), (Flow.CHECK, check_job)):
                    statuses = flow_statuses(adapter, flow)
                    slot = f"{integration.key}:{flow}"
                    paced = now - last_asked.get(slot, 0) < integration.interval * 60
                    # new students skip the pacing; retries and checks wait for `interval`
                    fresh = (
                        flow is Flow.DELIVER
                        and count_due(session, integration.id, statuses, fresh_only=True, limit=1)
                        > 0
                        and not failure_backoff_active(
                            context.instance, job.name, integration.key, integration.interval * 60
                        )
                    )
                    if paced and not fresh:
                        continue
                    if not fresh and not has_due(session, integration.id, statuses):
                        continue
                    queued, running = runs_in_flight(context.instance, job.name, integration.key)
                    if queued or (running and not fresh):
                        waiting.append(slot)
                        continue
                    students = count_due(session, integration.id, statuses, limit=BATCH_LIMIT)
                    requests.append(
                        dg.RunRequest(
                            job_name=job.name,
                            partition_key=integration.key,
                            run_key=f"{slot}:{int(now)}",
                            tags=partition_tags(integration.key, flow, adapter, students),
                        )
                    )
                    last_asked[slot] = now
        if not requests:
            reasons = [f"runs still in flight: {', '.join(waiting)}"] if waiting else []
            if paused:
                reasons.append(f"paused: {', '.join(paused)}")
            if down:
                reasons.append(f"partner down: {'; '.join(down)}")
            return dg.SkipReason(mask_text("; ".join(reasons)) if reasons else "nothing due")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(last_asked))

    return due_work_sensor


def build_release_claims_sensors(
    deliver_job: dg.JobDefinition, check_job: dg.JobDefinition
) -> list[dg.SensorDefinition]:
    """A deliver/check run that ended without finishing (its worker died and monitoring failed
    or canceled it) still holds its claims until the lease expires (10 minutes by default).
    Releasing them at once lets the retry or the next run continue the work now; a student
    whose request may have left is still asked about by CPF before any resend."""

    def build(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
        @dg.run_status_sensor(
            run_status=status,
            monitored_jobs=[deliver_job, check_job],
            minimum_interval_seconds=RELEASE_SENSOR_INTERVAL_SECONDS,
            default_status=dg.DefaultSensorStatus.RUNNING,
            name=f"release_claims_of_{status.value.lower()}_runs",
            description=f"Gives the claims of a delivery run that ended {status.value} back "
            "at once (no lease wait).",
        )
        def release(context: dg.RunStatusSensorContext, app_db: AppDatabase) -> None:
            released = release_claims(app_db.resolved_url, context.dagster_run.run_id)
            if released:
                context.log.info(f"released {released} claims of {context.dagster_run.run_id}")

        return release

    return [build(dg.DagsterRunStatus.FAILURE), build(dg.DagsterRunStatus.CANCELED)]
