"""Alerts leave masked and redacted, with their run link intact (issue 9 items 3 and 7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.core import redaction
from anubis_sandboxes.webhook_sink import WebhookSink

RUN_ID = "1f2e3d4c-5566-4778-8899-001122334455"


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    server = WebhookSink(0)
    server.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def registered() -> Iterator[str]:
    saved = set(redaction._secrets)
    secret = "alert-secret-value-9911"
    redaction.register_secrets([secret])
    yield secret
    redaction.clear_secrets()
    redaction.register_secrets(saved)


def test_alert_text_is_masked_and_redacted_with_the_link_intact(
    sink: WebhookSink, registered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_UI_URL", "http://dagster.example.com:3000")
    alert = Alert(
        "Run failed: deliver_job [kroton] for Candidata Maria Souza",
        [
            f"token call refused: scope={registered}",
            "CPF 529 982 247 25, tel (11) 97540-5666, Rua Augusta, 123",
            "order 1234567890 took 1200 ms at 2026-11-27T18:08:02Z",
        ],
        "critical",
        RUN_ID,
    )
    assert send_alert(alert, webhook_url=sink.url)
    (text,) = sink.received
    for hidden in (registered, "529 982 247 25", "97540-5666", "Maria Souza", "Augusta"):
        assert hidden not in text
    assert f"<http://dagster.example.com:3000/runs/{RUN_ID}|Open the run in Dagster>" in text
    assert "order 1234567890 took 1200 ms at 2026-11-27T18:08:02Z" in text


def test_a_failing_webhook_logs_the_alert_without_its_url(
    caplog: pytest.LogCaptureFixture, registered: str
) -> None:
    url = f"http://127.0.0.1:9/services/{registered}"  # nothing listens on port 9
    assert not send_alert(Alert("title", [f"line {registered}"]), webhook_url=url, timeout=0.5)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "alert webhook failed" in logged
    assert registered not in logged


def test_a_failure_alert_shows_the_root_cause_masked_and_redacted(registered: str) -> None:
    """The failure sensor quotes the innermost exception, whose text may carry what the partner
    or a library put in it."""
    import sys

    from dagster._utils.error import serializable_error_info_from_exc_info

    from anubis_dagster.alerts.sensors import describe_error

    try:
        try:
            raise ValueError(
                f"token {registered} refused for Candidata Maria Souza, 529.982.247-25"
            )
        except ValueError as exc:
            raise RuntimeError("step failed") from exc
    except RuntimeError:
        info = serializable_error_info_from_exc_info(sys.exc_info())
    text = describe_error(info)
    assert text.startswith("ValueError: token [redacted] refused for Candidata"), text
    for hidden in (registered, "Maria Souza", "529.982.247-25"):
        assert hidden not in text
    assert "step failed" not in text  # the wrapper is not the cause
