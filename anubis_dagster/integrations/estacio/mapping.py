"""Estácio's answers → what Anubis does with them, and the daily registration window.

Pure functions, tested without Dagster or HTTP (`test_estacio_payload.py`). The contract is
provisional (reference §3): every guess is marked "assumption" and listed in
`docs/estacio-assumptions.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anubis_dagster.core.masking import mask_text

DEFAULT_TIMEZONE = "America/Sao_Paulo"

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
_WINDOW_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@dataclass(frozen=True)
class RegisterWindow:
    """Registrations are sent only between `start` and `end`, local time of `zone` (the current
    service registers hourly in a daily window, reference §3). `end` before `start` = a window
    across midnight."""

    start: time
    end: time
    zone: str = DEFAULT_TIMEZONE

    @classmethod
    def parse(
        cls, text: str | None, *, name: str, zone: str | None = None
    ) -> RegisterWindow | None:
        """`"08:00-20:00"` → a window; empty or None → None (no window). ValueError naming the
        setting `name` when malformed."""
        if text is None or not str(text).strip():
            return None
        match = _WINDOW_RE.fullmatch(str(text))
        error = f"{name} must look like HH:MM-HH:MM (e.g. 08:00-20:00), got {text!r}"
        if not match:
            raise ValueError(error)
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
            raise ValueError(error)
        zone = zone or DEFAULT_TIMEZONE
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name}: unknown time zone {zone!r}") from None
        return cls(time(h1, m1), time(h2, m2), zone)

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone}"

    def contains(self, moment: datetime) -> bool:
        now = moment.astimezone(ZoneInfo(self.zone)).time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_start(self, moment: datetime) -> datetime | None:
        """None inside the window; else when it next opens (aware, same instant in any zone)."""
        if self.contains(moment):
            return None
        zone = ZoneInfo(self.zone)
        local = moment.astimezone(zone)
        opening = datetime.combine(local.date(), self.start, tzinfo=zone)
        if opening <= local:
            opening = datetime.combine(local.date() + timedelta(days=1), self.start, tzinfo=zone)
        return opening
