"""Health per integration against the sandboxes over real HTTP, on SQLite and PostgreSQL.

Each connectivity check passes against its sandbox, spending one request, and fails with a
description naming the integration and what to check when the sandbox is down or refuses our
credentials; the names table check fails when the table is empty; every change of a check's
level sends exactly one webhook alert (and a steady state none).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from typing import Any

import dagster as dg
import pytest

from anubis_dagster.db.models import Name
from anubis_dagster.db.session import session_scope
from anubis_dagster.health import metrics
from anubis_dagster.health.assets import health_key, job_name, metrics_key
from anubis_dagster.health.metrics import Threshold
from anubis_dagster_tests.factories import make_order
from anubis_dagster_tests.harness import QUIET, Harness
from anubis_dagster_tests.test_estacio_e2e import estacio  # noqa: F401  (fixture)
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink

KROTON_PROBES = ("kroton_api", "kroton_captacao_api", "kroton_catalog")
ESTACIO_PROBES = ("estacio_api", "onetrust_api")
THRESHOLD_CHECKS = tuple(metrics.THRESHOLDS)


@pytest.fixture
def captacao(kroton: KrotonSandbox, monkeypatch: pytest.MonkeyPatch) -> KrotonSandbox:
    """The Kroton sandbox with the Captação API's settings pointing at it too."""
    monkeypatch.setenv("API_KROTON_BASE_URL_CAPTACAO", os.environ["API_KROTON_BASE_URL"])
    monkeypatch.setenv("API_KROTON_EMAIL", kroton.settings.captacao_email)
    monkeypatch.setenv("API_KROTON_PASSWORD", kroton.settings.captacao_password)
    return kroton


def run_health(harness: Harness, scope: str) -> dg.ExecuteInProcessResult:
    return harness.defs.resolve_job_def(job_name(scope)).execute_in_process(
        instance=harness.instance, run_config=QUIET, raise_on_error=False
    )


def checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def endpoints(sandbox: Any) -> Counter[str]:
    return Counter(r["endpoint"] for r in sandbox.requests_log())


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_every_check_is_described_with_its_integration(
    captacao: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    graph = harness.defs.resolve_asset_graph()
    specs = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).description or ""
        for key in graph.asset_check_keys
    }
    for name in (*KROTON_PROBES, *THRESHOLD_CHECKS):
        assert specs[("health/kroton", name)].startswith("kroton: "), name
    for name in (*ESTACIO_PROBES, *THRESHOLD_CHECKS):
        assert specs[("health/estacio", name)].startswith("estacio: "), name
    for name in ("app_database", "names_table", "configuration"):
        assert specs[("health/platform", name)].startswith("platform "), name
    assert "ERROR below 80.0%" in specs[("health/kroton", "success_rate")]
    assert "WARN above 5.0%, ERROR above 15.0%" in specs[("health/kroton", "error_rate")]
    job = harness.defs.resolve_job_def(job_name("kroton"))
    assert job.tags["anubis/integration"] == "kroton" and job.tags["anubis/action"] == "health"
    assert "anubis/slot" not in job.tags  # never queued behind, or blocking, a delivery
    assert {health_key("kroton"), metrics_key("kroton")} <= set(graph.get_all_asset_keys())


def test_kroton_checks_pass_with_one_request_each_then_alert_once_when_down_and_back(
    captacao: KrotonSandbox, anubis_env: str, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(anubis_env)
    result = run_health(harness, "kroton")
    assert result.success
    found = checks(result)
    for name in (*KROTON_PROBES, *THRESHOLD_CHECKS):
        assert found[name].passed, (name, found[name].description)
    assert "token issued" in found["kroton_api"].description
    assert "open offers" in found["kroton_catalog"].description
    assert endpoints(captacao) == {"token": 1, "captacao_login": 1, "catalog_search": 1}
    # each probe is an attempt row like any request (no subscription): rows = requests
    assert harness.attempt_rows(with_subscription=False) == 3
    assert sink.received == []  # healthy from the start: nothing to say

    captacao.stop()  # the partner is down
    for _ in range(2):
        result = run_health(harness, "kroton")
        assert result.success  # a failing check is a result, not a failed run
        found = checks(result)
        for name in KROTON_PROBES:
            assert not found[name].passed
            assert found[name].severity == dg.AssetCheckSeverity.ERROR
        assert "cannot be reached" in found["kroton_api"].description
        assert "API_KROTON_BASE_URL" in found["kroton_api"].description
        assert "CATALOG_KROTON_BASE_URL" in found["kroton_catalog"].description
    # one alert per check that turned ERROR, none for the second failing run
    assert len(sink.received) == 3, sink.received
    api_alert = next(text for text in sink.received if "kroton_api" in text)
    assert "integration: kroton" in api_alert and "measured:" in api_alert
    assert "threshold:" in api_alert and "ERROR" in api_alert

    back = KrotonSandbox(captacao.settings)
    url = back.start()
    try:
        for variable in ("API_KROTON_BASE_URL", "CATALOG_KROTON_BASE_URL"):
            monkeypatch.setenv(variable, url)
        monkeypatch.setenv("API_KROTON_BASE_URL_CAPTACAO", url)
        assert all(checks(run_health(harness, "kroton"))[n].passed for n in KROTON_PROBES)
        recovered = sink.received[3:]
        assert len(recovered) == 3 and all("recovered" in text for text in recovered)
        run_health(harness, "kroton")
        assert len(sink.received) == 6
    finally:
        back.stop()


def test_kroton_refused_credentials_fail_naming_the_settings(
    captacao: KrotonSandbox, anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env)
    captacao.configure(client_secret="rotated", captacao_password="rotated", catalog_api_key="x")
    found = checks(run_health(harness, "kroton"))
    assert "refused our credentials" in found["kroton_api"].description
    assert "API_KROTON_SECRET" in found["kroton_api"].description
    assert "refused our credentials" in found["kroton_captacao_api"].description
    assert "API_KROTON_PASSWORD" in found["kroton_captacao_api"].description
    assert "CATALOG_KROTON_API_KEY" in found["kroton_catalog"].description
    # one request each, refused: no retry of a refused credential
    assert endpoints(captacao) == {"token": 1, "captacao_login": 1, "catalog_search": 1}
    assert len(sink.received) == 3
    for text in sink.received:  # no secret in an alert
        assert "rotated" not in text and "sandbox-secret" not in text


def test_captacao_not_configured_passes_saying_so(kroton: KrotonSandbox, anubis_env: str) -> None:
    found = checks(run_health(Harness(anubis_env), "kroton"))
    assert found["kroton_captacao_api"].passed
    assert "not configured" in found["kroton_captacao_api"].description
    assert endpoints(kroton)["captacao_login"] == 0


def test_estacio_checks_pass_then_fail_when_refused_or_down(
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
    sink: WebhookSink,
) -> None:
    harness = Harness(anubis_env)
    found = checks(run_health(harness, "estacio"))
    for name in (*ESTACIO_PROBES, *THRESHOLD_CHECKS):
        assert found[name].passed, (name, found[name].description)
    assert endpoints(estacio) == {"cep": 1, "consent": 1}
    assert estacio.stats()["consents_per_cpf"] == {}  # the empty consent recorded nothing
    assert sink.received == []

    estacio.configure(api_key="rotated")
    found = checks(run_health(harness, "estacio"))
    assert not found["estacio_api"].passed and found["onetrust_api"].passed
    assert "API_ESTACIO_NEW_TOKEN" in found["estacio_api"].description
    assert len(sink.received) == 1 and "estacio_api" in sink.received[0]

    estacio.stop()
    found = checks(run_health(harness, "estacio"))
    assert "cannot be reached" in found["onetrust_api"].description
    assert "API_ONETRUST_BASE_URL" in found["onetrust_api"].description
    # estacio_api was already ERROR: only OneTrust's change alerts
    assert len(sink.received) == 2 and "onetrust_api" in sink.received[1]


def test_platform_names_table_empty_fails_then_recovers(
    kroton: KrotonSandbox,
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
    sink: WebhookSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1m,5m")  # 0 s, the tests', is a doctor problem
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])  # creates the orders table the doctor looks for
    found = checks(run_health(harness, "platform"))
    assert found["app_database"].passed, found["app_database"].description
    assert found["configuration"].passed, found["configuration"].description
    names = found["names_table"]
    assert not names.passed and names.severity == dg.AssetCheckSeverity.WARN
    assert "names table is empty" in names.description
    assert len(sink.received) == 1 and "names_table" in sink.received[0]
    assert "measured: 0 names" in sink.received[0]

    with session_scope(anubis_env) as session:
        session.add(Name(name="MARIA", gender="F", frequency=11_000_000))
    run_health(harness, "platform")
    assert len(sink.received) == 2 and "recovered" in sink.received[1]

    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s")  # a configuration problem appears
    found = checks(run_health(harness, "platform"))
    assert not found["configuration"].passed
    assert "ANUBIS_RETRY_SCHEDULE" in found["configuration"].description
    assert len(sink.received) == 3 and "configuration" in sink.received[2]


def test_thresholds_turn_error_and_alert_with_value_and_threshold(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s")  # one scheduled retry, then dead letter
    monkeypatch.setenv("ANUBIS_BREAKER_FAILURES", "1000")  # dead letters, not an outage
    harness = Harness(anubis_env)
    kroton.configure(error_rate=1.0)
    harness.ingest([make_order(i) for i in range(1, 4)])
    harness.deliver_until_settled()  # three dead letters
    monkeypatch.setitem(metrics.THRESHOLDS, "dead_letters", Threshold(1, 2))

    result = run_health(harness, "kroton")
    (materialization,) = result.asset_materializations_for_node("health__kroton")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["pending"] == 0 and meta["retry_queue"] == 0
    assert meta["error_rate_24h_pct"] == 100.0  # a percent, as the check shows it
    assert meta["backlog_age_h"] == "n/a"  # nobody waiting: no age, not a plotted 0
    found = checks(result)
    assert not found["dead_letters"].passed
    assert found["dead_letters"].severity == dg.AssetCheckSeverity.ERROR
    assert not found["error_rate"].passed and not found["success_rate"].passed
    assert found["pending"].passed and found["backlog_age"].passed
    alert = next(text for text in sink.received if "dead_letters" in text)
    assert "integration: kroton" in alert
    assert "measured: 3" in alert and "threshold: WARN above 1, ERROR above 2" in alert
    # nothing was evaluated before: a first evaluation, not a change from OK
    assert "(first evaluation" in alert and "was OK" not in alert
    # the link opens the failing check, not the (green) health run
    assert "/assets/health/kroton?view=checks&checkDetail=dead_letters|" in alert
    assert "/runs/" not in alert
    assert found["dead_letters"].description.startswith("ERROR: kroton dead_letters: 3")
    alerts = len(sink.received)
    run_health(harness, "kroton")
    assert len(sink.received) == alerts  # still ERROR: nothing new to say
