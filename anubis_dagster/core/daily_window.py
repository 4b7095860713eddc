"""A daily time window in a time zone, e.g. a partner that accepts registrations only between
08:00 and 20:00 São Paulo time (Estácio's `register_window`, reference §3)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "America/Sao_Paulo"

_WINDOW_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@dataclass(frozen=True)
class DailyWindow:
    """Registrations are sent only between `start` and `end`, local time of `zone` (the current
    service registers hourly in a daily window, reference §3). `end` before `start` = a window
    across midnight."""

    start: time
    end: time
    zone: str = DEFAULT_TIMEZONE

    @classmethod
    def parse(cls, text: str | None, *, name: str, zone: str | None = None) -> DailyWindow | None:
        """`"08:00-20:00"` → a window; empty or None → None (no window). ValueError naming the
        setting `name` when malformed."""
        if text is None or not str(text).strip():
            return None
        match = _WINDOW_RE.fullmatch(str(text))
        error = f"{name} must look like HH:MM-HH:MM (e.g. 08:00-20:00), got {text!r}"
        if not match:
            raise ValueError(error)
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
            raise ValueError(error)
        zone = zone or DEFAULT_TIMEZONE
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name}: unknown time zone {zone!r}") from None
        return cls(time(h1, m1), time(h2, m2), zone)

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone}"

    def contains(self, moment: datetime) -> bool:
        now = moment.astimezone(ZoneInfo(self.zone)).time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_start(self, moment: datetime) -> datetime | None:
        """None inside the window; else when it next opens (aware, same instant in any zone)."""
        if self.contains(moment):
            return None
        zone = ZoneInfo(self.zone)
        local = moment.astimezone(zone)
        opening = datetime.combine(local.date(), self.start, tzinfo=zone)
        if opening <= local:
            opening = datetime.combine(local.date() + timedelta(days=1), self.start, tzinfo=zone)
        return opening
