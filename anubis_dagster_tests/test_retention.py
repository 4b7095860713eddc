from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pytest

from anubis_dagster.definitions import build_definitions
from anubis_dagster.maintenance import jobs as maintenance


@dg.op
def noop() -> None:
    pass


@dg.job
def some_job() -> None:
    noop()


def test_retention_deletes_old_runs_only(anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = dg.DagsterInstance.ephemeral()
    old = some_job.execute_in_process(instance=instance).run_id
    job = build_definitions().resolve_job_def("retention_job")
    config = {"ops": {"delete_old_runs": {"config": {"run_retention_days": 1}}}}

    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.output_for_node("delete_old_runs") == 0  # nothing is a day old yet
    assert instance.get_run_by_id(old) is not None

    class TwoDaysLater(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) + timedelta(days=2)

    monkeypatch.setattr(maintenance, "datetime", TwoDaysLater)
    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.output_for_node("delete_old_runs") == 2  # the old run and the first check
    assert instance.get_run_by_id(old) is None
    assert instance.get_run_by_id(result.run_id) is not None
