"""Which integration a paid order goes to: the `qb_offer` routing filters of reference §1.

A filter is a set of optional keys; an empty or absent key matches everything, a present key
matches when the order's value is one of the listed values (text compared without case or
accents). An order goes to every integration with a matching enabled filter; within one
integration the first matching filter (lowest id) wins.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

#: filter key → where the value lives in the order
FILTER_KEY_PATHS: dict[str, str] = {
    "university_ids": "offer.university_id",
    "education_group_ids": "offer.education_group_id",
    "campus_ids": "offer.course.campus.id",
    "course_levels": "offer.course.level",
    "course_kinds": "offer.course.kind",
    "course_shifts": "offer.course.shift",
    "enrollment_semesters": "offer.course.university_offer.enrollment_semester",
    "course_names": "offer.course.name",
    "campus_cities": "offer.course.campus.city",
    "campus_states": "offer.course.campus.state",
    "origins": "origin",
}
#: keys that carry settings, not match conditions
NON_MATCH_KEYS = frozenset({"metadata", "required_fields"})


def normalize(value: Any) -> str:
    """`"EaD"` = `"ead "`, `"Graduação"` = `"graduacao"`, 83 = `"83"`."""
    text = str(value)
    # the same few course levels, cities and ids come again and again: remember short ones
    return _normalize_text(text) if len(text) <= 200 else _normalize_uncached(text)


def _normalize_uncached(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in text if not unicodedata.combining(c))


_normalize_text = lru_cache(maxsize=8192)(_normalize_uncached)


@lru_cache(maxsize=1024)
def _allowed_set(allowed: tuple[Any, ...]) -> frozenset[str]:
    return frozenset(normalize(a) for a in allowed)


def _normalized_allowed(allowed: Any) -> frozenset[str]:
    """A filter's list of values, normalized once per distinct list (filters are few)."""
    try:
        return _allowed_set(tuple(allowed))
    except TypeError:  # an unhashable value in the list: no cache
        return frozenset(normalize(a) for a in allowed)


def filter_fields(filter_: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The order fields a filter reads to match (`FILTER_KEY_PATHS` of its non-empty keys),
    and those its `required_fields` setting asks for: what routing uses of an order routed
    through it, validated for that integration (`core.validation.UsedFields`)."""
    read = frozenset(
        path
        for key, allowed in filter_.items()
        if key not in NON_MATCH_KEYS and allowed and (path := FILTER_KEY_PATHS.get(key))
    )
    return read, frozenset(filter_.get("required_fields") or ())


def filter_matches(filter_: Mapping[str, Any], order: Any) -> bool:
    conditions, unknown_key = _conditions(filter_)
    for parts, allowed in conditions:
        value: Any = order
        for part in parts:  # `get_path`, with the path split once per filter
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or normalize(value) not in allowed:
            return False
    if unknown_key is not None:  # reached once every key before it matched
        raise ValueError(f"unknown routing filter key: {unknown_key}")
    return True


#: the conditions of a filter's keys, in order, up to a key routing does not know (if any)
_Conditions = tuple[tuple[tuple[tuple[str, ...], frozenset[str]], ...], str | None]
#: id of a filter → (the filter, its conditions): routing runs for every order, a filter's keys
#: and lists are worked out once (filters are read once per run and not changed while in use);
#: the filter is held so that its id is not reused while cached
_compiled: dict[int, tuple[Mapping[str, Any], _Conditions]] = {}


def _conditions(filter_: Mapping[str, Any]) -> _Conditions:
    """A filter's match conditions: the path of each present key and its normalized values."""
    entry = _compiled.get(id(filter_))
    if entry is not None and entry[0] is filter_:
        return entry[1]
    conditions = []
    unknown_key = None
    for key, allowed in filter_.items():
        if key in NON_MATCH_KEYS or not allowed:
            continue
        path = FILTER_KEY_PATHS.get(key)
        if path is None:
            unknown_key = key
            break
        conditions.append((tuple(path.split(".")), _normalized_allowed(allowed)))
    if len(_compiled) >= 1024:  # a long-lived process reads its filters again every run
        _compiled.clear()
    compiled = (tuple(conditions), unknown_key)
    _compiled[id(filter_)] = (filter_, compiled)
    return compiled


def first_match(
    filters: Iterable[tuple[int, Mapping[str, Any]]], order: Any
) -> tuple[int, Mapping[str, Any]] | None:
    """The first `(filter_id, filter)` of one integration that matches `order`."""
    for filter_id, filter_ in sorted(filters, key=lambda item: item[0]):
        if filter_matches(filter_, order):
            return filter_id, filter_
    return None
