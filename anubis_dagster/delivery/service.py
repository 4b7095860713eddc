"""The generic delivery machinery: claim due subscriptions, run one adapter step on each,
record the outcome. Plain Python; `delivery.step_ops` wraps it in Dagster ops.

Guarantees kept for every IES, each in its own module:
- **leases** (`claims.py`): a run claims rows before working on them, so two runs never work on
  the same subscription; a crashed run's claims expire after `lease_seconds`;
- **no duplicate registrations** (here): `sending_since` is committed before the request (by the
  claims' fence); a row found with it set (a killed process, an unknown outcome) is first looked
  up at the partner;
- **retry schedule** (`recorder.py`): transient failures wait on the row (`scheduled_to`) by
  `RetrySchedule` and are dead-lettered (`failed`) after the last step; permanent failures fail
  at once;
- **shadow run** (`legacy/shadow.py`): every request that would change something at the
  partner passes `_shadow_gate` first; in shadow it is withheld, "would send" is recorded and
  the student ends `shadowed`, for every adapter alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from anubis_dagster.clients.errors import PartnerDown, PartnerProblem, SendCancelled, WriteWithheld
from anubis_dagster.clients.http import AttemptSubject
from anubis_dagster.clients.quota import QuotaWaitTooLong
from anubis_dagster.core.clock import utcnow
from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.core.retry_schedule import RetrySchedule
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.transitions import NOTE, record_note
from anubis_dagster.delivery import breaker
from anubis_dagster.delivery.claims import Claims, release_claims
from anubis_dagster.delivery.outcomes import still_unknown, write_may_have_acted
from anubis_dagster.delivery.recorder import Recorder
from anubis_dagster.delivery.step_report import DeliveryRequest, StepReport
from anubis_dagster.integrations.base import IESAdapter, Outcome, PayloadError, ResendGuard
from anubis_dagster.legacy.shadow import withheld_reason
from anubis_dagster.settings import get_settings

#: what `delivery.jobs` and `delivery.step_ops` import from here, though defined next door
__all__ = ["DeliveryRequest", "StepReport", "StepRunner", "release_claims"]


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
        self.claims = Claims(
            db_url=db_url,
            integration_id=integration_id,
            run_id=run_id,
            lease_seconds=self.lease_seconds,
            budget=request.limit,
            subscription_ids=request.subscription_ids,
            log=log,
        )
        self.recorder = Recorder(run_id=run_id, adapter=adapter, schedule=self.schedule, log=log)
        self.call = adapter.ctx.call
        self.call.before_write = self.claims.fence
        self.call.before_change = self._shadow_gate
        # the partner APIs' circuit breaker (issue 21): every call about a student counts
        if not isinstance(self.call.guard, breaker.BreakerGuard):
            self.call.guard = breaker.BreakerGuard(db_url, integration_id, breaker.rule())
        self.guard: breaker.BreakerGuard = self.call.guard
        self.gate = breaker.Gate(
            db_url=db_url, integration_id=integration_id, adapter=adapter, guard=self.guard, log=log
        )

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
        for subscription_id in self.claims.due_ids(statuses):
            try:
                with self.claims.working_on(subscription_id) as held:
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
        self.claims.budget = 0
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
            self.recorder.withhold(session, subscription, withheld, report, Status.TO_REGISTER)
            return
        self.recorder.apply(session, subscription, outcome, step=report.step, report=report)

    def check(self) -> StepReport:
        return self._each(self.adapter.check_statuses, StepReport("check"), self._check_one)

    def _check_one(self, session: Session, subscription: Subscription, report: StepReport) -> None:
        outcome = self._safely(subscription, partial(self.adapter.check, subscription))
        subscription.checked_at = utcnow()
        self.recorder.apply(
            session, subscription, outcome, step="check", report=report, dead_letter=False
        )

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
            self.recorder.apply(session, subscription, held, step="register", report=report)
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
                self.recorder.apply(session, subscription, failure, step="register", report=report)
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
        self.recorder.apply(session, subscription, refused, step="register", report=report)

    def _send(
        self,
        session: Session,
        subscription: Subscription,
        payload: dict[str, Any],
        report: StepReport,
        *,
        unresolved: bool,
    ) -> None:
        """The marker is set by `Claims.fence` in the statement that lets each write leave; what it
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
            self.recorder.withhold(session, subscription, withheld, report, Status.SHADOWED)
            return
        unknown = still_unknown(
            definite=outcome.definite,
            writes=self.call.writes_since(mark),
            adapter_says_unknown=outcome.unknown,
            unresolved_before=unresolved,
        )
        if unknown and self.adapter.resend_guard is ResendGuard.NONE:
            outcome = self.recorder.hold_for_review(subscription, outcome.error, report)
        self._settle_marker(session, subscription, keep=unknown, otherwise=None)
        self.recorder.apply(session, subscription, outcome, step="register", report=report)

    def _settle_marker(
        self,
        session: Session,
        subscription: Subscription,
        *,
        keep: bool,
        otherwise: datetime | None,
    ) -> None:
        """Keep the marker `Claims.fence` set in the database, or put `otherwise` in its place (the
        session's copy is refreshed first: `Claims.fence` wrote it from another session)."""
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
            held = self.recorder.hold_for_review(
                subscription, "the previous send had no answer", report
            )
            self.recorder.apply(session, subscription, held, step="register", report=report)
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
        self.recorder.apply(session, subscription, found, step="register", report=report)
        return True

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
