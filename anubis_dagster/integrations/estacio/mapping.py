"""Estácio's answers → what Anubis does with them, and the daily registration window.

Pure functions, tested without Dagster or HTTP (`test_estacio_payload.py`). The contract is
provisional (reference §3): every guess is marked "assumption" and listed in
`docs/estacio-assumptions.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from anubis_dagster.core.daily_window import DailyWindow
from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.states import Status

#: the statuses a check job would follow: none, Estácio has no status endpoint, so whether a
#: registered student enrolled is never known. The adapter's `check_statuses`, declared here
#: so that `anubis report` reads it without Dagster (`integrations/status_check.py`)
CHECK_STATUSES: frozenset[Status] = frozenset()

#: answers of ours (`HttpResult.outcome`) after which the request may have been processed
_MAYBE_PROCESSED = frozenset({"http_5xx", "timeout", "malformed", "lost_answer"})


# --------------------------------------------------------------------------------------------
# Registration answers
# --------------------------------------------------------------------------------------------
class Answer(StrEnum):
    REGISTERED = "registered"  # sucesso true with a numeroInscricao
    ALREADY_REGISTERED = "already_registered"  # ATL016: the CPF is registered at Estácio
    OFFER_NOT_FOUND = "offer_not_found"  # MS004: unknown course/campus pair
    INVALID = "invalid"  # MS002 (or a 400/422): field-level refusal, permanent
    UNCLEAR = "unclear"  # 2xx without an explicit success: we can't tell what happened
    TRANSIENT = "transient"  # 5xx, timeout, 429, unknown refusal code…: try again later


@dataclass(frozen=True)
class RegistrationAnswer:
    kind: Answer
    numero: str | None = None
    message: str = ""
    #: the request may have registered the student although the answer doesn't say so
    unknown: bool = False
    code: str | None = None


def classify_registration(outcome: str, http_status: int | None, body: Any) -> RegistrationAnswer:
    """What a `POST /inscricao` answer means. `outcome` is the `ApiClient`'s (ok, http_4xx…).

    Only an explicit success counts: `"sucesso": true` and a `numeroInscricao`. Estácio answers
    refusals with HTTP 200 too, so the error code in the body is read before the status.
    """
    data = body if isinstance(body, dict) else {}
    code = str(data.get("codigo") or "").strip().upper() or None
    numero = _text(data.get("numeroInscricao"))
    message = _message(data)
    if outcome in ("ok", "http_4xx") and code:
        if code == "ATL016":
            return RegistrationAnswer(Answer.ALREADY_REGISTERED, numero, message, code=code)
        if code == "MS004":
            return RegistrationAnswer(Answer.OFFER_NOT_FOUND, None, message, code=code)
        if code == "MS002":
            return RegistrationAnswer(Answer.INVALID, None, message, code=code)
    if outcome == "ok":
        if data.get("sucesso") is True and numero:
            return RegistrationAnswer(Answer.REGISTERED, numero, message)
        if data.get("sucesso") is False:
            # assumption: a refusal code we don't know may be temporary; retried on the
            # schedule, then dead-lettered with Estácio's words (nothing was registered)
            text = f"Estácio refused ({code or 'no code'}): {message or 'no message'}"
            return RegistrationAnswer(Answer.TRANSIENT, None, text, code=code)
        return RegistrationAnswer(
            Answer.UNCLEAR,
            None,
            "HTTP 200 without an explicit success (sucesso true and numeroInscricao)"
            + (f": {message}" if message else ""),
            unknown=True,
        )
    if outcome == "http_4xx" and http_status in (400, 422):
        return RegistrationAnswer(Answer.INVALID, None, message or f"HTTP {http_status}", code=code)
    return RegistrationAnswer(
        Answer.TRANSIENT,
        None,
        message or (f"HTTP {http_status}" if http_status else outcome),
        unknown=outcome in _MAYBE_PROCESSED,
        code=code,
    )


def registration_refusal(body: Any) -> str | None:
    """Estácio's refusal in a registration answer, as its code and message ("MS004: Oferta não
    encontrada"), for the attempt row; None for anything else. Estácio refuses inside HTTP 200
    (`"sucesso": false`) as well as with a 4xx; what the refusal means for the student is
    `classify_registration`'s business."""
    data = body if isinstance(body, dict) else {}
    code = str(data.get("codigo") or "").strip().upper()
    if data.get("sucesso") is not False and not code:
        return None
    return f"{code or 'no code'}: {_message(data) or 'no message'}"


def _message(data: dict[str, Any]) -> str:
    """`mensagem` plus MS002's field list, masked (a message may quote the student's data)."""
    parts = [str(data.get("mensagem") or data.get("message") or "").strip()]
    errors = data.get("erros")
    if isinstance(errors, list):
        fields = []
        for item in errors:
            if isinstance(item, dict):
                fields.append(f"{item.get('campo', '?')}: {item.get('mensagem', '')}".strip())
            else:
                fields.append(str(item))
        if fields:
            parts.append("; ".join(fields))
    return mask_text(" — ".join(p for p in parts if p))


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


# --------------------------------------------------------------------------------------------
# OneTrust consent and the CEP lookup
# --------------------------------------------------------------------------------------------
def consent_receipt(outcome: str, body: Any) -> str | None:
    """The receipt of a recorded consent; None unless the answer says so explicitly."""
    if outcome != "ok" or not isinstance(body, dict):
        return None
    return _text(body.get("receiptId"))


class Lookup(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not_found"  # Estácio doesn't know the CEP: registration can't be built
    TRANSIENT = "transient"


@dataclass(frozen=True)
class LocationAnswer:
    kind: Lookup
    location: dict[str, str] | None = None
    message: str = ""


def classify_location(outcome: str, http_status: int | None, body: Any, cep: str) -> LocationAnswer:
    """The codes Estácio's registration needs (`codMunicipio`, `codBairro`) from a CEP answer."""
    if outcome == "ok":
        data = body if isinstance(body, dict) else {}
        municipio, bairro = _text(data.get("codMunicipio")), _text(data.get("codBairro"))
        if municipio and bairro:
            location = {"cep": cep, "codMunicipio": municipio, "codBairro": bairro}
            uf = _text(data.get("uf"))
            if uf:
                location["uf"] = uf.upper()
            return LocationAnswer(Lookup.FOUND, location)
        return LocationAnswer(
            Lookup.TRANSIENT, message="CEP answer without codMunicipio and codBairro"
        )
    if outcome == "http_4xx" and http_status in (400, 404):
        return LocationAnswer(
            Lookup.NOT_FOUND,
            message=f"the student's CEP is unknown to Estácio's location lookup (HTTP "
            f"{http_status}); municipality and district codes are required",
        )
    return LocationAnswer(Lookup.TRANSIENT, message=f"CEP lookup failed: {outcome}")


# --------------------------------------------------------------------------------------------
# The daily registration window
# --------------------------------------------------------------------------------------------
RegisterWindow = DailyWindow  # the name the Estácio adapter and its tests use
