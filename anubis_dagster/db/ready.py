"""The read-only commands' start (`anubis status`, `anubis student`, `anubis report`): cheap
when the app DB is already at the latest migration.

`resources.prepare_database` migrates with Alembic and syncs the integrations file, which
imports Dagster and every adapter: about a second and a half of a command that otherwise
answers in milliseconds (issue 20). A command that only reads needs neither when the schema is
current: this module reads the head revision from the migration files' own `revision` /
`down_revision` lines (no Alembic import) and the database's `alembic_version`, and falls back
to the full `prepare_database` whenever they differ or cannot be read (a new or older app DB,
migration files it cannot parse), so it never reads from a schema it has not checked.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from anubis_dagster.db.session import get_engine

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
_REVISION = re.compile(r"^revision(?:\s*:\s*[\w\[\] |]+)?\s*=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision(?:\s*:\s*[\w\[\] |]+)?\s*=\s*(None|[\"']([^\"']+)[\"'])", re.M)


@cache
def head_revision(versions_dir: Path = VERSIONS_DIR) -> str | None:
    """The single head of the migration files, or None when they do not show exactly one (a
    merge, a tuple of down revisions, a file this parser does not read: Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions_dir.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(2):
            parents.add(down.group(2))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def current_revision(url: str) -> str | None:
    """The app DB's Alembic revision; None when it has none (new) or cannot be read."""
    try:
        with get_engine(url).connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return None
    return rows[0][0] if len(rows) == 1 else None


def prepare_for_reading(url: str) -> None:
    """Nothing to do when the app DB is at the head; otherwise migrate and sync as every other
    command does (`resources.prepare_database`)."""
    head = head_revision()
    if head is not None and current_revision(url) == head:
        return
    from anubis_dagster.resources import prepare_database

    prepare_database(url)
