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
        ({"cpf": "529.982.247-24"}, "base_user.cpf", "CPF check digits do not match"),
        ({"cpf": "111.111.111-11"}, "base_user.cpf", "CPF cannot be one repeated digit"),
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
