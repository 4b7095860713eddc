"""Kroton request bodies built from an order: the catalog query and the registration.

Pure functions of the order, the integration settings and the chosen offers; what we had to
assume about Kroton's fields is marked "assumption" and listed in the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from anubis_dagster.core.orders import digits, get_path
from anubis_dagster.core.routing import normalize
from anubis_dagster.core.validation import UsedFields
from anubis_dagster.integrations.base import PayloadError

# assumption: marketplace course levels/kinds → Kroton catalog vocabulary
COURSE_TYPES = {
    "graduacao": "GRADUACAO",
    "segunda graduacao": "GRADUACAO",
    "tecnico": "TECNICO",
    "pos-tecnico": "TECNICO",
}
MODALITIES = {"presencial": "PRESENCIAL", "ead": "EAD"}
ADDRESS_FIELDS = ("zipcode", "address", "address_number", "city", "state")

#: What `catalog_query` and `registration_body` read of an order, exactly (a test traces both
#: over every branch and compares): intake validates these, and nothing else, for Kroton.
PAYLOAD_FIELDS = UsedFields.of(
    read=[
        "base_user.rg",
        *(f"base_user.address.{f}" for f in ADDRESS_FIELDS),
        "offer.course.level",
        "offer.course.kind",
        "offer.course.university_offer.full_price",
        "offer.course.university_offer.enrollment_semester",
        "offer.metadata.dsTipoCurso",
        "offer.metadata.dsModalidade",
        "offer.metadata.vlMensalidadeDe",
        "offer.metadata.periodoCaptacao",
    ],
    required=[
        "base_user.cpf",
        "base_user.full_name",
        "base_user.email",
        "base_user.phone_number",
        "base_user.birth_date",
        "offer.course.name",
        "offer.metadata.idUnidadeOrigem",
    ],
)


def _norm(value: object) -> str:
    return normalize(value) if value is not None else ""


def catalog_query(order: Mapping[str, Any], today: date) -> dict[str, Any]:
    """The Elasticsearch query of reference §2 for this order's course. Keys the offer's
    metadata gives are used as they are; missing ones are derived from the course."""
    metadata = get_path(order, "offer.metadata") or {}
    course = get_path(order, "offer.course") or {}
    name = course.get("name")
    unit = metadata.get("idUnidadeOrigem")
    if not name or unit is None:
        raise PayloadError("offer needs course.name and metadata.idUnidadeOrigem for Kroton")
    course_type = metadata.get("dsTipoCurso") or COURSE_TYPES.get(_norm(course.get("level")))
    modality = metadata.get("dsModalidade") or MODALITIES.get(_norm(course.get("kind")))
    price = metadata.get("vlMensalidadeDe")
    if price is None:
        price = get_path(course, "university_offer.full_price")
    period = metadata.get("periodoCaptacao")
    if period is None:  # assumption: "2027.1" → 20271
        semester = str(get_path(course, "university_offer.enrollment_semester") or "")
        period = int(semester.replace(".", "")) if semester.replace(".", "").isdigit() else None

    must: list[dict[str, Any]] = [
        {"match": {"dsCurso": {"query": name, "operator": "AND"}}},
        {"match": {"idUnidadeOrigem": unit}},
    ]
    if course_type:
        must.append({"match": {"dsTipoCurso": course_type}})
    if price is not None:
        must.append({"match": {"vlMensalidadeDe": price}})
    must.append({"match": {"ativa": True}})
    if modality:
        must.append({"match": {"dsModalidade": modality}})
    if period is not None:
        must.append({"term": {"periodoCaptacao": period}})
    must.append({"range": {"dtTerminoInscricao": {"gte": today.isoformat()}}})
    return {"size": 10, "query": {"bool": {"must": must}}}


def valid_offers(answer: Any, today: date) -> list[dict[str, Any]]:
    """Active, still-open offers of a catalog answer, first seen first, without repeats.
    Raises ValueError when the answer is not shaped like an Elasticsearch result."""
    if not isinstance(answer, dict) or not isinstance(answer.get("hits"), dict):
        raise ValueError("catalog answer has no hits object")
    hits = answer["hits"].get("hits")
    if not isinstance(hits, list):
        raise ValueError("catalog answer hits.hits is not a list")
    offers, seen = [], set()
    for hit in hits:
        source = hit.get("_source") if isinstance(hit, dict) else None
        if not isinstance(source, dict) or not source.get("id") or source["id"] in seen:
            continue
        if source.get("ativa") is not True:
            continue
        if str(source.get("dtTerminoInscricao") or "")[:10] < today.isoformat():
            continue
        seen.add(source["id"])
        offers.append(source)
    return offers


def _address(order: Mapping[str, Any], default: Mapping[str, Any] | None) -> dict[str, str]:
    address = get_path(order, "base_user.address") or {}
    if not isinstance(address, dict) or any(not address.get(f) for f in ADDRESS_FIELDS):
        if not default:
            raise PayloadError("address is incomplete and no default_address is configured")
        address = dict(default)
    cep = digits(address.get("zipcode"))
    return {
        "cep": f"{cep[:5]}-{cep[5:]}",
        "logradouro": str(address["address"]),
        "municipio": str(address["city"]),
        "numero": str(address["address_number"]),
        "uf": str(address["state"]).upper(),
    }


def registration_body(
    order: Mapping[str, Any],
    *,
    offers: list[str],
    gender: str | None,
    origin_settings: Mapping[str, Any],
    default_address: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `POST /ms/inscricao/v4/captacao/inscricao` body (reference §2, seed 001)."""
    if not offers:
        raise PayloadError("no Kroton offers chosen yet (course sync has not run)")
    for key in ("canal_vendas_id", "id_afiliado", "id_tipo_prova"):
        if origin_settings.get(key) in (None, ""):
            raise PayloadError(f"integration settings lack origins.{order.get('origin')}.{key}")
    user = get_path(order, "base_user") or {}
    cpf = digits(user.get("cpf"))
    phone = digits(user.get("phone_number"))
    if phone.startswith("55") and len(phone) in (12, 13):
        phone = phone[2:]
    ofertas: dict[str, Any] = {"primeiraOpcao": {"id": offers[0]}}
    if len(offers) > 1:
        ofertas["segundaOpcao"] = {"id": offers[1]}
    return {
        "dadosPessoais": {
            "celular": phone,
            "cpf": f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}",
            "dataNascimento": str(user.get("birth_date"))[:10],
            "email": str(user.get("email") or "").strip(),
            "endereco": _address(order, default_address),
            "necessidadesEspeciais": [],
            "nome": " ".join(str(user.get("full_name") or "").split()),
            "rg": str(user.get("rg") or ""),
            "sexo": gender if gender in ("M", "F") else "NI",
        },
        "inscricao": {
            "canalVendas": {"id": int(origin_settings["canal_vendas_id"])},
            "idAfiliado": str(origin_settings["id_afiliado"]),
            "idTipoProva": int(origin_settings["id_tipo_prova"]),
            "ofertas": ofertas,
        },
    }
