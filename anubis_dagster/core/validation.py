# 744 lines, over the house's ~400 for now: field rules and the used-fields walk; the field rules
# are its seam (issue 24).
"""Validation of a paid order before it becomes a subscription.

Each rule answers with a `Problem` naming the field and saying, in words an operator can act on,
what is wrong. Messages never repeat the offending value: they end up in the run log and in
alerts, and the value is often personal data.

Orders are free JSON from the marketplaces, so every field is bounded here by what the app DB
columns and the IES accept: text where text is expected (a list in `full_name` is a problem, never
`str(list)`), lengths, no NUL, control or invisible characters, integer ids that fit a bigint,
finite numbers, plausible birth dates, and a bounded document. An order that passes can be
written and sent; one that fails becomes an `invalid` subscription with these reasons.

Validate what is used, tolerate what is not: intake validates an order, for each integration it
is routed to, against the fields that integration's adapter, its routing filter and intake
itself read (`UsedFields`); any other field may hold anything or be absent, and unknown keys are
ignored. Only the whole document's size and nesting stay bounded for every order. Without
`fields`, `validate_order` checks every field it has a rule for (the strict view).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from operator import mul

from anubis_dagster.core.names import first_name_key
from anubis_dagster.core.orders import ORIGINS, PAID, digits

MIN_BIRTH_DATE = date(1900, 1, 1)
MIN_AGE_YEARS = 14  # youngest plausible student (técnico courses)
MAX_AGE_YEARS = 110
MAX_ID = 2**63 - 1  # bigint: the orders table's and subscriptions' order_id
MAX_DOCUMENT_CHARS = 256 * 1024  # a real order is ~2 KB; the payload is stored and re-read
MAX_DEPTH = 32
MAX_AMOUNT = 10_000_000
MAX_FIRST_NAME_CHARS = 80  # subscriptions.first_name, after the census normalisation

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?\Z")
# Brazilian area codes (DDD) in use.
_VALID_DDD = {
    11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42,
    43, 44, 45, 46, 47, 48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74,
    75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99,
}  # fmt: skip

#: Text fields and their maximum length: the app DB columns they reach (origin 40, first name
#: 80) and what the IES forms take. Present fields must be text within the bound.
TEXT_LIMITS: dict[str, int] = {
    "origin": 40,
    "checkout_step": 40,
    "base_user.cpf": 20,
    "base_user.full_name": 120,
    "base_user.email": 254,
    "base_user.phone_number": 20,
    "base_user.birth_date": 32,
    "base_user.gender": 20,
    "base_user.rg": 20,
    "base_user.address.zipcode": 10,
    "base_user.address.address": 200,
    "base_user.address.address_number": 20,
    "base_user.address.neighborhood": 100,
    "base_user.address.city": 100,
    "base_user.address.state": 40,
    "base_user.address.complement": 100,
    "offer.uuid": 64,
    "offer.course.name": 200,
    "offer.course.level": 60,
    "offer.course.kind": 60,
    "offer.course.shift": 60,
    "offer.course.campus.name": 200,
    "offer.course.campus.city": 100,
    "offer.course.campus.state": 40,
    "offer.course.university_offer.enrollment_semester": 10,
    "offer.course.university_offer.stock_type": 40,
}

#: Ids: integers (not booleans, not 2.7) that fit a bigint.
ID_FIELDS = (
    "id",
    "base_user.id",
    "offer.id",
    "offer.university_id",
    "offer.education_group_id",
    "offer.course.id",
    "offer.course.campus.id",
    "offer.course.university_offer.id",
)

#: Amounts and scores: finite numbers within a range.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "price": (0, MAX_AMOUNT),
    "offer.offered_price": (0, MAX_AMOUNT),
    "offer.discount_percentage": (0, 100),
    "offer.course.university_offer.full_price": (0, MAX_AMOUNT),
    "base_user.last_enem_score": (0, 1000),
    "base_user.last_enem_year": (1998, 2100),
}

# Characters a person's data never holds: template/markup syntax. Control, format (RTL marks,
# zero-width), private-use, unassigned and surrogate code points and emoji are refused by category.
_FORBIDDEN_CHARS = set("{}<>$`\\|^~")
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "So"}
_ALLOWED_SYMBOLS = {"°"}  # "N°" in addresses
_NAME_PUNCTUATION = set(" '-.’")
_ASCII_NAME = re.compile(r"[A-Za-z '\-.]*")  # ASCII letters and the ASCII name punctuation
_SAFE_KEY = re.compile(r"[A-Za-z0-9_]{1,40}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS_AND = {
    "base_user.cpf": set("0123456789.- "),
    "base_user.phone_number": set("0123456789()+-. "),
    "base_user.address.zipcode": set("0123456789.- "),
}

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


#: Fields read without a rule of their own above (an IES's codes in `offer.metadata`): a scalar,
#: text of at most this many characters (the text rules) or a finite number within a bigint.
SCALAR_TEXT_CHARS = 200


@dataclass(frozen=True)
class UsedFields:
    """The order fields one reader uses: an adapter's payload mapping, a routing filter, intake
    itself. `read` fields are validated when present; `required` ones must be present too.
    Unions (`|`) make the fields of one integration."""

    read: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()

    @classmethod
    def of(cls, read: Iterable[str] = (), required: Iterable[str] = ()) -> UsedFields:
        required = frozenset(required)
        return cls(frozenset(read) | required, required)

    def __or__(self, other: UsedFields) -> UsedFields:
        return UsedFields(self.read | other.read, self.required | other.required)

    def covers(self, path: str) -> bool:
        """Whether `path` (a field, or a value inside one) is a field read here."""
        return any(path == f or path.startswith((f + ".", f + "[]")) for f in self.read)


#: What intake itself reads of every order, whatever the integration: the subscription's
#: columns (`origin`, `cpf`, `first_name`) and the CPF of the one-active-subscription rule.
INTAKE_FIELDS = UsedFields.of(read=["base_user.full_name"], required=["origin", "base_user.cpf"])


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def _blank(text: str) -> bool:
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


_FIELD_CHECKS = {
    "base_user.cpf": check_cpf,
    "base_user.email": check_email,
    "base_user.phone_number": check_phone,
    "base_user.address.zipcode": check_cep,
}


def _kind(value: object) -> str:
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
        return f"must be text, not {_kind(value)}"
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
            f"must be an integer id, not {_kind(value) if not isinstance(value, str) else 'text'}"
        )
    if not 1 <= value <= MAX_ID:
        return f"must be an integer between 1 and {MAX_ID}"
    return None


def check_number(value: object, low: float, high: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {_kind(value) if not isinstance(value, str) else 'text'}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}"
    return None


def _safe_key(key: object) -> str:
    """A key as it may appear in a reason: hostile keys (long, odd characters) are not echoed."""
    return key if isinstance(key, str) and _SAFE_KEY.fullmatch(key) else "?"


def scan_document(order: object) -> list[Problem]:
    """Whole-document bounds: size, depth, and values no column or IES can hold anywhere in it
    (NUL, lone surrogates, NaN/Infinity, integers beyond 64 bits). Iterative: a hostile document
    cannot exhaust the stack. Most documents are plain: `_plain_size` says so at a fifth of the
    cost, and only the others are walked again to name the paths at fault."""
    if _plain_size(order, 0, 0) >= 0:
        return []
    return _scan_paths(order)


def _scan_paths(order: object) -> list[Problem]:
    """`scan_document`'s full walk, naming the path of each problem."""
    problems: dict[str, str] = {}
    size = 0
    stack: list[tuple[object, str, int]] = [(order, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            problems.setdefault("order", f"order document is nested deeper than {MAX_DEPTH}")
            continue
        if isinstance(node, dict):
            size += 2
            for key, value in node.items():
                size += len(key) + 4 if isinstance(key, str) else 8
                name = _safe_key(key)
                stack.append((value, f"{path}.{name}" if path else name, depth + 1))
        elif isinstance(node, list):
            size += 2
            stack.extend((item, f"{path}[]", depth + 1) for item in node)
        elif isinstance(node, str):
            size += len(node) + 2
            field = path or "order"
            if "\x00" in node:
                problems.setdefault(field, "holds a NUL character")
            elif not node.isascii() and _SURROGATE.search(node):
                problems.setdefault(field, "holds an invalid Unicode character (lone surrogate)")
        elif isinstance(node, float):
            size += 8
            if not math.isfinite(node):
                problems.setdefault(path or "order", "must be a finite number")
        elif isinstance(node, int) and not isinstance(node, bool):
            size += 8
            if not -MAX_ID - 1 <= node <= MAX_ID:
                problems.setdefault(path or "order", "number does not fit 64 bits")
        else:
            size += 4
        if size > MAX_DOCUMENT_CHARS:
            problems.setdefault(
                "order", f"order document is larger than {MAX_DOCUMENT_CHARS} characters"
            )
            break
    return [Problem(f, m) for f, m in problems.items()]


def _plain_size(node: object, depth: int, size: int) -> int:
    """The size `scan_document` counts for `node` (added to `size`), or -1 when it might find a
    problem in it (or the node is not a plain JSON type). Recursive but bounded: it gives up
    below `MAX_DEPTH`, so a hostile document cannot exhaust the stack."""
    if depth > MAX_DEPTH:
        return -1
    kind = type(node)
    if kind is str:
        size += len(node) + 2  # type: ignore[arg-type]
        if "\x00" in node or (not node.isascii() and _SURROGATE.search(node)):  # type: ignore
            return -1
    elif kind is dict:
        size += 2
        for key, value in node.items():  # type: ignore[attr-defined]
            size += len(key) + 4 if type(key) is str else 8
            size = _plain_size(value, depth + 1, size)
            if size < 0:
                return -1
    elif kind is int:
        size += 8
        if not -MAX_ID - 1 <= node <= MAX_ID:  # type: ignore[operator]
            return -1
    elif kind is list:
        size += 2
        for item in node:  # type: ignore[attr-defined]
            size = _plain_size(item, depth + 1, size)
            if size < 0:
                return -1
    elif kind is float:
        size += 8
        if not math.isfinite(node):  # type: ignore[arg-type]
            return -1
    elif node is None or kind is bool:
        size += 4
    else:
        return -1
    return size if size <= MAX_DOCUMENT_CHARS else -1


#: Every field the rules below read, and the same as a tree of keys (`{"base_user": (None,
#: {"cpf": ("base_user.cpf", {})…})}`), so one walk reads them all instead of one walk each.
_CHECKED_FIELDS = frozenset(
    [*BASE_REQUIRED_FIELDS, *TEXT_LIMITS, *ID_FIELDS, *NUMBER_RANGES, "base_user.birth_date"]
)
_FieldTree = dict[str, tuple[str | None, "_FieldTree"]]


def _field_tree(fields: frozenset[str]) -> _FieldTree:
    tree: _FieldTree = {}
    for field in sorted(fields):
        level = tree
        parts = field.split(".")
        for depth, part in enumerate(parts):
            name, children = level.get(part, (None, {}))
            if depth == len(parts) - 1:
                name = field
            level[part] = (name, children)
            level = children
    return tree


_FIELD_TREE = _field_tree(_CHECKED_FIELDS)


def _read_fields(node: dict[str, object], tree: _FieldTree, out: dict[str, object]) -> None:
    """`out[field] = get_path(order, field)` for the tree's fields (absent ones are left out:
    None, as `get_path` answers)."""
    for key, (field, children) in tree.items():
        value = node.get(key)
        if field is not None:
            out[field] = value
        if children and isinstance(value, dict):
            _read_fields(value, children, out)


_SURROGATE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")  # NUL or a surrogate, escaped
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")  # one byte per character
_BIG_EXPONENT = re.compile(rb"0e\+?000+(?:[,}\]\s]|$)")  # in a text whose digits are all "0"


def long_number_in(text: str | bytes | bytearray) -> bool:
    """Whether a JSON text holds 19 digits in a row (a number that may not fit 64 bits, or a
    string of digits: either way, the caller takes its careful path). A translation and a
    search, ten times quicker than the regex `[0-9]{19}`."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    return b"0" * 19 in raw.translate(_DIGITS_AS_ZERO)


def plain_json_text(text: object) -> bool:
    """Whether the document parsed from the JSON text `text` is one `scan_document` finds
    nothing in, told from the text alone (a real order's text in a few microseconds, against
    tens for the walk). True only when it cannot find anything: no NUL or surrogate escape and
    no surrogate, no number beyond 64 bits (19 digits in a row) or beyond a double (an
    exponent of 3 digits), no more than `MAX_DEPTH` brackets in all, and a text short enough
    that the document's size (at most 8 per character of text) is within bounds. NaN and
    Infinity never parse (intake refuses them)."""
    if not isinstance(text, str) or len(text) * 8 > MAX_DOCUMENT_CHARS:
        return False
    if text.count("{") + text.count("[") > MAX_DEPTH:
        return False
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        return False
    if not text.isascii() and _SURROGATE.search(text):
        return False
    digits = text.encode("utf-8").translate(_DIGITS_AS_ZERO)
    if b"0" * 19 in digits:
        return False
    # an exponent of 3 digits ends a number (not a hex string such as a UUID's "…a6e397")
    return not (
        (b"0e000" in digits or b"0e+000" in digits) and _BIG_EXPONENT.search(digits) is not None
    )


_STRICT_FIELDS = UsedFields.of(read=_CHECKED_FIELDS, required=BASE_REQUIRED_FIELDS)
_SPECIAL_FIELDS = frozenset(
    [*_FIELD_CHECKS, "base_user.birth_date", "base_user.full_name", "origin", "checkout_step"]
)
_Check = Callable[[object], str | None]


@dataclass(frozen=True)
class _Plan:
    """The rules of one set of used fields, worked out once per set (`_plan`): the fields to
    read in one walk and, for each, the checks that apply, in the order of the rule tables
    (the order of the problems an order gets)."""

    tree: _FieldTree
    required: tuple[str, ...]
    texts: tuple[tuple[str, int], ...]  # `check_text` and its bound, first (the commonest rule)
    checks: tuple[tuple[str, _Check], ...]  # then these; each sees a present, non-blank value
    first_name: bool  # the first-name column rule applies (`base_user.full_name` is read)
    strict: bool  # every value problem of the document counts, not only the whole document's
    used: UsedFields


def _range_check(low: float, high: float) -> _Check:
    return lambda value: check_number(value, low, high)


def _scalar_check(field: str) -> _Check:
    """A field read without a rule of its own: text within the text rules, or a number."""

    def check(value: object) -> str | None:
        if isinstance(value, str):
            return check_text(field, value, SCALAR_TEXT_CHARS)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be text or a number, not {_kind(value)}"
        return check_number(value, -MAX_ID - 1, MAX_ID)

    return check


def _origin_check(value: object) -> str | None:
    return None if value in ORIGINS else f"origin must be one of {', '.join(ORIGINS)}"


def _paid_check(value: object) -> str | None:
    return None if value == PAID else "order is not paid"


@lru_cache(maxsize=256)
def _plan(used: UsedFields, strict: bool = False) -> _Plan:
    fields = used.read | used.required
    checks: list[tuple[str, _Check]] = [(f, check_id) for f in ID_FIELDS if f in fields]
    checks += [(f, _range_check(*bounds)) for f, bounds in NUMBER_RANGES.items() if f in fields]
    if "origin" in fields:
        checks.append(("origin", _origin_check))
    if "checkout_step" in fields:
        checks.append(("checkout_step", _paid_check))
    checks += [(f, check) for f, check in _FIELD_CHECKS.items() if f in fields]
    if "base_user.birth_date" in fields:
        checks.append(("base_user.birth_date", _birth_date_check))  # called with `today`
    ruled = {*TEXT_LIMITS, *ID_FIELDS, *NUMBER_RANGES, *_SPECIAL_FIELDS}
    checks += [(f, _scalar_check(f)) for f in sorted(fields - ruled)]
    required = [f for f in BASE_REQUIRED_FIELDS if f in used.required]
    required += sorted(used.required - set(required))
    return _Plan(
        tree=_field_tree(frozenset(fields)),
        required=tuple(required),
        texts=tuple((f, limit) for f, limit in TEXT_LIMITS.items() if f in fields),
        checks=tuple(checks),
        first_name="base_user.full_name" in fields,
        strict=strict,
        used=used,
    )


def _birth_date_check(value: object) -> str | None:
    """A marker in a plan's checks: `validate_order` calls `check_birth_date` with its `today`."""
    raise AssertionError("check_birth_date needs today")


def validate_order(
    order: object,
    *,
    today: date,
    required_fields: tuple[str, ...] | list[str] = (),
    plain: bool = False,
    fields: UsedFields | None = None,
    scan: list[Problem] | None = None,
) -> list[Problem]:
    """All problems of `order` (empty list = valid), at most one per field.

    `fields`: the fields the integration uses (`UsedFields`): only those are validated, and of
    the whole-document scan only the size and nesting bounds count (a NUL or a 20-digit number
    in a field nobody reads is the storage's business: `storable_order`). None: every field with
    a rule, `BASE_REQUIRED_FIELDS` required, and every problem of the document (the strict
    view). `required_fields` are added to the required ones. `plain`: the caller parsed `order`
    from a text `plain_json_text` accepts, so the whole-document scan is skipped; `scan`: that
    scan's result, when the caller has it already (one scan per order, not per integration)."""
    if not isinstance(order, dict):
        return [Problem("order", "order is not a JSON object")]
    used = _STRICT_FIELDS if fields is None else fields
    if required_fields:
        used = used | UsedFields.of(required=required_fields)
    plan = _plan(used, fields is None)
    problems: dict[str, str] = {}
    values: dict[str, object] = {}
    _read_fields(order, plan.tree, values)
    for field in plan.required:
        value = values.get(field)
        if value is None or value == {} or value == [] or (type(value) is str and _blank(value)):
            problems[field] = "required field is missing"

    # absent or blank text is left to the required-field rule (an empty object or list is not
    # blank here: it is the wrong type); `problems` is empty for most orders
    for field, limit in plan.texts:
        value = values.get(field)
        if value is None or (problems and field in problems):
            continue
        if type(value) is str and _blank(value):
            continue
        if message := check_text(field, value, limit):
            problems[field] = message
    if plan.first_name and "base_user.full_name" not in problems:
        first = first_name_key(values.get("base_user.full_name"))
        if first is not None and len(first) > MAX_FIRST_NAME_CHARS:  # subscriptions column
            problems["base_user.full_name"] = (
                f"the first name is longer than {MAX_FIRST_NAME_CHARS} characters"
            )
    for field, check in plan.checks:
        value = values.get(field)
        if value is None or (problems and field in problems):
            continue
        if type(value) is str and _blank(value):
            continue
        message = check_birth_date(value, today) if check is _birth_date_check else check(value)
        if message:
            problems[field] = message

    if not plain:
        for problem in scan_document(order) if scan is None else scan:
            if plan.strict or problem.field == "order" or plan.used.covers(problem.field):
                problems.setdefault(problem.field, problem.message)
    return [Problem(f, m) for f, m in problems.items()]


def has_unstorable_values(scan: list[Problem]) -> bool:
    """Whether a document's scan found values no backend stores as they are (NUL, a lone
    surrogate, a number beyond 64 bits), as opposed to the whole document's bounds."""
    return any(not p.message.startswith("order document is") for p in scan)


def storable_order(order: dict[str, object]) -> dict[str, object]:
    """A valid order with the values no backend stores (found only in fields nobody reads:
    those that are read were validated) made storable: NUL and lone surrogates replaced by
    U+FFFD, non-finite numbers and integers beyond 64 bits dropped (null). Everything else,
    the fields an IES receives among them, is kept as it is."""

    def copy(node: object) -> object:
        if isinstance(node, dict):
            return {k: copy(v) for k, v in node.items()}
        if isinstance(node, list):
            return [copy(item) for item in node]
        if isinstance(node, str):
            if "\x00" in node or (not node.isascii() and _SURROGATE.search(node)):
                node = _SURROGATE.sub("\ufffd", node.replace("\x00", "\ufffd"))
            return node
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, int) and not -MAX_ID - 1 <= node <= MAX_ID:  # bools are in range
            return None
        return node

    result = copy(order)
    assert isinstance(result, dict)
    return result


#: What is kept of an invalid order: enough for an operator to see what was wrong, bounded so
#: any column and the JSON column of both backends accept it (the original stays at the source).
STORED_STRING_CHARS = 200
_STORED_FIELD_CHARS = {"origin": 40, "checkout_step": 40, "base_user.full_name": 80}


def storable_copy(order: dict[str, object]) -> dict[str, object]:
    """A copy of an invalid `order` that any backend stores: strings cut to a few hundred
    characters (fields that reach a column to its length), NUL and lone surrogates replaced,
    NaN/Infinity and integers beyond 64 bits dropped, nesting and size bounded."""
    budget = [MAX_DOCUMENT_CHARS]

    def clean_text(text: str, limit: int) -> str:
        text = text[:limit].replace("\x00", "\ufffd")
        if not text.isascii() and _SURROGATE.search(text):  # rare: one character at a time
            text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
        budget[0] -= len(text) + 2
        return text

    def copy(node: object, path: str, depth: int) -> object:
        if budget[0] <= 0 or depth > MAX_DEPTH:
            return None
        if isinstance(node, dict):
            out: dict[str, object] = {}
            for key, value in node.items():
                if budget[0] <= 0:
                    break
                name = clean_text(str(key), STORED_STRING_CHARS)
                out[name] = copy(value, f"{path}.{name}" if path else name, depth + 1)
            return out
        if isinstance(node, list):
            return [copy(item, f"{path}[]", depth + 1) for item in node[:1000] if budget[0] > 0]
        if isinstance(node, str):
            return clean_text(node, _STORED_FIELD_CHARS.get(path, STORED_STRING_CHARS))
        budget[0] -= 8
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_ID:
            return None
        return node

    result = copy(order, "", 0)
    return result if isinstance(result, dict) else {}
