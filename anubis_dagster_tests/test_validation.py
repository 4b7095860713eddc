from datetime import date

import pytest

from anubis_dagster.core.validation import validate_order
from anubis_dagster_tests.factories import make_order

TODAY = date(2026, 11, 23)


def problems_of(order: dict, required: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        p.field: p.message for p in validate_order(order, today=TODAY, required_fields=required)
    }


def test_a_complete_order_is_valid() -> None:
    assert problems_of(make_order(1)) == {}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"cpf": "52998224724"}, "base_user.cpf", "CPF check digits do not match"),
        ({"cpf": "11111111111"}, "base_user.cpf", "CPF cannot be one repeated digit"),
        ({"cpf": "5299822472"}, "base_user.cpf", "CPF must have 11 digits"),
        ({"email": "maria@"}, "base_user.email", "e-mail is not a valid address"),
        ({"email": "maria silva@x.com"}, "base_user.email", "e-mail is not a valid address"),
        (
            {"phone_number": "9754-566"},
            "base_user.phone_number",
            "phone must have a 2-digit area code and 8 or 9 digits",
        ),
        (
            {"phone_number": "(20) 97540-5666"},
            "base_user.phone_number",
            "phone area code (DDD) does not exist",
        ),
        (
            {"phone_number": "(11) 87540-5666"},
            "base_user.phone_number",
            "mobile numbers with 9 digits must start with 9",
        ),
        ({"birth_date": "1890-05-01"}, "base_user.birth_date", "birth date is before 1900"),
        ({"birth_date": "2021-01-01"}, "base_user.birth_date", "birth date gives an age under 14"),
        (
            {"birth_date": "01/02/1990"},
            "base_user.birth_date",
            "birth date must be a date in the form YYYY-MM-DD",
        ),
        ({"full_name": "  "}, "base_user.full_name", "required field is missing"),
        ({"email": None}, "base_user.email", "required field is missing"),
    ],
)
def test_each_rule_names_the_field_and_explains(overrides: dict, field: str, message: str) -> None:
    assert problems_of(make_order(1, **overrides)) == {field: message}


def test_cep_rules_apply_when_present() -> None:
    order = make_order(1)
    order["base_user"]["address"]["zipcode"] = "00000-000"
    assert problems_of(order) == {"base_user.address.zipcode": "CEP 00000-000 does not exist"}
    order["base_user"]["address"]["zipcode"] = "01310"
    assert problems_of(order) == {"base_user.address.zipcode": "CEP must have 8 digits"}


def test_integration_required_fields() -> None:
    order = make_order(1)
    del order["base_user"]["address"]
    required = ("base_user.address.zipcode", "base_user.address.address")
    assert problems_of(order, required) == {
        "base_user.address.zipcode": "required field is missing",
        "base_user.address.address": "required field is missing",
    }
    assert problems_of(order) == {}


def test_origin_and_payment() -> None:
    order = make_order(1, origin="elsewhere")
    order["checkout_step"] = "pending"
    assert problems_of(order) == {
        "origin": "origin must be one of quero_bolsa, ead_com, guia_da_carreira, mundo_vestibular",
        "checkout_step": "order is not paid",
    }


def test_garbage_is_a_problem_not_a_crash() -> None:
    assert [p.field for p in validate_order("nope", today=TODAY)] == ["order"]
    order = make_order(1)
    order["base_user"] = ["not", "an", "object"]
    assert "base_user.cpf" in problems_of(order)


def test_messages_never_repeat_the_value() -> None:
    order = make_order(1, cpf="52998224724", email="maria@", phone_number="123")
    for message in problems_of(order).values():
        assert "52998224724" not in message and "maria@" not in message


CONTROL = "holds control, invisible or invalid characters"
TEMPLATE = "holds characters that are not allowed (template or markup syntax)"
NAME_CHARS = "a name may only hold letters, spaces, apostrophes, hyphens and dots"
PLACEHOLDER = "birth date 1900-01-01 is a placeholder, not a date of birth"
NOT_A_DATE = "birth date must be a date in the form YYYY-MM-DD"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"full_name": ["Maria", "Silva"]}, "base_user.full_name", "must be text, not a list"),
        ({"full_name": {"first": "Maria"}}, "base_user.full_name", "must be text, not an object"),
        ({"full_name": 42}, "base_user.full_name", "must be text, not a number"),
        ({"email": True}, "base_user.email", "must be text, not a boolean"),
        ({"full_name": "M" * 121}, "base_user.full_name", "is longer than 120 characters"),
        ({"full_name": "Maria\x00Silva"}, "base_user.full_name", CONTROL),
        ({"full_name": "Maria\u202eSilva"}, "base_user.full_name", CONTROL),
        ({"full_name": "Maria 😀 Silva"}, "base_user.full_name", "holds symbols or emoji"),
        ({"full_name": "{{7*7}} Silva"}, "base_user.full_name", TEMPLATE),
        ({"full_name": "Robert'); DROP TABLE x;--"}, "base_user.full_name", NAME_CHARS),
        ({"cpf": "529a982b247c25"}, "base_user.cpf", "may only hold digits and separators"),
        ({"birth_date": "1900-01-01"}, "base_user.birth_date", PLACEHOLDER),
        ({"birth_date": "2030-01-01"}, "base_user.birth_date", "birth date is in the future"),
        ({"birth_date": "0001-01-01"}, "base_user.birth_date", "birth date is before 1900"),
        ({"birth_date": 19980412}, "base_user.birth_date", "must be text, not a number"),
        ({"birth_date": "9999-99-99"}, "base_user.birth_date", NOT_A_DATE),
        ({"id": 2**63}, "base_user.id", "must be an integer between 1 and 9223372036854775807"),
        ({"id": "12"}, "base_user.id", "must be an integer id, not text"),
    ],
)
def test_every_field_is_bounded(overrides: dict, field: str, message: str) -> None:
    assert problems_of(make_order(1, **overrides)) == {field: message}


def test_a_cpf_as_a_number_is_not_text() -> None:
    order = make_order(1)
    order["base_user"]["cpf"] = 52998224725  # a number loses leading zeros
    assert problems_of(order) == {"base_user.cpf": "must be text, not a number"}


def test_names_with_accents_apostrophes_and_hyphens_are_fine() -> None:
    assert problems_of(make_order(1, full_name="Ana-Lúcia D'Ávila Conceição Jr.")) == {}


def test_order_ids_must_be_integers_in_range() -> None:
    for bad, message in [
        (True, "must be an integer id, not a boolean"),
        (2.7, "must be an integer id, not a number"),
        (0, "must be an integer between 1 and 9223372036854775807"),
        (10**30, "must be an integer between 1 and 9223372036854775807"),
    ]:
        order = make_order(1)
        order["id"] = bad
        assert problems_of(order)["id"] == message
    order = make_order(1)
    order["offer"]["university_id"] = [10]
    assert problems_of(order) == {"offer.university_id": "must be an integer id, not a list"}


def test_the_whole_document_is_bounded() -> None:
    order = make_order(1)
    order["offer"]["metadata"]["notes"] = "x" * (10 * 1024 * 1024)
    assert problems_of(order) == {"order": "order document is larger than 262144 characters"}
    order = make_order(1)
    order["offer"]["metadata"]["bad"] = "a\x00b"
    order["offer"]["metadata"]["score"] = float("nan")
    order["offer"]["metadata"]["big"] = 10**40
    order["offer"]["metadata"]["lone"] = "\ud800"
    order["offer"]["metadata"]["x\x00" * 50] = 1  # a hostile key is not echoed in the reason
    assert problems_of(order) == {
        "offer.metadata.bad": "holds a NUL character",
        "offer.metadata.score": "must be a finite number",
        "offer.metadata.big": "number does not fit 64 bits",
        "offer.metadata.lone": "holds an invalid Unicode character (lone surrogate)",
    }
    deep: dict = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    order = make_order(1)
    order["offer"]["metadata"] = deep
    assert problems_of(order) == {"order": "order document is nested deeper than 32"}


def test_amounts_are_finite_numbers_in_range() -> None:
    order = make_order(1)
    order["price"] = float("inf")
    order["offer"]["discount_percentage"] = 140
    order["offer"]["course"]["university_offer"]["full_price"] = "599,90"
    assert problems_of(order) == {
        "price": "must be a finite number",
        "offer.discount_percentage": "must be between 0 and 100",
        "offer.course.university_offer.full_price": "must be a number, not text",
    }


@pytest.mark.parametrize(
    "value", ["1998-04-12T99:99", "19980412", "1998-4-12", " 1998-04-12", "1998-04-12\n"]
)
def test_a_birth_date_is_the_whole_value_not_its_first_ten_characters(value: str) -> None:
    order = make_order(1)
    order["base_user"]["birth_date"] = value
    assert "base_user.birth_date" in problems_of(order)


def test_a_birth_date_may_carry_a_time() -> None:
    assert problems_of(make_order(1, birth_date="1998-04-12T00:00:00Z")) == {}


def test_the_first_name_fits_its_column_after_normalisation() -> None:
    # 30 ligatures are 30 characters, and 90 once the census normalisation expands them
    assert problems_of(make_order(1, full_name="ﬃ" * 30 + " Silva")) == {
        "base_user.full_name": "the first name is longer than 80 characters"
    }
    assert problems_of(make_order(1, full_name="A" * 80 + " Silva")) == {}
