"""Masking one value whose kind is known (a CPF, an e-mail, a phone, a name), the CPF check,
and the linear e-mail scan `core.masking.text` runs over free text."""

from __future__ import annotations

import re

# e-mails are found by a linear scan around each "@" (`mask_emails`), not by a regex: the
# pattern `[…]+@[…]+\.[A-Za-z]{2,}` backtracks over every start position (16k chars: 1.6 s)
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_EMAIL_DOMAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def is_valid_cpf(value: str) -> bool:
    """Whether `value`'s digits are a CPF with matching check digits (tells a CPF in a URL
    from an 11-digit id)."""
    digits = _digits(value)
    if len(digits) != 11 or digits == digits[0] * 11:
        return False
    for size in (9, 10):
        total = sum(int(d) * w for d, w in zip(digits[:size], range(size + 1, 1, -1), strict=True))
        if (total * 10 % 11) % 10 != int(digits[size]):
            return False
    return True


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


def _domain_end(text: str, start: int, stop: int) -> int:
    r"""End of the e-mail domain in `text[start:stop]` (a run of domain characters), as the
    greedy pattern `[A-Za-z0-9.-]+\.[A-Za-z]{2,}` would end it; `start` if there is none."""
    dot = text.rfind(".", start + 2, stop)  # at least one character before the dot
    while dot != -1:
        end = dot + 1
        while end < stop and text[end] in _ASCII_LETTERS:
            end += 1
        if end - dot - 1 >= 2:
            return end
        dot = text.rfind(".", start + 2, dot)
    return start


def mask_emails(text: str) -> str:
    """Every e-mail address of `text` masked, in one pass: each character is looked at a
    bounded number of times (the local part stops at the previous "@" or match, the domain at
    the next "@")."""
    out: list[str] = []
    position = 0
    at = text.find("@")
    size = len(text)
    while at != -1:
        start = at
        while start > position and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        stop = at + 1
        while stop < size and text[stop] in _EMAIL_DOMAIN:
            stop += 1
        end = _domain_end(text, at, stop) if start < at else at
        if end > at:
            out.append(text[position:start])
            out.append(mask_email(text[start:end]))
            position = end
        at = text.find("@", max(at + 1, position))
    out.append(text[position:])
    return "".join(out)
