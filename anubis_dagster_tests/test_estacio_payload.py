"""Estácio's business rules without Dagster, HTTP or a database: the field mapping of the
registration and consent bodies, what each answer means, and the daily window."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from anubis_dagster.core.masking import mask_data
from anubis_dagster.integrations.base import PayloadError
from anubis_dagster.integrations.estacio.mapping import (
    Answer,
    Lookup,
    RegisterWindow,
    classify_location,
    classify_registration,
    consent_receipt,
)
from anubis_dagster.integrations.estacio.payload import (
    ENEM_FIELDS,
    alternate_campus,
    campus_candidates,
    consent_body,
    entry_form,
    modality,
    next_campus,
    registration_body,
    sales_agent,
)
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_cpf, make_order

LOCATION = {"cep": "01310100", "codMunicipio": "3550308", "codBairro": "1001", "uf": "SP"}


def order(**overrides: Any) -> dict[str, Any]:
    return make_order(1, offer=ESTACIO_OFFER, **overrides)


def body(**overrides: Any) -> dict[str, Any]:
    return registration_body(order(**overrides), campus="E100", location=LOCATION)


# --- registration body ---------------------------------------------------------------------
def test_registration_body_maps_every_field() -> None:
    assert body() == {
        "codFormaIngresso": 24,
        "codCampus": "E100",
        "numHabilitacao": "1",
        "codTurno": "N",
        "indModalidade": "P",
        "nomeCandidato": "Maria Aparecida dos Santos",
        "enderecoEmail": "aluno1@example.com.br",
        "numTelefoneCelular": "11975405666",
        "cpfCandidato": make_cpf(1),
        "dataNascimento": "12/04/1998",
        "cepCandidato": "01310100",
        "siglaUF": "SP",
        "endCandidato": "Avenida Paulista",
        "numEndCandidato": "1000",
        "codMunicipio": "3550308",
        "codBairro": "1001",
        "codAgentePdv": 11379,
        "codCurso": "DIR01",
        **dict.fromkeys(ENEM_FIELDS),
    }


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("Graduação", 24),
        ("Segunda Graduação", 2),
        ("segunda  graduacao", 2),
        ("Técnico", 15),
        ("Pós-técnico", 15),
        ("Pós técnico", 15),
        ("Licenciatura", 24),
        (None, 24),
    ],
)
def test_entry_form_by_level_is_never_1(level: Any, expected: int) -> None:
    assert entry_form(level) == expected


def test_sales_agent_by_checkout_step() -> None:
    assert sales_agent("paid") == 11379
    assert sales_agent("pending") == 14412833
    assert sales_agent(None) == 14412833


def test_modality_from_course_kind() -> None:
    assert modality("Presencial") == "P"
    assert modality("EaD") == "E"
    assert modality("ead") == "E"
    with pytest.raises(PayloadError, match="Presencial or EaD"):
        modality("Semipresencial")


def test_digits_only_and_phone_without_country_code() -> None:
    made = body(cpf="378.457.608-70", phone_number="+55 (21) 99876-5432")
    assert made["cpfCandidato"] == "37845760870"
    assert made["numTelefoneCelular"] == "21998765432"
    assert made["cepCandidato"] == "01310100"


def test_birth_date_with_a_time_and_bad_dates() -> None:
    assert body(birth_date="2001-12-31T00:00:00Z")["dataNascimento"] == "31/12/2001"
    with pytest.raises(PayloadError, match="YYYY-MM-DD"):
        body(birth_date="31/12/2001")


def test_state_is_the_students_then_the_ceps() -> None:
    assert body()["siglaUF"] == "SP"
    made = order()
    del made["base_user"]["address"]["state"]
    assert registration_body(made, campus="E100", location=LOCATION)["siglaUF"] == "SP"


def test_location_must_belong_to_the_orders_cep() -> None:
    with pytest.raises(PayloadError, match="CEP lookup"):
        registration_body(order(), campus="E100", location={**LOCATION, "cep": "20040020"})
    with pytest.raises(PayloadError, match="CEP lookup"):
        registration_body(order(), campus="E100", location={})


@pytest.mark.parametrize("key", ["codCurso", "numHabilitacao", "codTurno"])
def test_offer_codes_are_required(key: str) -> None:
    offer = copy.deepcopy(ESTACIO_OFFER)
    offer["metadata"][key] = " "
    with pytest.raises(PayloadError, match=key):
        registration_body(make_order(1, offer=offer), campus="E100", location=LOCATION)


def test_paid_and_unpaid_orders() -> None:
    made = order()
    made["checkout_step"] = "pending"
    assert registration_body(made, campus="E100", location=LOCATION)["codAgentePdv"] == 14412833


# --- campus choice -------------------------------------------------------------------------
def test_campus_parent_first_then_campus() -> None:
    metadata = ESTACIO_OFFER["metadata"]
    assert campus_candidates(metadata) == ["E100", "E101"]
    assert next_campus(metadata) == "E100"
    assert next_campus(metadata, ["E100"]) == "E101"
    assert next_campus(metadata, ["E100", "E101"]) == "E100"  # requeued: start over
    assert alternate_campus(metadata, ["E100"]) == "E101"
    assert alternate_campus(metadata, ["E100", "E101"]) is None


def test_campus_only_or_none() -> None:
    assert campus_candidates({"codCampus": "E101"}) == ["E101"]
    assert campus_candidates({"codCampus": "E101", "codCampusPai": "E101"}) == ["E101"]
    assert alternate_campus({"codCampus": "E101"}, ["E101"]) is None
    with pytest.raises(PayloadError, match="codCampus"):
        next_campus({})


# --- consent -------------------------------------------------------------------------------
def test_consent_body() -> None:
    made = consent_body(order(), collection_token="tok", purpose_id="fin", topic_id="top")
    assert made == {
        "documento": make_cpf(1),
        "pontoColetaToken": "tok",
        "finalidades": [{"id": "fin", "preferencias": [{"idTopico": "top"}]}],
        "atributos": [
            {"atributo": "nome", "valor": "Maria Aparecida dos Santos"},
            {"atributo": "email", "valor": "aluno1@example.com.br"},
        ],
    }


def test_stored_consent_hides_the_attribute_values() -> None:
    made = consent_body(order(), collection_token="tok", purpose_id="fin", topic_id="top")
    stored = mask_data(made)
    assert stored["atributos"] == [
        {"atributo": "nome", "valor": "M. A. d. S."},
        {"atributo": "email", "valor": "a***@e***.br"},
    ]
    unknown = mask_data({"atributos": [{"atributo": "cidade", "valor": "Niterói"}]})
    assert unknown["atributos"] == [{"atributo": "cidade", "valor": "***"}]
    assert made["atributos"][0]["valor"] == "Maria Aparecida dos Santos"  # not changed in place


def test_consent_receipt_only_from_an_explicit_answer() -> None:
    assert consent_receipt("ok", {"receiptId": "r-1", "status": "ACTIVE"}) == "r-1"
    assert consent_receipt("ok", {"status": "ACTIVE"}) is None
    assert consent_receipt("ok", "text") is None
    assert consent_receipt("http_5xx", {"receiptId": "r-1"}) is None


# --- registration answers ------------------------------------------------------------------
def test_success_needs_sucesso_true_and_a_number() -> None:
    answer = classify_registration("ok", 200, {"sucesso": True, "numeroInscricao": 202700001})
    assert answer.kind is Answer.REGISTERED and answer.numero == "202700001"
    unclear: Any
    for unclear in (
        {"mensagem": "Solicitação recebida"},
        {"sucesso": True},
        {"sucesso": "true", "numeroInscricao": "1"},
        {"numeroInscricao": "1"},
        [],
        None,
    ):
        answer = classify_registration("ok", 200, unclear)
        assert answer.kind is Answer.UNCLEAR and answer.unknown, unclear


def test_error_codes_are_read_before_the_http_status() -> None:
    atl = classify_registration(
        "ok", 200, {"sucesso": False, "codigo": "ATL016", "numeroInscricao": "9"}
    )
    assert (atl.kind, atl.numero) == (Answer.ALREADY_REGISTERED, "9")
    assert classify_registration("ok", 200, {"codigo": "atl016"}).numero is None
    ms004 = classify_registration("ok", 200, {"sucesso": False, "codigo": "MS004"})
    assert ms004.kind is Answer.OFFER_NOT_FOUND
    ms002 = classify_registration(
        "http_4xx",
        422,
        {
            "sucesso": False,
            "codigo": "MS002",
            "mensagem": "Falha na validação dos dados",
            "erros": [{"campo": "siglaUF", "mensagem": "UF inválida"}],
        },
    )
    assert ms002.kind is Answer.INVALID
    assert ms002.message == "Falha na validação dos dados — siglaUF: UF inválida"


def test_unknown_refusal_codes_and_transport_failures_are_retried() -> None:
    other = classify_registration("ok", 200, {"sucesso": False, "codigo": "XX999"})
    assert other.kind is Answer.TRANSIENT and not other.unknown
    assert classify_registration("http_4xx", 400, {"mensagem": "x"}).kind is Answer.INVALID
    assert classify_registration("http_4xx", 404, None).kind is Answer.TRANSIENT
    for outcome, unknown in (
        ("http_5xx", True),
        ("timeout", True),
        ("malformed", True),
        ("lost_answer", True),
        ("rate_limited", False),
        ("connection_error", False),
        ("unauthorized", False),
    ):
        answer = classify_registration(outcome, None, None)
        assert (answer.kind, answer.unknown) == (Answer.TRANSIENT, unknown), outcome


def test_messages_are_masked() -> None:
    answer = classify_registration(
        "ok", 200, {"sucesso": False, "codigo": "ZZ1", "mensagem": f"CPF {make_cpf(3)} bloqueado"}
    )
    assert make_cpf(3) not in answer.message


# --- CEP lookup ----------------------------------------------------------------------------
def test_location_answers() -> None:
    found = classify_location(
        "ok",
        200,
        {"cep": "01310100", "codMunicipio": "3550308", "codBairro": "1001", "uf": "sp"},
        "01310100",
    )
    assert found.kind is Lookup.FOUND and found.location == LOCATION
    assert classify_location("ok", 200, {"cep": "1"}, "01310100").kind is Lookup.TRANSIENT
    assert classify_location("http_4xx", 404, {}, "99999999").kind is Lookup.NOT_FOUND
    assert classify_location("http_5xx", 503, {}, "01310100").kind is Lookup.TRANSIENT


# --- daily window --------------------------------------------------------------------------
def sp(hour: int, minute: int = 0, day: int = 10) -> datetime:
    """A São Paulo local time."""
    return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("America/Sao_Paulo"))


def test_window_parse() -> None:
    window = RegisterWindow.parse("08:00-20:00", name="W")
    assert window == RegisterWindow(time(8), time(20), "America/Sao_Paulo")
    assert RegisterWindow.parse(None, name="W") is None
    assert RegisterWindow.parse("  ", name="W") is None
    for bad in ("8-20", "08:00-08:00", "25:00-26:00", "08:00 to 20:00"):
        with pytest.raises(ValueError, match="W must look like HH:MM-HH:MM"):
            RegisterWindow.parse(bad, name="W")
    with pytest.raises(ValueError, match="time zone"):
        RegisterWindow.parse("08:00-20:00", name="W", zone="Mars/Olympus")


def test_window_next_start() -> None:
    window = RegisterWindow.parse("08:00-20:00", name="W")
    assert window is not None
    assert window.next_start(sp(8)) is None
    assert window.next_start(datetime(2026, 11, 10, 11, tzinfo=UTC)) is None  # 08:00 local
    assert window.next_start(sp(19, 59)) is None
    assert window.next_start(sp(7, 30)) == sp(8)
    assert window.next_start(sp(20)) == sp(8, day=11)
    assert window.next_start(sp(23)) == sp(8, day=11)


def test_window_across_midnight() -> None:
    window = RegisterWindow.parse("22:00-06:00", name="W")
    assert window is not None
    assert window.next_start(sp(23)) is None
    assert window.next_start(sp(5)) is None
    assert window.next_start(sp(12)) == sp(22)
