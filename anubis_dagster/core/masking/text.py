"""Masking free text and JSON-like data by pattern and by key (see `core.masking`): the
patterns, the key vocabularies, and the order they run in, in one linear pass per text."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from anubis_dagster.core.masking.values import (
    is_valid_cpf,
    mask_cpf,
    mask_email,
    mask_emails,
    mask_name,
    mask_phone,
)
from anubis_dagster.core.redaction import REDACTED, is_secret_key, redact, redact_data

# --- patterns -------------------------------------------------------------------------------
# CPF with dots, dashes, spaces or nothing between its groups: 529.982.247-25, 529 982 247 25
_CPF_RE = re.compile(
    r"(?<![\d.])(\d{3})([.\s-]?)(\d{3})([.\s-]?)(\d{3})([.\s/-]?)(\d{2})(?!\d|\.\d)"
)
# Brazilian phones: optional +55, optional (DDD), 8 or 9 digit number with optional separators.
_PHONE_RE = re.compile(
    r"(?<![\d.])(?:\+?55[\s.-]?)?(?:\((?:0(?:xx)?)?\d{2}\)|(?:0(?:xx)?[\s.-]?)?\d{2})[\s.-]?"
    r"(?:9[\s.-]?)?\d{4}[\s.-]?\d{4}(?!\d|\.\d)"
    # a number without its DDD, written as phones are: 3456-7890, 97540-5666, 9 7540-5666
    r"|(?<![\d.\-/])(?!(?:19|20)\d\d-(?:19|20)\d\d(?!\d))"  # not a range of years (2025-2026)
    r"(?:9[\s.]?)?[2-9]\d{3}-\d{4}(?![\d\-/]|\.\d)"
)
# a phone after its label, even as bare digits: "tel 34567890", "celular: 975405666"
_PHONE_LABELLED_RE = re.compile(
    r"(?<![?&])\b((?i:tel|telefone|fone|celular|cel|whatsapp|contato|phone))\.?([ \t]*[:=]?[ \t]*)"
    r"(\+?[\d(][\d()\s.-]{6,18}\d)"
)
_CEP_LABELLED_RE = re.compile(r"\b(CEP)(\s*:?\s*)\d{5}-?\d{3}(?!\d)", re.IGNORECASE)

_NAME_WORD = r"[A-ZÀ-Ý](?:[A-Za-zÀ-ÿ'’-]+|\.)"
_NAME_LINK = r"(?:d[aeo]s?|D[aeo]s?|di|du|del|dell[ao]|van|von)"
_NAME_BODY = rf"{_NAME_WORD}(?:[ \t]+(?:{_NAME_LINK}[ \t]+)?{_NAME_WORD}){{0,6}}"
# a capitalised name after a word that announces a person
_NAME_AFTER_RE = re.compile(
    r"\b((?i:candidat[ao](?:\(a\))?|alun[ao](?:\(a\))?|estudante|student|"
    r"sra?\.|srta\.|senhora?|dona))([ \t]*:?[ \t]+[\"'“‘]?|[ \t]*:?[ \t]*[\"'“‘])"
    rf"({_NAME_BODY})"
)
# after "Nome:" / "Name:" the name may be in any case
_NAME_LABELLED_RE = re.compile(
    r"\b((?i:nome(?:[ \t]+(?:d[oa][ \t]+)?(?:candidat[ao]|alun[ao]|estudante))?|name|"
    r"full[ _]name)[ \t]*[:=])([ \t]*)"
    r"([A-Za-zÀ-ÿ'’-]+(?:[ \t]+[A-Za-zÀ-ÿ'’-]+){0,6})"
)
_ADDRESS_WORD = r"(?:[A-ZÀ-Ý0-9][\wÀ-ÿ'’./-]*|d[aeo]s?|e|km|n[º°o]\.?)"
_ADDRESS_RE = re.compile(
    r"\b((?i:rua|avenida|av\.?|travessa|trav\.|tv\.|alameda|al\.|rodovia|rod\.|"
    r"praça|praca|pça\.?|estrada|estr\.|viela|largo|ladeira)|R\.)([ \t]+)"
    rf"{_ADDRESS_WORD}(?:[ \t]+{_ADDRESS_WORD}){{0,7}}"
    r"(?:,[ \t]*(?:n[º°o]\.?[ \t]*)?\d+[A-Za-z]?)?"
    r"(?:[ \t]*[-,]?[ \t]*(?i:apto|apt|ap|bloco|bl|casa|sala|cj|conj|andar)\.?[ \t]*\w+)?"
)

# "key": "value" / 'key': 'value' / key="value" in text (JSON, a dict's repr, kwargs): the
# value is masked by what its key says (see `_mask_keyed_text`); bounded, so linear
_KEYED_TEXT_RE = re.compile(
    r"(?<![A-Za-z0-9_])([\"']?)([A-Za-z_][A-Za-z0-9_\-]{0,40})\1([ \t]*[:=][ \t]*)"
    r"(?:\"((?:[^\"\\\n]|\\.){0,300})\"|'((?:[^'\\\n]|\\.){0,300})')"
)
# a {campo, valor} pair written out (OneTrust's and the forms' errors): the value is personal
_PAIR_TEXT_RE = re.compile(
    r"([\"']?(?i:campo|atributo|attribute|field)[\"']?[ \t]*[:=][ \t]*[\"']([^\"'\n]{0,60})[\"']"
    r"[ \t]*[,;][ \t]*[\"']?(?i:valor|value)[\"']?[ \t]*[:=][ \t]*)"
    r"(?:\"((?:[^\"\\\n]|\\.){0,300})\"|'((?:[^'\\\n]|\\.){0,300})'|([^\s,;}\]\"']{1,300}))"
)
# a birth date after its label, in any of the usual formats
_BIRTH_RE = re.compile(
    r"\b((?i:data[ \t]+de[ \t]+nascimento|nascimento|nascid[ao][ \t]+em|dt\.?[ \t]*nasc\.?|"
    r"nasc\.|date[ \t]+of[ \t]+birth|birth[ \t_-]?date|birthday|dob))"
    r"([ \t]*[:=]?[ \t]*)(\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4})"
)
# an RG (identity card) after its label: "RG 12.345.678-9", "RG nº MG-12.345.678"
_RG_RE = re.compile(
    r"\b((?i:rg|r\.g\.|identidade))([ \t]*(?:n[º°o]\.?)?[ \t]*[:=]?[ \t]*)"
    r"((?:[A-Za-z]{2}[ \t-]?)?\d[\d.\-/ ]{3,14}[\dXx])"
)

# Spans left intact: URLs (masked by their own rules), UUIDs, timestamps, labelled ids.
_PROTECTED_RE = re.compile(
    r"(?P<url>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>|\"'`]+)"
    r"|(?P<uuid>\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b)"
    r"|(?P<time>\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?(?!\d))"
    r"|(?P<id>\b(?i:order|pedido|subscription|subscri[cç][aã]o|inscri[cç][aã]o|offer|oferta|"
    r"run|attempt|event|batch|job|step|id)s?(?i:[ _-]?id)?[\"']?[ \t]*[#:=]?[ \t]*[\"']?#?\d+\b"
    r"(?![.\s-]?\d))"
)

# Keys whose values are personal data, in the platform's and the partners' vocabularies,
# compared without case, "_" or "-" (`_key`: `data_nascimento` = `dataNascimento`).
_CPF_KEYS = {"cpf", "cpfcandidato", "documento"}
_EMAIL_KEYS = {"email", "enderecoemail"}
_PHONE_KEYS = {"phone", "phone_number", "celular", "numtelefonecelular", "telefone", "fone"}
_NAME_KEYS = {
    "full_name",
    "name",
    "nome",
    "nomecandidato",
    "user_name",
    "nome_completo",
    "nomesocial",
    "sobrenome",
    "first_name",
    "last_name",
    "nomemae",
    "nomepai",
}
_REDACT_KEYS = {
    "rg",
    "numrg",
    "identidade",
    "data_nascimento",
    "dtnascimento",
    "nascimento",
    "birthdate",
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
}


def _key(key: str) -> str:
    """A key as the sets below hold it: lower case, without "_", "-" or spaces."""
    return _KEY_NOISE_RE.sub("", key.lower())


_KEY_NOISE_RE = re.compile(r"[_\-\s]")
_CPF_KEYS = {_key(k) for k in _CPF_KEYS}
_EMAIL_KEYS = {_key(k) for k in _EMAIL_KEYS}
_PHONE_KEYS = {_key(k) for k in _PHONE_KEYS}
_NAME_KEYS = {_key(k) for k in _NAME_KEYS}
_REDACT_KEYS = {_key(k) for k in _REDACT_KEYS}
_PERSONAL_KEYS = _CPF_KEYS | _EMAIL_KEYS | _PHONE_KEYS | _NAME_KEYS | _REDACT_KEYS
#: the keys of a {campo, valor} pair
_PAIR_NAME_KEYS = ("atributo", "campo", "field", "attribute")
_PAIR_VALUE_KEYS = ("valor", "value")


def _cpf_match(match: re.Match[str]) -> str:
    separators = {match.group(2), match.group(4), match.group(6)}
    groups = (match.group(1), match.group(3), match.group(5), match.group(7))
    if separators == {"."} and all(int(g) <= 255 for g in groups):
        return match.group(0)  # an IPv4 address, not a CPF
    digits = "".join(groups)
    if separators == {""} and digits[2] == "9" and not is_valid_cpf(digits):
        return mask_phone(digits)  # 11 bare digits: a mobile (DDD + 9…), not a CPF
    return mask_cpf(match.group(0))


_HAS_DIGIT_RE = re.compile(r"\d")
# substrings without which the name and address patterns cannot match (cheap `in` tests first:
# masking runs on every log line and stored string)
_NAME_HINTS = ("candidat", "alun", "estudante", "student", "sr", "senhor", "dona", "nome", "name")
_ADDRESS_HINTS = (
    "rua", "av", "tr", "tv.", "al", "rod", "pra", "pça", "estr", "viela", "lad", "r."
)  # fmt: skip


def _mask_plain(text: str) -> str:
    """Personal data in text that holds no protected span."""
    lowered = text.lower()
    if any(hint in lowered for hint in _NAME_HINTS):
        text = _NAME_LABELLED_RE.sub(
            lambda m: m.group(1) + m.group(2) + mask_name(m.group(3)), text
        )
        text = _NAME_AFTER_RE.sub(lambda m: m.group(1) + m.group(2) + mask_name(m.group(3)), text)
    if any(hint in lowered for hint in _ADDRESS_HINTS):
        text = _ADDRESS_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    if "@" in text:
        text = mask_emails(text)
    if _HAS_DIGIT_RE.search(text) is None:
        return text
    text = _CPF_RE.sub(_cpf_match, text)
    text = _CEP_LABELLED_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}*****-***", text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)


_PERSONAL_PARAM_MASKS: dict[str, Callable[[str], str]] = {
    **{key: mask_cpf for key in _CPF_KEYS},
    **{key: mask_email for key in _EMAIL_KEYS},
    **{key: mask_phone for key in _PHONE_KEYS},
    **{key: mask_name for key in _NAME_KEYS},
}


def _mask_url_piece(piece: str, previous: str) -> str:
    decoded = unquote(piece)
    if _key(previous) in _CPF_KEYS or (
        _CPF_RE.fullmatch(decoded) is not None and is_valid_cpf(decoded)
    ):
        return mask_cpf(decoded)
    return mask_emails(piece)


def _mask_url(url: str) -> str:
    """A URL with its structure intact: CPFs in path segments, e-mails and personal or secret
    query parameters masked; ids and run ids left alone."""
    base, hash_mark, fragment = url.partition("#")
    path, question, query = base.partition("?")
    segments = path.split("/")
    masked_path = "/".join(
        _mask_url_piece(s, segments[i - 1] if i else "") for i, s in enumerate(segments)
    )
    params = []
    for param in query.split("&") if question else []:
        key, equals, value = param.partition("=")
        normalized = _key(unquote(key))
        if is_secret_key(unquote(key).lower()) and value:
            value = REDACTED
        elif normalized in _PERSONAL_PARAM_MASKS and value:
            value = _PERSONAL_PARAM_MASKS[normalized](unquote(value))
        elif normalized in _REDACT_KEYS and value:
            value = "***"
        elif value and not normalized.endswith("id"):
            # a value the key does not explain: a phone, a birth date… (ids stay as they are)
            piece = _mask_url_piece(value, "")
            decoded = unquote(piece.replace("+", " "))
            masked = _mask_plain(_mask_labelled(decoded))
            value = piece if masked == decoded else masked
        params.append(f"{key}{equals}{value}")
    return masked_path + question + "&".join(params) + hash_mark + fragment


def _labels_a_cpf(labelled: str) -> bool:
    digits = re.sub(r"\D", "", labelled)
    return len(digits) == 11 and is_valid_cpf(digits)


def _keyed_value(match: re.Match[str]) -> str:
    key = match.group(2)
    value = match.group(4) if match.group(4) is not None else match.group(5)
    normalized = _key(key)
    if normalized not in _PERSONAL_KEYS and not is_secret_key(key.lower()):
        return match.group(0)
    masked = mask_value(key, value)
    quote = '"' if match.group(4) is not None else "'"
    return f"{match.group(1)}{key}{match.group(1)}{match.group(3)}{quote}{masked}{quote}"


def _pair_value(match: re.Match[str]) -> str:
    values = [v for v in match.group(3, 4, 5) if v is not None]
    value = values[0] if values else ""
    hidden = mask_value(match.group(2), value)
    masked = "***" if hidden == value and value else hidden
    if match.group(3) is not None:
        return f'{match.group(1)}"{masked}"'
    if match.group(4) is not None:
        return f"{match.group(1)}'{masked}'"
    return f"{match.group(1)}{masked}"


_LABEL_HINTS: tuple[str, ...] = (
    "nasc",
    "birth",
    "dob",
    "rg",
    "r.g.",
    "identidade",
    "tel",
    "fone",
    "cel",
    "whatsapp",
)
_LABEL_HINTS += ("contato", "phone")  # fmt: skip


def _mask_labelled(text: str) -> str:
    """Personal data its label or key names, before protected spans are set aside (a birth
    date can look like a timestamp, a phone like an id): quoted `key: value` pairs of JSON or
    dict text, {campo, valor} pairs, birth dates, RGs and labelled phones."""
    if '"' in text or "'" in text:
        lowered = text.lower()
        if any(k in lowered for k in ("campo", "atributo", "attribute", "field")):
            text = _PAIR_TEXT_RE.sub(_pair_value, text)
        text = _KEYED_TEXT_RE.sub(_keyed_value, text)
    if _HAS_DIGIT_RE.search(text) is None:
        return text
    lowered = text.lower()
    if not any(hint in lowered for hint in _LABEL_HINTS):
        return text
    text = _BIRTH_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}**/**/****", text)
    text = _RG_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _PHONE_LABELLED_RE.sub(lambda m: m.group(1) + m.group(2) + mask_phone(m.group(3)), text)


def _mask_pii_text(text: str) -> str:
    text = _mask_labelled(text)
    if "://" not in text and _HAS_DIGIT_RE.search(text) is None:
        return _mask_plain(text)  # no URL, id, run id or timestamp to protect
    out: list[str] = []
    position = 0
    for match in _PROTECTED_RE.finditer(text):
        out.append(_mask_plain(text[position : match.start()]))
        if match.group("url"):
            out.append(_mask_url(match.group(0)))
        elif match.group("id") and _labels_a_cpf(match.group(0)):
            out.append(_mask_plain(match.group(0)))  # "id 52998224725" is still a CPF
        else:
            out.append(match.group(0))
        position = match.end()
    out.append(_mask_plain(text[position:]))
    return "".join(out)


def mask_text(text: str) -> str:
    """Scrub secrets, then CPFs, e-mails, phones, names and addresses out of free text (errors,
    IES messages, log lines, alerts), leaving URLs, run ids and timestamps usable."""
    if not text:
        return text
    return _mask_pii_text(redact(text))


def mask_value(key: str, value: Any) -> Any:
    """Mask one value according to the key it is stored under."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str | bytes) and is_secret_key(key.lower()):
        return REDACTED
    normalized = _key(key)
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
    return _mask_structure(value)


def _mask_structure(data: Any) -> Any:
    if isinstance(data, Mapping):
        name_key = next((k for k in _PAIR_NAME_KEYS if k in data), None)
        value_key = next((k for k in _PAIR_VALUE_KEYS if k in data), None)
        if name_key is not None and value_key is not None:
            # {atributo|campo, valor} pairs (OneTrust, form errors): the value is about the
            # person whatever the attribute; one we cannot recognise is hidden whole
            value = data[value_key]
            hidden = mask_value(str(data[name_key]), value)
            masked = "***" if hidden == value and value is not None else hidden
            rest = {k: v for k, v in data.items() if k != value_key}
            return {**_mask_structure(rest), value_key: masked}
        return {k: mask_value(str(k), v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_mask_structure(item) for item in data]
    if isinstance(data, str):
        return _mask_pii_text(data)
    return data


def mask_data(data: Any) -> Any:
    """Recursively mask a JSON-like structure: secrets first (by value and by key), then
    personal data by key where the key says what it is, by pattern in every other string."""
    return _mask_structure(redact_data(data))


_CEP_IN_PATH_RE = re.compile(r"(?<!\d)\d{5}-?\d{3}(?!\d)")


def mask_url_path(path: str) -> str:
    """A request path as stored and logged: secrets, CPFs, e-mails, personal query parameters
    and CEPs (`/cep/01310100`) masked; other ids intact."""
    return _CEP_IN_PATH_RE.sub("*****-***", _mask_url(redact(path)))
