"""Last line of defence for secrets: every INSERT/UPDATE parameter this process sends through
SQLAlchemy is redacted by value before it reaches the database.

Why at the cursor: event rows are masked where they are written (`db.transitions`), but other
rows hold partner answers too (the catalog cache, follow-ups, token errors) and Dagster's own
storage (runs, the event log with exception text) is written by Dagster, not by us. Hooking
every engine's `before_cursor_execute` covers them all, the app DB and Dagster's SQLite or
PostgreSQL storage alike, whoever writes. Only writes are touched (a `SELECT` compares with what
is stored), and only text: registered secrets and credential shapes (`Bearer …`, URL passwords),
never personal data (the app DB is the system of record for it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from anubis_dagster.core.redaction import redact, redact_data

_WRITES = ("insert", "update", "replace", "upsert", "merge", "with")
_installed = False


def install_write_redaction() -> None:
    """Redact the parameters of every write on every SQLAlchemy engine of this process (once)."""
    global _installed
    if _installed:
        return
    event.listen(Engine, "before_cursor_execute", _before_cursor_execute, retval=True)
    _installed = True


def _before_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    if not statement.lstrip()[:8].lower().startswith(_WRITES):
        return statement, parameters
    if executemany and isinstance(parameters, list | tuple):
        return statement, type(parameters)(_row(row) for row in parameters)
    return statement, _row(parameters)


def _row(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {key: _value(value) for key, value in parameters.items()}
    if isinstance(parameters, list | tuple):
        return type(parameters)(_value(value) for value in parameters)
    return parameters


def _value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    obj = getattr(value, "obj", None)  # psycopg's Json/Jsonb wrappers
    if obj is not None and type(value).__name__ in ("Json", "Jsonb"):
        return type(value)(redact_data(obj))
    return value
