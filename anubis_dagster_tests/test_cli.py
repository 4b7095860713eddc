"""The `anubis` command as an operator uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anubis_dagster.cli import main
from anubis_dagster_tests.factories import make_order
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink


def test_load_run_and_status(
    kroton: KrotonSandbox, anubis_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_text("\n".join(json.dumps(make_order(i)) for i in range(1, 4)) + "\n")
    assert main(["orders", "load", str(orders)]) == 0
    assert main(["run", "--settle-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "intake_job" in out and "deliver_job[kroton]" in out
    assert main(["run", "--settle-seconds", "0"]) == 0  # nothing new: the watermark moved
    assert "no new paid orders" in capsys.readouterr().out
    assert main(["status", "--by-origin"]) == 0
    status = capsys.readouterr().out
    assert "kroton" in status and "quero_bolsa" in status
    assert "register" in status and "catalog_search" in status


def test_digest_sends_one_message_per_integration(
    kroton: KrotonSandbox,
    anubis_env: str,
    sink: WebhookSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_text("\n".join(json.dumps(make_order(i)) for i in range(1, 4)) + "\n")
    assert main(["orders", "load", str(orders)]) == 0
    assert main(["run", "--settle-seconds", "0"]) == 0
    sink.received.clear()
    assert main(["digest", "--hours", "1"]) == 0
    assert "kroton: digest sent" in capsys.readouterr().out
    kroton_digest = [text for text in sink.received if "Daily digest: kroton" in text]
    assert len(kroton_digest) == 1
    assert "registrations: 3 students sent = 3 accepted + 0 refused" in kroton_digest[0]


def test_a_failed_run_makes_the_command_fail(
    anubis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("API_KROTON_BASE_URL", "API_KROTON_SECRET"):
        monkeypatch.delenv(name, raising=False)
    orders = tmp_path / "orders.jsonl"
    orders.write_text(json.dumps(make_order(1)) + "\n")
    assert main(["orders", "load", str(orders)]) == 0
    assert main(["run", "--settle-seconds", "0"]) == 1  # Kroton is not configured


def test_a_bad_orders_file_names_the_line(
    anubis_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_text(json.dumps(make_order(1)) + "\n{not json\n")
    assert main(["orders", "load", str(orders)]) == 1
    assert "orders.jsonl:2: not valid JSON" in capsys.readouterr().err
