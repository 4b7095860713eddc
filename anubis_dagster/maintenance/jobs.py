"""retention_job (weekly): Dagster's run storage and the app DB's personal data do not grow
or linger forever.

- Dagster's event log on PostgreSQL keeps every run's events; Anubis's own record of attempts is
  the app DB (`subscription_events`), so Dagster runs older than `ANUBIS_RUN_RETENTION_DAYS`
  (default 90) are deleted, with their events and their compute logs (run output). Stale
  catalog answers are dropped too.
- LGPD: personal data of subscriptions that reached the end of their road, and every attempt's
  request/response, are dropped after `ANUBIS_PII_RETENTION_DAYS` (default 365); outcomes,
  statuses, timestamps and counts are kept (rules in `maintenance/pii.py`): finished
  subscriptions after `ANUBIS_PII_RETENTION_DAYS`, idle open ones after
  `ANUBIS_PII_OPEN_RETENTION_DAYS` (closed as `expired`), and every place of
  `maintenance/personal_data.py` by age, whatever the status.
- Runs whose config or report was about one student (`student_lookup`, the privacy jobs) are
  deleted after `ANUBIS_LOG_RETENTION_DAYS` (default 30), and a `student_lookup` run from before
  issue 22 whose config holds a CPF at once; compute logs (run output files) after the same age.

Every op has `dry_run` (counts only) and reports its counts per place in its output metadata.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from pydantic import Field
from sqlalchemy import delete, func, select

from anubis_dagster.console.student import LookupKeyError, parse_key
from anubis_dagster.db.models import CatalogCacheEntry
from anubis_dagster.maintenance import pii
from anubis_dagster.maintenance.compute_logs import purge_old_files
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.launchpad import checked_schema
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import run_tags
from anubis_dagster.settings import get_settings

BATCH = 200
#: jobs whose runs are about one student: their config names them (an id), their report shows
#: them (masked); kept `ANUBIS_LOG_RETENTION_DAYS`, not the 90 days of the others
PERSONAL_RUN_JOBS = ("student_lookup", "privacy_export", "privacy_erase")


class RetentionConfig(dg.Config):
    # settings are read when the op runs, not when this module is imported
    run_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="days Dagster runs are kept; empty = ANUBIS_RUN_RETENTION_DAYS (default 90)",
    )
    log_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="days lookup/privacy runs and compute logs are kept; empty = "
        "ANUBIS_LOG_RETENTION_DAYS (default 30)",
    )
    catalog_cache_days: int = Field(default=7, ge=1)
    dry_run: bool = Field(default=False, description="count what would go; delete nothing")


def _config(context: dg.OpExecutionContext) -> tuple[RetentionConfig, int]:
    config = RetentionConfig.model_validate(context.op_config)
    return config, config.log_retention_days or get_settings().anubis_log_retention_days


def holds_a_cpf(run: dg.DagsterRun) -> bool:
    """A `student_lookup` run launched before issue 22, whose config holds the CPF typed."""
    config: Any = run.run_config
    for name in ("ops", "find_student_op", "config", "key"):
        config = config.get(name) if isinstance(config, Mapping) else None
    key = config
    if not isinstance(key, str):
        return False
    try:
        return parse_key(key).kind == "cpf"
    except LookupKeyError:
        return False


def _runs(
    instance: dg.DagsterInstance, runs_filter: dg.RunsFilter, own_run: str
) -> list[dg.DagsterRun]:
    """Every run matching the filter, paged (run records are small; the events are not read)."""
    found: list[dg.DagsterRun] = []
    cursor = None
    while True:
        records = instance.get_run_records(filters=runs_filter, limit=BATCH, cursor=cursor)
        if not records:
            return found
        found += [r.dagster_run for r in records if r.dagster_run.run_id != own_run]
        cursor = records[-1].dagster_run.run_id


@dg.op(config_schema=checked_schema(RetentionConfig))
@scrub_errors
def delete_old_runs(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
    config, log_days = _config(context)
    now = datetime.now(UTC)
    run_days = config.run_retention_days or get_settings().anubis_run_retention_days
    cutoff = now - timedelta(days=run_days)
    personal_cutoff = now - timedelta(days=log_days)
    instance = context.instance
    old = _runs(instance, dg.RunsFilter(created_before=cutoff), context.run_id)
    seen = {run.run_id for run in old}
    personal: list[dg.DagsterRun] = []
    for job_name in PERSONAL_RUN_JOBS:
        aged = dg.RunsFilter(job_name=job_name, created_before=personal_cutoff)
        legacy = (
            []
            if job_name != "student_lookup"
            else _runs(instance, dg.RunsFilter(job_name=job_name), context.run_id)
        )
        for run in [*_runs(instance, aged, context.run_id), *filter(holds_a_cpf, legacy)]:
            if run.run_id not in seen:
                seen.add(run.run_id)
                personal.append(run)
    if not config.dry_run:
        for run in [*old, *personal]:
            instance.delete_run(run.run_id)
            # the run's stdout/stderr (compute logs) go with it: Dagster's delete_run keeps them
            instance.compute_log_manager.delete_logs(prefix=[run.run_id])
    stale_entries = 0
    with app_db.session() as session:
        stale = now - timedelta(days=config.catalog_cache_days)
        where = CatalogCacheEntry.fetched_at < stale
        stale_entries = int(
            session.scalar(select(func.count()).select_from(CatalogCacheEntry).where(where)) or 0
        )
        if not config.dry_run:
            session.execute(delete(CatalogCacheEntry).where(where))
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(
        f"{verb} {len(old)} Dagster runs created before {cutoff:%Y-%m-%d} and {len(personal)} "
        f"lookup/privacy runs (older than {log_days} days, or holding a CPF in their config)"
    )
    return dg.Output(
        len(old) + len(personal),
        metadata={
            "dry_run": config.dry_run,
            "runs_deleted": len(old),
            "personal_runs_deleted": len(personal),
            "catalog_entries_deleted": stale_entries,
            "cutoff": cutoff.isoformat(),
            "personal_cutoff": personal_cutoff.isoformat(),
        },
    )


@dg.op(config_schema=checked_schema(RetentionConfig))
@scrub_errors
def delete_old_compute_logs(context: dg.OpExecutionContext) -> dg.Output[int]:
    """Run output files older than `ANUBIS_LOG_RETENTION_DAYS`, where the instance keeps them
    locally; a remote compute log manager (S3, GCS, Azure) needs its bucket's lifecycle rule,
    and the metadata says so."""
    config, log_days = _config(context)
    cutoff = datetime.now(UTC) - timedelta(days=log_days)
    manager = context.instance.compute_log_manager
    if not isinstance(manager, LocalComputeLogManager):
        where = type(manager).__name__
        context.log.warning(f"compute logs are kept by {where}: set its storage's own expiry")
        return dg.Output(0, metadata={"compute_log_manager": where, "files_deleted": 0})
    base_dir = Path(manager._base_dir)  # no public accessor; the one setting it was built from
    purge = purge_old_files(base_dir, cutoff, dry_run=config.dry_run)
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(f"{verb} {purge.files} compute log files ({purge.bytes} bytes)")
    return dg.Output(
        purge.files,
        metadata={
            "dry_run": config.dry_run,
            "compute_log_manager": type(manager).__name__,
            "files_deleted": purge.files,
            "bytes_deleted": purge.bytes,
            "cutoff": cutoff.isoformat(),
        },
    )


class PiiRetentionConfig(dg.Config):
    pii_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="days personal data is kept; empty = ANUBIS_PII_RETENTION_DAYS (default 365)",
    )
    open_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="days an idle open subscription is kept before it is closed as expired; "
        "empty = ANUBIS_PII_OPEN_RETENTION_DAYS (default 730)",
    )
    batch_size: int = Field(default=pii.DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    dry_run: bool = Field(default=False, description="count what would go; change nothing")


@dg.op(config_schema=checked_schema(PiiRetentionConfig))
@scrub_errors
def anonymize_personal_data(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
    """Drops the app DB's personal data past its retention; the counts per place land in the
    run metadata so an auditor can see what each run removed."""
    config = PiiRetentionConfig.model_validate(context.op_config)
    settings = get_settings()
    days = config.pii_retention_days or pii.pii_retention_days_from_env()
    open_days = max(days, config.open_retention_days or settings.anubis_pii_open_retention_days)
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=days)
    open_cutoff = now - timedelta(days=open_days)
    report = pii.apply_retention(
        app_db.session,
        cutoff,
        open_cutoff=open_cutoff,
        batch_size=config.batch_size,
        dry_run=config.dry_run,
        run_id=context.run_id,
    )
    verb = "would anonymise" if config.dry_run else "anonymised"
    context.log.info(
        f"{verb} {report.subscriptions_anonymized} finished subscriptions older than "
        f"{cutoff:%Y-%m-%d}, closed {report.subscriptions_expired} open ones idle since "
        f"{open_cutoff:%Y-%m-%d}; rows scrubbed per place: {report.places}"
    )
    return dg.Output(
        report.subscriptions_anonymized,
        metadata={
            **report.as_metadata(),
            "cutoff": cutoff.isoformat(),
            "open_cutoff": open_cutoff.isoformat(),
        },
    )


@dg.job(
    tags=run_tags("retention"),
    description="Deletes old Dagster runs, lookup/privacy runs and compute logs, and drops the "
    "app DB's personal data past its retention in every place it lands (LGPD); outcomes and "
    "counts are kept. `dry_run: true` in each op's config only counts.",
)
def retention_job() -> None:
    delete_old_runs()
    delete_old_compute_logs()
    anonymize_personal_data()


retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="0 4 * * 0",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
