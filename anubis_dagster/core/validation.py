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

Which rules apply to which fields is decided here (`UsedFields`, the rule tables, `_plan`); the
rules of one value are `field_rules.py`'s, the whole document's bounds and its storable copies
`order_document.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from anubis_dagster.core.field_rules import (
    MAX_ID,
    check_birth_date,
    check_cep,
    check_cpf,
    check_email,
    check_id,
    check_number,
    check_phone,
    check_text,
    kind_of,
)
from anubis_dagster.core.names import first_name_key
from anubis_dagster.core.order_document import Problem, scan_document
from anubis_dagster.core.orders import ORIGINS, PAID

MAX_AMOUNT = 10_000_000
MAX_FIRST_NAME_CHARS = 80  # subscriptions.first_name, after the census normalisation

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
_FIELD_CHECKS = {
    "base_user.cpf": check_cpf,
    "base_user.email": check_email,
    "base_user.phone_number": check_phone,
    "base_user.address.zipcode": check_cep,
}
#: Every field the rules below read.
_CHECKED_FIELDS = frozenset(
    [*BASE_REQUIRED_FIELDS, *TEXT_LIMITS, *ID_FIELDS, *NUMBER_RANGES, "base_user.birth_date"]
)
_STRICT_FIELDS = UsedFields.of(read=_CHECKED_FIELDS, required=BASE_REQUIRED_FIELDS)
_SPECIAL_FIELDS = frozenset(
    [*_FIELD_CHECKS, "base_user.birth_date", "base_user.full_name", "origin", "checkout_step"]
)
_Check = Callable[[object], str | None]
_MISSING = "required field is missing"


@dataclass(frozen=True)
class _FieldRule:
    """Every rule of one field in one plan, each with its rank: the position of that rule in
    the rule tables' order (required fields, text rules, the first-name column, each field's
    own checks), which is the order an order's problems are listed in. A field gets the first
    problem of its rules and no other."""

    field: str
    required: int | None = None  # rank of "required field is missing" (None: optional)
    text: tuple[int, int] | None = None  # (rank, bound) of `check_text`
    first_name: int | None = None  # rank of the first-name column rule
    check: tuple[int, _Check] | None = None  # (rank, check): sees a present, non-blank value


#: The fields of a plan as a tree of keys (`{"base_user": (None, {"cpf": (rule, {}, ())…},
#: (required rules below…))}`), so one walk of the order reads every field and applies its
#: rules on the way; the required rules below a key are missing at once when it holds no object.
_RuleTree = dict[str, tuple[_FieldRule | None, "_RuleTree", tuple[_FieldRule, ...]]]


def _rule_tree(rules: Iterable[_FieldRule]) -> _RuleTree:
    nested: dict[str, object] = {}
    for rule in rules:
        level = nested
        for part in rule.field.split("."):
            level = level.setdefault(part, {})  # type: ignore[assignment]
        level[""] = rule  # the rule of the path so far
    return _tree_of(nested)


def _tree_of(nested: dict[str, object]) -> _RuleTree:
    tree: _RuleTree = {}
    for key in sorted(k for k in nested if k):
        below: dict[str, object] = nested[key]  # type: ignore[assignment]
        rule = below.get("")
        children = _tree_of(below)
        required = tuple(
            r
            for child_rule, grandchildren, required_below in children.values()
            for r in (child_rule, *required_below)
            if r is not None and r.required is not None
        )
        tree[key] = (rule, children, required)  # type: ignore[assignment]
    return tree


def _range_check(low: float, high: float) -> _Check:
    return lambda value: check_number(value, low, high)


def _scalar_check(field: str) -> _Check:
    """A field read without a rule of its own: text within the text rules, or a number."""

    def check(value: object) -> str | None:
        if isinstance(value, str):
            return check_text(field, value, SCALAR_TEXT_CHARS)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be text or a number, not {kind_of(value)}"
        return check_number(value, -MAX_ID - 1, MAX_ID)

    return check


def _origin_check(value: object) -> str | None:
    return None if value in ORIGINS else f"origin must be one of {', '.join(ORIGINS)}"


def _paid_check(value: object) -> str | None:
    return None if value == PAID else "order is not paid"


def _birth_date_check(value: object) -> str | None:
    """A marker in a plan's checks: the walk calls `check_birth_date` with its `today`."""
    raise AssertionError("check_birth_date needs today")


@dataclass(frozen=True)
class _Plan:
    """The rules of one set of used fields, worked out once per set (`_plan`)."""

    tree: _RuleTree
    strict: bool  # every value problem of the document counts, not only the whole document's
    used: UsedFields


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
        checks.append(("base_user.birth_date", _birth_date_check))
    ruled = {*TEXT_LIMITS, *ID_FIELDS, *NUMBER_RANGES, *_SPECIAL_FIELDS}
    checks += [(f, _scalar_check(f)) for f in sorted(fields - ruled)]
    required = [f for f in BASE_REQUIRED_FIELDS if f in used.required]
    required += sorted(used.required - set(required))
    texts = [(f, limit) for f, limit in TEXT_LIMITS.items() if f in fields]

    rank = iter(range(len(required) + len(texts) + 1 + len(checks)))
    rules: dict[str, dict[str, object]] = {f: {} for f in fields}
    for field in required:
        rules[field]["required"] = next(rank)
    for field, limit in texts:
        rules[field]["text"] = (next(rank), limit)
    first_name_rank = next(rank)
    if "base_user.full_name" in fields:
        rules["base_user.full_name"]["first_name"] = first_name_rank
    for field, check in checks:
        rules[field]["check"] = (next(rank), check)
    return _Plan(
        tree=_rule_tree(_FieldRule(f, **kw) for f, kw in rules.items()),  # type: ignore[arg-type]
        strict=strict,
        used=used,
    )


def _field_problems(order: dict[str, object], plan: _Plan, today: date) -> dict[str, str]:
    """The problems of the plan's fields of `order`, at most one per field, in the rule
    tables' order (`_FieldRule`): found in one walk, sorted only when there are several."""
    found: dict[str, tuple[int, str]] = {}
    _walk(order, plan.tree, today, found)
    if len(found) > 1:
        return {f: m for f, (_, m) in sorted(found.items(), key=lambda item: item[1][0])}
    return {f: m for f, (_, m) in found.items()}


def _walk(
    node: dict[str, object], tree: _RuleTree, today: date, found: dict[str, tuple[int, str]]
) -> None:
    """Apply the rules of `tree`'s fields under `node`, recording each field's first problem.
    One loop for every rule (not a function per rule): it runs for every field of every order.
    Absent or blank text is the required-field rule's (an empty object or list is not blank:
    it is the wrong type, unless the field is required)."""
    for key, (rule, children, required_below) in tree.items():
        value = node.get(key)
        if isinstance(value, dict):
            if children:
                _walk(value, children, today, found)
        elif required_below:
            for missing in required_below:
                found[missing.field] = (missing.required, _MISSING)  # type: ignore[assignment]
        if rule is None:
            continue
        if value is None or (type(value) is str and (not value or value.isspace())):
            if rule.required is not None:
                found[rule.field] = (rule.required, _MISSING)
            continue
        if rule.required is not None and (value == {} or value == []):
            found[rule.field] = (rule.required, _MISSING)
            continue
        if rule.text is not None and (message := check_text(rule.field, value, rule.text[1])):
            found[rule.field] = (rule.text[0], message)
            continue
        if rule.first_name is not None:
            first = first_name_key(value)
            if first is not None and len(first) > MAX_FIRST_NAME_CHARS:  # subscriptions column
                found[rule.field] = (
                    rule.first_name,
                    f"the first name is longer than {MAX_FIRST_NAME_CHARS} characters",
                )
                continue
        if rule.check is not None:
            rank, check = rule.check
            message = check_birth_date(value, today) if check is _birth_date_check else check(value)
            if message:
                found[rule.field] = (rank, message)


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
    problems = _field_problems(order, plan, today)
    if not plain:
        for problem in scan_document(order) if scan is None else scan:
            if plan.strict or problem.field == "order" or plan.used.covers(problem.field):
                problems.setdefault(problem.field, problem.message)
    return [Problem(f, m) for f, m in problems.items()]
