"""The Kroton sandbox, and through it the shared sandbox kit (rate limit, faults, log, control).

Each test starts a sandbox on port 0 and talks to it with httpx over real HTTP. Time-dependent
behaviour (token expiry, rate-limit windows, asynchronous processing) runs on a fake clock, so
no test sleeps more than a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from anubis_sandboxes.demo.catalog import kroton_catalog_documents
from anubis_sandboxes.kroton import (
    KrotonSandbox,
    KrotonSandboxSettings,
    classification_path,
    main,
)
from anubis_sandboxes.server import (
    RateLimit,
    SlidingWindowRateLimiter,
    build_parser,
    settings_from_args,
)

pytestmark = pytest.mark.integration

CPF = "378.457.608-70"
CPF_DIGITS = "37845760870"
OTHER_CPF = "52998224725"
REGISTER = "/ms/inscricao/v4/captacao/inscricao"
REGISTER_V5 = "/ms/inscricaocqrs/captacao/v5/inscricao"
BY_CPF = "/ms/inscricao/v4/captacao/inscricao/cpf/{cpf}"
BY_CPF_V5 = "/ms/inscricaocqrs/captacao/v5/inscricao/cpf/{cpf}"
ENROLMENTS = "/ms/matricula/captacao/v1/ms/matricula/candidato/cpf/{cpf}"
SEARCH = "/elasticlayer/middleware/oferta/_search"
CATALOG_AUTH = {"Authorization": "apiKey sandbox-catalog-key"}
TOKEN_FORM = {
    "grant_type": "client_credentials",
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "scope": "sandbox-subscription",
}
DOCS = kroton_catalog_documents()
DIREITO_IDS = [d["id"] for d in DOCS if d["dsCurso"] == "Direito" and d["id"][0].isdigit()]


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
def sandbox(clock: FakeClock) -> Iterator[KrotonSandbox]:
    settings = KrotonSandboxSettings(processing_delay=2, classification_step=5)
    with KrotonSandbox(settings, clock=clock) as running:
        yield running


@pytest.fixture
def http(sandbox: KrotonSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, timeout=5) as client:
        yield client


def api_headers(http: httpx.Client) -> dict[str, str]:
    token = http.post("/oauth2/token", data=TOKEN_FORM).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "Ocp-Apim-Subscription-Key": "sandbox-subscription"}


@pytest.fixture
def headers(http: httpx.Client) -> dict[str, str]:
    return api_headers(http)


def register_body(cpf: str = CPF, **inscricao: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dadosPessoais": {
            "celular": "11975405666",
            "cpf": cpf,
            "dataNascimento": "1989-08-31",
            "email": "candidata@example.com",
            "endereco": {
                "cep": "12243-740",
                "logradouro": "Rua Pedro de Toledo",
                "municipio": "São José dos Campos",
                "numero": "48",
                "uf": "SP",
            },
            "necessidadesEspeciais": [],
            "nome": "Maria Candidata",
            "rg": "20000000",
            "sexo": "F",
        },
        "inscricao": {
            "canalVendas": {"id": 85},
            "idAfiliado": "DL00QUERO12991",
            "idTipoProva": 1,
            "ofertas": {
                "primeiraOpcao": {"id": DIREITO_IDS[0]},
                "segundaOpcao": {"id": DIREITO_IDS[1]},
            },
        },
    }
    body["inscricao"].update(inscricao)
    return body


def search(http: httpx.Client, *must: dict[str, Any], **extra: Any) -> httpx.Response:
    return http.post(
        SEARCH, json={"query": {"bool": {"must": list(must)}}, **extra}, headers=CATALOG_AUTH
    )


def hit_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["_id"] for hit in response.json()["hits"]["hits"]]


def inscriptions(http: httpx.Client, headers: dict[str, str], cpf: str = CPF_DIGITS) -> list[dict]:
    response = http.get(BY_CPF.format(cpf=cpf), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["inscricoes"]


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------
def test_token_is_issued_for_the_sandbox_credentials(http: httpx.Client) -> None:
    response = http.post("/oauth2/token", data=TOKEN_FORM)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert isinstance(body["access_token"], str) and len(body["access_token"]) > 20


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "another-subscription"}, 400, "invalid_scope"),
    ],
)
def test_token_refusals(http: httpx.Client, change: dict, status: int, error: str) -> None:
    response = http.post("/oauth2/token", data={**TOKEN_FORM, **change})
    assert (response.status_code, response.json()) == (status, {"error": error})


UNAUTHORIZED = {"statusCode": 401, "message": "Unauthorized. Access token is missing or invalid."}


def test_api_calls_need_a_valid_token_and_the_subscription_key(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    path = BY_CPF.format(cpf=CPF_DIGITS)
    assert http.get(path, headers=headers).status_code == 200
    for bad in (
        {},
        {"Ocp-Apim-Subscription-Key": "sandbox-subscription"},
        {**headers, "Authorization": "Bearer not-a-token"},
        {**headers, "Authorization": headers["Authorization"].replace("Bearer", "Basic")},
        {"Authorization": headers["Authorization"]},
        {**headers, "Ocp-Apim-Subscription-Key": "wrong"},
    ):
        response = http.get(path, headers=bad)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)


def test_tokens_expire_after_their_lifetime(
    sandbox: KrotonSandbox, http: httpx.Client, clock: FakeClock
) -> None:
    sandbox.configure(token_lifetime=60)
    headers = api_headers(http)
    path = BY_CPF.format(cpf=CPF_DIGITS)
    clock.advance(59)
    assert http.get(path, headers=headers).status_code == 200
    clock.advance(1)
    assert http.get(path, headers=headers).status_code == 401
    assert http.get(path, headers=api_headers(http)).status_code == 200


def test_revoking_tokens_simulates_expiry_mid_run(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    path = BY_CPF.format(cpf=CPF_DIGITS)
    assert http.get(path, headers=headers).status_code == 200
    assert http.post("/__sandbox/revoke-tokens").json() == {"revoked": 1}
    assert http.get(path, headers=headers).json() == UNAUTHORIZED
    assert http.get(path, headers=api_headers(http)).status_code == 200


# --------------------------------------------------------------------------------------------
# Rate limit
# --------------------------------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after_and_rejected_calls_do_not_count(
    sandbox: KrotonSandbox, http: httpx.Client, clock: FakeClock
) -> None:
    sandbox.configure(rate_limits={"api": "3/10"})
    headers = api_headers(http)  # the token call counts: 1 of 3
    path = BY_CPF.format(cpf=CPF_DIGITS)
    assert http.get(path, headers=headers).status_code == 200
    clock.advance(4)
    assert http.get(path, headers=headers).status_code == 200  # 3 of 3 (t=4)

    refused = http.get(path, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "6"  # the first call (t=0) leaves the window at t=10
    clock.advance(5.5)
    for _ in range(5):  # hammering through the 429s does not push the window further
        refused = http.get(path, headers=headers)
        assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"  # ceil(0.5)
    clock.advance(0.5)
    assert http.get(path, headers=headers).status_code == 200

    # the catalog has its own bucket
    assert search(http, {"match_all": {}}).status_code == 200
    stats = sandbox.stats()
    assert stats["rate_limited"] == 6
    assert stats["by_outcome"]["rate_limited"] == 6
    assert stats["max_in_window"] == {"api": 3, "catalog": 1}
    assert stats["rate_limits"] == {"api": "3/10", "catalog": "100/300"}


def test_retry_after_is_at_least_one_second() -> None:
    clock = FakeClock()
    limiter = SlidingWindowRateLimiter({"api": RateLimit.parse("1/0.2")}, clock)
    assert limiter.try_acquire("api") is None
    assert limiter.try_acquire("api") == 1
    clock.advance(0.2)
    assert limiter.try_acquire("api") is None
    assert limiter.try_acquire("unlimited-bucket") is None


def test_control_endpoints_are_not_rate_limited_faulted_or_logged(
    sandbox: KrotonSandbox, http: httpx.Client
) -> None:
    sandbox.configure(rate_limits="1/300", error_rate=1.0)
    for _ in range(5):
        assert http.get("/__sandbox/health").json() == {"status": "ok", "sandbox": "Kroton"}
        assert http.get("/__sandbox/stats").status_code == 200
    assert http.get("/__sandbox/reset").status_code == 404  # wrong method: still not logged
    assert http.get("/__sandbox/requests").json() == []


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def test_register_creates_a_new_inscription(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str]
) -> None:
    response = http.post(REGISTER, json=register_body(), headers=headers)
    assert response.status_code == 201
    body = response.json()
    assert body == {"success": True, "inscricaoId": body["inscricaoId"], "status": "NEW"}
    [item] = inscriptions(http, headers)
    assert item == {
        "id": body["inscricaoId"],
        "classificacao": {"descricao": None},
        "curso": "Direito",
        "unidade": "5001",
        "status": "NEW",
        "sistema": "OLIMPO",
        # assumption (issue 21): the capture period and the creation time, shown so a client
        # adopts only its own inscription
        "periodoCaptacao": item["periodoCaptacao"],
        "dataInscricao": item["dataInscricao"],
    }
    assert item["periodoCaptacao"] is not None
    assert item["dataInscricao"].endswith("+00:00")
    assert sandbox.stats()["registrations_per_cpf"] == {CPF_DIGITS: 1}


def test_v5_create_and_query_behave_like_v4(http: httpx.Client, headers: dict[str, str]) -> None:
    created = http.post(REGISTER_V5, json=register_body(cpf=CPF_DIGITS), headers=headers)
    assert created.status_code == 201
    [item] = http.get(BY_CPF_V5.format(cpf=CPF_DIGITS), headers=headers).json()["inscricoes"]
    assert item["id"] == created.json()["inscricaoId"]
    assert http.get(BY_CPF_V5.format(cpf=OTHER_CPF), headers=headers).json() == {"inscricoes": []}


DELETE = object()  # with_value(..., DELETE) removes the field


def with_value(body: dict, path: str, value: Any) -> dict:
    node = body
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return body


BIRTH_DATE = "data de nascimento inválida (AAAA-MM-DD, a partir de 1900)"
PHONE = "celular deve ter 10 ou 11 dígitos"
FIRST_OPTION = "inscricao.ofertas.primeiraOpcao.id"
SECOND_OPTION = "inscricao.ofertas.segundaOpcao.id"
INTEGER = "deve ser um número inteiro"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("dadosPessoais.celular", "975405666", PHONE),
        ("dadosPessoais.celular", "551197540566600", PHONE),
        ("dadosPessoais.celular", 11975405666, PHONE),
        ("dadosPessoais.cpf", "378.457.608-71", "CPF inválido"),
        ("dadosPessoais.cpf", "111.111.111-11", "CPF inválido"),
        ("dadosPessoais.dataNascimento", "1890-05-01", BIRTH_DATE),
        ("dadosPessoais.dataNascimento", "31/08/1989", BIRTH_DATE),
        ("dadosPessoais.dataNascimento", "2999-01-01", BIRTH_DATE),
        ("dadosPessoais.email", "not-an-email", "e-mail inválido"),
        ("dadosPessoais.endereco.cep", "1224374", "CEP deve ter 8 dígitos"),
        ("dadosPessoais.endereco.logradouro", "", "obrigatório"),
        ("dadosPessoais.endereco.municipio", DELETE, "obrigatório"),
        ("dadosPessoais.endereco.numero", 48, "obrigatório"),
        ("dadosPessoais.endereco.uf", "XX", "UF inválida"),
        ("dadosPessoais.endereco", None, "obrigatório"),
        ("dadosPessoais.necessidadesEspeciais", None, "deve ser uma lista"),
        ("dadosPessoais.nome", " ", "obrigatório"),
        ("dadosPessoais.rg", DELETE, "obrigatório"),
        ("dadosPessoais.sexo", "X", "sexo deve ser M, F ou NI"),
        ("dadosPessoais", "x", "obrigatório"),
        ("inscricao.canalVendas.id", "85", INTEGER),
        ("inscricao.idAfiliado", "", "obrigatório"),
        ("inscricao.idTipoProva", True, INTEGER),
        (FIRST_OPTION, "no-such-offer", "oferta não encontrada"),
        (FIRST_OPTION, "inactive-direito-5001", "oferta inativa"),
        (SECOND_OPTION, "expired-direito-5001", "inscrições encerradas para esta oferta"),
        (SECOND_OPTION, DIREITO_IDS[0], "deve ser diferente da primeira opção"),
        ("inscricao.ofertas", None, "obrigatório"),
        ("inscricao", DELETE, "obrigatório"),
    ],
)
def test_each_invalid_field_gets_its_own_message(
    http: httpx.Client, headers: dict[str, str], path: str, value: Any, message: str
) -> None:
    body = with_value(register_body(), path, value)
    response = http.post(REGISTER, json=body, headers=headers)
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "status": "ERROR",
        "message": "Dados inválidos",
        "errors": [f"{path}: {message}"],
    }


def test_a_body_with_several_problems_lists_them_all(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    body = register_body()
    body["dadosPessoais"]["email"] = "x"
    body["dadosPessoais"]["sexo"] = None
    body["inscricao"]["idTipoProva"] = None
    errors = http.post(REGISTER, json=body, headers=headers).json()["errors"]
    assert [e.split(":")[0] for e in errors] == [
        "dadosPessoais.email",
        "dadosPessoais.sexo",
        "inscricao.idTipoProva",
    ]
    assert http.post(REGISTER, content=b"not json", headers=headers).status_code == 400


def test_second_option_is_optional_and_sexo_ni_and_plain_digits_are_accepted(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    body = register_body(cpf=CPF_DIGITS, ofertas={"primeiraOpcao": {"id": DIREITO_IDS[0]}})
    body["dadosPessoais"].update(sexo="NI", celular="1133334444")
    body["dadosPessoais"]["endereco"]["cep"] = "12243740"
    assert http.post(REGISTER, json=body, headers=headers).status_code == 201


def test_a_cpf_with_an_active_inscription_is_refused(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str]
) -> None:
    first = http.post(REGISTER, json=register_body(), headers=headers).json()["inscricaoId"]
    again = http.post(REGISTER, json=register_body(cpf=CPF_DIGITS), headers=headers)
    assert again.status_code == 409
    assert again.json() == {
        "success": False,
        "status": "ERROR",
        "message": "Candidato já possui inscrição para este CPF",
        "errors": [f"dadosPessoais.cpf: já existe a inscrição {first}"],
    }
    stats = sandbox.stats()
    assert stats["duplicates_refused"] == 1
    assert stats["registrations_per_cpf"] == {CPF_DIGITS: 1}
    assert stats["by_outcome"] == {"ok": 2, "refused": 1}  # token + register, then the 409


def test_an_inscription_that_ended_in_error_no_longer_blocks_the_cpf(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str]
) -> None:
    assert http.post(REGISTER, json=register_body(), headers=headers).status_code == 201
    sandbox.pin_inscription(CPF, status="ERROR")
    assert http.post(REGISTER, json=register_body(), headers=headers).status_code == 201
    assert [i["status"] for i in inscriptions(http, headers)] == ["ERROR", "NEW"]


# --------------------------------------------------------------------------------------------
# Asynchronous processing and classification
# --------------------------------------------------------------------------------------------
def test_inscription_is_processed_then_classified_along_its_cpf_path(
    http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    http.post(REGISTER, json=register_body(), headers=headers)
    seen = []
    for _ in range(2 + len(classification_path(CPF)) + 1):
        [item] = inscriptions(http, headers)
        seen.append((item["status"], item["classificacao"]["descricao"]))
        clock.advance(2 if len(seen) <= 2 else 5)
    path = classification_path(CPF)
    assert seen[:2] == [("NEW", None), ("PROCESSING", None)]
    assert [c for _, c in seen[2:]] == [*path, path[-1]]
    assert {s for s, _ in seen[2:]} == {"SUCCESS"}


def test_processing_with_real_time_small_delays() -> None:
    settings = KrotonSandboxSettings(processing_delay=0.05, classification_step=0.05)
    with KrotonSandbox(settings) as real, httpx.Client(base_url=real.base_url) as http:
        headers = api_headers(http)
        created = http.post(REGISTER, json=register_body(), headers=headers).json()
        assert created["status"] == "NEW"
        time.sleep(0.12 + 0.05 * len(classification_path(CPF)))
        [item] = inscriptions(http, headers)
    final = classification_path(CPF)[-1]
    assert (item["status"], item["classificacao"]["descricao"]) == ("SUCCESS", final)


def test_processing_error_rate_makes_inscriptions_end_in_error(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    sandbox.configure(processing_error_rate=1.0)
    http.post(REGISTER, json=register_body(), headers=headers)
    clock.advance(4)
    [item] = inscriptions(http, headers)
    assert (item["status"], item["classificacao"]["descricao"]) == ("ERROR", None)


def test_classification_paths_cover_every_outcome_deterministically() -> None:
    finals = {classification_path(f"{n:011d}")[-1] for n in range(200)}
    assert finals == {"Aluno", "Ausente", "Desclassificado", "DESCLASSIFICADO POR NOTA"}
    assert classification_path(CPF) == classification_path(CPF_DIGITS)


@pytest.mark.parametrize(
    "classification",
    ["Inscrito", "Classificado", "Convocado", "Aluno", "Itinerante", "Inscrito VG Online",
     "Ausente", "Desclassificado", "DESCLASSIFICADO POR NOTA"],
)  # fmt: skip
def test_pinning_a_classification_creates_the_inscription_when_needed(
    http: httpx.Client, headers: dict[str, str], classification: str
) -> None:
    pinned = http.post(
        f"/__sandbox/inscriptions/{CPF_DIGITS}", json={"classificacao": classification}
    )
    assert pinned.status_code == 200
    [item] = inscriptions(http, headers)
    assert item == pinned.json()
    assert (item["status"], item["classificacao"]["descricao"]) == ("SUCCESS", classification)
    enrolments = http.get(ENROLMENTS.format(cpf=CPF_DIGITS), headers=headers).json()["matriculas"]
    assert bool(enrolments) == (classification == "Aluno")
    if enrolments:
        assert enrolments[0]["inscricaoId"] == item["id"]


def test_pinning_status_and_unpinning(
    http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    http.post(REGISTER, json=register_body(), headers=headers)
    http.post(f"/__sandbox/inscriptions/{CPF_DIGITS}", json={"status": "PROCESSING"})
    clock.advance(100)
    assert inscriptions(http, headers)[0]["status"] == "PROCESSING"
    http.post(f"/__sandbox/inscriptions/{CPF_DIGITS}", json={"status": "SUCCESS"})
    item = inscriptions(http, headers)[0]
    assert (item["status"], item["classificacao"]["descricao"]) == ("SUCCESS", "Inscrito")
    http.post(f"/__sandbox/inscriptions/{CPF_DIGITS}", json={"status": None})
    assert inscriptions(http, headers)[0]["status"] == "SUCCESS"  # long processed by now
    assert http.post(f"/__sandbox/inscriptions/{CPF_DIGITS}", json={}).status_code == 400
    assert http.post("/__sandbox/inscriptions/123", json={"status": "NEW"}).status_code == 400


def test_one_inscription_by_id_and_system(http: httpx.Client, headers: dict[str, str]) -> None:
    created = http.post(REGISTER, json=register_body(), headers=headers).json()["inscricaoId"]
    path = "/ms/inscricao/v4/captacao/inscricao/{}/sistema/{}"
    found = http.get(path.format(created, "OLIMPO"), headers=headers)
    assert found.status_code == 200 and found.json()["id"] == created
    for inscricao, sistema in ((created, "COLABORAR"), ("999", "OLIMPO")):
        missing = http.get(path.format(inscricao, sistema), headers=headers)
        assert missing.status_code == 404


def test_queries_by_cpf_are_empty_until_registered_and_refuse_a_bad_cpf(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    assert inscriptions(http, headers) == []
    assert http.get(ENROLMENTS.format(cpf=CPF_DIGITS), headers=headers).json() == {"matriculas": []}
    assert http.get(BY_CPF.format(cpf="123"), headers=headers).status_code == 400


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------
def test_catalog_needs_its_api_key(http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "apiKey wrong"}, {"Authorization": "Bearer x"}):
        response = http.post(SEARCH, json={}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "security_exception"


def test_catalog_answers_like_elasticsearch(http: httpx.Client) -> None:
    body = search(http, {"match": {"dsCurso": "Filosofia"}}).json()
    assert body["timed_out"] is False and isinstance(body["took"], int)
    assert body["hits"]["total"] == {"value": 1, "relation": "eq"}
    [hit] = body["hits"]["hits"]
    assert hit["_index"] == "oferta" and hit["_id"] == hit["_source"]["id"]
    assert set(hit["_source"]) == {
        "id", "dsCurso", "idUnidadeOrigem", "dsTipoCurso", "dsModalidade", "vlMensalidadeDe",
        "dtTerminoInscricao", "ativa", "periodoCaptacao", "sistema",
    }  # fmt: skip


def test_the_reference_query_excludes_inactive_and_expired_offers(http: httpx.Client) -> None:
    must: list[dict[str, Any]] = [
        {"match": {"dsCurso": {"query": "direito", "operator": "AND"}}},
        {"match": {"idUnidadeOrigem": 5001}},
        {"match": {"dsTipoCurso": "GRADUACAO"}},
        {"match": {"vlMensalidadeDe": 899.9000001}},
        {"match": {"ativa": True}},
        {"match": {"dsModalidade": "presencial"}},
        {"term": {"periodoCaptacao": 20271}},
        {"range": {"dtTerminoInscricao": {"gte": "now/d"}}},
    ]
    assert hit_ids(search(http, *must)) == DIREITO_IDS
    # without the ativa/range clauses the inactive and the expired Direito offers show up
    assert len(hit_ids(search(http, *must[:4]))) == 4
    assert hit_ids(
        search(http, *must[:4], {"range": {"dtTerminoInscricao": {"lt": "2021-01-01"}}})
    ) == ["expired-direito-5001"]


def test_match_is_and_over_tokens_case_and_accent_insensitive(http: httpx.Client) -> None:
    def course_names(query: Any) -> set[str]:
        response = search(http, {"match": {"dsCurso": query}}, size=100)
        return {hit["_source"]["dsCurso"] for hit in response.json()["hits"]["hits"]}

    assert course_names({"query": "ENFERMAGEM", "operator": "AND"}) == {
        "Enfermagem",
        "Técnico em Enfermagem",
    }
    assert course_names({"query": "tecnico enfermagem", "operator": "and"}) == {
        "Técnico em Enfermagem"
    }
    assert course_names({"query": "analise sistemas", "operator": "AND"}) == {
        "Análise e Desenvolvimento de Sistemas"
    }
    assert course_names({"query": "análise direito", "operator": "AND"}) == set()
    assert course_names("análise direito") == {  # match defaults to OR, as in Elasticsearch
        "Análise e Desenvolvimento de Sistemas",
        "Direito",
    }


def test_filosofia_has_a_single_open_offer(http: httpx.Client) -> None:
    ids = hit_ids(
        search(
            http,
            {"match": {"dsCurso": {"query": "Filosofia", "operator": "AND"}}},
            {"match": {"idUnidadeOrigem": 5003}},
            {"match": {"ativa": True}},
            {"range": {"dtTerminoInscricao": {"gte": "now/d"}}},
        )
    )
    assert len(ids) == 1


def test_term_range_filter_size_and_from(http: httpx.Client) -> None:
    ads = [d["id"] for d in DOCS if d["dsCurso"].startswith("Análise")]
    query = {
        "bool": {
            "filter": [
                {"term": {"idUnidadeOrigem": 5002}},
                {"range": {"vlMensalidadeDe": {"gt": 200}}},
            ]
        }
    }
    response = http.post(SEARCH, json={"query": query, "size": 2, "from": 1}, headers=CATALOG_AUTH)
    assert hit_ids(response) == ads[1:3]
    assert response.json()["hits"]["total"]["value"] == len(ads)
    assert hit_ids(search(http, {"term": {"dsCurso": "direito"}})) == []  # term is exact
    assert hit_ids(search(http, {"match": {"vlMensalidadeDe": 899.95}})) == []
    assert len(hit_ids(http.post(SEARCH, json={"size": 100}, headers=CATALOG_AUTH))) == len(DOCS)


@pytest.mark.parametrize(
    "body",
    [
        {"query": {"bool": {"must": [{"wildcard": {"dsCurso": "Dir*"}}]}}},
        {"query": {"match": {"dsCurso": "a", "sistema": "b"}}},
        {"query": {"range": {"dtTerminoInscricao": {"after": "2020-01-01"}}}},
        {"query": {"bool": {"must": [{"match": {"vlMensalidadeDe": "cheap"}}]}}},
        {"query": {"match": {"dsCurso": {"query": "x", "operator": "XOR"}}}},
        {"query": {}},
        {"size": -1},
        {"sort": ["dsCurso"]},
        [1, 2],
    ],
)
def test_a_malformed_query_gets_an_elasticsearch_400(http: httpx.Client, body: Any) -> None:
    response = http.post(SEARCH, json=body, headers=CATALOG_AUTH)
    assert response.status_code == 400
    error = response.json()
    assert error["status"] == 400 and error["error"]["type"] == "parsing_exception"
    assert error["error"]["root_cause"][0]["reason"]


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------
def test_error_faults_answer_5xx_with_a_body_before_auth(
    sandbox: KrotonSandbox, http: httpx.Client
) -> None:
    sandbox.configure(error_rate=1.0)
    statuses = set()
    for _ in range(20):
        response = http.get(BY_CPF.format(cpf=CPF_DIGITS))  # no token: faults come before auth
        assert response.status_code in (500, 502, 503)
        assert "sandbox fault" in response.json()["message"]
        statuses.add(response.status_code)
    assert len(statuses) > 1
    assert sandbox.stats()["by_outcome"] == {"fault_5xx": 20}


def test_rate_limit_is_checked_before_faults(sandbox: KrotonSandbox, http: httpx.Client) -> None:
    sandbox.configure(error_rate=1.0, rate_limits={"catalog": "1/300"})
    assert search(http, {"match_all": {}}).status_code >= 500
    assert search(http, {"match_all": {}}).status_code == 429


def test_malformed_faults_answer_200_with_a_body_that_is_not_json(
    sandbox: KrotonSandbox, http: httpx.Client
) -> None:
    sandbox.configure(malformed_rate=1.0)
    for _ in range(6):
        response = http.post("/oauth2/token", data=TOKEN_FORM)
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()
    assert sandbox.stats()["by_outcome"] == {"fault_malformed": 6}


def test_timeout_faults_hold_the_request_until_the_client_gives_up(
    sandbox: KrotonSandbox, http: httpx.Client
) -> None:
    sandbox.configure(timeout_rate=1.0, hang_seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/oauth2/token", data=TOKEN_FORM, timeout=0.1)
    sandbox.configure(hang_seconds=0.05)
    response = http.post("/oauth2/token", data=TOKEN_FORM)
    assert response.status_code == 504
    deadline = time.monotonic() + 2
    while len(sandbox.requests_log()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e["outcome"] for e in sandbox.requests_log()] == ["fault_timeout"] * 2


def test_timeout_after_processing_registers_although_the_client_times_out(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str]
) -> None:
    sandbox.configure(timeout_rate=1.0, hang_seconds=0.3, timeout_after_processing=True)
    with pytest.raises(httpx.ReadTimeout):
        http.post(REGISTER, json=register_body(), headers=headers, timeout=0.1)
    sandbox.configure(timeout_rate=0.0)
    assert len(inscriptions(http, headers)) == 1


def test_latency_is_added_to_every_answer(sandbox: KrotonSandbox, http: httpx.Client) -> None:
    sandbox.configure(latency_ms=150)
    started = time.monotonic()
    assert http.post("/oauth2/token", data={}).status_code == 401
    assert time.monotonic() - started >= 0.15


def test_faults_are_reproducible_from_the_seed(sandbox: KrotonSandbox, http: httpx.Client) -> None:
    sandbox.configure(error_rate=0.3, malformed_rate=0.3, seed=7)

    def outcomes() -> list[str]:
        for _ in range(30):
            http.post("/oauth2/token", data=TOKEN_FORM)
        return [entry["outcome"] for entry in sandbox.requests_log()]

    first = outcomes()
    assert {"ok", "fault_5xx", "fault_malformed"} <= set(first)
    sandbox.reset()
    assert outcomes() == first


# --------------------------------------------------------------------------------------------
# Request log, stats, reset and config
# --------------------------------------------------------------------------------------------
def test_request_log_records_each_call_with_its_cpf(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str]
) -> None:
    http.post(REGISTER, json=register_body(), headers=headers)
    http.get(BY_CPF.format(cpf=OTHER_CPF), headers=headers)
    search(http, {"match_all": {}})
    http.get("/nowhere")
    log = http.get("/__sandbox/requests").json()
    assert [
        (e["seq"], e["method"], e["api"], e["endpoint"], e["status"], e["outcome"], e["cpf"])
        for e in log
    ] == [
        (1, "POST", "api", "token", 200, "ok", None),
        (2, "POST", "api", "register", 201, "ok", CPF_DIGITS),
        (3, "GET", "api", "inscriptions_by_cpf", 200, "ok", OTHER_CPF),
        (4, "POST", "catalog", "catalog_search", 200, "ok", None),
        (5, "GET", "api", "unknown", 404, "not_found", None),
    ]
    assert log[1]["path"] == REGISTER and isinstance(log[1]["ts"], float)
    assert http.get("/__sandbox/requests", params={"since": 3}).json() == log[3:]
    assert sandbox.requests_log() == log

    stats = http.get("/__sandbox/stats").json()
    assert stats["requests"] == 5
    assert stats["by_api"] == {"api": 4, "catalog": 1}
    assert stats["by_status"] == {"200": 3, "201": 1, "404": 1}
    assert stats["by_api_outcome"]["api"] == {"ok": 3, "not_found": 1}
    assert stats["tokens_issued"] == 1 and stats["inscriptions"] == 1


def test_reset_clears_all_state(
    sandbox: KrotonSandbox, http: httpx.Client, headers: dict[str, str]
) -> None:
    sandbox.configure(rate_limits={"api": "3/300"})
    http.post(REGISTER, json=register_body(), headers=headers)
    assert http.post("/__sandbox/reset").json()["reset"] is True
    assert sandbox.requests_log() == []
    stats = sandbox.stats()
    assert stats["requests"] == 0 and stats["registrations_per_cpf"] == {}
    assert stats["max_in_window"] == {"api": 0, "catalog": 0}
    assert http.get(BY_CPF.format(cpf=CPF_DIGITS), headers=headers).status_code == 401
    fresh = api_headers(http)
    assert inscriptions(http, fresh) == []  # and the rate-limit window was emptied too
    assert sandbox.settings.rate_limits["api"] == "3/300"  # settings are kept...
    http.post("/__sandbox/reset", json={"settings": True})
    assert sandbox.settings.rate_limits["api"] == "100/300"  # ...unless asked


def test_config_patches_settings_at_run_time(sandbox: KrotonSandbox, http: httpx.Client) -> None:
    answer = http.post(
        "/__sandbox/config",
        json={"token_lifetime": 30, "processing_delay": 0.5, "rate_limits": {"catalog": "5/60"}},
    )
    assert answer.status_code == 200
    assert answer.json()["token_lifetime"] == 30.0
    assert answer.json()["rate_limits"] == {"api": "100/300", "catalog": "5/60"}
    assert http.post("/oauth2/token", data=TOKEN_FORM).json()["expires_in"] == 30
    assert http.get("/__sandbox/config").json()["processing_delay"] == 0.5
    for bad in (
        {"no_such_setting": 1},
        {"error_rate": 2},
        {"error_rate": "high"},
        {"timeout_after_processing": 1},
        {"rate_limits": {"api": "fast"}},
        {"rate_limits": {"other": "1/1"}},
        {"hang_seconds": -1},
    ):
        response = http.post("/__sandbox/config", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]
    assert sandbox.settings.error_rate == 0.0


def test_stop_releases_held_requests_and_closes_the_port() -> None:
    sandbox = KrotonSandbox(KrotonSandboxSettings(timeout_rate=1.0, hang_seconds=30))
    base_url = sandbox.start()
    with httpx.Client(base_url=base_url) as http:
        assert http.get("/__sandbox/health").status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            http.post("/oauth2/token", data=TOKEN_FORM, timeout=0.1)
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.TransportError):
            http.get("/__sandbox/health")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def test_flags_become_settings() -> None:
    argv = [
        "--seed", "3", "--error-rate", "0.1", "--latency-ms", "20", "--timeout-rate", "0.05",
        "--hang-seconds", "5", "--malformed-rate", "0.02", "--token-lifetime", "60",
        "--processing-delay", "1", "--classification-step", "2", "--rate-limit", "50/60",
        "--catalog-rate-limit", "7/9",
    ]  # fmt: skip
    args = build_parser(KrotonSandbox).parse_args(argv)
    assert (args.host, args.port) == ("127.0.0.1", 8701)
    settings = settings_from_args(KrotonSandboxSettings, args)
    assert isinstance(settings, KrotonSandboxSettings)
    assert settings == KrotonSandboxSettings(
        seed=3, error_rate=0.1, latency_ms=20.0, timeout_rate=0.05, hang_seconds=5.0,
        malformed_rate=0.02, token_lifetime=60.0, processing_delay=1.0, classification_step=2.0,
        rate_limits={"api": "50/60", "catalog": "7/9"},
    )  # fmt: skip
    with pytest.raises(SystemExit):
        main(["--error-rate", "3"])


def test_python_dash_m_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "anubis_sandboxes.kroton", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Kroton sandbox listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert httpx.get(f"{url}/__sandbox/health").json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()


def test_captacao_login_takes_the_email_and_password() -> None:
    """The Captação API's e-mail/password login (an assumption of its shape: seed 001 gives only
    the body), counted in the API's quota."""
    with KrotonSandbox() as sandbox, httpx.Client(base_url=sandbox.base_url) as http:
        settings = sandbox.settings
        good = {"email": settings.captacao_email, "password": settings.captacao_password}
        answer = http.post("/auth/login", json=good)
        assert answer.status_code == 200
        assert answer.json()["token"] and answer.json()["expiresIn"] > 0
        refused = http.post("/auth/login", json={**good, "password": "wrong"})
        assert refused.status_code == 401
        assert sandbox.stats()["by_endpoint"] == {"captacao_login": 2}


# --------------------------------------------------------------------------------------------
# Outage mode (issue 21)
# --------------------------------------------------------------------------------------------
def test_outage_answers_503_to_everything_but_the_token_then_ends(
    sandbox: KrotonSandbox, http: httpx.Client
) -> None:
    headers = api_headers(http)
    cpf_path = BY_CPF.format(cpf="52998224725")
    assert http.get(cpf_path, headers=headers).status_code == 200
    sandbox.configure(outage="5xx", outage_seconds=0.5)
    assert http.post("/oauth2/token", data=TOKEN_FORM).status_code == 200  # tokens served
    assert http.get(cpf_path, headers=headers).status_code == 503
    assert http.post(SEARCH, json={}, headers=CATALOG_AUTH).status_code == 503
    assert http.post(REGISTER, json={}, headers=headers).status_code == 503  # nothing processed
    assert sandbox.stats()["inscriptions"] == 0
    time.sleep(0.6)  # the outage ends by itself
    assert http.get(cpf_path, headers=headers).status_code == 200
    sandbox.configure(outage="5xx", outage_seconds=0.0)  # until switched off
    assert http.get(cpf_path, headers=headers).status_code == 503
    sandbox.configure(outage="")
    assert http.get(cpf_path, headers=headers).status_code == 200
    with pytest.raises(ValueError, match="outage must be one of"):
        sandbox.configure(outage="down")


def test_outage_flags() -> None:
    args = build_parser(KrotonSandbox).parse_args(["--outage", "hang", "--outage-seconds", "90"])
    settings = settings_from_args(KrotonSandboxSettings, args)
    assert (settings.outage, settings.outage_seconds) == ("hang", 90.0)
