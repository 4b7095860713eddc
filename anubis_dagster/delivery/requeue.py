"""Operator actions from the Launchpad: requeue dead-lettered or refused subscriptions, and make
scheduled retries due now.

A requeued subscription goes back to the step it failed at (read from its last status change),
with its attempt count reset; the move is an event row like any other (`operation=requeue`).
A registration goes back one step further when the adapter says the partner may have lost
what that step gave it (`IESAdapter.requeue_register_at`: Estácio's LGPD consent).
A dry run (`dry_run=True`) answers what would be requeued or made due, and writes nothing: a
preview must not change what it previews.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anubis_dagster.core.states import FINAL_STATUSES, REQUEUEABLE, Status
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.transitions import TRANSITION, transition
from anubis_dagster.integrations.base import IESAdapter, ResendGuard, adapter_class

#: status a subscription was in before it failed → where it resumes
RESUME_AT: dict[Status, Status] = {
    Status.TO_SYNC: Status.TO_SYNC,
    Status.COURSE_FAILED: Status.TO_SYNC,
    Status.EMPTY_COURSE: Status.TO_SYNC,
    Status.TO_SYNC_LGPD: Status.TO_SYNC_LGPD,
    Status.SYNC_LGPD_FAILED: Status.TO_SYNC_LGPD,
    Status.TO_REGISTER: Status.TO_REGISTER,
    Status.REGISTER_FAILED: Status.TO_REGISTER,
    Status.AWAITING_REGISTER: Status.AWAITING_REGISTER,
    # the operator confirmed at the partner that the registration did not arrive
    Status.UNKNOWN: Status.TO_REGISTER,
}


@dataclass
class RequeueReport:
    requeued: list[int] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)  # id + reason (no PII)


def resume_status(session: Session, subscription: Subscription) -> Status | None:
    """Where a failed/refused subscription should start again; None if it can't."""
    current = Status(subscription.status)
    if current is not Status.FAILED:
        return RESUME_AT.get(current)
    previous = session.scalar(
        select(SubscriptionEvent.status)
        .where(
            SubscriptionEvent.subscription_id == subscription.id,
            SubscriptionEvent.kind == TRANSITION,
            SubscriptionEvent.status != Status.FAILED.value,
        )
        .order_by(SubscriptionEvent.id.desc())
        .limit(1)
    )
    return RESUME_AT.get(Status(previous)) if previous else None


def requeue(
    session: Session,
    integration_id: int,
    *,
    ids: list[int] | None = None,
    failed_since: datetime | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
) -> RequeueReport:
    """Requeue the given subscriptions, and/or every dead-lettered one since `failed_since`.
    With `dry_run`, `requeued` lists those that would be, and nothing is written (a CPF
    taken by another active subscription is only found when requeueing for real)."""
    report = RequeueReport()
    chosen = _chosen(session, integration_id, ids, failed_since, report)
    integration_type = session.scalar(
        select(Integration.type).where(Integration.id == integration_id)
    )
    adapter = adapter_class(integration_type) if integration_type is not None else None
    can_settle = adapter is not None and adapter.resend_guard is not ResendGuard.NONE
    for subscription in chosen:
        target = resume_status(session, subscription)
        reason = why_not_requeueable(subscription, target)
        if reason is not None or target is None:
            report.skipped.append({"id": subscription.id, "reason": reason})
            continue
        target = redo_earlier_step(adapter, subscription, target)
        if not dry_run:
            # held because the partner cannot be asked: the person requeueing it checked
            # there that it did not arrive. Elsewhere the marker stays and the partner is
            # asked first.
            clear_marker = Status(subscription.status) is Status.UNKNOWN and not can_settle
            if not _move(session, subscription, target, run_id, clear_marker):
                report.skipped.append(
                    {
                        "id": subscription.id,
                        "reason": "another active subscription now holds this student's CPF",
                    }
                )
                continue
        report.requeued.append(subscription.id)
    return report


def _chosen(
    session: Session,
    integration_id: int,
    ids: list[int] | None,
    failed_since: datetime | None,
    report: RequeueReport,
) -> list[Subscription]:
    """The subscriptions named by `ids` (an id of another integration is reported skipped),
    then every one dead-lettered since `failed_since` and still dead."""
    s = Subscription
    chosen: list[Subscription] = []
    if ids:
        chosen.extend(
            session.scalars(select(s).where(s.integration_id == integration_id, s.id.in_(ids)))
        )
        missing = set(ids) - {c.id for c in chosen}
        report.skipped.extend(
            {"id": i, "reason": "not a subscription of this integration"} for i in sorted(missing)
        )
    if failed_since is not None:
        dead = select(SubscriptionEvent.subscription_id).where(
            SubscriptionEvent.integration_id == integration_id,
            SubscriptionEvent.kind == TRANSITION,
            SubscriptionEvent.status == Status.FAILED.value,
            SubscriptionEvent.created_at >= failed_since,
        )
        known = {c.id for c in chosen}
        chosen.extend(
            c
            for c in session.scalars(
                select(s).where(s.id.in_(dead), s.status == Status.FAILED.value).order_by(s.id)
            )
            if c.id not in known
        )
    return chosen


def why_not_requeueable(subscription: Subscription, target: Status | None) -> str | None:
    """Why `subscription` cannot go back to `target` (its `resume_status`); None when it can."""
    if subscription.anonymized_at is not None:
        # LGPD retention dropped the student's data: there is nothing left to send
        return "personal data removed by retention (LGPD)"
    if subscription.legacy_status is not None:  # issue 20: no order document to send
        return (
            "imported from the legacy service: take its order over instead "
            "(anubis takeover, docs/cutover.md)"
        )
    if Status(subscription.status) not in REQUEUEABLE - {Status.SHADOWED}:
        # a shadowed student is the legacy's: only the cutover's takeover releases it
        takeover = " (a takeover releases it)" if subscription.status == "shadowed" else ""
        return f"status {subscription.status} is not requeueable{takeover}"
    if target is None:
        return "no step to resume at (it failed after registering)"
    return None


def redo_earlier_step(
    adapter: type[IESAdapter] | None, subscription: Subscription, target: Status
) -> Status:
    """Where a requeue resumes, given the step it failed at (`target`): a registration goes
    back to the adapter's `requeue_register_at` (Estácio: the LGPD consent at OneTrust) when
    the partner may no longer have what that step gave it, so the new registration is not
    refused for it. Not while a send may still be unanswered (the marker): that student is
    settled by the resend itself (`ResendGuard`)."""
    redo = adapter.requeue_register_at if adapter is not None else None
    if target is Status.TO_REGISTER and redo is not None and subscription.sending_since is None:
        return redo
    return target


def _move(
    session: Session,
    subscription: Subscription,
    target: Status,
    run_id: str | None,
    clear_marker: bool,
) -> bool:
    """Send `subscription` back to `target`, due now with its attempts reset; False when its
    CPF is now held by another active subscription (nothing changed)."""
    try:
        with session.begin_nested():
            transition(
                session, subscription, target, operation="requeue", run_id=run_id, requeue=True
            )
            subscription.attempts = 0
            if clear_marker:
                subscription.sending_since = None
            subscription.scheduled_to = datetime.now(UTC)
            subscription.claimed_by = subscription.claimed_until = None
            session.flush()
    except IntegrityError:
        return False
    return True


def retry_now(session: Session, integration_id: int, *, dry_run: bool = False) -> int:
    """Every scheduled retry or check of this integration becomes due now; returns how many
    (with `dry_run`, how many would, changing nothing)."""
    now = datetime.now(UTC)
    scheduled = (
        Subscription.integration_id == integration_id,
        Subscription.status.not_in([st.value for st in FINAL_STATUSES]),
        Subscription.scheduled_to > now,
    )
    if dry_run:
        return int(session.scalar(select(func.count()).where(*scheduled)) or 0)
    result = session.execute(update(Subscription).where(*scheduled).values(scheduled_to=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
