"""Health and metrics evaluated on start, without a click (issue 23).

The schedules (`health_<scope>_schedule`, every 15 minutes) evaluate the health and metrics
assets on their clock; until the first tick, a fresh instance would show them "Never
materialized" and their checks "Not evaluated". `health_first_evaluation_sensor` closes that
gap: at its first tick after the daemon starts (then every `INTERVAL_SECONDS`), it requests
once each health job whose assets were never materialized and that has no run yet. A job that
has run, whoever launched it, is left to its schedule: the sensor never repeats it, and a
failed first run is not retried here (the schedule's next tick is).

# No `from __future__ import annotations`: Dagster reads annotations at runtime.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # what `define_asset_job` returns; not exported by `dagster`
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

SENSOR_NAME = "health_first_evaluation_sensor"
#: how often it looks: one cheap instance query per health asset
INTERVAL_SECONDS = 120


def never_evaluated(
    instance: dg.DagsterInstance, job_assets: Mapping[str, Sequence[dg.AssetKey]]
) -> list[str]:
    """The health jobs (sorted) with an asset never materialized and no run at all."""
    due = []
    for job, keys in sorted(job_assets.items()):
        if all(instance.get_latest_materialization_event(key) is not None for key in keys):
            continue
        if instance.get_runs_count(dg.RunsFilter(job_name=job)):
            continue  # launched already (this sensor, the schedule or a person): not again
        due.append(job)
    return due


def build_first_evaluation_sensor(
    jobs: "Sequence[UnresolvedAssetJobDefinition]",
    job_assets: Mapping[str, Sequence[dg.AssetKey]],
) -> dg.SensorDefinition:
    """One sensor for every health job; `job_assets`: job name → the assets it materializes."""

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Evaluates the health and metrics of each integration (and the platform's) "
        "once when the daemon starts on an instance where they were never evaluated, so the "
        "checks are not 'Not evaluated' until the first 15-minute tick of their schedule.",
    )
    def health_first_evaluation_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        due = never_evaluated(context.instance, job_assets)
        if not due:
            return dg.SkipReason("every health and metrics asset has been evaluated")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(job_name=job, run_key=f"first:{job}") for job in due]
        )

    return health_first_evaluation_sensor
