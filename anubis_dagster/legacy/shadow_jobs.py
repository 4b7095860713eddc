"""The shadow run's Launchpad jobs, partitioned by integration (pick it in the Partition box):

- `shadow_mode`: `shadow: true` starts the integration's shadow run, `false` ends it (live);
  `dry_run: true` only says what would change. One alert per change, like a pause.
- `shadow_report`: the shadow comparison for `since`/`until` (ISO 8601; default the last day),
  as Markdown in the op's `report` metadata. The legacy source comes from the settings
  (`legacy/shadow_source.py`), never from the run config.

The rules are in `legacy.shadow` and `legacy.shadow_report`; these ops only apply them.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from collections.abc import Iterable
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field, ValidationInfo, field_validator

from anubis_dagster.alerts.webhook import send_alert
from anubis_dagster.legacy.shadow import set_shadow, shadow_alert
from anubis_dagster.legacy.shadow_report import PeriodError, parse_period, parse_time
from anubis_dagster.legacy.shadow_source import LegacySourceMissing, build_report
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import (
    integration_partitions,
    partition_integration,
    partitioned_schema,
    settings,
)
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import ACTION_TAG, retag_run, run_tags


class ShadowModeConfig(dg.Config):
    shadow: bool = Field(
        default=True, description="true: shadow run (nothing written at the partner); false: live"
    )
    dry_run: bool = Field(default=False, description="only say what would change")


class ShadowReportConfig(dg.Config):
    since: str = Field(
        default="", description="start of the period, ISO 8601 (default: a day before until)"
    )
    until: str = Field(default="", description="end of the period, ISO 8601 (default: now)")

    @field_validator("since", "until")
    @classmethod
    def _iso(cls, value: str, info: ValidationInfo) -> str:
        if value.strip():
            parse_time(info.field_name or "time", value)
        return value.strip()


def _partitions(keys: list[str], action: str, op_name: str) -> dg.PartitionedConfig:
    return integration_partitions(keys, op_name, lambda key: run_tags(action, key))


def build_shadow_jobs(integration_keys: Iterable[str]) -> list[dg.JobDefinition]:
    keys = sorted(set(integration_keys))
    return [_shadow_mode_job(keys), _shadow_report_job(keys)]


def _shadow_mode_job(keys: list[str]) -> dg.JobDefinition:
    """One builder per job, its op beside it: an op's config schema names the partitions, so
    op and job are built together from the same keys."""

    @dg.op(
        config_schema=partitioned_schema(ShadowModeConfig, keys),
        description="Starts or ends the partition's shadow run; alerts once per change.",
    )
    @scrub_errors
    def set_shadow_mode(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[bool]:
        key = partition_integration(context)  # refused: nothing done
        config = settings(ShadowModeConfig, context.op_config)
        retag_run(context, action="dry_run" if config.dry_run else "shadow")
        with app_db.session() as session:
            change = set_shadow(session, key, config.shadow, dry_run=config.dry_run)
        context.log.info(change.describe())
        if change.changed and not change.dry_run:
            send_alert(shadow_alert(change, context.run_id))
        return dg.Output(
            change.shadow,
            metadata={
                "shadow": change.shadow,
                "changed": change.changed,
                "dry_run": change.dry_run,
                "not_sent_yet": change.waiting,
                "shadowed": change.shadowed,
                "summary": change.describe(),
            },
        )

    @dg.job(
        config=_partitions(keys, "shadow", "set_shadow_mode"),
        tags={ACTION_TAG: "shadow"},
        description="Shadow run of one integration: shadow: true sends nothing at the partner "
        "and records 'would send'; shadow: false goes live (the shadow's students stay unsent).",
    )
    def shadow_mode() -> None:
        set_shadow_mode()

    return shadow_mode


def _shadow_report_job(keys: list[str]) -> dg.JobDefinition:
    """Its own builder so that the report's op and job read together (see `_shadow_mode_job`)."""

    @dg.op(
        config_schema=partitioned_schema(ShadowReportConfig, keys),
        description="Compares what Anubis would have sent with the legacy's records.",
    )
    @scrub_errors
    def compare_with_legacy(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[bool]:
        key = partition_integration(context)  # refused: nothing done
        config = settings(ShadowReportConfig, context.op_config)
        try:
            since, until = parse_period(
                config.since or None, config.until or None, datetime.now(UTC)
            )
            report = build_report(app_db.resolved_url, key, since, until)
        except (PeriodError, LegacySourceMissing) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        summary = report.summary()
        context.log.info(
            f"{key}: both {report.both.count}, only legacy "
            f"{report.only_legacy.count}, only Anubis {report.only_anubis.count}, payloads "
            f"differing {report.differing_payloads}/{report.compared_payloads}"
        )
        return dg.Output(
            report.ready,
            metadata={
                "report": dg.MetadataValue.md(report.to_markdown()),
                "summary": dg.MetadataValue.json(summary),
                "ready": report.ready,
            },
        )

    @dg.job(
        config=_partitions(keys, "shadow_report", "compare_with_legacy"),
        tags={ACTION_TAG: "shadow_report"},
        description="The shadow comparison of one integration (run page → metadata `report`).",
    )
    def shadow_report() -> None:
        compare_with_legacy()

    return shadow_report
