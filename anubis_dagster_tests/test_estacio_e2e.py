"""Estácio (and Wyden) end to end against the Estácio sandbox over real HTTP, on SQLite and
PostgreSQL: LGPD consent at OneTrust, CEP lookup, registration and every answer code.

In every test, attempt rows with a subscription equal the requests the sandbox received.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from anubis_dagster.alerts.digest import Digest, app_db_numbers
from anubis_dagster.db.models import FollowUp, Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.definitions import build_definitions
from anubis_dagster.integrations.estacio.payload import registration_body
from anubis_dagster_tests.factories import ESTACIO_OFFER, fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_sandboxes.demo.catalog import ESTACIO_OFFERS
from anubis_sandboxes.estacio import EstacioSandbox, EstacioSandboxSettings
from anubis_sandboxes.server import Reply, SandboxRequest

SANDBOX_LIMITS = {"estacio": "1000/60", "onetrust": "1000/60", "cep": "1000/60"}


def estacio_offer(cod_curso: str, **changes: Any) -> dict[str, Any]:
    """An order's offer for one of the demo world's Estácio/Wyden offers."""
    spec = next(o for o in ESTACIO_OFFERS if o["codCurso"] == cod_curso)
    offer = copy.deepcopy(ESTACIO_OFFER)
    offer["university_id"] = spec["university_id"]
    offer["metadata"] = {
        k: spec[k] for k in ("codCurso", "codCampus", "codCampusPai", "numHabilitacao", "codTurno")
    }
    offer["course"].update(name=spec["course"], kind=spec["kind"])
    offer.update(changes)
    return offer


@pytest.fixture
def estacio(anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EstacioSandbox]:
    """The Estácio sandbox on a free port, Anubis's Estácio settings pointing at it, a quota
    of ours that never waits, 1 s timeouts and retries due at once."""
    sandbox = EstacioSandbox(EstacioSandboxSettings(hang_seconds=1.5, rate_limits=SANDBOX_LIMITS))
    url = sandbox.start()
    for name, value in {
        "API_ESTACIO_NEW_BASE_URL": url,
        "API_ESTACIO_CLIENT_ID": "sandbox-canal",
        "API_ESTACIO_NEW_TOKEN": "sandbox-estacio-key",
        "API_ONETRUST_BASE_URL": url,
        "API_ONETRUST_CLIENT_ID": "sandbox-onetrust-id",
        "API_ONETRUST_CLIENT_SECRET": "sandbox-onetrust-secret",
        "API_ONETRUST_FINALIDADE_ID": "sandbox-finalidade",
        "API_ONETRUST_TOPICO_ID": "sandbox-topico",
        "API_ONETRUST_TOKEN": "sandbox-collection-token",
        "API_ESTACIO_RATE_LIMIT": "1000/60",
        "API_ONETRUST_RATE_LIMIT": "1000/60",
        "API_ESTACIO_CEP_RATE_LIMIT": "1000/60",
        "API_ESTACIO_TIMEOUT_SECONDS": "1",
        "API_ONETRUST_TIMEOUT_SECONDS": "1",
        "API_ESTACIO_CEP_TIMEOUT_SECONDS": "1",
        "ANUBIS_RETRY_SCHEDULE": "0s,0s,0s,0s,0s,0s,0s,0s",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("API_ESTACIO_REGISTER_WINDOW", raising=False)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def harness(estacio: EstacioSandbox, anubis_env: str) -> Harness:
    return Harness(anubis_env)


def assert_attempts_match(harness: Harness, sandbox: EstacioSandbox, since: int = 0) -> None:
    """One attempt row per request the sandbox received (`since`: requests made by hand)."""
    assert harness.attempt_rows() == len(sandbox.requests_log(since))
    assert harness.attempt_rows(with_subscription=False) == harness.attempt_rows()


def attempts(harness: Harness, order_id: int, operation: str) -> list[Any]:
    return [
        e for e in harness.events(order_id) if e.kind == "attempt" and e.operation_name == operation
    ]


def deliver(harness: Harness, **config: Any) -> None:
    assert harness.deliver("estacio", **config).success


# --- happy path ----------------------------------------------------------------------------
def test_consent_then_registration_for_estacio_and_wyden(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    harness.ingest(
        [
            make_order(1, offer=ESTACIO_OFFER),
            make_order(2, offer=estacio_offer("GRH03"), origin="ead_com"),  # EaD
            # Wyden: another education group, routed by its university id
            make_order(3, offer=estacio_offer("VET04", education_group_id=77)),
        ]
    )
    assert harness.statuses() == dict.fromkeys((1, 2, 3), "to_sync_lgpd")
    result = harness.deliver("estacio")
    assert result.success
    assert harness.statuses() == dict.fromkeys((1, 2, 3), "registered")
    stats = estacio.stats()
    assert stats["consents_per_cpf"] == {make_cpf(i): 1 for i in (1, 2, 3)}
    assert stats["registrations_per_cpf"] == {make_cpf(i): 1 for i in (1, 2, 3)}
    # the three students share a CEP: one lookup, cached for the others
    assert stats["by_endpoint"] == {"consent": 3, "cep": 1, "register": 3}
    assert op_metadata(result, "prepare")["outcomes"] == {"to_register": 3}
    assert op_metadata(result, "register")["outcomes"] == {"registered": 3}

    sub = harness.subscription(3)
    assert sub.external_id and sub.external_id.isdigit()
    assert sub.ies_data["consent_receipt"]
    assert sub.ies_data["location"] == {
        "cep": "01310100",
        "codMunicipio": "3550308",
        "codBairro": "1001",
        "uf": "SP",
    }
    with session_scope(harness.db_url) as session:
        follow_ups = {f.subscription_id: f for f in session.scalars(select(FollowUp))}
    assert follow_ups[sub.id].external_id == sub.external_id
    assert follow_ups[sub.id].source["sucesso"] is True

    (register,) = attempts(harness, 2, "register")
    body = register.request["body"]
    assert body["indModalidade"] == "E" and body["codCampus"] == "E300"
    assert body["codAgentePdv"] == 11379 and body["codFormaIngresso"] == 24
    assert make_cpf(2) not in str(register.request)
    assert "aluno2@example.com.br" not in str(register.request)
    (consent,) = attempts(harness, 2, "consent")
    assert "Maria Aparecida" not in str(consent.request)
    assert make_cpf(2) not in str(consent.request)
    (cep,) = attempts(harness, 1, "cep_lookup")
    assert cep.request["url"] == "estacio-cep/cep/*****-***"
    assert_attempts_match(harness, estacio)


def test_no_personal_data_in_the_run_log(harness: Harness, estacio: EstacioSandbox) -> None:
    estacio.configure(ambiguous_rate=1.0)  # failure paths log more
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    result = harness.deliver("estacio")
    assert result.success
    records = harness.instance.all_logs(result.run_id)
    text = "\n".join(
        f"{r.user_message} {r.dagster_event.event_specific_data if r.dagster_event else ''}"
        for r in records
    )
    for secret in (make_cpf(1), fmt_cpf(make_cpf(1)), "aluno1@example.com.br", "Aparecida"):
        assert secret not in text


def test_dry_run_shows_the_payload_and_registers_nothing(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    deliver(harness, dry_run=True)
    assert harness.statuses() == {1: "to_sync_lgpd"}
    assert estacio.stats()["requests"] == 0
    assert_attempts_match(harness, estacio)


# --- consent -------------------------------------------------------------------------------
def test_consent_failure_is_retried_then_registered(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    estacio.configure(consent_error_rate=1.0)
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "sync_lgpd_failed" and sub.attempts == 1
    assert "OneTrust did not record the consent" in (sub.last_error or "")
    assert len(attempts(harness, 1, "consent")) == 3  # quick retries: consent is repeatable
    assert estacio.stats()["by_endpoint"] == {"consent": 3}

    estacio.configure(consent_error_rate=0.0)
    assert harness.deliver_until_settled("estacio") == 1
    assert harness.statuses() == {1: "registered"}
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(1): 1}
    assert_attempts_match(harness, estacio)


def test_consent_failing_for_good_is_dead_lettered(
    harness: Harness, estacio: EstacioSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s")
    estacio.configure(consent_error_rate=1.0)
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    harness.deliver_until_settled("estacio")
    sub = harness.subscription(1)
    assert sub.status == "failed"
    assert "retries exhausted after 2 attempts" in (sub.last_error or "")
    assert "register" not in estacio.stats()["by_endpoint"]
    assert_attempts_match(harness, estacio)


# --- answer codes --------------------------------------------------------------------------
def test_offer_not_found_then_registered_under_the_other_campus(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    harness.ingest([make_order(1, offer=estacio_offer("PSI02"))])  # known as E201 only
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "registered" and sub.external_id
    sent = [a.request["body"]["codCampus"] for a in attempts(harness, 1, "register")]
    assert sent == ["E200", "E201"]
    # each attempt row says what the partner answered: a refusal (MS004, inside an HTTP 200)
    # with its code and message, then the registration
    first, second = attempts(harness, 1, "register")
    assert (first.outcome, first.http_status) == ("refused", 200)
    assert (first.error_message or "").startswith("MS004: ")
    assert (second.outcome, second.error_message) == ("ok", None)
    assert estacio.stats()["ms004"] == 1
    (moved,) = [e for e in harness.events(1) if e.kind == "transition" and e.status == "registered"]
    assert moved.response == {"note": "offer not found (MS004) under campus E200; sent under E201"}
    assert_attempts_match(harness, estacio)


def test_offer_not_found_under_both_campus_codes_fails(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    harness.ingest([make_order(1, offer=estacio_offer("ARQ09"))])  # known under neither
    result = harness.deliver("estacio")
    assert result.success
    # one name for the outcome wherever it shows: the status, whatever the partner's code
    assert op_metadata(result, "register")["outcomes"] == {"register_failed": 1}
    sub = harness.subscription(1)
    assert sub.status == "register_failed"
    refusals = attempts(harness, 1, "register")
    assert [(a.outcome, a.http_status) for a in refusals] == [("refused", 200)] * 2
    assert all((a.error_message or "").startswith("MS004: ") for a in refusals)
    assert "offer not found at Estácio (MS004)" in (sub.last_error or "")
    assert "codCampusPai E900 and codCampus E901" in (sub.last_error or "")
    sent = [a.request["body"]["codCampus"] for a in attempts(harness, 1, "register")]
    assert sent == ["E900", "E901"]
    assert estacio.stats()["ms004"] == 2
    assert not harness.due("estacio")
    assert_attempts_match(harness, estacio)


def test_the_digest_counts_students_not_calls_and_adds_up(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    """Five register calls for three students (MS004 sends again under the other campus):
    the digest says three students, and its parts add up to them."""
    harness.ingest(
        [
            make_order(1, offer=ESTACIO_OFFER),  # registered at once
            make_order(2, offer=estacio_offer("PSI02")),  # MS004, then registered under E201
            make_order(3, offer=estacio_offer("ARQ09")),  # MS004 under both: refused
        ]
    )
    deliver(harness)
    calls = sum(len(attempts(harness, order, "register")) for order in (1, 2, 3))
    assert calls == 5
    now = datetime.now(UTC)
    digest = Digest("estacio", now - timedelta(hours=1), now + timedelta(seconds=1))
    with session_scope(harness.db_url) as session:
        app_db_numbers(session, "estacio", digest.start, digest.end, digest)
    assert (digest.sent, digest.accepted, digest.refused) == (3, 2, 1)
    assert digest.sent == (
        digest.accepted + digest.refused + digest.unknown + digest.failed + digest.waiting
    )
    assert "registrations: 3 students sent = 2 accepted + 1 refused + " in digest.alert().text()


def test_validation_refusal_keeps_the_field_messages(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    order = make_order(1, offer=ESTACIO_OFFER)
    order["base_user"]["address"]["state"] = "SX"  # our intake doesn't check the state
    harness.ingest([order])
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "register_failed"
    assert "MS002" in (sub.last_error or "")
    assert "siglaUF: UF inválida" in (sub.last_error or "")
    (refusal,) = attempts(harness, 1, "register")
    assert refusal.outcome == "refused" and (refusal.error_message or "").startswith("MS002: ")
    assert "siglaUF: UF inválida" in (refusal.error_message or "")
    assert estacio.stats()["ms002"] == 1
    assert_attempts_match(harness, estacio)


def test_a_requeued_refusal_records_the_consent_again_before_registering(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    """Issue 23: Estácio may no longer know the consent when a refused student is sent again
    (here the sandbox restarted and forgot it, as after `make ui`): the requeue resumes at the
    consent, not at the registration, so the new send is not refused for it."""
    order = make_order(1, offer=ESTACIO_OFFER)
    order["base_user"]["address"]["state"] = "SX"  # refused: MS002, UF inválida
    harness.ingest([order])
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "register_failed"
    with session_scope(harness.db_url) as session:  # the cause fixed at the source
        fixed = copy.deepcopy(sub.payload)
        fixed["base_user"]["address"]["state"] = "SP"
        stored = session.get(Subscription, sub.id)
        assert stored is not None
        stored.payload = fixed
    with estacio.lock:
        estacio.reset_state()  # a restarted sandbox: no consent recorded any more

    result = harness.deliver("estacio", requeue_ids=[sub.id])
    assert result.success
    assert op_metadata(result, "delivery_request")["requeued"] == [sub.id]
    requeued = next(e for e in harness.events(1) if e.operation_name == "requeue")
    assert requeued.status == "to_sync_lgpd"  # the consent first
    assert harness.statuses() == {1: "registered"}
    assert estacio.stats()["consents_per_cpf"] == {make_cpf(1): 1}
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(1): 1}
    assert len(attempts(harness, 1, "consent")) == 2  # before the refusal, and again


def test_unknown_cep_fails_before_registering(harness: Harness, estacio: EstacioSandbox) -> None:
    order = make_order(1, offer=ESTACIO_OFFER)
    order["base_user"]["address"]["zipcode"] = "99999-999"
    harness.ingest([order])
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "register_failed"
    assert "CEP is unknown" in (sub.last_error or "")
    assert "register" not in estacio.stats()["by_endpoint"]
    assert_attempts_match(harness, estacio)


def test_cpf_registered_by_another_channel_before_our_send_is_held_not_adopted(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    # the student registered at Estácio by another channel before: same course and campus, but
    # not ours (issue 21: an ATL016 to our first send names a registration that was there
    # already), so it is held for a person with both candidates shown, not adopted
    order = make_order(1, offer=ESTACIO_OFFER)
    estacio.record_consent(make_cpf(1))
    location = {"cep": "01310100", "codMunicipio": "3550308", "codBairro": "1001"}
    body = registration_body(order, campus="E100", location=location)
    headers = {"x-canal": "sandbox-canal", "x-api-key": "sandbox-estacio-key"}
    answer = httpx.post(f"{estacio.base_url}/inscricao", json=body, headers=headers).json()
    numero = answer["numeroInscricao"]
    by_hand = estacio.requests_log()[-1]["seq"]

    harness.ingest([order])
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "unknown" and sub.external_id is None
    assert sub.ies_data["adoption"]["listed"][0]["id"] == numero
    assert estacio.stats()["atl016"] == 1
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(1): 1}
    (moved,) = [e for e in harness.events(1) if e.kind == "transition" and e.status == "unknown"]
    assert "there before our first send" in (moved.error_message or "")
    assert_attempts_match(harness, estacio, since=by_hand)


def test_a_200_without_explicit_success_is_never_registered(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    estacio.configure(ambiguous_rate=1.0)  # 200 {"mensagem": "Solicitação recebida"}
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "to_register" and sub.attempts == 1
    assert sub.sending_since is not None  # unknown outcome: the next send is guarded
    assert "without an explicit success" in (sub.last_error or "")
    deliver(harness)
    assert harness.subscription(1).status == "to_register"
    assert not any(e.status == "registered" for e in harness.events(1))

    estacio.configure(ambiguous_rate=0.0)
    deliver(harness)
    assert harness.statuses() == {1: "registered"}
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(1): 1}
    assert estacio.stats()["ambiguous"] == 2
    assert_attempts_match(harness, estacio)


# --- faults --------------------------------------------------------------------------------
def test_429s_and_5xx_end_registered_exactly_once(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    # Estácio allows less than we think (429 + Retry-After) and fails a quarter of the calls
    estacio.configure(
        error_rate=0.25,
        seed=5,
        rate_limits={"estacio": "3/1", "onetrust": "4/1", "cep": "1000/60"},
    )
    students = 6
    harness.ingest([make_order(i, offer=ESTACIO_OFFER) for i in range(1, students + 1)])
    harness.deliver_until_settled("estacio")
    assert harness.statuses() == dict.fromkeys(range(1, students + 1), "registered")
    stats = estacio.stats()
    assert stats["rate_limited"] > 0
    assert stats["by_outcome"].get("fault_5xx", 0) > 0
    assert stats["registrations_per_cpf"] == {make_cpf(i): 1 for i in range(1, students + 1)}
    assert_attempts_match(harness, estacio)


def test_interrupted_registration_resumes_without_a_second_one(
    harness: Harness, estacio: EstacioSandbox
) -> None:
    """Estácio registers the student but the answer never arrives (timeout after processing);
    the next run sends again and ATL016 says it is done."""
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    original, lost = estacio.answer, threading.Event()

    def lose_the_first_registration_answer(request: SandboxRequest) -> Reply:
        reply = original(request)
        if request.path == "/inscricao" and not lost.is_set():
            lost.set()
            time.sleep(1.5)  # we give up after 1 s: Estácio registered, the answer is lost
        return reply

    estacio.answer = lose_the_first_registration_answer  # type: ignore[method-assign]
    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "to_register" and sub.sending_since is not None
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(1): 1}

    deliver(harness)
    sub = harness.subscription(1)
    assert sub.status == "registered"
    assert sub.external_id == "202700001"  # the sandbox's first number, adopted from ATL016
    stats = estacio.stats()
    assert stats["registrations_per_cpf"] == {make_cpf(1): 1}
    assert stats["atl016"] == 1
    assert stats["by_endpoint"] == {"consent": 1, "cep": 1, "register": 2}  # CEP cached
    assert_attempts_match(harness, estacio)


# --- daily window --------------------------------------------------------------------------
def _window(start: timedelta, end: timedelta) -> str:
    now = datetime.now(ZoneInfo("America/Sao_Paulo"))
    return f"{now + start:%H:%M}-{now + end:%H:%M}"


def test_registrations_wait_for_the_daily_window(
    estacio: EstacioSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "API_ESTACIO_REGISTER_WINDOW", _window(timedelta(hours=2), timedelta(hours=3))
    )
    harness = Harness(anubis_env)
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    result = harness.deliver("estacio")
    assert result.success
    sub = harness.subscription(1)
    assert sub.status == "to_register" and sub.attempts == 0  # consent is not held
    assert sub.scheduled_to is not None
    wait = sub.scheduled_to - datetime.now(UTC)
    assert timedelta(hours=1, minutes=58) < wait <= timedelta(hours=2)
    assert "register" not in estacio.stats()["by_endpoint"]
    notes = [e for e in harness.events(1) if e.kind == "note" and e.operation_name == "register"]
    assert "outside Estácio's registration window" in (notes[-1].response or {})["note"]
    assert op_metadata(result, "register")["outcomes"] == {"deferred": 1}
    assert not harness.due("estacio")

    monkeypatch.setenv(
        "API_ESTACIO_REGISTER_WINDOW", _window(-timedelta(hours=1), timedelta(hours=1))
    )
    harness = Harness(anubis_env)
    deliver(harness, subscription_ids=[sub.id])
    assert harness.statuses() == {1: "registered"}
    assert_attempts_match(harness, estacio)


def test_missing_credentials_fail_the_run_naming_them(
    estacio: EstacioSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_ONETRUST_CLIENT_SECRET")
    harness = Harness(anubis_env)
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    result = harness.deliver("estacio")
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    (failure,) = failures  # at once: no op retries for a configuration problem
    assert "Estácio is not configured" in str(failure.event_specific_data)
    assert "API_ONETRUST_CLIENT_SECRET" in str(failure.event_specific_data)
    assert harness.statuses() == {1: "to_sync_lgpd"}
    assert estacio.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("API_ESTACIO_RATE_LIMIT", "40 per hour", "must look like REQUESTS/SECONDS"),
        ("API_ONETRUST_RATE_LIMIT", "10/0", "must look like REQUESTS/SECONDS"),
        ("API_ESTACIO_REGISTER_WINDOW", "8h-20h", "must look like HH:MM-HH:MM"),
        ("API_ESTACIO_TIMEOUT_SECONDS", "soon", "positive number of seconds"),
    ],
)
def test_a_malformed_setting_fails_the_load_naming_it(
    name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}.*{message}|{name} {message}"):
        build_definitions()
