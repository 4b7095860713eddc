"""Masking of personal data before it reaches the Dagster run log, alerts or exception text.

The ops team reads run logs and Slack; LGPD says they must not see students' CPFs, e-mails,
phones, names or addresses there. The app DB keeps the full data (it is the system of record);
everything that leaves it for a human goes through this module.

CPF masking follows the Brazilian government's publication rule (digits 4 to 9 visible:
``***.456.789-**``), which keeps enough to tell two students apart in a log without exposing the
number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_CPF_RE = re.compile(r"(?<!\d)(\d{3})\.?(\d{3})\.?(\d{3})-?(\d{2})(?!\d)")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# Brazilian phones: optional +55, optional (DDD), 8 or 9 digit number with optional separators.
_PHONE_RE = re.compile(r"(?<![\d.])(?:\+?55[\s-]?)?\(?\d{2}\)?[\s-]?9?\d{4}[\s-]?\d{4}(?![\d.])")

# Keys whose values are personal data, in the platform's and the partners' vocabularies.
_CPF_KEYS = {"cpf", "cpfcandidato", "documento"}
_EMAIL_KEYS = {"email", "enderecoemail"}
_PHONE_KEYS = {"phone", "phone_number", "celular", "numtelefonecelular", "telefone"}
_NAME_KEYS = {"full_name", "name", "nome", "nomecandidato", "user_name", "nome_completo"}
_REDACT_KEYS = {
    "rg",
    "address",
    "address_number",
    "neighborhood",
    "endereco",
    "logradouro",
    "numero",
    "endcandidato",
    "numendcandidato",
    "zipcode",
    "cep",
    "cepcandidato",
    "birth_date",
    "datanascimento",
    "birthday",
    "access_token",
    "client_secret",
    "password",
    "secret",
}


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def mask_cpf(cpf: str | None) -> str:
    """``123.456.789-09`` → ``***.456.789-**``; anything not a CPF-length number → ``***``."""
    if not cpf:
        return ""
    digits = _digits(str(cpf))
    if len(digits) != 11:
        return "***"
    return f"***.{digits[3:6]}.{digits[6:9]}-**"


def mask_email(email: str | None) -> str:
    """``maria.silva@gmail.com`` → ``m***@g***.com``."""
    if not email:
        return ""
    local, _, domain = str(email).partition("@")
    if not domain:
        return "***"
    host, _, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***.{tld}" if host else f"{local[:1]}***@***"


def mask_phone(phone: str | None) -> str:
    """Keep only the last two digits: ``(11) 97540-5666`` → ``(**) *****-**66``."""
    if not phone:
        return ""
    digits = _digits(str(phone))
    return f"(**) *****-**{digits[-2:]}" if len(digits) >= 2 else "***"


def mask_name(name: str | None) -> str:
    """Initials only: ``Maria da Silva`` → ``M. d. S.``."""
    if not name:
        return ""
    return " ".join(f"{part[0]}." for part in str(name).split() if part)


def mask_text(text: str) -> str:
    """Scrub CPFs, e-mails and phone numbers out of free text (errors, IES messages)."""
    text = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    text = _CPF_RE.sub(lambda m: mask_cpf(m.group(0)), text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)


def mask_value(key: str, value: Any) -> Any:
    """Mask one value according to the key it is stored under."""
    normalized = key.lower()
    if value is None or isinstance(value, bool):
        return value
    if normalized in _CPF_KEYS:
        return mask_cpf(str(value))
    if normalized in _EMAIL_KEYS:
        return mask_email(str(value))
    if normalized in _PHONE_KEYS:
        return mask_phone(str(value))
    if normalized in _NAME_KEYS and isinstance(value, str):
        return mask_name(value)
    if normalized in _REDACT_KEYS and not isinstance(value, Mapping | list):
        return "***"
    return mask_data(value)


def mask_data(data: Any) -> Any:
    """Recursively mask a JSON-like structure: by key where the key says what it is, by pattern
    in every other string."""
    if isinstance(data, Mapping):
        if "atributo" in data and "valor" in data:
            # OneTrust-style {atributo, valor} pairs: the value is about the person whatever
            # the attribute; one we cannot recognise is hidden whole
            value = data["valor"]
            hidden = mask_value(str(data["atributo"]), value)
            return {**data, "valor": "***" if hidden == value and value is not None else hidden}
        return {k: mask_value(str(k), v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [mask_data(item) for item in data]
    if isinstance(data, str):
        return mask_text(data)
    return data


_CEP_IN_PATH_RE = re.compile(r"(?<!\d)\d{5}-?\d{3}(?!\d)")


def mask_url_path(path: str) -> str:
    """A request path as stored and logged: CPFs, e-mails, phones and CEPs (`/cep/01310100`)
    masked."""
    return _CEP_IN_PATH_RE.sub("*****-***", mask_text(path))
