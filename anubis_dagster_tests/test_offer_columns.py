"""The report's offer columns (issue 20, item 5): intake writes them with the payload, the
ORM keeps them in step, migration 0012 fills them for existing rows, and each holds what the
report showed when it read the JSON (`get_path`, falsy → "unknown", else `str`). Also
`anubis status`'s attempt window. Both backends where a database is involved."""

from __future__ import annotations

import importlib.util
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from anubis_dagster.cli import main
from anubis_dagster.cli.status import attempt_counts
from anubis_dagster.core.offer import (
    CONVERSION_PATHS,
    OFFER_COLUMNS,
    campus_label,
    modality_label,
    offer_columns,
)
from anubis_dagster.core.orders import get_path
from anubis_dagster.db.migrate import MIGRATIONS_DIR, downgrade, upgrade
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.intake.orders_source import parse_timestamp
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER, make_order
from anubis_dagster_tests.test_intake_service import run_intake

#: values an order's offer may hold where the report looks: text, empty, numbers, booleans,
#: null, nested documents, and steps that are not objects
ODD = ["EaD", "Presencial", "", None, 0, 5, 2.5, True, False, [], ["a"], {}, {"x": 1}, "0"]
ODD += ["Ç" * 200, "Ç" * 201 + "x", ["long"] * 80]  # cut at 200 characters (the index's bound)


def shown(value: Any) -> str | None:
    """What the report made of one path: falsy is unknown (None here), else `str` (cut at 200
    characters: validation refuses longer campus names, and the columns are indexed)."""
    return str(value)[:200] if value else None


def random_order(rng: random.Random) -> Any:
    shape = rng.random()
    if shape < 0.05:
        return rng.choice([None, [], "text", 7])
    if shape < 0.1:
        return {"offer": rng.choice([None, "x", [], {"course": rng.choice(ODD)}])}
    campus: Any = {}
    for key in ("name", "city"):
        if rng.random() < 0.8:
            campus[key] = rng.choice(ODD)
    if rng.random() < 0.1:
        campus = rng.choice(ODD)
    course: dict[str, Any] = {"campus": campus}
    if rng.random() < 0.85:
        course["kind"] = rng.choice(ODD)
    return {"offer": {"course": course}}


def test_each_column_holds_what_the_report_read_from_the_json() -> None:
    rng = random.Random(20)
    for _ in range(3000):
        order = random_order(rng)
        expected = {
            column: shown(get_path(order, path))
            for column, path in zip(OFFER_COLUMNS, CONVERSION_PATHS, strict=True)
        }
        assert offer_columns(order) == expected, order


def test_the_labels_are_the_reports() -> None:
    assert modality_label(None) == "unknown" and modality_label("EaD") == "EaD"
    assert campus_label("Paulista", "São Paulo") == "Paulista (São Paulo)"
    assert campus_label("Paulista", None) == "Paulista"
    assert campus_label(None, "São Paulo") == "unknown"
    assert campus_label("True", "2.5") == "True (2.5)"


def test_the_orm_keeps_the_columns_with_the_payload() -> None:
    sub = Subscription(payload=make_order(1))
    assert (sub.offer_kind, sub.offer_campus_name, sub.offer_campus_city) == (
        "Presencial",
        "Paulista",
        "São Paulo",
    )
    sub.payload = {"offer": {"course": {"kind": "EaD"}}}
    assert (sub.offer_kind, sub.offer_campus_name, sub.offer_campus_city) == ("EaD", None, None)


def stored_columns(db_url: str) -> dict[int, tuple[Any, ...]]:
    s = Subscription
    with session_scope(db_url) as session:
        rows = session.execute(
            select(s.order_id, s.offer_kind, s.offer_campus_name, s.offer_campus_city)
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_intake_writes_the_columns_and_a_corrected_order_rewrites_them(db_url: str) -> None:
    broken = make_order(3, email="maria@")  # invalid: kept, validated again when corrected
    broken["offer"]["course"]["campus"] = {"name": "Centro"}
    run_intake(db_url, make_order(1), make_order(2, offer=ESTACIO_OFFER), broken)
    estacio = ESTACIO_OFFER["course"]
    assert stored_columns(db_url) == {
        1: ("Presencial", "Paulista", "São Paulo"),
        2: (estacio["kind"], estacio["campus"]["name"], estacio["campus"]["city"]),
        3: ("Presencial", "Centro", None),
    }
    fixed = make_order(3, updated_at=parse_timestamp(broken["updated_at"]) + timedelta(hours=1))
    fixed["offer"]["course"]["kind"] = "EaD"
    assert run_intake(db_url, fixed).revalidated == 1
    assert stored_columns(db_url)[3] == ("EaD", "Paulista", "São Paulo")


def migration_0012() -> Any:
    path = MIGRATIONS_DIR / "versions" / "0012_scale_report_status.py"
    spec = importlib.util.spec_from_file_location("migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_fills_the_columns_of_existing_rows(db_url: str) -> None:
    """Rows written before 0012 (no columns) get them on upgrade, in batches, as the report
    read them; a second run of the backfill changes nothing."""
    rng = random.Random(12)
    orders = [random_order(rng) for _ in range(40)] + [make_order(99, offer=KROTON_OFFER)]
    with session_scope(db_url) as session:
        integration = Integration(name="Kroton", type="kroton", key="kroton")
        session.add(integration)
        session.flush()
        integration_id = integration.id
    downgrade(db_url, "0011_partner_breakers")
    old = sa.table(
        "subscriptions",
        *(sa.column(name) for name in ("integration_id", "order_id", "status", "attempts")),
        *(sa.column(name) for name in ("created_at", "updated_at")),
        sa.column("payload", sa.JSON()),
        sa.column("ies_data", sa.JSON()),
    )
    now = datetime.now(UTC)
    with get_engine(db_url).begin() as connection:
        connection.execute(
            old.insert(),
            [
                {
                    "integration_id": integration_id,
                    "order_id": n,
                    "status": "enrolled",
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                    "payload": order if isinstance(order, dict) else {"odd": order},
                    "ies_data": {},
                }
                for n, order in enumerate(orders, start=1)
            ],
        )
    upgrade(db_url)
    expected = {
        n: tuple(offer_columns(order if isinstance(order, dict) else {}).values())
        for n, order in enumerate(orders, start=1)
    }
    assert stored_columns(db_url) == expected
    assert expected[len(orders)] == ("Presencial", "Paulista", "São Paulo")
    # the backfill again, in batches of 3 over emptied columns: the same values
    backfill = migration_0012().backfill
    with get_engine(db_url).begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE subscriptions SET offer_kind = NULL, offer_campus_name = NULL, "
                "offer_campus_city = NULL"
            )
        )
        filled = backfill(connection, batch=3)
    assert filled == sum(1 for values in expected.values() if any(values))
    assert stored_columns(db_url) == expected


def test_status_counts_the_attempts_of_its_window(
    anubis_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    with session_scope(anubis_env) as session:
        integration = Integration(name="Kroton", type="kroton", key="kroton")
        session.add(integration)
        session.flush()
        for days_ago, outcome in [(1, "ok"), (6.9, "ok"), (8, "ok"), (40, "http_5xx")]:
            session.add(
                SubscriptionEvent(
                    integration_id=integration.id,
                    kind="attempt",
                    operation_name="register",
                    outcome=outcome,
                    created_at=now - timedelta(days=days_ago),
                )
            )
        session.add(  # not an attempt: never counted
            SubscriptionEvent(
                integration_id=integration.id, kind="transition", operation_name="register"
            )
        )
    with session_scope(anubis_env) as session:
        assert attempt_counts(session, now=now) == [("kroton", "register", "ok", "2")]
        assert attempt_counts(session, days=30, now=now) == [("kroton", "register", "ok", "3")]
        assert attempt_counts(session, days=0) == [
            ("kroton", "register", "http_5xx", "1"),
            ("kroton", "register", "ok", "3"),
        ]
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "attempts in the last 7 days:" in out
    assert "register   ok              2\ntotal: 2" in out and "http_5xx" not in out
    assert main(["status", "--attempt-days", "0"]) == 0
    out = capsys.readouterr().out
    assert "every attempt:" in out and "http_5xx" in out
    assert main(["status", "--attempt-days", "-1"]) == 2


def test_the_longest_offer_values_fit_the_reports_index(db_url: str) -> None:
    """Three values of 4-byte characters, cut at 200 each: PostgreSQL's index entry (~2.7 kB at
    most) still takes them, so no order is refused for its offer."""
    wide = "🎓" * 500
    order = {"offer": {"course": {"kind": wide, "campus": {"name": wide, "city": wide}}}}
    with session_scope(db_url) as session:
        integration = Integration(name="Kroton", type="kroton", key="kroton")
        session.add(integration)
        session.flush()
        session.add(
            Subscription(
                integration_id=integration.id, order_id=1, payload=order, status="enrolled"
            )
        )
    assert stored_columns(db_url) == {1: ("🎓" * 200,) * 3}
