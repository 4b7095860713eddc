"""Estácio and OneTrust request bodies built from an order (reference §3). Pure functions.

The order is the platform's (reference §1); Estácio's own codes come in `offer.metadata`
(`codCurso`, `codCampus`, `codCampusPai`, `numHabilitacao`, `codTurno`), the municipality and
district codes from Estácio's CEP lookup. What we had to assume is marked "assumption" and
listed in `docs/estacio-assumptions.md`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from anubis_dagster.core.orders import PAID, digits, get_path
from anubis_dagster.core.routing import normalize
from anubis_dagster.core.validation import UsedFields
from anubis_dagster.integrations.base import PayloadError

#: `codFormaIngresso` by course level (normalized); anything else is simplified entry (24).
#: 1 (traditional entrance exam) is never sent: Estácio refuses it for partners.
ENTRY_FORMS: dict[str, int] = {"segunda graduacao": 2, "tecnico": 15, "pos tecnico": 15}
SIMPLIFIED_ENTRY = 24
FORBIDDEN_ENTRY = 1
#: `codAgentePdv`: the sales agent code of a paid order, and of any other
PAID_SALES_AGENT = 11379
OTHER_SALES_AGENT = 14412833
#: `indModalidade` by course kind (normalized)
MODALITIES: dict[str, str] = {"presencial": "P", "ead": "E"}
#: assumption: the ENEM fields Estácio lists; we never send ENEM data (simplified entry)
ENEM_FIELDS = (
    "numInscEnem",
    "anoEnem",
    "numNotaRedacao",
    "numNotaCienciasNatureza",
    "numNotaCienciasHumanas",
    "numNotaLinguagens",
    "numNotaMatematica",
)
#: assumption: what OneTrust records next to the CPF (name and e-mail, nothing more)
CONSENT_ATTRIBUTES = (("nome", "base_user.full_name"), ("email", "base_user.email"))

#: What `registration_body`, `consent_body` and the campus and CEP helpers read of an order,
#: exactly (a test traces them over every branch and compares): intake validates these, and
#: nothing else, for Estácio.
PAYLOAD_FIELDS = UsedFields.of(
    read=[
        "base_user.address.state",
        "offer.course.level",
        "offer.course.kind",
        "offer.metadata.codCampus",
        "offer.metadata.codCampusPai",
        "offer.metadata.numHabilitacao",
        "offer.metadata.codTurno",
    ],
    required=[
        "checkout_step",
        "base_user.cpf",
        "base_user.full_name",
        "base_user.email",
        "base_user.phone_number",
        "base_user.birth_date",
        "base_user.address.zipcode",
        "base_user.address.address",
        "base_user.address.address_number",
        "offer.metadata.codCurso",
    ],
)


def entry_form(level: Any) -> int:
    """24 by default, 2 for Segunda Graduação, 15 for Técnico and Pós-técnico; never 1."""
    key = " ".join(normalize(level or "").replace("-", " ").split())
    form = ENTRY_FORMS.get(key, SIMPLIFIED_ENTRY)
    assert form != FORBIDDEN_ENTRY  # a table edit must never make it 1
    return form


def sales_agent(checkout_step: Any) -> int:
    return PAID_SALES_AGENT if checkout_step == PAID else OTHER_SALES_AGENT


def modality(kind: Any) -> str:
    found = MODALITIES.get(normalize(kind or ""))
    if found is None:
        raise PayloadError("course kind must be Presencial or EaD for Estácio")
    return found


def br_date(value: Any) -> str:
    """`1998-04-12` (or an ISO datetime) → `12/04/1998`."""
    try:
        born = date.fromisoformat(str(value)[:10])
    except ValueError:
        raise PayloadError("birth date must be a date in the form YYYY-MM-DD") from None
    return born.strftime("%d/%m/%Y")


def mobile_digits(value: Any) -> str:
    """Digits only, without the country code (Estácio wants DDD + number)."""
    number = digits(value)
    if number.startswith("55") and len(number) in (12, 13):
        number = number[2:]
    return number


def cep_of(order: Mapping[str, Any]) -> str:
    return digits(get_path(order, "base_user.address.zipcode"))


def campus_candidates(metadata: Mapping[str, Any]) -> list[str]:
    """Campus codes to try, in order: the parent campus first, then the campus itself."""
    codes: list[str] = []
    for key in ("codCampusPai", "codCampus"):
        value = metadata.get(key)
        code = str(value).strip() if value not in (None, "") else ""
        if code and code not in codes:
            codes.append(code)
    return codes


def next_campus(metadata: Mapping[str, Any], refused: Sequence[str] = ()) -> str:
    """The first candidate Estácio has not refused (MS004) yet; when it refused them all (an
    operator requeued the subscription), start over."""
    candidates = campus_candidates(metadata)
    if not candidates:
        raise PayloadError("offer metadata has neither codCampusPai nor codCampus")
    for code in candidates:
        if code not in refused:
            return code
    return candidates[0]


def alternate_campus(metadata: Mapping[str, Any], refused: Sequence[str]) -> str | None:
    """After an MS004: the candidate not refused yet, if any."""
    return next((c for c in campus_candidates(metadata) if c not in refused), None)


def _required(metadata: Mapping[str, Any], key: str) -> str:
    value = metadata.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PayloadError(f"offer metadata lacks {key} for Estácio")
    return str(value).strip()


def registration_body(
    order: Mapping[str, Any], *, campus: str, location: Mapping[str, Any]
) -> dict[str, Any]:
    """The `POST /inscricao` body. `location` is the CEP lookup's answer (codes, uf)."""
    metadata = get_path(order, "offer.metadata") or {}
    course = get_path(order, "offer.course") or {}
    user = get_path(order, "base_user") or {}
    if not isinstance(metadata, dict) or not isinstance(course, dict) or not isinstance(user, dict):
        raise PayloadError("offer metadata, course and base_user must be objects")
    found = user.get("address")
    address: dict[str, Any] = found if isinstance(found, dict) else {}
    cep = digits(address.get("zipcode"))
    if len(cep) != 8:
        raise PayloadError("CEP must have 8 digits")
    if location.get("cep") != cep:
        raise PayloadError("the CEP lookup's codes are missing or belong to another CEP")
    for key in ("address", "address_number"):
        if not str(address.get(key) or "").strip():
            raise PayloadError(f"base_user.address.{key} is required by Estácio")
    # the student's own state; the CEP's when the order has none
    uf = str(address.get("state") or location.get("uf") or "").strip().upper()
    body: dict[str, Any] = {
        "codFormaIngresso": entry_form(course.get("level")),
        "codCampus": campus,
        "numHabilitacao": _required(metadata, "numHabilitacao"),
        "codTurno": _required(metadata, "codTurno"),
        "indModalidade": modality(course.get("kind")),
        "nomeCandidato": " ".join(str(user.get("full_name") or "").split()),
        "enderecoEmail": str(user.get("email") or "").strip(),
        "numTelefoneCelular": mobile_digits(user.get("phone_number")),
        "cpfCandidato": digits(user.get("cpf")),
        "dataNascimento": br_date(user.get("birth_date")),
        "cepCandidato": cep,
        "siglaUF": uf,
        "endCandidato": " ".join(str(address.get("address")).split()),
        "numEndCandidato": str(address.get("address_number")).strip(),
        "codMunicipio": str(location["codMunicipio"]),
        "codBairro": str(location["codBairro"]),
        "codAgentePdv": sales_agent(order.get("checkout_step")),
        "codCurso": _required(metadata, "codCurso"),
    }
    body.update(dict.fromkeys(ENEM_FIELDS))
    return body


def consent_body(
    order: Mapping[str, Any], *, collection_token: str, purpose_id: str, topic_id: str
) -> dict[str, Any]:
    """The OneTrust `POST /consentimento` body (reference §3)."""
    cpf = digits(get_path(order, "base_user.cpf"))
    if len(cpf) != 11:
        raise PayloadError("CPF must have 11 digits")
    attributes = []
    for name, path in CONSENT_ATTRIBUTES:
        value = get_path(order, path)
        if value not in (None, ""):
            attributes.append({"atributo": name, "valor": " ".join(str(value).split())})
    return {
        "documento": cpf,
        "pontoColetaToken": collection_token,
        "finalidades": [{"id": purpose_id, "preferencias": [{"idTopico": topic_id}]}],
        "atributos": attributes,
    }
