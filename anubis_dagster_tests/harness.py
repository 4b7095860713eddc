"""Drives Anubis end to end in tests: orders in, Dagster runs in process, the app DB out."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import dagster as dg
from sqlalchemy import func, select

from anubis_dagster.config.integrations import IntegrationsFile, load_integrations
from anubis_dagster.db.models import Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.definitions import build_definitions
from anubis_dagster.delivery.due import Flow, flow_statuses, has_due
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.runtime.partitions import partition_run_config

if TYPE_CHECKING:
    from anubis_sandboxes.server import SandboxServer

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class Harness:
    def __init__(self, db_url: str, config: IntegrationsFile | None = None) -> None:
        self.db_url = db_url
        self.defs = build_definitions(config or load_integrations())
        self.instance = dg.DagsterInstance.ephemeral()
        self.source = OrdersSource()

    def ingest(self, orders: list[dict[str, Any]]) -> None:
        self.source.load(orders)
        job = self.defs.resolve_job_def("intake_job")
        for batch in plan_batches(self.source, None, settle_seconds=0):
            result = job.execute_in_process(
                run_config={**batch.run_config(), **QUIET}, instance=self.instance
            )
            assert result.success

    def run(
        self, job: str, key: str, instance: dg.DagsterInstance | None = None, **config: Any
    ) -> dg.ExecuteInProcessResult:
        # the partition's own run config (its `integration`) with the test's settings
        run_config: dict[str, Any] = {
            **QUIET,
            **partition_run_config("delivery_request", key, config),
        }
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=key,
            instance=instance or self.instance,
            run_config=run_config,
            raise_on_error=False,
        )

    def deliver(self, key: str = "kroton", **config: Any) -> dg.ExecuteInProcessResult:
        return self.run("deliver_job", key, **config)

    def check(self, key: str = "kroton", **config: Any) -> dg.ExecuteInProcessResult:
        return self.run("check_job", key, **config)

    def deliver_concurrently(self, key: str, runs: int) -> list[dg.ExecuteInProcessResult]:
        # each run in its own thread and Dagster instance, like two run workers; they share
        # only the app DB (and its leases) and the partner
        def one(_: int) -> dg.ExecuteInProcessResult:
            with dg.DagsterInstance.ephemeral() as instance:
                return self.run("deliver_job", key, instance)

        with ThreadPoolExecutor(runs) as pool:
            return list(pool.map(one, range(runs)))

    def deliver_until_settled(self, key: str = "kroton", max_runs: int = 20) -> int:
        """Deliver runs until nothing is due (retries scheduled at 0 s become due at once).

        A run may fail only the way an outage makes it: the partner's token endpoint failed
        every quick try, so the batch stopped without charging anyone (the next run goes on)."""
        for count in range(1, max_runs + 1):
            result = self.deliver(key)
            if not result.success:
                message = failure_message(result)
                assert "batch stopped, no student charged" in message, message
            if not self.due(key):
                return count
        raise AssertionError(f"{key}: work still due after {max_runs} runs")

    def due(self, key: str, check: bool = False) -> bool:
        with session_scope(self.db_url) as session:
            from anubis_dagster.db.models import Integration

            integration = session.scalars(select(Integration).where(Integration.key == key)).one()
            adapter = adapter_class(integration.type)
            flow = Flow.CHECK if check else Flow.DELIVER
            return has_due(session, integration.id, flow_statuses(adapter, flow))

    def statuses(self) -> dict[int, str]:
        """order id → status"""
        with session_scope(self.db_url) as session:
            return dict(session.execute(select(Subscription.order_id, Subscription.status)).all())

    def status_counts(self) -> Counter[str]:
        return Counter(self.statuses().values())

    def subscription(self, order_id: int) -> Subscription:
        with session_scope(self.db_url) as session:
            return session.scalars(
                select(Subscription).where(Subscription.order_id == order_id)
            ).one()

    def attempt_rows(self, *, with_subscription: bool = True) -> int:
        with session_scope(self.db_url) as session:
            query = select(func.count()).where(SubscriptionEvent.kind == "attempt")
            if with_subscription:
                query = query.where(SubscriptionEvent.subscription_id.is_not(None))
            return int(session.scalar(query) or 0)

    def events(self, order_id: int) -> list[SubscriptionEvent]:
        with session_scope(self.db_url) as session:
            sub_id = session.scalar(
                select(Subscription.id).where(Subscription.order_id == order_id)
            )
            return list(
                session.scalars(
                    select(SubscriptionEvent)
                    .where(SubscriptionEvent.subscription_id == sub_id)
                    .order_by(SubscriptionEvent.id)
                )
            )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure's message of a failed run."""
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failures[0].event_specific_data.error if failures else None  # type: ignore[union-attr]
    return error.message if error is not None else "the run failed"


def op_metadata(result: dg.ExecuteInProcessResult, op: str) -> dict[str, Any]:
    for event in result.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_key == op:
            data = event.event_specific_data.metadata  # type: ignore[union-attr]
            return {k: v.value for k, v in data.items()}
    raise AssertionError(f"no output of {op}")


def sandbox_requests(sandbox: SandboxServer) -> int:
    return sum(1 for r in sandbox.requests_log() if r["endpoint"] != "token")


def assert_attempts_match(harness: Harness, sandbox: SandboxServer) -> None:
    assert harness.attempt_rows() == sandbox_requests(sandbox)
    tokens = sum(1 for r in sandbox.requests_log() if r["endpoint"] == "token")  # no subscription
    assert harness.attempt_rows(with_subscription=False) - harness.attempt_rows() == tokens
