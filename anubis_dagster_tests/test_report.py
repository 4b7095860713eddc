"""`anubis report`: business metrics per integration computed on a fixture with known answers,
on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anubis_dagster.cli import main
from anubis_dagster.console.report import build_report, nearest_rank
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.integrations.status_check import has_status_check
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def offer(base: dict[str, Any], kind: str, campus: str) -> dict[str, Any]:
    copied = copy.deepcopy(base)
    copied["course"]["kind"] = kind
    copied["course"]["campus"]["name"] = campus
    return copied


def test_nearest_rank() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([3, 1, 2], 50) == 2
    assert nearest_rank(range(1, 101), 95) == 95
    assert nearest_rank([10], 95) == 10


def seed(db_url: str, now: datetime = NOW) -> None:
    """Kroton: 10 subscriptions in the window (+1 older, not counted); Estácio: 2."""
    with session_scope(db_url) as session:
        kroton = Integration(name="Kroton", type="kroton", key="kroton")
        estacio = Integration(name="Estácio", type="estacio", key="estacio")
        session.add_all([kroton, estacio])
        session.flush()
        rows = [
            # status, origin, modality, campus, paid→sent seconds, retried, attempts
            ("enrolled", "quero_bolsa", "EaD", "Paulista", 60, False, 2),
            ("enrolled", "quero_bolsa", "EaD", "Paulista", 120, True, 3),
            ("dropped", "ead_com", "EaD", "Centro", 180, False, 2),
            ("registered", "ead_com", "Presencial", "Centro", 240, False, 2),
            ("registered", "ead_com", "Presencial", "Paulista", 300, True, 4),
            ("awaiting_register", "quero_bolsa", "Presencial", "Paulista", 600, False, 2),
            ("failed", "quero_bolsa", "Presencial", "Paulista", None, True, 8),
            ("register_failed", "guia_da_carreira", "EaD", "Centro", None, False, 1),
            ("invalid", "quero_bolsa", "EaD", "Centro", None, False, 0),
            ("to_register", "mundo_vestibular", "EaD", "Centro", None, True, 1),
        ]
        for n, (status, origin, kind, campus, latency, retried, attempts) in enumerate(rows):
            created = now - timedelta(days=1 + n % 2, hours=1)
            paid = created - timedelta(minutes=5)
            sub = Subscription(
                integration_id=kroton.id,
                order_id=n + 1,
                origin=origin,
                cpf=None,
                payload={"offer": offer(KROTON_OFFER, kind, campus)},
                status=status,
                order_updated_at=paid,
                sent_at=paid + timedelta(seconds=latency) if latency is not None else None,
                created_at=created,
            )
            session.add(sub)
            session.flush()
            for _ in range(attempts):
                session.add(
                    SubscriptionEvent(
                        subscription_id=sub.id,
                        integration_id=kroton.id,
                        kind="attempt",
                        operation_name="register",
                        outcome="ok",
                    )
                )
            if retried:
                session.add(
                    SubscriptionEvent(
                        subscription_id=sub.id,
                        integration_id=kroton.id,
                        kind="retry",
                        operation_name="register",
                    )
                )
        old = Subscription(
            integration_id=kroton.id,
            order_id=99,
            payload={},
            status="enrolled",
            created_at=now - timedelta(days=40),
        )
        session.add(old)
        for n, status in enumerate(("registered", "unknown")):
            session.add(
                Subscription(
                    integration_id=estacio.id,
                    order_id=200 + n,
                    origin="quero_bolsa",
                    payload={"offer": ESTACIO_OFFER},
                    status=status,
                    created_at=now - timedelta(hours=3),
                )
            )


def test_metrics_have_the_known_answers(db_url: str) -> None:
    seed(db_url)
    with session_scope(db_url) as session:
        reports = {r.integration: r for r in build_report(session, days=30, now=NOW)}
    k = reports["kroton"]
    assert k.subscriptions == 10  # the 40-day-old one is outside the window
    assert k.delivered == 6  # enrolled 2, dropped, registered 2, awaiting
    assert k.ended_undelivered == 2  # failed, register_failed
    # the partner's refusal is measured apart: not a failure of the integration
    assert k.refused == 1
    assert k.success_rate == pytest.approx(6 / 7)
    assert k.refusal_rate == pytest.approx(1 / 8)
    assert k.retry_rate == pytest.approx(4 / 9)  # the invalid one was never tried
    assert k.dead_letters == 1
    assert k.calls == 25 and k.calls_per_registration == pytest.approx(25 / 6)
    assert k.latency_count == 6
    assert k.latency(50) == 180 and k.latency(95) == 600
    # every latency, each at its nearest rank (the report no longer holds the list)
    with session_scope(db_url) as session:
        ranks = (1, 20, 40, 60, 80, 100)
        (ranked,) = build_report(session, days=30, now=NOW, integration="kroton", percentiles=ranks)
    assert [ranked.latency(p) for p in ranks] == [60, 120, 180, 240, 300, 600]
    ead, presencial = k.by_modality["EaD"], k.by_modality["Presencial"]
    assert (ead.registered, ead.enrolled) == (3, 2)  # enrolled 2 + dropped
    assert (presencial.registered, presencial.enrolled) == (2, 0)  # awaiting is not followed yet
    paulista = k.by_campus["Paulista (São Paulo)"]
    assert (paulista.registered, paulista.enrolled) == (3, 2)
    day_volume = sum(n for (_, origin), n in k.volume.items() if origin == "ead_com")
    assert day_volume == 3
    e = reports["estacio"]
    assert e.subscriptions == 2 and e.statuses["unknown"] == 1
    assert e.success_rate == pytest.approx(1 / 2)


def test_report_command_prints_each_integration(
    anubis_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(anubis_env, datetime.now(UTC))
    assert main(["report", "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert "== estacio:" in out and "== kroton:" in out
    assert "success rate" in out and "85.7%" in out
    assert "refused by the partner" in out and "1 (12.5%)" in out
    assert "Paulista (São Paulo)" in out


def _conversion_rows(block: str) -> list[list[str]]:
    """The rows of a report block's modality and campus tables, split into cells."""
    rows: list[list[str]] = []
    for table in block.split("\n\n"):
        lines = table.splitlines()
        if lines and lines[0].split()[0] in ("modality", "campus"):
            rows += [line.split("  ") for line in lines[2:]]
    return rows


def test_conversion_is_na_for_an_integration_without_a_status_check(
    anubis_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Estácio has no status check: whether its registered students enrolled is never known,
    so the report says n/a, as the metrics asset does, instead of a 0.0% no one measured."""
    seed(anubis_env, datetime.now(UTC))
    assert main(["report", "--days", "30"]) == 0
    out = capsys.readouterr().out
    estacio, kroton = out.split("== kroton:")
    estacio_rows = _conversion_rows(estacio)
    assert estacio_rows and all(row[-1].strip() == "n/a" for row in estacio_rows)
    assert "conversion n/a: estacio has no status check" in estacio
    # a followed integration keeps its figures: EaD, 2 of 3 enrolled
    assert [r[-1].strip() for r in _conversion_rows(kroton) if r[0] == "EaD"] == ["66.7%"]
    assert "conversion n/a" not in kroton
    with session_scope(anubis_env) as session:
        followed = {r.integration: r.followed for r in build_report(session, days=30)}
    assert followed == {"estacio": False, "kroton": True}


def test_status_check_read_without_dagster_is_the_adapters() -> None:
    """`has_status_check` reads a built-in IES's plain `mapping.py`; it must say what the
    adapter's `check_statuses` (the metrics asset's rule) says, and ask the adapter itself
    for one that declares nothing apart (the test IES)."""
    import anubis_dagster_tests.third_ies.adapter  # noqa: F401  (registers `tiny_ies`)
    from anubis_dagster.integrations.base import adapter_class

    for kind in ("kroton", "estacio", "tiny_ies"):
        assert has_status_check(kind) is bool(adapter_class(kind).check_statuses), kind
    assert has_status_check("estacio") is False and has_status_check("kroton") is True
    assert has_status_check("no_such_ies") is None
