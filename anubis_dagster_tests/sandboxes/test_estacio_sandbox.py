"""The Estácio sandbox: registration codes, OneTrust consent, CEP lookup, buckets and faults.

Started on port 0 and driven with httpx over real HTTP; rate-limit windows run on a fake clock.
The shared kit's behaviour (log, config, reset, each fault kind) is covered in detail by the
Kroton tests; here we check what is Estácio's own and how the kit applies to its three APIs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from anubis_dagster.core.adoption import parse_time
from anubis_sandboxes.demo.catalog import CEP_DIRECTORY
from anubis_sandboxes.estacio import (
    EstacioSandbox,
    EstacioSandboxSettings,
    accepted_offer_pairs,
)
from anubis_sandboxes.server import build_parser, settings_from_args

pytestmark = pytest.mark.integration

CPF = "37845760870"
OTHER_CPF = "52998224725"
ESTACIO_HEADERS = {"x-canal": "sandbox-canal", "x-api-key": "sandbox-estacio-key"}
ONETRUST_HEADERS = {"client_id": "sandbox-onetrust-id", "client_secret": "sandbox-onetrust-secret"}
AUT001 = {"codigo": "AUT001", "mensagem": "Credenciais inválidas"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[EstacioSandbox]:
    with EstacioSandbox(clock=clock) as running:
        yield running


@pytest.fixture
def http(sandbox: EstacioSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, timeout=5) as client:
        yield client


def registration(cpf: str = CPF, **changes: Any) -> dict[str, Any]:
    """A valid body for the Direito offer, known under its parent campus E100."""
    body = {
        "codFormaIngresso": 24,
        "codCampus": "E100",
        "numHabilitacao": "1",
        "codTurno": "N",
        "indModalidade": "P",
        "nomeCandidato": "Maria Candidata",
        "enderecoEmail": "candidata@example.com",
        "numTelefoneCelular": "11975405666",
        "cpfCandidato": cpf,
        "dataNascimento": "31/08/1989",
        "cepCandidato": "01310100",
        "siglaUF": "SP",
        "endCandidato": "Avenida Paulista",
        "numEndCandidato": "1000",
        "codMunicipio": "3550308",
        "codBairro": "1001",
        "codAgentePdv": 11379,
        "codCurso": "DIR01",
        "numInscEnem": None,
        "anoEnem": None,
        "numNotaRedacao": None,
        "numNotaMatematica": None,
    }
    body.update(changes)
    return body


def purpose(**changes: Any) -> dict[str, Any]:
    return {"id": "sandbox-finalidade", "preferencias": [{"idTopico": "sandbox-topico"}], **changes}


def consent_body(cpf: str = CPF, **changes: Any) -> dict[str, Any]:
    body = {
        "documento": cpf,
        "pontoColetaToken": "sandbox-collection-token",
        "finalidades": [purpose()],
        "atributos": [{"atributo": "origem", "valor": "quero_bolsa"}],
    }
    body.update(changes)
    return body


def register(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/inscricao", json=body, headers=ESTACIO_HEADERS)


def consent(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/consentimento", json=body, headers=ONETRUST_HEADERS)


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-canal": "sandbox-canal"},
        {"x-api-key": "sandbox-estacio-key"},
        {"x-canal": "other-canal", "x-api-key": "sandbox-estacio-key"},
        {"x-canal": "sandbox-canal", "x-api-key": "wrong"},
    ],
)
def test_registration_and_cep_need_the_estacio_headers(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    for response in (
        http.post("/inscricao", json=registration(), headers=headers),
        http.get("/cep/01310100", headers=headers),
    ):
        assert (response.status_code, response.json()) == (401, AUT001)


def test_onetrust_needs_its_client_headers(http: httpx.Client) -> None:
    for headers in ({}, {**ONETRUST_HEADERS, "client_secret": "wrong"}, ESTACIO_HEADERS):
        response = http.post("/consentimento", json=consent_body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHORIZED"


# --------------------------------------------------------------------------------------------
# Registration outcomes
# --------------------------------------------------------------------------------------------
def test_consent_then_registration_succeeds(sandbox: EstacioSandbox, http: httpx.Client) -> None:
    assert consent(http, consent_body()).status_code == 201
    response = register(http, registration())
    assert response.status_code == 200
    body = response.json()
    numero = body["numeroInscricao"]
    assert body == {
        "sucesso": True,
        "numeroInscricao": numero,
        "pagamento": {"valor": 99.0, "linkBoleto": f"https://boleto.sandbox.invalid/{numero}"},
    }
    stats = sandbox.stats()
    assert stats["registrations_per_cpf"] == {CPF: 1}
    assert stats["consents_per_cpf"] == {CPF: 1}
    assert stats["by_api"] == {"onetrust": 1, "estacio": 1}


def test_codes_may_be_numbers_or_strings_and_enem_fields_may_be_absent(
    sandbox: EstacioSandbox, http: httpx.Client
) -> None:
    sandbox.record_consent(CPF)
    body = registration(codFormaIngresso="15", codAgentePdv="14412833", numHabilitacao=1)
    body["codMunicipio"] = 3550308
    for enem in ("numInscEnem", "anoEnem", "numNotaRedacao", "numNotaMatematica"):
        del body[enem]
    assert register(http, body).json()["sucesso"] is True


MS002_KEYS = {"sucesso": False, "codigo": "MS002", "mensagem": "Falha na validação dos dados"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("codFormaIngresso", 1, "forma de ingresso 1 (vestibular tradicional) não permitida"),
        ("codFormaIngresso", 99, "forma de ingresso inválida"),
        ("codFormaIngresso", None, "forma de ingresso inválida"),
        ("codCampus", "", "obrigatório"),
        ("numHabilitacao", None, "obrigatório"),
        ("codTurno", " ", "obrigatório"),
        ("indModalidade", "EAD", "deve ser P ou E"),
        ("nomeCandidato", None, "obrigatório"),
        ("enderecoEmail", "maria@", "e-mail inválido"),
        ("numTelefoneCelular", "975405666", "celular deve ter 10 ou 11 dígitos"),
        ("numTelefoneCelular", "(11) 97540-5666", "celular deve ter 10 ou 11 dígitos"),
        ("cpfCandidato", "378.457.608-70", "CPF inválido"),
        ("cpfCandidato", "37845760871", "CPF inválido"),
        ("dataNascimento", "1989-08-31", "data de nascimento inválida"),
        ("dataNascimento", "01/05/1890", "data de nascimento inválida"),
        ("dataNascimento", "31/02/1990", "data de nascimento inválida"),
        ("cepCandidato", "01310-100", "CEP deve ter 8 dígitos"),
        ("cepCandidato", "99999999", "CEP não encontrado"),
        ("siglaUF", "São Paulo", "UF inválida"),
        ("endCandidato", "", "obrigatório"),
        ("numEndCandidato", None, "obrigatório"),
        ("codMunicipio", "3549904", "não corresponde ao CEP informado"),
        ("codBairro", "2002", "não corresponde ao CEP informado"),
        ("codAgentePdv", 1, "agente PDV inválido"),
        ("codCurso", None, "obrigatório"),
        ("numInscEnem", "123456789012", "deve ser nulo"),
        ("anoEnem", 2024, "deve ser nulo"),
        ("numNotaRedacao", 900.0, "deve ser nulo"),
    ],
)
def test_each_invalid_field_is_an_ms002_with_its_campo(
    sandbox: EstacioSandbox, http: httpx.Client, field: str, value: Any, message: str
) -> None:
    sandbox.record_consent(CPF)
    response = register(http, registration(**{field: value}))
    assert response.status_code == 422
    body = response.json()
    assert {k: body[k] for k in MS002_KEYS} == MS002_KEYS
    [error] = body["erros"]
    assert error["campo"] == field and error["mensagem"].startswith(message)
    assert sandbox.stats()["ms002"] == 1 and sandbox.stats()["registrations_per_cpf"] == {}


def test_a_body_that_is_not_a_json_object_is_an_ms002(http: httpx.Client) -> None:
    response = http.post("/inscricao", content=b"[1, 2]", headers=ESTACIO_HEADERS)
    assert response.status_code == 422
    assert response.json()["erros"][0]["campo"] == "body"


def test_an_unknown_cep_does_not_hide_missing_location_codes(
    sandbox: EstacioSandbox, http: httpx.Client
) -> None:
    sandbox.record_consent(CPF)
    body = registration(cepCandidato="99999999", codBairro="")
    fields = [e["campo"] for e in register(http, body).json()["erros"]]
    assert fields == ["cepCandidato", "codBairro"]


def test_registration_needs_a_recorded_consent(sandbox: EstacioSandbox, http: httpx.Client) -> None:
    response = register(http, registration())
    assert response.status_code == 422
    assert response.json() == {
        **MS002_KEYS,
        "erros": [
            {
                "campo": "consentimento",
                "mensagem": "Consentimento LGPD não registrado para este CPF",
            }
        ],
    }
    sandbox.configure(require_consent=False)
    assert register(http, registration()).json()["sucesso"] is True


def test_a_cpf_registered_before_is_atl016_with_its_number(
    sandbox: EstacioSandbox, http: httpx.Client
) -> None:
    sandbox.record_consent(CPF)
    first = register(http, registration()).json()["numeroInscricao"]
    again = register(http, registration(codCurso="PSI02", codCampus="E201"))
    assert again.status_code == 200
    answer = again.json()
    assert answer == {
        "sucesso": False,
        "codigo": "ATL016",
        "mensagem": "CPF já inscrito",
        "numeroInscricao": first,
        # assumption (issue 21): what that registration was, so a client adopts only its own
        "codCurso": "DIR01",
        "codCampus": "E100",
        "dataInscricao": answer["dataInscricao"],
    }
    assert parse_time(answer["dataInscricao"]) is not None
    stats = sandbox.stats()
    assert stats["atl016"] == 1 and stats["registrations_per_cpf"] == {CPF: 1}
    assert stats["by_outcome"] == {"ok": 1, "refused": 1}


MS004 = {"sucesso": False, "codigo": "MS004", "mensagem": "Oferta não encontrada"}


@pytest.mark.parametrize(
    ("course", "campus", "accepted"),
    [
        ("DIR01", "E100", True),  # accepts "pai": the parent campus code...
        ("DIR01", "E101", False),  # ...and not the campus code
        ("PSI02", "E200", False),  # accepts "campus": the first try (parent) fails...
        ("PSI02", "E201", True),  # ...and the switch to the campus code succeeds
        ("ARQ09", "E900", False),  # accepts "none": both tries fail
        ("ARQ09", "E901", False),
        ("DIR01", "E200", False),  # a campus of another course
        ("XXX99", "E100", False),  # an unknown course
    ],
)
def test_offer_pairs_follow_the_demo_catalog(
    sandbox: EstacioSandbox, http: httpx.Client, course: str, campus: str, accepted: bool
) -> None:
    sandbox.record_consent(CPF)
    response = register(http, registration(codCurso=course, codCampus=campus))
    assert response.status_code == 200
    if accepted:
        assert response.json()["sucesso"] is True
    else:
        assert response.json() == MS004
        assert sandbox.stats()["ms004"] == 1
        assert sandbox.requests_log()[-1]["outcome"] == "refused"


def test_accepted_pairs_are_built_from_the_offers_accepts_field() -> None:
    pairs = accepted_offer_pairs()
    assert ("DIR01", "E100") in pairs and ("PSI02", "E201") in pairs
    assert not {p for p in pairs if p[0] == "ARQ09"}


def test_ambiguous_answers_are_200_without_sucesso_and_register_nothing(
    sandbox: EstacioSandbox, http: httpx.Client
) -> None:
    sandbox.record_consent(CPF)
    sandbox.configure(ambiguous_rate=1.0)
    response = register(http, registration())
    assert (response.status_code, response.json()) == (200, {"mensagem": "Solicitação recebida"})
    assert sandbox.stats()["ambiguous"] == 1
    assert sandbox.requests_log()[-1]["outcome"] == "fault_ambiguous"
    sandbox.configure(ambiguous_rate=0.0)
    assert register(http, registration()).json()["sucesso"] is True  # not ATL016


# --------------------------------------------------------------------------------------------
# OneTrust consent
# --------------------------------------------------------------------------------------------
def test_consent_is_recorded_idempotently(sandbox: EstacioSandbox, http: httpx.Client) -> None:
    first = consent(http, consent_body())
    assert first.status_code == 201
    body = first.json()
    assert body["status"] == "ACTIVE" and uuid.UUID(body["receiptId"]).version == 4
    assert consent(http, consent_body()).json() == body
    assert sandbox.stats()["consents_per_cpf"] == {CPF: 2}
    assert sandbox.requests_log()[-1]["cpf"] == CPF


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"documento": "378.457.608-70"}, "documento must be the 11 CPF digits"),
        ({"documento": "37845760871"}, "documento is not a valid CPF"),
        ({"pontoColetaToken": "other"}, "pontoColetaToken is unknown"),
        ({"finalidades": []}, "finalidades must be a non-empty list"),
        ({"finalidades": [purpose(id="x")]}, "finalidades[0].id"),
        ({"finalidades": [purpose(preferencias=[])]}, "finalidades[0].preferencias"),
        ({"finalidades": [purpose(preferencias=[{"idTopico": "x"}])]}, "idTopico"),
        ({"finalidades": ["sandbox-finalidade"]}, "finalidades[0] must be an object"),
        ({"atributos": None}, "atributos must be a list"),
        ({"atributos": [{"valor": "x"}]}, "atributos must be a list"),
    ],
)  # fmt: skip
def test_invalid_consents_are_400_invalid_request(
    sandbox: EstacioSandbox, http: httpx.Client, changes: dict, problem: str
) -> None:
    response = consent(http, consent_body(**changes))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_REQUEST" and problem in body["message"]
    assert sandbox.stats()["consents_per_cpf"] == {}


def test_consent_error_rate_answers_503(sandbox: EstacioSandbox, http: httpx.Client) -> None:
    sandbox.configure(consent_error_rate=1.0)
    response = consent(http, consent_body())
    assert response.status_code == 503
    assert response.json()["code"] == "SERVICE_UNAVAILABLE"
    assert register(http, registration()).json()["erros"][0]["campo"] == "consentimento"


# --------------------------------------------------------------------------------------------
# CEP lookup
# --------------------------------------------------------------------------------------------
def test_cep_lookup_answers_the_directory_entry(http: httpx.Client) -> None:
    for cep in ("01310100", "01310-100"):
        response = http.get(f"/cep/{cep}", headers=ESTACIO_HEADERS)
        assert response.status_code == 200
        assert response.json() == {"cep": "01310100", **CEP_DIRECTORY["01310100"]}


def test_cep_lookup_404s_an_unknown_cep_and_400s_a_malformed_one(http: httpx.Client) -> None:
    unknown = http.get("/cep/99999999", headers=ESTACIO_HEADERS)
    assert (unknown.status_code, unknown.json()) == (404, {"erro": "CEP não encontrado"})
    assert http.get("/cep/123", headers=ESTACIO_HEADERS).status_code == 400


# --------------------------------------------------------------------------------------------
# Rate limits, faults, stats
# --------------------------------------------------------------------------------------------
def test_three_buckets_with_the_reference_volumes(
    sandbox: EstacioSandbox, http: httpx.Client, clock: FakeClock
) -> None:
    assert sandbox.stats()["rate_limits"] == {
        "estacio": "40/3600",
        "onetrust": "10/150",
        "cep": "600/60",
    }
    for _ in range(10):
        assert consent(http, consent_body()).status_code == 201
    refused = consent(http, consent_body())
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "150"
    # the other buckets are unaffected
    assert register(http, registration()).status_code == 200
    assert http.get("/cep/01310100", headers=ESTACIO_HEADERS).status_code == 200
    clock.advance(150)
    assert consent(http, consent_body()).status_code == 201
    stats = sandbox.stats()
    assert stats["max_in_window"] == {"estacio": 1, "onetrust": 10, "cep": 1}
    assert stats["by_api_outcome"]["onetrust"] == {"ok": 11, "rate_limited": 1}


def test_registration_bucket_allows_40_an_hour(
    sandbox: EstacioSandbox, http: httpx.Client, clock: FakeClock
) -> None:
    sandbox.configure(require_consent=False)
    for _ in range(40):
        register(http, registration(codCurso="ARQ09"))
    refused = register(http, registration())
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "3600"
    assert sandbox.stats()["ms004"] == 40


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ({"error_rate": 1.0}, "fault_5xx"),
        ({"malformed_rate": 1.0}, "fault_malformed"),
        ({"timeout_rate": 1.0, "hang_seconds": 0.05}, "fault_timeout"),
    ],
)
def test_faults_never_register(
    sandbox: EstacioSandbox, http: httpx.Client, fault: dict, outcome: str
) -> None:
    sandbox.record_consent(CPF)
    sandbox.configure(**fault)
    response = register(http, registration())
    assert response.status_code != 200 or "sucesso" not in response.text
    sandbox.configure(error_rate=0.0, malformed_rate=0.0, timeout_rate=0.0)
    assert register(http, registration()).json()["sucesso"] is True
    assert [e["outcome"] for e in sandbox.requests_log()] == [outcome, "ok"]


def test_request_log_names_the_cpf_and_reset_forgets_everything(
    sandbox: EstacioSandbox, http: httpx.Client
) -> None:
    consent(http, consent_body(OTHER_CPF))
    register(http, registration(OTHER_CPF))
    http.get("/cep/01310100", headers=ESTACIO_HEADERS)
    log = http.get("/__sandbox/requests").json()
    assert [(e["api"], e["endpoint"], e["status"], e["cpf"]) for e in log] == [
        ("onetrust", "consent", 201, OTHER_CPF),
        ("estacio", "register", 200, OTHER_CPF),
        ("cep", "cep", 200, None),
    ]
    http.post("/__sandbox/reset")
    assert sandbox.stats()["registrations_per_cpf"] == {}
    assert sandbox.stats()["requests"] == 0
    # the consent is forgotten too
    assert register(http, registration(OTHER_CPF)).json()["erros"][0]["campo"] == "consentimento"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def test_flags_become_settings() -> None:
    argv = ["--no-require-consent", "--ambiguous-rate", "0.2", "--onetrust-rate-limit", "5/10"]
    args = build_parser(EstacioSandbox).parse_args(argv)
    assert args.port == 8702
    settings = settings_from_args(EstacioSandboxSettings, args)
    assert isinstance(settings, EstacioSandboxSettings)
    assert settings.require_consent is False and settings.ambiguous_rate == 0.2
    assert settings.rate_limits == {"estacio": "40/3600", "onetrust": "5/10", "cep": "600/60"}


def test_python_dash_m_serves_until_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "anubis_sandboxes.estacio", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        assert httpx.get(f"{url}/__sandbox/health").json()["sandbox"] == "Estácio"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
