"""Schema migrations of the app DB with Alembic, callable from code and the CLI.

One path: `upgrade` (behind `anubis db upgrade` and a process's first session,
`resources.prepare_database`) and `downgrade` are the only callers of Alembic, and both hold
the migration lock while they run, so two processes that start at once (a code server and the
daemon, two run workers on a fresh database) migrate one after the other: the second finds the
schema at head and does nothing. The lock is a PostgreSQL session advisory lock, or on SQLite
an exclusive `flock` on a file beside the database (`<db>.migrate.lock`); an in-memory SQLite
database has no other process to wait for.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url

from anubis_dagster.db.session import get_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: the advisory lock's key: any constant bigint the app DB uses for nothing else
#: (the first 8 bytes of sha256("anubis_dagster.db.migrate"), signed)
ADVISORY_LOCK_KEY = -0x4E5F_1297_CF64_4D1C


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the app DB's migration lock (waits for another process's migration to end)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            yield
            return
        with open(f"{database}.migrate.lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
            yield
        return
    with get_engine(url).connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()  # the lock is the session's, not a transaction's: idle, not open
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()


def upgrade(url: str, revision: str = "head", *, then: Callable[[], None] | None = None) -> None:
    """Bring the app DB at `url` to `revision` (idempotent), under the migration lock; `then`
    runs under the same lock once the schema is there (e.g. syncing the integrations file,
    which two processes must not do at once either)."""
    with migration_lock(url):
        config = alembic_config(url)
        with get_engine(url).begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        if then is not None:
            then()


def downgrade(url: str, revision: str) -> None:
    with migration_lock(url):
        config = alembic_config(url)
        with get_engine(url).begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
