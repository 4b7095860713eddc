"""Validation of a paid order before it becomes a subscription.

Each rule answers with a `Problem` naming the field and saying, in words an operator can act on,
what is wrong. Messages never repeat the offending value: they end up in the run log and in
alerts, and the value is often personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from stdnum.br import cpf as stdnum_cpf

from anubis_dagster.core.orders import ORIGINS, PAID, digits, get_path

MIN_BIRTH_DATE = date(1900, 1, 1)
MIN_AGE_YEARS = 14  # youngest plausible student (técnico courses)

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")
# Brazilian area codes (DDD) in use.
_VALID_DDD = {
    11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42,
    43, 44, 45, 46, 47, 48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74,
    75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99,
}  # fmt: skip

#: Fields every order needs, whatever the integration.
BASE_REQUIRED_FIELDS = (
    "id",
    "origin",
    "checkout_step",
    "base_user.cpf",
    "base_user.full_name",
    "base_user.email",
    "base_user.phone_number",
    "base_user.birth_date",
    "offer.id",
    "offer.university_id",
    "offer.course.name",
)


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == {}


def check_cpf(value: object) -> str | None:
    number = digits(value)
    if len(number) != 11:
        return "CPF must have 11 digits"
    if len(set(number)) == 1:
        return "CPF cannot be one repeated digit"
    if not stdnum_cpf.is_valid(number):
        return "CPF check digits do not match"
    return None


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
    try:
        born = date.fromisoformat(str(value)[:10])
    except ValueError:
        return "birth date must be a date in the form YYYY-MM-DD"
    if born < MIN_BIRTH_DATE:
        return "birth date is before 1900"
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < MIN_AGE_YEARS:
        return f"birth date gives an age under {MIN_AGE_YEARS}"
    return None


def check_cep(value: object) -> str | None:
    number = digits(value)
    if len(number) != 8:
        return "CEP must have 8 digits"
    if number == "0" * 8:
        return "CEP 00000-000 does not exist"
    return None


_FIELD_CHECKS = {
    "base_user.cpf": check_cpf,
    "base_user.email": check_email,
    "base_user.phone_number": check_phone,
    "base_user.address.zipcode": check_cep,
}


def validate_order(
    order: object, *, today: date, required_fields: tuple[str, ...] | list[str] = ()
) -> list[Problem]:
    """All problems of `order` (empty list = valid). `required_fields` are the integration's own
    (from its routing filter), added to `BASE_REQUIRED_FIELDS`."""
    if not isinstance(order, dict):
        return [Problem("order", "order is not a JSON object")]
    problems: list[Problem] = []
    required = dict.fromkeys([*BASE_REQUIRED_FIELDS, *required_fields])
    for field in required:
        if _is_blank(get_path(order, field)):
            problems.append(Problem(field, "required field is missing"))
    missing = {p.field for p in problems}

    if "origin" not in missing and get_path(order, "origin") not in ORIGINS:
        problems.append(Problem("origin", f"origin must be one of {', '.join(ORIGINS)}"))
    if "checkout_step" not in missing and get_path(order, "checkout_step") != PAID:
        problems.append(Problem("checkout_step", "order is not paid"))

    for field, check in _FIELD_CHECKS.items():
        value = get_path(order, field)
        if field in missing or _is_blank(value):
            continue
        message = check(value)
        if message:
            problems.append(Problem(field, message))
    birth = get_path(order, "base_user.birth_date")
    if "base_user.birth_date" not in missing and not _is_blank(birth):
        message = check_birth_date(birth, today)
        if message:
            problems.append(Problem("base_user.birth_date", message))
    return problems
