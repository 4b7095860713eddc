"""due_work_sensor: asks for the deliver and check runs the planner says are due;
release_claims_of_failed/canceled_runs: give a dead run's subscriptions back at once.

What is due, and when a run is held back (pause, open breaker, pacing by `interval`, back-off
after failed runs, runs in flight), is decided in one place, `delivery.planner`, which
`anubis run` asks too. This sensor only turns its plan into run requests, and remembers in its
cursor when it asked for each slot (a request the daemon has not turned into a run yet paces
like a run).

# No `from __future__ import annotations`: Dagster reads sensor annotations at runtime.
"""

import json
import time

import dagster as dg

from anubis_dagster.delivery.claims import release_claims
from anubis_dagster.delivery.planner import plan_due_runs, run_in_flight, runs_in_flight
from anubis_dagster.resources import AppDatabase

# where the run-storage reads used to live (tests and scripts import them from here)
__all__ = [
    "build_due_work_sensor",
    "build_release_claims_sensors",
    "run_in_flight",
    "runs_in_flight",
]

#: every daemon sensor loop (5 s): an interval of 5 would skip every other loop, because the
#: previous tick started a moment after its loop did
DUE_SENSOR_INTERVAL_SECONDS = 1
#: dead runs are rare; their claims need not come back within seconds
RELEASE_SENSOR_INTERVAL_SECONDS = 15


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
        with app_db.session() as session:
            plan = plan_due_runs(session, context.instance, last_asked=last_asked, now=now)
        if not plan.runs:
            return dg.SkipReason(plan.skip_reason())
        requests = []
        for run in plan.runs:
            requests.append(
                dg.RunRequest(
                    job_name=run.job_name,
                    partition_key=run.key,
                    run_key=run.run_key(now),
                    tags=dict(run.tags),
                )
            )
            if not run.probe:
                last_asked[run.slot] = now
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
