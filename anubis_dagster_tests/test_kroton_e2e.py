"""Kroton end to end against the Kroton sandbox over real HTTP, on SQLite and PostgreSQL.

In every test, attempt rows with a subscription equal the requests the sandbox received
other than token calls (which belong to no subscription and have their own rows).
"""

from __future__ import annotations

import threading

import pytest

from anubis_dagster_tests.factories import KROTON_OFFER, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, assert_attempts_match, op_metadata
from anubis_sandboxes.kroton import KrotonSandbox

FILOSOFIA = {
    **KROTON_OFFER,
    "id": 502,
    "metadata": {**KROTON_OFFER["metadata"], "idUnidadeOrigem": 5003, "vlMensalidadeDe": 399.9},
    "course": {**KROTON_OFFER["course"], "name": "Filosofia"},
}


@pytest.fixture
def harness(kroton: KrotonSandbox, anubis_env: str) -> Harness:
    return Harness(anubis_env)


def settle_checks(harness: Harness, sandbox: KrotonSandbox, rounds: int = 30) -> None:
    import time

    for _ in range(rounds):
        if not harness.due("kroton", check=True) and all(
            s in ("enrolled", "dropped", "failed", "empty_course", "register_failed")
            for s in harness.statuses().values()
        ):
            return
        assert harness.check().success
        time.sleep(0.3)


def test_happy_path_to_registered_then_enrolled_or_dropped(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    harness.ingest(
        [
            make_order(i, origin=o)
            for i, o in enumerate(
                ["quero_bolsa", "ead_com", "guia_da_carreira", "mundo_vestibular"], start=1
            )
        ]
    )
    result = harness.deliver()
    assert result.success
    assert set(harness.statuses().values()) <= {"awaiting_register", "registered"}
    register_meta = op_metadata(result, "register")
    assert register_meta["processed"] == 4
    # the catalog query is the same for the four: one call, three cache hits
    prepare_meta = op_metadata(result, "prepare")
    assert prepare_meta["calls_by_operation"] == {"catalog_search": 1}
    assert prepare_meta["catalog_cache_hits"] == 3

    settle_checks(harness, kroton)
    assert set(harness.statuses().values()) <= {"enrolled", "dropped"}
    assert all(n == 1 for n in kroton.stats()["registrations_per_cpf"].values())
    # canalVendas per origin reached Kroton (the sandbox keeps nothing else we can see: the
    # payload is checked in the event rows, masked)
    sub = harness.subscription(2)
    assert sub.external_id and sub.ies_data["kroton_offers"]
    assert_attempts_match(harness, kroton)


def test_the_register_event_keeps_a_masked_request(harness: Harness, kroton: KrotonSandbox) -> None:
    harness.ingest([make_order(1, origin="ead_com")])
    harness.deliver()
    (attempt,) = [
        e for e in harness.events(1) if e.operation_name == "register" and e.kind == "attempt"
    ]
    body = attempt.request["body"]
    assert body["inscricao"]["canalVendas"] == {"id": 86}
    assert body["inscricao"]["idAfiliado"] == "DL00EADCOM0001"
    assert make_cpf(1) not in str(attempt.request)
    assert "aluno1@example.com.br" not in str(attempt.request)
    assert attempt.http_status == 201 and attempt.duration_ms is not None


def test_empty_course_when_the_catalog_has_one_offer(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    harness.ingest([make_order(1, offer=FILOSOFIA)])
    assert harness.deliver().success
    assert harness.statuses() == {1: "empty_course"}
    assert "1 valid offer(s); 2 are needed" in (harness.subscription(1).last_error or "")
    assert_attempts_match(harness, kroton)


def test_kroton_validation_refusal_keeps_its_messages(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    harness.ingest([make_order(1, rg=None)])  # valid for us, Kroton requires rg
    assert harness.deliver().success
    assert harness.statuses() == {1: "register_failed"}
    error = harness.subscription(1).last_error or ""
    assert "dadosPessoais.rg: obrigatório" in error
    assert_attempts_match(harness, kroton)


def test_gender_from_order_same_name_census_then_default(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    from anubis_dagster.db.session import session_scope
    from anubis_dagster.reference_data.names import import_names

    with session_scope(harness.db_url) as session:
        import_names(session, iter([("MARIA", "F", 100), ("MARIA", "M", 3)]))
    harness.ingest(
        [
            make_order(1),  # Maria: census
            make_order(2, full_name="Xzyqw Souza"),  # nowhere: NI
            make_order(3, full_name="Joana Lima", gender="F"),  # from the order
            make_order(4, full_name="Joana Souza"),  # same first name as #3
        ]
    )
    assert harness.deliver().success
    genders = {i: harness.subscription(i).gender for i in range(1, 5)}
    assert genders == {1: "F", 2: "NI", 3: "F", 4: "F"}
    fixes = [e.response for e in harness.events(4) if e.operation_name == "fix_data"]
    assert fixes == [{"gender": "F", "source": "same-name subscriptions"}]


def test_token_expiry_mid_run_is_renewed_once(harness: Harness, kroton: KrotonSandbox) -> None:
    harness.ingest([make_order(i) for i in range(1, 7)])
    revoked = threading.Event()

    original = kroton.answer

    def revoke_after_first_registration(request):  # type: ignore[no-untyped-def]
        reply = original(request)
        if request.path.endswith("/inscricao") and not revoked.is_set():
            revoked.set()
            kroton.revoke_tokens()
        return reply

    kroton.answer = revoke_after_first_registration  # type: ignore[method-assign]
    assert harness.deliver().success
    assert set(harness.statuses().values()) <= {"awaiting_register", "registered"}
    assert kroton.stats()["tokens_issued"] == 2
    assert kroton.stats()["by_status"].get("401") == 1
    assert_attempts_match(harness, kroton)


def test_429_bursts_are_honoured(harness: Harness, kroton: KrotonSandbox) -> None:
    # the partner allows less than we think: we hit 429s, wait Retry-After, and finish
    kroton.configure(rate_limits={"api": "4/1", "catalog": "100/60"})
    harness.ingest([make_order(i) for i in range(1, 9)])
    runs = harness.deliver_until_settled()
    assert runs >= 1
    assert set(harness.statuses().values()) <= {"awaiting_register", "registered"}
    assert kroton.stats()["rate_limited"] > 0
    assert all(n == 1 for n in kroton.stats()["registrations_per_cpf"].values())
    assert_attempts_match(harness, kroton)


def test_5xx_timeouts_and_garbage_end_registered_exactly_once(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    kroton.configure(
        error_rate=0.25, timeout_rate=0.1, malformed_rate=0.1, seed=7, timeout_after_processing=True
    )
    harness.ingest([make_order(i) for i in range(1, 11)])
    harness.deliver_until_settled(max_runs=30)
    kroton.configure(error_rate=0.0, timeout_rate=0.0, malformed_rate=0.0)
    statuses = harness.statuses()
    assert set(statuses.values()) <= {"awaiting_register", "registered", "failed"}
    assert all(n == 1 for n in kroton.stats()["registrations_per_cpf"].values())
    assert kroton.stats()["by_outcome"].get("fault_5xx", 0) > 0
    assert_attempts_match(harness, kroton)


def test_every_classification_maps_as_the_table_says(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    table = {
        "Aluno": "enrolled",
        "Convocado": "enrolled",
        "Classificado": "registered",
        "Inscrito": "registered",
        "Itinerante": "registered",
        "Inscrito VG Online": "registered",
        "Ausente": "dropped",
        "Desclassificado": "dropped",
        "DESCLASSIFICADO POR NOTA": "dropped",
    }
    harness.ingest([make_order(i) for i in range(1, len(table) + 1)])
    assert harness.deliver().success
    for i, description in enumerate(table, start=1):
        kroton.pin_inscription(make_cpf(i), status="SUCCESS", classificacao=description)
    assert harness.check().success  # awaiting → registered (by inscription)
    assert harness.check().success  # registered → the classification (by CPF)
    assert harness.statuses() == {i: expected for i, expected in enumerate(table.values(), 1)}
    with_follow_up = [harness.subscription(i).id for i in range(1, len(table) + 1)]
    assert len(with_follow_up) == len(table)
    assert_attempts_match(harness, kroton)


def test_two_deliver_runs_at_once_send_nothing_twice(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    kroton.configure(latency_ms=20)
    harness.ingest([make_order(i) for i in range(1, 13)])
    results = harness.deliver_concurrently("kroton", 2)
    assert all(r.success for r in results)
    outcomes = [op_metadata(r, "register")["outcomes"] for r in results]
    errors = [e.error_message for i in range(1, 13) for e in harness.events(i) if e.kind == "retry"]
    assert sum(op_metadata(r, "register")["processed"] for r in results) == 12, (outcomes, errors)
    assert set(harness.statuses().values()) <= {"awaiting_register", "registered"}
    assert kroton.stats()["registrations_per_cpf"] == {make_cpf(i): 1 for i in range(1, 13)}
    assert_attempts_match(harness, kroton)


def test_dry_run_shows_masked_payloads_and_sends_nothing(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    harness.ingest([make_order(1)])
    harness.deliver()  # sync courses + register
    harness.ingest([make_order(2)])
    harness.run("deliver_job", "kroton", dry_run=True)
    assert harness.statuses()[2] == "to_sync"  # nothing moved
    before = len(kroton.requests_log())
    harness.deliver(subscription_ids=[harness.subscription(2).id], limit=1)
    assert len(kroton.requests_log()) > before
