"""The going-live Launchpad jobs (thin: the work is in `legacy/operations.py`).

- `go_live`: set the partition's go-live point (`at`, ISO 8601 with zone; `dry_run`).
- `takeover`: send the partition's orders paid in [`from`, `to`) although before go-live.
- `legacy_import`: import the partition's legacy records. Where they come from is never typed
  at launch: Kroton's from `ANUBIS_LEGACY_KROTON_DATABASE_URL`, Estácio's from
  `ANUBIS_LEGACY_ESTACIO_CSV` (a launched run must not choose where data comes from).

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import (
    integration_partitions,
    partition_integration,
    partitioned_schema,
    settings,
)
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import ACTION_TAG, run_tags

if TYPE_CHECKING:
    from anubis_dagster.legacy.importer import ImportReport


def _aware(value: str) -> str:
    stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        raise ValueError("give a time zone (e.g. +00:00)")
    return value


class GoLiveConfig(dg.Config):
    at: str = Field(description="the go-live point, ISO 8601 with zone (2026-12-07T03:00:00Z)")
    dry_run: bool = Field(default=True, description="say what would change, change nothing")

    @field_validator("at")
    @classmethod
    def _at(cls, value: str) -> str:
        return _aware(value)


class TakeoverConfig(dg.Config):
    start: str = Field(description="from (included), ISO 8601 with zone")
    end: str = Field(description="to (excluded), ISO 8601 with zone")
    dry_run: bool = Field(default=True, description="count, change nothing")

    @field_validator("start", "end")
    @classmethod
    def _times(cls, value: str) -> str:
        return _aware(value)


class LegacyImportConfig(dg.Config):
    dry_run: bool = Field(default=False, description="count, change nothing")
    skip_bad: bool = Field(default=False, description="CSV: import the good lines only")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).astimezone(UTC)


def build_legacy_jobs(integration_keys: Iterable[str]) -> list[dg.JobDefinition]:
    keys = sorted(set(integration_keys))
    return [_go_live_job(keys), _takeover_job(keys), _legacy_import_job(keys)]


def _partitioned(
    keys: list[str], action: str, op_name: str
) -> dg.PartitionedConfig[dg.StaticPartitionsDefinition]:
    return integration_partitions(keys, op_name, lambda key: run_tags(action, key))


def _go_live_job(keys: list[str]) -> dg.JobDefinition:
    """One builder per job, its op beside it: an op's config schema names the partitions, so
    op and job are built together from the same keys."""

    @dg.op(config_schema=partitioned_schema(GoLiveConfig, keys))
    @scrub_errors
    def set_go_live_point(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
        from anubis_dagster.legacy.operations import run_go_live

        key = partition_integration(context)  # refused: nothing done
        config = settings(GoLiveConfig, context.op_config)
        change = run_go_live(app_db.resolved_url, key, _parse(config.at), dry_run=config.dry_run)
        context.log.info(change.describe())
        return dg.Output(
            change.held_back,
            metadata={
                "go_live_at": change.at.isoformat(),
                "dry_run": change.dry_run,
                "held_back": change.held_back,
                "watermark_moved_to": change.floor_after.to_json() if change.floor_after else "-",
            },
        )

    @dg.job(
        config=_partitioned(keys, "go_live", "set_go_live_point"),
        tags={ACTION_TAG: "go_live"},
        description="Set the integration's go-live point (orders paid before it are never "
        "sent). dry_run is on by default. docs/cutover.md.",
    )
    def go_live() -> None:
        set_go_live_point()

    return go_live


def _takeover_job(keys: list[str]) -> dg.JobDefinition:
    """Its own builder so that the takeover's op and job read together (see `_go_live_job`)."""

    @dg.op(config_schema=partitioned_schema(TakeoverConfig, keys))
    @scrub_errors
    def take_over_range(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
        from anubis_dagster.legacy.operations import run_takeover

        key = partition_integration(context)  # refused: nothing done
        config = settings(TakeoverConfig, context.op_config)
        report = run_takeover(
            app_db.resolved_url,
            key,
            _parse(config.start),
            _parse(config.end),
            dry_run=config.dry_run,
            tty=False,
            run_id=context.run_id,
        )
        context.log.info(report.describe())
        return dg.Output(
            report.taken_over + report.created,
            metadata={
                "dry_run": report.dry_run,
                "orders": report.orders,
                "taken_over": report.taken_over,
                "created": report.created,
                "by_status": dg.MetadataValue.json(dict(report.by_status)),
            },
        )

    @dg.job(
        config=_partitioned(keys, "takeover", "take_over_range"),
        tags={ACTION_TAG: "takeover"},
        description="Send the integration's orders paid in [start, end) although before its "
        "go-live point (idempotent; dry_run by default).",
    )
    def takeover() -> None:
        take_over_range()

    return takeover


def _legacy_import_job(keys: list[str]) -> dg.JobDefinition:
    """Its own builder so that the import's op and job read together (see `_go_live_job`)."""

    @dg.op(config_schema=partitioned_schema(LegacyImportConfig, keys))
    @scrub_errors
    def import_legacy_records(
        context: dg.OpExecutionContext, app_db: AppDatabase
    ) -> dg.Output[int]:
        key = partition_integration(context)  # refused: nothing done
        config = settings(LegacyImportConfig, context.op_config)
        report, errors = _import(key, config, app_db.resolved_url, context.run_id)
        context.log.info(report.describe())
        return dg.Output(
            report.total_imported,
            metadata={
                **{
                    k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
                    for k, v in report.summary().items()
                },
                "bad_lines": dg.MetadataValue.json(errors[:50]),
            },
        )

    @dg.job(
        config=_partitioned(keys, "legacy_import", "import_legacy_records"),
        tags={ACTION_TAG: "legacy_import"},
        description="Import what the integration's legacy service sent (source from the "
        "settings, never from the launch). Idempotent and resumable.",
    )
    def legacy_import() -> None:
        import_legacy_records()

    return legacy_import


def _import(
    key: str, config: LegacyImportConfig, db_url: str, run_id: str
) -> "tuple[ImportReport, list[str]]":
    """A source that is missing or invalid fails the run without retries: retrying cannot fix
    the settings or the file, a person must."""
    from anubis_dagster.legacy.operations import (
        LegacyCsvInvalid,
        LegacySourceMissing,
        reader_for,
        run_import,
    )

    try:
        return run_import(
            db_url,
            key,
            reader_for(key),
            skip_bad=config.skip_bad,
            dry_run=config.dry_run,
            tty=False,
            run_id=run_id,
        )
    except LegacyCsvInvalid as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"errors": dg.MetadataValue.json(exc.errors[:50])},
            allow_retries=False,
        ) from None
    except LegacySourceMissing as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
