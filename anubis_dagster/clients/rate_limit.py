"""A partner's request quota, shared by every run and process through the app database.

Sliding window: a request may be sent when fewer than `limit` requests were sent in the last
`period` seconds. Each request takes a row in `rate_limit_slots`; the decision to take one is
serialised on the bucket's row in `rate_limit_buckets` (`SELECT … FOR UPDATE` on PostgreSQL, the
database write lock on SQLite), so two processes can never both take the last slot. A 429 from
the partner blocks the bucket until its `Retry-After`. Registrations are `HIGH` priority: while
one waits, `LOW` callers (status checks) take no slot, so a scarce quota goes to registrations.

Clock: the hosts' clocks (UTC). Processes on several hosts need NTP, as any lease does.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from anubis_dagster.db.models import RateLimitBucket, RateLimitSlot
from anubis_dagster.db.session import get_engine, session_scope


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
        """Extra seconds before a slot is reused, for the trip to the partner's own counter."""
        return max(0.05, min(1.0, self.period * 0.02))


@dataclass
class Acquired:
    waited: float  # seconds spent waiting for the slot


class RateLimiter:
    def __init__(
        self,
        db_url: str,
        bucket: str,
        quota: Quota,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_poll: float = 1.0,
    ) -> None:
        self.db_url = db_url
        self.bucket = bucket
        self.quota = quota
        self._clock = clock
        self._sleep = sleep
        self._max_poll = max_poll
        self._ensure_bucket()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _ensure_bucket(self) -> None:
        engine = get_engine(self.db_url)
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        with engine.begin() as connection:
            connection.execute(
                insert(RateLimitBucket)
                .values(bucket=self.bucket)
                .on_conflict_do_nothing(index_elements=["bucket"])
            )

    def try_acquire(self, priority: Priority = Priority.HIGH) -> float:
        """Take a slot if one is free now (returns 0), else return seconds to wait."""
        with session_scope(self.db_url) as session:
            bucket = session.scalars(
                select(RateLimitBucket)
                .where(RateLimitBucket.bucket == self.bucket)
                .with_for_update()
            ).one()
            # the clock is read once the bucket is ours: a wait for the lock must not age the
            # slot we are about to take (it would be freed before the partner frees it)
            now = self._now()
            window_start = now - timedelta(seconds=self.quota.period + self.quota.margin)
            if bucket.blocked_until and bucket.blocked_until > now:
                return self._wait(bucket.blocked_until, now, session, bucket, priority)
            if (
                priority is Priority.LOW
                and bucket.priority_demand_until
                and bucket.priority_demand_until > now
            ):
                return min(self._max_poll, (bucket.priority_demand_until - now).total_seconds())
            session.execute(
                delete(RateLimitSlot).where(
                    RateLimitSlot.bucket == self.bucket, RateLimitSlot.taken_at < window_start
                )
            )
            used, oldest = session.execute(
                select(func.count(), func.min(RateLimitSlot.taken_at)).where(
                    RateLimitSlot.bucket == self.bucket
                )
            ).one()
            if used < self.quota.limit:
                session.add(RateLimitSlot(bucket=self.bucket, taken_at=now))
                return 0.0
            free_at = oldest + timedelta(seconds=self.quota.period + self.quota.margin)
            return self._wait(free_at, now, session, bucket, priority)

    def _wait(
        self,
        until: datetime,
        now: datetime,
        session: Session,
        bucket: RateLimitBucket,
        priority: Priority,
    ) -> float:
        wait = max(0.01, (until - now).total_seconds())
        if priority is Priority.HIGH:
            bucket.priority_demand_until = until + timedelta(seconds=self._max_poll)
        return wait

    def acquire(self, priority: Priority = Priority.HIGH, *, max_wait: float = 3600) -> Acquired:
        """Block until a slot is taken. Raises `QuotaWaitTooLong` past `max_wait` seconds."""
        started = self._clock()
        while True:
            wait = self.try_acquire(priority)
            if wait == 0.0:
                return Acquired(waited=self._clock() - started)
            if self._clock() - started + wait > max_wait:
                raise QuotaWaitTooLong(
                    f"quota {self.bucket} would need more than {max_wait:.0f}s of waiting",
                    retry_in=wait,
                )
            self._sleep(min(wait, self._max_poll) if priority is Priority.LOW else wait)

    def block_for(self, seconds: float) -> None:
        """Honour a partner's 429 `Retry-After`: nobody sends on this bucket until then."""
        until = self._now() + timedelta(seconds=max(0.0, seconds))
        with session_scope(self.db_url) as session:
            session.execute(
                update(RateLimitBucket)
                .where(RateLimitBucket.bucket == self.bucket)
                .values(blocked_until=until)
            )

    def used(self) -> int:
        """Slots taken in the current window (for metrics and tests)."""
        window_start = self._now() - timedelta(seconds=self.quota.period)
        with session_scope(self.db_url) as session:
            return int(
                session.scalar(
                    select(func.count()).where(
                        RateLimitSlot.bucket == self.bucket, RateLimitSlot.taken_at >= window_start
                    )
                )
                or 0
            )


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
