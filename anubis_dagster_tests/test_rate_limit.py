"""The shared quota on a real database, with a fake clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from anubis_dagster.clients.rate_limit import Priority, Quota, QuotaWaitTooLong, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(db_url: str, clock: FakeClock, limit: int = 3, period: float = 10) -> RateLimiter:
    return RateLimiter(db_url, "test:api", Quota(limit, period), clock=clock, sleep=clock.sleep)


def test_quota_parsing_names_the_setting() -> None:
    assert Quota.parse("100/300", name="X") == Quota(100, 300.0)
    assert Quota.parse(" 20 / 2 ", name="X") == Quota(20, 2.0)
    for bad in ("100", "0/10", "a/b", "10/0", ""):
        with pytest.raises(ValueError, match="API_KROTON_RATE_LIMIT"):
            Quota.parse(bad, name="API_KROTON_RATE_LIMIT")


def test_sliding_window(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock)
    assert [quota.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = quota.try_acquire()
    assert wait == pytest.approx(10 + quota.quota.margin)
    clock.now += 5
    assert quota.try_acquire() == pytest.approx(5 + quota.quota.margin)
    clock.now += 5 + quota.quota.margin + 0.001
    assert quota.try_acquire() == 0.0


def test_acquire_waits_exactly_until_a_slot_frees(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=2, period=4)
    for _ in range(6):
        quota.acquire()
    # 6 requests at 2 per 4 s (+ margin): two full windows waited
    assert clock.now - 1_800_000_000.0 == pytest.approx(2 * (4 + quota.quota.margin), abs=0.05)


def test_the_quota_is_shared_by_every_limiter_on_the_bucket(db_url: str) -> None:
    clock = FakeClock()
    first, second = limiter(db_url, clock), limiter(db_url, clock)
    first.try_acquire()
    second.try_acquire()
    first.try_acquire()
    assert second.try_acquire() > 0
    assert first.used() == 3


def test_concurrent_threads_never_exceed_the_limit(db_url: str) -> None:
    quota = RateLimiter(db_url, "test:threads", Quota(5, 60))
    taken: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            if quota.try_acquire() == 0.0:
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
    assert quota.try_acquire() == pytest.approx(7)
    clock.now += 7.01
    assert quota.try_acquire() == 0.0


def test_checks_yield_to_waiting_registrations(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1)
    assert quota.try_acquire(Priority.HIGH) == 0.0
    assert quota.try_acquire(Priority.HIGH) > 0  # a registration now waits for the window
    clock.now += 10 + quota.quota.margin + 0.001  # the window frees
    assert quota.try_acquire(Priority.LOW) > 0  # but the check yields
    assert quota.try_acquire(Priority.HIGH) == 0.0  # the registration takes it
    clock.now += 30
    assert quota.try_acquire(Priority.LOW) == 0.0  # no registration waiting: checks go


def test_giving_up_after_max_wait(db_url: str) -> None:
    clock = FakeClock()
    quota = limiter(db_url, clock, limit=1, period=600)
    quota.acquire()
    with pytest.raises(QuotaWaitTooLong):
        quota.acquire(max_wait=60)
