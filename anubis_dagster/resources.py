"""Dagster resources shared by every area: the app database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from sqlalchemy.orm import Session

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.db.migrate import upgrade
from anubis_dagster.db.session import default_database_url, session_scope

_prepared: set[str] = set()


def prepare_database(url: str) -> None:
    """Migrate the app DB and sync the integrations file into it (once per process), both
    under the migration lock (`db.migrate`): processes that start at once take turns."""
    if url in _prepared:
        return

    def sync() -> None:
        with session_scope(url) as session:
            sync_integrations(session, load_integrations())

    upgrade(url, then=sync)
    _prepared.add(url)


class AppDatabase(dg.ConfigurableResource):
    """The app DB: `ANUBIS_DATABASE_URL` from the validated settings (default: SQLite). No
    config fields: a run config cannot point a run at another database (Dagster refuses the
    entry at launch), and the URL, which may carry a password, never lands in run storage."""

    @property
    def resolved_url(self) -> str:
        return default_database_url()

    @contextmanager
    def session(self) -> Iterator[Session]:
        prepare_database(self.resolved_url)
        with session_scope(self.resolved_url) as session:
            yield session
