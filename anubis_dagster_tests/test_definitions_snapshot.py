"""The code location's definitions as text, compared with a committed snapshot (issue 24): a
job, sensor, schedule, partition, tag or asset check that changes by accident shows in review
as a diff of `snapshots/definitions.txt`, and this test fails until the snapshot is refreshed.

Refresh it after an intended change (and commit the file with the change):

    make definitions-snapshot

which runs `ANUBIS_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -q
anubis_dagster_tests/test_definitions_snapshot.py`. Built from the default integrations file;
values computed from the environment (a run's max runtime from the partner quotas) are left
out, so the snapshot does not depend on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from anubis_dagster.config.integrations import FILE_ENV, load_integrations
from anubis_dagster.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.txt"
UPDATE_ENV = "ANUBIS_UPDATE_SNAPSHOTS"
#: tags whose value comes from the environment, not from the definitions
COMPUTED_TAGS = {"dagster/max_runtime"}


def _tags(tags: object) -> str:
    items = dict(tags or {})  # type: ignore[call-overload]
    shown = {k: ("<computed>" if k in COMPUTED_TAGS else v) for k, v in sorted(items.items())}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> str:
    if partitions_def is None:
        return "-"
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        return "static: " + ", ".join(partitions_def.get_partition_keys())
    return type(partitions_def).__name__


def _jobs(repo: dg.RepositoryDefinition) -> Iterator[str]:
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        yield f"job {job.name}"
        yield f"  tags: {_tags(job.tags)}"
        yield f"  partitions: {_partitions(job.partitions_def)}"
        if job.partitioned_config is not None and job.partitions_def is not None:
            for key in job.partitions_def.get_partition_keys():
                partition_tags = job.partitioned_config.get_tags_for_partition_key(key)
                yield f"  partition {key} tags: {_tags(partition_tags)}"
        for node in job.nodes_in_topological_order:
            retry = node.retry_policy
            retries = f" retries={retry.max_retries}" if retry else ""
            yield f"  op {node.name}: tags {_tags(node.tags)}{retries}"


def _sensors(repo: dg.RepositoryDefinition) -> Iterator[str]:
    for sensor in sorted(repo.sensor_defs, key=lambda s: s.name):
        targets = sorted(t.job_name for t in sensor.targets if t.has_job_def)
        yield f"sensor {sensor.name} ({type(sensor).__name__})"
        yield f"  every {sensor.minimum_interval_seconds}s, {sensor.default_status.value}"
        yield f"  targets: {', '.join(targets) or '-'}"
        if isinstance(sensor, dg.RunStatusSensorDefinition):
            # Dagster keeps these private; they are what the sensor reacts to
            status = getattr(sensor, "_run_status", None)
            monitored = getattr(sensor, "_monitored_jobs", None) or []
            names = sorted(getattr(j, "name", str(j)) for j in monitored) or ["every job"]
            yield f"  on {getattr(status, 'value', status)} of: {', '.join(names)}"
        yield f"  tags: {_tags(sensor.tags)}"


def _schedules(repo: dg.RepositoryDefinition) -> Iterator[str]:
    for schedule in sorted(repo.schedule_defs, key=lambda s: s.name):
        yield (
            f"schedule {schedule.name}: {schedule.cron_schedule} "
            f"({schedule.execution_timezone or 'UTC'}) → {schedule.job_name}, "
            f"{schedule.default_status.value}"
        )


def _assets(repo: dg.RepositoryDefinition) -> Iterator[str]:
    graph = repo.asset_graph
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        deps = sorted(p.to_user_string() for p in node.parent_keys)
        yield f"asset {key.to_user_string()}"
        yield f"  group: {node.group_name}, materializable: {node.is_materializable}"
        yield f"  partitions: {_partitions(node.partitions_def)}"
        yield f"  tags: {_tags(node.tags)}"
        yield f"  deps: {', '.join(deps) or '-'}"
    for check in sorted(graph.asset_check_keys, key=lambda c: c.to_user_string()):
        yield f"asset check {check.to_user_string()}"


def render(defs: dg.Definitions) -> str:
    """Every job, sensor, schedule, asset and asset check of `defs`, one fact per line."""
    repo = defs.get_repository_def()
    lines = [
        *_jobs(repo),
        *_sensors(repo),
        *_schedules(repo),
        *_assets(repo),
        f"resources: {', '.join(sorted(repo.get_top_level_resources()))}",
    ]
    return "\n".join(lines) + "\n"


def test_the_definitions_match_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FILE_ENV, raising=False)
    text = render(build_definitions(load_integrations()))
    if os.environ.get(UPDATE_ENV):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    expected = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    assert text == expected, (
        "the definitions changed: if on purpose, refresh the snapshot with "
        "`make definitions-snapshot` and commit anubis_dagster_tests/snapshots/definitions.txt"
    )
