"""INSERT … ON CONFLICT DO UPDATE on both backends: for rows several processes may write at
once (cached tokens, cached catalog answers, quarantined orders), where read-then-insert would
race."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def upsert(
    session: Session,
    model: type,
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    keep: Sequence[str] = (),
    set_: Mapping[str, Any] | None = None,
) -> None:
    """Insert `values` (one row, or several in one statement; several must not share a
    `key`), or update the row with the same `key`: every column given takes the new value,
    except those in `keep` (e.g. `created_at`) and those `set_` says otherwise (an expression
    on the existing row, such as a counter + 1)."""
    rows = [values] if isinstance(values, Mapping) else list(values)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(model).values(rows)
    skip = {*key, *keep, *(set_ or {})}
    statement = statement.on_conflict_do_update(
        index_elements=list(key),
        set_={
            **{name: statement.excluded[name] for name in rows[0] if name not in skip},
            **(set_ or {}),
        },
    )
    session.execute(statement)
