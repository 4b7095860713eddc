"""The demo world shared by the order generator and the IES sandboxes.

The sandboxes must answer the demo orders the way the real partners would: Kroton's catalog must
hold offers matching the Kroton courses the marketplaces sell, Estácio must know the campus and
course codes carried in the offers' metadata, and the CEP lookup must know the students' CEPs.
Keeping that world in one module keeps the three in step.

Nothing here is real partner data; codes are invented but shaped like the partners' own.
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------------------------
# Universities and groups (Quero's ids)
# --------------------------------------------------------------------------------------------
KROTON_EDUCATION_GROUP_ID = 1
ESTACIO_EDUCATION_GROUP_ID = 2
KROTON_UNIVERSITY_IDS = [10, 20, 30]  # Anhanguera, Unopar, Pitágoras (demo ids)
ESTACIO_UNIVERSITY_IDS = [40]
# Wyden universities register through the Estácio API (reference section 1).
WYDEN_UNIVERSITY_IDS = [83, 511, 517, 638, 835, 944, 951, 1106, 1228, 1309, 3569]
UNROUTED_UNIVERSITY_ID = 999  # a university no integration serves

CAPTURE_PERIOD = 20271  # Kroton's periodoCaptacao for semester 2027.1
CATALOG_END_DATE = "2099-12-31"  # dtTerminoInscricao of open offers

# --------------------------------------------------------------------------------------------
# Kroton: the catalog (Elasticsearch `_source` documents served by the sandbox)
# --------------------------------------------------------------------------------------------
# Each Kroton offer in the marketplace carries in `offer.metadata` (flat) the keys the catalog
# search needs. A course with two or more active documents can be registered (first and second
# option); "Filosofia" at unit 5003 has only one, so its orders end `empty_course`.
KROTON_COURSES: list[dict[str, Any]] = [
    # name, unit, type, modality, monthly price, documents (system, shifts)
    {
        "dsCurso": "Administração",
        "idUnidadeOrigem": 5001,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "PRESENCIAL",
        "vlMensalidadeDe": 599.9,
        "sistema": "OLIMPO",
        "offers": 3,
    },
    {
        "dsCurso": "Direito",
        "idUnidadeOrigem": 5001,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "PRESENCIAL",
        "vlMensalidadeDe": 899.9,
        "sistema": "OLIMPO",
        "offers": 2,
    },
    {
        "dsCurso": "Pedagogia",
        "idUnidadeOrigem": 5002,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "EAD",
        "vlMensalidadeDe": 199.9,
        "sistema": "COLABORAR",
        "offers": 2,
    },
    {
        "dsCurso": "Análise e Desenvolvimento de Sistemas",
        "idUnidadeOrigem": 5002,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "EAD",
        "vlMensalidadeDe": 249.9,
        "sistema": "COLABORAR",
        "offers": 4,
    },
    {
        "dsCurso": "Enfermagem",
        "idUnidadeOrigem": 5003,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "PRESENCIAL",
        "vlMensalidadeDe": 1099.9,
        "sistema": "OLIMPO",
        "offers": 2,
    },
    {
        "dsCurso": "Filosofia",
        "idUnidadeOrigem": 5003,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "PRESENCIAL",
        "vlMensalidadeDe": 399.9,
        "sistema": "OLIMPO",
        "offers": 1,
    },
    {
        "dsCurso": "Técnico em Enfermagem",
        "idUnidadeOrigem": 5004,
        "dsTipoCurso": "TECNICO",
        "dsModalidade": "PRESENCIAL",
        "vlMensalidadeDe": 299.9,
        "sistema": "OLIMPO",
        "offers": 2,
    },
]


def kroton_catalog_documents() -> list[dict[str, Any]]:
    """The `_source` documents of Kroton's offer index, as the catalog middleware returns them."""
    docs: list[dict[str, Any]] = []
    for course_index, course in enumerate(KROTON_COURSES):
        for n in range(course["offers"]):
            docs.append(
                {
                    "id": f"{1093731 + course_index}-446-{52505 + n}-580-"
                    f"{course['idUnidadeOrigem']}-11342-{100 + n}",
                    "dsCurso": course["dsCurso"],
                    "idUnidadeOrigem": course["idUnidadeOrigem"],
                    "dsTipoCurso": course["dsTipoCurso"],
                    "dsModalidade": course["dsModalidade"],
                    "vlMensalidadeDe": course["vlMensalidadeDe"],
                    "dtTerminoInscricao": CATALOG_END_DATE,
                    "ativa": True,
                    "periodoCaptacao": CAPTURE_PERIOD,
                    "sistema": course["sistema"],
                }
            )
    # An inactive and an expired offer for Direito: a correct search must not count them.
    docs.append({**docs[3], "id": "inactive-direito-5001", "ativa": False})
    docs.append({**docs[3], "id": "expired-direito-5001", "dtTerminoInscricao": "2020-01-31"})
    return docs


# --------------------------------------------------------------------------------------------
# Estácio / Wyden: offers known to the registration API
# --------------------------------------------------------------------------------------------
# The sandbox accepts a registration when (codCurso, codCampus) is one of these pairs, where
# codCampus may be either the campus code or its parent campus code, as `accepts` says.
# `accepts` = which campus code Estácio's API knows this offer under: "pai" (codCampusPai, the
# first try), "campus" (codCampus only: the first try gets MS004, the switch succeeds) or
# "none" (MS004 both times).
ESTACIO_OFFERS: list[dict[str, Any]] = [
    {
        "university_id": 40,
        "course": "Direito",
        "codCurso": "DIR01",
        "codCampus": "E101",
        "codCampusPai": "E100",
        "numHabilitacao": "1",
        "codTurno": "N",
        "kind": "Presencial",
        "accepts": "pai",
    },
    {
        "university_id": 40,
        "course": "Psicologia",
        "codCurso": "PSI02",
        "codCampus": "E201",
        "codCampusPai": "E200",
        "numHabilitacao": "1",
        "codTurno": "M",
        "kind": "Presencial",
        "accepts": "campus",
    },
    {
        "university_id": 40,
        "course": "Gestão de Recursos Humanos",
        "codCurso": "GRH03",
        "codCampus": "E301",
        "codCampusPai": "E300",
        "numHabilitacao": "2",
        "codTurno": "V",
        "kind": "EaD",
        "accepts": "pai",
    },
    {
        "university_id": 40,
        "course": "Arquitetura",
        "codCurso": "ARQ09",
        "codCampus": "E901",
        "codCampusPai": "E900",
        "numHabilitacao": "1",
        "codTurno": "N",
        "kind": "Presencial",
        "accepts": "none",
    },
    {
        "university_id": 83,
        "course": "Medicina Veterinária",
        "codCurso": "VET04",
        "codCampus": "W401",
        "codCampusPai": "W400",
        "numHabilitacao": "1",
        "codTurno": "I",
        "kind": "Presencial",
        "accepts": "pai",
    },
    {
        "university_id": 511,
        "course": "Engenharia Civil",
        "codCurso": "ENC05",
        "codCampus": "W501",
        "codCampusPai": "W500",
        "numHabilitacao": "1",
        "codTurno": "N",
        "kind": "Presencial",
        "accepts": "pai",
    },
]

# --------------------------------------------------------------------------------------------
# CEP directory: what the location lookup answers (Estácio needs IBGE-like codes)
# --------------------------------------------------------------------------------------------
CEP_DIRECTORY: dict[str, dict[str, str]] = {
    "01310100": {
        "uf": "SP",
        "municipio": "São Paulo",
        "codMunicipio": "3550308",
        "bairro": "Bela Vista",
        "codBairro": "1001",
        "logradouro": "Avenida Paulista",
    },
    "12243740": {
        "uf": "SP",
        "municipio": "São José dos Campos",
        "codMunicipio": "3549904",
        "bairro": "Jardim Aquarius",
        "codBairro": "2002",
        "logradouro": "Rua Pedro de Toledo",
    },
    "20040020": {
        "uf": "RJ",
        "municipio": "Rio de Janeiro",
        "codMunicipio": "3304557",
        "bairro": "Centro",
        "codBairro": "3003",
        "logradouro": "Rua da Assembleia",
    },
    "30130010": {
        "uf": "MG",
        "municipio": "Belo Horizonte",
        "codMunicipio": "3106200",
        "bairro": "Centro",
        "codBairro": "4004",
        "logradouro": "Avenida Afonso Pena",
    },
    "40010000": {
        "uf": "BA",
        "municipio": "Salvador",
        "codMunicipio": "2927408",
        "bairro": "Comércio",
        "codBairro": "5005",
        "logradouro": "Avenida da França",
    },
    "80010000": {
        "uf": "PR",
        "municipio": "Curitiba",
        "codMunicipio": "4106902",
        "bairro": "Centro",
        "codBairro": "6006",
        "logradouro": "Praça Tiradentes",
    },
    "90010150": {
        "uf": "RS",
        "municipio": "Porto Alegre",
        "codMunicipio": "4314902",
        "bairro": "Centro Histórico",
        "codBairro": "7007",
        "logradouro": "Rua dos Andradas",
    },
    "60060000": {
        "uf": "CE",
        "municipio": "Fortaleza",
        "codMunicipio": "2304400",
        "bairro": "Centro",
        "codBairro": "8008",
        "logradouro": "Rua Floriano Peixoto",
    },
}
