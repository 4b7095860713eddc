"""The circuit breaker of each partner API in the delivery runs (issue 21; the rule:
`core/breaker.py`, the shared state: `db/breaker.py`).

- `BreakerGuard` is the HTTP client's `CallGuard`: before a call about a subscription it
  refuses to send while the API's breaker is open (`PartnerDown`); after it, it counts the
  result, and the call that opens the breaker raises `PartnerDown(opened_here=True)`.
- `Gate` runs at the start of every step: an open breaker stops the step before any student
  is claimed, unless a probe is due, which this run then makes: one safe call chosen by the
  adapter (`IESAdapter.breaker_probe`), never a registration that could register anybody. A
  probe that succeeds closes the breaker (one "back" alert) and the step goes on at the quota.
- `give_back_attempts` returns the attempts the streak's students were charged, and the run
  that opened the breaker sends the one "down" alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.clients.errors import PartnerDown
from anubis_dagster.clients.http import AttemptSubject, HttpResult
from anubis_dagster.core import breaker as rule_
from anubis_dagster.core.breaker import BreakerRule, BreakerState
from anubis_dagster.core.clock import utcnow
from anubis_dagster.core.states import FINAL_STATUSES, Status
from anubis_dagster.db import breaker as store
from anubis_dagster.db.models import Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.transitions import NOTE, RETRY, TRANSITION, record_note
from anubis_dagster.delivery.requeue import requeue
from anubis_dagster.integrations.base import IESAdapter
from anubis_dagster.settings import get_settings

#: a closed breaker is read again from the app DB at most this often per run (another
#: process may have opened it): one primary-key read per second, not one per call
RECHECK_SECONDS = 1.0
#: times in the alerts and the sensor's reasons: the operators' clock
LOCAL_ZONE = ZoneInfo("America/Sao_Paulo")


def api_names(adapter: type[IESAdapter]) -> list[str]:
    """The breaker keys of an adapter's partner APIs (their clients' names)."""
    return sorted({resource.client_name for resource in adapter.apis.values()})


def open_breakers(session: Session, adapter: type[IESAdapter]) -> dict[str, BreakerState]:
    """The adapter's APIs whose breaker is open or half-open."""
    return {api: s for api, s in store.read_all(session, api_names(adapter)).items() if s.open}


def local_time(when: datetime | None) -> str:
    if when is None:
        return "?"
    return when.astimezone(LOCAL_ZONE).strftime("%H:%M")


def partner_name(adapter: type[IESAdapter], api: str) -> str:
    """`Kroton`, or `Kroton (kroton-catalog)` for an API other than the main one."""
    return adapter.title if api == adapter.type else f"{adapter.title} ({api})"


def why_stopped(adapter: type[IESAdapter], api: str, state: BreakerState) -> str:
    """The reason the sensor and the runs give while the breaker is open."""
    probe = (
        f"next probe at {local_time(state.next_probe_at)}"
        if state.phase is rule_.BreakerPhase.OPEN
        else "a probe is under way"
    )
    return (
        f"{partner_name(adapter, api)} is down since {local_time(state.opened_at)} "
        f"(circuit breaker open, {probe})"
    )


def waiting_students(session: Session, integration_id: int) -> int:
    """Students of the integration not yet at a final status (what an outage holds up)."""
    finals = [s.value for s in FINAL_STATUSES] + [Status.INVALID.value]
    return int(
        session.scalar(
            select(func.count(Subscription.id)).where(
                Subscription.integration_id == integration_id,
                Subscription.status.not_in(finals),
            )
        )
        or 0
    )


def down_alert(name: str, opened_at: datetime | None, waiting: int, failures: int) -> Alert:
    return Alert(
        f"{name} is down since {local_time(opened_at)}, {waiting} students waiting",
        [
            f"{failures} calls in a row failed on the partner's side (5xx, timeouts, lost or "
            "unreadable answers) for different students: circuit breaker open",
            "nothing is sent and no attempt is charged until a probe succeeds; the students "
            "of the streak got their attempts back",
        ],
        level="critical",
    )


def back_alert(name: str, opened_at: datetime | None, now: datetime, waiting: int) -> Alert:
    down_for = rule_.describe_duration((now - (opened_at or now)).total_seconds())
    return Alert(
        f"{name} is back after {down_for}",
        [f"a probe succeeded: circuit breaker closed; {waiting} students drain at the quota"],
        level="info",
    )


class BreakerGuard:
    """The `CallGuard` of one run's clients (see the module's docstring)."""

    def __init__(self, db_url: str, integration_id: int | None, rule: BreakerRule) -> None:
        self.db_url = db_url
        self.integration_id = integration_id
        self.rule = rule
        #: APIs whose probe this run is making: neither stopped nor counted
        self.probing: set[str] = set()
        #: the last state seen of each API, after this run's calls
        self.seen: dict[str, BreakerState] = {}
        self._read_at: dict[str, float] = {}  # when `seen` was last read from the app DB

    def before(self, api: str, subject: AttemptSubject) -> None:
        if api in self.probing:
            return
        now = time.monotonic()
        state = self.seen.get(api)
        if state is None or state.open or now - self._read_at.get(api, 0.0) >= RECHECK_SECONDS:
            state = store.read(self.db_url, api)
            self.seen[api] = state
            self._read_at[api] = now
        if state.open:
            raise PartnerDown(
                f"{api} is down since {local_time(state.opened_at)} (circuit breaker open): "
                "nothing sent",
                partner=api,
            )

    def after(self, api: str, result: HttpResult, subject: AttemptSubject) -> None:
        if api in self.probing:
            return
        outcome = result.outcome.value
        now = utcnow()
        if outcome in rule_.PARTNER_ANSWERS:
            seen = self.seen.get(api)
            if seen is not None and seen.streak == 0 and not seen.open and seen.last_success_at:
                return  # nothing to reset: no write
            change = store.update(self.db_url, api, lambda s: rule_.on_success(s, now))
            self.seen[api] = change.after
            return

        def failed(state: BreakerState) -> BreakerState:
            answered = state.last_success_at is not None
            if not rule_.partner_caused(outcome, answered_before=answered):
                return state
            return rule_.on_failure(state, subject.id, now, self.rule)

        change = store.update(self.db_url, api, failed, integration_id=self.integration_id)
        self.seen[api] = change.after
        if change.opened:
            raise PartnerDown(
                f"{api}: {change.after.streak} calls in a row failed on the partner's side for "
                f"{len(change.after.streak_ids)} students: circuit breaker open",
                partner=api,
                opened_here=True,
                streak_ids=change.after.streak_ids,
            )


def give_back_attempts(
    db_url: str,
    subscription_ids: Iterable[int],
    *,
    since: datetime,
    api: str,
    run_id: str | None,
) -> list[int]:
    """The students of the streak that opened the breaker get back the attempts they were
    charged since it began, and one whose last attempt fell in the streak (dead-lettered, or
    held `unknown` as its retries ran out) is put back where it was (`requeue`). They are due
    again at once (sent when the breaker closes). An unknown send stays unknown
    (`sending_since` is untouched): a lookup settles it later."""
    given: list[int] = []
    with session_scope(db_url) as session:
        for subscription_id in subscription_ids:
            subscription = session.get(Subscription, subscription_id)
            if subscription is None:
                continue
            charged = _charged_in_streak(session, subscription, since=since, run_id=run_id)
            charged = min(charged, subscription.attempts)
            if not charged:
                continue
            subscription.attempts -= charged
            if subscription.scheduled_to is not None:
                subscription.scheduled_to = utcnow()
            record_note(
                session,
                subscription,
                kind=NOTE,
                operation="breaker",
                run_id=run_id,
                error=f"{charged} attempt(s) given back: {api} is down (circuit breaker open)",
                outcome="attempt_given_back",
            )
            given.append(subscription_id)
    return given


def _charged_in_streak(
    session: Session, subscription: Subscription, *, since: datetime, run_id: str | None
) -> int:
    """The attempts the streak cost this student, read from its events, since the outage was
    not the student's fault. One whose retries ran out in the streak is requeued here (its last
    attempt counts too), with `requeue`'s reset of the attempts undone: the caller gives back
    only what the streak cost."""
    events = list(
        session.scalars(
            select(SubscriptionEvent).where(
                SubscriptionEvent.subscription_id == subscription.id,
                SubscriptionEvent.created_at >= since,
                SubscriptionEvent.kind.in_((RETRY, TRANSITION)),
            )
        )
    )
    charged = sum(1 for e in events if e.kind == RETRY)
    ended = [
        e
        for e in events
        if e.kind == TRANSITION
        and e.status in (Status.FAILED.value, Status.UNKNOWN.value)
        and (e.error_message or "").startswith("retries exhausted")
    ]
    if ended and subscription.status in (Status.FAILED.value, Status.UNKNOWN.value):
        attempts = subscription.attempts
        requeued = requeue(
            session, subscription.integration_id, ids=[subscription.id], run_id=run_id
        ).requeued
        if requeued:
            charged += 1
            subscription.attempts = attempts  # `requeue` forgives all; we give back
    return charged


class Gate:
    """Whether a step of this run may work on students, given its APIs' breakers; makes the
    probe when one is due (see the module's docstring)."""

    def __init__(
        self,
        *,
        db_url: str,
        integration_id: int,
        adapter: IESAdapter,
        guard: BreakerGuard,
        log: Callable[[str], None],
        send: Callable[[Alert], bool] = send_alert,
    ) -> None:
        self.db_url = db_url
        self.integration_id = integration_id
        self.adapter = adapter
        self.guard = guard
        self.log = log
        self.send = send

    def stop_reason(self) -> str | None:
        """None when every API's breaker is closed (or a probe just closed it)."""
        kind = type(self.adapter)
        for api in api_names(kind):
            state = store.read(self.db_url, api)
            if not state.open:
                continue
            now = utcnow()
            if not (rule_.probe_due(state, now) or rule_.probe_lost(state, now)):
                return why_stopped(kind, api, state)
            change = store.update(self.db_url, api, partial(self._start_probe, now=now))
            if change.after == change.before:  # another run took the probe
                return why_stopped(kind, api, change.after)
            if not self._probe(api, change.before):
                return why_stopped(kind, api, store.read(self.db_url, api))
        return None

    def _start_probe(self, state: BreakerState, *, now: datetime) -> BreakerState:
        if rule_.probe_due(state, now) or rule_.probe_lost(state, now):
            return rule_.on_probe_started(state, now, self.guard.rule)
        return state

    def _probe(self, api: str, before: BreakerState) -> bool:
        """One safe call; True when the partner answered it (and the breaker is closed). With
        nobody waiting, or no safe call for this API, it closes without a call: the next
        calls decide (`failures` more in a row open it again)."""
        kind = type(self.adapter)
        subject = self._subject()
        self.guard.probing.add(api)
        result: HttpResult | None = None
        answered = True
        # the probe is built to change nothing at the partner (a read, or an empty request it
        # refuses): the shadow gate would withhold it for a shadow run's student, or in shadow
        # mode, and the breaker would then never close
        call = self.adapter.ctx.call
        gate, call.before_change = call.before_change, None
        try:
            if subject is not None:
                result = self.adapter.breaker_probe(api, subject)
                answered = result is None or result.outcome.value in rule_.PARTNER_ANSWERS
        except Exception as exc:  # PartnerUnreachable, a quota wait: the probe failed
            self.log(f"breaker probe of {api} failed: {type(exc).__name__}")
            answered = False
        finally:
            call.before_change = gate
            self.guard.probing.discard(api)
        now = utcnow()
        if not answered:
            change = store.update(self.db_url, api, lambda s: rule_.on_probe_failed(s, now))
            self.log(
                f"breaker probe of {api}: "
                + (result.describe() if result is not None else "no answer")
                + f"; next probe at {local_time(change.after.next_probe_at)}"
            )
            return False
        change = store.update(
            self.db_url,
            api,
            lambda s: rule_.on_probe_succeeded(s, now) if s.open else s,
        )
        if change.closed:
            with session_scope(self.db_url) as session:
                waiting = waiting_students(session, self.integration_id)
            self.send(back_alert(partner_name(kind, api), before.opened_at, now, waiting))
            self.log(
                f"breaker probe of {api} "
                + (f"answered ({result.describe()})" if result is not None else "not needed")
                + ": circuit breaker closed"
            )
        return True

    def _subject(self) -> Subscription | None:
        """A student of the backlog for the probe's attempt row (the oldest one waiting)."""
        finals = [s.value for s in FINAL_STATUSES] + [Status.INVALID.value]
        with session_scope(self.db_url) as session:
            subscription = session.scalars(
                select(Subscription)
                .where(
                    Subscription.integration_id == self.integration_id,
                    Subscription.status.not_in(finals),
                )
                # Anubis's own backlog first: an imported student is the legacy's
                .order_by(Subscription.legacy_status.is_not(None), Subscription.id)
                .limit(1)
            ).first()
            if subscription is not None:
                session.expunge(subscription)
            return subscription


def announce_down(
    db_url: str,
    adapter: type[IESAdapter],
    down: PartnerDown,
    *,
    integration_id: int,
    run_id: str | None,
    send: Callable[[Alert], bool] = send_alert,
) -> list[int]:
    """The run whose call opened the breaker: attempts given back, one alert."""
    state = store.read(db_url, down.partner)
    since = (state.streak_started_at or utcnow()) - timedelta(seconds=1)
    given = give_back_attempts(
        db_url, down.streak_ids, since=since, api=down.partner, run_id=run_id
    )
    with session_scope(db_url) as session:
        waiting = waiting_students(session, integration_id)
    send(down_alert(partner_name(adapter, down.partner), state.opened_at, waiting, state.streak))
    return given


def rule() -> BreakerRule:
    return get_settings().breaker_rule()
