"""`utcnow`: the one "now" of the project, timezone-aware in UTC (the app DB stores UTC and
`db.models.UTCDateTime` refuses naive datetimes). One definition, so a test or a benchmark that
needs to move time has one place to look."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
