"""The circuit breaker's rule (`core/breaker.py`), as plain functions: a full outage opens it
within `failures` calls; random faults, one student's failures, or failures too far apart never
do; probes come at growing intervals and one success closes it (issue 21)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from anubis_dagster.core import breaker as b
from anubis_dagster.core.breaker import BreakerPhase, BreakerRule, BreakerState

T0 = datetime(2026, 12, 7, 14, 2, tzinfo=UTC)
RULE = BreakerRule()


def feed(
    calls: list[tuple[bool, int]], rule: BreakerRule = RULE, step: float = 1.0
) -> list[BreakerState]:
    """(failed, subscription id) calls one `step` second apart → the state after each."""
    state, states = BreakerState(), []
    for i, (failed, subject) in enumerate(calls):
        now = T0 + timedelta(seconds=i * step)
        state = b.on_failure(state, subject, now, rule) if failed else b.on_success(state, now)
        states.append(state)
    return states


rules = st.builds(
    BreakerRule,
    failures=st.integers(2, 30),
    students=st.integers(2, 5),
).filter(lambda r: r.students <= r.failures)


@given(rule=rules, offset=st.integers(0, 1000))
def test_a_full_outage_opens_it_after_exactly_failures_calls(
    rule: BreakerRule, offset: int
) -> None:
    # students served in turn, as a batch does: every call fails
    calls = [(True, offset + i % (rule.students + 1)) for i in range(rule.failures * 2)]
    states = feed(calls, rule)
    first_open = next(i for i, s in enumerate(states) if s.open)
    assert first_open == rule.failures - 1
    assert states[first_open].opened_at == T0 + timedelta(seconds=first_open)
    assert states[first_open].next_probe_at == states[first_open].opened_at + timedelta(
        seconds=rule.first_probe_seconds
    )


@given(
    rule=rules,
    pattern=st.lists(st.tuples(st.booleans(), st.integers(1, 50)), max_size=300),
)
def test_it_never_opens_while_a_success_breaks_every_run_shorter_than_failures(
    rule: BreakerRule, pattern: list[tuple[bool, int]]
) -> None:
    # insert a success before any run of failures would reach the threshold
    calls, run = [], 0
    for failed, subject in pattern:
        if failed and run == rule.failures - 1:
            calls.append((False, subject))
            run = 0
        calls.append((failed, subject))
        run = run + 1 if failed else 0
    assert not any(s.open for s in feed(calls, rule))


@given(rule=rules, subject=st.integers(1, 10**6), n=st.integers(1, 200))
def test_one_students_failures_alone_never_open_it(rule: BreakerRule, subject: int, n: int) -> None:
    assert not any(s.open for s in feed([(True, subject)] * n, rule))


@given(rule=rules, n=st.integers(1, 100))
def test_failures_spread_wider_than_the_window_never_open_it(rule: BreakerRule, n: int) -> None:
    # each failure after the window of the previous streak's start: the streak starts over
    step = rule.window_seconds / (rule.failures - 1) + 1
    calls = [(True, i) for i in range(n)]
    assert not any(s.open for s in feed(calls, rule, step=step))


def test_random_faults_of_the_fault_suite_never_open_it_at_the_defaults() -> None:
    # 30% of calls fail (17% 5xx, 3% timeouts, 10% lost answers), 200,000 calls over 1,000
    # students: a run of 12 has probability 0.3**12 ≈ 5e-7 per call
    rng = random.Random(21)
    calls = [(rng.random() < 0.30, rng.randrange(1000)) for _ in range(200_000)]
    assert not any(s.open for s in feed(calls, step=0.01))


def test_a_success_every_other_call_never_opens_it_a_run_of_failures_does() -> None:
    half = [(i % 2 == 0, i) for i in range(200)]  # success every other call: never
    assert not any(s.open for s in feed(half))
    outage = [(True, i) for i in range(12)]
    assert feed(outage)[-1].open


def test_probes_come_at_doubling_intervals_and_one_success_closes_it() -> None:
    rule = BreakerRule(first_probe_seconds=60, max_probe_seconds=300)
    state = feed([(True, i) for i in range(12)], rule)[-1]
    opened = state.opened_at
    assert opened is not None and state.phase is BreakerPhase.OPEN
    assert not b.probe_due(state, opened + timedelta(seconds=59))
    waits = []
    now = opened + timedelta(seconds=60)
    for _ in range(5):
        assert b.probe_due(state, now)
        state = b.on_probe_started(state, now, rule)
        assert state.phase is BreakerPhase.HALF_OPEN and not b.probe_due(state, now)
        # a straggler's failure or success changes nothing while it is open
        assert b.on_failure(state, 99, now, rule).phase is BreakerPhase.HALF_OPEN
        assert b.on_success(state, now).open
        state = b.on_probe_failed(state, now)
        assert state.phase is BreakerPhase.OPEN and state.next_probe_at is not None
        waits.append((state.next_probe_at - now).total_seconds())
        now = state.next_probe_at
    assert waits == [120, 240, 300, 300, 300]
    state = b.on_probe_succeeded(b.on_probe_started(state, now, rule), now)
    assert not state.open and state.streak == 0 and state.last_success_at == now


def test_a_probe_whose_process_died_is_followed_by_another() -> None:
    state = feed([(True, i) for i in range(12)])[-1]
    now = state.next_probe_at
    assert now is not None
    state = b.on_probe_started(state, now, RULE)
    assert not b.probe_lost(state, now + timedelta(seconds=10))
    assert b.probe_lost(state, now + timedelta(seconds=RULE.first_probe_seconds * 2))


def test_only_the_partners_failures_count() -> None:
    for outcome in ("http_5xx", "timeout", "lost_answer", "malformed"):
        assert b.partner_caused(outcome, answered_before=False)
    for outcome in ("ok", "http_4xx", "rate_limited", "unauthorized"):
        assert not b.partner_caused(outcome, answered_before=True)
    # a URL that never answered is our configuration; after it answered, the partner's
    assert not b.partner_caused("connection_error", answered_before=False)
    assert b.partner_caused("connection_error", answered_before=True)


def test_the_rule_checks_its_thresholds() -> None:
    assert BreakerRule().problems() == []
    assert BreakerRule(failures=1, students=1).problems()
    assert BreakerRule(failures=3, students=5).problems()
    assert BreakerRule(first_probe_seconds=10, max_probe_seconds=5).problems()


def test_durations_read_like_the_alert() -> None:
    assert b.describe_duration(2 * 3600 + 10 * 60 + 5) == "2 h 10 min"
    assert b.describe_duration(14 * 60) == "14 min"
    assert b.describe_duration(40) == "40 s"
    assert b.describe_duration(3 * 86400 + 3600) == "3 d 1 h"


def test_the_doctor_names_thresholds_that_cannot_work() -> None:
    from anubis_dagster.settings import Settings

    settings = Settings.from_env({"ANUBIS_BREAKER_FAILURES": "4", "ANUBIS_BREAKER_STUDENTS": "6"})
    assert any(
        p.startswith("ANUBIS_BREAKER_") and "students cannot exceed failures" in p
        for p in settings.production_problems()
    )
    assert Settings.from_env({}).production_problems() == []
    assert Settings.from_env({}).breaker_rule() == BreakerRule()
