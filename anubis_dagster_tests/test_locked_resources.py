"""A launched run cannot redirect or unthrottle a partner (issue 22, item 1).

Partner URLs, credentials, quotas and the database URLs come from the validated settings only:
the resources have no config fields, so Dagster refuses a run config that sets one when the run
is launched, before a run exists or a byte is sent, whether it comes through GraphQL (the
Launchpad), the Python API or `dagster job execute`. A listener on another local port stands for
the attacker's host: it must receive nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_webserver.webserver import DagsterWebserver
from starlette.testclient import TestClient

from anubis_dagster.definitions import build_definitions
from anubis_sandboxes.kroton import KrotonSandbox

REPOSITORY = {"repositoryLocationName": "anubis", "repositoryName": "__repository__"}
LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PythonError { message }
}}
"""
DELIVER_OPS = {"delivery_request": {"config": {"limit": 5, "integration": "kroton"}}}


class Listener:
    """The other host: a tiny HTTP server that records every request it receives."""

    def __init__(self) -> None:
        self.received: list[str] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                received.append(f"{self.command} {self.path} {body}")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"access_token": "stolen", "expires_in": 3600}')

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    httpx.post(f"{server.url}/probe", content=b"x")
    assert server.received == ["POST /probe x"]
    server.received.clear()
    yield server
    server.close()


def attacks(listener: Listener, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run configs an attacker with Launchpad access would try, by what they change."""
    stolen_db = f"sqlite:///{tmp_path / 'stolen.db'}"
    return {
        "base_url + secret from the env": {
            "kroton_api": {
                "config": {"base_url": listener.url, "secret": {"env": "API_KROTON_SECRET"}}
            },
            "kroton_catalog": {"config": {"base_url": listener.url}},
        },
        "credentials": {"kroton_api": {"config": {"client_id": "x", "subscription": "y"}}},
        "rate_limit": {"kroton_api": {"config": {"rate_limit": "100000/1"}}},
        "app_db url": {"app_db": {"config": {"url": stolen_db}}},
        "orders url": {"orders": {"config": {"url": stolen_db, "table": "x"}}},
    }


# --- GraphQL: what the Launchpad sends ---------------------------------------------------------
@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real instance whose launches queue the run (what the Launchpad does under the daemon's
    run queue): a launch that got through would leave a run here."""
    coordinator = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        yield instance


@pytest.fixture
def webserver(kroton: KrotonSandbox, instance: dg.DagsterInstance) -> Iterator[TestClient]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="anubis_dagster.definitions",
            attribute="defs",
            working_directory=os.getcwd(),
        ),
        location_name="anubis",
    )
    with (
        WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget([origin])) as context,
        TestClient(DagsterWebserver(context).create_asgi_app()) as client,
    ):
        yield client


def launch(client: TestClient, job: str, run_config: dict[str, Any]) -> dict[str, Any]:
    params = {
        "selector": {**REPOSITORY, "jobName": job},
        "runConfigData": run_config,
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "kroton"}]},
    }
    body = client.post("/graphql", json={"query": LAUNCH, "variables": {"params": params}})
    data = body.json()
    assert not data.get("errors"), data["errors"]
    return data["data"]["launchRun"]


def test_graphql_refuses_a_run_config_that_sets_a_url_credential_or_quota(
    kroton: KrotonSandbox,
    webserver: TestClient,
    instance: dg.DagsterInstance,
    listener: Listener,
    tmp_path: Path,
) -> None:
    for what, resources in attacks(listener, tmp_path).items():
        job = "intake_job" if what == "orders url" else "deliver_job"
        ops = DELIVER_OPS if job == "deliver_job" else {}
        answer = launch(webserver, job, {"ops": ops, "resources": resources})
        assert answer["__typename"] == "RunConfigValidationInvalid", (what, answer)
        text = "\n".join(e["message"] for e in answer["errors"])
        for resource, entry in resources.items():
            (line,) = [x for x in text.splitlines() if f"root:resources:{resource}:config" in x]
            assert "unexpected config entr" in line, (what, line)
            assert all(field in line for field in entry["config"]), (what, line)
    assert instance.get_runs_count() == 0  # refused before a run existed
    assert listener.received == []
    assert kroton.requests_log() == []  # nor the real partner: no run, no call
    # the control: the same launch without the resources part goes through (and only queues)
    ok = launch(webserver, "deliver_job", {"ops": DELIVER_OPS})
    assert ok["__typename"] == "LaunchRunSuccess", ok
    assert instance.get_runs_count() == 1


# --- the Python API -----------------------------------------------------------------------------
def test_execute_in_process_refuses_them_too(
    kroton: KrotonSandbox, listener: Listener, tmp_path: Path
) -> None:
    defs = build_definitions()
    for what, resources in attacks(listener, tmp_path).items():
        job = defs.resolve_job_def("intake_job" if what == "orders url" else "deliver_job")
        ops = DELIVER_OPS if job.name == "deliver_job" else {}
        with pytest.raises(dg.DagsterInvalidConfigError) as refused:
            job.execute_in_process(
                run_config={"ops": ops, "resources": resources},
                partition_key="kroton" if job.name == "deliver_job" else None,
            )
        assert "unexpected config entr" in str(refused.value), what
    assert listener.received == []


def test_the_resources_are_built_from_the_settings_at_run_start(kroton: KrotonSandbox) -> None:
    """What a run gets: the settings' URL, credentials and quota; the config schema offers no
    field to change them."""
    defs = build_definitions()
    job = defs.resolve_job_def("deliver_job")
    for key in ("kroton_api", "kroton_catalog", "app_db"):
        field = job.run_config_schema.config_type.fields["resources"].config_type.fields[key]
        config = field.config_type.fields["config"].config_type
        assert dict(config.fields) == {}, key
    with dg.build_resources({"kroton_api": defs.resources["kroton_api"]}) as built:
        api = built.kroton_api
        assert api.base_url == kroton.base_url
        assert api.secret == "sandbox-secret"
        assert api.rate_limit == "1000/60"
        assert "sandbox-secret" not in repr(api)


# --- the CLI ----------------------------------------------------------------------------------
def test_dagster_job_execute_refuses_it_before_anything_is_sent(
    kroton: KrotonSandbox, listener: Listener, tmp_path: Path
) -> None:
    config = tmp_path / "attack.yaml"
    resources = attacks(listener, tmp_path)["base_url + secret from the env"]
    config.write_text(yaml.safe_dump({"ops": DELIVER_OPS, "resources": resources}))
    home = tmp_path / "dagster_home"
    home.mkdir()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "dagster", "job", "execute"),
            *("-m", "anubis_dagster.definitions", "-j", "deliver_job"),
            *("-c", str(config), "--tags", '{"dagster/partition": "kroton"}'),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "unexpected config entr" in done.stderr + done.stdout
    assert "root:resources:kroton_api:config" in done.stderr + done.stdout
    assert listener.received == []
