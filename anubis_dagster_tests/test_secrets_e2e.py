"""No secret is ever stored or shown (issue 9 item 3), end to end over real HTTP.

Every secret variable is set to a unique marker and the sandboxes accept exactly those
credentials, so the markers really travel: Kroton's client secret and subscription key (as the
token `scope`, a form field, and the `Ocp-Apim-Subscription-Key` header), its catalog API key,
Estácio's `x-api-key`, OneTrust's client secret header and collection-point token (in the consent
body). The sandboxes here also quote back what they received in every answer (some gateways do,
in error bodies), and a second phase rotates the partner's credentials so the token and
registration calls fail and the run fails. Afterwards every text column of every table of the
app DB, every run and event in the Dagster instance's storage, the webhook sink and the captured
stdout/stderr and log records must hold no marker, in any spelling.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from anubis_dagster.alerts.sensors import alert_on_run_failure
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_order
from anubis_dagster_tests.harness import Harness
from anubis_dagster_tests.secret_scan import (
    SECRET_VARIABLES,
    find_markers,
    marker_for,
)
from anubis_sandboxes.estacio import EstacioSandbox, EstacioSandboxSettings
from anubis_sandboxes.kroton import KrotonSandbox, KrotonSandboxSettings
from anubis_sandboxes.server import Reply, Route, SandboxRequest
from anubis_sandboxes.webhook_sink import WebhookSink

MARKERS = {name: marker_for(name) for name in SECRET_VARIABLES}
WEBHOOK_MARKER = marker_for("ANUBIS_SLACK_WEBHOOK_URL")
ALL_MARKERS = [*MARKERS.values(), WEBHOOK_MARKER]


def _echo(reply: Reply, request: SandboxRequest) -> Reply:
    """The answer with what the partner received quoted back: headers, form and body, as a
    structure and in the free-text message."""
    if not isinstance(reply.body, dict):
        return reply
    received = request.body.decode("utf-8", "replace")
    headers = dict(request.headers.items())
    quoted = f"received headers {json.dumps(headers)} body {received}"
    body: dict[str, Any] = {**reply.body, "echo": {"headers": headers, "body": received}}
    if reply.status >= 400:
        body["message"] = f"{reply.body.get('message', '')} ({quoted})"
    else:
        body["note"] = quoted
    return dataclasses.replace(reply, body=body)


class EchoingKroton(KrotonSandbox):
    def _authorized_answer(self, route: Route | None, request: SandboxRequest) -> Reply:
        return _echo(super()._authorized_answer(route, request), request)


class EchoingEstacio(EstacioSandbox):
    def _authorized_answer(self, route: Route | None, request: SandboxRequest) -> Reply:
        return _echo(super()._authorized_answer(route, request), request)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSink]:
    """The webhook sink, reached through a URL whose path is itself a credential (as Slack's)."""
    server = WebhookSink(0)
    url = server.start()
    monkeypatch.setenv("ANUBIS_SLACK_WEBHOOK_URL", f"{url}services/{WEBHOOK_MARKER}")
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance with real (SQLite) run and event log storage on disk."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def _set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def kroton(anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KrotonSandbox]:
    sandbox = EchoingKroton(
        KrotonSandboxSettings(
            client_secret=MARKERS["API_KROTON_SECRET"],
            subscription_key=MARKERS["API_KROTON_SUBSCRIPTION"],
            catalog_api_key=MARKERS["CATALOG_KROTON_API_KEY"],
            processing_delay=0.1,
            classification_step=0.1,
            hang_seconds=2,
            error_rate=0.15,
            seed=7,
            rate_limits={"api": "1000/60", "catalog": "1000/60"},
        )
    )
    url = sandbox.start()
    _set_env(
        monkeypatch,
        {
            "API_KROTON_BASE_URL": url,
            "API_KROTON_CLIENT_ID": "sandbox-client",
            "API_KROTON_SECRET": MARKERS["API_KROTON_SECRET"],
            "API_KROTON_SUBSCRIPTION": MARKERS["API_KROTON_SUBSCRIPTION"],
            "API_KROTON_PASSWORD": MARKERS["API_KROTON_PASSWORD"],
            "CATALOG_KROTON_BASE_URL": url,
            "CATALOG_KROTON_API_KEY": MARKERS["CATALOG_KROTON_API_KEY"],
            "API_KROTON_TIMEOUT_SECONDS": "1",
            "CATALOG_KROTON_TIMEOUT_SECONDS": "1",
            "ANUBIS_RETRY_SCHEDULE": "1s,1s,1s,1s,1s,1s,1s,1s",
            "API_KROTON_RATE_LIMIT": "1000/60",
            "CATALOG_KROTON_RATE_LIMIT": "1000/60",
        },
    )
    yield sandbox
    sandbox.stop()


@pytest.fixture
def estacio(anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EstacioSandbox]:
    sandbox = EchoingEstacio(
        EstacioSandboxSettings(
            api_key=MARKERS["API_ESTACIO_NEW_TOKEN"],
            onetrust_client_secret=MARKERS["API_ONETRUST_CLIENT_SECRET"],
            onetrust_token=MARKERS["API_ONETRUST_TOKEN"],
            hang_seconds=1.5,
            error_rate=0.15,
            seed=7,
            rate_limits={"estacio": "1000/60", "onetrust": "1000/60", "cep": "1000/60"},
        )
    )
    url = sandbox.start()
    _set_env(
        monkeypatch,
        {
            "API_ESTACIO_NEW_BASE_URL": url,
            "API_ESTACIO_CLIENT_ID": "sandbox-canal",
            "API_ESTACIO_NEW_TOKEN": MARKERS["API_ESTACIO_NEW_TOKEN"],
            "API_ONETRUST_BASE_URL": url,
            "API_ONETRUST_CLIENT_ID": "sandbox-onetrust-id",
            "API_ONETRUST_CLIENT_SECRET": MARKERS["API_ONETRUST_CLIENT_SECRET"],
            "API_ONETRUST_FINALIDADE_ID": "sandbox-finalidade",
            "API_ONETRUST_TOPICO_ID": "sandbox-topico",
            "API_ONETRUST_TOKEN": MARKERS["API_ONETRUST_TOKEN"],
            "API_ESTACIO_RATE_LIMIT": "1000/60",
            "API_ONETRUST_RATE_LIMIT": "1000/60",
            "API_ESTACIO_CEP_RATE_LIMIT": "1000/60",
            "API_ESTACIO_TIMEOUT_SECONDS": "1",
            "API_ONETRUST_TIMEOUT_SECONDS": "1",
            "API_ESTACIO_CEP_TIMEOUT_SECONDS": "1",
            "ANUBIS_RETRY_SCHEDULE": "1s,1s,1s,1s,1s,1s,1s,1s",
        },
    )
    monkeypatch.delenv("API_ESTACIO_REGISTER_WINDOW", raising=False)
    yield sandbox
    sandbox.stop()


def _alert_failed_runs(instance: dg.DagsterInstance) -> int:
    """Evaluate the run failure sensor on every failed run, as the daemon would."""
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    for run in failed:
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        if not records:
            continue
        event = records[-1].event_log_entry.dagster_event
        assert event is not None
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=event,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        alert_on_run_failure(context)
    return len(failed)


def _assert_nothing_leaked(
    db_url: str,
    instance: dg.DagsterInstance,
    sink: WebhookSink,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out, err = capfd.readouterr()
    texts = {
        "stdout": out,
        "stderr": err,
        "log records": "\n".join(
            f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        ),
        **{f"webhook message {i}": text for i, text in enumerate(sink.received)},
    }
    findings = find_markers(db_url, instance, texts, ALL_MARKERS)
    assert not findings, "secrets leaked:\n" + "\n".join(map(str, findings[:20]))


def test_kroton_secrets_are_never_stored_or_shown(
    kroton: KrotonSandbox,
    sink: WebhookSink,
    instance: dg.DagsterInstance,
    anubis_env: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = Harness(anubis_env)
    harness.instance = instance
    harness.ingest([make_order(i) for i in range(1, 9)])
    for _ in range(4):
        harness.deliver()
        harness.check()
    statuses = harness.statuses()
    # the markers really travelled: Kroton accepted them and registered students
    assert any(
        s in ("awaiting_register", "registered", "enrolled", "dropped") for s in statuses.values()
    )
    log = kroton.requests_log()
    assert any(r["endpoint"] == "token" for r in log)

    # phase 2: the partner rotates its credentials; our markers are refused and the run fails
    kroton.configure(client_secret="rotated-secret", subscription_key="rotated-subscription")
    harness.ingest([make_order(i) for i in range(20, 24)])
    harness.deliver()
    assert _alert_failed_runs(instance) >= 1
    assert sink.received, "the run summary and failure alerts reached the sink"

    _assert_nothing_leaked(anubis_env, instance, sink, capfd, caplog)


def test_estacio_secrets_are_never_stored_or_shown(
    estacio: EstacioSandbox,
    sink: WebhookSink,
    instance: dg.DagsterInstance,
    anubis_env: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = Harness(anubis_env)
    harness.instance = instance
    harness.ingest([make_order(i, offer=ESTACIO_OFFER) for i in range(1, 9)])
    for _ in range(4):
        harness.deliver("estacio")
    assert "registered" in harness.statuses().values()
    by_endpoint = estacio.stats()["by_endpoint"]
    assert by_endpoint.get("consent") and by_endpoint.get("register")

    # phase 2: rotated credentials at Estácio and OneTrust
    estacio.configure(api_key="rotated-key", onetrust_client_secret="rotated-secret")
    harness.ingest([make_order(i, offer=ESTACIO_OFFER) for i in range(20, 24)])
    harness.deliver("estacio")
    assert _alert_failed_runs(instance) >= 1
    assert sink.received

    _assert_nothing_leaked(anubis_env, instance, sink, capfd, caplog)


def test_the_scan_finds_a_marker_wherever_it_is(db_url: str, instance: dg.DagsterInstance) -> None:
    """The scan itself can fail: a marker in a DB row, in a run's event log or in a text, in any
    spelling, is found. (Markers of their own, never registered for redaction.)"""
    from anubis_dagster.db.models import SubscriptionEvent
    from anubis_dagster.db.session import session_scope

    in_db, in_log, in_text = (marker_for(f"SCAN_ONLY_{n}") for n in range(3))
    markers = [in_db, in_log, in_text]
    assert find_markers(db_url, instance, {}, markers) == []
    with session_scope(db_url) as session:
        session.add(
            SubscriptionEvent(
                kind="attempt", operation_name="x", request={"form": {"scope": in_db}}
            )
        )

    @dg.op
    def talkative(context) -> None:  # type: ignore[no-untyped-def]  # Dagster reads it
        context.log.info(f"raw {in_log}")

    @dg.job
    def leaky() -> None:
        talkative()

    leaky.execute_in_process(instance=instance)
    encoded = base64.b64encode(in_text.encode()).decode()
    findings = find_markers(db_url, instance, {"stderr": f"x {encoded} y"}, markers)
    places = {(f.marker, " ".join(f.where.split(" ")[:2])) for f in findings}
    assert places == {
        (in_db, "app db"),
        (in_log, "dagster event"),
        (in_text, "text stderr"),
    }


def test_exception_text_of_a_failed_run_is_redacted_in_dagster_storage(
    db_url: str, instance: dg.DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    """Whatever op raises an exception quoting a secret (here with a cause that quotes another),
    Dagster's event log and the console never get the secret: the write and the log record are
    redacted in the process that runs the op."""
    from anubis_dagster.core import redaction

    secret, cause_secret = marker_for("RAISED_A"), marker_for("RAISED_B")
    saved = set(redaction._secrets)
    redaction.register_secrets([secret, cause_secret])
    try:

        @dg.op
        def explodes() -> None:
            try:
                raise ValueError(f"upstream said: bad key {cause_secret}")
            except ValueError as exc:
                raise RuntimeError(f"token call with scope={secret} refused") from exc

        @dg.job
        def failing() -> None:
            explodes()

        result = failing.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        out, err = capfd.readouterr()
        findings = find_markers(
            db_url, instance, {"stdout": out, "stderr": err}, [secret, cause_secret]
        )
        assert not findings, "\n".join(map(str, findings))
        failure = next(
            e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
        ).step_failure_data.error
        assert failure is not None and "scope=[redacted] refused" in serialize_value(
            instance.all_logs(result.run_id)
        )
    finally:
        redaction.clear_secrets()
        redaction.register_secrets(saved)
