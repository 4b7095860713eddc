"""The circuit breaker of one partner API, as plain functions (issue 21).

A partner that is down fails every student the same way; charging each of them attempts (and
dead-lettering them after the schedule) punishes the students for the partner's problem. The
breaker tells an outage from random faults by the calls themselves:

- only failures the partner alone can cause count (`partner_caused`): a 5xx, a timeout, an
  answer cut short or unreadable, a connection lost after the request left, and a connection
  error once the API has answered us before (a URL that never worked is our configuration,
  which `PartnerUnreachable` reports);
- it opens after `failures` such calls in a row about at least `students` different
  subscriptions, with no successful call in between, all within `window_seconds`. A random
  fault rate `p` gives such a run with probability about `p ** failures` per call: with the
  defaults (12 calls) and the fault suite's 30%, about 5e-7 per call; a full outage opens it
  after exactly `failures` calls;
- while open, a probe is due at `next_probe_at`; a probe that fails doubles the wait (up to
  `max_probe_seconds`); a probe that succeeds closes it.

Calls that are not about a subscription (token requests, health probes) are not evidence:
tokens are often served through an outage. The store (`db/breaker.py`) keeps this state in the
app DB, one row per partner API, and applies these functions under the row's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class BreakerPhase(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # a probe is under way


#: HTTP outcomes (`clients.http.HttpOutcome` values) only the partner can cause
PARTNER_FAILURES = frozenset({"http_5xx", "timeout", "lost_answer", "malformed"})
#: outcomes that prove the partner works (an answer it gave on purpose, even a refusal)
PARTNER_ANSWERS = frozenset({"ok", "http_4xx"})


@dataclass(frozen=True)
class BreakerRule:
    failures: int = 12  # partner-caused failed calls in a row…
    students: int = 3  # …about at least this many different subscriptions…
    window_seconds: float = 3600.0  # …all within this long
    first_probe_seconds: float = 60.0  # first probe this long after opening
    max_probe_seconds: float = 3600.0  # probes never further apart than this

    def problems(self) -> list[str]:
        found = []
        if self.failures < 2:
            found.append("failures must be at least 2 (one failed call is not an outage)")
        if self.students < 2:
            found.append("students must be at least 2 (one student's data can fail alone)")
        if self.students > self.failures:
            found.append("students cannot exceed failures (each failure is one student)")
        if self.window_seconds <= 0:
            found.append("window must be positive")
        if not 0 < self.first_probe_seconds <= self.max_probe_seconds:
            found.append("the first probe wait must be positive and at most the longest")
        return found


@dataclass(frozen=True)
class BreakerState:
    phase: BreakerPhase = BreakerPhase.CLOSED
    streak: int = 0  # partner-caused failed calls in a row
    streak_ids: tuple[int, ...] = ()  # the different subscriptions of the streak, in order
    streak_started_at: datetime | None = None
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    probe_seconds: float = 0.0  # the current wait between probes
    last_success_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.phase is not BreakerPhase.CLOSED


def partner_caused(outcome: str, *, answered_before: bool) -> bool:
    """Whether a call's outcome is a failure only the partner can cause."""
    if outcome in PARTNER_FAILURES:
        return True
    return outcome == "connection_error" and answered_before


def on_failure(
    state: BreakerState, subject_id: int, now: datetime, rule: BreakerRule
) -> BreakerState:
    """A partner-caused failure of a call about subscription `subject_id`."""
    if state.open:
        return state  # a probe's failure is `on_probe_failed`; stragglers change nothing
    started = state.streak_started_at
    if (
        state.streak == 0
        or started is None
        or now - started > timedelta(seconds=rule.window_seconds)
    ):
        state = replace(state, streak=0, streak_ids=(), streak_started_at=now)
    ids = state.streak_ids if subject_id in state.streak_ids else (*state.streak_ids, subject_id)
    state = replace(state, streak=state.streak + 1, streak_ids=ids)
    if state.streak >= rule.failures and len(ids) >= rule.students:
        return replace(
            state,
            phase=BreakerPhase.OPEN,
            opened_at=now,
            probe_seconds=rule.first_probe_seconds,
            next_probe_at=now + timedelta(seconds=rule.first_probe_seconds),
        )
    return state


def on_success(state: BreakerState, now: datetime) -> BreakerState:
    """A call the partner answered (2xx, or a deliberate 4xx): the streak is over. An open
    breaker closes only through a probe (`on_probe_succeeded`)."""
    if state.open:
        return replace(state, last_success_at=now)
    return replace(state, streak=0, streak_ids=(), streak_started_at=None, last_success_at=now)


def probe_due(state: BreakerState, now: datetime) -> bool:
    return (
        state.phase is BreakerPhase.OPEN
        and state.next_probe_at is not None
        and now >= state.next_probe_at
    )


def on_probe_started(state: BreakerState, now: datetime, rule: BreakerRule) -> BreakerState:
    """Half-open: one probe at a time. Its next time is set already, so a probe whose process
    dies is followed by another one later (never by none)."""
    wait = min(rule.max_probe_seconds, max(state.probe_seconds, rule.first_probe_seconds) * 2)
    return replace(
        state,
        phase=BreakerPhase.HALF_OPEN,
        probe_seconds=wait,
        next_probe_at=now + timedelta(seconds=wait),
    )


def probe_lost(state: BreakerState, now: datetime) -> bool:
    """A half-open probe whose owner never reported (died): another may start."""
    return (
        state.phase is BreakerPhase.HALF_OPEN
        and state.next_probe_at is not None
        and now >= state.next_probe_at
    )


def on_probe_failed(state: BreakerState, now: datetime) -> BreakerState:
    """Back to open; the next probe waits the doubled time `on_probe_started` set."""
    next_at = state.next_probe_at or now + timedelta(seconds=state.probe_seconds)
    return replace(state, phase=BreakerPhase.OPEN, next_probe_at=next_at)


def on_probe_succeeded(state: BreakerState, now: datetime) -> BreakerState:
    return BreakerState(last_success_at=now)


def describe_duration(seconds: float) -> str:
    """`2 h 10 min`, `14 min`, `40 s`: for the "back after" alert."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
