"""retention_job deletes a run's compute logs (its stdout/stderr files) with the run: Dagster's
`delete_run` drops the run and its events but leaves the compute log manager's files, so run
output (which may quote personal data) would outlive the run forever (issue 26)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

import anubis_dagster.maintenance.jobs as maintenance
from anubis_dagster.definitions import build_definitions


@dg.op
def shout() -> None:
    print("run output")


@dg.job
def shouting_job() -> None:
    shout()


class TwoDaysLater(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime.now(tz) + timedelta(days=2)


def _write_logs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What a run worker does: capture a step's stdout/stderr under the run's log key."""
    log_key = [run_id, "compute_logs", "shout"]
    with instance.compute_log_manager.capture_logs(log_key):
        print(f"stdout of {run_id}", flush=True)
    return log_key


def test_retention_deletes_the_compute_logs_of_the_runs_it_deletes(
    anubis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs_dir = tmp_path / "compute_logs"
    (tmp_path / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(
        str(tmp_path / "home"),
        overrides={
            "compute_logs": {
                "module": "dagster._core.storage.local_compute_log_manager",
                "class": "LocalComputeLogManager",
                "config": {"base_dir": str(logs_dir)},
            }
        },
    )
    manager = instance.compute_log_manager
    old = shouting_job.execute_in_process(instance=instance).run_id
    old_key = _write_logs(instance, old)
    assert manager.is_capture_complete(old_key)
    assert (logs_dir / old).is_dir()

    job = build_definitions().resolve_job_def("retention_job")
    config = {"ops": {"delete_old_runs": {"config": {"run_retention_days": 1}}}}
    # inside the retention window: the run and its output stay, readable as the UI reads them
    assert job.execute_in_process(instance=instance, run_config=config).success
    assert instance.get_run_by_id(old) is not None
    stdout = manager.get_log_data(old_key).stdout
    assert stdout is not None and f"stdout of {old}".encode() in stdout

    monkeypatch.setattr(maintenance, "datetime", TwoDaysLater)
    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.success
    assert instance.get_run_by_id(old) is None
    assert not (logs_dir / old).exists(), "the deleted run's output is still on disk"
    assert manager.get_log_data(old_key).stdout is None
    assert instance.get_run_by_id(result.run_id) is not None  # not itself
    instance.dispose()
