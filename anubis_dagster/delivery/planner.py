"""The one planner of due work: which deliver and check runs should start now.

`due_work_sensor` (the daemon) and `anubis run` (`runner.run_due_work`) both ask
`plan_due_runs`, so the same app DB and run storage give the same runs. Its rules, per enabled
integration and flow (`delivery.due.Flow`):

- paused (`delivery.pause`): no run; named in the plan (`paused`);
- a circuit breaker open (issue 21): no run, except one probe run of the deliver flow when a
  probe is due and no deliver run is in flight; the partner's outage is named (`down`);
- new students (never attempted) are asked for at once, unless the flow's latest runs failed
  (back-off: 1, 2, 4… minutes after the last failure, capped at the integration's `interval`);
- retries and status checks wait for `interval` after the last run asked for (pacing);
- while a run of the flow is queued, none is added; while one is running, one more may wait
  in the queue for new students (`queue_behind_running`; dagster.yaml's `anubis/slot` limit
  holds it until the slot is free).

Pacing remembers the last run asked for per slot from two places: the run storage (the latest
deliver/check run of the partition that is not a breaker probe, whoever launched it) and, for
the sensor, its cursor (`last_asked`: a request the daemon has not turned into a run yet).

A run record never holds its integration forever: a CANCELING run counts as in flight (it may
still be sending), but a run past its `dagster/max_runtime` plus a monitoring poll is treated
as dead (run monitoring is about to fail it), so the planner never waits on a record alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC

import dagster as dg
from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.breaker import probe_due, probe_lost
from anubis_dagster.core.clock import utcnow
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import Integration
from anubis_dagster.delivery.breaker import open_breakers, why_stopped
from anubis_dagster.delivery.due import Flow, count_due, flow_statuses, has_due
from anubis_dagster.delivery.jobs import BATCH_LIMIT, MAX_RUNTIME_TAG, partition_tags
from anubis_dagster.integrations.base import IESAdapter, adapter_class

WAITING_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]
RUNNING_STATUSES = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
ACTIVE_STATUSES = WAITING_STATUSES + RUNNING_STATUSES
#: a run past its max runtime by more than this is not waited for (monitoring polls ~20 s)
DEAD_RUN_GRACE_SECONDS = 60
#: after a failed run, new students wait this long (doubling per failure in a row)
FAILURE_BACKOFF_SECONDS = 60
FAILURE_BACKOFF_RUNS = 5
#: the tag of a run asked for only to probe an open breaker (it does not pace retries)
PROBE_TAG = "anubis/breaker_probe"


@dataclass(frozen=True)
class PlannedRun:
    """One run to start: a deliver or check run of one integration (its partition)."""

    key: str
    flow: Flow
    students: int
    tags: Mapping[str, str]
    probe: bool = False

    @property
    def job_name(self) -> str:
        return self.flow.job_name

    @property
    def slot(self) -> str:
        return f"{self.key}:{self.flow}"

    def run_key(self, now: float) -> str:
        return f"{self.key}:breaker_probe:{int(now)}" if self.probe else f"{self.slot}:{int(now)}"


@dataclass
class DuePlan:
    """What should run now, and why the rest does not (for the tick's skip reason)."""

    runs: list[PlannedRun] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # slots whose run is still in flight
    paused: list[tuple[str, str | None]] = field(default_factory=list)  # (key, reason)
    down: list[str] = field(default_factory=list)  # why a partner's breaker is open
    #: when the earliest slot held back by pacing or back-off may be asked for (epoch seconds)
    held_until: float | None = None

    def hold(self, until: float) -> None:
        self.held_until = until if self.held_until is None else min(self.held_until, until)

    def skip_reason(self) -> str:
        reasons = [f"runs still in flight: {', '.join(self.waiting)}"] if self.waiting else []
        if self.paused:
            named = [key + (f" ({why})" if why else "") for key, why in self.paused]
            reasons.append(f"paused: {', '.join(named)}")
        if self.down:
            reasons.append(f"partner down: {'; '.join(self.down)}")
        return mask_text("; ".join(reasons)) if reasons else "nothing due"


def _past_max_runtime(record: dg.RunRecord, now: float) -> bool:
    limit = record.dagster_run.tags.get(MAX_RUNTIME_TAG)
    if not limit or record.start_time is None:
        return False
    try:
        return now - record.start_time > float(limit) + DEAD_RUN_GRACE_SECONDS
    except ValueError:
        return False


def runs_in_flight(
    instance: dg.DagsterInstance, job_name: str, partition: str, now: float | None = None
) -> tuple[int, int]:
    """(waiting, running) runs of this job and partition that are still alive."""
    now = time.time() if now is None else now
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name, statuses=ACTIVE_STATUSES, tags={"dagster/partition": partition}
        ),
        limit=20,
    )
    waiting = running = 0
    for record in records:
        status = record.dagster_run.status
        if status in WAITING_STATUSES:
            waiting += 1
        elif not _past_max_runtime(record, now):
            running += 1
    return waiting, running


def run_in_flight(instance: dg.DagsterInstance, job_name: str, partition: str) -> bool:
    """Whether a live run of this job and partition is queued, starting, running or canceling."""
    return sum(runs_in_flight(instance, job_name, partition)) > 0


@dataclass(frozen=True)
class RecentRuns:
    """The latest runs of one job and partition, newest first (any status, any launcher)."""

    records: Sequence[dg.RunRecord]

    @classmethod
    def read(cls, instance: dg.DagsterInstance, job_name: str, partition: str) -> RecentRuns:
        return cls(
            instance.get_run_records(
                filters=dg.RunsFilter(job_name=job_name, tags={"dagster/partition": partition}),
                limit=FAILURE_BACKOFF_RUNS,
            )
        )

    def backoff_until(self, interval_seconds: float) -> float | None:
        """When new students may be asked for again after failed runs (None: no back-off):
        1, 2, 4… minutes after the last failure (capped at the integration's `interval`), so
        a run that cannot start (missing credentials, the partner down) is not relaunched, and
        alerted, on every tick, while one failed launch delays nobody for long."""
        failures = 0
        for record in self.records:
            if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
                break
            failures += 1
        if not failures:
            return None
        latest = self.records[0]
        ended = latest.end_time or latest.update_timestamp.timestamp()
        return ended + min(interval_seconds, FAILURE_BACKOFF_SECONDS * 2 ** (failures - 1))

    def last_asked(self) -> float:
        """When the latest run that paces retries was created (0: none among the latest)."""
        for record in self.records:
            if record.dagster_run.tags.get(PROBE_TAG) != "true":
                created = record.create_timestamp
                if created.tzinfo is None:
                    created = created.replace(tzinfo=UTC)
                return created.timestamp()
        return 0.0


def _probe_run(
    session: Session, instance: dg.DagsterInstance, integration: Integration, plan: DuePlan
) -> bool:
    """Plan a probe run if a breaker of this integration is open (True: the partner is down,
    no other run for it)."""
    adapter = adapter_class(integration.type)
    broken = open_breakers(session, adapter)
    if not broken:
        return False
    now = utcnow()
    if any(probe_due(s, now) or probe_lost(s, now) for s in broken.values()) and not (
        run_in_flight(instance, Flow.DELIVER.job_name, integration.key)
    ):
        tags = partition_tags(integration.key, Flow.DELIVER.value, adapter, 1)
        tags[PROBE_TAG] = "true"
        plan.runs.append(PlannedRun(integration.key, Flow.DELIVER, 1, tags, probe=True))
        return True
    plan.down += [why_stopped(adapter, api, s) for api, s in sorted(broken.items())]
    for state in broken.values():
        if state.next_probe_at is not None:
            plan.hold(state.next_probe_at.timestamp())
    return True


def _plan_flow(
    session: Session,
    instance: dg.DagsterInstance,
    integration: Integration,
    adapter: type[IESAdapter],
    flow: Flow,
    plan: DuePlan,
    *,
    last_asked: float,
    now: float,
    queue_behind_running: bool,
) -> None:
    statuses = flow_statuses(adapter, flow)
    interval = integration.interval * 60
    fresh = (
        flow is Flow.DELIVER
        and count_due(session, integration.id, statuses, fresh_only=True, limit=1) > 0
    )
    if not fresh:
        if now < last_asked + interval:  # the sensor's own memory: no query needed
            plan.hold(last_asked + interval)
            return
        if not has_due(session, integration.id, statuses):
            return
    recent = RecentRuns.read(instance, flow.job_name, integration.key)
    if fresh:  # new students skip the pacing, not the back-off after failed runs
        backoff = recent.backoff_until(interval)
        if backoff is not None and now < backoff:
            fresh = False
            plan.hold(backoff)
    if not fresh:  # retries and checks wait for `interval` after the last run asked for
        paced_until = max(last_asked, recent.last_asked()) + interval
        if now < paced_until:
            plan.hold(paced_until)
            return
    queued, running = runs_in_flight(instance, flow.job_name, integration.key, now)
    if queued or (running and not (fresh and queue_behind_running)):
        plan.waiting.append(f"{integration.key}:{flow}")
        return
    students = count_due(session, integration.id, statuses, limit=BATCH_LIMIT)
    tags = partition_tags(integration.key, flow.value, adapter, students)
    plan.runs.append(PlannedRun(integration.key, flow, students, tags))


def plan_due_runs(
    session: Session,
    instance: dg.DagsterInstance,
    *,
    last_asked: Mapping[str, float] | None = None,
    now: float | None = None,
    queue_behind_running: bool = True,
) -> DuePlan:
    """The deliver/check runs to start now, one per integration and flow at most.

    `last_asked` (slot → epoch seconds): runs asked for that may not be in the run storage yet
    (the sensor's cursor); `anubis run` has none. `queue_behind_running`: whether a run for new
    students may be asked for while one of the flow is running. The daemon's run queue holds
    it until the slot is free (True); `anubis run` executes its runs at once in its own
    process, outside the queue, so it must not start one beside a running one (False)."""
    now = time.time() if now is None else now
    plan = DuePlan()
    asked = last_asked or {}
    for integration in session.scalars(
        select(Integration).where(Integration.enabled.is_(True)).order_by(Integration.id)
    ):
        if integration.paused_at is not None:
            plan.paused.append((integration.key, integration.pause_reason))
            continue
        if _probe_run(session, instance, integration, plan):
            continue
        adapter = adapter_class(integration.type)
        for flow in Flow:
            _plan_flow(
                session,
                instance,
                integration,
                adapter,
                flow,
                plan,
                last_asked=asked.get(f"{integration.key}:{flow}", 0.0),
                now=now,
                queue_behind_running=queue_behind_running,
            )
    return plan
