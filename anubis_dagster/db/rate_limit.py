"""A partner's request quota, shared by every run and process through the app database
(the types it works with, and the `Limiter` interface the HTTP client sees: `clients/quota.py`).

Sliding window: a request may be sent when fewer than `limit` requests count in the last
`period` seconds. Each request takes a row in `rate_limit_slots`; the decision to take one is
made with the bucket's row in `rate_limit_buckets` locked (`SELECT … FOR UPDATE` on PostgreSQL,
the database write lock on SQLite), in the transaction that inserts the slot, so two processes
can never both take the last one. A 429 from the partner blocks the bucket until its
`Retry-After`. Registrations are `HIGH` priority: each one waiting for a slot keeps a mark (a row
of its own, refreshed at every poll, removed when it is served), and while any mark holds, `LOW`
callers (status checks) take no slot, so a scarce quota goes to registrations.

**When a slot counts.** The partner counts a request when it arrives, which can be any time
after we reserved its slot: a garbage collection, a busy CPU or a token fetch may pause the
worker in between. So a slot is reserved with a provisional time `hold` seconds ahead (it counts
all that time), and once the answer is back (`finish`) its time becomes the moment the answer
arrived, on the database's timeline, which is after the partner counted the request. The window
lets the slot go `period` + `margin` after that, never before the partner does, however long
the worker paused: a pause costs a little utilisation (the slot is held longer), not a 429. A
request that never got an answer keeps its provisional time; one that provably never left is
given back.

**Clock.** Every time the limiter compares is the database's, read in the same transaction:
PostgreSQL's `clock_timestamp()` (the time of the call, not of the transaction's start), so run
workers on machines whose clocks disagree share one timeline. SQLite has no server: its `'now'`
is the operating system's clock read by the SQLite library, in the calling process. Every process
that shares a SQLite file runs on the same machine (SQLite's locking does not work across
machines), so they share that one clock too, and a skew of Python's clock (`time.time`) does not
reach it. Resolution: 1 µs on PostgreSQL, 1 ms on SQLite. The worker's own clock only measures
how long it slept. `worker_clock` (the old behaviour) exists as a test hook, to show what a
skewed worker clock would do.

**Margin.** Because a slot's time is taken after its answer, the margin only has to cover two
clocks that tick at slightly different rates (NTP slews a clock by up to 0.05%): 0.1% of the
period, at least 10 ms (300 ms at Kroton's 100/300).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from anubis_dagster.clients.quota import Acquired, Grant, Priority, Quota, QuotaWaitTooLong
from anubis_dagster.db.models import RateLimitBucket, RateLimitSlot
from anubis_dagster.db.session import get_engine, session_scope

#: reads "now" inside the limiter's transaction
Clock = Callable[[Session], datetime]

#: how long past its next poll a waiting registration's mark holds (a late wake-up under load)
DEMAND_GRACE_SECONDS = 1.0

#: how often a check behind a waiting registration looks again
CHECK_POLL_SECONDS = 0.2

#: seconds a reserved slot counts before its answer comes back: longer than any pause between
#: reserving and sending (a process killed in between holds its slot this long + one period)
DEFAULT_HOLD_SECONDS = 60.0


def database_clock(session: Session) -> datetime:
    """The database's time (see the module's docstring): the same for every worker."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(UTC)
    text_value = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(text_value).replace(tzinfo=UTC)


def worker_clock(read: Callable[[], float] | None = None) -> Clock:
    """The calling process's own clock (`read()`: epoch seconds, default `time.time`).

    A test hook: with a fake `read` the tests step time without sleeping, and with a skewed one
    they show what the database clock protects against. Production uses `database_clock`.
    """

    def now(_session: Session) -> datetime:
        return datetime.fromtimestamp(read() if read is not None else time.time(), UTC)

    return now


class RateLimiter:
    def __init__(
        self,
        db_url: str,
        bucket: str,
        quota: Quota,
        *,
        clock: Clock = database_clock,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        max_poll: float = 1.0,
        hold: float = DEFAULT_HOLD_SECONDS,
    ) -> None:
        self.db_url = db_url
        self.bucket = bucket
        self.quota = quota
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._max_poll = max_poll
        self._hold = timedelta(seconds=hold)
        # rows of `rate_limit_slots` under this name mark registrations waiting for a slot
        # (`taken_at`: until when the mark holds); one per waiting thread
        self._waiting_bucket = f"{bucket}#waiting"
        self._local = threading.local()
        self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        engine = get_engine(self.db_url)
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        with engine.begin() as connection:
            connection.execute(
                insert(RateLimitBucket)
                .values(bucket=self.bucket)
                .on_conflict_do_nothing(index_elements=["bucket"])
            )

    def try_acquire(self, priority: Priority = Priority.HIGH) -> Grant:
        """Take a slot if one is free now, else say how long to wait."""
        with session_scope(self.db_url) as session:
            bucket = session.scalars(
                select(RateLimitBucket)
                .where(RateLimitBucket.bucket == self.bucket)
                .with_for_update()
            ).one()
            # read once the bucket is ours: a wait for the lock must not age the decision
            now = self._clock(session)
            if bucket.blocked_until and bucket.blocked_until > now:
                return self._wait(session, bucket.blocked_until, now, priority)
            if priority is Priority.LOW:
                demand_until = session.scalar(
                    select(func.max(RateLimitSlot.taken_at)).where(
                        RateLimitSlot.bucket == self._waiting_bucket
                    )
                )
                if demand_until is not None and demand_until > now:
                    # look again soon: the registration may be served long before its mark ends
                    wait = (demand_until - now).total_seconds()
                    return Grant(None, min(self._max_poll, wait, CHECK_POLL_SECONDS))
            window = timedelta(seconds=self.quota.period + self.quota.margin)
            session.execute(
                delete(RateLimitSlot).where(
                    RateLimitSlot.bucket.in_((self.bucket, self._waiting_bucket)),
                    RateLimitSlot.taken_at <= now - window,
                )
            )
            used, oldest = session.execute(
                select(func.count(), func.min(RateLimitSlot.taken_at)).where(
                    RateLimitSlot.bucket == self.bucket
                )
            ).one()
            if used < self.quota.limit:
                if priority is Priority.HIGH:
                    self._stop_waiting(session)
                slot = RateLimitSlot(bucket=self.bucket, taken_at=now + self._hold)
                session.add(slot)
                session.flush()
                return Grant(slot.id)
            free_at = oldest + window
            if oldest > now:  # every slot is still unanswered: one may be answered any moment
                free_at = min(free_at, now + timedelta(seconds=self._max_poll))
            return self._wait(session, free_at, now, priority)

    def _wait(self, session: Session, until: datetime, now: datetime, priority: Priority) -> Grant:
        wait = max(0.001, (until - now).total_seconds())
        if priority is Priority.HIGH:
            # this registration's mark: checks yield until its next poll (+ a grace for a late
            # wake-up), and at once when it is served; one mark per waiting caller, so serving
            # one registration does not let checks pass another that still waits
            until = now + timedelta(seconds=min(wait, self._max_poll) + DEMAND_GRACE_SECONDS)
            self._mark_waiting(session, until)
        return Grant(None, wait)

    def _mark_waiting(self, session: Session, until: datetime) -> None:
        mark = getattr(self._local, "mark", None)
        row_of_mark = session.get(RateLimitSlot, mark) if mark is not None else None
        if row_of_mark is not None:
            row_of_mark.taken_at = until
        else:
            row = RateLimitSlot(bucket=self._waiting_bucket, taken_at=until)
            session.add(row)
            session.flush()
            self._local.mark = row.id

    def _announce(self) -> None:
        """A registration marks itself waiting before it queues for the bucket's lock, in a
        transaction of its own: the lock is served in order, and a check queued ahead of it
        would otherwise take the slot it is waiting for (5% of the checks did, in the quota
        benchmark). A check that gets the lock after this commit sees the mark and yields."""
        with session_scope(self.db_url) as session:
            now = self._clock(session)
            self._mark_waiting(
                session, now + timedelta(seconds=self._max_poll + DEMAND_GRACE_SECONDS)
            )

    def _stop_waiting(self, session: Session) -> None:
        mark = getattr(self._local, "mark", None)
        if mark is not None:
            session.execute(delete(RateLimitSlot).where(RateLimitSlot.id == mark))
            self._local.mark = None

    def acquire(self, priority: Priority = Priority.HIGH, *, max_wait: float = 3600) -> Acquired:
        """Block until a slot is taken. Raises `QuotaWaitTooLong` past `max_wait` seconds.

        Waiters poll at least every `max_poll` seconds: a slot can free earlier than computed
        (an unanswered slot, counted ahead, is answered), and a waiting registration keeps its
        mark fresh."""
        started = self._monotonic()
        if priority is Priority.HIGH:
            self._announce()
        while True:
            grant = self.try_acquire(priority)
            if grant.slot is not None:
                return Acquired(slot=grant.slot, waited=self._monotonic() - started)
            if self._monotonic() - started + grant.wait > max_wait:
                if priority is Priority.HIGH:
                    with session_scope(self.db_url) as session:
                        self._stop_waiting(session)
                raise QuotaWaitTooLong(
                    f"quota {self.bucket} would need more than {max_wait:.0f}s of waiting",
                    retry_in=grant.wait,
                )
            self._sleep(min(grant.wait, self._max_poll))

    def finish(self, slot: int, *, answered_at: float | None, sent: bool = True) -> None:
        """After the request. `answered_at` is the `monotonic` reading when its answer came
        back: the partner had counted it by then, so the slot counts from that moment (in the
        database's time: now minus the time since). A request that never left (`sent=False`)
        gives its slot back; one that left without an answer (`answered_at=None`: timeout,
        lost connection) keeps the provisional time it was reserved with."""
        if sent and answered_at is None:
            return
        with session_scope(self.db_url) as session:
            if not sent or answered_at is None:
                session.execute(delete(RateLimitSlot).where(RateLimitSlot.id == slot))
                return
            # measured before the database's clock is read, so any delay in between (a slow
            # query, a descheduled worker) makes the slot's time later, never earlier
            since = max(0.0, self._monotonic() - answered_at)
            now = self._clock(session)
            session.execute(
                update(RateLimitSlot)
                .where(RateLimitSlot.id == slot)
                .values(taken_at=now - timedelta(seconds=since))
            )

    def block_for(self, seconds: float) -> None:
        """Honour a partner's 429 `Retry-After`: nobody sends on this bucket until then."""
        with session_scope(self.db_url) as session:
            until = self._clock(session) + timedelta(seconds=max(0.0, seconds))
            session.execute(
                update(RateLimitBucket)
                .where(RateLimitBucket.bucket == self.bucket)
                .values(blocked_until=until)
            )

    def used(self) -> int:
        """Slots counting in the current window, unanswered ones included (metrics, tests)."""
        with session_scope(self.db_url) as session:
            window_start = self._clock(session) - timedelta(seconds=self.quota.period)
            return int(
                session.scalar(
                    select(func.count()).where(
                        RateLimitSlot.bucket == self.bucket, RateLimitSlot.taken_at > window_start
                    )
                )
                or 0
            )
