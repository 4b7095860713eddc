"""Seed 001's anomaly alerts: a daily volume far from the usual, and excessive retries.

"Usual" is the median of the 7 complete days before the day judged (UTC days). A day is
anomalous when its volume falls outside [half, double] that median; retries are excessive
when a day schedules more than double their median (and at least `MIN_RETRIES`). Yesterday is
judged in full; today is judged only on the high side, as soon as it is already past the band
(a morning is always below a whole day). Integrations too small to judge (median below
`MIN_MEDIAN` students a day) are left alone: a quiet day there is noise, not news.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

BASELINE_DAYS = 7
LOW_FACTOR = 0.5
HIGH_FACTOR = 2.0
MIN_MEDIAN = 10
MIN_RETRIES = 10


@dataclass(frozen=True)
class Anomaly:
    name: str  # `volume` or `retries`
    day: date
    measured: int
    expected: str  # the band or limit it left
    message: str


def daily_counts(moments: Iterable[datetime]) -> Counter[date]:
    return Counter(moment.date() for moment in moments)


def baseline(counts: Mapping[date, int], day: date) -> float:
    """The median of the `BASELINE_DAYS` complete days before `day` (a missing day is 0)."""
    return float(statistics.median(counts.get(day - timedelta(days=n), 0) for n in range(1, 8)))


def volume_anomaly(counts: Mapping[date, int], today: date) -> Anomaly | None:
    """Yesterday outside the band around its median, or today already above it."""
    yesterday = today - timedelta(days=1)
    for day, partial in ((yesterday, False), (today, True)):
        median = baseline(counts, day)
        if median < MIN_MEDIAN:
            continue
        low, high = median * LOW_FACTOR, median * HIGH_FACTOR
        volume = counts.get(day, 0)
        band = f"{low:g}–{high:g} a day (median of the previous 7 days: {median:g})"
        if volume > high:
            when = "today so far" if partial else f"on {day:%Y-%m-%d}"
            message = f"{volume} students {when}, above the usual {band}"
            return Anomaly("volume", day, volume, band, message)
        if not partial and volume < low:
            message = f"{volume} students on {day:%Y-%m-%d}, below the usual {band}"
            return Anomaly("volume", day, volume, band, message)
    return None


def retry_anomaly(counts: Mapping[date, int], today: date) -> Anomaly | None:
    """Yesterday's or today's scheduled retries above double their median (and not few)."""
    for day, partial in ((today - timedelta(days=1), False), (today, True)):
        median = baseline(counts, day)
        limit = max(median * HIGH_FACTOR, MIN_RETRIES)
        retries = counts.get(day, 0)
        if retries > limit:
            when = "today so far" if partial else f"on {day:%Y-%m-%d}"
            expected = (
                f"at most {limit:g} a day (double the median of the previous 7 days, "
                f"{median:g}, and at least {MIN_RETRIES})"
            )
            message = f"{retries} retries scheduled {when}, more than {expected}"
            return Anomaly("retries", day, retries, expected, message)
    return None
