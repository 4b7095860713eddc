"""retention_job (weekly): Dagster's run storage and the app DB's personal data do not grow
or linger forever.

- Dagster's event log on PostgreSQL keeps every run's events; Anubis's own record of attempts is
  the app DB (`subscription_events`), so Dagster runs older than `ANUBIS_RUN_RETENTION_DAYS`
  (default 90) are deleted, with their events and their compute logs (run output). Stale
  catalog answers are dropped too.
- LGPD: personal data of subscriptions that reached the end of their road, and every attempt's
  request/response, are dropped after `ANUBIS_PII_RETENTION_DAYS` (default 365); outcomes,
  statuses, timestamps and counts are kept (rules in `maintenance/pii.py`).

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field
from sqlalchemy import delete

from anubis_dagster.db.models import CatalogCacheEntry
from anubis_dagster.launchpad import checked_schema
from anubis_dagster.maintenance import pii
from anubis_dagster.resources import AppDatabase
from anubis_dagster.run_tags import run_tags
from anubis_dagster.settings import get_settings

BATCH = 200


class RetentionConfig(dg.Config):
    run_retention_days: int = Field(default=get_settings().anubis_run_retention_days, ge=1)
    catalog_cache_days: int = Field(default=7, ge=1)


@dg.op(config_schema=checked_schema(RetentionConfig))
def delete_old_runs(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
    config = RetentionConfig.model_validate(context.op_config)
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
            run_id = record.dagster_run.run_id
            context.instance.delete_run(run_id)
            # the run's stdout/stderr (compute logs) go with it: Dagster's delete_run keeps them
            context.instance.compute_log_manager.delete_logs(prefix=[run_id])
        deleted += len(records)
    with app_db.session() as session:
        stale = datetime.now(UTC) - timedelta(days=config.catalog_cache_days)
        session.execute(delete(CatalogCacheEntry).where(CatalogCacheEntry.fetched_at < stale))
    context.log.info(f"deleted {deleted} Dagster runs created before {cutoff:%Y-%m-%d}")
    return dg.Output(deleted, metadata={"runs_deleted": deleted, "cutoff": cutoff.isoformat()})


class PiiRetentionConfig(dg.Config):
    pii_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="days personal data is kept; empty = ANUBIS_PII_RETENTION_DAYS (default 365)",
    )
    batch_size: int = Field(default=pii.DEFAULT_BATCH_SIZE, ge=1, le=10_000)


@dg.op(config_schema=checked_schema(PiiRetentionConfig))
def anonymize_personal_data(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
    """Drops the app DB's personal data past its retention; the count lands in the run metadata
    so an auditor can see what each run removed."""
    config = PiiRetentionConfig.model_validate(context.op_config)
    days = config.pii_retention_days or pii.pii_retention_days_from_env()
    cutoff = datetime.now(UTC) - timedelta(days=days)
    report = pii.apply_retention(app_db.session, cutoff, batch_size=config.batch_size)
    context.log.info(
        f"anonymised {report.subscriptions_anonymized} subscriptions and dropped "
        f"{report.event_payloads_dropped} event payloads older than {cutoff:%Y-%m-%d}"
    )
    return dg.Output(
        report.subscriptions_anonymized,
        metadata={**report.as_metadata(), "cutoff": cutoff.isoformat()},
    )


@dg.job(
    tags=run_tags("retention"),
    description="Deletes old Dagster runs and drops the app DB's personal data past its "
    "retention (LGPD); outcomes and counts are kept.",
)
def retention_job() -> None:
    delete_old_runs()
    anonymize_personal_data()


retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="0 4 * * 0",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
