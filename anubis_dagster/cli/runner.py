"""`anubis run`: one full pass, in process, of what the sensors would ask for now.

For operators and scripts that do not run the Dagster daemon: intake of new paid orders, then
the deliver and check runs that the daemon's planner (`delivery.planner`, behind
`due_work_sensor`) says are due now, with the same pacing, back-off after failed runs, breaker
probes and runs-in-flight rules; the one difference, on purpose, is that no run is started
beside a running one of the same flow (these runs bypass the run queue). Runs are created with
the code location's origin and executed in this process (`launching.execute_job_run`), so the
UI shows their job, partition status and re-execution like those the daemon launches. Intake
starts from the watermark intake runs commit in the app DB (the same one the sensor plans
from), so a failed run's orders are read again by the next pass, and the sensor and this
command never skip each other's orders. Delivery runs even when intake failed: subscriptions
already ingested do not wait for new orders. A paused integration (`delivery.pause`) gets no
deliver or check run; its orders are still ingested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from sqlalchemy import select

from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.due import all_statuses, next_due_at
from anubis_dagster.delivery.planner import DuePlan, plan_due_runs
from anubis_dagster.intake.orders_source import OrdersSource, missing_table_message
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.sensors import intake_run_in_flight
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.launching import execute_job_run
from anubis_dagster.settings import get_settings


def console_loggers() -> dict[str, Any]:
    """The run config's `loggers`: what the runs print on the terminal
    (`ANUBIS_CONSOLE_LOG_LEVEL`, read at each call); everything is in the run log (UI)
    whatever this says."""
    return {"console": {"config": {"log_level": get_settings().anubis_console_log_level}}}


@dataclass
class PassResult:
    runs: list[tuple[str, str, bool]] = field(default_factory=list)  # (job, run id, success)
    #: when work held back by pacing or back-off may start (epoch seconds; None: none held)
    held_until: float | None = None

    @property
    def failed(self) -> list[tuple[str, str, bool]]:
        return [r for r in self.runs if not r[2]]


def run_intake(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    result: PassResult,
    *,
    settle_seconds: float | None,
    echo: Callable[[str], None],
    silent_when_idle: bool = False,
) -> None:
    app_db = AppDatabase()
    source = OrdersSource()
    if not source.exists():  # never created here: one clear error naming the variable
        result.runs.append(("intake_job", "-", False))
        echo(f"intake: FAILED: {missing_table_message(source.url, source.table.name)}")
        return
    running = intake_run_in_flight(instance)
    if running is not None:  # the sensor's rule too: the next run starts from what it commits
        echo(f"intake: run {running.run_id[:8]} is {running.status.value}; not starting another")
        return
    intake = defs.resolve_job_def("intake_job")
    ran = False
    quiet = {"loggers": console_loggers()}
    while True:
        with app_db.session() as session:
            committed = read_watermark(session, source.watermark_name)
        batches = plan_batches(source, committed, settle_seconds=settle_seconds)
        if not batches:
            break
        for batch in batches:
            outcome = execute_job_run(
                defs,
                intake.name,
                instance,
                run_config={**batch.run_config(), **quiet},
                tags={"anubis/job": "intake", "anubis/trigger": "anubis run"},
            )
            ran = True
            result.runs.append(("intake_job", outcome.run_id, outcome.success))
            echo(
                f"intake_job {outcome.run_id[:8]}: {batch.size} orders, "
                f"{'ok' if outcome.success else 'FAILED'}"
            )
            if not outcome.success:
                return  # the committed watermark stays before the failed batch
        with app_db.session() as session:
            reached = read_watermark(session, source.watermark_name)
        if reached is None or reached < batches[-1].until:  # guard: never loop on one range
            echo("intake: the watermark did not move; stopping this pass")
            break
    if not ran and not silent_when_idle:
        echo("intake: no new paid orders")


def plan_due_work(instance: dg.DagsterInstance) -> DuePlan:
    """What `anubis run` would start now: the daemon's plan (`delivery.planner`), except that
    no run is started beside a running one of the same flow (this process runs it at once,
    outside the run queue that would hold it)."""
    with AppDatabase().session() as session:
        return plan_due_runs(session, instance, queue_behind_running=False)


def run_due_work(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    result: PassResult,
    *,
    echo: Callable[[str], None],
    silent_when_held: bool = False,
) -> None:
    """Start, here and one after the other, the runs the planner says are due; say why the
    rest waits (unless `silent_when_held`: the later passes of `run_until`)."""
    plan = plan_due_work(instance)
    if not silent_when_held:
        for key, _reason in plan.paused:
            echo(f"{key}: paused, nothing sent (anubis resume {key})")
        for why in plan.down:
            echo(f"partner down: {mask_text(why)}")
        for slot in plan.waiting:
            echo(f"{slot}: a run is still in flight; nothing started beside it")
    result.held_until = plan.held_until
    for run in plan.runs:
        label = f"{run.job_name}[{run.key}]"
        try:
            outcome = execute_job_run(
                defs,
                run.job_name,
                instance,
                run_config={"loggers": console_loggers()},
                partition_key=run.key,
                tags={**run.tags, "anubis/integration": run.key, "anubis/trigger": "anubis run"},
            )
        except dg.DagsterError as exc:  # e.g. a resource setting missing at launch
            result.runs.append((run.job_name, "-", False))
            echo(f"{label}: FAILED to start: {mask_text(str(exc))[:300]}")
            continue
        result.runs.append((run.job_name, outcome.run_id, outcome.success))
        echo(f"{label} {outcome.run_id[:8]}: {'ok' if outcome.success else 'FAILED'}")


def run_pass(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    settle_seconds: float | None = None,
    echo: Callable[[str], None] = print,
    first: bool = True,
) -> PassResult:
    result = PassResult()
    run_intake(
        defs, instance, result, settle_seconds=settle_seconds, echo=echo, silent_when_idle=not first
    )
    # even if intake failed: others are due
    run_due_work(defs, instance, result, echo=echo, silent_when_held=not first)
    return result


def seconds_until_next_work() -> float | None:
    """Seconds until the earliest scheduled work of any enabled integration that is not
    paused (None: none): a paused one's work waits for a resume, not for time."""
    app_db = AppDatabase()
    soonest: datetime | None = None
    with app_db.session() as session:
        for integration in session.scalars(
            select(Integration).where(
                Integration.enabled.is_(True), Integration.paused_at.is_(None)
            )
        ):
            adapter = adapter_class(integration.type)
            when = next_due_at(session, integration.id, all_statuses(adapter))
            if when is not None and (soonest is None or when < soonest):
                soonest = when
    if soonest is None:
        return None
    return max(0.0, (soonest - datetime.now(UTC)).total_seconds())


def run_until(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    watch_seconds: float,
    settle_seconds: float | None = None,
    echo: Callable[[str], None] = print,
) -> PassResult:
    """Passes until nothing is left to do within `watch_seconds` (for demos and scripts)."""
    deadline = time.monotonic() + watch_seconds
    total = PassResult()
    first = True
    while True:
        result = run_pass(defs, instance, settle_seconds=settle_seconds, echo=echo, first=first)
        first = False
        total.runs.extend(result.runs)
        if result.failed:
            return total
        wait = seconds_until_next_work()
        if wait is not None and wait <= 0 and result.held_until is not None:
            # work is due but held (pacing, back-off, an open breaker): wait for the earliest
            # hold to end rather than planning again every half second
            wait = result.held_until - time.time()
        remaining = deadline - time.monotonic()
        if wait is None or wait > remaining:
            return total
        time.sleep(max(0.5, min(wait, remaining)))
