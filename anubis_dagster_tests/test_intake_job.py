"""The intake job end to end in Dagster, and what its run log shows (never a raw CPF)."""

from __future__ import annotations

import re

import dagster as dg

from anubis_dagster.definitions import defs
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster_tests.factories import ESTACIO_OFFER, fmt_cpf, make_cpf, make_order

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
    (materialization,) = [
        e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
    ]
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


def test_a_database_failure_fails_the_run_after_ingesting_the_rest(
    anubis_env: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    from anubis_dagster.intake import service

    real = service.create_subscription

    def flaky(session, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs["order_id"] == 2:
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return real(session, **kwargs)

    monkeypatch.setattr(service, "create_subscription", flaky)
    source = OrdersSource()
    source.load([make_order(1), make_order(2), make_order(3)])
    (batch,) = plan_batches(source, None)
    job = defs.resolve_job_def("intake_job")
    config = batch.run_config()
    result = job.execute_in_process(run_config=config, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("ingest_paid_orders")
    assert failure is not None and "1 orders could not be written" in str(failure.error)

    monkeypatch.setattr(service, "create_subscription", real)
    rerun = job.execute_in_process(run_config=config)  # the operator's re-execution
    assert rerun.success
    assert rerun.output_for_node("ingest_paid_orders")["created"] == 1
