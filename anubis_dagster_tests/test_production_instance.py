"""The production instance file and the run-level rules the topology relies on, in process:
the PostgreSQL instance writes events (psycopg2 pinned, no password), delivery runs carry
their queue slot and max runtime, the due sensor's handling of new students and of dead run
records, claims released when a run dies, and `anubis run`'s runs carrying the code location's
origin. The whole topology as processes: test_topology.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url

from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.delivery import sensors
from anubis_dagster.delivery.jobs import BASE_RUNTIME_SECONDS, max_runtime_seconds
from anubis_dagster.delivery.sensors import run_in_flight, runs_in_flight
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.launching import LOCATION_NAME, execute_job_run
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.conftest import ON_CI, POSTGRES_ADMIN_URL
from anubis_dagster_tests.factories import make_order
from anubis_dagster_tests.harness import Harness

ROOT = Path(__file__).resolve().parents[1]
INSTANCE_FILE = ROOT / "deploy" / "postgres" / "dagster.yaml"


@pytest.fixture
def pg_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The shipped production instance file on a fresh PostgreSQL database, with no password
    variable at all (neither DAGSTER_PG_PASSWORD nor PGPASSWORD)."""
    admin = make_url(POSTGRES_ADMIN_URL)
    name = f"anubis_instance_{int(time.time() * 1000)}"
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception as exc:
        if ON_CI:
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_FILE.read_text())
    for variable, value in {
        "DAGSTER_PG_HOST": admin.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(admin.port or 5432),
        "DAGSTER_PG_DB": name,
        "DAGSTER_PG_USER": admin.username or "postgres",
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "compute_logs"),
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    if admin.password:
        monkeypatch.setenv("PGPASSWORD", admin.password)  # a server that wants one
    else:
        monkeypatch.delenv("PGPASSWORD", raising=False)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.mark.integration
def test_the_production_instance_writes_events_on_postgresql(
    pg_instance: dg.DagsterInstance,
) -> None:
    """The failure of issue 10: every event write failed (`NOTIFY run_events, $1` under
    psycopg 3). Here a run's events are written and read back through psycopg2."""
    assert pg_instance.run_storage.__class__.__name__ == "PostgresRunStorage"
    engine = pg_instance.event_log_storage._engine  # type: ignore[attr-defined]
    assert engine.url.drivername == "postgresql+psycopg2"

    @dg.op
    def hello() -> int:
        return 1

    @dg.job
    def probe() -> None:
        hello()

    result = probe.execute_in_process(instance=pg_instance)
    assert result.success
    events = pg_instance.all_logs(result.run_id)
    assert any(e.dagster_event_type == DagsterEventType.RUN_SUCCESS for e in events)
    assert pg_instance.run_monitoring_enabled
    assert pg_instance.run_retries_enabled
    assert pg_instance.run_retries_max_retries >= 1
    assert pg_instance.run_retries_retry_on_asset_or_op_failure is False


def test_the_shipped_instance_files_agree_on_the_queue() -> None:
    """Embedded and production instances limit the same tags; health runs carry none of them."""
    production = yaml.safe_load(INSTANCE_FILE.read_text())
    embedded = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    limits = production["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == embedded["concurrency"]["runs"]["tag_concurrency_limits"]
    monitoring = production["run_monitoring"]
    # a dead worker is resolved well within 5 minutes of its start or cancel timeouts
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] + monitoring["poll_interval_seconds"] < 300
    assert monitoring["cancel_timeout_seconds"] + monitoring["poll_interval_seconds"] < 300
    assert production["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert "password" not in production["storage"]["postgres"]["postgres_db"]

    from anubis_dagster.definitions import defs as code_location

    defs = code_location()  # the lazy code location, built as Dagster builds it

    limited = {limit["key"] for limit in limits}
    deliver = defs.resolve_job_def("deliver_job")
    for key in ("kroton", "estacio"):
        assert deliver.partitioned_config is not None
        tags = deliver.partitioned_config.get_tags_for_partition_key(key)
        assert tags["anubis/slot"] == f"{key}:deliver"
        assert int(tags["dagster/max_runtime"]) > BASE_RUNTIME_SECONDS
    for scope in ("kroton", "estacio", "platform"):
        health_tags = defs.resolve_job_def(f"health_{scope}_job").tags
        assert health_tags["anubis/integration"] == scope
        assert health_tags["anubis/action"] == "health"
        assert not limited & set(health_tags), health_tags
    assert deliver.executor_def.name == "in_process"
    assert defs.resolve_job_def("intake_job").executor_def.name == "in_process"


def test_max_runtime_grows_with_the_batch_and_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    kroton = adapter_class("kroton")
    monkeypatch.setenv("API_KROTON_RATE_LIMIT", "600/60")
    monkeypatch.setenv("CATALOG_KROTON_RATE_LIMIT", "600/60")
    fast_small = max_runtime_seconds(kroton, "deliver", 10)
    fast_full = max_runtime_seconds(kroton, "deliver", 200)
    assert max_runtime_seconds(kroton, "deliver", 10_000) == fast_full  # capped at a batch
    monkeypatch.setenv("API_KROTON_RATE_LIMIT", "100/300")  # 3 s per call
    slow_full = max_runtime_seconds(kroton, "deliver", 200)
    assert BASE_RUNTIME_SECONDS < fast_small < fast_full < slow_full
    assert fast_small < 300 - 60  # a small batch is resolved within 5 minutes
    assert slow_full >= 200 * 2 * 3  # two calls per student at the quota's pace


def _sensor_tick(harness: Harness, instance: dg.DagsterInstance, cursor: str | None = None):  # type: ignore[no-untyped-def]
    sensor = next(s for s in harness.defs.sensors if s.name == "due_work_sensor")
    context = dg.build_sensor_context(
        cursor=cursor, instance=instance, resources={"app_db": AppDatabase()}
    )
    return sensor(context)


def _deliver_run(
    harness: Harness, instance: dg.DagsterInstance, status: dg.DagsterRunStatus, **tags: str
) -> dg.DagsterRun:
    return instance.create_run_for_job(
        job_def=harness.defs.resolve_job_def("deliver_job"),
        status=status,
        tags={"dagster/partition": "kroton", **tags},
        run_config=partition_run_config("delivery_request", "kroton"),
    )


def _report_started(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name), run.run_id
    )


def test_new_students_are_asked_for_at_once_retries_wait_for_the_interval(
    anubis_env: str,
) -> None:
    harness = Harness(anubis_env)
    instance = dg.DagsterInstance.ephemeral()
    harness.ingest([make_order(1)])
    first = _sensor_tick(harness, instance)
    assert isinstance(first, dg.SensorResult)
    (request,) = first.run_requests
    assert request.tags["anubis/slot"] == "kroton:deliver"
    assert int(request.tags["dagster/max_runtime"]) == max_runtime_seconds(
        adapter_class("kroton"), "deliver", 1
    )
    # a run is working on them (STARTED) and more students arrived: one more waits in line,
    # within the integration's interval (no 15-minute wait for new students)
    running = _deliver_run(harness, instance, dg.DagsterRunStatus.STARTED)
    harness.ingest([make_order(2)])
    second = _sensor_tick(harness, instance, first.cursor)
    assert isinstance(second, dg.SensorResult) and len(second.run_requests) == 1
    # ... but never two in line
    _deliver_run(harness, instance, dg.DagsterRunStatus.NOT_STARTED)
    assert isinstance(_sensor_tick(harness, instance, second.cursor), dg.SkipReason)

    # only retries due (students attempted before): they wait for `interval`
    with session_scope(anubis_env) as session:
        session.execute(update(Subscription).values(attempts=1))
    later = dg.DagsterInstance.ephemeral()
    assert isinstance(_sensor_tick(harness, later, second.cursor), dg.SkipReason)
    # outside the interval they are asked for
    asked = _sensor_tick(harness, later)
    assert isinstance(asked, dg.SensorResult)
    assert running.run_id  # the STARTED run was counted as in flight above


def test_after_a_failed_run_new_students_back_off(anubis_env: str) -> None:
    """A run that cannot start (credentials, the partner down) is not relaunched, and alerted,
    on every 5-second tick."""
    harness = Harness(anubis_env)
    instance = dg.DagsterInstance.ephemeral()
    harness.ingest([make_order(1)])
    first = _sensor_tick(harness, instance)
    assert isinstance(first, dg.SensorResult)
    failed = _deliver_run(harness, instance, dg.DagsterRunStatus.NOT_STARTED)
    instance.report_run_failed(failed, "could not start")
    assert isinstance(_sensor_tick(harness, instance, first.cursor), dg.SkipReason)
    # a minute later (backoff 1, 2, 4… minutes) they are asked for again
    later = time.time() + 61
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sensors.time, "time", lambda: later)
        again = _sensor_tick(harness, instance, first.cursor)
    assert isinstance(again, dg.SensorResult)


def test_canceling_counts_as_in_flight_and_a_run_past_its_max_runtime_does_not(
    anubis_env: str,
) -> None:
    harness = Harness(anubis_env)
    instance = dg.DagsterInstance.ephemeral()
    canceling = _deliver_run(harness, instance, dg.DagsterRunStatus.CANCELING)
    assert run_in_flight(instance, "deliver_job", "kroton")
    instance.report_run_canceled(canceling)
    assert not run_in_flight(instance, "deliver_job", "kroton")

    dead = _deliver_run(
        harness, instance, dg.DagsterRunStatus.NOT_STARTED, **{"dagster/max_runtime": "100"}
    )
    _report_started(instance, dead)
    assert runs_in_flight(instance, "deliver_job", "kroton") == (0, 1)
    # the worker died with its code server: past its max runtime (plus a monitoring poll)
    # the record no longer holds the integration
    assert runs_in_flight(instance, "deliver_job", "kroton", now=time.time() + 100 + 61) == (0, 0)


def test_claims_of_a_failed_run_are_released_at_once(anubis_env: str) -> None:
    harness = Harness(anubis_env)
    instance = dg.DagsterInstance.ephemeral()
    harness.ingest([make_order(1), make_order(2)])
    run = _deliver_run(harness, instance, dg.DagsterRunStatus.STARTED)
    until = datetime.now(UTC) + timedelta(minutes=10)
    with session_scope(anubis_env) as session:
        session.execute(update(Subscription).values(claimed_by=run.run_id, claimed_until=until))
    assert not harness.due("kroton")  # claimed: nobody else may work on them
    event = instance.report_run_failed(run, "worker killed")
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None
    sensor = next(s for s in harness.defs.sensors if s.name == "release_claims_of_failure_runs")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=failed,
        resources={"app_db": AppDatabase()},
    )
    sensor(context)  # type: ignore[operator]
    assert harness.due("kroton")


def test_anubis_run_records_the_code_location_origin(anubis_env: str, tmp_path: Path) -> None:
    """What the UI needs to show a run's job, partition status and Re-execute."""
    harness = Harness(anubis_env)
    with dg.DagsterInstance.ephemeral() as instance:
        launched = execute_job_run(
            harness.defs,
            "check_job",
            instance,
            partition_key="kroton",
            tags={"anubis/trigger": "anubis run"},
        )
        run = instance.get_run_by_id(launched.run_id)
    assert run is not None  # (it fails at start: no Kroton credentials here; not the point)
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == LOCATION_NAME
    assert run.remote_job_origin.job_name == "check_job"
    assert run.job_code_origin is not None
    assert run.tags["dagster/partition"] == "kroton"
    assert run.tags["anubis/slot"] == "kroton:check"
    assert "dagster/max_runtime" in run.tags
    assert run.tags["anubis/trigger"] == "anubis run"
