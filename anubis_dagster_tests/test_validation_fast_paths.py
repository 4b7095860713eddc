"""The fast paths intake's throughput relies on give the answers of the plain rules: checked
against the character-by-character definition on generated text (mostly ASCII, some not)."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from anubis_dagster.core import field_rules, order_document
from anubis_dagster.core.field_rules import check_text
from anubis_dagster.core.redaction import is_secret_key
from anubis_dagster.core.routing import filter_matches, normalize
from anubis_dagster.intake import candidates

FIELDS = ["base_user.full_name", "base_user.cpf", "base_user.address.city", "offer.course.name"]
ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=30)
any_text = st.text(max_size=30)
# Latin scripts and a little past them: the range of check_text's set-based fast path
latin_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=30)
names = st.text(alphabet=st.sampled_from(list("Aa Zz'-.’éÇ{<$0\x00\u200b😀")), max_size=20)


def reference(field: str, value: str) -> str | None:
    """check_text's character rule as first written (one character at a time)."""
    allowed = field_rules._DIGITS_AND.get(field)
    for char in value:
        if allowed is not None:
            if char not in allowed:
                return "may only hold digits and separators"
            continue
        if char in field_rules._FORBIDDEN_CHARS:
            return "holds characters that are not allowed (template or markup syntax)"
        category = unicodedata.category(char)
        if category in field_rules._FORBIDDEN_CATEGORIES and char not in {"°"}:
            if category == "So":
                return "holds symbols or emoji"
            return "holds control, invisible or invalid characters"
        if field == "base_user.full_name" and not (
            category[0] in "LM" or char in field_rules._NAME_PUNCTUATION
        ):
            return "a name may only hold letters, spaces, apostrophes, hyphens and dots"
    return None


@settings(max_examples=1000, deadline=None)
@given(field=st.sampled_from(FIELDS), value=ascii_text | any_text | names | latin_text)
def test_check_text_answers_as_the_character_rule(field: str, value: str) -> None:
    assert check_text(field, value, 1000) == reference(field, value)


def test_known_answers() -> None:
    assert check_text("base_user.full_name", "Maria da Silva", 120) is None
    assert check_text("base_user.full_name", "Maria {{7*7}}", 120) is not None
    assert check_text("base_user.full_name", "Maria2", 120) is not None
    assert check_text("base_user.address.city", "Sao Paulo", 100) is None
    assert check_text("base_user.address.city", "Sao <b>", 100) is not None
    assert check_text("base_user.full_name", "João D’Ávila-Ñúñez", 120) is None
    assert check_text("base_user.full_name", "João\u00a0Silva", 120) is not None  # NBSP
    assert check_text("base_user.address.address", "Rua São João, Nº 3 °", 200) is None
    assert check_text("base_user.address.address", "Rua São João\u00ad", 200) is not None
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


# --------------------------------------------------------------------------------------------
# Whole-document scan: the plain-document fast path never hides a problem the full walk finds
# --------------------------------------------------------------------------------------------
hostile_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["a\x00b", "\ud800", "x\udfffy", "é\ud83d", "ok"])
)
keys = st.text(max_size=8) | st.sampled_from(["id", "offer", "base_user", "cpf"])
documents = st.recursive(
    hostile_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=40,
)


def _nested(depth: int) -> object:
    node: object = "leaf"
    for _ in range(depth):
        node = {"a": node}
    return node


@settings(max_examples=800, deadline=None)
@given(document=documents)
def test_scan_fast_path_agrees_with_the_full_walk(document: object) -> None:
    if order_document._plain_size(document, 0, 0) >= 0:
        assert order_document._scan_paths(document) == []
    assert order_document.scan_document(document) == order_document._scan_paths(document)


def test_scan_fast_path_at_the_bounds() -> None:
    for depth in (
        order_document.MAX_DEPTH - 1,
        order_document.MAX_DEPTH,
        order_document.MAX_DEPTH + 1,
        500,
    ):
        document = _nested(depth)
        assert order_document.scan_document(document) == order_document._scan_paths(document)
    assert order_document.scan_document(_nested(order_document.MAX_DEPTH)) == []
    assert order_document.scan_document(_nested(order_document.MAX_DEPTH + 1)) != []
    limit = order_document.MAX_DOCUMENT_CHARS
    for size in (limit - 20, limit - 4, limit, limit + 10):
        document = {"k": "x" * size}
        assert order_document.scan_document(document) == order_document._scan_paths(document)
    assert order_document.scan_document([2**63]) == order_document._scan_paths([2**63]) != []
    assert order_document.scan_document([float("inf")]) != []


# --------------------------------------------------------------------------------------------
# Redaction of stored documents: the check on the JSON text never skips what the walk redacts
# --------------------------------------------------------------------------------------------
SECRET = "s3cr3t-Valu3"
redaction_keys = st.sampled_from(
    [SECRET, "Bearer abc123def", "name", "access_token", "Access-Token", "to_ken", "\u212aey",
     "apiKey", "İd", "pwd", "client secret", "x", "\u212aapikey", "subscription", "a\\b",
     'q"k', "tok\nen"]
) | st.text(max_size=10)  # fmt: skip
redaction_strings = st.sampled_from(
    [SECRET, f"x{SECRET}y", "Bearer abc123def", "bearer\tXYZ_9876543", "api\u212aey=abc12345",
     "postgresql://u:pw1234@h/db", "https://h.example/hook/" + SECRET, "plain text", "Básica",
     "line\nbreak", 'quote"d', "back\\slash", "\ud800", "São Paulo", "BASIC 12345678",
     "ba\u017fic 12345678", "ap\u0131key=abc12345", "İstanbul"]
) | st.text(max_size=20)  # fmt: skip
redaction_documents = st.recursive(
    st.none()
    | st.integers()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | redaction_strings,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(redaction_keys, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(document=redaction_documents)
def test_redacted_json_is_the_walk(document: object) -> None:
    from anubis_dagster.core import redaction

    redaction.register_secrets([SECRET], source="fast-path-test")
    try:
        fast = json.loads(redaction.redacted_json(document))
        assert fast == json.loads(json.dumps(redaction.redact_data(document)))
        assert SECRET not in json.dumps(fast, ensure_ascii=False)
    finally:
        redaction.register_secrets([], source="fast-path-test")


def test_redacted_json_takes_the_text_when_nothing_is_secret() -> None:
    from anubis_dagster.core import redaction

    order = {"id": 7, "base_user": {"full_name": "José da Silva", "city": "São Paulo"}}
    text = redaction.redacted_json(order)
    assert json.loads(text) == order and "José" in text  # orjson's text, not the walk's
    assert "[redacted]" in redaction.redacted_json({"order": {"client_secret": "abcdefgh"}})


# --------------------------------------------------------------------------------------------
# Reading orders: orjson where it answers as json does, json otherwise
# --------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "é😀", "\x00"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)
odd_texts = st.sampled_from(
    ['{"a": 1e400}', '{"a": NaN}', '{"a": -Infinity}', '{"a": "\\ud800"}', '[' * 1100 + ']' * 1100,
     '{"a": 1, "a": 2}', '\ufeff{"a": 1}', '{"a": 18446744073709551616}', '{"a": 1.5e-400}',
     '{"a": -9223372036854775809}', '{"a": 123456789012345678901234567890.5}', "", "{", "nul"]
)  # fmt: skip


def _reference(text: str | bytes) -> object:
    try:
        return ("ok", json.loads(text, parse_constant=candidates._reject_constant))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc))


def _fast(text: str | bytes) -> object:
    try:
        return ("ok", candidates.load_json(text))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc))


@settings(max_examples=1000, deadline=None)
@given(value=json_values, ascii_only=st.booleans(), as_bytes=st.booleans())
def test_load_json_reads_as_json_does(value: object, ascii_only: bool, as_bytes: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    data: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert _fast(data) == _reference(data)


@settings(max_examples=200, deadline=None)
@given(text=odd_texts)
def test_load_json_on_what_orjson_refuses_or_reads_otherwise(text: str) -> None:
    assert _fast(text) == _reference(text)


@settings(max_examples=1000, deadline=None)
@given(document=documents, ascii_only=st.booleans())
def test_a_plain_text_gives_a_document_the_scan_accepts(document: object, ascii_only: bool) -> None:
    try:
        text = json.dumps(document, ensure_ascii=ascii_only)
        parsed = candidates.load_json(text)
    except (ValueError, RecursionError):
        return  # NaN/Infinity: intake refuses the text before validation
    if order_document.plain_json_text(text):
        assert order_document._scan_paths(parsed) == []


def test_plain_json_text_known_answers() -> None:
    plain = order_document.plain_json_text
    assert plain('{"name": "Jos\\u00e9", "n": 12, "x": 1.5e10}')
    assert not plain('{"a": "\\u0000"}') and not plain('{"a": "\\uDBFF"}')
    assert not plain('{"a": "\ud800"}')  # a surrogate in the str itself
    assert not plain('{"a": 12345678901234567890}') and not plain('{"a": 1e400}')
    assert not plain('{"a": 1E+400}') and not plain("[1e4000 ]") and plain('{"u": "a6e397"}')
    assert plain("[1e40, 1e-400]")
    assert not plain("[" * 33 + "]" * 33) and plain("[" * 32 + "]" * 32)
    assert not plain({"already": "parsed"})
    assert not plain('{"a": "' + "x" * order_document.MAX_DOCUMENT_CHARS + '"}')


# --------------------------------------------------------------------------------------------
# CPF check digits: intake's arithmetic answers as python-stdnum does
# --------------------------------------------------------------------------------------------
@settings(max_examples=3000, deadline=None)
@given(number=st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_cpf_check_digits_are_stdnums(number: str) -> None:
    from stdnum.br import cpf as stdnum_cpf

    # stdnum also refuses 000.000.000-00; check_cpf refuses every repeated digit before
    accepted = stdnum_cpf.is_valid(number) and len(set(number)) > 1
    assert (field_rules.check_cpf(number) is None) is accepted


def test_cpf_check_digits_of_valid_numbers_and_their_neighbours() -> None:
    import random

    from stdnum.br import cpf as stdnum_cpf

    rng = random.Random(11)
    for _ in range(2000):  # valid numbers are 1 in 100 of random ones: make them
        stem = "".join(rng.choice("0123456789") for _ in range(9))
        valid = next(
            stem + f"{k:02d}" for k in range(100) if stdnum_cpf.is_valid(stem + f"{k:02d}")
        )
        assert field_rules.cpf_check_digits_match(valid)
        wrong = valid[:10] + str((int(valid[10]) + rng.randrange(1, 10)) % 10)
        assert not field_rules.cpf_check_digits_match(wrong)


@settings(max_examples=1500, deadline=None)
@given(
    value=st.none()
    | st.datetimes()
    | st.datetimes(timezones=st.timezones() | st.just(UTC)).filter(
        lambda moment: (
            datetime.min.replace(tzinfo=UTC) + timedelta(days=2)
            <= moment
            <= datetime.max.replace(tzinfo=UTC) - timedelta(days=2)
        )
    )
)
def test_bulk_sqlite_datetimes_are_sqlalchemys_text(value: datetime | None) -> None:
    """SQLite's bulk write formats `UTCDateTime` values itself: the text is the one
    SQLAlchemy's own processors store (and compare with in SQL), for naive (UTC) and aware
    values in any zone."""
    from sqlalchemy.dialects import sqlite

    from anubis_dagster.db.bulk_write import _sqlite_utc_text
    from anubis_dagster.db.models import UTCDateTime

    dialect = sqlite.dialect()
    type_ = UTCDateTime()
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert _sqlite_utc_text(value) == process(value)
