"""Connections to the app database: SQLite file by default, PostgreSQL when configured.

`ANUBIS_DATABASE_URL` selects the database (`postgresql://…` or `sqlite:///…`); without it the
app DB is `.anubis/anubis.db` under `ANUBIS_HOME` (default: `.anubis` in the working directory).
Engines hide bound parameters in error messages: an IntegrityError must not print a CPF.
Both variables are read through the validated settings (`anubis_dagster.settings`), so a URL
with an unknown scheme fails at load with a readable message instead of deep in SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from anubis_dagster.settings import get_settings

ANUBIS_HOME_ENV = "ANUBIS_HOME"
DATABASE_URL_ENV = "ANUBIS_DATABASE_URL"


def anubis_home() -> Path:
    home = get_settings().home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `postgresql://`) and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def default_database_url() -> str:
    url = get_settings().database_url()
    return normalize_url(url) if url else f"sqlite:///{anubis_home() / 'anubis.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, open transactions (savepoints then work), and
    # open them IMMEDIATE: a writer waits for the lock up front instead of failing on upgrade.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@cache
def get_engine(url: str) -> Engine:
    """One engine per URL per process (engines own connection pools)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, hide_parameters=True, pool_pre_ping=True, pool_size=5)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
