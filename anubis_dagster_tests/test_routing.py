import pytest

from anubis_dagster.core.routing import FILTER_KEY_PATHS, filter_matches, first_match
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_order

ORDER = make_order(1)


@pytest.mark.parametrize(
    ("key", "matching", "other"),
    [
        ("university_ids", [10], [40]),
        ("education_group_ids", [1], [2]),
        ("campus_ids", [77], [78]),
        ("course_levels", ["graduacao"], ["Técnico"]),
        ("course_kinds", ["PRESENCIAL"], ["EaD"]),
        ("course_shifts", ["noite"], ["Manhã"]),
        ("enrollment_semesters", ["2027.1"], ["2026.2"]),
        ("course_names", ["Administracao"], ["Direito"]),
        ("campus_cities", ["sao paulo"], ["Rio de Janeiro"]),
        ("campus_states", ["SP"], ["RJ"]),
        ("origins", ["quero_bolsa"], ["ead_com"]),
    ],
)
def test_each_filter_key(key: str, matching: list, other: list) -> None:
    assert filter_matches({key: matching}, ORDER)
    assert filter_matches({key: [*other, *matching]}, ORDER)
    assert not filter_matches({key: other}, ORDER)


def test_every_documented_key_is_tested() -> None:
    assert len(FILTER_KEY_PATHS) == 11


def test_empty_keys_match_everything_and_settings_are_ignored() -> None:
    assert filter_matches({}, ORDER)
    assert filter_matches({"university_ids": [], "course_kinds": None}, ORDER)
    assert filter_matches({"required_fields": ["x"], "metadata": {"a": 1}}, ORDER)


def test_missing_value_does_not_match() -> None:
    order = make_order(1)
    del order["offer"]["course"]["campus"]
    assert not filter_matches({"campus_ids": [77]}, order)


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown routing filter key"):
        filter_matches({"universities": [1]}, ORDER)


def test_first_matching_filter_wins() -> None:
    wyden = make_order(2, offer={**ESTACIO_OFFER, "university_id": 83, "education_group_id": 3})
    filters = [(2, {"university_ids": [83]}), (1, {"education_group_ids": [2]})]
    assert first_match(filters, wyden) == (2, {"university_ids": [83]})
    assert first_match(filters, make_order(3, offer=ESTACIO_OFFER))[0] == 1
    assert first_match(filters, ORDER) is None
