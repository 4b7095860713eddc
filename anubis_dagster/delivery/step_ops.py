"""The step ops of deliver_job and check_job: fix_data, prepare, register and check.

Apart from `jobs` because they are the per-step half (an adapter built for the run's
integration, `StepRunner` doing the work, its report logged, kept in the op's metadata and,
after the last step, alerted), while `jobs` holds what shapes the jobs themselves: Launchpad
settings, partitions, tags and the first op.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from contextlib import contextmanager
from typing import Any

import dagster as dg
from sqlalchemy import select

from anubis_dagster.alerts.delivery_runs import run_alerts
from anubis_dagster.alerts.webhook import send_alert
from anubis_dagster.clients.errors import PartnerProblem
from anubis_dagster.clients.http import CallContext
from anubis_dagster.core.masking import mask_text, scrub_exception
from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.adapter_store import DbAdapterStore
from anubis_dagster.delivery.attempts import call_context
from anubis_dagster.delivery.service import (
    DeliveryRequest,
    StepReport,
    StepRunner,
    release_claims,
)
from anubis_dagster.integrations.base import AdapterContext, adapter_class
from anubis_dagster.integrations.partner_api import AdapterNotConfigured, PartnerClients
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.policies import retry_unexpected_errors


def step_ops(resource_keys: set[str]) -> tuple[dg.OpDefinition, ...]:
    """fix_data, prepare, register and check. Built per code location because they need the
    resources of every adapter it serves; each only hands its step to `StepRunner`."""

    @dg.op(required_resource_keys=resource_keys)
    @retry_unexpected_errors
    def fix_data(
        context: dg.OpExecutionContext, request: DeliveryRequest
    ) -> dg.Output[DeliveryRequest]:
        """Fills data the partner requires and the order lacks (Kroton: gender)."""
        with _runner(context, context.resources.app_db, request) as (runner, call):
            return _output(context, runner.fix_data(), call, request)

    @dg.op(required_resource_keys=resource_keys)
    @retry_unexpected_errors
    def prepare(
        context: dg.OpExecutionContext, request: DeliveryRequest
    ) -> dg.Output[DeliveryRequest]:
        """The partner's step before registering: Kroton's sync_courses (catalog search for two
        valid offers), Estácio's LGPD consent. Nothing for partners without one."""
        with _runner(context, context.resources.app_db, request) as (runner, call):
            return _output(context, runner.prepare(), call, request)

    @dg.op(required_resource_keys=resource_keys)
    @retry_unexpected_errors
    def register(
        context: dg.OpExecutionContext, request: DeliveryRequest
    ) -> dg.Output[DeliveryRequest]:
        """Sends the registrations due. Marks each subscription as being sent first."""
        with _runner(context, context.resources.app_db, request) as (runner, call):
            return _output(context, runner.register(), call, request, last=True)

    @dg.op(required_resource_keys=resource_keys)
    @retry_unexpected_errors
    def check(
        context: dg.OpExecutionContext, request: DeliveryRequest
    ) -> dg.Output[DeliveryRequest]:
        """Asks the partner what became of registered students; stops at a final status."""
        with _runner(context, context.resources.app_db, request) as (runner, call):
            return _output(context, runner.check(), call, request, last=True)

    return fix_data, prepare, register, check


@contextmanager
def _runner(context: dg.OpExecutionContext, app_db: AppDatabase, request: DeliveryRequest):
    key = context.partition_key
    with app_db.session() as session:
        integration = session.scalars(select(Integration).where(Integration.key == key)).first()
        if integration is None:
            raise dg.Failure(f"no integration {key!r} in the integrations file")
        session.expunge(integration)
    call = call_context(app_db.resolved_url, integration.id, context.run_id, context.log.info)
    kind = adapter_class(integration.type)
    clients = PartnerClients.of(context.resources, kind.resource_keys, call, key)
    try:
        clients.require(kind.title)  # fail the run once, not every student one by one
        adapter = kind(
            AdapterContext(
                integration=integration,
                call=call,
                clients=clients,
                store=DbAdapterStore(app_db.resolved_url, integration.id),
                dry_run=request.dry_run,
                log=context.log.info,
            )
        )
    except AdapterNotConfigured as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    runner = StepRunner(
        db_url=app_db.resolved_url,
        integration_id=integration.id,
        adapter=adapter,
        run_id=context.run_id,
        request=request,
        log=lambda text: context.log.info(mask_text(text)),
    )
    try:
        yield runner, call
    except PartnerProblem as problem:
        # credentials refused or partner unreachable: one failed run (one alert), nobody charged
        release_claims(app_db.resolved_url, context.run_id)
        raise dg.Failure(
            description=f"{key}: batch stopped, no student charged an attempt: "
            + mask_text(problem.describe()),
            allow_retries=False,
        ) from None
    except BaseException as exc:
        # give this run's claims back at once instead of at lease expiry
        release_claims(app_db.resolved_url, context.run_id)
        # the run failure stores the exception's text: no secret or personal data in it
        scrubbed = scrub_exception(exc)
        if scrubbed is exc:
            raise
        raise scrubbed from None
    finally:
        clients.close()


def _run_still_going(context: dg.OpExecutionContext) -> bool:
    """False when run monitoring or an operator already ended this run (failed, canceling): a
    "finished" summary must never follow the failure alert of the same run."""
    run = context.instance.get_run_by_id(context.run_id)
    return run is None or run.status == dg.DagsterRunStatus.STARTED


def _report_entry(report: StepReport, stats: dict[str, float]) -> dict[str, Any]:
    """A step's report as plain data, carried to the next step and to the run's alerts."""
    return {
        "step": report.step,
        "processed": report.processed,
        "outcomes": dict(report.outcomes),
        "dead_lettered": list(report.dead_lettered),
        "held_for_review": list(report.held_for_review),
        "registered": report.registered,
        "failed": report.failed,
        "refused": report.refused,
        "examples": list(report.examples),
        "stats": stats,
        "stopped": report.stopped,
    }


def _output(
    context: dg.OpExecutionContext,
    report: StepReport,
    call: CallContext,
    request: DeliveryRequest,
    *,
    last: bool = False,
) -> dg.Output[DeliveryRequest]:
    stats = {k: round(v, 2) for k, v in sorted(call.stats.items())}
    request.reports.append(_report_entry(report, stats))
    if last and not request.dry_run and _run_still_going(context):
        for alert in run_alerts(
            job=context.job_name,
            integration=context.partition_key,
            run_id=context.run_id,
            started_at=request.started_at,
            reports=request.reports,
        ):
            send_alert(alert)
    context.log.info(
        f"{report.step}: {report.processed} subscriptions "
        + (", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "(nothing due)")
    )
    if report.dead_lettered:
        context.log.warning(
            f"{report.step}: {len(report.dead_lettered)} subscriptions exhausted their retries "
            f"and are now failed: {report.dead_lettered[:20]}"
        )
    metadata: dict[str, Any] = {
        "processed": report.processed,
        "outcomes": dg.MetadataValue.json(dict(report.outcomes)),
        "calls": int(stats.get("calls", 0)),
        "calls_by_operation": dg.MetadataValue.json(
            {k.removeprefix("calls_"): int(v) for k, v in stats.items() if k.startswith("calls_")}
        ),
        "quota_waits": int(stats.get("quota_waits", 0)),
        "quota_wait_seconds": float(stats.get("quota_wait_seconds", 0.0)),
        "http_429": int(stats.get("http_429", 0)),
        "catalog_cache_hits": int(stats.get("catalog_cache_hits", 0)),
        "dead_lettered": dg.MetadataValue.json(report.dead_lettered),
        "examples": dg.MetadataValue.json(report.examples),
    }
    if report.step == "register":
        metadata["registered"] = report.registered
    if report.stopped:
        metadata["stopped"] = report.stopped
    return dg.Output(request, metadata=metadata)
