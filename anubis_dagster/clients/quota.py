"""What a partner's quota is, and what the HTTP client needs of a rate limiter.

Plain types, no database: the shared limiter that every run and process uses lives with the
app database (`db/rate_limit.py`, which explains the sliding window, the clock and the margin);
the HTTP client only sees the `Limiter` interface below.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class Priority(IntEnum):
    LOW = 0  # status checks
    HIGH = 1  # registrations, consent, course sync


@dataclass(frozen=True)
class Quota:
    limit: int
    period: float  # seconds

    @classmethod
    def parse(cls, text: str, *, name: str) -> Quota:
        """`"100/300"` = 100 requests per 300 s. `name` (the setting) goes in the error."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*", text or "")
        if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
            raise ValueError(f"{name} must look like REQUESTS/SECONDS (e.g. 100/300), got {text!r}")
        return cls(int(match.group(1)), float(match.group(2)))

    @property
    def margin(self) -> float:
        """Extra seconds a slot is kept beyond the period, for clocks ticking at other rates."""
        return max(0.01, self.period * 0.001)


@dataclass(frozen=True)
class Grant:
    """What `try_acquire` answers: a slot (`slot` is its id), or the seconds to wait."""

    slot: int | None
    wait: float = 0.0

    @property
    def taken(self) -> bool:
        return self.slot is not None


@dataclass
class Acquired:
    slot: int  # give it to `finish` once the request is answered (or not)
    waited: float  # seconds spent waiting for the slot


class Limiter(Protocol):
    """A quota shared by every caller of one partner API (`db.rate_limit.RateLimiter`)."""

    def acquire(self, priority: Priority = Priority.HIGH, *, max_wait: float = 3600) -> Acquired:
        """Wait for a slot (at most `max_wait` s, else `QuotaWaitTooLong`)."""
        ...

    def finish(self, slot: int, *, answered_at: float | None, sent: bool = True) -> None:
        """The request of `slot` was answered (monotonic time), or not, or never sent."""
        ...

    def block_for(self, seconds: float) -> None:
        """The partner answered 429: nobody sends on this quota for `seconds`."""
        ...


class QuotaWaitTooLong(RuntimeError):
    """The quota is spent for longer than this run should wait: try again in a later run
    (`retry_in`: the limiter's estimate of the seconds until a slot frees)."""

    def __init__(self, message: str, *, retry_in: float = 0.0) -> None:
        super().__init__(message)
        self.retry_in = retry_in


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """Parse a `Retry-After` header (seconds; HTTP dates are rare here and fall back)."""
    if not value:
        return default
    try:
        return max(0.0, math.ceil(float(value)))
    except ValueError:
        return default
