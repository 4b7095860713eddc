"""retention_job: keeps Dagster's run storage from growing forever (weekly).

Dagster's event log on PostgreSQL keeps every run's events; Anubis's own record of attempts is
the app DB (`subscription_events`, kept), so Dagster runs older than
`ANUBIS_RUN_RETENTION_DAYS` (default 90) are deleted, with their events. Stale catalog answers
are dropped too.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field
from sqlalchemy import delete

from anubis_dagster.db.models import CatalogCacheEntry
from anubis_dagster.resources import AppDatabase

BATCH = 200


class RetentionConfig(dg.Config):
    run_retention_days: int = Field(
        default=int(os.environ.get("ANUBIS_RUN_RETENTION_DAYS", "90")), ge=1
    )
    catalog_cache_days: int = Field(default=7, ge=1)


@dg.op
def delete_old_runs(
    context: dg.OpExecutionContext, config: RetentionConfig, app_db: AppDatabase
) -> dg.Output[int]:
    cutoff = datetime.now(UTC) - timedelta(days=config.run_retention_days)
    deleted = 0
    while True:
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(created_before=cutoff), limit=BATCH
        )
        records = [r for r in records if r.dagster_run.run_id != context.run_id]
        if not records:
            break
        for record in records:
            context.instance.delete_run(record.dagster_run.run_id)
        deleted += len(records)
    with app_db.session() as session:
        stale = datetime.now(UTC) - timedelta(days=config.catalog_cache_days)
        session.execute(delete(CatalogCacheEntry).where(CatalogCacheEntry.fetched_at < stale))
    context.log.info(f"deleted {deleted} Dagster runs created before {cutoff:%Y-%m-%d}")
    return dg.Output(deleted, metadata={"runs_deleted": deleted, "cutoff": cutoff.isoformat()})


@dg.job(description="Deletes old Dagster runs (the app DB keeps every attempt).")
def retention_job() -> None:
    delete_old_runs()


retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="0 4 * * 0",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
