"""Set-based intake: a chunk costs a few statements whatever its size, and a row the database
refuses is isolated by bisection (SQLite and PostgreSQL), not by a savepoint per order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.db.models import IntakeQuarantine, Subscription, SubscriptionEvent
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.intake.orders_source import OrderRow, parse_timestamp
from anubis_dagster.intake.report import IntakeReport
from anubis_dagster.intake.routes import load_routes
from anubis_dagster.intake.service import ingest
from anubis_dagster.integrations.base import initial_status_for
from anubis_dagster_tests.db_faults import refusing_orders
from anubis_dagster_tests.factories import make_cpf, make_order

TODAY = date(2026, 11, 23)
SIZE = 101  # orders per chunk in these tests; all Kroton


@contextmanager
def counting_statements(url: str) -> Iterator[list[str]]:
    """Every statement the app DB receives while inside (savepoints included)."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    engine = get_engine(url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def intake(
    url: str, orders: list[dict[str, Any]], statements: list[str] | None = None
) -> IntakeReport:
    """One chunk through `ingest`; `statements` gets the ones of the chunk's transaction."""
    with session_scope(url) as session:
        routes = load_routes(session, initial_status_for)
    rows = [OrderRow(o["id"], parse_timestamp(o["updated_at"]), o) for o in orders]
    with counting_statements(url) as seen, session_scope(url) as session:
        report = ingest(session, rows, routes, today=TODAY, run_id="bulk")
    if statements is not None:
        statements.extend(seen)
    return report


@pytest.fixture
def url(db_url: str) -> str:
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
    return db_url


def statuses(url: str) -> dict[int, str]:
    with session_scope(url) as session:
        return dict(session.execute(select(Subscription.order_id, Subscription.status)).all())


def test_a_clean_chunk_costs_the_same_few_statements_at_any_size(url: str) -> None:
    small = [make_order(i) for i in range(1, 4)]
    large = [make_order(i) for i in range(10, 10 + SIZE)]
    few: list[str] = []
    many: list[str] = []
    again: list[str] = []
    assert intake(url, small, few).created == 3
    assert intake(url, large, many).created == SIZE
    # the planner-statistics check (PostgreSQL: 1 or 2 reads), 3 lookups, the ids, a savepoint
    # around 2 inserts, the transaction (SQLite: BEGIN too)
    assert len(many) == len(few) <= 12, many
    report = intake(url, large, again)
    assert (report.created, report.unchanged) == (0, SIZE)
    assert not {"INSERT", "UPDATE", "SAVEPOINT"} & set(again)  # a re-ingest only reads
    with session_scope(url) as session:
        events = session.scalar(select(func.count()).select_from(SubscriptionEvent))
    assert events == 3 + SIZE


def test_a_poison_order_in_the_middle_costs_a_few_statements_and_only_itself(url: str) -> None:
    orders = [make_order(i) for i in range(1, SIZE + 1)]
    poison = SIZE // 2 + 1
    clean: list[str] = []
    used: list[str] = []
    intake(url, [make_order(i) for i in range(1000, 1000 + SIZE)], clean)
    with refusing_orders(url, [poison], "refused by the test"):
        report = intake(url, orders, used)
    assert (report.created, report.errors) == (SIZE - 1, 0)
    assert [(q["order_id"], q["kind"]) for q in report.quarantined] == [(poison, "write_failed")]
    found = statuses(url)
    assert poison not in found
    assert all(found[i] == "to_sync" for i in range(1, SIZE + 1) if i != poison)
    # bisection: about two tries per halving, each a savepoint and its inserts; a savepoint per
    # order (the old way) would be 4 statements an order, 400 here
    extra = len(used) - len(clean)
    assert extra <= 8 * math.ceil(math.log2(SIZE)) + 12, used
    assert len(used) < SIZE
    # the database says which row it refused (COPY's context; executemany stops there): no
    # bisection (7 tries), but the rows before it, it alone, the rows after it, its quarantine
    # (a savepoint per try, two on PostgreSQL: the COPY's own)
    per_try = 2 if url.startswith("postgresql") else 1
    assert used.count("SAVEPOINT") - clean.count("SAVEPOINT") <= 3 * per_try + 1, used

    report = intake(url, orders)  # the cause fixed: it goes through, the quarantine resolves
    assert (report.created, report.unchanged, report.quarantined) == (1, SIZE - 1, [])
    with session_scope(url) as session:
        (entry,) = session.scalars(select(IntakeQuarantine)).all()
        assert entry.order_id == poison and entry.resolved_at is not None


def test_several_poison_orders_are_each_isolated(url: str) -> None:
    orders = [make_order(i) for i in range(1, SIZE + 1)]
    poison = [1, 37, 38, SIZE]
    with refusing_orders(url, poison, "refused by the test"):
        report = intake(url, orders)
    assert sorted(q["order_id"] for q in report.quarantined) == poison
    assert report.created == SIZE - len(poison)
    assert set(statuses(url)) == set(range(1, SIZE + 1)) - set(poison)


def test_when_the_cpf_holder_is_refused_the_next_order_of_that_cpf_takes_its_place(
    url: str,
) -> None:
    """Decisions after a refused row are made again: the later order of the same student was
    going to be a `duplicate` of a subscription that now does not exist."""
    cpf = make_cpf(777)
    orders = [make_order(i) for i in range(1, 11)]
    orders[3] = make_order(4, cpf=cpf)
    orders[7] = make_order(8, cpf=cpf)
    with refusing_orders(url, [4], "refused by the test"):
        report = intake(url, orders)
    assert [q["order_id"] for q in report.quarantined] == [4]
    found = statuses(url)
    assert found[8] == "to_sync"
    with session_scope(url) as session:
        holder = session.scalars(select(Subscription).where(Subscription.order_id == 8)).one()
        assert holder.active_cpf == cpf


def test_ids_follow_the_orders_and_a_duplicate_names_its_holder(url: str) -> None:
    cpf = make_cpf(55)
    orders = [make_order(1), make_order(2, cpf=cpf), make_order(3), make_order(4, cpf=cpf)]
    intake(url, orders)
    with session_scope(url) as session:
        subs = session.scalars(select(Subscription).order_by(Subscription.id)).all()
        events = session.scalars(select(SubscriptionEvent).order_by(SubscriptionEvent.id)).all()
    assert [s.order_id for s in subs] == [1, 2, 3, 4]
    assert [e.subscription_id for e in events] == [s.id for s in subs]
    assert subs[3].status == "duplicate"
    assert f"active subscription #{subs[1].id} for kroton" in (subs[3].last_error or "")
    assert cpf not in (subs[3].last_error or "") and cpf not in (events[3].error_message or "")


def test_an_order_another_run_just_created_is_left_alone(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: another transaction commits the same (integration, order) between this
    chunk's read and its write; `ON CONFLICT DO NOTHING` skips it and its event, the rest go
    in. (SQLite holds the write lock from the read on: no other writer can get in between.)"""
    if not url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    from anubis_dagster.intake import decide

    real = decide.allocate_subscription_ids
    first = make_order(2)

    def racing(session: Any, count: int, above: int = 0) -> list[int]:
        monkeypatch.setattr(decide, "allocate_subscription_ids", real)  # race only once
        with session_scope(url) as other:  # the other run, committed before our write
            routes = load_routes(other, initial_status_for)
            row = OrderRow(2, parse_timestamp(first["updated_at"]), first)
            ingest(other, [row], routes, today=TODAY, run_id="other")
        return real(session, count, above=above)

    monkeypatch.setattr(decide, "allocate_subscription_ids", racing)
    report = intake(url, [make_order(1), first, make_order(3)])
    assert (report.created, report.unchanged, report.quarantined) == (2, 1, [])
    with session_scope(url) as session:
        runs = session.execute(
            text(
                "SELECT s.order_id, e.dagster_run_id FROM subscriptions s "
                "JOIN subscription_events e ON e.subscription_id = s.id ORDER BY s.order_id"
            )
        ).all()
    assert [tuple(r) for r in runs] == [(1, "bulk"), (2, "other"), (3, "bulk")]


def test_a_chunk_is_written_in_units_and_a_refusal_costs_only_its_unit(url: str) -> None:
    """A chunk larger than `WRITE_UNIT` is written a unit per savepoint: a refused row is
    found in its own unit (the units before it stay written), and the decisions after it are
    made again, across units (the later order of the refused student's CPF holds it now)."""
    from anubis_dagster.intake.write import WRITE_UNIT

    size = 2 * WRITE_UNIT + 50
    cpf = make_cpf(4242)
    orders = [make_order(i) for i in range(1, size + 1)]
    orders[9] = make_order(10, cpf=cpf)  # unit 1, refused
    orders[WRITE_UNIT + 20] = make_order(WRITE_UNIT + 21, cpf=cpf)  # unit 2: takes its place
    poison = [10, 2 * WRITE_UNIT + 7]  # units 1 and 3
    clean: list[str] = []
    used: list[str] = []
    intake(url, [make_order(i) for i in range(5000, 5000 + size)], clean)
    with refusing_orders(url, poison, "refused by the test"):
        report = intake(url, orders, used)
    assert sorted(q["order_id"] for q in report.quarantined) == poison
    assert (report.created, report.errors) == (size - 2, 0)
    found = statuses(url)
    assert set(found) >= set(range(1, size + 1)) - set(poison)
    assert found[WRITE_UNIT + 21] == "to_sync"
    with session_scope(url) as session:
        holder = session.scalars(
            select(Subscription).where(Subscription.order_id == WRITE_UNIT + 21)
        ).one()
        assert holder.active_cpf == cpf
    # per refusal: a bisection of one unit, not of the chunk
    extra = len(used) - len(clean)
    assert extra <= 2 * (8 * math.ceil(math.log2(WRITE_UNIT)) + 12), used


def test_rows_written_in_bulk_read_back_as_the_orm_writes_them(url: str) -> None:
    """`write_rows` bypasses SQLAlchemy's parameter processing (COPY on PostgreSQL, the
    driver's executemany on SQLite): what it stores reads back through the ORM exactly as an
    ORM write of the same values does (aware UTC datetimes, JSON documents, None as null),
    with registered secrets redacted as the cursor hook would."""
    from datetime import UTC, datetime, timedelta, timezone

    from anubis_dagster.core.redaction import register_secrets
    from anubis_dagster.core.states import Status
    from anubis_dagster.db.transitions import (
        allocate_subscription_ids,
        event_values,
        subscription_values,
        write_rows,
    )

    secret = "k3y-that-must-not-be-stored"
    register_secrets([secret], source="bulk-round-trip")
    try:
        order = make_order(1, name="José D'Ávila")
        order["notes"] = {"nested": [1, 2.5, None, True, "São Paulo"], "leak": f"key={secret}"}
        stamp = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-3)))
        whole = datetime(2026, 11, 23, 12, 30, 15, tzinfo=UTC)  # no microseconds: stored alike
        with session_scope(url) as session:
            routes = load_routes(session, initial_status_for)
            (sid,) = allocate_subscription_ids(session, 1)
            values = subscription_values(
                integration_id=routes[0].integration_id,
                integration_filter_id=None,
                order=order,
                order_id=1,
                cpf=None,
                status=Status.INVALID,
                error=f"bad {secret}",
                order_updated_at=stamp,
                scheduled_to=None,
            )
            values.update(id=sid, created_at=stamp, updated_at=whole)
            event = event_values(
                subscription_id=sid,
                integration_id=routes[0].integration_id,
                kind="transition",
                status="invalid",
                operation="intake",
                run_id=None,
                response={"problems": [{"field": "x", "message": secret}]},
                duration_ms=1.5,
            )
            event.update(created_at=stamp, updated_at=stamp)
            assert write_rows(session, subscriptions=[values], updates=[], events=[event]) == {sid}
        with session_scope(url) as session:
            stored = session.get(Subscription, sid)
            assert stored is not None
            assert stored.created_at == stamp and stored.created_at.tzinfo is not None
            assert stored.order_updated_at == stamp.astimezone(UTC)
            # stored in the form SQL compares with (SQLite keeps text: the same text)
            found = select(func.count()).where(
                Subscription.id == sid,
                Subscription.created_at == stamp,
                Subscription.updated_at == whole,
                Subscription.updated_at >= whole,
                Subscription.order_updated_at <= stamp,
                Subscription.order_updated_at > stamp - timedelta(microseconds=1),
            )
            assert session.scalar(found) == 1
            assert stored.scheduled_to is None and stored.ies_data == {}
            assert stored.payload["base_user"] == order["base_user"]
            assert stored.payload["notes"]["nested"] == [1, 2.5, None, True, "São Paulo"]
            assert secret not in str(stored.payload) and secret not in (stored.last_error or "")
            (written,) = session.scalars(
                select(SubscriptionEvent).where(SubscriptionEvent.subscription_id == sid)
            ).all()
            assert written.request is None and written.duration_ms == 1.5
            assert written.created_at == stamp and written.http_status is None
            assert secret not in str(written.response)
            assert written.response["problems"][0]["field"] == "x"
    finally:
        register_secrets([], source="bulk-round-trip")


def test_values_repeated_across_a_bulk_write_are_each_stored_as_written(url: str) -> None:
    """The bulk writer converts a value it saw on the row before once (the chunk's shared
    `now`, a status or run id on every row): rows sharing one datetime object, then a row with
    another, read back each with its own; a text repeated on every row is redacted on every
    row; and a secret registered after a write is redacted in the next one."""
    from datetime import UTC, datetime, timedelta

    from anubis_dagster.core.redaction import register_secrets
    from anubis_dagster.core.states import Status
    from anubis_dagster.db.transitions import (
        allocate_subscription_ids,
        subscription_values,
        write_rows,
    )

    now = datetime(2026, 12, 7, 6, 30, 1, 250000, tzinfo=UTC)
    later = now + timedelta(seconds=1, microseconds=5)

    def rows(session: Any, first_order: int, stamps: list[datetime], error: str) -> list[Any]:
        routes = load_routes(session, initial_status_for)
        ids = allocate_subscription_ids(session, len(stamps))
        out = []
        for offset, (sid, stamp) in enumerate(zip(ids, stamps, strict=True)):
            order_id = first_order + offset
            values = subscription_values(
                integration_id=routes[0].integration_id,
                integration_filter_id=None,
                order=make_order(order_id),
                order_id=order_id,
                cpf=None,
                status=Status.INVALID,
                order_updated_at=stamp,
            )
            values.update(id=sid, created_at=stamp, updated_at=now, last_error=error)
            out.append(values)
        return out

    secret, late = "s3cret-repeated-on-every-row", "l4te-secret-registered-between-writes"
    register_secrets([secret], source="bulk-repeats")
    try:
        with session_scope(url) as session:
            first = rows(session, 1, [now, now, later, now], f"bad {secret} {late}")
            write_rows(session, subscriptions=first, updates=[], events=[])
        register_secrets([secret, late], source="bulk-repeats")
        with session_scope(url) as session:
            second = rows(session, 11, [later, later], f"bad {secret} {late}")
            write_rows(session, subscriptions=second, updates=[], events=[])
        with session_scope(url) as session:
            stored = {
                s.order_id: s
                for s in session.scalars(select(Subscription).order_by(Subscription.order_id))
            }
        expected = {1: now, 2: now, 3: later, 4: now, 11: later, 12: later}
        assert {k: s.created_at for k, s in stored.items()} == expected
        assert {k: s.order_updated_at for k, s in stored.items()} == expected
        assert all(s.updated_at == now for s in stored.values())
        for order_id, subscription in stored.items():
            error = subscription.last_error or ""
            assert secret not in error and error.startswith("bad ")
            assert (late in error) == (order_id < 10)  # registered for the second write only
    finally:
        register_secrets([], source="bulk-repeats")


def test_decisions_made_again_take_ids_no_kept_decision_holds(url: str) -> None:
    """After a refusal, the decisions that depended on the refused one are made again with new
    ids while the others keep theirs (rows not written yet): on SQLite, ids come after the
    table's maximum, which does not know the kept ones. Two students' later orders are decided
    again here, with kept decisions around them: none may collide."""
    cpf = make_cpf(9090)
    orders = [make_order(i) for i in range(1, 31)]
    orders[4] = make_order(5, cpf=cpf)  # refused: its CPF's later orders are decided again
    orders[9] = make_order(10, cpf=cpf)  # takes the CPF
    orders[14] = make_order(15, cpf=cpf)  # duplicate of order 10 now
    with refusing_orders(url, [5], "refused by the test"):
        report = intake(url, orders)
    assert [q["order_id"] for q in report.quarantined] == [5]
    assert (report.created, report.errors) == (29, 0)
    found = statuses(url)
    assert set(found) == set(range(1, 31)) - {5}
    assert (found[10], found[15]) == ("to_sync", "duplicate")
    with session_scope(url) as session:
        ids = session.scalars(select(Subscription.id)).all()
        assert len(ids) == len(set(ids)) == 29


def test_a_refused_write_leaves_no_reference_cycle_holding_the_chunk(url: str) -> None:
    """A refusal's error is kept without its traceback (and `write_rows` makes it outside the
    writer's frame): a traceback's frames hold their callers, among them the one keeping the
    error in a local, a cycle that held the whole chunk (its orders, candidates, decisions)
    until the cyclic collector ran, which intake pauses during a chunk. What the collector
    finds afterwards must hold none of them (other threads' garbage does not count)."""
    import gc

    from anubis_dagster.intake.candidates import Candidate, Decision

    poison = 7
    orders = [make_order(i) for i in range(1, SIZE + 1)]
    with refusing_orders(url, [poison], "refused by the test"):
        gc.collect()
        gc.disable()
        try:
            report = intake(url, orders)
            gc.set_debug(gc.DEBUG_SAVEALL)  # what is collected stays in gc.garbage to look at
            gc.collect()
            held = sum(isinstance(o, OrderRow | Candidate | Decision) for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert [q["order_id"] for q in report.quarantined] == [poison]
    assert held == 0, f"{held} of the chunk's objects were held by a reference cycle"
