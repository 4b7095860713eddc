"""The persisted retry schedule: how long to wait before the next try of a failed step.

After the quick in-call retries are spent, a transient failure waits on the subscription
(`scheduled_to`) instead of in a running process, with delays growing from a minute to a day,
as webhook platforms do. After the last step the subscription is dead-lettered (`failed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

DEFAULT_SCHEDULE = "1m,5m,30m,2h,6h,12h,24h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_schedule(text: str) -> tuple[timedelta, ...]:
    """`"1m,5m,30m,2h"` → delays. Raises ValueError naming the bad item."""
    delays = []
    for item in (part.strip() for part in text.split(",")):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", item)
        if not match:
            raise ValueError(f"bad retry schedule item {item!r}: use e.g. 30s, 5m, 2h, 1d")
        delays.append(timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)]))
    if not delays:
        raise ValueError("the retry schedule needs at least one delay")
    return tuple(delays)


@dataclass(frozen=True)
class RetrySchedule:
    delays: tuple[timedelta, ...]

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """From its text form, e.g. `ANUBIS_RETRY_SCHEDULE` or an integration's setting."""
        return cls(parse_schedule(text))

    @property
    def max_attempts(self) -> int:
        """Failed tries allowed before the dead letter (the first try plus one per delay)."""
        return len(self.delays) + 1

    def delay_after(self, failed_attempts: int) -> timedelta | None:
        """Wait after the `failed_attempts`-th failure; None = give up (dead letter)."""
        if failed_attempts < 1:
            raise ValueError("failed_attempts starts at 1")
        if failed_attempts > len(self.delays):
            return None
        return self.delays[failed_attempts - 1]

    def total(self) -> timedelta:
        return sum(self.delays, timedelta())
