"""The offer fields the conversion report groups by, kept as columns of the subscription.

The report counts registered → enrolled by modality and by campus, read from the order's offer
(`offer.course.kind`, `offer.course.campus.name`, `offer.course.campus.city`). Reading them
out of a year of JSON payloads took most of `anubis report --days 365` at cutover size (issue
20), so the values are written beside the payload whenever it is written (intake, the ORM) and
the report groups by the columns. Each column holds the value as the report shows it (`str` of
the JSON value), or NULL where the report says "unknown" (missing, not an object, empty, false).
"""

from __future__ import annotations

from typing import Any

#: the order's offer fields conversion is grouped by: modality, campus name, campus city
CONVERSION_PATHS = ("offer.course.kind", "offer.course.campus.name", "offer.course.campus.city")
#: the subscription's columns holding them, in the same order
OFFER_COLUMNS = ("offer_kind", "offer_campus_name", "offer_campus_city")
#: characters kept of each: the report's index carries the three (`db/models.py`), and an index
#: entry must stay under ~2.7 kB; validation refuses longer campus names (200) and cities (100)
OFFER_TEXT_LIMIT = 200
_NONE: dict[str, str | None] = dict.fromkeys(OFFER_COLUMNS)


def offer_columns(order: Any) -> dict[str, str | None]:
    """The three columns of an order, as `get_path` reads each path (a step that is missing or
    not an object gives None) and the report names it (falsy is unknown, else `str`, cut).
    Written out flat: intake calls it for every order."""
    offer = order.get("offer") if isinstance(order, dict) else None
    course = offer.get("course") if isinstance(offer, dict) else None
    if not isinstance(course, dict):
        return dict(_NONE)
    kind = course.get("kind")
    campus = course.get("campus")
    name = city = None
    if isinstance(campus, dict):
        name, city = campus.get("name"), campus.get("city")
    limit = OFFER_TEXT_LIMIT
    return {
        "offer_kind": str(kind)[:limit] if kind else None,
        "offer_campus_name": str(name)[:limit] if name else None,
        "offer_campus_city": str(city)[:limit] if city else None,
    }


def modality_label(kind: str | None) -> str:
    """The report's modality row of a subscription's `offer_kind`."""
    return kind or "unknown"


def campus_label(name: str | None, city: str | None) -> str:
    """The report's campus row: "name (city)", the name alone, or "unknown"."""
    return f"{name} ({city})" if name and city else name or "unknown"
