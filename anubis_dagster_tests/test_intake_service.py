"""Intake rules on a real database (SQLite and PostgreSQL), without Dagster."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.db.models import IntakeQuarantine, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.intake.orders_source import OrderRow, parse_timestamp
from anubis_dagster.intake.routes import load_routes
from anubis_dagster.intake.service import ingest
from anubis_dagster.integrations.base import initial_status_for
from anubis_dagster_tests.db_faults import refusing_orders
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_cpf, make_order

TODAY = date(2026, 11, 23)


def rows(*orders: dict) -> list[OrderRow]:
    return [OrderRow(o["id"], parse_timestamp(o["updated_at"]), o) for o in orders]


def run_intake(db_url: str, *orders: dict):
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
        routes = load_routes(session, initial_status_for)
        return ingest(session, rows(*orders), routes, today=TODAY, run_id="test-run")


def subs(session: Session) -> list[Subscription]:
    return list(session.scalars(select(Subscription).order_by(Subscription.id)))


def test_valid_orders_become_subscriptions_in_their_adapters_first_status(db_url: str) -> None:
    report = run_intake(db_url, make_order(1), make_order(2, offer=ESTACIO_OFFER))
    assert report.created == 2
    with session_scope(db_url) as session:
        statuses = [(s.order_id, s.status, s.cpf) for s in subs(session)]
        events = session.scalars(select(SubscriptionEvent)).all()
    assert statuses == [(1, "to_sync", make_cpf(1)), (2, "to_sync_lgpd", make_cpf(2))]
    assert [(e.status, e.operation_name, e.dagster_run_id) for e in events] == [
        ("to_sync", "intake", "test-run"),
        ("to_sync_lgpd", "intake", "test-run"),
    ]
    assert report.by_outcome == {
        "kroton/quero_bolsa/to_sync": 1,
        "estacio/quero_bolsa/to_sync_lgpd": 1,
    }


def test_the_same_batch_twice_creates_nothing_new(db_url: str) -> None:
    batch = [make_order(i) for i in range(1, 6)] + [make_order(6, email="bad")]
    first = run_intake(db_url, *batch)
    second = run_intake(db_url, *batch)
    assert (first.created, second.created, second.unchanged) == (6, 0, 6)
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 6
        assert session.scalar(select(func.count()).select_from(SubscriptionEvent)) == 6


def test_invalid_order_keeps_field_level_reasons(db_url: str) -> None:
    run_intake(db_url, make_order(1, email="maria@", birth_date="1890-01-01"))
    with session_scope(db_url) as session:
        (sub,) = subs(session)
        event = session.scalars(select(SubscriptionEvent)).one()
    assert sub.status == "invalid"
    assert sub.active_cpf is None
    assert event.response == {
        "problems": [
            {"field": "base_user.email", "message": "e-mail is not a valid address"},
            {"field": "base_user.birth_date", "message": "birth date is before 1900"},
        ]
    }
    assert "base_user.email - e-mail is not a valid address" in event.error_message


def test_one_active_subscription_per_cpf_per_integration(db_url: str) -> None:
    cpf = make_cpf(99)
    report = run_intake(
        db_url,
        make_order(1, cpf=cpf),
        make_order(2, cpf=cpf),  # same student, same IES, same batch
        make_order(3, cpf=cpf, offer=ESTACIO_OFFER),  # another IES: allowed
    )
    assert report.created == 3
    run_intake(db_url, make_order(4, cpf=cpf))  # a later batch
    with session_scope(db_url) as session:
        result = [(s.order_id, s.status) for s in subs(session)]
        duplicate_event = session.scalars(
            select(SubscriptionEvent).where(SubscriptionEvent.status == "duplicate")
        ).first()
    assert result == [(1, "to_sync"), (2, "duplicate"), (3, "to_sync_lgpd"), (4, "duplicate")]
    assert cpf not in duplicate_event.error_message
    assert "already has active subscription #1" in duplicate_event.error_message


def test_a_released_cpf_can_start_again(db_url: str) -> None:
    cpf = make_cpf(5)
    run_intake(db_url, make_order(1, cpf=cpf))
    with session_scope(db_url) as session:
        from anubis_dagster.core.states import Status
        from anubis_dagster.db.transitions import transition

        sub = subs(session)[0]
        transition(session, sub, Status.EMPTY_COURSE, operation="test")
    run_intake(db_url, make_order(2, cpf=cpf))
    with session_scope(db_url) as session:
        assert [s.status for s in subs(session)] == ["empty_course", "to_sync"]


def test_unrouted_orders_are_counted_not_stored(db_url: str) -> None:
    order = make_order(1)
    order["offer"]["university_id"] = 999
    order["offer"]["education_group_id"] = 999
    report = run_intake(db_url, order, {"id": 2, "updated_at": "2026-11-01T00:00:00+00:00"})
    assert report.created == 0
    assert report.unrouted == [
        {"order_id": 1, "reason": "no integration filter matches the order"},
        {"order_id": 2, "reason": "no integration filter matches the order"},
    ]


def quarantine(session: Session) -> list[IntakeQuarantine]:
    return list(session.scalars(select(IntakeQuarantine).order_by(IntakeQuarantine.id)))


def test_an_unreadable_payload_is_quarantined_and_the_batch_goes_on(db_url: str) -> None:
    stamp = parse_timestamp("2026-11-01T00:00:00+00:00")
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
        routes = load_routes(session, initial_status_for)
        garbage = [
            OrderRow(1, stamp, "{not json"),
            OrderRow(3, stamp, '["a", "list"]'),
            OrderRow(4, stamp, '{"price": NaN}'),
            OrderRow(5, stamp, "[" * 100_000),
        ]
        report = ingest(session, [*garbage, *rows(make_order(2))], routes, today=TODAY)
    assert report.created == 1 and report.unrouted == [] and report.errors == 0
    assert [(q["order_id"], q["kind"], q["reason"]) for q in report.quarantined] == [
        (1, "unreadable", "order payload is not valid JSON"),
        (3, "unreadable", "order payload is not a JSON object"),
        (4, "unreadable", "order payload is not valid JSON"),
        (5, "unreadable", "order payload is nested too deeply to read"),
    ]
    with session_scope(db_url) as session:
        stored = [
            (q.order_id, q.integration_key, q.kind, q.resolved_at) for q in quarantine(session)
        ]
    assert stored == [
        (1, "", "unreadable", None),
        (3, "", "unreadable", None),
        (4, "", "unreadable", None),
        (5, "", "unreadable", None),
    ]


def test_unreadable_orders_seen_again_count_attempts_and_reopen(db_url: str) -> None:
    """The chunk's unreadable orders are recorded with one statement, which upserts as the
    row-by-row path does: another attempt, reopened if it had been resolved."""
    stamp = parse_timestamp("2026-11-01T00:00:00+00:00")
    garbage = [OrderRow(1, stamp, "{not json"), OrderRow(3, stamp, "[1]")]
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
        routes = load_routes(session, initial_status_for)
    for _ in range(2):
        with session_scope(db_url) as session:
            ingest(session, garbage, routes, today=TODAY, run_id="run-a")
    with session_scope(db_url) as session:
        for entry in quarantine(session):
            entry.resolved_at = stamp  # as if an operator had fixed them
    with session_scope(db_url) as session:
        report = ingest(session, garbage, routes, today=TODAY, run_id="run-b")
    assert [q["order_id"] for q in report.quarantined] == [1, 3]
    with session_scope(db_url) as session:
        stored = [
            (q.order_id, q.attempts, q.resolved_at, q.dagster_run_id) for q in quarantine(session)
        ]
    assert stored == [(1, 3, None, "run-b"), (3, 3, None, "run-b")]


def test_when_the_quarantine_refuses_one_unreadable_order_the_others_are_still_recorded(
    db_url: str,
) -> None:
    stamp = parse_timestamp("2026-11-01T00:00:00+00:00")
    garbage = [OrderRow(i, stamp, "[1]") for i in (1, 2, 3)]
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
        routes = load_routes(session, initial_status_for)
    refused = refusing_orders(db_url, [2], "quarantine refused", table="intake_quarantine")
    with refused, session_scope(db_url) as session:
        report = ingest(session, [*garbage, *rows(make_order(4))], routes, today=TODAY)
    assert [q["order_id"] for q in report.quarantined] == [1, 3]
    assert (report.errors, report.error_orders, report.created) == (1, [2], 1)
    with session_scope(db_url) as session:
        assert [q.order_id for q in quarantine(session)] == [1, 3]


def test_a_corrected_order_is_validated_again(db_url: str) -> None:
    broken = make_order(1, email="maria@")
    run_intake(db_url, broken)
    run_intake(db_url, broken)  # same version: nothing changes
    fixed = make_order(1, updated_at=parse_timestamp(broken["updated_at"]) + timedelta(hours=1))
    report = run_intake(db_url, fixed)
    assert report.revalidated == 1
    with session_scope(db_url) as session:
        (sub,) = subs(session)
        events = [
            e.status
            for e in session.scalars(select(SubscriptionEvent).order_by(SubscriptionEvent.id))
        ]
    assert sub.status == "to_sync" and sub.active_cpf == make_cpf(1)
    assert events == ["invalid", "to_sync"]


def test_a_write_the_database_refuses_is_quarantined_then_resolved(db_url: str) -> None:
    with refusing_orders(db_url, [2], "value too long for maria@x.com.br"):
        report = run_intake(db_url, make_order(1), make_order(2), make_order(3))
        assert (report.created, report.errors) == (2, 0)
        (entry,) = report.quarantined
        assert entry["order_id"] == 2 and entry["integration"] == "kroton"
        assert entry["kind"] == "write_failed"
        # the error class is the driver's (SQLite: IntegrityError, PostgreSQL: ProgrammingError)
        assert re.match(r"the database refused the write \(\w+Error\): ", entry["reason"])
        assert "maria@x.com.br" not in entry["reason"]  # masked
        with session_scope(db_url) as session:
            (row,) = quarantine(session)
            assert (row.order_id, row.integration_key, row.attempts, row.resolved_at) == (
                2,
                "kroton",
                1,
                None,
            )
            assert row.dagster_run_id == "test-run"
        again = run_intake(db_url, make_order(2))  # still failing: one row, counted again
        assert len(again.quarantined) == 1
    retry = run_intake(db_url, make_order(1), make_order(2), make_order(3))
    assert (retry.created, retry.unchanged, retry.quarantined) == (1, 2, [])
    with session_scope(db_url) as session:
        (row,) = quarantine(session)
        assert row.attempts == 2 and row.resolved_at is not None
        assert [s.order_id for s in subs(session)] == [1, 3, 2]


def test_when_even_the_quarantine_cannot_be_written_the_order_is_an_error(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is down: nothing can be recorded, so the order counts as an error (the run
    fails and the watermark stays before it) instead of being silently skipped."""
    from anubis_dagster.intake import quarantine, write

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(write, "_write_decisions", broken)
    monkeypatch.setattr(quarantine, "_upsert_quarantine", broken)
    report = run_intake(db_url, make_order(1))
    assert (report.errors, report.error_orders, report.quarantined) == (1, [1], [])


def test_hostile_values_of_an_invalid_order_are_stored_bounded(db_url: str) -> None:
    order = make_order(1, full_name="Maria" * 2_000_000, email="a\x00b@x.com")
    order["origin"] = "quero_bolsa" + "x" * 100
    order["offer"]["metadata"]["nan"] = float("nan")
    order["offer"]["metadata"]["lone"] = "\ud800"
    order["offer"]["metadata"]["big"] = 10**30
    report = run_intake(db_url, order)
    assert report.quarantined == [] and report.unrouted == [
        {"order_id": 1, "reason": "no integration filter matches the order"}
    ]
    order["origin"] = "quero_bolsa"
    report = run_intake(db_url, order)
    assert report.created == 1 and report.quarantined == []
    with session_scope(db_url) as session:
        (sub,) = subs(session)
        assert sub.status == "invalid"
        assert len(sub.payload["base_user"]["full_name"]) == 80
        assert "\x00" not in sub.payload["base_user"]["email"]
        assert sub.payload["offer"]["metadata"]["nan"] is None
        assert sub.payload["offer"]["metadata"]["big"] is None
        assert sub.first_name is not None and len(sub.first_name) <= 80


def test_intake_pauses_the_cyclic_collector_only_while_it_works(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ingest` turns Python's cyclic GC off for the chunk (its full collections cost a tenth of
    a first pass) and leaves it as it found it, also when the chunk fails."""
    import gc

    from anubis_dagster.intake import service

    seen: list[bool] = []
    real = service.write_candidates

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(gc.isenabled())
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "write_candidates", spy)
    assert gc.isenabled()
    run_intake(db_url, make_order(1))
    assert seen == [False] and gc.isenabled()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "write_candidates", broken)
    with pytest.raises(RuntimeError):
        run_intake(db_url, make_order(2))
    assert gc.isenabled()
    gc.disable()
    try:
        monkeypatch.setattr(service, "write_candidates", spy)
        run_intake(db_url, make_order(3))
        assert not gc.isenabled()  # the caller's choice is left alone
    finally:
        gc.enable()
