"""The rules of one value of an order: a CPF, an e-mail, a phone, a birth date, a CEP, a text
field's type, length and characters, an id, a number. Each answers with what is wrong, in words
an operator can act on and never repeating the value, or None. Apart from `validation.py`,
which decides which rules apply to which fields of which order; the legacy readers use them
too."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import date, datetime
from operator import mul

from anubis_dagster.core.orders import digits

MIN_BIRTH_DATE = date(1900, 1, 1)
MIN_AGE_YEARS = 14  # youngest plausible student (técnico courses)
MAX_AGE_YEARS = 110
MAX_ID = 2**63 - 1  # bigint: the orders table's and subscriptions' order_id

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?\Z")
# Brazilian area codes (DDD) in use.
_VALID_DDD = {
    11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42,
    43, 44, 45, 46, 47, 48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74,
    75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99,
}  # fmt: skip

# Characters a person's data never holds: template/markup syntax. Control, format (RTL marks,
# zero-width), private-use, unassigned and surrogate code points and emoji are refused by category.
_FORBIDDEN_CHARS = set("{}<>$`\\|^~")
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "So"}
_ALLOWED_SYMBOLS = {"°"}  # "N°" in addresses
_NAME_PUNCTUATION = set(" '-.’")
_ASCII_NAME = re.compile(r"[A-Za-z '\-.]*")  # ASCII letters and the ASCII name punctuation
_DIGITS_AND = {
    "base_user.cpf": set("0123456789.- "),
    "base_user.phone_number": set("0123456789()+-. "),
    "base_user.address.zipcode": set("0123456789.- "),
}


def is_blank(text: str) -> bool:
    """Empty or only white space (`not text.strip()`, without a copy)."""
    return not text or text.isspace()


def check_cpf(value: object) -> str | None:
    number = digits(value)
    if len(number) != 11:
        return "CPF must have 11 digits"
    if len(set(number)) == 1:
        return "CPF cannot be one repeated digit"
    if not cpf_check_digits_match(number):
        return "CPF check digits do not match"
    return None


_FIRST_WEIGHTS = range(10, 1, -1)
_SECOND_WEIGHTS = range(11, 1, -1)


def cpf_check_digits_match(number: str) -> bool:
    """The Receita Federal's mod-11 check digits of an 11-digit CPF (ASCII digits only), as
    python-stdnum computes them (tests compare the two): intake checks every order's CPF, and
    stdnum's `is_valid`, which cleans and re-validates its input first, cost five times as much."""
    if not (len(number) == 11 and number.isascii() and number.isdigit()):
        return False
    d = [ord(c) - 48 for c in number]
    first = sum(map(mul, d, _FIRST_WEIGHTS)) * 10 % 11 % 10
    second = sum(map(mul, d, _SECOND_WEIGHTS)) * 10 % 11 % 10
    return d[9] == first and d[10] == second


def check_email(value: object) -> str | None:
    if not isinstance(value, str) or not _EMAIL_RE.match(value.strip()):
        return "e-mail is not a valid address"
    return None


def check_phone(value: object) -> str | None:
    number = digits(value)
    if number.startswith("55") and len(number) in (12, 13):
        number = number[2:]
    if len(number) not in (10, 11):
        return "phone must have a 2-digit area code and 8 or 9 digits"
    if int(number[:2]) not in _VALID_DDD:
        return "phone area code (DDD) does not exist"
    if len(number) == 11 and number[2] != "9":
        return "mobile numbers with 9 digits must start with 9"
    return None


def check_birth_date(value: object, today: date) -> str | None:
    if not isinstance(value, str):
        return "birth date must be text in the form YYYY-MM-DD"
    if not _DATE_RE.match(value):
        return "birth date must be a date in the form YYYY-MM-DD"
    try:  # the whole value: "1998-04-12T99:99" is not a date
        born = (
            date.fromisoformat(value)
            if len(value) == 10
            else datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        )
    except ValueError:
        return "birth date must be a date in the form YYYY-MM-DD"
    if born < MIN_BIRTH_DATE:
        return "birth date is before 1900"
    if born == MIN_BIRTH_DATE:
        return "birth date 1900-01-01 is a placeholder, not a date of birth"
    if born > today:
        return "birth date is in the future"
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < MIN_AGE_YEARS:
        return f"birth date gives an age under {MIN_AGE_YEARS}"
    if age > MAX_AGE_YEARS:
        return f"birth date gives an age over {MAX_AGE_YEARS}"
    return None


def check_cep(value: object) -> str | None:
    number = digits(value)
    if len(number) != 8:
        return "CEP must have 8 digits"
    if number == "0" * 8:
        return "CEP 00000-000 does not exist"
    return None


def kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "not text"


def _char_problem(char: str, name: bool) -> str | None:
    """What is wrong with one character of a text field (a person's name when `name`)."""
    if char in _FORBIDDEN_CHARS:
        return "holds characters that are not allowed (template or markup syntax)"
    category = unicodedata.category(char)
    if category in _FORBIDDEN_CATEGORIES and char not in _ALLOWED_SYMBOLS:
        if category == "So":
            return "holds symbols or emoji"
        return "holds control, invisible or invalid characters"
    if name and not (category[0] in "LM" or char in _NAME_PUNCTUATION):
        return "a name may only hold letters, spaces, apostrophes, hyphens and dots"
    return None


# The characters of Latin scripts (up to Latin Extended-B, U+024F) that `_char_problem` finds
# nothing in: a Brazilian name or address ("João", "São Paulo", "Nº 3") is checked with one
# set operation instead of a category lookup per character.
_LATIN = [chr(c) for c in range(0x250)]
_FINE_TEXT_CHARS = frozenset(c for c in _LATIN if _char_problem(c, name=False) is None)
_FINE_NAME_CHARS = frozenset(c for c in _LATIN if _char_problem(c, name=True) is None)


def check_text(field: str, value: object, limit: int) -> str | None:
    """Type, length and characters of a text field (None: fine)."""
    if not isinstance(value, str):
        return f"must be text, not {kind_of(value)}"
    if len(value) > limit:
        return f"is longer than {limit} characters"
    allowed = _DIGITS_AND.get(field)
    if allowed is not None:
        return None if allowed.issuperset(value) else "may only hold digits and separators"
    name = field == "base_user.full_name"
    # fast paths with the loop's answers: printable ASCII holds no forbidden category, so only
    # the markup characters can be wrong; most other values are Latin letters and punctuation
    if value.isascii() and value.isprintable():
        if name:
            if _ASCII_NAME.fullmatch(value):
                return None
        elif _FORBIDDEN_CHARS.isdisjoint(value):
            return None
        else:
            return "holds characters that are not allowed (template or markup syntax)"
    elif (_FINE_NAME_CHARS if name else _FINE_TEXT_CHARS).issuperset(value):
        return None
    for char in value:
        if problem := _char_problem(char, name):
            return problem
    return None


def check_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return (
            f"must be an integer id, not {kind_of(value) if not isinstance(value, str) else 'text'}"
        )
    if not 1 <= value <= MAX_ID:
        return f"must be an integer between 1 and {MAX_ID}"
    return None


def check_number(value: object, low: float, high: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {kind_of(value) if not isinstance(value, str) else 'text'}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}"
    return None
