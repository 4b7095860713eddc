"""Alerts worth reading and runs that explain themselves (issue 12, items 4 and 5).

Runs go through the real jobs against the Kroton sandbox; Launchpad launches go through
Dagster's GraphQL API (as the UI sends them), and run links are opened on Dagster's own
webserver app, in process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_webserver.webserver import DagsterWebserver
from starlette.testclient import TestClient

from anubis_dagster.alerts.sensors import alert_on_run_failure
from anubis_dagster.delivery.service import StepRunner
from anubis_dagster.runtime.launching import merged_config
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.factories import fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import Harness
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink

CPF_PATTERN = re.compile(r"(?<!\d)\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?!\d)")
UI_URL = "http://dagster.internal:3000"
LINK = re.compile(r"<(\S+/runs/([0-9a-f-]{36}))\|Open the run in Dagster>")
REPOSITORY = {"repositoryLocationName": "anubis", "repositoryName": "__repository__"}

LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId status tags { key value } } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PythonError { message }
}}
"""
PARTITION_TAGS = """
query($selector: RepositorySelector!, $set: String!, $partition: String!) {
  partitionSetOrError(repositorySelector: $selector, partitionSetName: $set) {
    ... on PartitionSet { partition(partitionName: $partition) {
      tagsOrError { ... on PartitionTags { results { key value } } }
      runConfigOrError { ... on PartitionRunConfig { yaml } }
    } }
  }
}
"""
RUN = """
query($id: ID!) { runOrError(runId: $id) {
  __typename ... on Run { jobName status tags { key value } }
}}
"""


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSink]:
    server = WebhookSink()
    monkeypatch.setenv("ANUBIS_SLACK_WEBHOOK_URL", server.start())
    monkeypatch.setenv("ANUBIS_UI_URL", UI_URL)
    yield server
    server.shutdown()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real instance whose launches queue the run (nothing executes it): what the Launchpad
    does under the daemon's run queue."""
    coordinator = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        yield instance


@pytest.fixture
def webserver(kroton: KrotonSandbox, instance: dg.DagsterInstance) -> Iterator[TestClient]:
    """Dagster's webserver (UI routes and GraphQL) on the `anubis` code location, in process."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="anubis_dagster.definitions",
            attribute="defs",
            working_directory=os.getcwd(),
        ),
        location_name="anubis",
    )
    target = InProcessWorkspaceLoadTarget([origin])
    with (
        WorkspaceProcessContext(instance, target) as context,
        TestClient(DagsterWebserver(context).create_asgi_app()) as client,
    ):
        yield client


def graphql(client: TestClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    # a PythonError answer comes with HTTP 500: its body is still the GraphQL answer
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def launch(
    client: TestClient, job: str, config: dict[str, Any], partition: str | None = None
) -> dict[str, Any]:
    """Launch as the Launchpad does: the partition's tags from its partition set, its run config
    merged into the config as typed (the editor's merge when a partition is picked); the user
    adds no tag."""
    tags: list[dict[str, str]] = []
    if partition is not None:
        data = graphql(
            client,
            PARTITION_TAGS,
            {"selector": REPOSITORY, "set": f"{job}_partition_set", "partition": partition},
        )
        found = data["partitionSetOrError"]["partition"]
        tags = found["tagsOrError"]["results"]
        tags = [*tags, {"key": "dagster/partition", "value": partition}]
        config = merged_config(config, yaml.safe_load(found["runConfigOrError"]["yaml"]) or {})
    params = {
        "selector": {**REPOSITORY, "jobName": job},
        "runConfigData": config,
        "executionMetadata": {"tags": tags},
    }
    return graphql(client, LAUNCH, {"params": params})["launchRun"]


def no_personal_data(texts: list[str], cpfs: set[str]) -> None:
    blob = "\n".join(texts)
    found = {re.sub(r"\D", "", m) for m in CPF_PATTERN.findall(blob)}
    assert not (found & cpfs), "a CPF reached an alert"
    assert "@example.com" not in blob


def fire_failure_sensor(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    alert_on_run_failure(context)


# --- alerts -----------------------------------------------------------------------------------
def test_failure_alert_names_op_integration_and_masked_cause_with_a_run_link_that_resolves(
    kroton: KrotonSandbox,
    anubis_env: str,
    sink: WebhookSink,
    instance: dg.DagsterInstance,
    webserver: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpf = make_cpf(3)

    def explode(self: StepRunner) -> None:
        raise RuntimeError(f"ledger refused CPF {fmt_cpf(cpf)} (aluno3@example.com)")

    monkeypatch.setattr(StepRunner, "register", explode)
    harness = Harness(anubis_env)
    harness.ingest([make_order(3)])
    result = harness.run("deliver_job", "kroton", instance=instance)
    assert not result.success
    fire_failure_sensor(instance, result)

    (text,) = sink.received
    assert "Run failed: deliver_job [kroton] at `register`" in text
    assert "op `register`: RuntimeError: ledger refused CPF" in text
    assert "integration kroton, action deliver" in text
    no_personal_data([text], {cpf})
    link = LINK.search(text)
    assert link is not None, text
    url, run_id = link.groups()
    assert url.startswith(f"{UI_URL}/runs/") and run_id == result.run_id
    # the link's page is served by Dagster's webserver, and its run id is this failed run
    assert webserver.get(urlsplit(url).path).status_code == 200
    run = graphql(webserver, RUN, {"id": run_id})["runOrError"]
    assert (run["__typename"], run["jobName"], run["status"]) == ("Run", "deliver_job", "FAILURE")


def test_a_partner_that_cannot_be_reached_fails_the_run_and_its_alert_says_so(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1), make_order(2)])
    kroton.stop()
    result = harness.deliver()
    assert not result.success
    fire_failure_sensor(harness.instance, result)
    (text,) = sink.received
    assert "Run failed: deliver_job [kroton]" in text
    assert "batch stopped, no student charged an attempt" in text
    assert set(harness.statuses().values()) == {"to_sync"}  # nobody charged


def test_no_routine_summary_but_a_warning_when_no_registration_succeeded(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1h")
    harness = Harness(anubis_env)
    harness.ingest([make_order(1), make_order(2)])
    assert harness.deliver().success
    assert sink.received == []  # a healthy run is routine: the daily digest reports it

    kroton.configure(error_rate=1.0, fault_endpoints="register")
    harness.ingest([make_order(3), make_order(4), make_order(5)])
    result = harness.deliver()
    assert result.success  # the run did its job; the students' retries are scheduled
    (text,) = sink.received
    assert text.startswith(":warning:")
    assert "deliver_job [kroton]: no registration succeeded, 3 failed" in text
    assert "0 registered, 3 failed" in text and "e.g. #" in text
    assert f"/runs/{result.run_id}" in text
    no_personal_data([text], {make_cpf(i) for i in range(3, 6)})

    # with summaries on, a good run is an ℹ️ summary with its counts
    monkeypatch.setenv("ANUBIS_RUN_SUMMARIES", "true")
    kroton.configure(error_rate=0.0)
    harness.ingest([make_order(6)])
    assert harness.deliver(subscription_ids=[6]).success
    summary = sink.received[-1]
    assert summary.startswith(":information_source:") and "1 registered, 0 failed" in summary


def test_daily_digest_reports_each_integration_once(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1h")
    harness = Harness(anubis_env)
    harness.ingest([make_order(1), make_order(2)])
    assert harness.deliver().success  # 2 accepted
    kroton.configure(error_rate=1.0, fault_endpoints="register")
    harness.ingest([make_order(3)])
    assert harness.deliver().success  # 1 sent, failed, retry scheduled
    sink.received.clear()

    job = harness.defs.resolve_job_def("daily_digest_job")
    assert job.partitions_def is not None
    result = job.execute_in_process(partition_key="kroton", instance=harness.instance)
    assert result.success
    (text,) = sink.received
    assert "Daily digest: kroton" in text
    assert "runs: 2 (deliver 2), 0 failed" in text
    assert (
        "registrations: 3 students sent = 2 accepted + 0 refused + 0 unknown outcome + "
        "0 dead-lettered + 1 waiting for a retry" in text
    )
    assert "students at any step: 1 given a scheduled retry, 0 dead-lettered" in text
    no_personal_data([text], {make_cpf(i) for i in range(1, 4)})
    digest_run = harness.instance.get_run_by_id(result.run_id)
    assert digest_run is not None
    assert digest_run.tags["anubis/integration"] == "kroton"
    assert digest_run.tags["anubis/action"] == "digest"


def test_digest_schedule_follows_its_setting(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anubis_dagster.alerts.jobs import build_digest_definitions

    monkeypatch.setenv("ANUBIS_DIGEST_HOUR", "off")
    assert build_digest_definitions(["kroton"])[1] is None
    monkeypatch.setenv("ANUBIS_DIGEST_HOUR", "7")
    _job, schedule = build_digest_definitions(["kroton", "estacio"])
    assert schedule is not None
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        "0 7 * * *",
        "America/Sao_Paulo",
    )
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 28, 7))
    requests = list(schedule(context))  # type: ignore[call-overload]
    assert sorted((r.partition_key, r.run_key) for r in requests) == [
        ("estacio", "estacio:2026-11-28"),
        ("kroton", "kroton:2026-11-28"),
    ]


# --- runs that explain themselves ---------------------------------------------------------------
def test_every_job_carries_integration_and_action_tags_whoever_launches_it(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    jobs = [j for j in harness.defs.resolve_all_job_defs() if not j.name.startswith("__")]
    assert {"intake_job", "deliver_job", "check_job", "student_lookup"} <= {j.name for j in jobs}
    for job in jobs:
        keys = job.partitions_def.get_partition_keys() if job.partitions_def else [None]
        for key in keys:
            # what any launcher gets: the job's tags, and the partition's when it has one
            tags = dict(job.tags)
            if key is not None and job.partitioned_config is not None:
                tags.update(job.partitioned_config.get_tags_for_partition_key(key))
            assert tags.get("anubis/action"), (job.name, key)
            assert tags.get("anubis/integration") == (key or tags["anubis/integration"]), job.name
            assert tags["anubis/integration"], (job.name, key)
    # an asset materialised from the asset graph runs in Dagster's implicit job, without our
    # job tags: the asset names its integration and action itself
    metrics = harness.defs.resolve_assets_def(dg.AssetKey(["metrics", "kroton"]))
    result = dg.materialize([metrics], instance=harness.instance)  # resources bound by defs
    run = harness.instance.get_run_by_id(result.run_id)
    assert run is not None and run.job_name.startswith("__")
    assert (run.tags["anubis/integration"], run.tags["anubis/action"]) == ("kroton", "health")
    # a Launchpad config that asks for a preview or a requeue names it once the run reads it
    harness.ingest([make_order(1)])
    dry = harness.deliver(dry_run=True)
    requeue = harness.deliver(requeue_ids=[1])
    for result, action in ((dry, "dry_run"), (requeue, "requeue")):
        run = harness.instance.get_run_by_id(result.run_id)
        assert run is not None
        assert (run.tags["anubis/integration"], run.tags["anubis/action"]) == ("kroton", action)


def test_check_job_is_partitioned_only_over_integrations_with_a_status_check(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    from anubis_dagster.integrations.base import adapter_class

    harness = Harness(anubis_env)
    deliver = harness.defs.resolve_job_def("deliver_job").partitions_def
    check = harness.defs.resolve_job_def("check_job").partitions_def
    assert deliver is not None and check is not None
    assert set(deliver.get_partition_keys()) == {"kroton", "estacio"}
    assert check.get_partition_keys() == ["kroton"]
    assert not adapter_class("estacio").check_statuses  # why Estácio has none


def test_launchpad_refuses_a_bad_date_or_id_before_the_run_exists(
    webserver: TestClient, instance: dg.DagsterInstance
) -> None:
    bad_date = {"ops": {"delivery_request": {"config": {"requeue_failed_since": "2026-13-45"}}}}
    refused = launch(webserver, "deliver_job", bad_date, partition="kroton")
    assert refused["__typename"] != "LaunchRunSuccess"
    message = refused.get("message") or str(refused.get("errors"))
    assert "requeue_failed_since: must be an ISO 8601 time" in message
    assert "'2026-13-45'" in message

    bad_id = {"ops": {"delivery_request": {"config": {"subscription_ids": [12, 0]}}}}
    refused = launch(webserver, "deliver_job", bad_id, partition="kroton")
    assert "subscription_ids: Input should be greater than 0" in (
        refused.get("message") or str(refused.get("errors"))
    )
    bad_key = {"ops": {"find_student_op": {"config": {"key": "maria"}}}}
    refused = launch(webserver, "student_lookup", bad_key)
    assert "key: type an order id" in (refused.get("message") or str(refused.get("errors")))
    # issue 22: a CPF is never taken where Dagster would store it in the run's config (the
    # refusal goes back to whoever typed it; Dagster's wrapper quotes the value there)
    for job, op in (("student_lookup", "find_student_op"), ("privacy_erase", "privacy_erase_op")):
        refused = launch(webserver, job, {"ops": {op: {"config": {"key": "529.982.247-25"}}}})
        assert refused["__typename"] != "LaunchRunSuccess"
        assert "CPF is not accepted" in (refused.get("message") or str(refused.get("errors")))
    assert instance.get_runs_count() == 0  # nothing was created, queued or started

    good = {"ops": {"delivery_request": {"config": {"requeue_failed_since": "2026-11-01"}}}}
    launched = launch(webserver, "deliver_job", good, partition="kroton")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    tags = {t["key"]: t["value"] for t in launched["run"]["tags"]}
    assert tags["anubis/integration"] == "kroton" and tags["anubis/action"] == "deliver"
    assert tags["anubis/slot"] == "kroton:deliver"  # the run queue's per-integration limit
    lookup = launch(
        webserver, "student_lookup", {"ops": {"find_student_op": {"config": {"key": "#4"}}}}
    )
    tags = {t["key"]: t["value"] for t in lookup["run"]["tags"]}
    assert (tags["anubis/integration"], tags["anubis/action"]) == ("all", "lookup")


def test_run_config_validation_refuses_a_bad_date(kroton: KrotonSandbox, anubis_env: str) -> None:
    job = Harness(anubis_env).defs.resolve_job_def("deliver_job")
    config = {"ops": {"delivery_request": {"config": {"requeue_failed_since": "23/11/2026"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="requeue_failed_since: must be an ISO"):
        dg.validate_run_config(job, config)
    config["ops"]["delivery_request"]["config"]["requeue_failed_since"] = "2999-01-01T00:00:00"
    with pytest.raises(dg.DagsterInvalidConfigError, match="is in the future"):
        dg.validate_run_config(job, config)
    config["ops"]["delivery_request"]["config"]["requeue_failed_since"] = "2026-11-23T00:00:00Z"
    config["ops"]["delivery_request"]["config"]["integration"] = "kroton"  # the partition's
    dg.validate_run_config(job, config)


# --- partitioned jobs: no launch without an integration (issue 23) -----------------------------
def partitioned_jobs(harness: Harness) -> list[dg.JobDefinition]:
    return [
        j
        for j in harness.defs.resolve_all_job_defs()
        if j.partitions_def is not None and not j.name.startswith("__")
    ]


def test_a_partitioned_launch_without_an_integration_is_refused_before_the_run_exists(
    webserver: TestClient, instance: dg.DagsterInstance, anubis_env: str
) -> None:
    jobs = partitioned_jobs(Harness(anubis_env))
    assert {"deliver_job", "check_job", "pause_integration", "daily_digest_job"} <= {
        j.name for j in jobs
    }
    for job in jobs:
        # the Launchpad with no partition picked: the editor empty, no partition tag
        refused = launch(webserver, job.name, {})
        assert refused["__typename"] != "LaunchRunSuccess", job.name
        message = refused.get("message") or str(refused.get("errors"))
        if refused["__typename"] == "RunConfigValidationInvalid":
            # a job with a required setting (go_live's `at`): the UI's own check says so first
            assert "Missing required config entry" in message, message
            continue
        assert "integration: no integration: pick one in the Partition box" in message, message
        assert "one of: estacio, kroton" in message, message  # every integration
    # a config naming something that is not an integration (typed, or a stale Launchpad)
    typo = {"ops": {"delivery_request": {"config": {"integration": "krotonn"}}}}
    refused = launch(webserver, "deliver_job", typo)
    message = refused.get("message") or str(refused.get("errors"))
    assert "'krotonn' is not an integration; pick one of: estacio, kroton" in message
    assert instance.get_runs_count() == 0  # nothing created, queued or started: no alert either

    # picking the partition writes the integration into the editor: launched, tagged
    launched = launch(webserver, "pause_integration", {}, partition="estacio")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    tags = {t["key"]: t["value"] for t in launched["run"]["tags"]}
    assert (tags["anubis/integration"], tags["dagster/partition"]) == ("estacio", "estacio")


def test_a_run_without_its_partition_does_nothing_and_sends_no_alert(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    job = harness.defs.resolve_job_def("deliver_job")
    cases = {
        # the integration typed by hand, no partition picked ("Are you sure?" answered yes)
        None: "this run has no partition: launch it again with the integration picked in the "
        "Partition box (estacio, kroton); nothing was done",
        # the partition changed after the config was typed for another integration
        "estacio": "partition 'estacio' but the config says integration: 'kroton'",
    }
    check = harness.defs.resolve_job_def("check_job")
    result = check.execute_in_process(  # Estácio has no status check: not a check partition
        run_config=partition_run_config("delivery_request", "estacio"),
        instance=harness.instance,
        raise_on_error=False,
        tags={"dagster/partition": "estacio"},
    )
    failure = result.failure_data_for_node("delivery_request")
    assert failure is not None
    assert "partition 'estacio' is not an integration (kroton)" in str(failure.error.message)  # type: ignore[union-attr]
    for partition, line in cases.items():
        result = job.execute_in_process(
            run_config={"ops": {"delivery_request": {"config": {"integration": "kroton"}}}},
            instance=harness.instance,
            raise_on_error=False,
            partition_key=partition,
        )
        assert not result.success
        failure = result.failure_data_for_node("delivery_request")
        assert failure is not None and line in str(failure.error.message)  # type: ignore[union-attr]
        run = harness.instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags["anubis/refused"] == "true"
        fire_failure_sensor(harness.instance, result)
    assert sink.received == []  # a refused launch is not an incident
    assert kroton.requests_log() == []  # nothing was sent: the student waits for a real run
    assert harness.deliver().success
    assert kroton.requests_log()
