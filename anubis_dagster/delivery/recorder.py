"""Recording one step's outcome on a subscription (`Recorder.apply`): data, status move, and
the retry schedule: transient failures wait on the row (`scheduled_to`) by `RetrySchedule` and
are dead-lettered (`failed`) after the last step, permanent failures fail at once, a send that
may have arrived is held for a person. Apart from the runner, which decides what to call; this
decides what the answer means for the row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.clients.errors import WriteWithheld
from anubis_dagster.core.clock import utcnow
from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.retry_schedule import RetrySchedule
from anubis_dagster.core.states import FINAL_STATUSES, Status, is_allowed
from anubis_dagster.db.models import FollowUp, Subscription
from anubis_dagster.db.transitions import NOTE, RETRY, record_note, transition
from anubis_dagster.delivery.outcomes import step_outcome
from anubis_dagster.delivery.step_report import StepReport
from anubis_dagster.integrations.base import IESAdapter, Outcome
from anubis_dagster.legacy.shadow import PAYLOAD_KEY
from anubis_dagster.settings import get_settings

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


def next_check_delay(subscription: Subscription, now: datetime) -> timedelta:
    """Checks get sparser as a registration ages: a quarter of its age, within bounds."""
    age = (now - (subscription.sent_at or now)).total_seconds()
    settings = get_settings()  # read at use: a changed environment counts from the next call
    bounded = max(settings.anubis_check_min_seconds, age / 4)
    return timedelta(seconds=min(settings.anubis_check_max_seconds, bounded))


class Recorder:
    """Records what one step did to a subscription, for one run of one integration: its
    data, its status move (when the state machine allows it), the next time to look at it, and
    a transient failure's cost (a retry, the dead letter, or a hold for a person)."""

    def __init__(
        self,
        *,
        run_id: str,
        adapter: IESAdapter,
        schedule: RetrySchedule,
        log: Callable[[str], None],
    ) -> None:
        self.run_id = run_id
        self.adapter = adapter
        self.schedule = schedule
        self.log = log

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
        elif (
            not outcome.transient
            and subscription.status != before
            and subscription.status == Status.REGISTER_FAILED.value
        ):
            report.refused += 1  # the partner said no: counted apart from failures
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
            held = self.hold_for_review(subscription, outcome.error, report)
            self._out_of_retries(session, subscription, Status.UNKNOWN, step, held.error)
            return "held_unknown"
        if delay is None:
            why = f"last error: {outcome.error}"
            self._out_of_retries(session, subscription, Status.FAILED, step, why)
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

    def _out_of_retries(
        self,
        session: Session,
        subscription: Subscription,
        target: Status,
        step: str,
        why: str | None,
    ) -> None:
        """Retries ran out: move to `target` (held for a person, or the dead letter), where no
        try is scheduled; the event row says after how many attempts, and why."""
        transition(
            session,
            subscription,
            target,
            operation=step,
            run_id=self.run_id,
            error=f"retries exhausted after {subscription.attempts} attempts; {why}",
        )
        subscription.scheduled_to = None

    def _write_follow_up(
        self, session: Session, subscription: Subscription, outcome: Outcome
    ) -> None:
        row = session.scalars(
            select(FollowUp).where(FollowUp.subscription_id == subscription.id)
        ).one_or_none() or FollowUp(subscription_id=subscription.id)
        row.external_id = outcome.external_id or subscription.external_id
        row.source = outcome.follow_up
        session.add(row)

    def hold_for_review(
        self, subscription: Subscription, error: str | None, report: StepReport
    ) -> Outcome:
        report.held_for_review.append(subscription.id)
        return Outcome.move(
            Status.UNKNOWN,
            error=f"the registration may have reached {self.adapter.type}, which cannot be "
            f"asked; held for review, not sent again ({error or 'no clear answer'})",
            label="held_unknown",
        )

    def withhold(
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
