"""The checks of single values (URLs, quotas, retry schedules, daily windows) and the hiding of
a database URL's password: used by the core's settings model and by each integration's, and by
the doctor. Plain functions, no model."""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def check_http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s):// URL with a host")


def check_database_url(value: str) -> None:
    """A SQLAlchemy URL of a backend Anubis supports; messages never echo the password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a database URL (expected postgresql://user:password@host/db or sqlite:///path)"
        ) from None
    backend = url.drivername.split("+", 1)[0]
    if backend not in DATABASE_SCHEMES:
        raise ValueError(f"unsupported database {backend!r} (use postgresql://… or sqlite:///…)")
    if backend != "sqlite" and not url.host:
        raise ValueError("a PostgreSQL URL needs a host (postgresql://user:password@host/db)")
    if backend != "sqlite" and not url.database:
        raise ValueError("a PostgreSQL URL needs a database name (…@host/db)")


def url_password(value: str | None) -> str | None:
    if not value:
        return None
    from sqlalchemy.engine import make_url

    try:
        return make_url(value).password
    except Exception:  # an invalid URL fails validation elsewhere; nothing to redact here
        return None


def hide_password(value: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(value).render_as_string(hide_password=True)
    except Exception:
        return "set (unparsable)"


def check_quota(value: str) -> None:
    from anubis_dagster.clients.quota import Quota

    try:
        Quota.parse(value, name="quota")
    except ValueError:
        raise ValueError(
            "must look like REQUESTS/SECONDS with both above 0 (e.g. 100/300)"
        ) from None


def check_retry_schedule(value: str, *, allow_zero: bool = True) -> None:
    """A schedule `parse_schedule` reads. A 0 delay (retry at once) loads, because the test
    suite relies on it, but `anubis doctor` refuses it (`allow_zero=False`): in production it
    spends a student's every attempt within one run during a short outage."""
    from anubis_dagster.core.retry_schedule import parse_schedule

    delays = parse_schedule(value)  # ValueError names the bad item
    if not allow_zero and any(delay.total_seconds() <= 0 for delay in delays):
        raise ValueError("every retry delay must be above 0 (e.g. 1m,5m,30m,2h)")
    if any(not math.isfinite(delay.total_seconds()) for delay in delays):
        raise ValueError("every retry delay must be finite")


def check_window(value: str | None, zone: str | None = None) -> None:
    from anubis_dagster.core.daily_window import DailyWindow

    try:
        DailyWindow.parse(value, name="window", zone=zone)
    except ValueError as exc:
        message = re.sub(r", got .*$", "", str(exc))
        raise ValueError(message.removeprefix("window ").removeprefix(": ")) from None
