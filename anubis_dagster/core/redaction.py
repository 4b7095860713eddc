"""Redaction of secrets by value, before any text is stored or shown.

Masking by key name alone leaks: Kroton's subscription key travels as the OAuth `scope`, the
OneTrust collection-point token sits in the consent body as `pontoColetaToken`, and an exception
may quote a URL or a header. So every configured secret *value* is registered here once per
process (by the settings model, or from the environment where the definitions are built) and
replaced wherever it shows up: as typed, URL-encoded, form-encoded, JSON-escaped or base64.
Values under secret-looking keys, `Bearer`/`Basic`/`apiKey` credentials and passwords inside
URLs are redacted even when nobody registered them.

Plain Python: no environment reads (the settings module passes the environment to
`secret_values_from`), no Dagster. `core.masking.mask_text`/`mask_data` call `redact` first, so
every masking call also redacts.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

import orjson

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words and numbers everywhere

_lock = threading.Lock()
_secrets: set[str] = set()  # everything registered: _unsourced and every source's values
_unsourced: set[str] = set()
_by_source: dict[str, set[str]] = {}
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_pattern: re.Pattern[str] | None = None
_forms_found: tuple[str, ...] = ()  # every spelling of every secret, longest first
_json_forms_found: tuple[str, ...] = ()  # the same as they appear inside a JSON text
_shortest_form = 0  # a text shorter than every spelling holds none

# Credentials in an Authorization-style header value, whoever wrote them.
# The credential must hold a digit or symbol, so prose ("Basic information") is left alone.
_AUTH_SCHEME_RE = re.compile(
    r"\b(Bearer|Basic|apiKey)(\s+|=)(?=[A-Za-z0-9+/=._~\-]*[0-9+/=_~\-])[A-Za-z0-9+/=._~\-]{6,}",
    re.IGNORECASE,
)
# `scheme://user:password@host`: the password, whether or not it was registered.
_URL_PASSWORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)([^\s/@]+)(@)")

# Normalised (lower case, letters and digits only) key names whose values are secrets.
_SECRET_KEYS = {
    "secret",
    "token",
    "password",
    "passwd",
    "pwd",
    "apikey",
    "xapikey",
    "subscription",
    "subscriptionkey",
    "ocpapimsubscriptionkey",
    "authorization",
    "proxyauthorization",
    "clientsecret",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "pontocoletatoken",
    "cookie",
    "setcookie",
}
_SECRET_KEY_SUFFIXES = ("secret", "token", "password", "passwd", "apikey", "subscriptionkey")
# The shortest words a secret key's normalised name contains (`accesstoken` holds `token`).
_SECRET_KEY_WORDS = tuple(
    sorted(
        word
        for word in _SECRET_KEYS.union(_SECRET_KEY_SUFFIXES)
        if not any(other != word and other in word for other in _SECRET_KEYS)
    )
)
# …and, as letters, the credential schemes `_AUTH_SCHEME_RE` looks for (`apikey` is a word)
_WORDS_TO_REDACT = (*_SECRET_KEY_WORDS, "bearer", "basic")
# every byte but ASCII letters and digits: what `is_secret_key`'s normalisation removes
_NOT_ALNUM_BYTES = bytes(b for b in range(256) if not (b < 128 and chr(b).isalnum()))
# The letters outside ASCII that `str.lower()` turns into ASCII letters (İ → i̇, K → k) or that
# case-insensitive patterns match as ASCII letters (ı, ſ): a text holding one is read by the
# walk, since lowering ASCII only could miss a key word or a scheme
_ASCII_LOOKALIKES = "\u0130\u0131\u017f\u212a"

# Environment variable names whose values are secrets (…SECRET…, …TOKEN…, …API_KEY…).
_SECRET_ENV_RE = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|SUBSCRIPTION|PRIVATE_KEY|CREDENTIAL|WEBHOOK"
)
# …but these name settings about a secret, not the secret itself.
_NOT_SECRET_ENV_SUFFIXES = (
    "_RATE_LIMIT",
    "_TIMEOUT",
    "_TIMEOUT_SECONDS",
    "_SECONDS",
    "_TTL",
    "_FILE",
    "_PATH",
    "_ENABLED",
)


def _forms(secret: str) -> set[str]:
    """Every spelling in which `secret` can reach a text: as is, URL- and form-encoded,
    JSON-escaped, base64."""
    encoded = quote(secret, safe="")
    forms = {
        secret,
        encoded,
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        *_base64_fragments(secret.encode()),
    }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _base64_fragments(raw: bytes) -> set[str]:
    """The characters of base64 that depend only on `raw`, at each of the three alignments it
    can have inside a longer value: finds the secret in `Basic base64(client_id:secret)` or any
    other encoded blob, whatever precedes it."""
    fragments = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw).decode()
            start = -(-offset * 8 // 6)  # characters that hold bits of the prefix
            end = (offset + len(raw)) * 8 // 6  # the last one may hold bits of what follows
            fragment = encoded[start:end]
            if len(fragment) >= 2 * MIN_SECRET_LENGTH:  # shorter ones match by chance
                fragments.add(fragment)
    return fragments


def register_secrets(values: Iterable[str | None], *, source: str | None = None) -> None:
    """Add secret values to the process-wide registry.

    Empty and very short values are ignored (they would redact ordinary words). A URL counts
    only for its credentials: its password, or the whole URL and its path when it is an
    http(s) URL with a path or query (a webhook's token lives there); `sqlite:///…` or a
    password-less database URL is not a secret. With `source` (e.g. "settings"), the values
    replace those that source registered before, so a process whose settings are reloaded
    (tests) does not pile up stale ones.
    """
    global _pattern, _forms_found, _json_forms_found, _shortest_form
    added = {part for v in values if isinstance(v, str) for part in _secret_parts(v.strip())}
    with _lock:
        if source is not None:
            if _by_source.get(source) == added:
                return
            _by_source[source] = added
        elif added <= _unsourced:
            return
        else:
            _unsourced.update(added)
        _secrets.clear()
        _secrets.update(_unsourced, *_by_source.values())
        forms = set().union(*(_forms(s) for s in _secrets))
        # longest first: a secret that contains another is replaced whole
        alternatives = sorted(forms, key=lambda f: (-len(f), f))
        _pattern = re.compile("|".join(re.escape(f) for f in alternatives)) if forms else None
        _forms_found = tuple(alternatives)
        _json_forms_found = tuple({json.dumps(f, ensure_ascii=False)[1:-1] for f in forms})
        _shortest_form = min((len(f) for f in forms), default=0)


def _secret_parts(value: str) -> set[str]:
    if len(value) < MIN_SECRET_LENGTH:
        return set()
    if not _URL_RE.match(value):
        return {value}
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return {value}
    found = {unquote(password)} if password and len(password) >= MIN_SECRET_LENGTH else set()
    carries_token = parts.scheme in ("http", "https") and (parts.path.strip("/") or parts.query)
    if password or carries_token:
        found.add(value)
    if carries_token and len(parts.path.strip("/")) >= 2 * MIN_SECRET_LENGTH:
        found.add(parts.path)  # an access log shows the path alone
    return found


def registered_count() -> int:
    """How many secret values are registered (for `anubis doctor` and tests)."""
    return len(_secrets)


def clear_secrets() -> None:
    """Forget every registered value (tests only)."""
    global _pattern, _forms_found, _json_forms_found, _shortest_form
    with _lock:
        _secrets.clear()
        _unsourced.clear()
        _by_source.clear()
        _pattern = None
        _forms_found = ()
        _json_forms_found = ()
        _shortest_form = 0


def redact(text: str) -> str:
    """`text` with every registered secret, credential header value and URL password replaced."""
    if not text:
        return text
    # cheap substring tests first: this runs on every stored parameter and log line, and a
    # regex pass over a long text costs ten times more than the few `in` tests that rule it out
    # (most stored values, a status or a first name, are shorter than any spelling)
    pattern, forms = _pattern, _forms_found
    if pattern is not None and len(text) >= _shortest_form and any(f in text for f in forms):
        text = pattern.sub(REDACTED, text)
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered or "apikey" in lowered:
        text = _AUTH_SCHEME_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD_RE.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)
    return text


def is_secret_key(key: str) -> bool:
    """Whether a value stored under `key` is a credential whatever it looks like."""
    # every stored JSON document asks this of each of its keys, and the keys are few
    return _is_secret_key(key) if len(key) <= 100 else _is_secret_key_uncached(key)


def _is_secret_key_uncached(key: str) -> bool:
    normalized = re.sub(r"[^a-z0-9]", "", key.lower())
    return normalized in _SECRET_KEYS or normalized.endswith(_SECRET_KEY_SUFFIXES)


_is_secret_key = lru_cache(maxsize=4096)(_is_secret_key_uncached)


def redact_data(data: Any) -> Any:
    """A JSON-like structure with secret-keyed values hidden and every string redacted."""
    if isinstance(data, str):  # the commonest node first: this walks every stored document
        return redact(data)
    if isinstance(data, dict | Mapping):
        # only text under a secret key is hidden whole: `{"subscription": 42}` is an id; keys
        # are redacted like any text (a secret, or a URL with its password, can be a key)
        redacted: dict[Any, Any] = {}
        for key, value in data.items():
            hidden = isinstance(value, str | bytes) and is_secret_key(str(key))
            name = redact(key) if isinstance(key, str) else key
            redacted[name] = REDACTED if hidden else redact_data(value)
        return redacted
    if isinstance(data, list | tuple):
        return [redact_data(item) for item in data]
    return data


def redacted_json(data: Any) -> str:
    """`json.dumps(redact_data(data))`, for the documents written in bulk (every order intake
    stores). Most documents hold nothing to redact, and that shows on their JSON text at a
    fraction of the walk's cost: orjson's text (UTF-8, not ASCII-escaped) holds every key and
    string as is, so `_may_need_redaction` finds on it all that `redact_data` would act on (and
    some more: then the walk decides). Data orjson refuses (keys that are not text, integers
    beyond 64 bits, lone surrogates) takes the walk. Unlike json, orjson writes NaN and
    Infinity as null (json's `NaN` is refused by every JSON column; validation keeps them out
    of stored orders anyway)."""
    try:
        raw = orjson.dumps(data)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return json.dumps(redact_data(data))  # not plain JSON data: the walk's answer (or error)
    text = raw.decode()
    return json.dumps(redact_data(data)) if _may_need_redaction(text, raw) else text


def _may_need_redaction(text: str, raw: bytes) -> bool:
    """Whether `redact_data` could change the document whose orjson text is `text` (`raw` in
    UTF-8). False only when it cannot: no escape at all (a string's or key's characters are
    then in the text as they are), no spelling of a registered secret, no URL with an `@`, and
    among the letters and digits of the text (how `is_secret_key` normalises a key) no key word
    of a secret key and no credential scheme. The letters come from the bytes: lowering them
    lowers ASCII only, which is all those words are made of, unless a letter of
    `_ASCII_LOOKALIKES` is in the text. orjson's text holds no lone surrogate (it refuses
    them). About 10 µs for a 1.2 kB order; each `in` on the str is twice as quick as on bytes."""
    if "\\" in text:
        return True
    forms = _json_forms_found
    if forms and any(form in text for form in forms):
        return True
    if "://" in text and "@" in text:
        return True
    if not text.isascii() and any(letter in text for letter in _ASCII_LOOKALIKES):
        return True
    letters = raw.lower().translate(None, _NOT_ALNUM_BYTES).decode("ascii")
    return any(word in letters for word in _WORDS_TO_REDACT)


def is_secret_variable(name: str) -> bool:
    """Whether an environment variable named `name` holds a secret."""
    upper = name.upper()
    return bool(_SECRET_ENV_RE.search(upper)) and not upper.endswith(_NOT_SECRET_ENV_SUFFIXES)


def secret_values_from(environ: Mapping[str, str]) -> list[str]:
    """The secret values in an environment: every secret-named variable, and the password in
    any `*_URL`/`*_DSN` (`postgresql://user:pw@host/db`)."""
    values: list[str] = []
    for name, value in environ.items():
        if not value:
            continue
        if is_secret_variable(name):
            values.append(value)
        if name.upper().endswith(("_URL", "_DSN", "_URI")):
            password = _url_password(value)
            if password:
                values.append(password)
    return values


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        return None
    return unquote(password) if password else None
