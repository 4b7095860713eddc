"""integration_health: one asset partition per integration, materialised on a schedule.

Its numeric metadata (pending, retry queue, dead letter, error rate) is plotted by the UI over
time; asset checks turn the thresholds into warnings and errors the UI (and alert policies)
show. Business numbers come from `health.metrics`.

# No `from __future__ import annotations`: Dagster reads annotations at runtime.
"""

from collections.abc import Iterable, Iterator

import dagster as dg
from sqlalchemy import select

from anubis_dagster.db.models import Integration
from anubis_dagster.health.metrics import THRESHOLDS, integration_health
from anubis_dagster.resources import AppDatabase

ASSET_KEY = dg.AssetKey("integration_health")


def build_health_definitions(integration_keys: Iterable[str]) -> dg.Definitions:
    partitions = dg.StaticPartitionsDefinition(sorted(set(integration_keys)))

    @dg.asset(
        key=ASSET_KEY,
        partitions_def=partitions,
        description="Subscriptions by status, queues and the last 24 h error rate of one "
        "integration (thresholds from reference §4).",
        check_specs=[dg.AssetCheckSpec(name=metric, asset=ASSET_KEY) for metric in THRESHOLDS],
    )
    def integration_health_asset(
        context: dg.AssetExecutionContext, app_db: AppDatabase
    ) -> Iterable[dg.MaterializeResult | dg.AssetCheckResult]:
        with app_db.session() as session:
            integration = session.scalars(
                select(Integration).where(Integration.key == context.partition_key)
            ).one()
            health = integration_health(session, integration.id)
        yield dg.MaterializeResult(
            metadata={
                "pending": health.pending,
                "retry_queue": health.retry_queue,
                "dead_letter": health.dead_letter,
                "error_rate_24h": round(health.error_rate_24h, 4),
                "attempts_24h": health.attempts_24h,
                "by_status": dg.MetadataValue.json(health.by_status),
            }
        )
        for metric, (warning, critical) in THRESHOLDS.items():
            level = health.level(metric)
            yield dg.AssetCheckResult(
                check_name=metric,
                passed=level == "ok",
                severity=dg.AssetCheckSeverity.ERROR
                if level == "critical"
                else dg.AssetCheckSeverity.WARN,
                metadata={
                    "value": float(getattr(health, metric)),
                    "warning_above": warning,
                    "critical_above": critical,
                },
            )

    health_job = dg.define_asset_job(
        "integration_health_job", selection=[ASSET_KEY], partitions_def=partitions
    )

    @dg.schedule(
        job=health_job,
        cron_schedule="*/15 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def integration_health_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> Iterator[dg.RunRequest]:
        for key in partitions.get_partition_keys():
            yield dg.RunRequest(
                partition_key=key, run_key=f"{key}:{context.scheduled_execution_time}"
            )

    return dg.Definitions(
        assets=[integration_health_asset],
        jobs=[health_job],
        schedules=[integration_health_schedule],
    )
