"""The viewers' webserver (issue 22, item 2): `dagster-webserver --read-only` (Helm:
`dagsterWebserver.enableReadOnly`) shows the code location but refuses to launch a run over
GraphQL, and no run is created. A real webserver process on a free port, loading the Anubis
definitions against a temporary instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import pytest

from anubis_dagster_tests.topology import free_port, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on UnauthorizedError { message }
    ... on PythonError { message }
    ... on LaunchRunSuccess { run { runId } }
  }
}"""
JOB = """
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { __typename }
}"""


def _graphql(port: int, query: str, variables: dict[str, object]) -> dict[str, object]:
    reply = httpx.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables},
        timeout=60,
    )
    reply.raise_for_status()
    body = reply.json()
    assert "errors" not in body, body
    return dict(body["data"])


@pytest.mark.integration
def test_read_only_webserver_refuses_to_launch_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the refusal is the webserver's, whatever the app DB: SQLite only (anubis_env would run it
    # twice, once per backend, for the same answer)
    monkeypatch.setenv("ANUBIS_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.setenv("ANUBIS_ORDERS_DATABASE_URL", f"sqlite:///{tmp_path / 'orders.db'}")
    monkeypatch.setenv("ANUBIS_HOME", str(tmp_path / "home"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    log = (tmp_path / "webserver.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "--read-only",
            "-m",
            "anubis_dagster.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).is_success,
            120,
            "the read-only webserver",
            1,
        )
        selector = {
            "repositoryLocationName": "anubis_dagster.definitions",
            "repositoryName": "__repository__",
            "pipelineName": "intake_job",
        }
        # the job is there and visible: the refusal below is about the mutation, not a typo
        found = _graphql(port, JOB, {"selector": selector})["pipelineOrError"]
        assert found == {"__typename": "Pipeline"}, found
        result = _graphql(
            port,
            LAUNCH_RUN,
            {
                "executionParams": {
                    "selector": {
                        "repositoryLocationName": selector["repositoryLocationName"],
                        "repositoryName": selector["repositoryName"],
                        "jobName": "intake_job",
                    },
                    "runConfigData": {},
                    "mode": "default",
                }
            },
        )["launchRun"]
        assert isinstance(result, dict)
        assert result["__typename"] == "UnauthorizedError", result
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            assert instance.get_runs() == [], "the read-only webserver created a run"
        finally:
            instance.dispose()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
