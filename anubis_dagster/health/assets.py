"""Health and metrics assets: one of each per integration, so checks and plots never mix.

- `health/<integration>`: asset checks, each described with its integration: the adapter's
  connectivity probes (one request each) and the thresholds (`health.metrics`), a WARN as
  Dagster's WARN severity (yellow) and an ERROR as its ERROR (red); its numeric metadata
  (pending, retry queue, backlog age in hours, error rate in %…) is plotted by the UI.
- `health/platform`: the app database, the IBGE names table and the configuration.
- `metrics/<integration>`: the numbers the business reads (volume by origin, success and retry
  rates, dead letters, paid → registered p50/p95, calls per registration, conversion by
  modality and campus), as metadata the UI plots, and the anomaly alerts.

A check whose level changes (turns WARN or ERROR, or recovers) sends one webhook alert. Each
integration has its own job and schedule (`health_<key>_job`), tagged `anubis/integration` and
`anubis/action=health` and outside the delivery queue slots (`anubis/slot`), so a health run
never waits for, or blocks, a delivery.

# No `from __future__ import annotations`: Dagster reads annotations at runtime.
"""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg
from sqlalchemy import select

from anubis_dagster.clients.probes import Level, Probe
from anubis_dagster.console.report import build_report
from anubis_dagster.core.clock import utcnow
from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.attempts import call_context
from anubis_dagster.health import platform, service
from anubis_dagster.health.alerting import CheckOutcome
from anubis_dagster.health.first_evaluation import build_first_evaluation_sensor
from anubis_dagster.health.metrics import METRICS_DAYS, THRESHOLDS
from anubis_dagster.integrations.base import IESAdapter
from anubis_dagster.integrations.partner_api import PartnerClients
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import retag_run

HEALTH_CRON = "*/15 * * * *"
#: a health run makes a handful of requests: anything longer is stuck
HEALTH_MAX_RUNTIME_SECONDS = 300
GROUP = "health"


def health_key(scope: str) -> dg.AssetKey:
    return dg.AssetKey(["health", scope])


def metrics_key(integration: str) -> dg.AssetKey:
    return dg.AssetKey(["metrics", integration])


def job_name(scope: str) -> str:
    return f"health_{scope}_job"


def health_tags(scope: str) -> dict[str, str]:
    return {
        "anubis/integration": scope,
        "anubis/action": "health",
        "dagster/max_runtime": str(HEALTH_MAX_RUNTIME_SECONDS),
    }


def check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    """A failing check's result carries Dagster's severity (the UI draws a WARN in yellow, an
    ERROR in red, both labelled "Failed") and starts with its level in words."""
    failing = outcome.level is not Level.OK
    return dg.AssetCheckResult(
        check_name=outcome.name,
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR
        if outcome.level is Level.ERROR
        else dg.AssetCheckSeverity.WARN,
        description=f"{outcome.level.value.upper()}: {outcome.summary}"
        if failing
        else outcome.summary,
        metadata={
            "integration": outcome.scope,
            "level": outcome.level.value,
            "measured": outcome.measured,
            "threshold": outcome.threshold,
        },
    )


def _platform_asset() -> dg.AssetsDefinition:
    key = health_key(platform.PLATFORM)

    @dg.asset(
        key=key,
        group_name=GROUP,
        description="What every integration depends on: the app database, the IBGE names "
        "table and the configuration (the checks of `anubis doctor`).",
        check_specs=[
            dg.AssetCheckSpec(name=name, asset=key, description=description)
            for name, description in platform.DESCRIPTIONS.items()
        ],
    )
    @scrub_errors
    def platform_health(
        context: dg.AssetExecutionContext, app_db: AppDatabase
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        retag_run(context, integration=platform.PLATFORM, action="health")
        outcomes = [
            platform.check_app_database(),
            platform.check_names_table(app_db.resolved_url),
            platform.check_configuration(),
        ]
        service.alert_changes(app_db.resolved_url, outcomes, context.run.run_id, utcnow())
        failing = sum(o.level is not Level.OK for o in outcomes)
        yield dg.MaterializeResult(metadata={"failing_checks": failing})
        for outcome in outcomes:
            yield check_result(outcome)

    return platform_health


def _breaker_check_spec(key: str, asset: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=service.BREAKER_CHECK,
        asset=asset,
        description=f"{key}: the circuit breaker of every partner API is closed (issue 21; its "
        "own alerts say when it opens and closes)",
    )


def _health_specs(
    key: str, asset_key: dg.AssetKey, probes: Sequence[Probe]
) -> list[dg.AssetCheckSpec]:
    """One check per probe, per threshold, and the circuit breaker's."""
    specs = [
        dg.AssetCheckSpec(
            name=p.name, asset=asset_key, description=service.probe_description(key, p)
        )
        for p in probes
    ] + [
        dg.AssetCheckSpec(
            name=metric, asset=asset_key, description=service.threshold_description(key, metric)
        )
        for metric in THRESHOLDS
    ]
    specs.append(_breaker_check_spec(key, asset_key))
    return specs


def _health_metadata(
    found: service.IntegrationHealth, paused: bool
) -> "dict[str, dg.RawMetadataValue]":
    """The numbers the asset page plots, in the units an operator reads (hours, percents)."""
    health = found.health
    assert health is not None
    metadata: dict[str, dg.RawMetadataValue] = {
        "pending": health.pending,
        "retry_queue": health.retry_queue,
        "attempts_24h": health.attempts_24h,
        "errors_24h": health.errors_24h,
        "failing_checks": sum(o.level is not Level.OK for o in found.outcomes),
        # 1 while an operator paused its sending (`pause_integration`): plotted with the
        # backlog, it explains a queue that grows on purpose
        "paused": int(paused),
        "backlog_age_h": service.in_hours(health.backlog_age),
        "error_rate_24h_pct": service.in_percent(health.error_rate),
    }
    metadata.update(found.probe_metadata)
    return metadata


def _integration_health_asset(key: str, adapter: type[IESAdapter]) -> dg.AssetsDefinition:
    asset_key = health_key(key)
    probes = list(adapter.health_probes())

    @dg.asset(
        key=asset_key,
        group_name=GROUP,
        description=f"Health of the {key} integration: its partner APIs answer and accept our "
        "credentials (one request each), and its queues, failures and the partner's refusals "
        "are within their thresholds (each check's description says what its numbers mean "
        "and where they come from).",
        check_specs=_health_specs(key, asset_key, probes),
        required_resource_keys={"app_db", *adapter.resource_keys},
    )
    @scrub_errors
    def integration_health(
        context: dg.AssetExecutionContext,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        retag_run(context, integration=key, action="health")
        db_url = context.resources.app_db.resolved_url
        with context.resources.app_db.session() as session:
            integration_id, paused_at = session.execute(
                select(Integration.id, Integration.paused_at).where(Integration.key == key)
            ).one()
        ctx = call_context(db_url, integration_id, context.run.run_id, context.log.info)
        now = utcnow()
        clients = PartnerClients.of(context.resources, adapter.resource_keys, ctx, key)
        try:
            found = service.evaluate_integration(db_url, key, probes, clients, now)
        finally:
            clients.close()
        service.alert_changes(db_url, found.outcomes, context.run.run_id, now)
        # not alerted on change: the breaker sends its one "down" and one "back" itself
        found.outcomes.append(service.breaker_outcome(db_url, key, adapter))
        yield dg.MaterializeResult(metadata=_health_metadata(found, paused_at is not None))
        for outcome in found.outcomes:
            yield check_result(outcome)

    return integration_health


def _metrics_asset(key: str, adapter: type[IESAdapter]) -> dg.AssetsDefinition:
    followed = bool(adapter.check_statuses)  # without a status check, no conversion

    @dg.asset(
        key=metrics_key(key),
        group_name=GROUP,
        description=f"What the business reads for {key}: volume of the last 24 h by "
        f"marketplace, and over the students of the last {METRICS_DAYS} days the success, "
        "refusal and retry rates (%), dead letters, paid → registered p50/p95 (hours), calls "
        "per registration and conversion registered → enrolled by modality and campus (n/a "
        "without a status check). `n/a`: nothing to measure yet, or a figure that cannot "
        "exist. Anomalous volume and excessive retries alert at most once a day.",
    )
    @scrub_errors
    def integration_metrics(
        context: dg.AssetExecutionContext, app_db: AppDatabase
    ) -> dg.MaterializeResult:
        retag_run(context, integration=key, action="health")
        now = utcnow()
        db_url = app_db.resolved_url
        with app_db.session() as session:
            integration_id = session.scalar(select(Integration.id).where(Integration.key == key))
            (report,) = build_report(session, days=METRICS_DAYS, now=now, integration=key)
        assert integration_id is not None
        volume = service.volume_by_origin(db_url, integration_id, now)
        found = service.find_anomalies(db_url, integration_id, now)
        service.alert_anomalies(db_url, key, found, context.run.run_id, now)
        metadata: dict[str, dg.RawMetadataValue] = dict(
            service.business_metrics(report, volume, followed)
        )
        metadata["conversion"] = dg.MetadataValue.md(service.conversion_table(report, followed))
        metadata["anomalies"] = "; ".join(a.message for a in found) or "none"
        invalid = service.invalid_share_by_day(db_url, integration_id, now)
        shown = {day: service.in_percent(share) for day, share in invalid.items()}
        metadata["invalid_pct_by_day"] = dg.MetadataValue.json(shown)
        # plotted: an order-shape drift shows as a jump (issue 21)
        metadata["invalid_today_pct"] = shown.get(now.date().isoformat(), service.NA)
        return dg.MaterializeResult(metadata=metadata)

    return integration_metrics


def build_health_definitions(integrations: Mapping[str, type[IESAdapter]]) -> dg.Definitions:
    """The assets, one job and one schedule per integration, and the platform's; one sensor
    that evaluates them on start (`first_evaluation`)."""
    assets: list[dg.AssetsDefinition] = [_platform_asset()]
    job_assets = {job_name(platform.PLATFORM): [health_key(platform.PLATFORM)]}
    jobs = [
        dg.define_asset_job(
            job_name(platform.PLATFORM),
            selection=[health_key(platform.PLATFORM)],
            tags=health_tags(platform.PLATFORM),
            description="Checks the app database, the names table and the configuration.",
        )
    ]
    for key, adapter in sorted(integrations.items()):
        assets += [_integration_health_asset(key, adapter), _metrics_asset(key, adapter)]
        job_assets[job_name(key)] = [health_key(key), metrics_key(key)]
        jobs.append(
            dg.define_asset_job(
                job_name(key),
                selection=[health_key(key), metrics_key(key)],
                tags=health_tags(key),
                description=f"Checks the {key} integration and records its business metrics.",
            )
        )
    schedules = [
        dg.ScheduleDefinition(
            name=f"{job.name.removesuffix('_job')}_schedule",
            job=job,
            cron_schedule=HEALTH_CRON,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
        for job in jobs
    ]
    sensor = build_first_evaluation_sensor(jobs, job_assets)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=[sensor])
