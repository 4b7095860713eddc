"""The intake job end to end in Dagster, and what its run log shows (never a raw CPF)."""

from __future__ import annotations

import re

import dagster as dg
import pytest
from sqlalchemy import select

from anubis_dagster.db.models import IntakeQuarantine
from anubis_dagster.db.session import default_database_url, session_scope
from anubis_dagster.definitions import defs as code_location
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster_tests.db_faults import refusing_orders
from anubis_dagster_tests.factories import ESTACIO_OFFER, fmt_cpf, make_cpf, make_order
from anubis_sandboxes.webhook_sink import WebhookSink

defs = code_location()  # the lazy code location, built as Dagster builds it

CPF_PATTERN = re.compile(r"(?<!\d)\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?!\d)")


def run_intake(orders: list[dict]) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    source = OrdersSource()
    source.load(orders)
    (batch,) = plan_batches(source, None)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("intake_job").execute_in_process(
        run_config=batch.run_config(), instance=instance
    )
    return result, instance


def test_intake_run_reports_counts_in_its_metadata(anubis_env: str) -> None:
    unrouted = make_order(4)
    unrouted["offer"]["university_id"] = unrouted["offer"]["education_group_id"] = 999
    result, _ = run_intake(
        [make_order(1), make_order(2, email="x@"), make_order(3, offer=ESTACIO_OFFER), unrouted]
    )
    assert result.success
    (materialization,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["created"].value == 3
    assert metadata["unrouted"].value == 1
    assert metadata["by_integration_origin_status"].value == {
        "kroton/quero_bolsa/to_sync": 1,
        "kroton/quero_bolsa/invalid": 1,
        "estacio/quero_bolsa/to_sync_lgpd": 1,
    }


def test_no_valid_cpf_appears_unmasked_in_the_run_log(anubis_env: str) -> None:
    orders = [make_order(i) for i in range(1, 10)]
    orders.append(make_order(10, email="broken@"))
    orders.append(make_order(11, cpf=make_cpf(1)))  # duplicate CPF: its message names the CPF
    result, instance = run_intake(orders)
    assert result.success
    records = instance.all_logs(result.run_id)
    text = "\n".join(
        f"{r.user_message} {r.dagster_event.event_specific_data if r.dagster_event else ''}"
        for r in records
    )
    raw_cpfs = {make_cpf(i) for i in range(1, 11)}
    found = {re.sub(r"\D", "", m) for m in CPF_PATTERN.findall(text)}
    assert not (found & raw_cpfs)
    assert fmt_cpf(make_cpf(1)) not in text
    assert "aluno1@example.com.br" not in text


def committed(source: OrdersSource) -> int | None:
    with session_scope(default_database_url()) as session:
        key = read_watermark(session, source.watermark_name)
    return key.id if key else None


def test_a_poison_order_is_quarantined_alerted_once_and_the_watermark_moves_past_it(
    anubis_env: str, sink: WebhookSink
) -> None:
    source = OrdersSource()
    source.load([make_order(i) for i in range(1, 6)])
    (batch,) = plan_batches(source, None)
    job = defs.resolve_job_def("intake_job")
    config = batch.run_config()
    with refusing_orders(anubis_env, [2, 4], "server refused the row"):
        result = job.execute_in_process(run_config=config, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert (metadata["created"].value, metadata["quarantined"].value) == (3, 2)
    assert [q["order_id"] for q in metadata["quarantined_examples"].value] == [2, 4]
    assert committed(source) == 5  # the batch and the watermark moved past the poison orders
    alerts = [t for t in sink.received if "quarantined" in t]
    assert len(alerts) == 1 and "order 2 (kroton)" in alerts[0] and "order 4" in alerts[0]

    rerun = job.execute_in_process(  # the operator re-ingests them once the cause is fixed
        run_config={"ops": {"ingest_paid_orders": {"config": {"order_ids": [2, 4]}}}}
    )
    assert rerun.output_for_node("ingest_paid_orders")["created"] == 2
    with session_scope(default_database_url()) as session:
        entries = session.scalars(select(IntakeQuarantine)).all()
    assert [(q.order_id, q.resolved_at is not None) for q in entries] == [(2, True), (4, True)]


def test_a_database_outage_fails_the_run_and_keeps_the_watermark(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from anubis_dagster.intake import quarantine, write

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    real, real_quarantine = write._write_decisions, quarantine._upsert_quarantine
    monkeypatch.setattr(write, "_write_decisions", down)
    monkeypatch.setattr(quarantine, "_upsert_quarantine", down)
    source = OrdersSource()
    source.load([make_order(1), make_order(2)])
    (batch,) = plan_batches(source, None)
    job = defs.resolve_job_def("intake_job")
    result = job.execute_in_process(run_config=batch.run_config(), raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("ingest_paid_orders")
    assert failure is not None and "could be neither written nor quarantined" in str(failure.error)
    assert committed(source) is None  # the next run starts before these orders

    monkeypatch.setattr(write, "_write_decisions", real)
    monkeypatch.setattr(quarantine, "_upsert_quarantine", real_quarantine)
    rerun = job.execute_in_process(run_config=batch.run_config())
    assert rerun.output_for_node("ingest_paid_orders")["created"] == 2
    assert committed(source) == 2


def test_a_missing_orders_table_is_one_clear_failure(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_ORDERS_TABLE", "platform_orders")
    OrdersSource(table="orders").load([make_order(1)])  # another table exists, not this one
    result = defs.resolve_job_def("intake_job").execute_in_process(
        run_config={
            "ops": {
                "ingest_paid_orders": {
                    "config": {"until": '{"updated_at": "2026-11-01T10:00:01+00:00", "id": 1}'}
                }
            }
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("ingest_paid_orders")
    assert failure is not None
    assert "ANUBIS_ORDERS_TABLE: the orders table or view 'platform_orders' does not exist" in str(
        failure.error
    )
    assert not OrdersSource().exists()  # intake never creates it
