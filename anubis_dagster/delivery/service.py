"""The generic delivery machinery: claim due subscriptions, run one adapter step on each,
record the outcome. Plain Python; `delivery.jobs` wraps it in Dagster ops.

Guarantees kept here, once, for every IES:
- **leases**: a run claims rows before working on them (`claimed_by`/`claimed_until`, with
  `FOR UPDATE SKIP LOCKED` on PostgreSQL and the write lock on SQLite), so two runs never work
  on the same subscription; a crashed run's claims expire after `lease_seconds`;
- **no duplicate registrations**: `sending_since` is committed before the request; a row found
  with it set (a killed process, an unknown outcome) is first looked up at the partner;
- **retry schedule**: transient failures wait on the row (`scheduled_to`) by `RetrySchedule`
  and are dead-lettered (`failed`) after the last step; permanent failures fail at once.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.core.retry_schedule import RetrySchedule
from anubis_dagster.core.states import FINAL_STATUSES, Status, is_allowed
from anubis_dagster.db.models import FollowUp, Subscription
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.db.transitions import NOTE, RETRY, record_note, transition
from anubis_dagster.integrations.base import IESAdapter, Outcome, PayloadError

LEASE_SECONDS = float(os.environ.get("ANUBIS_LEASE_SECONDS", "600"))
CLAIM_CHUNK = 5  # rows claimed at a time: small, so a slow partner holds few leases
CHECK_MIN_SECONDS = float(os.environ.get("ANUBIS_CHECK_MIN_SECONDS", "600"))
CHECK_MAX_SECONDS = float(os.environ.get("ANUBIS_CHECK_MAX_SECONDS", "86400"))
FIRST_CHECK_SECONDS = float(os.environ.get("ANUBIS_FIRST_CHECK_SECONDS", "120"))
EXAMPLES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    examples: list[str] = field(default_factory=list)

    def add(self, label: str, example: str | None = None) -> None:
        self.processed += 1
        self.outcomes[label] += 1
        if example and len(self.examples) < EXAMPLES:
            self.examples.append(example)


def next_check_delay(subscription: Subscription, now: datetime) -> timedelta:
    """Checks get sparser as a registration ages: a quarter of its age, within bounds."""
    age = (now - (subscription.sent_at or now)).total_seconds()
    return timedelta(seconds=min(CHECK_MAX_SECONDS, max(CHECK_MIN_SECONDS, age / 4)))


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
    lease = timedelta(seconds=LEASE_SECONDS if lease_seconds is None else lease_seconds)
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
        self.schedule = schedule or RetrySchedule.from_env(
            (adapter.ctx.settings or {}).get("retry_schedule")
        )
        self.lease_seconds = lease_seconds
        self._budget = request.limit

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
            _release(subscription)

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
        now = utcnow()
        if outcome.ies_data:
            subscription.ies_data = {**(subscription.ies_data or {}), **outcome.ies_data}
        if outcome.external_id:
            subscription.external_id = outcome.external_id
        if outcome.follow_up is not None:
            self._write_follow_up(session, subscription, outcome)
        if not outcome.unknown:
            subscription.sending_since = None
        label = outcome.label or (outcome.status.value if outcome.status else "unchanged")

        current = Status(subscription.status)
        if (
            outcome.status is not None
            and outcome.status is not current
            and not is_allowed(current, outcome.status)
        ):
            # the partner reports something our machine has no move for: keep, and say so
            record_note(
                session,
                subscription,
                kind=NOTE,
                operation=step,
                run_id=self.run_id,
                error=f"partner reported {outcome.status.value}; no move from "
                f"{current.value}, status kept",
                outcome="ignored",
            )
            self.log(
                f"subscription #{subscription.id}: partner reported {outcome.status.value} "
                f"while {current.value}; kept"
            )
            outcome.status = None
            label = "ignored"
        if outcome.status is not None and outcome.status is not current:
            transition(
                session,
                subscription,
                outcome.status,
                operation=step,
                run_id=self.run_id,
                error=outcome.error,
                response={"note": outcome.note} if outcome.note else None,
            )
            if not outcome.transient:
                subscription.attempts = 0
            if outcome.status in (Status.REGISTERED, Status.AWAITING_REGISTER):
                subscription.sent_at = subscription.sent_at or now
        elif outcome.note:
            record_note(
                session,
                subscription,
                kind=NOTE,
                operation=step,
                run_id=self.run_id,
                response={"note": outcome.note},
                outcome=label,
            )

        if outcome.defer_until is not None:
            subscription.scheduled_to = outcome.defer_until
        elif outcome.transient and dead_letter:
            subscription.attempts += 1
            subscription.last_error = mask_text(outcome.error or "transient failure")
            delay = self.schedule.delay_after(subscription.attempts)
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
                label = "dead_letter"
            else:
                subscription.scheduled_to = now + delay
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
        elif Status(subscription.status) in self.adapter.check_statuses:
            # followed at the partner: soon after registering, then sparser
            delay = (
                next_check_delay(subscription, now)
                if step == "check"
                else timedelta(seconds=FIRST_CHECK_SECONDS)
            )
            subscription.scheduled_to = now + delay
        elif Status(subscription.status) in FINAL_STATUSES:
            subscription.scheduled_to = None
        else:
            subscription.scheduled_to = now  # the next step may start at once
        report.add(
            label,
            f"#{subscription.id}: {label}"
            + (f" ({mask_text(outcome.error)})" if outcome.error else ""),
        )

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
        report = StepReport("fix_data")
        statuses = self.adapter.prepare_statuses | {Status.TO_REGISTER}
        for subscription_id in self._claimed_ids(frozenset(statuses)):
            with self._working_on(subscription_id) as work:
                if work is None:
                    continue
                session, subscription = work
                if self.request.dry_run:
                    report.add("dry_run")
                    continue
                changes = self.adapter.fix_data(subscription)
                if changes:
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
                else:
                    report.add("unchanged")
        return report

    def prepare(self) -> StepReport:
        report = StepReport(self.adapter.prepare_label)
        for subscription_id in self._claimed_ids(self.adapter.prepare_statuses):
            with self._working_on(subscription_id) as work:
                if work is None:
                    continue
                session, subscription = work
                if self.request.dry_run:
                    report.add("dry_run", f"#{subscription.id}: would run {report.step}")
                    continue
                outcome = self._safely(subscription, partial(self.adapter.prepare, subscription))
                self.apply(session, subscription, outcome, step=report.step, report=report)
        return report

    def register(self) -> StepReport:
        report = StepReport("register")
        for subscription_id in self._claimed_ids(frozenset({Status.TO_REGISTER})):
            with self._working_on(subscription_id) as work:
                if work is None:
                    continue
                session, subscription = work
                if subscription.sending_since is not None and not self.request.dry_run:
                    found = self._safely(subscription, partial(self._find, subscription))
                    if found is not None:
                        self.apply(session, subscription, found, step="register", report=report)
                        continue
                held = self._safely(subscription, partial(self.adapter.before_send, subscription))
                if held is not None:
                    if self.request.dry_run:
                        report.add("dry_run_held", f"#{subscription.id}: {held.label}")
                        continue
                    self.apply(session, subscription, held, step="register", report=report)
                    continue
                try:
                    payload = self.adapter.build_payload(subscription)
                except PayloadError as exc:
                    if self.request.dry_run:
                        report.add("dry_run_invalid", f"#{subscription.id}: {mask_text(str(exc))}")
                        continue
                    outcome = Outcome.move(
                        Status.REGISTER_FAILED, error=str(exc), label="invalid_payload"
                    )
                    self.apply(session, subscription, outcome, step="register", report=report)
                    continue
                if self.request.dry_run:
                    shown = json.dumps(mask_data(payload), ensure_ascii=False)
                    self.log(f"dry run: subscription #{subscription.id} payload {shown}")
                    report.add("dry_run", f"#{subscription.id}: {shown[:300]}")
                    continue
                # the marker is committed before the request leaves
                subscription.sending_since = utcnow()
                session.commit()
                outcome = self._safely(
                    subscription, partial(self.adapter.register, subscription, payload)
                )
                self.apply(session, subscription, outcome, step="register", report=report)
        return report

    def _find(self, subscription: Subscription) -> Outcome | None:
        found = self.adapter.find_existing(subscription)
        if found is None:
            self.log(
                f"register #{subscription.id}: a previous send had no clear answer; "
                "not found at the partner, sending again"
            )
            return None
        found.note = found.note or (
            "a previous send had no clear answer; found at the partner, not sent again"
        )
        self.log(f"register #{subscription.id}: {found.note}")
        return found

    def check(self) -> StepReport:
        report = StepReport("check")
        for subscription_id in self._claimed_ids(self.adapter.check_statuses):
            with self._working_on(subscription_id) as work:
                if work is None:
                    continue
                session, subscription = work
                outcome = self._safely(subscription, partial(self.adapter.check, subscription))
                subscription.checked_at = utcnow()
                self.apply(
                    session, subscription, outcome, step="check", report=report, dead_letter=False
                )
        return report

    def _safely(self, subscription: Subscription, call: Callable[[], Any]) -> Any:
        """Run an adapter call; a bug or a garbage answer that raises becomes a transient
        failure of this subscription (masked), not of the whole batch."""
        try:
            return call()
        except Exception as exc:  # reported per subscription; the batch goes on
            message = mask_text(f"{type(exc).__name__}: {exc}")[:500]
            self.log(f"subscription #{subscription.id}: unexpected error {message}")
            return Outcome.retry(
                message, label="error", unknown=subscription.sending_since is not None
            )
