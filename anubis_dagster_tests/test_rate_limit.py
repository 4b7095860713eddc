"""The shared quota on a real database.

Most tests step a fake worker clock (`worker_clock`, no sleeping); the clock tests use the
database's own clock in real time, with Python's clock skewed under them.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from anubis_dagster.clients.quota import Priority, Quota, QuotaWaitTooLong
from anubis_dagster.db.rate_limit import (
    DEFAULT_HOLD_SECONDS,
    RateLimiter,
    database_clock,
    worker_clock,
)
from anubis_dagster.db.session import session_scope


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(db_url: str, clock: FakeClock, limit: int = 3, period: float = 10) -> RateLimiter:
    return RateLimiter(
        db_url,
        "test:api",
        Quota(limit, period),
        clock=worker_clock(clock),
        sleep=clock.sleep,
        monotonic=clock,
    )


def take(quota: RateLimiter, priority: Priority = Priority.HIGH) -> bool:
    """One request that is answered at once."""
    grant = quota.try_acquire(priority)
    if grant.slot is not None:
        quota.finish(grant.slot, answered_at=quota._monotonic())
    return grant.taken


def test_quota_parsing_names_the_setting() -> None:
    assert Quota.parse("100/300", name="X") == Quota(100, 300.0)
    assert Quota.parse(" 20 / 2 ", name="X") == Quota(20, 2.0)
    for bad in ("100", "0/10", "a/b", "10/0", ""):
        with pytest.raises(ValueError, match="API_KROTON_RATE_LIMIT"):
            Quota.parse(bad, name="API_KROTON_RATE_LIMIT")


def test_sliding_window(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock)
    assert [take(quota) for _ in range(3)] == [True, True, True]
    margin = quota.quota.margin
    assert quota.try_acquire().wait == pytest.approx(10 + margin)
    clock.now += 5
    assert quota.try_acquire().wait == pytest.approx(5 + margin)
    clock.now += 5 + margin + 0.001
    assert take(quota)


def test_acquire_waits_exactly_until_a_slot_frees(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=2, period=4)
    for _ in range(6):
        quota.finish(quota.acquire().slot, answered_at=clock())
    # 6 requests at 2 per 4 s (+ margin): two full windows waited
    assert clock.now - 1_800_000_000.0 == pytest.approx(2 * (4 + quota.quota.margin), abs=0.01)


def test_a_slot_counts_from_its_answer_however_long_the_worker_paused(db_url: str) -> None:
    """A pause between taking a slot and sending (GC, a busy CPU) moves the partner's count
    later; the window follows, because the slot's time is the time of the answer."""
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1, period=10)
    paused = quota.acquire()
    clock.now += 10.6  # the worker stalls longer than a whole period before sending
    assert not quota.try_acquire().taken  # the unanswered slot still counts...
    assert quota.try_acquire().wait <= 1.0  # ...and waiters poll, it may be answered any time
    answered_at = clock.now  # the request reaches the partner and is answered now
    clock.now += 0.3  # (the worker notes it a little later: the answer's time counts)
    quota.finish(paused.slot, answered_at=answered_at)
    clock.now = answered_at + 10  # the partner frees it at answered_at + 10 at the earliest
    assert quota.try_acquire().wait == pytest.approx(quota.quota.margin)
    clock.now += quota.quota.margin + 0.001
    assert take(quota)


def test_a_request_that_never_left_gives_its_slot_back(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1)
    quota.finish(quota.acquire().slot, answered_at=None, sent=False)
    assert take(quota)


def test_a_request_without_an_answer_keeps_its_slot_for_the_hold(db_url: str) -> None:
    """A timeout proves nothing about when the partner counted it: held, not re-stamped."""
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1, period=10)
    quota.finish(quota.acquire().slot, answered_at=None)
    clock.now += 10 + quota.quota.margin + 1
    assert not quota.try_acquire().taken
    clock.now += DEFAULT_HOLD_SECONDS
    assert take(quota)


def test_the_quota_is_shared_by_every_limiter_on_the_bucket(db_url: str) -> None:
    clock = FakeClock()
    first, second = limiter(db_url, clock), limiter(db_url, clock)
    assert take(first) and take(second) and take(first)
    assert not take(second)
    assert first.used() == 3


def test_concurrent_threads_never_exceed_the_limit(db_url: str) -> None:
    quota = RateLimiter(db_url, "test:threads", Quota(5, 60))
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            if take(quota):
                with lock:
                    taken.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 5


def test_429_blocks_the_bucket(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=100)
    quota.block_for(7)
    assert quota.try_acquire().wait == pytest.approx(7)
    clock.now += 7.01
    assert take(quota)


def test_checks_yield_to_waiting_registrations(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1)
    assert take(quota, Priority.HIGH)
    assert not take(quota, Priority.HIGH)  # a registration now waits for the window
    clock.now += 10  # (it polls at least every second, keeping its mark)
    assert quota.try_acquire(Priority.HIGH).wait == pytest.approx(quota.quota.margin)
    clock.now += quota.quota.margin + 0.001  # the window frees
    assert not take(quota, Priority.LOW)  # but the check yields
    assert take(quota, Priority.HIGH)  # the registration takes it
    clock.now += 30
    assert take(quota, Priority.LOW)  # no registration waiting: checks go


def test_checks_go_again_as_soon_as_the_waiting_registrations_are_served(db_url: str) -> None:
    """Each waiting registration has its own mark: serving one keeps the checks behind the
    other; once both are served the next free slot is not left idle."""
    clock = FakeClock()
    first, second = limiter(db_url, clock, limit=3), limiter(db_url, clock, limit=3)
    assert take(first) and take(first) and take(first)
    clock.now += 9.5
    assert not take(first, Priority.HIGH) and not take(second, Priority.HIGH)  # both wait
    clock.now += 0.5 + first.quota.margin + 0.001  # all three slots free
    assert take(first, Priority.HIGH)
    assert not take(first, Priority.LOW)  # the second registration still waits
    assert take(second, Priority.HIGH)
    assert take(first, Priority.LOW)  # nobody waits: the last slot goes to a check at once


def test_a_registration_is_waiting_from_before_it_queues_for_the_lock(db_url: str) -> None:
    """`acquire` marks a registration waiting in a transaction of its own before its first try:
    a check that gets the bucket's lock in between (queued ahead of it) sees the mark and
    yields, though slots are free; the mark goes when the registration is served."""
    clock = FakeClock()
    registrations, checks = limiter(db_url, clock), limiter(db_url, clock)
    served: list[bool] = []
    real_try = registrations.try_acquire

    def check_first(priority: Priority = Priority.HIGH) -> Any:
        served.append(take(checks, Priority.LOW))  # the check held the lock first
        return real_try(priority)

    registrations.try_acquire = check_first  # type: ignore[method-assign]
    acquired = registrations.acquire()
    registrations.finish(acquired.slot, answered_at=clock())
    assert served == [False] and acquired.waited == 0
    assert take(checks, Priority.LOW)  # served: its mark is gone


def test_the_mark_of_a_registration_that_gave_up_is_removed(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1, period=10)
    assert take(quota)
    clock.now += 9
    with pytest.raises(QuotaWaitTooLong):
        quota.acquire(max_wait=0.5)  # the run defers this student: it no longer waits
    clock.now += 1 + quota.quota.margin + 0.001
    assert take(quota, Priority.LOW)


def test_giving_up_after_max_wait(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1, period=600)
    quota.acquire()
    with pytest.raises(QuotaWaitTooLong):
        quota.acquire(max_wait=60)


# --------------------------------------------------------------------------------------------
# The clock is the database's
# --------------------------------------------------------------------------------------------
def test_the_database_clock_ignores_the_workers_clock(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this worker is an hour ahead
    with session_scope(db_url) as session:
        first = database_clock(session)
        time.sleep(0.01)
        second = database_clock(session)  # the time of the call, not of the transaction
    assert abs((first - datetime.fromtimestamp(real(), UTC)).total_seconds()) < 1
    assert second > first


@pytest.mark.parametrize("source", ["database", "worker"])
def test_workers_with_skewed_clocks_share_one_window(
    db_url: str, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """Worker B runs 0.4 s behind, worker A 0.4 s ahead, on a quota of 2 per second. B sends
    2 requests; 0.65 s later A asks. Kroton still counts B's two: A must wait. On the workers'
    own clocks A sees B's requests 0.8 s older than they are and sends (the case this test
    fails without the database clock); on the database's clock A waits the right time."""
    real = time.time
    clock = database_clock if source == "database" else worker_clock()  # reads time.time
    a = RateLimiter(db_url, "test:skew", Quota(2, 1.0), clock=clock)
    b = RateLimiter(db_url, "test:skew", Quota(2, 1.0), clock=clock)

    def on(skew: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + skew)

    on(-0.4)
    before_first = real()
    assert take(b)
    after_first = real()
    assert take(b)
    time.sleep(0.65)
    on(+0.4)
    asked = real()
    grant = a.try_acquire()
    answered = real()
    if source == "worker":
        assert grant.taken  # 3 requests within one second at the partner: a 429
        return
    assert not grant.taken
    # B's first slot frees 1 s (+ margin) after it was answered, in real time
    free_at = (before_first + 1.01, after_first + 1.01)
    assert free_at[0] - answered - 0.005 <= grant.wait <= free_at[1] - asked + 0.005
    time.sleep(grant.wait + 0.01)
    assert take(a)
