"""One code location name everywhere (issue 23, item 1): a run `anubis run` created re-executes
from the UI that `make ui` starts, because both name the location `anubis`.

The workspace file is loaded by Dagster's own workspace loading (a code server process, as
`dagster dev -w workspace.yaml` starts), and the re-execution goes through the GraphQL mutation
the UI's Re-execute button sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_graphql.client.query import LAUNCH_PIPELINE_REEXECUTION_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from anubis_dagster.alerts.sensors import launched_by
from anubis_dagster.runtime.launching import LAUNCHED_BY_TAG, LOCATION_NAME, execute_job_run
from anubis_dagster_tests.harness import Harness
from anubis_sandboxes.kroton import KrotonSandbox

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """Launches queue the run (what the UI does under the daemon's run queue)."""
    coordinator = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        yield instance


def test_make_ui_loads_the_workspace_file_from_the_instance_home() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\nui:", 1)[1].split("\n\n", 1)[0]
    command = re.search(r"dagster dev (.*)'", recipe)
    assert command is not None, recipe
    assert command.group(1) == "-w $(CURDIR)/workspace.yaml"  # not `-m`: that names it apart
    assert 'cd "$(DAGSTER_HOME)"' in recipe  # no "dagster.yaml will not be used" warning
    for script in (ROOT / "scripts").iterdir():
        assert "dagster dev -m" not in script.read_text(), script


def test_a_run_of_anubis_run_re_executes_from_the_workspace_make_ui_loads(
    kroton: KrotonSandbox, anubis_env: str, instance: dg.DagsterInstance
) -> None:
    harness = Harness(anubis_env)
    launched = execute_job_run(harness.defs, "check_job", instance, partition_key="kroton")
    parent = instance.get_run_by_id(launched.run_id)
    assert parent is not None and parent.remote_job_origin is not None
    assert parent.tags[LAUNCHED_BY_TAG] == "anubis run"  # shown in the run's tags in the UI
    assert launched_by(parent) == "anubis run"

    target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as context:
        request = context.create_request_context()
        assert set(request.get_code_location_entries()) == {LOCATION_NAME}
        assert parent.remote_job_origin.location_name == LOCATION_NAME
        result = execute_dagster_graphql(
            request,
            LAUNCH_PIPELINE_REEXECUTION_MUTATION,
            {"reexecutionParams": {"parentRunId": parent.run_id, "strategy": "ALL_STEPS"}},
        )
    answer = result.data["launchPipelineReexecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    child = instance.get_run_by_id(answer["run"]["runId"])
    assert child is not None
    assert child.parent_run_id == parent.run_id
    assert child.status == dg.DagsterRunStatus.QUEUED
    assert child.remote_job_origin is not None
    assert child.remote_job_origin.location_name == LOCATION_NAME
    assert child.tags["dagster/partition"] == "kroton"
    assert launched_by(child) == f"re-execution of {parent.run_id[:8]}"
