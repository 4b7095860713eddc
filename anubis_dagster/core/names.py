"""First names as the IBGE census writes them: upper case, no accents (`"José"` → `"JOSE"`)."""

from __future__ import annotations

import unicodedata


def first_name_key(full_name: object) -> str | None:
    if not isinstance(full_name, str) or not full_name.split():
        return None
    first = unicodedata.normalize("NFKD", full_name.split()[0])
    return "".join(c for c in first if not unicodedata.combining(c)).upper() or None
