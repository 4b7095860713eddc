"""daily_digest_job and its schedule: one message per integration per day with the day's
numbers (`alerts.digest`), in place of a summary after every run.

The schedule runs at `ANUBIS_DIGEST_HOUR` (America/Sao_Paulo, default 8; `off` leaves it out);
the job can also be launched from the Launchpad for any integration and window.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from anubis_dagster.alerts.digest import Digest, app_db_numbers
from anubis_dagster.alerts.webhook import send_alert
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import (
    integration_partitions,
    partition_integration,
    partitioned_schema,
    settings,
)
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import ACTION_TAG, INTEGRATION_TAG, run_tags
from anubis_dagster.settings import get_settings

DIGEST_TIMEZONE = "America/Sao_Paulo"
#: the runs a digest counts: the delivery work, not health checks or the digests themselves
COUNTED_ACTIONS = ("deliver", "check", "requeue", "retry_now", "dry_run")


class DigestConfig(dg.Config):
    hours: int = Field(default=24, ge=1, le=24 * 7, description="the window: the last N hours")


def run_numbers(
    instance: dg.DagsterInstance, key: str, start: datetime, end: datetime, digest: Digest
) -> Digest:
    """Runs of the integration in the window, by action, and how many failed (count queries
    on the run storage's tag index: a busy day has thousands of runs)."""
    window = {"created_after": start, "created_before": end}
    for action in COUNTED_ACTIONS:
        runs = instance.get_runs_count(
            dg.RunsFilter(tags={INTEGRATION_TAG: key, ACTION_TAG: action}, **window)  # type: ignore[arg-type]
        )
        if runs:
            digest.runs[action] = runs
    digest.failed_runs = instance.get_runs_count(
        dg.RunsFilter(
            tags={INTEGRATION_TAG: key, ACTION_TAG: list(COUNTED_ACTIONS)},
            statuses=[dg.DagsterRunStatus.FAILURE],
            **window,  # type: ignore[arg-type]
        )
    )
    return digest


def post_digest(
    context: dg.OpExecutionContext, app_db: AppDatabase, key: str, config: DigestConfig
) -> dg.Output[int]:
    """Count the window of integration `key` and post the digest."""
    end = datetime.now(UTC)
    start = end - timedelta(hours=config.hours)
    digest = Digest(key, start, end)
    run_numbers(context.instance, key, start, end, digest)
    with app_db.session() as session:
        app_db_numbers(session, key, start, end, digest)
    alert = digest.alert()
    send_alert(alert)
    context.log.info(alert.text())
    return dg.Output(
        digest.sent,
        metadata={
            "runs": sum(digest.runs.values()),
            "failed_runs": digest.failed_runs,
            "sent": digest.sent,
            "accepted": digest.accepted,
            "refused": digest.refused,
            "unknown": digest.unknown,
            "failed": digest.failed,
            "waiting": digest.waiting,
            "retries": digest.retries,
            "dead_letters": digest.dead_letters,
        },
    )


def build_digest_definitions(
    integration_keys: Iterable[str],
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition | None]:
    """The digest job (a partition per integration) and, unless the digest is off, its
    daily schedule."""
    keys = sorted(set(integration_keys))

    @dg.op(
        config_schema=partitioned_schema(DigestConfig, keys),
        description="Counts the integration's runs, registrations, retries and dead letters "
        "of the window and posts them as one message.",
    )
    @scrub_errors
    def send_daily_digest(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
        key = partition_integration(context)  # refused: nothing done
        config = settings(DigestConfig, context.op_config)
        return post_digest(context, app_db, key, config)

    @dg.job(
        config=integration_partitions(
            keys, "send_daily_digest", lambda key: run_tags("digest", key)
        ),
        tags={ACTION_TAG: "digest"},
        description="One message per integration: the day's runs, registrations sent, "
        "accepted, refused and unknown, retries and dead letters.",
    )
    def daily_digest_job() -> None:
        send_daily_digest()

    hour = get_settings().digest_hour()
    if hour is None:
        return daily_digest_job, None

    @dg.schedule(
        job=daily_digest_job,
        cron_schedule=f"0 {hour} * * *",
        execution_timezone=DIGEST_TIMEZONE,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The daily digest of every integration at {hour}:00 ({DIGEST_TIMEZONE}; "
        "ANUBIS_DIGEST_HOUR).",
    )
    def daily_digest_schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        day = context.scheduled_execution_time.date().isoformat()
        for key in keys:
            yield dg.RunRequest(partition_key=key, run_key=f"{key}:{day}")

    return daily_digest_job, daily_digest_schedule
