"""Property: hostile orders never crash intake, never pass as valid, and never cost a valid order.

Hypothesis mixes valid orders (both integrations) with hostile ones: NUL and control characters,
10 MB strings, lists/objects/numbers where text is expected, emoji and RTL marks, SQL and
template injection strings, extreme dates, huge or mistyped ids, and payloads that are not JSON
objects at all. Each batch goes through the real intake on the test's backend (SQLite and
PostgreSQL): the service directly, and `intake_job` reading a real orders table. Every order
hostile in a field its integration uses (its adapter, routing or intake: `Route.fields`) must end
`invalid` with a reason naming the field it broke, or quarantined with a reason; one hostile
only in a field nobody uses is created in the first status like a valid one (issue 21), unless
it breaks the whole document's size bound; every valid order must be created in its
integration's first status; nothing may raise.

Hostility goes into the student and order fields validation owns. SQL injection text is aimed at
fields with a format (name, e-mail, CPF, phone, CEP, birth date): in a free-text address it is
just text, stored through bound parameters, and accepting it is correct.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.db.models import IntakeQuarantine, Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.definitions import defs as code_location
from anubis_dagster.intake.orders_source import OrderRow, OrdersSource
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.routes import load_routes
from anubis_dagster.intake.service import ingest
from anubis_dagster.integrations.base import initial_status_for
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER, make_cpf, make_order

defs = code_location()  # the lazy code location, built as Dagster builds it

TODAY = date(2026, 11, 23)
TEN_MB = "A" * (10 * 1024 * 1024)
SQL = ["Robert'); DROP TABLE subscriptions;--", "' OR '1'='1' --", "1; SELECT pg_sleep(10)"]
TEMPLATE = ["{{7*7}}", "${jndi:ldap://x/a}", "<script>alert(1)</script>", "#{7*7}", "`id`"]
INVISIBLE = ["Maria\u202eavilS", "Ma\u200bria", "Maria\u200f Silva", "Maria 😀 Silva", "\U0001f4a9"]
CONTROL = ["Maria\x00Silva", "\x00", "Maria\x1bSilva", "Maria\x07", "a\x00" * 1000]
WRONG_TYPES: list[Any] = [["Maria", "Silva"], {"first": "Maria"}, {}, [], 42, 0, -1.5, True, False]
WRONG_TYPES += [float("nan"), float("inf"), 10**30]
DATES = ["0001-01-01", "9999-12-31", "1900-01-01", "1899-12-31", "2100-01-01", "2026-13-45"]
DATES += ["-001-01-01", "1998-04-12T99:99", "", " 1998-04-12", "12/04/1998"]
IDS: list[Any] = [2**63, 2**64, 10**30, -1, 0, True, False, 2.7, "123", "9" * 30, [1], {"id": 1}]

FORMATTED = ("base_user.full_name", "base_user.email", "base_user.cpf", "base_user.phone_number")
FORMATTED += ("base_user.address.zipcode",)
FREE_TEXT = ("base_user.address.address", "base_user.address.neighborhood")
FREE_TEXT += ("base_user.address.city", "offer.course.name")
ID_FIELDS = ("id", "base_user.id", "offer.course.id")

hostile_text = st.sampled_from([TEN_MB, *CONTROL, *INVISIBLE, *TEMPLATE]) | st.sampled_from(
    WRONG_TYPES
)
hostile_formatted = hostile_text | st.sampled_from(SQL)
hostile_control = st.builds(
    lambda a, c, b: f"Maria{a}{c}{b}",
    st.text(max_size=5),
    st.sampled_from(["\x00", "\x01", "\x7f", "\u202e", "\u200b", "\ufeff"]),
    st.text(max_size=5),
)
mutation = st.one_of(
    st.tuples(st.sampled_from(FORMATTED), hostile_formatted | hostile_control),
    st.tuples(st.sampled_from(FREE_TEXT), hostile_text | hostile_control),
    st.tuples(st.just("base_user.birth_date"), st.sampled_from(DATES) | hostile_formatted),
    st.tuples(st.sampled_from(ID_FIELDS), st.sampled_from(IDS)),
)
unreadable = st.sampled_from(
    ["{not json", '["a", "list"]', '"text"', "42", "null", '{"price": NaN}', "[" * 50_000, ""]
)
valid_name = st.text(
    alphabet=st.characters(categories=["Lu", "Ll"]), min_size=2, max_size=20
) | st.sampled_from(["Ana-Lúcia D'Ávila", "José da Silva Jr.", "Ñandú Çedilha"])


@dataclass(frozen=True)
class Case:
    kind: str  # valid | hostile | unreadable
    field: str | None
    payload: Any  # the order (dict) or raw text


@st.composite
def cases(draw: st.DrawFn) -> list[Case]:
    result = []
    for _ in range(draw(st.integers(min_value=2, max_value=8))):
        kind = draw(st.sampled_from(["valid", "valid", "hostile", "hostile", "unreadable"]))
        if kind == "unreadable":
            result.append(Case(kind, None, draw(unreadable)))
            continue
        offer = draw(st.sampled_from([KROTON_OFFER, ESTACIO_OFFER]))
        order = make_order(0, offer=offer, full_name=draw(valid_name))
        if kind == "hostile":
            field, value = draw(mutation)
            node = order
            *parents, leaf = field.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
            result.append(Case(kind, field, order))
        else:
            result.append(Case(kind, None, order))
    return result


_ids = itertools.count(1)
_stamp = itertools.count(1)


def numbered(batch: list[Case]) -> list[tuple[int, datetime, Case]]:
    """Fresh order ids, CPFs and timestamps: examples share one database, and a CPF seen
    before would make a valid order a legitimate `duplicate`."""
    rows = []
    for case in batch:
        row_id = next(_ids)
        stamp = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=next(_stamp))
        payload = case.payload
        if isinstance(payload, dict):
            payload = json.loads(json.dumps(payload, allow_nan=True))  # a fresh copy
            if case.field != "id":
                payload["id"] = row_id
            if case.field != "base_user.cpf":
                payload["base_user"]["cpf"] = make_cpf(row_id)
            payload["updated_at"] = stamp.isoformat()
        rows.append((row_id, stamp, Case(case.kind, case.field, payload)))
    return rows


def check_outcome(db_url: str, rows: list[tuple[int, datetime, Case]]) -> None:
    ids = [row_id for row_id, _, _ in rows]
    with session_scope(db_url) as session:
        subs = {
            s.order_id: s
            for s in session.scalars(select(Subscription).where(Subscription.order_id.in_(ids)))
        }
        quarantined = {
            q.order_id: q
            for q in session.scalars(
                select(IntakeQuarantine).where(IntakeQuarantine.order_id.in_(ids))
            )
        }
        integrations = {
            i: key for i, key in session.execute(text("SELECT id, key FROM integrations")).all()
        }
        routes = {r.integration_id: r for r in load_routes(session, initial_status_for)}
    first_status = {"kroton": "to_sync", "estacio": "to_sync_lgpd"}
    for row_id, _, case in rows:
        sub = subs.get(row_id)
        if case.kind == "valid":
            assert sub is not None, f"valid order {row_id} was not created"
            assert sub.status == first_status[integrations[sub.integration_id]], sub.last_error
            assert row_id not in quarantined
        elif case.kind == "hostile":
            assert case.field is not None
            if sub is not None and not routes[sub.integration_id].fields[
                sub.integration_filter_id
            ].covers(case.field):
                # nobody reads the field: only the whole document's bounds may refuse it
                if sub.status == "invalid":
                    assert sub.last_error and "order - order document is" in sub.last_error
                else:
                    assert sub.status == first_status[integrations[sub.integration_id]]
            elif sub is not None:
                assert sub.status == "invalid", f"hostile {case.field} passed as {sub.status}"
                assert sub.last_error and case.field in sub.last_error, sub.last_error
                assert sub.active_cpf is None
            else:
                entry = quarantined.get(row_id)
                assert entry is not None and entry.reason, f"hostile order {row_id} vanished"
        else:
            assert sub is None
            entry = quarantined[row_id]
            assert entry.kind == "unreadable" and entry.reason


HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@HYPOTHESIS
@given(batch=cases())
def test_hostile_orders_through_the_intake_service(db_url: str, batch: list[Case]) -> None:
    rows = numbered(batch)
    with session_scope(db_url) as session:
        sync_integrations(session, load_integrations())
        routes = load_routes(session, initial_status_for)
        report = ingest(
            session,
            [OrderRow(row_id, stamp, case.payload) for row_id, stamp, case in rows],
            routes,
            today=TODAY,
            run_id="hypothesis",
        )
    assert report.errors == 0
    assert report.unrouted == []
    check_outcome(db_url, rows)


def put_rows(source: OrdersSource, rows: list[tuple[int, datetime, Case]]) -> None:
    """Rows as the platform would hold them: JSON text in the payload column, or raw text that
    is not JSON at all (the contract allows a text column)."""
    source.ensure_table()
    statement = text(
        f"INSERT INTO {source.table.name} (id, origin, checkout_step, created_at, updated_at, "
        "payload) VALUES (:id, 'quero_bolsa', 'paid', :stamp, :stamp, :payload)"
    )
    values = [
        {
            "id": row_id,
            "stamp": stamp.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"),
            "payload": case.payload
            if isinstance(case.payload, str)
            else json.dumps(case.payload, allow_nan=True),
        }
        for row_id, stamp, case in rows
    ]
    with source.engine.begin() as connection:
        connection.execute(statement, values)


@settings(HYPOTHESIS, max_examples=8)
@given(batch=cases())
def test_hostile_orders_through_the_intake_job(anubis_env: str, batch: list[Case]) -> None:
    rows = numbered(batch)
    source = OrdersSource()
    put_rows(source, rows)
    last = rows[-1][1]
    for planned in plan_batches(source, None, now=last + timedelta(hours=1), settle_seconds=0):
        result = defs.resolve_job_def("intake_job").execute_in_process(
            run_config=planned.run_config(),
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert result.success
    check_outcome(anubis_env, rows)
