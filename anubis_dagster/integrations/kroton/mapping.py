"""Kroton's answers → Anubis statuses (reference §2 and seed 001's tables). Pure functions."""

from __future__ import annotations

from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.routing import normalize
from anubis_dagster.core.states import Status

#: the statuses the check job follows at Kroton (by inscription, by CPF): the adapter's
#: `check_statuses`, declared here so that `anubis report` reads it without Dagster
#: (`integrations/status_check.py`)
CHECK_STATUSES = frozenset({Status.AWAITING_REGISTER, Status.REGISTERED})

#: `inscricoes[].classificacao.descricao` → status (compared without case or accents)
CLASSIFICATIONS: dict[str, Status] = {
    "aluno": Status.ENROLLED,
    "convocado": Status.ENROLLED,
    "classificado": Status.REGISTERED,
    "inscrito": Status.REGISTERED,
    "itinerante": Status.REGISTERED,
    "inscrito vg online": Status.REGISTERED,
    "ausente": Status.DROPPED,
    "desclassificado": Status.DROPPED,
    "desclassificado por nota": Status.DROPPED,
}

#: registration processing status (register answer and inscription lookups) → status
PROCESSING: dict[str, Status] = {
    "NEW": Status.AWAITING_REGISTER,
    "PROCESSING": Status.AWAITING_REGISTER,
    "SUCCESS": Status.REGISTERED,
    "ERROR": Status.FAILED,
}


def classification_status(description: object) -> Status | None:
    """None for a classification the table does not know (logged, status kept)."""
    if not isinstance(description, str):
        return None
    key = " ".join(normalize(description).split())
    if key in CLASSIFICATIONS:
        return CLASSIFICATIONS[key]
    if key.startswith("desclassificado"):
        return Status.DROPPED
    return None


def processing_status(value: object) -> Status | None:
    return PROCESSING.get(str(value).strip().upper()) if value is not None else None


def registration_refusal(body: object) -> str | None:
    """Kroton's refusal in a registration answer (`"success": false`, or a 4xx with its
    messages), for the attempt row: its status code when it gives one, and its messages."""
    if not isinstance(body, dict) or body.get("success") is True:
        return None
    messages = [str(body.get("message") or "").strip()]
    errors = body.get("errors")
    if isinstance(errors, list):
        messages.extend(str(e) for e in errors)
    text = "; ".join(m for m in messages if m)
    if body.get("success") is not False and not text:
        return None
    code = str(body.get("code") or "").strip()
    return mask_text((f"{code}: " if code else "") + (text or "no message"))
