"""Read access to a paid order in the Quero platform's shape (reference section 1).

Orders arrive as free JSON from the marketplaces and may be malformed in any way; this module
never raises on a missing or mistyped field: it answers None and lets validation explain.
"""

from __future__ import annotations

import re
from typing import Any

ORIGINS = ("quero_bolsa", "ead_com", "guia_da_carreira", "mundo_vestibular")
PAID = "paid"


def get_path(order: Any, path: str) -> Any:
    """`get_path(order, "offer.course.name")`; None when any step is missing or not an object."""
    node = order
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


_NOT_DIGITS = re.compile(r"\D")


def digits(value: Any) -> str:
    return _NOT_DIGITS.sub("", str(value)) if value is not None else ""


def order_id(order: Any) -> int | None:
    value = get_path(order, "id")
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def cpf_digits(order: Any) -> str:
    return digits(get_path(order, "base_user.cpf"))
