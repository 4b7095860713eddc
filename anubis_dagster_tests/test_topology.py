"""The production topology, proven: gRPC code server + daemon + webserver on a PostgreSQL
instance (deploy/postgres/dagster.yaml), app DB and orders on PostgreSQL, the sandboxes over
HTTP. Marker `topology` (not in `make test`; `.ci/run` runs it after the suite).

One topology, phases in sequence (it takes about 6 minutes):
  (a) 100 orders paid in waves: every valid student registered once, paid → the sandbox's own
      receipt p95 ≤ 45 s and max ≤ 90 s per integration, with default settings;
  (b) the code server and a Kroton deliver run killed together (a container crash), and an
      Estácio run worker killed alone: each run resolved by monitoring within 5 minutes, one
      failure alert and no "finished" summary for it, the rest registered, no duplicates;
  (d) a requeue launched through the webserver's GraphQL API with the Launchpad's config and
      the partition's tags takes effect;
  (c) an intake run that never starts (its worker frozen before it reports) is failed by run
      monitoring and its orders are ingested and delivered by the next run;
  (e) Terminate through the GraphQL API, as the UI's button: a live deliver run stops and ends
      CANCELED (not retried to SUCCESS), and a run whose code server and worker were killed
      ends CANCELED at once instead of "Unable to terminate"; their students are registered
      by later runs, once each;
and no run is left STARTED/CANCELING.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from anubis_dagster.db.models import Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster_tests.conftest import ON_CI, POSTGRES_ADMIN_URL
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER, make_cpf, make_order
from anubis_dagster_tests.topology import (
    REGISTER_ENDPOINTS,
    Topology,
    percentile,
    running_topology,
    wait_for,
    write_report,
)

pytestmark = [pytest.mark.topology, pytest.mark.integration, pytest.mark.slow]

INVALID_CPF = "11111111111"
WAVES = 5
ORDERS_PER_WAVE = 20
WAVE_GAP_SECONDS = 15
P95_LIMIT = 45.0
MAX_LIMIT = 90.0
RESOLVE_LIMIT = 300.0
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _admin_url() -> str:
    url = make_url(POSTGRES_ADMIN_URL)
    try:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL not reachable at {url.render_as_string()}: {exc}"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url.render_as_string(hide_password=False)


def _instance(topology: Topology, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """The same PostgreSQL instance the processes use, read from the test."""
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER"):
        monkeypatch.setenv(name, topology.env[name])
    if "PGPASSWORD" in topology.env:
        monkeypatch.setenv("PGPASSWORD", topology.env["PGPASSWORD"])
    return dg.DagsterInstance.from_config(topology.env["DAGSTER_HOME"])


def _first_receipts(topology: Topology, role: str) -> dict[str, float]:
    """cpf → when the sandbox logged that student's first registration request."""
    first: dict[str, float] = {}
    for entry in topology.sandbox_log(role):
        if entry["endpoint"] in REGISTER_ENDPOINTS and entry["cpf"]:
            first.setdefault(entry["cpf"], float(entry["ts"]))
    return first


def _wait_registered(topology: Topology, role: str, cpfs: set[str], timeout: float) -> None:
    def all_in() -> bool:
        per_cpf = topology.sandbox_stats(role)["registrations_per_cpf"]
        return cpfs <= set(per_cpf)

    wait_for(all_in, timeout, f"{len(cpfs)} {role} registrations", 1)


def _runs(
    instance: dg.DagsterInstance, job: str, partition: str | None = None, since: float = 0
) -> list[dg.RunRecord]:
    tags = {"dagster/partition": partition} if partition else None
    return [
        r
        for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job, tags=tags))
        if r.create_timestamp.timestamp() >= since
    ]


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def _finished(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def _ended_at(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    return (record.end_time if record else None) or time.time()


def _timeline(
    instance: dg.DagsterInstance, records: list[dg.RunRecord], origin: float
) -> list[str]:
    """Each run as `job[partition] created +s, started +s, ended +s` (seconds from `origin`)."""
    lines = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        created = record.create_timestamp.timestamp() - origin
        started = (record.start_time or float("nan")) - origin
        ended = (record.end_time or float("nan")) - origin
        where = run.tags.get("dagster/partition", "")
        lines.append(
            f"{run.job_name}[{where}] {run.status.value} created {created:.1f} "
            f"started {started:.1f} ended {ended:.1f}"
        )
    return lines


# -- (a) --------------------------------------------------------------------------------------
def _pay_in_waves(topology: Topology) -> tuple[dict[str, dict[str, float]], list[str]]:
    """100 orders in waves: Kroton and Estácio students, and a few invalid ones. Returns
    integration → {cpf: paid at} for the valid ones, and the invalid CPFs."""
    paid: dict[str, dict[str, float]] = {"kroton": {}, "estacio": {}}
    invalid: list[str] = []
    order_id = 0
    for wave in range(WAVES):
        now = datetime.now(UTC)
        orders = []
        for i in range(ORDERS_PER_WAVE):
            order_id += 1
            if i % 10 == 9:  # two invalid per wave: same-digit CPF
                orders.append(make_order(order_id, cpf=INVALID_CPF, updated_at=now))
                invalid.append(INVALID_CPF)
                continue
            role = "kroton" if i % 2 == 0 else "estacio"
            offer = KROTON_OFFER if role == "kroton" else ESTACIO_OFFER
            orders.append(make_order(order_id, offer=offer, updated_at=now))
            paid[role][make_cpf(order_id)] = now.timestamp()
        topology.load_orders(orders)
        if wave < WAVES - 1:
            time.sleep(WAVE_GAP_SECONDS)
    return paid, invalid


def _latency(topology: Topology, role: str, paid: dict[str, float]) -> dict[str, float]:
    receipts = _first_receipts(topology, role)
    values = [receipts[cpf] - at for cpf, at in paid.items()]
    return {
        "students": len(values),
        "p50": round(percentile(values, 0.50), 1),
        "p95": round(percentile(values, 0.95), 1),
        "max": round(max(values), 1),
    }


# -- (b) --------------------------------------------------------------------------------------
def _start_slow_batch(
    topology: Topology, instance: dg.DagsterInstance, role: str, first_id: int, count: int
) -> tuple[set[str], dg.RunRecord, int]:
    """Orders for `role` at a slow partner; returns their CPFs, the deliver run working on them
    once it has sent a couple, and the pid of that run's worker."""
    topology.configure_sandbox(role, latency_ms=600)
    offer = KROTON_OFFER if role == "kroton" else ESTACIO_OFFER
    since = time.time()
    ids = range(first_id, first_id + count)
    topology.load_orders([make_order(i, offer=offer, updated_at=datetime.now(UTC)) for i in ids])
    cpfs = {make_cpf(i) for i in ids}

    def sending() -> dg.RunRecord | None:
        started = [
            r
            for r in _runs(instance, "deliver_job", role, since)
            if r.dagster_run.status == dg.DagsterRunStatus.STARTED
        ]
        sent = cpfs & set(topology.sandbox_stats(role)["registrations_per_cpf"])
        return started[0] if started and len(sent) >= 2 else None

    record = wait_for(sending, 300, f"a {role} deliver run sending", 0.2)
    assert record.start_time is not None
    # its worker: the code server's child started last before the run reported STARTED
    workers = [(pid, at) for pid, at in topology.run_workers() if at <= record.start_time + 1]
    assert workers, "no run worker found under the code server"
    pid = max(workers, key=lambda w: w[1])[0]
    return cpfs, record, pid


def _alerted(topology: Topology, run_id: str) -> bool:
    return _alerts_about(topology, run_id)[0] >= 1


def _alerts_about(topology: Topology, run_id: str) -> tuple[int, int]:
    """(failure alerts, "finished" summaries) that name this run."""
    about = [a for a in topology.alerts() if run_id in a]
    return (
        sum(1 for a in about if "Run failed" in a),
        sum(1 for a in about if "finished" in a),
    )


# -- (d) --------------------------------------------------------------------------------------
REPOSITORY = {"repositoryLocationName": "anubis", "repositoryName": "__repository__"}
PARTITION_TAGS = """
query PartitionTags($repositorySelector: RepositorySelector!, $partition: String!) {
  partitionSetOrError(repositorySelector: $repositorySelector,
                      partitionSetName: "deliver_job_partition_set") {
    ... on PartitionSet { partition(partitionName: $partition) {
        tagsOrError { ... on PartitionTags { results { key value } } }
        runConfigOrError { ... on PartitionRunConfig { yaml } } } }
  }
}"""
LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def _launch_like_the_launchpad(topology: Topology, partition: str, config: dict[str, Any]) -> str:
    """What the Launchpad does: the partition's tags and run config (which names its
    integration), then launchRun with that config, edited."""
    data = topology.graphql(
        PARTITION_TAGS, {"repositorySelector": REPOSITORY, "partition": partition}
    )
    found = data["partitionSetOrError"]["partition"]
    tags = found["tagsOrError"]["results"]
    assert {"key": "anubis/slot", "value": f"{partition}:deliver"} in tags
    run_config = yaml.safe_load(found["runConfigOrError"]["yaml"])
    run_config["ops"]["delivery_request"]["config"].update(config)
    result = topology.graphql(
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {**REPOSITORY, "jobName": "deliver_job"},
                "runConfigData": run_config,
                "executionMetadata": {"tags": tags},
                "mode": "default",
            }
        },
    )["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def _subscription(topology: Topology, order_id: int) -> Subscription | None:
    with session_scope(topology.env["ANUBIS_DATABASE_URL"]) as session:
        return session.scalars(
            select(Subscription).where(Subscription.order_id == order_id)
        ).first()


# -- (e) --------------------------------------------------------------------------------------
TERMINATE_RUN = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}"""
#: a terminated worker stops at its next request or statement; far less than cancel_timeout
TERMINATE_LIMIT = 60.0


def _terminate(topology: Topology, instance: dg.DagsterInstance, run_id: str) -> float:
    """Press Terminate on the run; returns how long it took to end (it must end CANCELED)."""
    asked = time.time()
    result = topology.graphql(TERMINATE_RUN, {"runId": run_id})["terminateRun"]
    assert result["__typename"] == "TerminateRunSuccess", result
    wait_for(functools.partial(_finished, instance, run_id), TERMINATE_LIMIT, "terminate", 0.5)
    assert _status(instance, run_id) == dg.DagsterRunStatus.CANCELED
    return round(_ended_at(instance, run_id) - asked, 1)


# -- (c) --------------------------------------------------------------------------------------
def _freeze_next_intake_worker(
    topology: Topology, instance: dg.DagsterInstance, since: float, timeout: float = 240
) -> tuple[str, int]:
    """Stop (SIGSTOP) the worker of the next intake run before it reports STARTED: a run that
    was launched and never started, as when its container cannot start."""
    known = {pid for pid, _ in topology.run_workers()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, _ in topology.run_workers():
            if pid in known:
                continue
            known.add(pid)
            os.kill(pid, signal.SIGSTOP)
            starting = [
                r
                for r in instance.get_run_records(
                    filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING])
                )
                if r.create_timestamp.timestamp() >= since
            ]
            if len(starting) == 1 and starting[0].dagster_run.job_name == "intake_job":
                return starting[0].dagster_run.run_id, pid
            os.kill(pid, signal.SIGCONT)  # another run's worker: let it be
        time.sleep(0.05)
    raise AssertionError("no intake run worker appeared")


def test_production_topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    began = time.monotonic()
    report: dict[str, Any] = {}
    with running_topology(tmp_path, _admin_url()) as topology:
        instance = _instance(topology, monkeypatch)
        report["startup_seconds"] = round(time.monotonic() - began, 1)

        # (a) 100 orders in waves; latency from paid to the sandbox's receipt
        phase_a = time.time()
        paid, invalid = _pay_in_waves(topology)
        for role in ("kroton", "estacio"):
            _wait_registered(topology, role, set(paid[role]), 300)
        report["latency"] = {role: _latency(topology, role, paid[role]) for role in paid}
        runs_a = [
            r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= phase_a
        ]
        by_job: dict[str, int] = {}
        for record in runs_a:
            by_job[record.dagster_run.job_name] = by_job.get(record.dagster_run.job_name, 0) + 1
        report["runs_phase_a"] = by_job
        report["runs_per_order"] = round(
            sum(by_job.get(j, 0) for j in ("intake_job", "deliver_job"))
            / (WAVES * ORDERS_PER_WAVE),
            3,
        )
        report["timeline_phase_a"] = _timeline(instance, runs_a, phase_a)
        print(report)  # the latency limits are asserted at the end: every phase runs first
        for role in ("kroton", "estacio"):
            assert not set(invalid) & set(_first_receipts(topology, role)), "invalid order sent"

        # (b1) a container crash: the code server and a Kroton run killed together
        kroton_cpfs, crashed, worker = _start_slow_batch(topology, instance, "kroton", 201, 12)
        os.killpg(topology.processes["code_server"].pid, signal.SIGKILL)  # its workers too
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
        crashed_at = time.time()
        topology.start_code_server()
        topology.configure_sandbox("kroton", latency_ms=0)

        # (b2) an Estácio run worker killed alone, on the restarted code server
        wait_for(topology.location_loaded, 180, "the code location after the restart", 1)
        estacio_cpfs, killed, worker = _start_slow_batch(topology, instance, "estacio", 301, 12)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.time()
        topology.configure_sandbox("estacio", latency_ms=0)

        # (d) meanwhile, a refused student requeued through the GraphQL API, as the Launchpad
        topology.load_orders([make_order(501, rg=None, updated_at=datetime.now(UTC))])
        refused = wait_for(
            lambda: (s := _subscription(topology, 501)) and s.status == "register_failed" and s,
            300,
            "the refused student",
            1,
        )
        refused_cpf = make_cpf(501)

        def sent_for_refused() -> int:
            return sum(
                1
                for e in topology.sandbox_log("kroton")
                if e["cpf"] == refused_cpf and e["endpoint"] in REGISTER_ENDPOINTS
            )

        sent_before = sent_for_refused()
        requeue_run = _launch_like_the_launchpad(topology, "kroton", {"requeue_ids": [refused.id]})
        wait_for(
            lambda: _status(instance, requeue_run) == dg.DagsterRunStatus.SUCCESS,
            300,
            "the requeue run",
            1,
        )
        with session_scope(topology.env["ANUBIS_DATABASE_URL"]) as session:
            requeue_events = session.scalars(
                select(SubscriptionEvent).where(
                    SubscriptionEvent.subscription_id == refused.id,
                    SubscriptionEvent.operation_name == "requeue",
                )
            ).all()
            assert [e.dagster_run_id for e in requeue_events] == [requeue_run]
        assert sent_for_refused() == sent_before + 1, "the requeued student was not sent again"

        # (b) both dead runs resolved by monitoring, one alert each, no summary after it
        for run_id, at, what in (
            (killed.dagster_run.run_id, killed_at, "worker killed"),
            (crashed.dagster_run.run_id, crashed_at, "code server and worker killed"),
        ):
            wait_for(
                functools.partial(_finished, instance, run_id),
                RESOLVE_LIMIT - (time.time() - at),
                f"monitoring to resolve the run ({what})",
                2,
            )
            report[f"resolved_seconds ({what})"] = round(_ended_at(instance, run_id) - at, 1)
            assert _status(instance, run_id) in (
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED,
            )
            wait_for(functools.partial(_alerted, topology, run_id), 60, "its alert")
        _wait_registered(topology, "kroton", kroton_cpfs, 300)
        _wait_registered(topology, "estacio", estacio_cpfs, 300)
        for run_id in (killed.dagster_run.run_id, crashed.dagster_run.run_id):
            assert _alerts_about(topology, run_id) == (1, 0), topology.alerts()

        # (c) an intake run that never starts loses no order
        since = time.time()
        late_ids = range(601, 606)
        topology.load_orders([make_order(i, updated_at=datetime.now(UTC)) for i in late_ids])
        frozen_run, frozen_pid = _freeze_next_intake_worker(topology, instance, since)
        try:
            wait_for(
                lambda: _status(instance, frozen_run) == dg.DagsterRunStatus.FAILURE,
                120,
                "monitoring to fail the run that never started",
                1,
            )
        finally:
            os.kill(frozen_pid, signal.SIGKILL)
        _wait_registered(topology, "kroton", {make_cpf(i) for i in late_ids}, 300)

        # (e1) Terminate a live deliver run at a slow partner: it stops, CANCELED
        kroton_late, live, _ = _start_slow_batch(topology, instance, "kroton", 701, 12)
        live_id = live.dagster_run.run_id
        report["terminate_live_seconds"] = _terminate(topology, instance, live_id)
        sent_by_live = {
            e["cpf"]
            for e in topology.sandbox_log("kroton")
            if e["cpf"] in kroton_late and e["endpoint"] in REGISTER_ENDPOINTS
        }
        assert len(sent_by_live) < len(kroton_late), "the terminated run sent its whole batch"
        topology.configure_sandbox("kroton", latency_ms=0)

        # (e2) Terminate a run whose code server and worker died: CANCELED now, not CANCELING
        estacio_late, orphan, worker = _start_slow_batch(topology, instance, "estacio", 801, 12)
        os.killpg(topology.processes["code_server"].pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
        report["terminate_dead_seconds"] = _terminate(topology, instance, orphan.dagster_run.run_id)
        topology.start_code_server()
        topology.configure_sandbox("estacio", latency_ms=0)
        wait_for(topology.location_loaded, 180, "the code location after the restart", 1)
        _wait_registered(topology, "kroton", kroton_late, 300)
        _wait_registered(topology, "estacio", estacio_late, 300)

        # nothing registered twice, and no run left unfinished
        for role in ("kroton", "estacio"):
            per_cpf = topology.sandbox_stats(role)["registrations_per_cpf"]
            duplicates = {cpf: n for cpf, n in per_cpf.items() if n > 1 and cpf != refused_cpf}
            assert not duplicates, (role, duplicates)
        wait_for(
            lambda: not instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED)),
            120,
            "every run to finish",
            2,
        )
        report["total_seconds"] = round(time.monotonic() - began, 1)
        report["alerts"] = len(topology.alerts())
        print(report)
        # not ANUBIS_*: `anubis doctor` (and the configuration health check) flags unknown ones
        write_report(os.environ.get("TOPOLOGY_REPORT"), report)
        for role, numbers in report["latency"].items():
            assert numbers["p95"] <= P95_LIMIT, (role, numbers)
            assert numbers["max"] <= MAX_LIMIT, (role, numbers)
