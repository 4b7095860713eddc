"""The going-live operations as the CLI and the Launchpad jobs run them: readers built from
the settings (a launched run never chooses where data comes from), sessions, progress.

No Dagster here: `legacy/commands.py` (the `anubis` subcommands) and `legacy/jobs.py` (the
Launchpad jobs) are thin shells around these functions.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from anubis_dagster.db.session import get_engine
from anubis_dagster.legacy.go_live import GoLiveChange, set_go_live
from anubis_dagster.legacy.importer import ImportReport, import_legacy
from anubis_dagster.legacy.readers import CsvLegacyReader, KrotonColumns, KrotonLegacyReader
from anubis_dagster.legacy.takeover import TakeoverReport, takeover
from anubis_dagster.settings import get_settings

log = logging.getLogger(__name__)


class LegacySourceMissing(ValueError):
    """No legacy source is configured for the integration (names the setting)."""


class LegacyCsvInvalid(ValueError):
    """The CSV has bad lines and `skip_bad` was not given: nothing imported."""

    def __init__(self, errors: list[str], good: int) -> None:
        self.errors = errors
        self.good = good
        super().__init__(
            f"{len(errors)} bad lines in the legacy CSV: nothing imported (fix them, or skip "
            f"them to import the {good} good records)"
        )


def session_factory(url: str) -> Callable[[], Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


class Progress:
    """Counts done: a progress bar on a terminal (`tqdm`), a log line every `every` seconds
    otherwise (the run log's counts)."""

    def __init__(
        self, what: str, total: int | None, *, tty: bool | None = None, every: float = 5.0
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.every = every
        self._last = time.monotonic()
        self._started = self._last
        self._bar: Any = None
        if tty if tty is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=" rows", desc=what, file=sys.stderr)

    def __call__(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            log.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        of = f" of {self.total}" if self.total is not None else ""
        return f"{self.what}: {self.done}{of} rows ({self.done / elapsed:,.0f}/s)"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def kroton_reader(database_url: str | None = None) -> KrotonLegacyReader:
    settings = get_settings()
    secret = settings.anubis_legacy_kroton_database_url
    url = database_url or (secret.get_secret_value() if secret is not None else None)
    if not url:
        raise LegacySourceMissing(
            "no legacy Kroton database: set ANUBIS_LEGACY_KROTON_DATABASE_URL "
            "(or pass --database-url)"
        )
    return KrotonLegacyReader(url, KrotonColumns.parse(settings.anubis_legacy_kroton_columns))


def csv_reader(integration: str, path: str | None = None) -> CsvLegacyReader:
    path = path or (get_settings().anubis_legacy_estacio_csv if integration == "estacio" else None)
    if not path:
        variable = f"ANUBIS_LEGACY_{integration.upper()}_CSV"
        raise LegacySourceMissing(f"no legacy CSV for {integration}: set {variable} (or --csv)")
    return CsvLegacyReader(path, integration)


def reader_for(
    integration: str, *, database_url: str | None = None, csv_path: str | None = None
) -> KrotonLegacyReader | CsvLegacyReader:
    """The legacy source of an integration: a CSV when one is given (any integration), else
    Kroton's database for `kroton`, else the integration's configured CSV."""
    if csv_path:
        return csv_reader(integration, csv_path)
    if integration == "kroton":
        return kroton_reader(database_url)
    return csv_reader(integration)


def run_import(
    app_db_url: str,
    integration: str,
    reader: KrotonLegacyReader | CsvLegacyReader,
    *,
    skip_bad: bool = False,
    dry_run: bool = False,
    batch_size: int = 5000,
    tty: bool | None = None,
    run_id: str | None = None,
) -> tuple[ImportReport, list[str]]:
    """Import, with progress; returns the report and the CSV's bad lines (skipped). Raises
    `LegacyCsvInvalid` when the CSV has bad lines and `skip_bad` is false."""
    from anubis_dagster.resources import prepare_database

    prepare_database(app_db_url)
    errors: list[str] = []
    total: int | None = None
    if isinstance(reader, CsvLegacyReader):
        checked = reader.check()
        errors = checked.errors
        if errors and not skip_bad:
            raise LegacyCsvInvalid(errors, len(checked.records))
        total = len(checked.records)
    else:
        total = reader.count()
    progress = Progress(f"legacy import {integration}", total, tty=tty)
    try:
        report = import_legacy(
            session_factory(app_db_url),
            reader,
            integration,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=progress,
            run_id=run_id,
        )
    finally:
        progress.close()
    if errors:
        report.skipped["bad CSV line"] += len(errors)
    log.info(progress.line())
    return report, errors


def run_go_live(app_db_url: str, key: str, at: datetime, *, dry_run: bool = False) -> GoLiveChange:
    from anubis_dagster.intake.orders_source import OrdersSource
    from anubis_dagster.resources import prepare_database

    prepare_database(app_db_url)
    name = OrdersSource().watermark_name
    with _session(app_db_url) as session:
        change = set_go_live(session, key, at, watermark_name=name, dry_run=dry_run)
        if dry_run:
            session.rollback()
    return change


def run_takeover(
    app_db_url: str,
    key: str,
    start: datetime,
    end: datetime,
    *,
    dry_run: bool = False,
    tty: bool | None = None,
    run_id: str | None = None,
) -> TakeoverReport:
    from anubis_dagster.intake.orders_source import OrdersSource
    from anubis_dagster.resources import prepare_database

    prepare_database(app_db_url)
    progress = Progress(f"takeover {key}", None, tty=tty)
    try:
        return takeover(
            session_factory(app_db_url),
            OrdersSource(),
            key,
            start,
            end,
            dry_run=dry_run,
            progress=progress,
            run_id=run_id,
        )
    finally:
        progress.close()


@contextmanager
def _session(url: str) -> Iterator[Session]:
    from anubis_dagster.db.session import session_scope

    with session_scope(url) as session:
        yield session
