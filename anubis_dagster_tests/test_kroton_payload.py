"""Kroton's request bodies (`integrations/kroton/payload.py`): pure functions of the order,
tested without Dagster or HTTP."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from anubis_dagster.integrations.base import PayloadError
from anubis_dagster.integrations.kroton.payload import (
    catalog_query,
    registration_body,
    valid_offers,
)
from anubis_dagster_tests.factories import KROTON_OFFER, make_cpf, make_order

TODAY = date(2027, 1, 10)
ORIGIN = {"canal_vendas_id": 7, "id_afiliado": "QB01", "id_tipo_prova": 3}
DEFAULT_ADDRESS = {
    "zipcode": "20040020",
    "address": "Rua Primeiro de Março",
    "address_number": 66,
    "city": "Rio de Janeiro",
    "state": "rj",
}


def _must(query: dict[str, Any]) -> list[dict[str, Any]]:
    return list(query["query"]["bool"]["must"])


def _offer_without(*keys: str) -> dict[str, Any]:
    offer = copy.deepcopy(KROTON_OFFER)
    for key in keys:
        offer["metadata"].pop(key)
    return offer


def test_the_catalog_query_uses_the_offers_metadata_as_given() -> None:
    query = catalog_query(make_order(1), TODAY)
    assert query["size"] == 10
    assert _must(query) == [
        {"match": {"dsCurso": {"query": "Administração", "operator": "AND"}}},
        {"match": {"idUnidadeOrigem": 5001}},
        {"match": {"dsTipoCurso": "GRADUACAO"}},
        {"match": {"vlMensalidadeDe": 599.9}},
        {"match": {"ativa": True}},
        {"match": {"dsModalidade": "PRESENCIAL"}},
        {"term": {"periodoCaptacao": 20271}},
        {"range": {"dtTerminoInscricao": {"gte": "2027-01-10"}}},
    ]


def test_missing_catalog_keys_are_derived_from_the_course() -> None:
    offer = _offer_without("dsTipoCurso", "dsModalidade", "vlMensalidadeDe", "periodoCaptacao")
    offer["course"]["kind"] = "EaD"
    must = _must(catalog_query(make_order(1, offer=offer), TODAY))
    assert {"match": {"dsTipoCurso": "GRADUACAO"}} in must  # "Graduação", accents ignored
    assert {"match": {"dsModalidade": "EAD"}} in must
    assert {"match": {"vlMensalidadeDe": 599.9}} in must  # university_offer.full_price
    assert {"term": {"periodoCaptacao": 20271}} in must  # "2027.1"


def test_unknown_course_vocabulary_is_left_out_of_the_query() -> None:
    offer = _offer_without("dsTipoCurso", "dsModalidade", "periodoCaptacao")
    offer["course"].update(level="Doutorado", kind="Híbrido")
    offer["course"]["university_offer"]["enrollment_semester"] = "next year"
    must = _must(catalog_query(make_order(1, offer=offer), TODAY))
    fields = {name for clause in must for body in clause.values() for name in body}
    assert "dsCurso" in fields
    assert not fields & {"dsTipoCurso", "dsModalidade", "periodoCaptacao"}


@pytest.mark.parametrize("missing", ["name", "idUnidadeOrigem"])
def test_an_offer_without_its_catalog_keys_cannot_be_synced(missing: str) -> None:
    offer = copy.deepcopy(KROTON_OFFER)
    if missing == "name":
        offer["course"].pop("name")
    else:
        offer["metadata"].pop(missing)
    with pytest.raises(PayloadError, match=r"course\.name and metadata\.idUnidadeOrigem"):
        catalog_query(make_order(1, offer=offer), TODAY)


def _hit(offer_id: str, *, ativa: Any = True, until: str = "2027-02-01") -> dict[str, Any]:
    return {"_source": {"id": offer_id, "ativa": ativa, "dtTerminoInscricao": until}}


def test_valid_offers_keeps_active_open_offers_once_in_order() -> None:
    answer = {
        "hits": {
            "hits": [
                _hit("A"),
                _hit("B", ativa=False),
                _hit("C", until="2027-01-09T23:59:59"),  # closed yesterday
                _hit("A"),  # repeated
                "garbage",
                {"_source": {"ativa": True}},  # no id
                _hit("D", until="2027-01-10T00:00:00"),  # closes today: still open
                _hit("E", ativa="true"),  # only a real true counts
            ]
        }
    }
    assert [o["id"] for o in valid_offers(answer, TODAY)] == ["A", "D"]


@pytest.mark.parametrize("answer", [None, [], {"hits": []}, {"hits": {"hits": {}}}])
def test_an_answer_not_shaped_like_a_search_result_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError, match="catalog answer"):
        valid_offers(answer, TODAY)


def test_the_registration_body_maps_every_field() -> None:
    order = make_order(3, phone_number="+55 (11) 97540-5666", full_name="  Maria   da Silva ")
    body = registration_body(order, offers=["O1", "O2"], gender="F", origin_settings=ORIGIN)
    cpf = make_cpf(3)
    assert (
        body
        == {
            "dadosPessoais": {
                "celular": "11975405666",  # country code dropped
                "cpf": f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}",
                "dataNascimento": "1998-04-12",
                "email": "aluno3@example.com.br",
                "endereco": {
                    "cep": "01310-100",
                    "logradouro": "Avenida Paulista",
                    "municipio": "São Paulo",
                    "numero": "1000",
                    "uf": "SP",
                },
                "necessidadesEspeciais": [],
                "nome": "Maria da Silva",
                "rg": "20000000",
                "sexo": "F",
            },
            "inscricao": {
                "canalVendas": {"id": 7},
                "idAfiliado": "QB01",
                "idTipoProva": 3,
                "ofertas": {"primeiraOpcao": {"id": "O1"}, "segundaOpcao": {"id": "O2"}},
            },
        }
    )


def test_one_offer_and_an_unknown_gender() -> None:
    body = registration_body(make_order(1), offers=["O1"], gender=None, origin_settings=ORIGIN)
    assert body["inscricao"]["ofertas"] == {"primeiraOpcao": {"id": "O1"}}
    assert body["dadosPessoais"]["sexo"] == "NI"


def test_an_incomplete_address_takes_the_configured_default() -> None:
    order = make_order(1, address={"zipcode": "01310-100", "city": "São Paulo"})
    body = registration_body(
        order, offers=["O1"], gender="M", origin_settings=ORIGIN, default_address=DEFAULT_ADDRESS
    )
    assert body["dadosPessoais"]["endereco"] == {
        "cep": "20040-020",
        "logradouro": "Rua Primeiro de Março",
        "municipio": "Rio de Janeiro",
        "numero": "66",
        "uf": "RJ",
    }
    with pytest.raises(PayloadError, match="no default_address"):
        registration_body(order, offers=["O1"], gender="M", origin_settings=ORIGIN)


def test_no_offers_or_origin_settings_make_no_registration() -> None:
    with pytest.raises(PayloadError, match="course sync has not run"):
        registration_body(make_order(1), offers=[], gender="M", origin_settings=ORIGIN)
    for key in ORIGIN:
        settings = {**ORIGIN, key: ""}
        with pytest.raises(PayloadError, match=rf"origins\.quero_bolsa\.{key}"):
            registration_body(make_order(1), offers=["O1"], gender="M", origin_settings=settings)
