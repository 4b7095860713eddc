"""The report aggregates in the database (issue 20): on a randomised app DB, on SQLite and
PostgreSQL, every figure equals what the former computation in Python (rows loaded, counted
and sorted here, kept below as the oracle) gives for the same rows."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from anubis_dagster.console.report import (
    CONVERSION_BASE,
    DELIVERED,
    Conversion,
    build_report,
)
from anubis_dagster.core.orders import get_path
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STATUSES = [
    "invalid",
    "duplicate",
    "to_sync_lgpd",
    "sync_lgpd_failed",
    "to_sync",
    "course_failed",
    "empty_course",
    "to_register",
    "awaiting_register",
    "register_failed",
    "registered",
    "unknown",
    "enrolled",
    "dropped",
    "failed",
]
PERCENTILES = (1, 5, 10, 25, 33.3, 50, 66.7, 75, 90, 95, 99, 100)


def _moment(rng: random.Random, start: datetime, days: float) -> datetime:
    """A time with microseconds (the latencies must agree to the microsecond)."""
    return start + timedelta(microseconds=rng.randrange(int(days * 86400 * 1_000_000)))


def _payload(rng: random.Random) -> dict[str, Any]:
    shape = rng.random()
    if shape < 0.05:
        return {}
    if shape < 0.1:
        return {"offer": {"course": "not an object"}}
    campus: dict[str, Any] = {}
    if rng.random() < 0.9:
        campus["name"] = rng.choice(["Paulista", "Centro", "São José", "Unidade 7", "", "Norte"])
    if rng.random() < 0.8:
        campus["city"] = rng.choice(["São Paulo", "Rio de Janeiro", "Goiânia", None])
    course: dict[str, Any] = {"campus": campus}
    kind = rng.random()
    if kind < 0.85:
        course["kind"] = rng.choice(["EaD", "Presencial", "Semipresencial", "Híbrido"])
    elif kind < 0.9:
        course["kind"] = rng.choice([5, 2.5, True])  # not text: shown as Python shows it
    elif kind < 0.95:
        course["kind"] = ""
    return {"offer": {"course": course}, "base_user": {"cpf": "529.982.247-25"}}


def seed(db_url: str, rng: random.Random, size: int) -> None:
    with session_scope(db_url) as session:
        kroton = Integration(name="Kroton", type="kroton", key="kroton")
        estacio = Integration(name="Estácio", type="estacio", key="estacio")
        session.add_all([kroton, estacio])
        session.flush()
        for n in range(size):
            created = _moment(rng, NOW - timedelta(days=40), 40)
            paid = None if rng.random() < 0.2 else created - timedelta(seconds=rng.uniform(0, 3600))
            sent = None
            if rng.random() < 0.8:
                # sometimes recorded before the payment it follows (clock skew): counts as 0
                sent = (paid or created) + timedelta(microseconds=rng.randrange(-(10**7), 10**11))
            sub = Subscription(
                integration_id=rng.choice([kroton.id, kroton.id, estacio.id]),
                order_id=n + 1,
                origin=rng.choice(["quero_bolsa", "ead_com", "guia_da_carreira", None, ""]),
                payload=_payload(rng),
                status=rng.choice(STATUSES),
                order_updated_at=paid,
                sent_at=sent,
                created_at=created,
            )
            session.add(sub)
            session.flush()
            for _ in range(rng.randrange(4)):
                session.add(
                    SubscriptionEvent(
                        subscription_id=sub.id,
                        integration_id=sub.integration_id,
                        kind=rng.choice(["attempt", "attempt", "retry", "transition"]),
                        operation_name="register",
                        created_at=created + timedelta(minutes=1),
                    )
                )


def oracle(db_url: str, days: int) -> dict[str, dict[str, Any]]:
    """The report as it was computed before issue 20: every row of the window in Python."""
    since = NOW - timedelta(days=days)
    with session_scope(db_url) as session:
        keys = dict(session.query(Integration.id, Integration.key).all())
        subs = session.query(Subscription).filter(Subscription.created_at >= since).all()
        events = session.query(SubscriptionEvent).all()
        out: dict[str, dict[str, Any]] = {
            key: {
                "subscriptions": 0,
                "statuses": Counter(),
                "volume": Counter(),
                "latencies": [],
                "by_modality": defaultdict(Conversion),
                "by_campus": defaultdict(Conversion),
                "retried": set(),
                "calls": 0,
            }
            for key in keys.values()
        }
        in_window = {s.id: s for s in subs}
        for row in subs:
            r = out[keys[row.integration_id]]
            r["subscriptions"] += 1
            r["statuses"][row.status] += 1
            r["volume"][(row.created_at.date(), row.origin or "-")] += 1
            paid = row.order_updated_at or row.created_at
            if row.sent_at is not None and row.status in DELIVERED:
                r["latencies"].append(max(0.0, (row.sent_at - paid).total_seconds()))
            if row.status in CONVERSION_BASE:
                payload = row.payload or {}
                modality = str(get_path(payload, "offer.course.kind") or "unknown")
                campus_name = get_path(payload, "offer.course.campus.name")
                city = get_path(payload, "offer.course.campus.city")
                campus = (
                    f"{campus_name} ({city})"
                    if campus_name and city
                    else str(campus_name or "unknown")
                )
                for bucket in (r["by_modality"][modality], r["by_campus"][campus]):
                    bucket.registered += 1
                    bucket.enrolled += row.status == "enrolled"
        for event in events:
            sub = in_window.get(event.subscription_id or -1)
            if sub is None:
                continue
            if event.kind == "retry":
                out[keys[sub.integration_id]]["retried"].add(sub.id)
            if event.kind == "attempt" and event.integration_id in keys:
                out[keys[event.integration_id]]["calls"] += 1
    return out


def nearest_rank(values: list[float], percentile: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(percentile / 100 * len(ordered))) - 1]


@pytest.mark.parametrize("trial", [1, 2])
def test_sql_aggregation_equals_the_python_computation(db_url: str, trial: int) -> None:
    rng = random.Random(2026 + trial)
    seed(db_url, rng, size=300 * trial)
    for days in (30, 7, 365):
        expected = oracle(db_url, days)
        with session_scope(db_url) as session:
            reports = build_report(session, days=days, now=NOW, percentiles=PERCENTILES)
        assert [r.integration for r in reports] == sorted(expected)
        for report in reports:
            want = expected[report.integration]
            assert report.subscriptions == want["subscriptions"]
            assert report.statuses == want["statuses"]
            assert report.volume == want["volume"]
            assert all(isinstance(day, date) for day, _ in report.volume)
            assert report.latency_count == len(want["latencies"])
            assert want["latencies"], "the dataset must exercise the percentiles"
            for p in PERCENTILES:
                assert report.latency(p) == nearest_rank(want["latencies"], p), (days, p)
            assert dict(report.by_modality) == dict(want["by_modality"])
            assert dict(report.by_campus) == dict(want["by_campus"])
            assert report.retried == len(want["retried"])
            assert report.calls == want["calls"]


def test_an_integration_without_deliveries_has_no_percentiles(db_url: str) -> None:
    with session_scope(db_url) as session:
        session.add(Integration(name="Kroton", type="kroton", key="kroton"))
    with session_scope(db_url) as session:
        (report,) = build_report(session, days=30, now=NOW)
    assert report.subscriptions == 0 and report.latency_count == 0
    assert report.latency(50) is None and report.latency(95) is None
    assert report.by_modality == {} and report.volume == Counter()
