"""The Anubis code location: every job, sensor and resource Dagster loads.

`build_definitions` reads the integrations file: each configured integration is a partition
of the delivery jobs, and each adapter brings its own resources (IES clients). `defs` is lazy
(`@dg.definitions`): importing this module reads no setting and no file; Dagster builds the
definitions when it loads the code location, and no module reads a setting at import, so the
order of the imports below does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from anubis_dagster.alerts.jobs import build_digest_definitions
from anubis_dagster.alerts.sensors import alert_on_run_failure
from anubis_dagster.config.integrations import (
    ConfigError,
    IntegrationsFile,
    load_integrations,
    settings_problems,
)
from anubis_dagster.console.jobs import student_lookup
from anubis_dagster.delivery.jobs import build_delivery_jobs
from anubis_dagster.delivery.pause_job import build_pause_job
from anubis_dagster.delivery.sensors import build_due_work_sensor, build_release_claims_sensors
from anubis_dagster.events.sensors import publish_events_sensor
from anubis_dagster.health.assets import build_health_definitions
from anubis_dagster.intake.jobs import intake_job
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.intake.sensors import paid_orders_sensor
from anubis_dagster.integrations.base import IESAdapter, adapter_class
from anubis_dagster.legacy.jobs import build_legacy_jobs
from anubis_dagster.legacy.shadow_jobs import build_shadow_jobs
from anubis_dagster.lineage import lineage_specs
from anubis_dagster.maintenance.jobs import retention_job, retention_schedule
from anubis_dagster.maintenance.privacy_jobs import privacy_erase, privacy_export
from anubis_dagster.reference_data.jobs import import_names_job
from anubis_dagster.resources import AppDatabase
from anubis_dagster.settings import get_settings, validate_at_load


def _resources(adapters: Iterable[type[IESAdapter]]) -> dict[str, object]:
    """The app DB and the orders source, shared by every area, and each IES's own clients."""
    resources: dict[str, object] = {"app_db": AppDatabase(), "orders": OrdersSourceResource()}
    for adapter in adapters:
        resources.update(adapter.resource_definitions())
    return resources


def build_definitions(config: IntegrationsFile | None = None) -> dg.Definitions:
    """Everything Dagster loads. The environment and the integrations file are validated
    first: a bad setting stops the load with a message naming it (`SettingsError`,
    `ConfigError`), not a failure hours later in a run."""
    # first, here (not in a helper: the traceback of a bad value stays a few frames long)
    validate_at_load()
    config = config or load_integrations()
    problems = settings_problems(config)
    if problems:
        raise ConfigError("invalid integrations:\n" + "\n".join(f"  - {p}" for p in problems))
    adapters = {adapter_class(i.type) for i in config.integrations}
    deliver_job, check_job = build_delivery_jobs(
        (i.key for i in config.integrations),
        adapters,
        {i.key: adapter_class(i.type) for i in config.integrations},
    )
    digest_job, digest_schedule = build_digest_definitions(
        i.key for i in config.integrations if i.enabled
    )
    # health per enabled integration: a disabled one has nothing to check and would only alert
    health = build_health_definitions(
        {i.key: adapter_class(i.type) for i in config.integrations if i.enabled}
    )
    # paid orders → subscriptions → each university, for the asset graph (work stays in jobs)
    lineage = lineage_specs(config.integrations, get_settings().anubis_orders_table)
    return dg.Definitions(
        assets=[*lineage, *(health.assets or [])],
        schedules=[
            *(health.schedules or []),
            retention_schedule,
            *([digest_schedule] if digest_schedule else []),
        ],
        jobs=[
            intake_job,
            deliver_job,
            check_job,
            import_names_job,
            retention_job,
            student_lookup,
            privacy_export,
            privacy_erase,
            build_pause_job(i.key for i in config.integrations),
            *build_shadow_jobs(i.key for i in config.integrations),
            *build_legacy_jobs(i.key for i in config.integrations),
            digest_job,
            *(health.jobs or []),
        ],
        sensors=[
            paid_orders_sensor,
            build_due_work_sensor(deliver_job, check_job),
            *build_release_claims_sensors(deliver_job, check_job),
            alert_on_run_failure,
            publish_events_sensor,
            *(health.sensors or []),
        ],
        resources=_resources(adapters),
        # every job's ops in its run worker's process: no step subprocesses (seconds per step,
        # and orphans when a worker is killed); jobs that need parallel steps set their own
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location Dagster loads (`dagster api grpc -m anubis_dagster.definitions`)."""
    return build_definitions()
