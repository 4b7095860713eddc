"""The fast paths intake's throughput relies on give the answers of the plain rules: checked
against the character-by-character definition on generated text (mostly ASCII, some not)."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from anubis_dagster.core import validation
from anubis_dagster.core.redaction import is_secret_key
from anubis_dagster.core.routing import filter_matches, normalize
from anubis_dagster.core.validation import check_text

FIELDS = ["base_user.full_name", "base_user.cpf", "base_user.address.city", "offer.course.name"]
ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=30)
any_text = st.text(max_size=30)
names = st.text(alphabet=st.sampled_from(list("Aa Zz'-.’éÇ{<$0\x00\u200b😀")), max_size=20)


def reference(field: str, value: str) -> str | None:
    """check_text's character rule as first written (one character at a time)."""
    allowed = validation._DIGITS_AND.get(field)
    for char in value:
        if allowed is not None:
            if char not in allowed:
                return "may only hold digits and separators"
            continue
        if char in validation._FORBIDDEN_CHARS:
            return "holds characters that are not allowed (template or markup syntax)"
        category = unicodedata.category(char)
        if category in validation._FORBIDDEN_CATEGORIES and char not in {"°"}:
            if category == "So":
                return "holds symbols or emoji"
            return "holds control, invisible or invalid characters"
        if field == "base_user.full_name" and not (
            category[0] in "LM" or char in validation._NAME_PUNCTUATION
        ):
            return "a name may only hold letters, spaces, apostrophes, hyphens and dots"
    return None


@settings(max_examples=600, deadline=None)
@given(field=st.sampled_from(FIELDS), value=ascii_text | any_text | names)
def test_check_text_answers_as_the_character_rule(field: str, value: str) -> None:
    assert check_text(field, value, 1000) == reference(field, value)


def test_known_answers() -> None:
    assert check_text("base_user.full_name", "Maria da Silva", 120) is None
    assert check_text("base_user.full_name", "Maria {{7*7}}", 120) is not None
    assert check_text("base_user.full_name", "Maria2", 120) is not None
    assert check_text("base_user.address.city", "Sao Paulo", 100) is None
    assert check_text("base_user.address.city", "Sao <b>", 100) is not None
    assert check_text("base_user.cpf", "123.456.789-09", 20) is None
    assert check_text("base_user.cpf", "123a", 20) == "may only hold digits and separators"


@settings(max_examples=300, deadline=None)
@given(value=any_text | st.integers())
def test_normalize_is_the_same_with_its_cache(value: object) -> None:
    text = unicodedata.normalize("NFKD", str(value).strip().lower())
    assert normalize(value) == "".join(c for c in text if not unicodedata.combining(c))


def test_filter_lists_with_unhashable_values_still_match() -> None:
    assert filter_matches(
        {"course_levels": [["x"], "Graduação"]}, {"offer": {"course": {"level": "graduacao"}}}
    )
    assert not filter_matches({"course_levels": ["EaD"]}, {"offer": {"course": {"level": "pos"}}})


def test_secret_keys_long_and_short() -> None:
    assert is_secret_key("client_secret") and is_secret_key("Access-Token")
    assert not is_secret_key("subscription_id")
    assert is_secret_key("x" * 200 + "_password") and not is_secret_key("y" * 200)
