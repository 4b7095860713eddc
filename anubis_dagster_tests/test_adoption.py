"""Adopt only our inscription (issue 21): after a lost answer, a Kroton 409 or an Estácio ATL016,
a partner's record is adopted only when it matches what we sent (course, campus, capture
period, created after our send began, as far as the answer shows it); otherwise the student is
held as `unknown` with both candidates in `anubis student`. A status check applies only to the
inscription whose id we hold. The rule as plain functions, then over HTTP against the
sandboxes on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from anubis_dagster.console.student import find_student, parse_key, render_markdown
from anubis_dagster.core.adoption import Candidate, Sent, is_ours, mismatches, parse_time
from anubis_dagster.db.session import session_scope
from anubis_dagster.integrations.estacio.payload import registration_body
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER, make_cpf, make_order
from anubis_dagster_tests.harness import Harness
from anubis_dagster_tests.test_estacio_e2e import deliver as estacio_deliver
from anubis_dagster_tests.test_estacio_e2e import (
    estacio,  # noqa: F401  (fixture)
    estacio_offer,
)
from anubis_sandboxes.demo.catalog import ESTACIO_OFFERS
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
SENT = Sent.of(courses=["Administração"], campuses=[5001], periods=[20271], send_began=T0)


# --- the rule --------------------------------------------------------------------------------
def test_an_inscription_matching_what_we_sent_after_our_send_is_ours() -> None:
    ours = Candidate("7", "ADMINISTRAÇÃO ", "5001", "20271", T0 + timedelta(seconds=3))
    assert is_ours(ours, SENT)
    # as far as the answer shows it: no period, no time shown
    assert is_ours(Candidate("7", "Administração", "5001"), SENT)
    # the partner's clock a little behind ours
    assert is_ours(Candidate("7", "Administração", created_at=T0 - timedelta(seconds=90)), SENT)


def test_another_course_campus_period_or_an_older_inscription_is_not_ours() -> None:
    assert mismatches(Candidate("1", "Direito", "5001"), SENT) == [
        "course Direito, we sent Administração"
    ]
    assert not is_ours(Candidate("1", "Administração", "9999"), SENT)
    assert not is_ours(Candidate("1", "Administração", "5001", "20262"), SENT)
    older = Candidate("1", "Administração", "5001", "20271", T0 - timedelta(days=30))
    assert "before our send began" in mismatches(older, SENT)[0]
    # a first send (no earlier unknown one) cannot have created what the partner lists
    first_send = Sent.of(courses=["Administração"], send_began=None)
    assert not is_ours(Candidate("1", "Administração"), first_send)


def test_partner_times_are_read_with_or_without_a_zone() -> None:
    assert parse_time("2026-12-07T14:00:00Z") == T0
    assert parse_time("2026-12-07T14:00:00") == T0
    assert parse_time("07/12/2026") is None and parse_time(None) is None


# --- Kroton over HTTP ------------------------------------------------------------------------
def other_course_offer(kroton: KrotonSandbox) -> str:
    course = KROTON_OFFER["course"]["name"]
    return next(
        doc["id"]
        for doc in kroton.catalog
        if doc["dsCurso"] != course and kroton._offer_problem(doc["id"]) is None
    )


def register_posts(sandbox: KrotonSandbox | EstacioSandbox) -> int:
    return sum(1 for r in sandbox.requests_log() if r["endpoint"] == "register")


def report(db_url: str, key: str) -> str:
    with session_scope(db_url) as session:
        views = find_student(session, parse_key(key))
        return render_markdown(parse_key(key), views, lambda run_id: run_id)


def test_kroton_lost_answer_with_an_older_inscription_of_another_offer_is_held_not_adopted(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    cpf = make_cpf(1)
    older = kroton.pin_inscription(cpf, status="SUCCESS", oferta=other_course_offer(kroton))
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="register", error_rate=1.0)  # 5xx: unknown outcome
    assert harness.deliver().success
    assert harness.subscription(1).sending_since is not None
    kroton.configure(error_rate=0.0)

    assert harness.deliver().success  # the lookup by CPF lists only the older inscription
    sub = harness.subscription(1)
    assert sub.status == "unknown" and sub.external_id is None
    assert "not the one we sent" in (sub.last_error or "") or any(
        "not the one we sent" in (e.error_message or "") for e in harness.events(1)
    )
    assert register_posts(kroton) == 1  # never sent again
    shown = report(anubis_env, cpf)
    assert "**not adopted**" in shown
    assert "we sent: `course Administração" in shown
    assert f"Kroton lists: `id {older['id']}; course {older['curso']}" in shown
    assert cpf not in shown  # the CPF stays masked in the report


def test_kroton_lost_answer_whose_inscription_matches_is_adopted(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="register", lost_answer_rate=1.0)  # processed, answer lost
    assert harness.deliver().success
    kroton.configure(lost_answer_rate=0.0)
    assert harness.deliver().success
    sub = harness.subscription(1)
    listed = kroton.stats()["inscriptions"]
    assert listed == 1 and sub.status in ("awaiting_register", "registered")
    assert sub.external_id and sub.sending_since is None
    assert register_posts(kroton) == 1


def test_kroton_409_for_an_inscription_older_than_our_first_send_is_held(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    # same CPF, same first offer, made before we ever sent: Kroton refuses ours with a 409
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="register", error_rate=1.0)
    assert harness.deliver().success  # courses synced; the send fails
    with session_scope(anubis_env) as session:
        from anubis_dagster.db.models import Subscription

        sub = session.scalars(select(Subscription)).one()
        first_offer = sub.ies_data["kroton_offers"][0]
        sub.sending_since = None  # as if that send had provably never left
        sub.scheduled_to = None
    kroton.configure(error_rate=0.0)
    kroton.pin_inscription(make_cpf(1), status="SUCCESS", oferta=first_offer)
    assert harness.deliver().success
    sub = harness.subscription(1)
    assert sub.status == "unknown" and sub.external_id is None
    assert kroton.stats()["duplicates_refused"] == 1
    assert "before our first send" in report(anubis_env, "#1") or "there before" in report(
        anubis_env, "#1"
    )


def test_a_check_applies_only_to_the_inscription_whose_id_we_hold(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    assert harness.deliver().success
    kroton.pin_inscription(make_cpf(1), status="SUCCESS", classificacao="Inscrito")
    assert harness.check().success  # awaiting → registered, by our inscription's id
    ours = harness.subscription(1)
    assert ours.status == "registered" and ours.external_id
    # Kroton now lists another inscription of the CPF (enrolled), and not ours (CQRS lag)
    with kroton.lock:
        mine = kroton._inscriptions.pop()
        other = kroton._new_inscription(make_cpf(1), mine.offer)
        other.pinned_status, other.pinned_classification = "SUCCESS", "Aluno"
    assert harness.check().success
    sub = harness.subscription(1)
    assert sub.status == "registered" and sub.external_id == ours.external_id
    with kroton.lock:
        kroton._inscriptions.append(mine)
    assert harness.check().success
    assert harness.subscription(1).external_id == ours.external_id


# --- Estácio over HTTP -----------------------------------------------------------------------
def test_estacio_atl016_for_a_registration_made_before_ours_is_held_with_both_shown(
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
) -> None:
    harness = Harness(anubis_env)
    # another channel registered the student at another course before we ever sent
    order = make_order(1, offer=ESTACIO_OFFER)
    estacio.record_consent(make_cpf(1))
    location = {"cep": "01310100", "codMunicipio": "3550308", "codBairro": "1001"}
    spec = next(o for o in ESTACIO_OFFERS if o["codCurso"] == "PSI02")
    campus = spec["codCampusPai"] if spec["accepts"] == "pai" else spec["codCampus"]
    other = make_order(1, offer=estacio_offer("PSI02"))
    theirs = registration_body(other, campus=campus, location=location)
    headers = {"x-canal": "sandbox-canal", "x-api-key": "sandbox-estacio-key"}
    answer = httpx.post(f"{estacio.base_url}/inscricao", json=theirs, headers=headers).json()
    assert answer.get("sucesso") is True, answer
    harness.ingest([order])
    estacio_deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "unknown" and sub.external_id is None
    shown = report(anubis_env, "#1")
    assert "we sent: `course DIR01" in shown and "Estácio lists" in shown
    assert "course PSI02" in shown and answer["numeroInscricao"] in shown
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(1): 1}
