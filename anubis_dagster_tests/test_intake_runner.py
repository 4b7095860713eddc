"""`anubis run`'s intake: the committed watermark, a missing orders table, and a poison row that
must not keep the valid students from being delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, text

from anubis_dagster.cli import main
from anubis_dagster.db.models import IntakeQuarantine, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster_tests.factories import make_order
from anubis_sandboxes.kroton import KrotonSandbox


def test_anubis_run_delivers_when_intake_had_a_bad_row(
    kroton: KrotonSandbox,
    anubis_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1s,1s,1s")
    orders = tmp_path / "orders.jsonl"
    hostile = make_order(2, full_name=["Maria", "Silva"])
    orders.write_text("\n".join(json.dumps(o) for o in (make_order(1), hostile, make_order(3))))
    assert main(["orders", "load", str(orders)]) == 0
    source = OrdersSource()
    with source.engine.begin() as connection:  # a row the platform wrote that is not JSON
        connection.execute(
            text(
                "INSERT INTO orders (id, origin, checkout_step, created_at, updated_at, payload) "
                "VALUES (4, 'quero_bolsa', 'paid', '2026-11-01 10:00:04', "
                "'2026-11-01 10:00:04', '{\"id\": 4, \"base_user\": ')"
            )
        )
    assert main(["run", "--settle-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "intake_job" in out and "deliver_job[kroton]" in out
    with session_scope(anubis_env) as session:
        subs = {s.order_id: s for s in session.scalars(select(Subscription))}
        registers = session.scalars(
            select(SubscriptionEvent.subscription_id).where(
                SubscriptionEvent.kind == "attempt", SubscriptionEvent.operation_name == "register"
            )
        ).all()
        (poison,) = session.scalars(select(IntakeQuarantine)).all()
    assert subs[2].status == "invalid"
    assert "base_user.full_name - must be text, not a list" in (subs[2].last_error or "")
    assert {subs[1].id, subs[3].id} <= set(registers)  # the valid students were sent
    assert (poison.order_id, poison.kind, poison.reason) == (
        4,
        "unreadable",
        "order payload is not valid JSON",
    )
    assert main(["run", "--settle-seconds", "0"]) == 0  # the watermark moved past all four
    assert "no new paid orders" in capsys.readouterr().out


def test_anubis_run_never_creates_the_orders_table(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANUBIS_ORDERS_TABLE", "platform_orders")
    assert main(["run", "--settle-seconds", "0"]) == 1
    out = capsys.readouterr()
    assert "ANUBIS_ORDERS_TABLE: the orders table or view 'platform_orders' does not exist" in (
        out.out + out.err
    )
    assert not OrdersSource().exists()
