# 832 lines, over the house's ~400 for now: the StepRunner and its steps; claims/leases, the shadow
# gate and the breaker hooks are its seams (issue 24, item 4).
"""The generic delivery machinery: claim due subscriptions, run one adapter step on each,
record the outcome. Plain Python; `delivery.jobs` wraps it in Dagster ops.

Guarantees kept here, once, for every IES:
- **leases**: a run claims rows before working on them (`claimed_by`/`claimed_until`, with
  `FOR UPDATE SKIP LOCKED` on PostgreSQL and the write lock on SQLite), so two runs never work
  on the same subscription; a crashed run's claims expire after `lease_seconds`;
- **no duplicate registrations**: `sending_since` is committed before the request; a row found
  with it set (a killed process, an unknown outcome) is first looked up at the partner;
- **retry schedule**: transient failures wait on the row (`scheduled_to`) by `RetrySchedule`
  and are dead-lettered (`failed`) after the last step; permanent failures fail at once;
- **shadow run** (`legacy/shadow.py`): every request that would change something at the
  partner passes `_shadow_gate` first; in shadow it is withheld, "would send" is recorded and
  the student ends `shadowed`, for every adapter alike.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from anubis_dagster.clients.errors import (
    PartnerDown,
    PartnerProblem,
    SendCancelled,
    WriteWithheld,
)
from anubis_dagster.clients.http import AttemptSubject
from anubis_dagster.clients.quota import QuotaWaitTooLong
from anubis_dagster.core.clock import utcnow
from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.core.retry_schedule import RetrySchedule
from anubis_dagster.core.states import FINAL_STATUSES, Status, is_allowed
from anubis_dagster.db.models import FollowUp, Subscription
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.db.transitions import NOTE, RETRY, record_note, transition
from anubis_dagster.delivery import breaker
from anubis_dagster.delivery.outcomes import step_outcome, still_unknown, write_may_have_acted
from anubis_dagster.integrations.base import IESAdapter, Outcome, PayloadError, ResendGuard
from anubis_dagster.legacy.shadow import PAYLOAD_KEY, withheld_reason
from anubis_dagster.settings import get_settings

CLAIM_CHUNK = 5  # rows claimed at a time: small, so a slow partner holds few leases
EXAMPLES = 5
#: the partner took the registration (some partners confirm it later)
ACCEPTED = frozenset({Status.AWAITING_REGISTER.value, Status.REGISTERED.value})
#: where a step that failed leaves a subscription (for a run's counts; not the state machine's)
FAILED_STATUSES = frozenset(
    s.value
    for s in (
        Status.COURSE_FAILED,
        Status.EMPTY_COURSE,
        Status.SYNC_LGPD_FAILED,
        Status.REGISTER_FAILED,
        Status.UNKNOWN,
        Status.FAILED,
    )
)


@dataclass
class DeliveryRequest:
    """What the operator (Launchpad) or the sensor asked this run to do; each step adds its
    summary to `reports`, for the run's closing summary alert."""

    subscription_ids: list[int] = field(default_factory=list)  # empty = everything due
    limit: int = 200
    dry_run: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepReport:
    step: str
    processed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_lettered: list[int] = field(default_factory=list)
    #: sent to a partner that cannot be asked, answer lost: `unknown`, for a person to settle
    held_for_review: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    #: registrations the partner accepted in this step (moved to awaiting_register/registered)
    registered: int = 0
    #: subscriptions this step failed: a retry scheduled, a refusal, a dead letter, held unknown
    failed: int = 0
    #: why the step stopped early: the partner's circuit breaker is open (issue 21)
    stopped: str | None = None

    def add(self, label: str, example: str | None = None) -> None:
        self.processed += 1
        self.outcomes[label] += 1
        if example and len(self.examples) < EXAMPLES:
            self.examples.append(example)


def next_check_delay(subscription: Subscription, now: datetime) -> timedelta:
    """Checks get sparser as a registration ages: a quarter of its age, within bounds."""
    age = (now - (subscription.sent_at or now)).total_seconds()
    settings = get_settings()  # read at use: a changed environment counts from the next call
    bounded = max(settings.anubis_check_min_seconds, age / 4)
    return timedelta(seconds=min(settings.anubis_check_max_seconds, bounded))


def claim_due(
    db_url: str,
    integration_id: int,
    statuses: frozenset[Status],
    *,
    run_id: str,
    limit: int,
    subscription_ids: list[int] | None = None,
    exclude_ids: set[int] | None = None,
    lease_seconds: float | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Claim up to `limit` due rows for this run and return their ids."""
    if limit <= 0 or not statuses:
        return []
    now = now or utcnow()
    if lease_seconds is None:
        lease_seconds = get_settings().anubis_lease_seconds
    lease = timedelta(seconds=lease_seconds)
    s = Subscription
    conditions = [
        s.integration_id == integration_id,
        s.status.in_([st.value for st in statuses]),
        or_(s.claimed_until.is_(None), s.claimed_until < now, s.claimed_by == run_id),
    ]
    if exclude_ids:
        conditions.append(s.id.not_in(exclude_ids))
    if subscription_ids:
        conditions.append(s.id.in_(subscription_ids))  # explicit ids: now, whatever the schedule
    else:
        conditions.append(or_(s.scheduled_to.is_(None), s.scheduled_to <= now))
    query = (
        select(s.id)
        .where(and_(*conditions))
        .order_by(s.scheduled_to.is_not(None), s.scheduled_to, s.id)
        .limit(limit)
    )
    if get_engine(db_url).dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=s)
    with session_scope(db_url) as session:
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(s).where(s.id.in_(ids)).values(claimed_by=run_id, claimed_until=now + lease)
            )
    return ids


def release_claims(db_url: str, run_id: str) -> int:
    """Drop every claim of a run (its op failed); returns how many rows were released."""
    with session_scope(db_url) as session:
        result = session.execute(
            update(Subscription)
            .where(Subscription.claimed_by == run_id)
            .values(claimed_by=None, claimed_until=None)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _release(subscription: Subscription) -> None:
    subscription.claimed_by = None
    subscription.claimed_until = None


class StepRunner:
    """Runs the steps of one integration for one Dagster run."""

    def __init__(
        self,
        *,
        db_url: str,
        integration_id: int,
        adapter: IESAdapter,
        run_id: str,
        request: DeliveryRequest,
        log: Callable[[str], None],
        schedule: RetrySchedule | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        self.db_url = db_url
        self.integration_id = integration_id
        self.adapter = adapter
        self.run_id = run_id
        self.request = request
        self.log = log
        self.schedule = schedule or RetrySchedule.parse(
            (adapter.ctx.settings or {}).get("retry_schedule")
            or get_settings().anubis_retry_schedule
        )
        self.lease_seconds = (
            get_settings().anubis_lease_seconds if lease_seconds is None else lease_seconds
        )
        self._budget = request.limit
        self.call = adapter.ctx.call
        self.call.before_write = self._fence
        self.call.before_change = self._shadow_gate
        # the partner APIs' circuit breaker (issue 21): every call about a student counts
        if not isinstance(self.call.guard, breaker.BreakerGuard):
            self.call.guard = breaker.BreakerGuard(db_url, integration_id, breaker.rule())
        self.guard: breaker.BreakerGuard = self.call.guard
        self.gate = breaker.Gate(
            db_url=db_url, integration_id=integration_id, adapter=adapter, guard=self.guard, log=log
        )

    # --- claiming -----------------------------------------------------------------------------
    def _claimed_ids(self, statuses: frozenset[Status]) -> Iterator[int]:
        """Claim due rows a few at a time and yield their ids (holding no session)."""
        seen: set[int] = set()
        while self._budget > 0:
            ids = claim_due(
                self.db_url,
                self.integration_id,
                statuses,
                run_id=self.run_id,
                limit=min(CLAIM_CHUNK, self._budget),
                subscription_ids=self.request.subscription_ids or None,
                exclude_ids=seen,
                lease_seconds=self.lease_seconds,
            )
            if not ids:
                return
            for subscription_id in ids:
                seen.add(subscription_id)
                self._budget -= 1
                yield subscription_id

    @contextmanager
    def _working_on(self, subscription_id: int) -> Iterator[tuple[Session, Subscription] | None]:
        """One claimed subscription in its own session: committed and released at the end, rolled
        back (and released at lease expiry) if the work raises. None if the claim was lost."""
        with session_scope(self.db_url) as session:
            subscription = session.get(Subscription, subscription_id)
            if subscription is None or subscription.claimed_by != self.run_id:
                yield None
                return
            # hold no transaction (no lock) while the partner is called: attempt rows are
            # written by other sessions meanwhile; the outcome commits at the end
            session.commit()
            yield session, subscription
            if not self._still_ours(session, subscription_id):
                # our lease ran out during a long call and another run took the row: its
                # work wins; ours is dropped (any send was fenced by `_fence`)
                session.rollback()
                self.log(f"subscription #{subscription_id}: claim lost; outcome not recorded")
                return
            _release(subscription)

    def _still_ours(self, session: Session, subscription_id: int) -> bool:
        query = select(Subscription.claimed_by).where(Subscription.id == subscription_id)
        if get_engine(self.db_url).dialect.name == "postgresql":
            query = query.with_for_update()
        return session.scalar(query) == self.run_id

    def _fence(self, subscription: AttemptSubject) -> None:
        """Right before a write leaves (after the quota wait and the token): in one statement,
        renew this run's claim and set the "being sent" marker, or refuse to send if the claim
        ran out (a quota wait can outlast a lease) and another run may be sending already. A
        process killed before this point sent nothing and leaves no marker."""
        now = utcnow()
        with session_scope(self.db_url) as session:
            renewed = session.execute(
                update(Subscription)
                .where(Subscription.id == subscription.id, Subscription.claimed_by == self.run_id)
                .values(
                    claimed_until=now + timedelta(seconds=self.lease_seconds),
                    sending_since=func.coalesce(Subscription.sending_since, now),
                )
            )
            if not renewed.rowcount:  # type: ignore[attr-defined]
                raise SendCancelled(f"subscription #{subscription.id}: claim lost before sending")

    def _shadow_gate(
        self, operation: str, subject: AttemptSubject | None, request: dict[str, Any]
    ) -> None:
        """Right before a request that changes something at the partner (before its quota
        wait): withhold it when the integration runs in shadow, or the subscription is a
        shadow run's student. Read fresh each time, so a switch reaches runs already going."""
        with session_scope(self.db_url) as session:
            reason = withheld_reason(
                session, self.integration_id, subject.id if subject is not None else None
            )
        if reason is not None:
            raise WriteWithheld(
                f"{operation} withheld: {reason}", operation=operation, request=request
            )

    def _withhold(
        self,
        session: Session,
        subscription: Subscription,
        withheld: WriteWithheld,
        report: StepReport,
        target: Status,
    ) -> None:
        """Record what would have been sent (masked in the event row; the registration's raw
        payload in `ies_data` for the shadow comparison) and move on as if it had been sent:
        past the step (`to_register`) for a prepare step's write, `shadowed` for the send."""
        if target is Status.SHADOWED:
            body = withheld.request.get("body")
            subscription.ies_data = {**(subscription.ies_data or {}), PAYLOAD_KEY: body}
        transition(
            session,
            subscription,
            target,
            operation=report.step,
            run_id=self.run_id,
            request=withheld.request,
            response={"note": f"would send {withheld.operation}: {mask_text(str(withheld))}"},
            # why it was not sent, for `anubis student` (a shadowed student is final)
            error=str(withheld) if target is Status.SHADOWED else None,
        )
        subscription.attempts = 0
        subscription.scheduled_to = utcnow() if target is Status.TO_REGISTER else None
        report.add("would_send", f"#{subscription.id}: would send {withheld.operation} (shadow)")
        self.log(f"subscription #{subscription.id}: {mask_text(str(withheld))}")

    def _each(
        self,
        statuses: frozenset[Status],
        report: StepReport,
        work: Callable[[Session, Subscription, StepReport], None],
    ) -> StepReport:
        """Run `work` on every due subscription; a partner-wide problem stops the batch. An
        open circuit breaker stops it before any student is claimed (or after a probe)."""
        stopped = None if self.request.dry_run else self.gate.stop_reason()
        if stopped is not None:
            self._stop_for_breaker(report, stopped)
            return report
        for subscription_id in self._claimed_ids(statuses):
            try:
                with self._working_on(subscription_id) as held:
                    if held is None:
                        continue
                    session, subscription = held
                    try:
                        work(session, subscription, report)
                    except PartnerProblem as problem:
                        self._note_stop(session, subscription, problem, report.step)
                        raise
                    except WriteWithheld as withheld:
                        # a write in a step with no shadow handling of its own (e.g. a partner
                        # whose status check writes): noted, looked at again in an hour
                        record_note(
                            session,
                            subscription,
                            kind=NOTE,
                            operation=report.step,
                            run_id=self.run_id,
                            response={"note": mask_text(str(withheld))},
                            outcome="would_send",
                        )
                        subscription.scheduled_to = utcnow() + timedelta(hours=1)
                        report.add("would_send", f"#{subscription.id}: {mask_text(str(withheld))}")
            except SendCancelled as cancelled:
                report.add("claim_lost", mask_text(str(cancelled)))
                self.log(mask_text(str(cancelled)))
            except PartnerDown as down:
                release_claims(self.db_url, self.run_id)
                if down.opened_here:
                    given = breaker.announce_down(
                        self.db_url,
                        type(self.adapter),
                        down,
                        integration_id=self.integration_id,
                        run_id=self.run_id,
                    )
                    self.log(f"attempts given back to {len(given)} students: {given[:20]}")
                    # put back where they were: no "held" or "dead letter" alert for them
                    report.held_for_review = [i for i in report.held_for_review if i not in given]
                    report.dead_lettered = [i for i in report.dead_lettered if i not in given]
                self._stop_for_breaker(report, mask_text(str(down)))
                return report
        return report

    def _stop_for_breaker(self, report: StepReport, reason: str) -> None:
        """The partner is down: nothing more this run (no student charged, the run succeeds)."""
        self._budget = 0
        self.request.limit = 0
        report.stopped = reason
        self.log(f"{report.step}: batch stopped: {reason}")

    def _note_stop(
        self, session: Session, subscription: Subscription, problem: PartnerProblem, step: str
    ) -> None:
        """The student keeps its place: no attempt counted, a note says why nothing happened."""
        record_note(
            session,
            subscription,
            kind=NOTE,
            operation=step,
            run_id=self.run_id,
            error=f"batch stopped, no attempt counted: {problem.describe()}",
            outcome="batch_stopped",
        )
        session.commit()

    # --- recording ----------------------------------------------------------------------------
    def apply(
        self,
        session: Session,
        subscription: Subscription,
        outcome: Outcome,
        *,
        step: str,
        report: StepReport,
        dead_letter: bool = True,
    ) -> None:
        """Record one step's outcome: data, status move, then the next time to look at it."""
        self._merge_data(session, subscription, outcome)
        before = subscription.status
        outcome = self._move(session, subscription, outcome, step)
        if before not in ACCEPTED and subscription.status in ACCEPTED:
            report.registered += 1
        elif (
            subscription.status == Status.UNKNOWN.value
            and before != subscription.status
            and subscription.id not in report.held_for_review
        ):
            # e.g. the partner lists an inscription that is not ours (issue 21): for a person
            report.held_for_review.append(subscription.id)
            report.failed += 1
        elif outcome.transient or (
            subscription.status != before and subscription.status in FAILED_STATUSES
        ):
            report.failed += 1
        label = self._schedule(session, subscription, outcome, step, report, dead_letter)
        # after the schedule, which may dead-letter or hold the student
        label = step_outcome(before, subscription.status, label, transient=outcome.transient)
        report.add(
            label,
            f"#{subscription.id}: {label}"
            + (f" ({mask_text(outcome.error)})" if outcome.error else ""),
        )

    def _merge_data(self, session: Session, subscription: Subscription, outcome: Outcome) -> None:
        if outcome.ies_data:
            subscription.ies_data = {**(subscription.ies_data or {}), **outcome.ies_data}
        if outcome.external_id:
            subscription.external_id = outcome.external_id
        if outcome.follow_up is not None:
            self._write_follow_up(session, subscription, outcome)

    def _move(
        self, session: Session, subscription: Subscription, outcome: Outcome, step: str
    ) -> Outcome:
        """Apply the status move the outcome asks for, if the machine allows it."""
        current = Status(subscription.status)
        target = outcome.status
        if target is None or target is current:
            if outcome.note:
                record_note(
                    session,
                    subscription,
                    kind=NOTE,
                    operation=step,
                    run_id=self.run_id,
                    response={"note": outcome.note},
                    outcome=outcome.label or "unchanged",
                )
            return outcome
        if not is_allowed(current, target):
            # the partner reports something our machine has no move for: keep, and say so
            message = f"partner reported {target.value}; no move from {current.value}, kept"
            record_note(
                session,
                subscription,
                kind=NOTE,
                operation=step,
                run_id=self.run_id,
                error=message,
                outcome="ignored",
            )
            self.log(f"subscription #{subscription.id}: {message}")
            return outcome.with_(status=None, label="ignored")
        transition(
            session,
            subscription,
            target,
            operation=step,
            run_id=self.run_id,
            error=outcome.error,
            response={"note": outcome.note} if outcome.note else None,
        )
        if not outcome.transient:
            subscription.attempts = 0
        if target in (Status.REGISTERED, Status.AWAITING_REGISTER):
            subscription.sent_at = subscription.sent_at or utcnow()
        return outcome

    def _schedule(
        self,
        session: Session,
        subscription: Subscription,
        outcome: Outcome,
        step: str,
        report: StepReport,
        dead_letter: bool,
    ) -> str:
        """When to look at the subscription next; returns the outcome's label."""
        now = utcnow()
        label = outcome.label or (outcome.status.value if outcome.status else "unchanged")
        status = Status(subscription.status)
        if outcome.defer_until is not None:
            subscription.scheduled_to = outcome.defer_until  # not a failure: nothing counted
        elif outcome.transient and dead_letter:
            return self._count_failure(session, subscription, outcome, step, report, label)
        elif status in self.adapter.check_statuses:
            # followed at the partner: soon after registering, then sparser
            delay = (
                next_check_delay(subscription, now)
                if step == "check"
                else timedelta(seconds=get_settings().anubis_first_check_seconds)
            )
            subscription.scheduled_to = now + delay
        elif status in FINAL_STATUSES:
            subscription.scheduled_to = None
        else:
            subscription.scheduled_to = now  # the next step may start at once
        return label

    def _count_failure(
        self,
        session: Session,
        subscription: Subscription,
        outcome: Outcome,
        step: str,
        report: StepReport,
        label: str,
    ) -> str:
        """A transient failure costs the student one attempt: next try, or the dead letter."""
        subscription.attempts += 1
        subscription.last_error = mask_text(outcome.error or "transient failure")
        delay = self.schedule.delay_after(subscription.attempts)
        if delay is None and subscription.sending_since is not None:
            # retries ran out while a send is still unanswered: it may have arrived, so the
            # student is held for a person rather than declared failed
            held = self._hold_for_review(subscription, outcome.error, report)
            transition(
                session,
                subscription,
                Status.UNKNOWN,
                operation=step,
                run_id=self.run_id,
                error=f"retries exhausted after {subscription.attempts} attempts; {held.error}",
            )
            subscription.scheduled_to = None
            return "held_unknown"
        if delay is None:
            reason = (
                f"retries exhausted after {subscription.attempts} attempts; "
                f"last error: {outcome.error}"
            )
            transition(
                session,
                subscription,
                Status.FAILED,
                operation=step,
                run_id=self.run_id,
                error=reason,
            )
            subscription.scheduled_to = None
            report.dead_lettered.append(subscription.id)
            return "dead_letter"
        subscription.scheduled_to = utcnow() + delay
        record_note(
            session,
            subscription,
            kind=RETRY,
            operation=step,
            run_id=self.run_id,
            error=f"attempt {subscription.attempts} failed: {outcome.error}; "
            f"next try at {subscription.scheduled_to:%Y-%m-%d %H:%M:%S} UTC",
            outcome=label,
        )
        return label

    def _write_follow_up(
        self, session: Session, subscription: Subscription, outcome: Outcome
    ) -> None:
        row = session.scalars(
            select(FollowUp).where(FollowUp.subscription_id == subscription.id)
        ).one_or_none() or FollowUp(subscription_id=subscription.id)
        row.external_id = outcome.external_id or subscription.external_id
        row.source = outcome.follow_up
        session.add(row)

    # --- steps --------------------------------------------------------------------------------
    def fix_data(self) -> StepReport:
        statuses = frozenset(self.adapter.prepare_statuses | {Status.TO_REGISTER})
        return self._each(statuses, StepReport("fix_data"), self._fix_one)

    def _fix_one(self, session: Session, subscription: Subscription, report: StepReport) -> None:
        if self.request.dry_run:
            report.add("dry_run")
            return
        try:
            changes = self.adapter.fix_data(subscription)
        except Exception as exc:  # a bug in one student's data fix must not block the batch
            message = mask_text(f"{type(exc).__name__}: {exc}")[:500]
            self.log(f"subscription #{subscription.id}: fix_data failed: {message}")
            report.add("error", f"#{subscription.id}: {message}")
            return
        if not changes:
            report.add("unchanged")
            return
        record_note(
            session,
            subscription,
            kind=NOTE,
            operation="fix_data",
            run_id=self.run_id,
            response=changes,
            outcome="fixed",
        )
        report.add("fixed")

    def prepare(self) -> StepReport:
        report = StepReport(self.adapter.prepare_label)
        return self._each(self.adapter.prepare_statuses, report, self._prepare_one)

    def _prepare_one(
        self, session: Session, subscription: Subscription, report: StepReport
    ) -> None:
        if self.request.dry_run:
            report.add("dry_run", f"#{subscription.id}: would run {report.step}")
            return
        try:
            outcome = self._safely(subscription, partial(self.adapter.prepare, subscription))
        except WriteWithheld as withheld:  # e.g. Estácio's consent, in shadow
            self._withhold(session, subscription, withheld, report, Status.TO_REGISTER)
            return
        self.apply(session, subscription, outcome, step=report.step, report=report)

    def check(self) -> StepReport:
        return self._each(self.adapter.check_statuses, StepReport("check"), self._check_one)

    def _check_one(self, session: Session, subscription: Subscription, report: StepReport) -> None:
        outcome = self._safely(subscription, partial(self.adapter.check, subscription))
        subscription.checked_at = utcnow()
        self.apply(session, subscription, outcome, step="check", report=report, dead_letter=False)

    def register(self) -> StepReport:
        report = StepReport("register")
        return self._each(frozenset({Status.TO_REGISTER}), report, self._register_one)

    def _register_one(
        self, session: Session, subscription: Subscription, report: StepReport
    ) -> None:
        """Settle an earlier unknown send first; then hold, refuse or send with the marker."""
        earlier = subscription.sending_since is not None and not self.request.dry_run
        if earlier and self._settle_earlier_send(session, subscription, report):
            return
        # an unknown send to a partner that refuses duplicates is settled by the resend only
        unresolved = earlier and self.adapter.resend_guard is ResendGuard.PARTNER_REFUSES_DUPLICATES
        held = self._safely(subscription, partial(self.adapter.before_send, subscription))
        if held is not None:
            if self.request.dry_run:
                report.add("dry_run_held", f"#{subscription.id}: {held.label}")
                return
            self.apply(session, subscription, held, step="register", report=report)
            return
        payload = self._payload(session, subscription, report)
        if payload is not None:
            self._send(session, subscription, payload, report, unresolved=unresolved)

    def _payload(
        self, session: Session, subscription: Subscription, report: StepReport
    ) -> dict[str, Any] | None:
        """The request body, or None when there is nothing to send (refused, or a dry run)."""
        try:
            payload = self.adapter.build_payload(subscription)
        except (PartnerProblem, SendCancelled):
            raise
        except Exception as exc:
            if isinstance(exc, PayloadError):
                self._refuse(session, subscription, report, exc)
                return None
            # a bug, not the data: this student waits on the schedule, the batch goes on
            failure = Outcome.retry(mask_text(f"{type(exc).__name__}: {exc}")[:500], label="error")
            if not self.request.dry_run:
                self.apply(session, subscription, failure, step="register", report=report)
            return None
        if self.request.dry_run:
            shown = json.dumps(mask_data(payload), ensure_ascii=False)
            self.log(f"dry run: subscription #{subscription.id} payload {shown}")
            report.add("dry_run", f"#{subscription.id}: {shown[:300]}")
            return None
        return payload

    def _refuse(
        self, session: Session, subscription: Subscription, report: StepReport, exc: PayloadError
    ) -> None:
        """The data cannot make a request: refused at once, with the reason."""
        if self.request.dry_run:
            report.add("dry_run_invalid", f"#{subscription.id}: {mask_text(str(exc))}")
            return
        refused = Outcome.move(Status.REGISTER_FAILED, error=str(exc), label="invalid_payload")
        subscription.sending_since = None
        self.apply(session, subscription, refused, step="register", report=report)

    def _send(
        self,
        session: Session,
        subscription: Subscription,
        payload: dict[str, Any],
        report: StepReport,
        *,
        unresolved: bool,
    ) -> None:
        """The marker is set by `_fence` in the statement that lets each write leave; what it
        becomes afterwards is decided from the write requests the adapter made
        (`delivery.outcomes`)."""
        earlier_marker = subscription.sending_since
        session.commit()  # what the adapter prepared (e.g. Estácio's CEP codes), before sending
        mark = self.call.mark()
        try:
            outcome = self._safely(
                subscription, partial(self.adapter.register, subscription, payload)
            )
        except PartnerProblem:
            keep = unresolved or write_may_have_acted(self.call.writes_since(mark))
            self._settle_marker(session, subscription, keep=keep, otherwise=earlier_marker)
            raise
        except WriteWithheld as withheld:  # the shadow gate: nothing of this one left
            keep = unresolved or write_may_have_acted(self.call.writes_since(mark))
            self._settle_marker(session, subscription, keep=keep, otherwise=earlier_marker)
            self._withhold(session, subscription, withheld, report, Status.SHADOWED)
            return
        unknown = still_unknown(
            definite=outcome.definite,
            writes=self.call.writes_since(mark),
            adapter_says_unknown=outcome.unknown,
            unresolved_before=unresolved,
        )
        if unknown and self.adapter.resend_guard is ResendGuard.NONE:
            outcome = self._hold_for_review(subscription, outcome.error, report)
        self._settle_marker(session, subscription, keep=unknown, otherwise=None)
        self.apply(session, subscription, outcome, step="register", report=report)

    def _settle_marker(
        self,
        session: Session,
        subscription: Subscription,
        *,
        keep: bool,
        otherwise: datetime | None,
    ) -> None:
        """Keep the marker `_fence` set in the database, or put `otherwise` in its place (the
        session's copy is refreshed first: `_fence` wrote it from another session)."""
        session.refresh(subscription, ["sending_since"])
        if keep:
            subscription.sending_since = subscription.sending_since or utcnow()
        else:
            subscription.sending_since = otherwise

    def _settle_earlier_send(
        self, session: Session, subscription: Subscription, report: StepReport
    ) -> bool:
        """A previous send had no clear answer (lost, or the process died): find out before
        sending again. True when this settled the subscription for this run."""
        guard = self.adapter.resend_guard
        if guard is ResendGuard.PARTNER_REFUSES_DUPLICATES:
            self.log(
                f"register #{subscription.id}: a previous send had no clear answer; sending "
                f"again, {self.adapter.type} refuses a CPF it already registered"
            )
            return False
        if guard is ResendGuard.NONE:
            held = self._hold_for_review(subscription, "the previous send had no answer", report)
            self.apply(session, subscription, held, step="register", report=report)
            return True
        found = self._safely(subscription, partial(self.adapter.find_existing, subscription))
        if found is None:
            self.log(
                f"register #{subscription.id}: a previous send had no clear answer; "
                "not found at the partner, sending again"
            )
            return False
        if found.definite:
            subscription.sending_since = None
            found = found.with_(
                note=found.note
                or f"a previous send had no clear answer; found at the partner "
                f"({found.label}), not sent again"
            )
        self.log(
            f"register #{subscription.id}: lookup after an unclear send: {found.label}"
            + (f" ({mask_text(found.error)})" if found.error else "")
        )
        self.apply(session, subscription, found, step="register", report=report)
        return True

    def _hold_for_review(
        self, subscription: Subscription, error: str | None, report: StepReport
    ) -> Outcome:
        report.held_for_review.append(subscription.id)
        return Outcome.move(
            Status.UNKNOWN,
            error=f"the registration may have reached {self.adapter.type}, which cannot be "
            f"asked; held for review, not sent again ({error or 'no clear answer'})",
            label="held_unknown",
        )

    def _safely(self, subscription: Subscription, call: Callable[[], Any]) -> Any:
        """Run an adapter call. A bug or a garbage answer that raises becomes a transient
        failure of this subscription (masked), not of the whole batch; a quota spent for longer
        than the run waits defers it (no attempt counted); a partner-wide problem and a lost
        claim go up to stop the batch or skip the subscription."""
        try:
            return call()
        except (PartnerProblem, SendCancelled, WriteWithheld):
            raise
        except QuotaWaitTooLong as exc:
            until = utcnow() + timedelta(seconds=min(900.0, max(60.0, exc.retry_in)))
            return Outcome.defer(
                until, note=f"{mask_text(str(exc))}; next try at {until:%H:%M:%S} UTC"
            )
        except Exception as exc:  # reported per subscription; the batch goes on
            message = mask_text(f"{type(exc).__name__}: {exc}")[:500]
            self.log(f"subscription #{subscription.id}: unexpected error {message}")
            return Outcome.retry(message, label="error")
