"""deliver_job and check_job: the generic delivery ops, partitioned by integration.

The partition key is the integration's `key`; each step op (`step_ops`) builds that
integration's adapter and hands the work to `delivery.service.StepRunner`. Ops stay thin:
claiming, outcomes, retries and leases live in the service, the partner's rules in the adapter.

Both jobs run their ops in the run worker's own process (`in_process_executor`): the ops are
sequential, a step subprocess would only add seconds to every handoff, and a worker killed by
the platform must not leave a step process behind that keeps sending and reporting. Each
partition carries the tags the run queue and run monitoring act on (see `partition_tags`).

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field, PositiveInt, field_validator
from sqlalchemy import select

from anubis_dagster.clients.quota import Quota
from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.requeue import requeue, retry_now
from anubis_dagster.delivery.service import DeliveryRequest
from anubis_dagster.delivery.step_ops import step_ops
from anubis_dagster.integrations.base import IESAdapter
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import (
    integration_partitions,
    partition_integration,
    partitioned_schema,
    settings,
)
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import retag_run, run_tags

#: a retried run (a crashed worker, `run_retries` in dagster.yaml) re-runs every op: each is
#: idempotent, and a new worker (another pod) cannot read the dead one's op outputs
DELIVERY_TAGS = {"anubis/job": "delivery", "dagster/retry_strategy": "ALL_STEPS"}
#: the run queue's per-integration limit key (dagster.yaml): `<integration>:<flow>`
SLOT_TAG = "anubis/slot"
MAX_RUNTIME_TAG = "dagster/max_runtime"
#: the first op of deliver_job and check_job, whose config names the run's integration
REQUEST_OP = "delivery_request"
#: at most this many subscriptions per step and run (the Launchpad's `limit`)
BATCH_LIMIT = 200
#: a run's fixed cost before its first call: process start, code load, token, catalog warm-up
BASE_RUNTIME_SECONDS = 120
#: partner calls a student costs in the worst ordinary case (prepare, register, a quick retry,
#: a share of token calls); a status check is one call and a retry
CALLS_PER_STUDENT = {"deliver": 4, "check": 2}
#: no call is counted faster than this, whatever the quota allows (latency, our own writes)
MIN_SECONDS_PER_CALL = 0.5
#: the HTTP client's longest wait for a quota slot (`ApiClient.max_quota_wait`): under a quota
#: whose window is longer, a run defers the student instead of waiting, so that quota does not
#: stretch the run
MAX_QUOTA_WAIT_SECONDS = 300


def seconds_per_call(adapter: type[IESAdapter]) -> float:
    """Spacing of calls under the adapter's slowest quota a run waits for (its resources'
    `rate_limit`; quotas with windows past the longest quota wait are not waited for)."""
    spacing = 0.0
    for resource in adapter.resources().values():
        rate_limit = getattr(resource, "rate_limit", None)
        if isinstance(rate_limit, str):
            quota = Quota.parse(rate_limit, name=type(resource).__name__)
            if quota.period <= MAX_QUOTA_WAIT_SECONDS:
                spacing = max(spacing, quota.period / quota.limit)
    return spacing


def max_runtime_seconds(adapter: type[IESAdapter], flow: str, students: int) -> int:
    """How long a run of `students` may take before run monitoring ends it: a fixed start, the
    calls each student needs, and two calls per student at the slowest quota's pace. A worker
    that died with its code server is resolved after this, so the due sensor sizes it from the
    batch it asks for; the Launchpad and re-executions get a full batch."""
    students = max(1, min(students, BATCH_LIMIT))
    per_student = CALLS_PER_STUDENT[flow] * MIN_SECONDS_PER_CALL
    per_student += (2 if flow == "deliver" else 1) * seconds_per_call(adapter)
    return int(BASE_RUNTIME_SECONDS + students * per_student)


def partition_tags(
    key: str, flow: str, adapter: type[IESAdapter] | None, students: int = BATCH_LIMIT
) -> dict[str, str]:
    """Tags of a deliver/check run of integration `key`: its queue slot, its integration and
    action (`run_tags`), and its max runtime."""
    tags = {SLOT_TAG: f"{key}:{flow}", "anubis/flow": flow, **run_tags(flow, key)}
    if adapter is not None:
        tags[MAX_RUNTIME_TAG] = str(max_runtime_seconds(adapter, flow, students))
    return tags


class DeliveryConfig(dg.Config):
    """Launchpad settings shared by the delivery and check jobs (all optional). Checked when
    the run is launched (`launchpad.checked_schema`): a bad id or time is refused there."""

    subscription_ids: list[PositiveInt] = Field(
        default_factory=list,
        description="work only on these subscriptions, now, whatever their schedule",
    )
    limit: int = Field(
        default=BATCH_LIMIT, ge=0, le=BATCH_LIMIT, description="at most this many per step"
    )
    dry_run: bool = Field(
        default=False, description="build and show the payloads, masked, without sending"
    )
    requeue_ids: list[PositiveInt] = Field(
        default_factory=list,
        description="send these failed/refused subscriptions back to the step they failed at",
    )
    requeue_failed_since: str = Field(
        default="",
        description="requeue every dead-lettered subscription of this integration that failed "
        "since this time (ISO 8601, e.g. 2026-11-23T00:00:00+00:00; UTC when no offset)",
    )
    retry_now: bool = Field(
        default=False, description="make every scheduled retry of this integration due now"
    )

    @field_validator("requeue_failed_since")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        if value.strip():
            try:
                when = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    "must be an ISO 8601 time such as 2026-11-23T00:00:00+00:00"
                ) from None
            if (when if when.tzinfo else when.replace(tzinfo=UTC)) > datetime.now(UTC):
                raise ValueError("is in the future: nothing can have failed since then")
        return value.strip()

    @property
    def failed_since(self) -> datetime | None:
        if not self.requeue_failed_since:
            return None
        when = datetime.fromisoformat(self.requeue_failed_since)
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    def action(self, flow: str) -> str:
        """The run's `anubis/action`: what the operator asked for, else the flow."""
        if self.dry_run:
            return "dry_run"
        if self.requeue_ids or self.requeue_failed_since:
            return "requeue"
        if self.retry_now:
            return "retry_now"
        return flow


def _operator_actions(
    context: dg.OpExecutionContext, config: DeliveryConfig, app_db: AppDatabase
) -> None:
    """Requeue and retry-now, for real or, in a dry run, as a report of what they would do:
    a dry run changes nothing (`would_requeue`, `would_retry_now` in the step's metadata)."""
    key = context.partition_key
    since = config.failed_since
    dry = config.dry_run
    metadata: dict[str, Any] = {}
    with app_db.session() as session:
        integration = session.scalars(select(Integration).where(Integration.key == key)).one()
        if config.requeue_ids or since:
            report = requeue(
                session,
                integration.id,
                ids=list(config.requeue_ids),
                failed_since=since,
                run_id=context.run_id,
                dry_run=dry,
            )
            verb = "dry run: would requeue" if dry else "requeued"
            context.log.info(f"{verb} {len(report.requeued)}: {report.requeued[:50]}")
            for skipped in report.skipped:
                context.log.warning(f"not requeued #{skipped['id']}: {skipped['reason']}")
            metadata["would_requeue" if dry else "requeued"] = dg.MetadataValue.json(
                report.requeued
            )
            metadata["not_requeued"] = dg.MetadataValue.json(report.skipped)
        if config.retry_now:
            count = retry_now(session, integration.id, dry_run=dry)
            context.log.info(
                f"dry run: retry now would make {count} scheduled subscriptions due"
                if dry
                else f"retry now: {count} scheduled subscriptions are due now"
            )
            metadata["would_retry_now" if dry else "retried_now"] = count
    context.add_output_metadata(metadata)


def _partitioned_config(
    keys: list[str], flow: str, adapter_by_key: Mapping[str, type[IESAdapter]]
) -> dg.PartitionedConfig[dg.StaticPartitionsDefinition]:
    """Each partition's run config names its integration (a launch without one is refused,
    `partitions`); its tags put its runs in their integration's queue slot with a max
    runtime, however they are launched."""
    return integration_partitions(
        keys, REQUEST_OP, lambda key: partition_tags(key, flow, adapter_by_key.get(key))
    )


def build_delivery_jobs(
    integration_keys: Iterable[str],
    adapters: Iterable[type[IESAdapter]],
    adapter_by_key: Mapping[str, type[IESAdapter]] | None = None,
) -> tuple[dg.JobDefinition, dg.JobDefinition]:
    """deliver_job and check_job for these integrations and adapters (whose resource keys the
    ops need). `adapter_by_key` sizes each partition's max runtime and leaves integrations
    whose partner has no status check out of check_job's partitions (a partition that can
    never run would show Missing forever)."""
    keys = sorted(set(integration_keys))
    adapters = list(adapters)
    resource_keys = {"app_db"}.union(*(a.resource_keys for a in adapters))
    by_key = dict(adapter_by_key or {})
    check_keys = [k for k in keys if k not in by_key or by_key[k].check_statuses]

    delivery_request = _delivery_request_op(keys)
    fix_data, prepare, register, check = step_ops(resource_keys)

    @dg.job(
        config=_partitioned_config(keys, "deliver", by_key),
        executor_def=dg.in_process_executor,
        tags={**DELIVERY_TAGS, "anubis/flow": "deliver", "anubis/action": "deliver"},
        description="Due subscriptions of one integration: fix data → prepare → register.",
    )
    def deliver_job() -> None:
        register(prepare(fix_data(delivery_request())))

    @dg.job(
        config=_partitioned_config(check_keys, "check", by_key),
        executor_def=dg.in_process_executor,
        tags={**DELIVERY_TAGS, "anubis/flow": "check", "anubis/action": "check"},
        description="Registered subscriptions of one integration: status at the partner.",
    )
    def check_job() -> None:
        check(delivery_request())

    return deliver_job, check_job


def _delivery_request_op(keys: list[str]) -> dg.OpDefinition:
    """Built per code location because its config schema names the integrations (the
    partitions); the first op of both jobs, so the operator's settings apply once per run."""

    @dg.op(
        config_schema=partitioned_schema(DeliveryConfig, keys),
        description="Reads the Launchpad settings; applies requeue and retry-now first (a dry "
        "run only reports what they would do).",
    )
    @scrub_errors
    def delivery_request(context: dg.OpExecutionContext, app_db: AppDatabase) -> DeliveryRequest:
        key = partition_integration(context)  # refused: nothing done
        config = settings(DeliveryConfig, context.op_config)
        flow = context.run.tags.get("anubis/flow", "deliver")
        retag_run(context, action=config.action(flow))
        if config.requeue_ids or config.requeue_failed_since or config.retry_now:
            _operator_actions(context, config, app_db)
        with app_db.session() as session:
            paused = session.scalar(select(Integration.paused_at).where(Integration.key == key))
        limit = config.limit
        if paused is not None and not config.dry_run:
            # launched by hand, re-executed or retried after a crash while paused: paused means
            # nothing is sent; a dry run still previews what resuming will send
            context.log.warning(
                f"{key} is paused: this run sends nothing (resume it first; a dry run shows "
                "what would be sent)"
            )
            limit = 0
        return DeliveryRequest(
            subscription_ids=list(config.subscription_ids), limit=limit, dry_run=config.dry_run
        )

    return delivery_request
